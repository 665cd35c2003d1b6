//! `Idempotency-Key`: safe retries of every ingest route.
//!
//! A client that did not see an answer (a timeout, a dropped connection, a
//! 503 from a proxy) may send the same request again with the same key. The
//! first request that commits keeps its answer under the key, in the same
//! transaction as its events; a retry with the same key and the same request
//! gets that answer byte for byte (same ids, same hashes, header
//! `Idempotent-Replayed: true`) and appends nothing. The same key with a
//! different request is 409 naming the key. Keys belong to the caller's
//! project and are kept for `--idempotency-ttl` (24 hours by default).
//! Requests that were refused keep nothing: their retry runs afresh.
//!
//! "The same request" is the fingerprint: SHA-256 over the method, the path,
//! the Content-Type and the body bytes (OTLP: after gunzip).

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use sha2::{Digest, Sha256};

use agentledger_dialects::InputError;
use agentledger_store::IdempotencyKey;

use crate::error::ApiError;

/// The header.
pub const HEADER: &str = "idempotency-key";
/// The longest key accepted.
pub const MAX_KEY_CHARS: usize = 255;

/// The request's idempotency key, if it sent one, with what the fingerprint
/// covers besides the body.
#[derive(Debug, Clone, Default)]
pub struct Idempotency(Option<Pending>);

#[derive(Debug, Clone)]
struct Pending {
    key: String,
    method: String,
    path: String,
    content_type: String,
}

impl Idempotency {
    /// The key and the fingerprint of this request with `body`.
    pub fn key_for(&self, body: &[u8]) -> Option<IdempotencyKey> {
        let p = self.0.as_ref()?;
        let mut h = Sha256::new();
        h.update(b"agentledger idempotency v1\n");
        for part in [&p.method, &p.path, &p.content_type] {
            h.update(part.as_bytes());
            h.update(b"\n");
        }
        h.update(body);
        Some(IdempotencyKey {
            key: p.key.clone(),
            fingerprint: h.finalize().into(),
        })
    }
}

fn invalid(message: &str) -> ApiError {
    InputError::invalid("Idempotency-Key", format!("Idempotency-Key: {message}"))
        .with_code("INVALID_IDEMPOTENCY_KEY")
        .into()
}

/// Check a presented key: 1 to 255 visible ASCII characters.
pub fn parse_key(raw: &[u8]) -> Result<String, ApiError> {
    if raw.is_empty() {
        return Err(invalid("is empty"));
    }
    if raw.len() > MAX_KEY_CHARS {
        return Err(invalid("is longer than 255 characters"));
    }
    if !raw.iter().all(|b| (0x21..=0x7e).contains(b)) {
        return Err(invalid(
            "must be visible ASCII characters (a UUID, say), without spaces",
        ));
    }
    Ok(String::from_utf8_lossy(raw).into_owned())
}

impl<S: Send + Sync> FromRequestParts<S> for Idempotency {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let mut values = parts.headers.get_all(HEADER).iter();
        let Some(v) = values.next() else {
            return Ok(Idempotency(None));
        };
        if values.next().is_some() {
            return Err(invalid("is repeated; send one"));
        }
        let key = parse_key(v.as_bytes())?;
        let content_type = parts
            .headers
            .get(header::CONTENT_TYPE)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).trim().to_owned())
            .unwrap_or_default();
        Ok(Idempotency(Some(Pending {
            key,
            method: parts.method.as_str().to_owned(),
            path: parts.uri.path().to_owned(),
            content_type,
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(path: &str) -> Idempotency {
        Idempotency(Some(Pending {
            key: "k".into(),
            method: "POST".into(),
            path: path.into(),
            content_type: "application/json".into(),
        }))
    }

    #[test]
    fn the_fingerprint_covers_route_and_body() {
        let a = pending("/api/v1/events").key_for(b"{}").unwrap();
        assert_eq!(a, pending("/api/v1/events").key_for(b"{}").unwrap());
        assert_ne!(a, pending("/api/events").key_for(b"{}").unwrap());
        assert_ne!(a, pending("/api/v1/events").key_for(b"{ }").unwrap());
        assert!(Idempotency::default().key_for(b"{}").is_none());
    }

    #[test]
    fn keys_are_bounded_visible_ascii() {
        assert_eq!(parse_key(b"retry-1").unwrap(), "retry-1");
        for bad in [&b""[..], b"a b", b"caf\xc3\xa9", &[b'x'; 256][..]] {
            assert!(parse_key(bad).is_err(), "{bad:?}");
        }
    }
}
