//! C2SP signed-note (<https://c2sp.org/signed-note>) with Ed25519, byte-compatible with Go's
//! `golang.org/x/mod/sumdb/note` (the tests reproduce its published PeterNeumann example).
//!
//! A note is UTF-8 text ending in `\n`, a blank line, then one or more lines
//! `— <key name> <base64(key ID || signature)>`. A key is named by `(name, key ID)`, where the
//! key ID is `SHA-256(name || 0x0A || type || public key)[:4]` read big-endian. Verifier keys
//! ("vkeys") are `<name>+<hex key ID>+<base64(type || public key)>`; signer keys add a
//! `PRIVATE+KEY+` prefix and carry the 32-byte Ed25519 seed instead of the public key.
//!
//! Opening a note follows the spec and Go exactly: signatures by unknown keys are kept (as
//! unverified) but ignored; a signature by a known key that does not verify rejects the whole
//! note; a note with no verified signature is rejected. The checks the spec makes mandatory on
//! the text (valid UTF-8, no control characters but newline) are made before anything else.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signer as _, SigningKey, Verifier as _, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::cosignature::CosignatureVerifier;

/// Signature type byte of plain Ed25519 note signatures (signed-note).
pub const ALG_ED25519: u8 = 0x01;
/// Signature type byte of timestamped Ed25519 cosignatures (tlog-cosignature).
pub const ALG_COSIGNATURE_V1: u8 = 0x04;
/// Signature type byte of timestamped ML-DSA-44 (sub)tree cosignatures (tlog-cosignature).
pub const ALG_COSIGNATURE_ML_DSA_44: u8 = 0x06;
/// The most signature lines [`open`] accepts (Go's limit; the spec asks for at least 16).
pub const MAX_SIGNATURES: usize = 100;

const SIG_PREFIX: &str = "\u{2014} ";

/// `SHA-256(name || 0x0A || alg || public_key)[:4]` as a big-endian u32.
pub fn key_id(name: &str, alg: u8, public_key: &[u8]) -> u32 {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update(b"\n");
    h.update([alg]);
    h.update(public_key);
    let sum = h.finalize();
    u32::from_be_bytes([sum[0], sum[1], sum[2], sum[3]])
}

/// A key name: non-empty, no Unicode whitespace, no `+` (signed-note "Format").
pub fn is_valid_key_name(name: &str) -> bool {
    !name.is_empty() && !name.chars().any(char::is_whitespace) && !name.contains('+')
}

/// A signer or verifier key string that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("key is not of the form {0}")]
    Malformed(&'static str),
    #[error("key name {0:?} is empty or contains a space or '+'")]
    BadName(String),
    #[error("key ID {got:08x} does not match the key (expected {want:08x})")]
    KeyIdMismatch { got: u32, want: u32 },
    #[error("unsupported signature type 0x{0:02x}")]
    UnknownAlgorithm(u8),
    #[error("expected signature type 0x{want:02x}, key has 0x{got:02x}")]
    WrongAlgorithm { got: u8, want: u8 },
    #[error(
        "key material has the wrong length for its type (Ed25519 32 bytes, ML-DSA-44 1312): got {0}"
    )]
    KeyLength(usize),
    #[error("not a valid Ed25519 public key")]
    InvalidPublicKey,
}

/// A note that does not parse, sign or verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoteError {
    #[error("note is not valid UTF-8")]
    NotUtf8,
    #[error("note contains control character 0x{byte:02x} at byte {offset}")]
    ControlCharacter { byte: u8, offset: usize },
    #[error("note text must end with a newline")]
    TextWithoutNewline,
    #[error("note has no blank line separating text from signatures")]
    NoSignatureBlock,
    #[error("note signature block is empty or does not end with a newline")]
    UnterminatedSignatures,
    #[error("malformed signature line {0:?}")]
    BadSignatureLine(String),
    #[error("note has more than {MAX_SIGNATURES} signatures")]
    TooManySignatures,
    #[error("invalid key name {0:?}")]
    BadKeyName(String),
    #[error("two known keys are named {name}+{key_id:08x}")]
    AmbiguousKey { name: String, key_id: u32 },
    #[error("signature by known key {name}+{key_id:08x} does not verify")]
    InvalidSignature { name: String, key_id: u32 },
    #[error("note has no signature by a known key")]
    NoVerifiedSignature,
    #[error("cosignature timestamp {0} is outside 1..=2^63-1")]
    TimestampOutOfRange(u64),
    #[error("an ML-DSA-44 cosignature signs a checkpoint, and this text is not one: {0}")]
    NotACheckpoint(String),
}

/// Something that checks signatures of one key: a log's Ed25519 key or a witness's
/// cosignature key.
pub trait NoteVerifier {
    fn name(&self) -> &str;
    fn key_id(&self) -> u32;
    /// Checks `signature` (the bytes after the 4-byte key ID) over the note `text`.
    fn verify(&self, text: &[u8], signature: &[u8]) -> bool;
}

/// Splits `[PRIVATE+KEY+]name+hex+base64` and checks the name, hex and base64.
pub(crate) fn split_key(key: &str, what: &'static str) -> Result<(String, u32, Vec<u8>), KeyError> {
    let mut parts = key.splitn(3, '+');
    let (Some(name), Some(hex), Some(b64)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(KeyError::Malformed(what));
    };
    if !is_valid_key_name(name) {
        return Err(KeyError::BadName(name.to_owned()));
    }
    if hex.len() != 8 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(KeyError::Malformed(what));
    }
    let id = u32::from_str_radix(hex, 16).map_err(|_| KeyError::Malformed(what))?;
    let material = STANDARD
        .decode(b64)
        .map_err(|_| KeyError::Malformed(what))?;
    if material.is_empty() {
        return Err(KeyError::Malformed(what));
    }
    Ok((name.to_owned(), id, material))
}

/// Parses a vkey into `(name, key ID, type byte, public key)`, checking the key ID.
pub fn parse_vkey(vkey: &str) -> Result<(String, u32, u8, Vec<u8>), KeyError> {
    let (name, id, material) = split_key(vkey, "<name>+<hex key ID>+<base64(type || key)>")?;
    let want = {
        let mut h = Sha256::new();
        h.update(name.as_bytes());
        h.update(b"\n");
        h.update(&material);
        let s = h.finalize();
        u32::from_be_bytes([s[0], s[1], s[2], s[3]])
    };
    if id != want {
        return Err(KeyError::KeyIdMismatch { got: id, want });
    }
    let alg = material[0];
    Ok((name, id, alg, material[1..].to_vec()))
}

/// Formats a vkey.
pub fn format_vkey(name: &str, alg: u8, public_key: &[u8]) -> String {
    let mut material = vec![alg];
    material.extend_from_slice(public_key);
    format!(
        "{name}+{:08x}+{}",
        key_id(name, alg, public_key),
        STANDARD.encode(material)
    )
}

pub(crate) fn ed25519_public(bytes: &[u8]) -> Result<VerifyingKey, KeyError> {
    let array: [u8; 32] = bytes
        .try_into()
        .map_err(|_| KeyError::KeyLength(bytes.len()))?;
    VerifyingKey::from_bytes(&array).map_err(|_| KeyError::InvalidPublicKey)
}

/// Parses `PRIVATE+KEY+name+hex+base64(alg || seed)` for the expected `alg`, checking the key
/// ID against the public key the seed derives.
pub(crate) fn parse_skey(skey: &str, alg: u8) -> Result<(String, SigningKey), KeyError> {
    const FORM: &str = "PRIVATE+KEY+<name>+<hex key ID>+<base64(type || seed)>";
    let rest = skey
        .strip_prefix("PRIVATE+KEY+")
        .ok_or(KeyError::Malformed(FORM))?;
    let (name, id, material) = split_key(rest, FORM)?;
    if material[0] != alg {
        return Err(
            if material[0] == ALG_ED25519 || material[0] == ALG_COSIGNATURE_V1 {
                KeyError::WrongAlgorithm {
                    got: material[0],
                    want: alg,
                }
            } else {
                KeyError::UnknownAlgorithm(material[0])
            },
        );
    }
    let seed: [u8; 32] = material[1..]
        .try_into()
        .map_err(|_| KeyError::KeyLength(material.len() - 1))?;
    let key = SigningKey::from_bytes(&seed);
    let want = key_id(&name, alg, key.verifying_key().as_bytes());
    if id != want {
        return Err(KeyError::KeyIdMismatch { got: id, want });
    }
    Ok((name, key))
}

pub(crate) fn format_skey(name: &str, alg: u8, key: &SigningKey) -> String {
    let mut material = vec![alg];
    material.extend_from_slice(key.as_bytes());
    format!(
        "PRIVATE+KEY+{name}+{:08x}+{}",
        key_id(name, alg, key.verifying_key().as_bytes()),
        STANDARD.encode(material)
    )
}

/// A log's Ed25519 note signing key.
pub struct Ed25519Signer {
    name: String,
    key_id: u32,
    key: SigningKey,
}

impl std::fmt::Debug for Ed25519Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Ed25519Signer({}+{:08x})", self.name, self.key_id)
    }
}

impl Ed25519Signer {
    /// A signer from a 32-byte Ed25519 seed (the caller draws it from the OS; this crate has no
    /// randomness of its own).
    pub fn from_seed(name: &str, seed: [u8; 32]) -> Result<Ed25519Signer, KeyError> {
        if !is_valid_key_name(name) {
            return Err(KeyError::BadName(name.to_owned()));
        }
        let key = SigningKey::from_bytes(&seed);
        Ok(Ed25519Signer {
            name: name.to_owned(),
            key_id: key_id(name, ALG_ED25519, key.verifying_key().as_bytes()),
            key,
        })
    }

    /// The same key under another name (so another key ID, the same public key: C2SP
    /// tlog-policy counts the two as one key; [`Ed25519Signer::derive`] makes a key of its own).
    pub fn renamed(&self, name: &str) -> Result<Ed25519Signer, KeyError> {
        Ed25519Signer::from_seed(name, self.key.to_bytes())
    }

    /// A key of its own named `name`, derived from this one: the seed is HKDF-SHA256 (RFC 5869)
    /// with no salt, this key's 32-byte seed as input key material, `info` = `context || name`,
    /// 32 bytes long. A server running one log per tenant signs each log with a key derived for
    /// its origin: C2SP tlog-policy refuses two `log` lines with one public key, whatever their
    /// names, so logs that share a key could not be named in one policy. `context` separates
    /// this use of the seed from any other; it should end in a byte no name holds (a newline),
    /// so that no two (context, name) pairs give one `info`.
    pub fn derive(&self, context: &str, name: &str) -> Result<Ed25519Signer, KeyError> {
        let hk = hkdf::Hkdf::<Sha256>::new(None, self.key.as_bytes());
        // Wiped when dropped (the signing key wipes its own copy).
        let mut seed = zeroize::Zeroizing::new([0u8; 32]);
        // 32 bytes is far below HKDF-SHA256's limit of 255 * 32: never refused.
        hk.expand_multi_info(&[context.as_bytes(), name.as_bytes()], &mut seed[..])
            .map_err(|_| KeyError::Malformed("a 32-byte HKDF-SHA256 output"))?;
        Ed25519Signer::from_seed(name, *seed)
    }

    /// Parses `PRIVATE+KEY+<name>+<hex key ID>+<base64(0x01 || seed)>` (Go's `note.NewSigner`).
    pub fn parse(skey: &str) -> Result<Ed25519Signer, KeyError> {
        let (name, key) = parse_skey(skey, ALG_ED25519)?;
        Ed25519Signer::from_seed(&name, key.to_bytes())
    }

    /// The signer key text; it holds the secret seed, so it belongs in a mode-0600 file only.
    pub fn to_skey(&self) -> String {
        format_skey(&self.name, ALG_ED25519, &self.key)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn key_id(&self) -> u32 {
        self.key_id
    }

    /// The matching verifier.
    pub fn verifier(&self) -> Ed25519Verifier {
        Ed25519Verifier {
            name: self.name.clone(),
            key_id: self.key_id,
            key: self.key.verifying_key(),
        }
    }

    /// Signs note `text` (which must end with a newline).
    pub fn sign(&self, text: &str) -> Result<NoteSignature, NoteError> {
        check_text(text)?;
        Ok(NoteSignature {
            name: self.name.clone(),
            key_id: self.key_id,
            signature: self.key.sign(text.as_bytes()).to_bytes().to_vec(),
        })
    }
}

/// A log's Ed25519 note verifier key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ed25519Verifier {
    name: String,
    key_id: u32,
    key: VerifyingKey,
}

impl Ed25519Verifier {
    /// A verifier for `name` and a 32-byte Ed25519 public key.
    pub fn new(name: &str, public_key: &[u8]) -> Result<Ed25519Verifier, KeyError> {
        if !is_valid_key_name(name) {
            return Err(KeyError::BadName(name.to_owned()));
        }
        let key = ed25519_public(public_key)?;
        Ok(Ed25519Verifier {
            name: name.to_owned(),
            key_id: key_id(name, ALG_ED25519, key.as_bytes()),
            key,
        })
    }

    /// Parses `<name>+<hex key ID>+<base64(0x01 || public key)>` (Go's `note.NewVerifier`).
    pub fn parse(vkey: &str) -> Result<Ed25519Verifier, KeyError> {
        let (name, _, alg, key) = parse_vkey(vkey)?;
        if alg != ALG_ED25519 {
            return Err(KeyError::WrongAlgorithm {
                got: alg,
                want: ALG_ED25519,
            });
        }
        Ed25519Verifier::new(&name, &key)
    }

    /// The vkey text, what `agentledger log-key` prints.
    pub fn to_vkey(&self) -> String {
        format_vkey(&self.name, ALG_ED25519, self.key.as_bytes())
    }

    pub fn public_key(&self) -> [u8; 32] {
        self.key.to_bytes()
    }
}

impl NoteVerifier for Ed25519Verifier {
    fn name(&self) -> &str {
        &self.name
    }
    fn key_id(&self) -> u32 {
        self.key_id
    }
    fn verify(&self, text: &[u8], signature: &[u8]) -> bool {
        match ed25519_dalek::Signature::from_slice(signature) {
            Ok(sig) => self.key.verify(text, &sig).is_ok(),
            Err(_) => false,
        }
    }
}

/// Any verifier key this crate understands, chosen by the vkey's type byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerifierKey {
    /// Type 0x01: a log's key.
    Ed25519(Ed25519Verifier),
    /// Type 0x04: a witness's cosignature key.
    Cosignature(CosignatureVerifier),
}

impl VerifierKey {
    pub fn parse(vkey: &str) -> Result<VerifierKey, KeyError> {
        let (name, _, alg, key) = parse_vkey(vkey)?;
        match alg {
            ALG_ED25519 => Ok(VerifierKey::Ed25519(Ed25519Verifier::new(&name, &key)?)),
            ALG_COSIGNATURE_V1 => Ok(VerifierKey::Cosignature(CosignatureVerifier::new(
                &name, &key,
            )?)),
            ALG_COSIGNATURE_ML_DSA_44 => Ok(VerifierKey::Cosignature(
                CosignatureVerifier::new_ml_dsa_44(&name, &key)?,
            )),
            other => Err(KeyError::UnknownAlgorithm(other)),
        }
    }

    /// The raw public key (used to detect the same key listed twice).
    pub fn public_key(&self) -> Vec<u8> {
        match self {
            VerifierKey::Ed25519(v) => v.public_key().to_vec(),
            VerifierKey::Cosignature(v) => v.public_key(),
        }
    }

    pub fn as_verifier(&self) -> &dyn NoteVerifier {
        match self {
            VerifierKey::Ed25519(v) => v,
            VerifierKey::Cosignature(v) => v,
        }
    }
}

/// One signature line: key name, key ID and the signature bytes that follow the key ID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteSignature {
    pub name: String,
    pub key_id: u32,
    pub signature: Vec<u8>,
}

impl NoteSignature {
    /// `— <name> <base64(key ID || signature)>\n`.
    pub fn to_line(&self) -> String {
        let mut raw = self.key_id.to_be_bytes().to_vec();
        raw.extend_from_slice(&self.signature);
        format!("{SIG_PREFIX}{} {}\n", self.name, STANDARD.encode(raw))
    }

    /// Parses one signature line (without its newline).
    pub fn parse_line(line: &str) -> Result<NoteSignature, NoteError> {
        let bad = || NoteError::BadSignatureLine(line.to_owned());
        let rest = line.strip_prefix(SIG_PREFIX).ok_or_else(bad)?;
        let (name, b64) = rest.split_once(' ').ok_or_else(bad)?;
        if !is_valid_key_name(name) {
            return Err(NoteError::BadKeyName(name.to_owned()));
        }
        let raw = STANDARD.decode(b64).map_err(|_| bad())?;
        if raw.len() < 5 {
            return Err(bad());
        }
        Ok(NoteSignature {
            name: name.to_owned(),
            key_id: u32::from_be_bytes([raw[0], raw[1], raw[2], raw[3]]),
            signature: raw[4..].to_vec(),
        })
    }

    /// Parses a block of signature lines, each ending in a newline (e.g. a witness's
    /// add-checkpoint response body).
    pub fn parse_lines(block: &str) -> Result<Vec<NoteSignature>, NoteError> {
        if block.is_empty() || !block.ends_with('\n') {
            return Err(NoteError::UnterminatedSignatures);
        }
        let lines: Vec<&str> = block[..block.len() - 1].split('\n').collect();
        if lines.len() > MAX_SIGNATURES {
            return Err(NoteError::TooManySignatures);
        }
        lines.into_iter().map(NoteSignature::parse_line).collect()
    }
}

/// A signed note, parsed but not verified: its text and its signature lines in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// The text, ending in `\n` (the blank separator line is not part of it).
    pub text: String,
    pub signatures: Vec<NoteSignature>,
}

fn check_chars(msg: &[u8]) -> Result<&str, NoteError> {
    let text = std::str::from_utf8(msg).map_err(|_| NoteError::NotUtf8)?;
    if let Some(offset) = msg.iter().position(|&b| b < 0x20 && b != b'\n') {
        return Err(NoteError::ControlCharacter {
            byte: msg[offset],
            offset,
        });
    }
    Ok(text)
}

fn check_text(text: &str) -> Result<(), NoteError> {
    check_chars(text.as_bytes())?;
    if !text.ends_with('\n') {
        return Err(NoteError::TextWithoutNewline);
    }
    Ok(())
}

impl Note {
    /// Parses the note syntax without checking any signature.
    pub fn parse(msg: &[u8]) -> Result<Note, NoteError> {
        let msg = check_chars(msg)?;
        // The text ends at the *last* blank line; the text itself may contain blank lines.
        let split = msg.rfind("\n\n").ok_or(NoteError::NoSignatureBlock)?;
        let (text, sigs) = (&msg[..split + 1], &msg[split + 2..]);
        Ok(Note {
            text: text.to_owned(),
            signatures: NoteSignature::parse_lines(sigs)?,
        })
    }

    /// Adds a signature, replacing any existing one by the same key name and ID (as Go's
    /// `note.Sign` does when re-signing), and putting it last.
    pub fn add_signature(&mut self, signature: NoteSignature) {
        self.signatures
            .retain(|s| !(s.name == signature.name && s.key_id == signature.key_id));
        self.signatures.push(signature);
    }

    /// The note's bytes: text, blank line, signature lines.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.to_string().into_bytes()
    }
}

impl std::fmt::Display for Note {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)?;
        f.write_str("\n")?;
        for s in &self.signatures {
            f.write_str(&s.to_line())?;
        }
        Ok(())
    }
}

/// Signs `text` with each signer and returns the signed note bytes.
pub fn sign(text: &str, signers: &[&Ed25519Signer]) -> Result<Vec<u8>, NoteError> {
    let mut note = Note {
        text: text.to_owned(),
        signatures: Vec::new(),
    };
    for signer in signers {
        note.add_signature(signer.sign(text)?);
    }
    Ok(note.to_bytes())
}

/// A note whose signatures have been checked against a set of known keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenedNote {
    pub text: String,
    /// Signatures by known keys, all verified, in note order, one per key.
    pub verified: Vec<NoteSignature>,
    /// Signatures by unknown keys, kept (deduplicated) so they can be passed on.
    pub unverified: Vec<NoteSignature>,
}

impl OpenedNote {
    /// The note again with every signature, verified ones first (Go's `note.Sign` order).
    pub fn to_note(&self) -> Note {
        Note {
            text: self.text.clone(),
            signatures: self
                .verified
                .iter()
                .chain(&self.unverified)
                .cloned()
                .collect(),
        }
    }
}

/// Parses `msg` and verifies it against `known` keys (Go's `note.Open`).
pub fn open(msg: &[u8], known: &[&dyn NoteVerifier]) -> Result<OpenedNote, NoteError> {
    let note = Note::parse(msg)?;
    if note.signatures.len() > MAX_SIGNATURES {
        return Err(NoteError::TooManySignatures);
    }
    let mut opened = OpenedNote {
        text: note.text,
        verified: Vec::new(),
        unverified: Vec::new(),
    };
    for sig in note.signatures {
        let mut matching = known
            .iter()
            .filter(|v| v.name() == sig.name && v.key_id() == sig.key_id);
        let Some(verifier) = matching.next() else {
            if !opened.unverified.contains(&sig) {
                opened.unverified.push(sig);
            }
            continue;
        };
        if matching.next().is_some() {
            return Err(NoteError::AmbiguousKey {
                name: sig.name,
                key_id: sig.key_id,
            });
        }
        if opened
            .verified
            .iter()
            .any(|s| s.name == sig.name && s.key_id == sig.key_id)
        {
            continue;
        }
        if !verifier.verify(opened.text.as_bytes(), &sig.signature) {
            return Err(NoteError::InvalidSignature {
                name: sig.name,
                key_id: sig.key_id,
            });
        }
        opened.verified.push(sig);
    }
    if opened.verified.is_empty() {
        return Err(NoteError::NoVerifiedSignature);
    }
    Ok(opened)
}
