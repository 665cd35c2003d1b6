//! Authentication: an API key (as `Authorization: Bearer` or `x-api-key`)
//! resolves to its project. Only the key's SHA-256 is stored and looked up, so
//! comparison never touches the secret itself.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};

use agentledger_core::keys::hash_key;
use agentledger_store::ProjectRef;

use crate::error::ApiError;
use crate::state::AppState;

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub project: ProjectRef,
    pub key_id: String,
    pub admin: bool,
}

/// The key presented in the headers, if any. `Authorization: Bearer` wins.
pub fn presented_key(headers: &HeaderMap) -> Option<&str> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, rest) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        });
    bearer
        .or_else(|| {
            headers
                .get("x-api-key")
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
        })
        .filter(|k| !k.is_empty())
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let key = presented_key(&parts.headers).ok_or(ApiError::Unauthorized(
            "missing API key: send Authorization: Bearer <key> or x-api-key",
        ))?;
        if key.len() > 512 {
            return Err(ApiError::Unauthorized("invalid API key"));
        }
        let info = state
            .store
            .authenticate(hash_key(key))
            .await?
            .ok_or(ApiError::Unauthorized("invalid API key"))?;
        Ok(Caller {
            project: info.project,
            key_id: info.id,
            admin: info.admin,
        })
    }
}
