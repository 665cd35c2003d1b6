//! Operational routes: health, metrics, the OpenAPI document.

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use utoipa::OpenApi;

use axum::http::HeaderMap;
use subtle::ConstantTimeEq;

use crate::error::ApiError;
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
}

/// Liveness
///
/// No key needed: answers `{"status":"ok"}` while the server runs.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "The server answers", body = Object)),
    security(()))]
pub async fn healthz() -> impl IntoResponse {
    Json(serde_json::json!({ "status": "ok" }))
}

/// Prometheus metrics
///
/// Server-wide figures across every project, so they need the operator
/// token (`--operator-token`), sent as `Authorization: Bearer`; no
/// project's API key, not even an admin's, is enough.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, content_type = "application/openmetrics-text", body = String,
            description = "OpenMetrics text (version 1.0.0)"),
        (status = 401, body = agentledger_dialects::native::ErrorBody),
        (status = 403, body = agentledger_dialects::native::ErrorBody,
            description = "A project's API key, or no operator token configured")),
    security(("bearer" = [])))]
pub async fn metrics(
    State(st): State<AppState>,
    headers: HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    operator(&st, &headers).await?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        st.metrics.render(
            st.store.queue_depth(),
            st.store.pending_events(),
            st.store.search_backlog(),
        ),
    ))
}

/// Admit the operator: the token's hash compared in constant time. A
/// project's valid API key is told it is not enough (403); anything else is
/// unauthenticated (401).
async fn operator(st: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let presented = crate::auth::presented_key(headers)?.ok_or(ApiError::Unauthorized(
        "missing operator token: send Authorization: Bearer <token>",
    ))?;
    if presented.len() <= agentledger_core::keys::MAX_KEY_CHARS {
        let hash = agentledger_core::keys::hash_key(presented);
        if let Some(expected) = &st.operator
            && bool::from(hash.ct_eq(expected))
        {
            return Ok(());
        }
        if st.store.authenticate(hash).await?.is_some() {
            return Err(ApiError::Forbidden(
                "metrics are server-wide: they need the operator token (--operator-token), not a project's key",
            ));
        }
    }
    Err(ApiError::Unauthorized("invalid operator token"))
}

async fn openapi() -> impl IntoResponse {
    Json(super::ApiDoc::openapi())
}
