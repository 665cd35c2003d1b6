//! Every route, merged into one router; the OpenAPI document is generated from
//! the handlers' annotations.

pub mod agentlens;
pub mod agentlens_read;
pub mod alerts;
pub mod erase;
pub mod fabraix;
pub mod log;
pub mod native;
pub mod ops;
pub mod otlp;
pub mod policy;
pub mod realm;
pub mod secureagentics;
pub mod shared;
pub mod stream;

use axum::Router;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .merge(native::router())
        .merge(stream::router())
        .merge(fabraix::router())
        .merge(agentlens::router())
        .merge(agentlens_read::router())
        .merge(secureagentics::router())
        .merge(realm::router())
        .merge(otlp::router())
        .merge(policy::router())
        .merge(alerts::router())
        .merge(ops::router())
        .merge(log::router())
        .merge(erase::router())
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "agentledger",
        description = "Tamper-evident audit trail and policy checkpoint for AI agents. \
            Every route except /healthz, /api/health and /openapi.json takes an API key, as \
            `Authorization: Bearer <key>` or `x-api-key: <key>`. Every POST route records \
            events and takes an optional `Idempotency-Key` header for safe retries."
    ),
    paths(
        native::ingest, native::list_events, native::get_event,
        native::create_session, native::list_sessions, native::get_session,
        native::verify, native::export, native::usage, erase::erase_event, stream::stream, ops::healthz, ops::metrics,
        fabraix::register, fabraix::event,
        agentlens::ingest, agentlens::list, agentlens::get_one,
        agentlens_read::health, agentlens_read::list_sessions, agentlens_read::get_session, agentlens_read::timeline,
        agentlens_read::list_agents, agentlens_read::get_agent, agentlens_read::llm_analytics,
        secureagentics::send, secureagentics::send_batch, secureagentics::list,
        realm::create, realm::create_batch, realm::get_one,
        otlp::traces, otlp::logs,
        policy::list, policy::replace, policy::clear, policy::check, fabraix::check_action,
        alerts::list_alerts, alerts::resolve, alerts::list_deliveries,
        alerts::list_rules, alerts::create_rule, alerts::delete_rule,
        alerts::list_destinations, alerts::create_destination, alerts::delete_destination,
        log::checkpoint, log::witnesses, log::tile, log::inclusion, log::consistency,
    ),
    modifiers(&Security, &CommonErrors),
    tags((name = "native", description = "agentledger's own API"),
         (name = "fabraix", description = "Fabraix-compatible API (base URL http://HOST:3400/v1)"),
         (name = "agentlens", description = "AgentLens-compatible API (base URL http://HOST:3400)"),
         (name = "secureagentics", description = "Secureagentics-compatible API (base URL http://HOST:3400/v1)"),
         (name = "realm", description = "Realm-compatible API (base URL http://HOST:3400/v1)"),
         (name = "otlp", description = "OpenTelemetry OTLP/HTTP intake (OTEL_EXPORTER_OTLP_ENDPOINT=http://HOST:3400)"),
         (name = "policy", description = "The policy checkpoint: action checks and the policy set"),
         (name = "alerts", description = "Alert rules, destinations, alerts and their deliveries (docs/alerts.md)"),
         (name = "operations", description = "Health and metrics"),
         (name = "log", description = "The project's transparency log: C2SP tlog-tiles layout, signed checkpoints, inclusion and consistency proofs (docs/transparency.md)")),
)]
pub struct ApiDoc;

struct Security;

/// The errors any route can answer, whatever its handler documents: added
/// here once so the document lists every status a client can receive.
struct CommonErrors;

impl Modify for CommonErrors {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::path::{ParameterBuilder, ParameterIn};
        use utoipa::openapi::schema::ObjectBuilder;
        use utoipa::openapi::{Content, Ref, RefOr, Required, ResponseBuilder};
        for (path, item) in doc.paths.paths.iter_mut() {
            // OTLP answers a google.rpc.Status in the request's encoding.
            let otlp = path == "/v1/traces" || path == "/v1/logs";
            let ops = [
                (false, &mut item.get),
                (false, &mut item.put),
                (true, &mut item.post),
                (false, &mut item.delete),
                (false, &mut item.patch),
            ];
            for (post, op) in ops {
                let Some(op) = op else { continue };
                // Health probes are documented as open (`security: [{}]`):
                // nothing below applies to them.
                let public = op.security.as_ref().is_some_and(|s| {
                    s.iter()
                        .all(|r| *r == utoipa::openapi::security::SecurityRequirement::default())
                });
                if public {
                    continue;
                }
                let body = op.request_body.is_some();
                let writes = op.responses.responses.contains_key("503");
                let mut add = |code: &str, description: &str| {
                    op.responses
                        .responses
                        .entry(code.into())
                        .or_insert_with(|| {
                            let r = ResponseBuilder::new().description(description);
                            let r = if otlp {
                                r
                            } else {
                                r.content(
                                    "application/json",
                                    Content::new(Some(Ref::from_schema_name("ErrorBody"))),
                                )
                            };
                            RefOr::T(r.build())
                        });
                };
                add("401", "Missing, unknown or revoked API key");
                add("429", "Over this key's rate limit; retry after Retry-After");
                add("500", "Storage failure; the cause is logged, not returned");
                if body {
                    add("400", "Malformed or invalid body; nothing stored");
                    add("408", "The body did not arrive within --body-timeout");
                    add("413", "Body or a part of it over its limit");
                    add("415", "Unsupported Content-Type");
                    add(
                        "503",
                        "The ledger is busy or stopping; retry after Retry-After",
                    );
                }
                if writes {
                    add("507", "The ledger's storage is full; nothing stored");
                }
                // Every POST records events: it takes an Idempotency-Key.
                if post && op.request_body.is_some() {
                    add(
                        "409",
                        "Idempotency-Key already used for a different request (or, \
                         where documented, another conflict); nothing stored",
                    );
                    add(
                        "410",
                        "A retry under an Idempotency-Key whose kept answer held an event \
                         payload since erased (code REPLY_ERASED); the request is not repeated",
                    );
                    let p = ParameterBuilder::new()
                        .name("Idempotency-Key")
                        .parameter_in(ParameterIn::Header)
                        .required(Required::False)
                        .description(Some(
                            "Safe retries: a retry with the same key and the same request \
                             gets the original answer (header Idempotent-Replayed: true) and \
                             appends nothing; the same key with another request is 409. Keys \
                             belong to the project and are kept --idempotency-ttl hours (24). \
                             1 to 255 visible ASCII characters.",
                        ))
                        .schema(Some(
                            ObjectBuilder::new()
                                .schema_type(utoipa::openapi::schema::Type::String)
                                .min_length(Some(1))
                                .max_length(Some(255)),
                        ))
                        .build();
                    op.parameters.get_or_insert_with(Vec::new).push(RefOr::T(p));
                }
            }
        }
    }
}

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
