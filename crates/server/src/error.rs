//! The native API's one error type: every failure becomes the envelope
//! `{"error": {message, type, code, details}}` with its status. Internal
//! causes are logged and never sent to the client.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use agentledger_dialects::InputError;
use agentledger_dialects::native::{ErrorBody, ErrorDetail};
use agentledger_store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Input(#[from] InputError),
    #[error("{0}")]
    Unauthorized(&'static str),
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("{0}")]
    NotFound(&'static str),
    #[error("{0}")]
    Conflict(String),
    /// An `Idempotency-Key` already kept for a request with another body.
    #[error(
        "Idempotency-Key {0:?} was already used for a different request (another route or \
         body); use a new key for a new request"
    )]
    IdempotencyConflict(String),
    #[error("this route does not take that method")]
    MethodNotAllowed,
    #[error("Content-Type must be application/json")]
    UnsupportedMediaType,
    #[error("request body exceeds the limit of {0} bytes")]
    BodyTooLarge(usize),
    #[error("the ledger is busy; retry shortly")]
    Overloaded,
    #[error("too many requests for this API key; retry after {0} s")]
    RateLimited(u64),
    #[error("the server is shutting down")]
    ShuttingDown,
    #[error("the request body did not arrive within {0} s")]
    RequestTimeout(f64),
    #[error("the ledger's storage is full; nothing was stored")]
    StorageFull(String),
    #[error(
        "the query ran past its time budget of {0:?} and was stopped; narrow it \
         (a session, an agent, a time range, fewer or rarer words)"
    )]
    QueryBudget(std::time::Duration),
    /// A feature of a vendor's API that agentledger does not have (named).
    #[error("{0} is not implemented by agentledger")]
    NotImplemented(&'static str),
    #[error("internal error")]
    Internal(String),
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::SessionExists(id) => {
                ApiError::Conflict(format!("session {id:?} already exists"))
            }
            StoreError::NoSuchProject(_) => ApiError::NotFound("project not found"),
            StoreError::AlreadyErased(id) => {
                ApiError::Conflict(format!("event {id} is already erased"))
            }
            StoreError::IdempotencyConflict(k) => ApiError::IdempotencyConflict(k),
            StoreError::TooLarge(m) => {
                tracing::info!(cause = %m, "the database refused a value as too large");
                InputError::invalid(
                    "payload",
                    "payload: too many distinct words for the database's full-text index \
                     (PostgreSQL keeps at most 1 MB of index per event); split the payload",
                )
                .with_code("PAYLOAD_TOO_LARGE_FOR_INDEX")
                .into()
            }
            StoreError::Overloaded => ApiError::Overloaded,
            StoreError::ShuttingDown => ApiError::ShuttingDown,
            StoreError::Full(m) => ApiError::StorageFull(m),
            StoreError::QueryBudget(d) => ApiError::QueryBudget(d),
            StoreError::BadCursor => InputError::invalid(
                "cursor",
                "cursor: not a next_cursor of this listing (cursors belong to the project and \
                 listing that returned them)",
            )
            .into(),
            StoreError::Storage(m)
            | StoreError::Corrupt(m)
            | StoreError::ImportConflict(m)
            | StoreError::Judge(m) => ApiError::Internal(m),
        }
    }
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Input(InputError::Invalid { .. }) => StatusCode::BAD_REQUEST,
            ApiError::Input(InputError::TooLarge { .. }) | ApiError::BodyTooLarge(_) => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict(_) | ApiError::IdempotencyConflict(_) => StatusCode::CONFLICT,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Overloaded | ApiError::ShuttingDown | ApiError::QueryBudget(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::StorageFull(_) => StatusCode::INSUFFICIENT_STORAGE,
            ApiError::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::NotImplemented(_) => StatusCode::NOT_IMPLEMENTED,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Short reason used as a metrics label.
    pub fn reason(&self) -> &'static str {
        match self {
            ApiError::Input(i) => i.reason(),
            ApiError::Unauthorized(_) => "UNAUTHORIZED",
            ApiError::Forbidden(_) => "FORBIDDEN",
            ApiError::NotFound(_) => "NOT_FOUND",
            ApiError::MethodNotAllowed => "METHOD_NOT_ALLOWED",
            ApiError::Conflict(_) => "CONFLICT",
            ApiError::IdempotencyConflict(_) => "IDEMPOTENCY_KEY_REUSED",
            ApiError::UnsupportedMediaType => "UNSUPPORTED_MEDIA_TYPE",
            ApiError::BodyTooLarge(_) => "TOO_LARGE",
            ApiError::Overloaded => "OVERLOADED",
            ApiError::RateLimited(_) => "RATE_LIMITED",
            ApiError::ShuttingDown => "SHUTTING_DOWN",
            ApiError::StorageFull(_) => "STORAGE_FULL",
            ApiError::QueryBudget(_) => "QUERY_TOO_EXPENSIVE",
            ApiError::RequestTimeout(_) => "REQUEST_TIMEOUT",
            ApiError::NotImplemented(_) => "NOT_IMPLEMENTED",
            ApiError::Internal(_) => "INTERNAL",
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            ApiError::Input(InputError::Invalid { .. }) => "validation_error",
            ApiError::Input(InputError::TooLarge { .. }) | ApiError::BodyTooLarge(_) => {
                "payload_too_large"
            }
            ApiError::Unauthorized(_) => "authentication_error",
            ApiError::Forbidden(_) => "permission_error",
            ApiError::NotFound(_) => "not_found",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::Conflict(_) | ApiError::IdempotencyConflict(_) => "conflict",
            ApiError::UnsupportedMediaType => "unsupported_media_type",
            ApiError::Overloaded | ApiError::ShuttingDown | ApiError::QueryBudget(_) => {
                "overloaded"
            }
            ApiError::RateLimited(_) => "rate_limited",
            ApiError::StorageFull(_) => "storage_full",
            ApiError::RequestTimeout(_) => "request_timeout",
            ApiError::NotImplemented(_) => "not_implemented",
            ApiError::Internal(_) => "internal_error",
        }
    }

    pub fn body(&self) -> ErrorBody {
        let details = match self {
            ApiError::Input(InputError::Invalid { path, extra, .. })
                if !path.is_empty() || !extra.is_empty() =>
            {
                let mut d = serde_json::Map::new();
                if !path.is_empty() {
                    d.insert("path".into(), path.clone().into());
                }
                for (k, v) in extra {
                    d.insert((*k).into(), v.clone().into());
                }
                Some(serde_json::Value::Object(d))
            }
            ApiError::Input(InputError::TooLarge { path, limit, .. }) => {
                Some(json!({ "path": path, "limit": limit }))
            }
            ApiError::BodyTooLarge(limit) => Some(json!({ "limit": limit })),
            ApiError::RateLimited(secs) => Some(json!({ "retry_after_seconds": secs })),
            ApiError::NotImplemented(feature) => Some(json!({ "feature": feature })),
            ApiError::IdempotencyConflict(_) => Some(json!({ "path": "Idempotency-Key" })),
            _ => None,
        };
        ErrorBody {
            error: ErrorDetail {
                message: self.to_string(),
                kind: self.kind().into(),
                code: self.reason().into(),
                details,
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match &self {
            ApiError::Internal(cause) => tracing::error!(%cause, "request failed"),
            ApiError::StorageFull(cause) => tracing::error!(%cause, "storage full"),
            _ => {}
        }
        let status = self.status();
        let retry = match &self {
            ApiError::RateLimited(secs) => Some(HeaderValue::from(*secs)),
            _ if status == StatusCode::SERVICE_UNAVAILABLE
                || status == StatusCode::TOO_MANY_REQUESTS =>
            {
                Some(HeaderValue::from_static("1"))
            }
            _ => None,
        };
        let mut resp = (status, axum::Json(self.body())).into_response();
        resp.extensions_mut()
            .insert(crate::ingest::Refusal(self.reason()));
        if let Some(v) = retry {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        resp
    }
}
