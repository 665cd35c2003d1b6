//! Operational routes: health, metrics, the OpenAPI document.

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use utoipa::OpenApi;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
}

async fn healthz() -> impl IntoResponse {
    Json(serde_json::json!({ "status": "ok" }))
}

/// Prometheus metrics
///
/// Server-wide figures, so an admin key is required.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, content_type = "application/openmetrics-text", body = String,
            description = "OpenMetrics text (version 1.0.0)"),
        (status = 401, body = agentledger_dialects::native::ErrorBody),
        (status = 403, body = agentledger_dialects::native::ErrorBody)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn metrics(
    State(st): State<AppState>,
    caller: Caller,
) -> Result<impl IntoResponse, ApiError> {
    if !caller.admin {
        return Err(ApiError::Forbidden("metrics need an admin key"));
    }
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

async fn openapi() -> impl IntoResponse {
    Json(super::ApiDoc::openapi())
}
