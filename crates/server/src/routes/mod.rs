//! Every route, merged into one router; the OpenAPI document is generated from
//! the handlers' annotations.

pub mod native;
pub mod ops;

use axum::Router;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new().merge(native::router()).merge(ops::router())
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "agentledger",
        description = "Tamper-evident audit trail and policy checkpoint for AI agents. \
            Every route except /healthz and /openapi.json takes an API key, as \
            `Authorization: Bearer <key>` or `x-api-key: <key>`."
    ),
    paths(
        native::ingest, native::list_events, native::get_event,
        native::create_session, native::list_sessions, native::get_session,
        native::verify, native::export, ops::metrics,
    ),
    modifiers(&Security),
    tags((name = "native", description = "agentledger's own API"),
         (name = "operations", description = "Health and metrics")),
)]
pub struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let c = doc.components.get_or_insert_with(Default::default);
        c.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        c.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("x-api-key"))),
        );
    }
}
