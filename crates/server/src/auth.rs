//! Authentication: an API key (as `Authorization: Bearer` or `x-api-key`)
//! resolves to its project. Only the key's SHA-256 is stored and looked up, so
//! comparison never touches the secret itself.

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use lru::LruCache;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use agentledger_core::keys::hash_key;
use agentledger_store::{ApiKeyInfo, ProjectRef};

use crate::error::ApiError;
use crate::state::AppState;

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub project: ProjectRef,
    pub key_id: String,
    pub admin: bool,
    /// A read (GET) holds one of its key's read slots until it is answered.
    _read: Option<Arc<OwnedSemaphorePermit>>,
}

impl Caller {
    /// This request's read slot, for a response that keeps reading after
    /// the handler returns (a streamed export holds it until it ends).
    pub fn read_slot(&self) -> Option<Arc<OwnedSemaphorePermit>> {
        self._read.clone()
    }
}

/// Reads in flight per API key. The read pool has a few connections; one
/// key's expensive searches may take at most this share of them, so another
/// key's reads (another project's) still find a connection free.
pub struct ReadGate {
    per_key: usize,
    keys: Mutex<LruCache<String, Arc<Semaphore>>>,
}

/// How long a read waits for one of its key's slots before 429.
const READ_SLOT_WAIT: Duration = Duration::from_millis(500);

impl ReadGate {
    pub fn new(per_key: usize) -> Self {
        let cap = NonZeroUsize::new(AUTH_CACHE_ENTRIES).unwrap_or(NonZeroUsize::MIN);
        ReadGate {
            per_key: per_key.max(1),
            keys: Mutex::new(LruCache::new(cap)),
        }
    }

    async fn enter(&self, key_id: &str) -> Result<Arc<OwnedSemaphorePermit>, ApiError> {
        let sem = {
            let mut m = self.keys.lock().unwrap_or_else(|p| p.into_inner());
            m.get_or_insert(key_id.to_owned(), || Arc::new(Semaphore::new(self.per_key)))
                .clone()
        };
        match tokio::time::timeout(READ_SLOT_WAIT, sem.acquire_owned()).await {
            Ok(Ok(p)) => Ok(Arc::new(p)),
            _ => Err(ApiError::RateLimited(1)),
        }
    }
}

/// The key presented in the headers, if any. Both headers may carry the
/// same key; two different keys are refused as ambiguous.
pub fn presented_key(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
    // A repeated header would be read as its first value by us and maybe as
    // its last by a proxy in front: refuse rather than pick one.
    for name in [header::AUTHORIZATION.as_str(), "x-api-key"] {
        if headers.get_all(name).iter().nth(1).is_some() {
            return Err(ApiError::Unauthorized(
                "the API key header is repeated: send one Authorization or one x-api-key header",
            ));
        }
    }
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, rest) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        });
    let header = headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim);
    match (
        bearer.filter(|k| !k.is_empty()),
        header.filter(|k| !k.is_empty()),
    ) {
        (Some(a), Some(b)) if a != b => Err(ApiError::Unauthorized(
            "two different API keys: send one, as Authorization: Bearer or x-api-key",
        )),
        (Some(a), _) => Ok(Some(a)),
        (None, b) => Ok(b),
    }
}

/// How long a successful key lookup is reused: a key revoked with
/// `agentledger keys revoke` (another process) stops working within this time.
pub const AUTH_CACHE_TTL: Duration = Duration::from_secs(1);
const AUTH_CACHE_ENTRIES: usize = 10_000;

/// Recently verified keys, by key hash (never the key itself), so a busy
/// client does not cost a database read per request. Unknown keys are not
/// cached: every wrong key is checked against the database.
pub struct AuthCache {
    entries: Mutex<LruCache<[u8; 32], (ApiKeyInfo, Instant)>>,
}

impl Default for AuthCache {
    fn default() -> Self {
        let cap = NonZeroUsize::new(AUTH_CACHE_ENTRIES).unwrap_or(NonZeroUsize::MIN);
        AuthCache {
            entries: Mutex::new(LruCache::new(cap)),
        }
    }
}

impl AuthCache {
    fn get(&self, hash: &[u8; 32]) -> Option<ApiKeyInfo> {
        let mut m = self.entries.lock().ok()?;
        match m.get(hash) {
            Some((info, at)) if at.elapsed() < AUTH_CACHE_TTL => Some(info.clone()),
            Some(_) => {
                m.pop(hash);
                None
            }
            None => None,
        }
    }

    fn put(&self, hash: [u8; 32], info: ApiKeyInfo) {
        if let Ok(mut m) = self.entries.lock() {
            m.put(hash, (info, Instant::now()));
        }
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let read = matches!(
            parts.method,
            axum::http::Method::GET | axum::http::Method::HEAD
        );
        authenticate(&parts.headers, state, read).await
    }
}

/// The caller of a request with these headers: the key they present,
/// checked as on every route. `read`: the request reads (it then holds one of
/// the key's read slots). The MCP endpoint calls this for its POSTs, which
/// only read.
pub async fn authenticate(
    headers: &HeaderMap,
    state: &AppState,
    read: bool,
) -> Result<Caller, ApiError> {
    let key = presented_key(headers)?.ok_or(ApiError::Unauthorized(
        "missing API key: send Authorization: Bearer <key> or x-api-key",
    ))?;
    if key.len() > 512 {
        return Err(ApiError::Unauthorized("invalid API key"));
    }
    caller_for_key_hash(state, hash_key(key), read).await
}

/// The caller a key's hash stands for, through the same cache, rate limit
/// and read slots as a key presented in a header. The console keeps only
/// this hash for a signed-in browser and resolves it on every request, so a
/// revoked key ends its console sessions within [`AUTH_CACHE_TTL`].
/// `read`: the request reads (it then holds one of the key's read slots).
pub async fn caller_for_key_hash(
    state: &AppState,
    hash: [u8; 32],
    read: bool,
) -> Result<Caller, ApiError> {
    let info = match state.auth.get(&hash) {
        Some(info) => info,
        None => {
            let info = state
                .store
                .authenticate(hash)
                .await?
                .ok_or(ApiError::Unauthorized("invalid API key"))?;
            state.auth.put(hash, info.clone());
            info
        }
    };
    if let Some(limiter) = &state.limiter
        && let Err(secs) = limiter.check(&info.id, Instant::now())
    {
        return Err(ApiError::RateLimited(secs));
    }
    // HEAD runs the GET handler too, so it takes a slot like GET.
    let read = if read {
        Some(state.readers.enter(&info.id).await?)
    } else {
        None
    };
    Ok(Caller {
        project: info.project,
        key_id: info.id,
        admin: info.admin,
        _read: read,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_key_holds_at_most_its_read_slots_and_others_are_unaffected() {
        let gate = ReadGate::new(2);
        let a1 = gate.enter("key_a").await.expect("first");
        let _a2 = gate.enter("key_a").await.expect("second");
        assert!(
            matches!(gate.enter("key_a").await, Err(ApiError::RateLimited(_))),
            "a third read of the same key is refused"
        );
        let _b = gate
            .enter("key_b")
            .await
            .expect("another key is not affected");
        drop(a1);
        gate.enter("key_a").await.expect("a slot came free");
    }
}
