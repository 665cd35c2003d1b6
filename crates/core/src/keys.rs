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

/// A fresh random salt for a redaction commitment (envelope v3).
pub fn generate_salt() -> [u8; 32] {
    random_bytes::<32>()
}

/// A public, non-secret id for a key (`key_` + 16 hex digits).
pub fn generate_key_id() -> String {
    format!("key_{}", hex::encode(random_bytes::<8>()))
}

/// What is stored and looked up: the SHA-256 of the key as presented.
pub fn hash_key(key: &str) -> [u8; 32] {
    sha256(key.as_bytes())
}

/// Shortest key or token a person may choose (the generated ones have 46).
pub const MIN_CHOSEN_KEY_CHARS: usize = 32;
/// Fewest distinct characters in a chosen key: refuses `aaaa…` and `1212…`.
const MIN_DISTINCT_CHARS: usize = 12;
/// Longest key accepted anywhere (a longer header is refused before hashing).
pub const MAX_KEY_CHARS: usize = 512;

/// Why a chosen key or token is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WeakKey {
    #[error(
        "too short: {0} characters, at least {MIN_CHOSEN_KEY_CHARS} are needed (or let agentledger generate one)"
    )]
    TooShort(usize),
    #[error("too long: at most {MAX_KEY_CHARS} characters")]
    TooLong,
    #[error("only printable ASCII without spaces may be used (it travels in an HTTP header)")]
    Charset,
    #[error("too repetitive: {0} distinct characters, at least {MIN_DISTINCT_CHARS} are needed")]
    Repetitive(usize),
}

/// Refuse a key or token a person chose when it is guessable by its shape:
/// short, repetitive, or not sendable as a header value. Generated keys
/// always pass. (Entropy of a chosen secret cannot be measured; these bounds
/// refuse the obviously weak and say so.)
pub fn check_strength(key: &str) -> Result<(), WeakKey> {
    let n = key.chars().count();
    if n < MIN_CHOSEN_KEY_CHARS {
        return Err(WeakKey::TooShort(n));
    }
    if n > MAX_KEY_CHARS {
        return Err(WeakKey::TooLong);
    }
    if !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(WeakKey::Charset);
    }
    let distinct = key
        .bytes()
        .collect::<std::collections::BTreeSet<u8>>()
        .len();
    if distinct < MIN_DISTINCT_CHARS {
        return Err(WeakKey::Repetitive(distinct));
    }
    Ok(())
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

    #[test]
    fn chosen_keys_must_not_be_guessable_by_shape() {
        assert_eq!(check_strength("x"), Err(WeakKey::TooShort(1)));
        assert_eq!(
            check_strength(&"ab".repeat(20)),
            Err(WeakKey::Repetitive(2))
        );
        assert_eq!(
            check_strength("correct horse battery staple and more"),
            Err(WeakKey::Charset)
        );
        assert_eq!(check_strength(&"a".repeat(600)), Err(WeakKey::TooLong));
        assert!(check_strength("als_9fK2mQ7xZp4LwT8vRb6NcY3hJd5GsE1u").is_ok());
        for _ in 0..100 {
            assert!(check_strength(&generate_key()).is_ok());
        }
    }
}
