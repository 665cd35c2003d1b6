//! Secureagentics: `/v1/agents/{id}/events`.

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};

use agentledger_core::Dialect;
use agentledger_dialects::native::ErrorBody;
use agentledger_dialects::secureagentics::{self, BatchResponse, EventList, EventOut, ListParams};

use crate::auth::Caller;
use crate::body::JsonBytes;
use crate::error::ApiError;
use crate::extract::{PathParam, QueryParams};
use crate::ingest::{Done, Idempotency, Submission, internal_reply, json_reply, submit};
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    let r = Router::new()
        .route("/v1/agents/{id}/events", get(list).post(send))
        .route("/v1/agents/{id}/events/batch", post(send_batch));
    crate::ingest::ingest_routes(Dialect::Secureagentics, r)
}

/// Send an event
///
/// Recorded in the trace's session (or the agent's own stream without a
/// trace_id) and answered with the event and its policy_result.
#[utoipa::path(post, path = "/v1/agents/{id}/events", tag = "secureagentics",
    params(("id" = String, Path, description = "Agent id, prefixed with agt_")),
    request_body = secureagentics::EventIn,
    responses((status = 201, body = EventOut),
        (status = 400, body = ErrorBody, description = "Invalid JSON or field; agent id without agt_"),
        (status = 401, body = ErrorBody), (status = 413, body = ErrorBody), (status = 415, body = ErrorBody),
        (status = 503, body = ErrorBody)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn send(
    State(st): State<AppState>,
    caller: Caller,
    PathParam(id): PathParam<String>,
    idem: Idempotency,
    JsonBytes(body): JsonBytes,
) -> Result<Response, ApiError> {
    let agent = secureagentics::agent_param(&id)?;
    let evs = vec![secureagentics::parse_event(&agent, &body)?];
    let sub = Submission::events(Dialect::Secureagentics, evs, idem.key_for(&body));
    submit(
        &st,
        &caller,
        sub,
        std::sync::Arc::new(
            |d: &Done<'_>| match (d.events.first(), d.appended.first()) {
                (Some(ev), Some(a)) => json_reply(
                    StatusCode::CREATED,
                    &EventOut::created(ev.clone(), a.id, a.server_ts),
                ),
                _ => internal_reply(),
            },
        ),
    )
    .await
}

/// Send events in batch
///
/// Up to 100 events, validated together: one invalid event refuses the
/// batch and nothing is stored.
#[utoipa::path(post, path = "/v1/agents/{id}/events/batch", tag = "secureagentics",
    params(("id" = String, Path, description = "Agent id, prefixed with agt_")),
    request_body = secureagentics::BatchRequest,
    responses((status = 201, body = BatchResponse),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 413, body = ErrorBody, description = "More than 100 events"), (status = 415, body = ErrorBody),
        (status = 503, body = ErrorBody)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn send_batch(
    State(st): State<AppState>,
    caller: Caller,
    PathParam(id): PathParam<String>,
    idem: Idempotency,
    JsonBytes(body): JsonBytes,
) -> Result<Response, ApiError> {
    let agent = secureagentics::agent_param(&id)?;
    let events = secureagentics::parse_batch(&agent, &body)?;
    let sub = Submission::events(Dialect::Secureagentics, events, idem.key_for(&body));
    submit(
        &st,
        &caller,
        sub,
        std::sync::Arc::new(|d: &Done<'_>| {
            let results: Vec<EventOut> = d
                .events
                .iter()
                .zip(d.appended)
                .map(|(ev, a)| EventOut::created(ev.clone(), a.id, a.server_ts))
                .collect();
            json_reply(
                StatusCode::CREATED,
                &BatchResponse {
                    total: results.len(),
                    results,
                },
            )
        }),
    )
    .await
}

/// List events for an agent
///
/// Every event of this agent, whichever API it came through.
#[utoipa::path(get, path = "/v1/agents/{id}/events", tag = "secureagentics",
    params(("id" = String, Path, description = "Agent id, prefixed with agt_"), ListParams),
    responses((status = 200, body = EventList), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn list(
    State(st): State<AppState>,
    caller: Caller,
    PathParam(id): PathParam<String>,
    QueryParams(p): QueryParams<ListParams>,
) -> Result<Json<EventList>, ApiError> {
    let agent = secureagentics::agent_param(&id)?;
    let page = st
        .store
        .query_events(&caller.project, p.to_query(&agent)?)
        .await?;
    Ok(Json(EventList {
        total: page.total.unwrap_or(0),
        items: page.events.into_iter().map(EventOut::from_event).collect(),
    }))
}
