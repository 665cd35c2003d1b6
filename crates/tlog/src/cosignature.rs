//! C2SP tlog-cosignature (<https://c2sp.org/tlog-cosignature>), the Ed25519 `cosignature/v1`
//! type (signature type byte 0x04): what a witness adds to a checkpoint.
//!
//! A cosignature is a note signature whose bytes are `timestamp (u64, big-endian) || Ed25519
//! signature`, and whose signed message is
//!
//! ```text
//! cosignature/v1\n
//! time <timestamp>\n
//! <the whole checkpoint note text, extension lines included>
//! ```
//!
//! The key ID is `SHA-256(name || 0x0A || 0x04 || public key)[:4]`, so the same Ed25519 key used
//! as a plain note key (0x01) and as a cosigner has different IDs and can never be confused.
//! The timestamp is an explicit argument: this crate reads no clock. ML-DSA-44 cosignatures
//! (type 0x06) are not implemented.

use ed25519_dalek::{Signer as _, SigningKey, Verifier as _, VerifyingKey};

use crate::note::{
    ALG_COSIGNATURE_V1, ALG_ED25519, KeyError, NoteError, NoteSignature, NoteVerifier,
    ed25519_public, format_skey, format_vkey, is_valid_key_name, key_id, parse_skey, parse_vkey,
};

/// Largest timestamp the spec allows (2^63 - 1).
pub const MAX_TIMESTAMP: u64 = i64::MAX as u64;

/// The exact bytes a v1 cosignature signs for checkpoint `text` at `timestamp`.
pub fn cosigned_message(text: &str, timestamp: u64) -> Vec<u8> {
    format!("cosignature/v1\ntime {timestamp}\n{text}").into_bytes()
}

/// A witness's cosigning key.
pub struct CosignatureSigner {
    name: String,
    key_id: u32,
    key: SigningKey,
}

impl std::fmt::Debug for CosignatureSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CosignatureSigner({}+{:08x})", self.name, self.key_id)
    }
}

impl CosignatureSigner {
    /// A cosigner from a 32-byte Ed25519 seed drawn by the caller.
    pub fn from_seed(name: &str, seed: [u8; 32]) -> Result<CosignatureSigner, KeyError> {
        if !is_valid_key_name(name) {
            return Err(KeyError::BadName(name.to_owned()));
        }
        let key = SigningKey::from_bytes(&seed);
        Ok(CosignatureSigner {
            name: name.to_owned(),
            key_id: key_id(name, ALG_COSIGNATURE_V1, key.verifying_key().as_bytes()),
            key,
        })
    }

    /// Parses `PRIVATE+KEY+<name>+<hex key ID>+<base64(type || seed)>` with type 0x04, or
    /// type 0x01 (a plain note key, as `note.GenerateKey` makes; transparency-dev/formats'
    /// `NewSignerForCosignatureV1` accepts both). The key ID in the text is checked against
    /// its own type; the cosigner's key ID is always computed with 0x04. The C2SP specs define
    /// no private key text for cosigners.
    pub fn parse(skey: &str) -> Result<CosignatureSigner, KeyError> {
        let (name, key) = match parse_skey(skey, ALG_COSIGNATURE_V1) {
            Err(KeyError::WrongAlgorithm {
                got: ALG_ED25519, ..
            }) => parse_skey(skey, ALG_ED25519)?,
            other => other?,
        };
        CosignatureSigner::from_seed(&name, key.to_bytes())
    }

    pub fn to_skey(&self) -> String {
        format_skey(&self.name, ALG_COSIGNATURE_V1, &self.key)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn key_id(&self) -> u32 {
        self.key_id
    }

    pub fn verifier(&self) -> CosignatureVerifier {
        CosignatureVerifier {
            name: self.name.clone(),
            key_id: self.key_id,
            key: self.key.verifying_key(),
        }
    }

    /// Cosigns checkpoint note `text` at `timestamp` (POSIX seconds; 1..=2^63-1, since
    /// tlog-witness forbids a zero timestamp).
    pub fn cosign(&self, text: &str, timestamp: u64) -> Result<NoteSignature, NoteError> {
        if !text.ends_with('\n') {
            return Err(NoteError::TextWithoutNewline);
        }
        if timestamp == 0 || timestamp > MAX_TIMESTAMP {
            return Err(NoteError::TimestampOutOfRange(timestamp));
        }
        let sig = self.key.sign(&cosigned_message(text, timestamp));
        let mut bytes = timestamp.to_be_bytes().to_vec();
        bytes.extend_from_slice(&sig.to_bytes());
        Ok(NoteSignature {
            name: self.name.clone(),
            key_id: self.key_id,
            signature: bytes,
        })
    }
}

/// A witness's public cosignature key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CosignatureVerifier {
    name: String,
    key_id: u32,
    key: VerifyingKey,
}

impl CosignatureVerifier {
    pub fn new(name: &str, public_key: &[u8]) -> Result<CosignatureVerifier, KeyError> {
        if !is_valid_key_name(name) {
            return Err(KeyError::BadName(name.to_owned()));
        }
        let key = ed25519_public(public_key)?;
        Ok(CosignatureVerifier {
            name: name.to_owned(),
            key_id: key_id(name, ALG_COSIGNATURE_V1, key.as_bytes()),
            key,
        })
    }

    /// Parses a vkey of type 0x04, or of type 0x01 taken as the same Ed25519 key used for
    /// cosigning (what transparency-dev/formats' `NewVerifierForCosignatureV1` does, since
    /// many witnesses publish plain note vkeys). The key ID in the text is checked against its
    /// own type; the cosignature key ID is always computed with 0x04.
    pub fn parse(vkey: &str) -> Result<CosignatureVerifier, KeyError> {
        let (name, _, alg, key) = parse_vkey(vkey)?;
        if alg != ALG_COSIGNATURE_V1 && alg != ALG_ED25519 {
            return Err(KeyError::WrongAlgorithm {
                got: alg,
                want: ALG_COSIGNATURE_V1,
            });
        }
        CosignatureVerifier::new(&name, &key)
    }

    pub fn to_vkey(&self) -> String {
        format_vkey(&self.name, ALG_COSIGNATURE_V1, self.key.as_bytes())
    }

    pub fn public_key(&self) -> [u8; 32] {
        self.key.to_bytes()
    }

    /// Verifies a cosignature (the bytes after the key ID) over checkpoint `text` and returns
    /// its timestamp, or `None` if it does not verify.
    pub fn verify_timestamp(&self, text: &[u8], signature: &[u8]) -> Option<u64> {
        if signature.len() != 8 + 64 {
            return None;
        }
        let (ts, sig) = signature.split_at(8);
        let timestamp = u64::from_be_bytes(ts.try_into().ok()?);
        if timestamp > MAX_TIMESTAMP {
            return None;
        }
        let text = std::str::from_utf8(text).ok()?;
        let sig = ed25519_dalek::Signature::from_slice(sig).ok()?;
        self.key
            .verify(&cosigned_message(text, timestamp), &sig)
            .ok()
            .map(|()| timestamp)
    }
}

impl NoteVerifier for CosignatureVerifier {
    fn name(&self) -> &str {
        &self.name
    }
    fn key_id(&self) -> u32 {
        self.key_id
    }
    fn verify(&self, text: &[u8], signature: &[u8]) -> bool {
        self.verify_timestamp(text, signature).is_some()
    }
}
