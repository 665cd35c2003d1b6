//! API key material. Keys are 256-bit random secrets; the ledger stores only
//! their SHA-256 (a slow password hash buys nothing for keys of full entropy,
//! and a fast hash keeps authentication off the request's critical path).

use crate::chain::sha256;

const KEY_PREFIX: &str = "al_";
const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    if let Err(e) = getrandom::fill(&mut b) {
        panic!("operating system random source unavailable: {e}");
    }
    b
}

/// A new secret key: `al_` + 43 base62 characters (~256 bits).
pub fn generate_key() -> String {
    let mut out = String::from(KEY_PREFIX);
    // Rejection sampling keeps every character uniform.
    while out.len() < KEY_PREFIX.len() + 43 {
        for b in random_bytes::<64>() {
            if b < 248 && out.len() < KEY_PREFIX.len() + 43 {
                out.push(ALPHABET[(b % 62) as usize] as char);
            }
        }
    }
    out
}

/// A public, non-secret id for a key (`key_` + 16 hex digits).
pub fn generate_key_id() -> String {
    format!("key_{}", hex::encode(random_bytes::<8>()))
}

/// What is stored and looked up: the SHA-256 of the key as presented.
pub fn hash_key(key: &str) -> [u8; 32] {
    sha256(key.as_bytes())
}

/// The first characters of a key, shown in listings so people can tell keys apart.
pub fn display_prefix(key: &str) -> String {
    key.chars().take(7).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_long_random_and_hash_stably() {
        let a = generate_key();
        let b = generate_key();
        assert_ne!(a, b);
        assert_eq!(a.len(), 46);
        assert!(a.starts_with("al_"));
        assert!(a[3..].chars().all(|c| c.is_ascii_alphanumeric()));
        assert_eq!(hash_key(&a), hash_key(&a));
        assert_ne!(hash_key(&a), hash_key(&b));
        assert!(generate_key_id().starts_with("key_"));
        assert_eq!(display_prefix(&a).len(), 7);
    }
}
