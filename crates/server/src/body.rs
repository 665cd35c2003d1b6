//! Reading request bodies: content type checked, size bounded before and
//! while reading (DESIGN: bounded everything).

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::header;

use agentledger_core::limits::MAX_BODY_BYTES;

use crate::error::ApiError;

/// A JSON request body of at most [`MAX_BODY_BYTES`].
pub struct JsonBytes(pub Bytes);

pub fn is_json(content_type: Option<&header::HeaderValue>) -> bool {
    let Some(ct) = content_type.and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let mime = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
}

/// How long a client may take to send a request body (a request extension
/// set by the router; `serve --body-timeout`).
#[derive(Debug, Clone, Copy)]
pub struct BodyTimeout(pub Duration);

/// Without the router's setting.
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// Read a body of at most `limit` bytes within the body timeout, refusing
/// early on a declared length; a body that trickles in too slowly is 408.
pub async fn read_limited(req: Request, limit: usize) -> Result<Bytes, ApiError> {
    let timeout = req
        .extensions()
        .get::<BodyTimeout>()
        .map_or(DEFAULT_BODY_TIMEOUT, |t| t.0);
    tokio::time::timeout(timeout, read_body(req, limit))
        .await
        .map_err(|_| ApiError::RequestTimeout(timeout.as_secs_f64()))?
}

async fn read_body(req: Request, limit: usize) -> Result<Bytes, ApiError> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ApiError::BodyTooLarge(limit));
    }
    axum::body::to_bytes(req.into_body(), limit)
        .await
        .map_err(|e| {
            if std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>())
            {
                ApiError::BodyTooLarge(limit)
            } else {
                ApiError::Input(agentledger_dialects::InputError::invalid(
                    "",
                    format!("could not read the request body: {e}"),
                ))
            }
        })
}

impl<S: Send + Sync> FromRequest<S> for JsonBytes {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(req.headers().get(header::CONTENT_TYPE)) {
            return Err(ApiError::UnsupportedMediaType);
        }
        read_limited(req, MAX_BODY_BYTES).await.map(JsonBytes)
    }
}
