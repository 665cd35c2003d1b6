//! Reading request bodies: content type checked, size bounded before and
//! while reading (DESIGN: bounded everything).

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

/// Read a body of at most `limit` bytes, refusing early on a declared length.
pub async fn read_limited(req: Request, limit: usize) -> Result<Bytes, ApiError> {
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
