//! Every route, merged into one router; the OpenAPI document is generated from
//! the handlers' annotations.

pub mod agentlens;
pub mod fabraix;
pub mod native;
pub mod ops;
pub mod otlp;
pub mod policy;
pub mod realm;
pub mod secureagentics;
pub mod shared;

use axum::Router;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .merge(native::router())
        .merge(fabraix::router())
        .merge(agentlens::router())
        .merge(secureagentics::router())
        .merge(realm::router())
        .merge(otlp::router())
        .merge(policy::router())
        .merge(ops::router())
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
        native::verify, native::export, native::usage, ops::metrics,
        fabraix::register, fabraix::event,
        agentlens::ingest, agentlens::list, agentlens::get_one,
        secureagentics::send, secureagentics::send_batch, secureagentics::list,
        realm::create, realm::create_batch, realm::get_one,
        otlp::traces, otlp::logs,
        policy::list, policy::replace, policy::check, fabraix::check_action,
    ),
    modifiers(&Security),
    tags((name = "native", description = "agentledger's own API"),
         (name = "fabraix", description = "Fabraix-compatible API (base URL http://HOST:3400/v1)"),
         (name = "agentlens", description = "AgentLens-compatible API (base URL http://HOST:3400)"),
         (name = "secureagentics", description = "Secureagentics-compatible API (base URL http://HOST:3400/v1)"),
         (name = "realm", description = "Realm-compatible API (base URL http://HOST:3400/v1)"),
         (name = "otlp", description = "OpenTelemetry OTLP/HTTP intake (OTEL_EXPORTER_OTLP_ENDPOINT=http://HOST:3400)"),
         (name = "policy", description = "The policy checkpoint: action checks and the policy set"),
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
