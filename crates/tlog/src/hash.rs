//! RFC 6962 / RFC 9162 §2.1.1 hashing: the only two ways a 32-byte value enters the tree.
//!
//! A leaf is `SHA-256(0x00 || data)` and an interior node is `SHA-256(0x01 || left || right)`.
//! The distinct prefixes are what stop a second-preimage attack that passes an interior node off
//! as a leaf. Every other module builds on these two functions, so they are the whole of the
//! hashing contract (docs/transparency.md, "Hashing").

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use sha2::{Digest, Sha256};

/// Size in bytes of every hash in the tree (SHA-256).
pub const HASH_SIZE: usize = 32;

/// A SHA-256 Merkle tree hash: a leaf hash, an interior node hash or a root.
///
/// Displayed (and parsed) as standard padded base64, the encoding every C2SP text format uses.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Hash(pub [u8; HASH_SIZE]);

/// The root of the empty tree: `SHA-256("")` (RFC 6962 §2.1).
pub const EMPTY_ROOT: Hash = Hash([
    0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14, 0x9a, 0xfb, 0xf4, 0xc8, 0x99, 0x6f, 0xb9, 0x24,
    0x27, 0xae, 0x41, 0xe4, 0x64, 0x9b, 0x93, 0x4c, 0xa4, 0x95, 0x99, 0x1b, 0x78, 0x52, 0xb8, 0x55,
]);

/// A hash that could not be decoded from text or bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HashParseError {
    #[error("hash is not valid standard base64: {0:?}")]
    Base64(String),
    #[error("hash must be {HASH_SIZE} bytes, got {0}")]
    Length(usize),
}

impl Hash {
    /// The raw 32 bytes.
    pub fn as_bytes(&self) -> &[u8; HASH_SIZE] {
        &self.0
    }

    /// A hash from exactly 32 bytes (e.g. a slice of a tile).
    pub fn from_slice(bytes: &[u8]) -> Result<Hash, HashParseError> {
        let array: [u8; HASH_SIZE] = bytes
            .try_into()
            .map_err(|_| HashParseError::Length(bytes.len()))?;
        Ok(Hash(array))
    }

    /// Standard padded base64 (RFC 4648 §4), 44 characters.
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0)
    }

    /// Parses standard padded base64 strictly: padding required, no whitespace, no
    /// non-canonical trailing bits, exactly 32 bytes.
    pub fn parse_base64(text: &str) -> Result<Hash, HashParseError> {
        let bytes = STANDARD
            .decode(text)
            .map_err(|_| HashParseError::Base64(text.to_owned()))?;
        Hash::from_slice(&bytes)
    }

    /// Lowercase hex, for logs and debugging (the wire formats use base64).
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl std::fmt::Debug for Hash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Hash({})", self.to_hex())
    }
}

impl std::fmt::Display for Hash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_base64())
    }
}

/// `SHA-256(0x00 || data)`: the hash of one log entry (RFC 6962 §2.1, `MTH({d(0)})`).
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0x00]);
    h.update(data);
    Hash(h.finalize().into())
}

/// `SHA-256(0x01 || left || right)`: the hash of an interior node.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([0x01]);
    h.update(left.0);
    h.update(right.0);
    Hash(h.finalize().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_root_is_sha256_of_nothing() {
        assert_eq!(EMPTY_ROOT, Hash(Sha256::digest(b"").into()));
    }

    #[test]
    fn base64_round_trip_and_strictness() {
        let h = leaf_hash(b"");
        assert_eq!(Hash::parse_base64(&h.to_base64()), Ok(h));
        // Missing padding, wrong length and whitespace are all refused.
        let text = h.to_base64();
        assert!(Hash::parse_base64(text.trim_end_matches('=')).is_err());
        assert_eq!(
            Hash::parse_base64("AAAA"),
            Err(HashParseError::Length(3)),
            "3 bytes is not a hash"
        );
        assert!(Hash::parse_base64(&format!(" {text}")).is_err());
    }
}
