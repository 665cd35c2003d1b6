//! C2SP tlog-cosignature (<https://c2sp.org/tlog-cosignature>): what a witness adds to a
//! checkpoint. Both of its types are verified and made.
//!
//! - **Ed25519 `cosignature/v1`** (signature type byte 0x04). The signature bytes are
//!   `timestamp (u64, big-endian) || Ed25519 signature`, over
//!
//!   ```text
//!   cosignature/v1\n
//!   time <timestamp>\n
//!   <the whole checkpoint note text, extension lines included>
//!   ```
//!
//!   The key ID is `SHA-256(name || 0x0A || 0x04 || public key)[:4]`, so the same Ed25519 key
//!   used as a plain note key (0x01) and as a cosigner has different IDs and can never be
//!   confused.
//! - **ML-DSA-44 `subtree/v1`** (type 0x06, 1312-byte public keys): `timestamp || ML-DSA-44
//!   signature (2420 bytes)` over the binary `cosigned_message` of the cosigner's name, the
//!   timestamp, the log's origin, the leaf range `0..size` and the root (no extension lines),
//!   with FIPS 204's pure ML-DSA and an empty context. Verified with RustCrypto's `ml-dsa`.
//!
//! The timestamp is an explicit argument: this crate reads no clock.

use ed25519_dalek::{Signer as _, SigningKey, Verifier as _, VerifyingKey};

use crate::note::{
    ALG_COSIGNATURE_ML_DSA_44, ALG_COSIGNATURE_V1, ALG_ED25519, KeyError, NoteError, NoteSignature,
    NoteVerifier, ed25519_public, format_skey, format_vkey, is_valid_key_name, key_id, parse_skey,
    parse_vkey, split_key,
};

/// Largest timestamp the spec allows (2^63 - 1).
pub const MAX_TIMESTAMP: u64 = i64::MAX as u64;

/// Length of an ML-DSA-44 public key.
pub const ML_DSA_44_PUBLIC_KEY: usize = 1312;
/// Length of an ML-DSA-44 signature.
pub const ML_DSA_44_SIGNATURE: usize = 2420;

/// The exact bytes an ML-DSA-44 cosignature by `cosigner` signs for the checkpoint of `origin`
/// with `size` leaves and root `root` at `timestamp` (tlog-cosignature's `cosigned_message`:
/// `start` 0, `end` the size). `None` if a name is empty or longer than 255 bytes.
pub fn subtree_message(
    cosigner: &str,
    timestamp: u64,
    origin: &str,
    size: u64,
    root: &crate::Hash,
) -> Option<Vec<u8>> {
    let name_len = u8::try_from(cosigner.len()).ok().filter(|&n| n > 0)?;
    let origin_len = u8::try_from(origin.len()).ok().filter(|&n| n > 0)?;
    let mut m = Vec::with_capacity(12 + 2 + cosigner.len() + origin.len() + 8 * 3 + 32);
    m.extend_from_slice(b"subtree/v1\n\0");
    m.push(name_len);
    m.extend_from_slice(cosigner.as_bytes());
    m.extend_from_slice(&timestamp.to_be_bytes());
    m.push(origin_len);
    m.extend_from_slice(origin.as_bytes());
    m.extend_from_slice(&0u64.to_be_bytes());
    m.extend_from_slice(&size.to_be_bytes());
    m.extend_from_slice(root.as_bytes());
    Some(m)
}

/// [`subtree_message`] for the checkpoint note text `text`, or why there is none.
fn checkpoint_subtree_message(
    cosigner: &str,
    timestamp: u64,
    text: &str,
) -> Result<Vec<u8>, String> {
    let checkpoint = crate::Checkpoint::parse(text).map_err(|e| e.to_string())?;
    subtree_message(
        cosigner,
        timestamp,
        &checkpoint.origin,
        checkpoint.size,
        &checkpoint.root,
    )
    .ok_or_else(|| "an origin or cosigner name over 255 bytes".into())
}

/// The exact bytes a v1 cosignature signs for checkpoint `text` at `timestamp`.
pub fn cosigned_message(text: &str, timestamp: u64) -> Vec<u8> {
    format!("cosignature/v1\ntime {timestamp}\n{text}").into_bytes()
}

/// A witness's cosigning key: Ed25519 (type 0x04) or ML-DSA-44 (type 0x06).
pub struct CosignatureSigner {
    name: String,
    key_id: u32,
    key: SignKey,
}

// One per witness process: the size of the Ed25519 variant does not matter.
#[allow(clippy::large_enum_variant)]
enum SignKey {
    Ed25519(SigningKey),
    MlDsa44(Box<ml_dsa::SigningKey<ml_dsa::MlDsa44>>),
}

impl std::fmt::Debug for CosignatureSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CosignatureSigner({}+{:08x})", self.name, self.key_id)
    }
}

impl CosignatureSigner {
    /// An Ed25519 cosigner from a 32-byte seed drawn by the caller.
    pub fn from_seed(name: &str, seed: [u8; 32]) -> Result<CosignatureSigner, KeyError> {
        if !is_valid_key_name(name) {
            return Err(KeyError::BadName(name.to_owned()));
        }
        let key = SigningKey::from_bytes(&seed);
        Ok(CosignatureSigner {
            name: name.to_owned(),
            key_id: key_id(name, ALG_COSIGNATURE_V1, key.verifying_key().as_bytes()),
            key: SignKey::Ed25519(key),
        })
    }

    /// An ML-DSA-44 cosigner from a 32-byte seed drawn by the caller (FIPS 204 `KeyGen_internal`
    /// of the seed, the form the key is kept in).
    pub fn from_seed_ml_dsa_44(name: &str, seed: [u8; 32]) -> Result<CosignatureSigner, KeyError> {
        if !is_valid_key_name(name) || name.len() > 255 {
            return Err(KeyError::BadName(name.to_owned()));
        }
        let key = ml_dsa::SigningKey::<ml_dsa::MlDsa44>::from_seed(&seed.into());
        let public = ml_dsa::signature::Keypair::verifying_key(&key).encode();
        Ok(CosignatureSigner {
            name: name.to_owned(),
            key_id: key_id(name, ALG_COSIGNATURE_ML_DSA_44, &public),
            key: SignKey::MlDsa44(Box::new(key)),
        })
    }

    /// Parses `PRIVATE+KEY+<name>+<hex key ID>+<base64(type || seed)>` with type 0x04, type
    /// 0x06 (an ML-DSA-44 seed), or type 0x01 (a plain note key, as `note.GenerateKey` makes;
    /// transparency-dev/formats' `NewSignerForCosignatureV1` accepts both). The key ID in the
    /// text is checked against its own type; an Ed25519 cosigner's key ID is always computed with
    /// 0x04. The C2SP specs define no private key text for cosigners.
    pub fn parse(skey: &str) -> Result<CosignatureSigner, KeyError> {
        const FORM: &str = "PRIVATE+KEY+<name>+<hex key ID>+<base64(type || seed)>";
        let rest = skey
            .strip_prefix("PRIVATE+KEY+")
            .ok_or(KeyError::Malformed(FORM))?;
        let (name, id, material) = split_key(rest, FORM)?;
        if material[0] == ALG_COSIGNATURE_ML_DSA_44 {
            let seed: [u8; 32] = material[1..]
                .try_into()
                .map_err(|_| KeyError::KeyLength(material.len() - 1))?;
            let signer = CosignatureSigner::from_seed_ml_dsa_44(&name, seed)?;
            if id != signer.key_id {
                return Err(KeyError::KeyIdMismatch {
                    got: id,
                    want: signer.key_id,
                });
            }
            return Ok(signer);
        }
        let (name, key) = match parse_skey(skey, ALG_COSIGNATURE_V1) {
            Err(KeyError::WrongAlgorithm {
                got: ALG_ED25519, ..
            }) => parse_skey(skey, ALG_ED25519)?,
            other => other?,
        };
        CosignatureSigner::from_seed(&name, key.to_bytes())
    }

    /// The signer key text; it holds the secret seed, so it belongs in a mode-0600 file only.
    pub fn to_skey(&self) -> String {
        match &self.key {
            SignKey::Ed25519(key) => format_skey(&self.name, ALG_COSIGNATURE_V1, key),
            SignKey::MlDsa44(key) => {
                use base64::Engine as _;
                let mut material = vec![ALG_COSIGNATURE_ML_DSA_44];
                material.extend_from_slice(key.as_seed());
                format!(
                    "PRIVATE+KEY+{}+{:08x}+{}",
                    self.name,
                    self.key_id,
                    base64::engine::general_purpose::STANDARD.encode(material)
                )
            }
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn key_id(&self) -> u32 {
        self.key_id
    }

    pub fn verifier(&self) -> CosignatureVerifier {
        match &self.key {
            SignKey::Ed25519(key) => CosignatureVerifier {
                name: self.name.clone(),
                key_id: self.key_id,
                key: CosignKey::Ed25519(key.verifying_key()),
            },
            SignKey::MlDsa44(key) => {
                let public = ml_dsa::signature::Keypair::verifying_key(key.as_ref());
                CosignatureVerifier {
                    name: self.name.clone(),
                    key_id: self.key_id,
                    key: CosignKey::MlDsa44(
                        public.encode().to_vec().into_boxed_slice(),
                        Box::new(public),
                    ),
                }
            }
        }
    }

    /// Cosigns checkpoint note `text` at `timestamp` (POSIX seconds; 1..=2^63-1, since
    /// tlog-witness forbids a zero timestamp). ML-DSA-44 signs with FIPS 204's deterministic
    /// variant (no randomness needed; the hedged variant only adds side-channel margin).
    pub fn cosign(&self, text: &str, timestamp: u64) -> Result<NoteSignature, NoteError> {
        if !text.ends_with('\n') {
            return Err(NoteError::TextWithoutNewline);
        }
        if timestamp == 0 || timestamp > MAX_TIMESTAMP {
            return Err(NoteError::TimestampOutOfRange(timestamp));
        }
        let mut bytes = timestamp.to_be_bytes().to_vec();
        match &self.key {
            SignKey::Ed25519(key) => {
                let sig = key.sign(&cosigned_message(text, timestamp));
                bytes.extend_from_slice(&sig.to_bytes());
            }
            SignKey::MlDsa44(key) => {
                let message = checkpoint_subtree_message(&self.name, timestamp, text)
                    .map_err(NoteError::NotACheckpoint)?;
                let sig: ml_dsa::Signature<ml_dsa::MlDsa44> =
                    ml_dsa::signature::Signer::try_sign(key.as_ref(), &message).map_err(|_| {
                        NoteError::NotACheckpoint("ML-DSA-44 signing failed".into())
                    })?;
                bytes.extend_from_slice(&sig.encode());
            }
        }
        Ok(NoteSignature {
            name: self.name.clone(),
            key_id: self.key_id,
            signature: bytes,
        })
    }
}

/// A witness's public cosignature key: Ed25519 (type 0x04) or ML-DSA-44 (type 0x06).
#[derive(Clone)]
pub struct CosignatureVerifier {
    name: String,
    key_id: u32,
    key: CosignKey,
}

#[derive(Clone)]
enum CosignKey {
    Ed25519(VerifyingKey),
    /// The key as published, and decoded.
    MlDsa44(Box<[u8]>, Box<ml_dsa::VerifyingKey<ml_dsa::MlDsa44>>),
}

impl std::fmt::Debug for CosignatureVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "CosignatureVerifier({}+{:08x}, type 0x{:02x})",
            self.name,
            self.key_id,
            self.alg()
        )
    }
}

impl PartialEq for CosignatureVerifier {
    fn eq(&self, other: &CosignatureVerifier) -> bool {
        (&self.name, self.key_id, self.alg(), self.public_key())
            == (&other.name, other.key_id, other.alg(), other.public_key())
    }
}

impl Eq for CosignatureVerifier {}

impl CosignatureVerifier {
    /// An Ed25519 cosigner (type 0x04).
    pub fn new(name: &str, public_key: &[u8]) -> Result<CosignatureVerifier, KeyError> {
        if !is_valid_key_name(name) {
            return Err(KeyError::BadName(name.to_owned()));
        }
        let key = ed25519_public(public_key)?;
        Ok(CosignatureVerifier {
            name: name.to_owned(),
            key_id: key_id(name, ALG_COSIGNATURE_V1, key.as_bytes()),
            key: CosignKey::Ed25519(key),
        })
    }

    /// An ML-DSA-44 cosigner (type 0x06), from its 1312-byte public key.
    pub fn new_ml_dsa_44(name: &str, public_key: &[u8]) -> Result<CosignatureVerifier, KeyError> {
        if !is_valid_key_name(name) || name.len() > 255 {
            return Err(KeyError::BadName(name.to_owned()));
        }
        let encoded = ml_dsa::EncodedVerifyingKey::<ml_dsa::MlDsa44>::try_from(public_key)
            .map_err(|_| KeyError::KeyLength(public_key.len()))?;
        Ok(CosignatureVerifier {
            name: name.to_owned(),
            key_id: key_id(name, ALG_COSIGNATURE_ML_DSA_44, public_key),
            key: CosignKey::MlDsa44(
                public_key.into(),
                Box::new(ml_dsa::VerifyingKey::decode(&encoded)),
            ),
        })
    }

    /// Parses a vkey of type 0x04 or 0x06, or of type 0x01 taken as the same Ed25519 key used
    /// for cosigning (what transparency-dev/formats' `NewVerifierForCosignatureV1` does, since
    /// many witnesses publish plain note vkeys). The key ID in the text is checked against its
    /// own type; an Ed25519 cosignature key ID is always computed with 0x04.
    pub fn parse(vkey: &str) -> Result<CosignatureVerifier, KeyError> {
        let (name, _, alg, key) = parse_vkey(vkey)?;
        match alg {
            ALG_COSIGNATURE_V1 | ALG_ED25519 => CosignatureVerifier::new(&name, &key),
            ALG_COSIGNATURE_ML_DSA_44 => CosignatureVerifier::new_ml_dsa_44(&name, &key),
            got => Err(KeyError::WrongAlgorithm {
                got,
                want: ALG_COSIGNATURE_V1,
            }),
        }
    }

    /// The signature type byte: 0x04 (Ed25519) or 0x06 (ML-DSA-44).
    pub fn alg(&self) -> u8 {
        match self.key {
            CosignKey::Ed25519(_) => ALG_COSIGNATURE_V1,
            CosignKey::MlDsa44(..) => ALG_COSIGNATURE_ML_DSA_44,
        }
    }

    pub fn to_vkey(&self) -> String {
        format_vkey(&self.name, self.alg(), &self.public_key())
    }

    /// The public key as published (32 bytes for Ed25519, 1312 for ML-DSA-44).
    pub fn public_key(&self) -> Vec<u8> {
        match &self.key {
            CosignKey::Ed25519(k) => k.to_bytes().to_vec(),
            CosignKey::MlDsa44(raw, _) => raw.to_vec(),
        }
    }

    /// Verifies a cosignature (the bytes after the key ID) over checkpoint `text` and returns
    /// its timestamp, or `None` if it does not verify. An ML-DSA-44 cosignature's timestamp may
    /// be 0 (the spec lets a cosigner make no statement about the tree being the largest it saw).
    pub fn verify_timestamp(&self, text: &[u8], signature: &[u8]) -> Option<u64> {
        let ts: [u8; 8] = signature.get(..8)?.try_into().ok()?;
        let timestamp = u64::from_be_bytes(ts);
        if timestamp > MAX_TIMESTAMP {
            return None;
        }
        let text = std::str::from_utf8(text).ok()?;
        let sig = &signature[8..];
        match &self.key {
            CosignKey::Ed25519(key) => {
                let sig = ed25519_dalek::Signature::from_slice(sig).ok()?;
                key.verify(&cosigned_message(text, timestamp), &sig).ok()?;
            }
            CosignKey::MlDsa44(_, key) => {
                if sig.len() != ML_DSA_44_SIGNATURE {
                    return None;
                }
                let message = checkpoint_subtree_message(&self.name, timestamp, text).ok()?;
                let sig = ml_dsa::Signature::<ml_dsa::MlDsa44>::try_from(sig).ok()?;
                if !key.verify_with_context(&message, &[], &sig) {
                    return None;
                }
            }
        }
        Some(timestamp)
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
