//! Realm: `/v1/sessions/:session_id/events` and `/v1/events/:id`.

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};

use agentledger_core::{AgentId, Dialect, SessionId};
use agentledger_dialects::native::ErrorBody;
use agentledger_dialects::realm::{self, BatchResponse, EventOut, UNKNOWN_AGENT};

use super::shared::fetch_event;
use crate::auth::Caller;
use crate::body::JsonBytes;
use crate::error::ApiError;
use crate::extract::PathParam;
use crate::ingest::{Done, Idempotency, Submission, internal_reply, json_reply, submit};
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    let r = Router::new()
        .route("/v1/sessions/{session_id}/events", post(create))
        .route("/v1/sessions/{session_id}/events/batch", post(create_batch))
        .route("/v1/events/{id}", get(get_one));
    crate::ingest::ingest_routes(Dialect::Realm, r)
}

/// The agent to record: the session's own, or "unknown" for a new session
/// (Realm events carry no agent id).
async fn agent_of(
    st: &AppState,
    caller: &Caller,
    session: &SessionId,
) -> Result<AgentId, ApiError> {
    let known = st
        .store
        .get_session(&caller.project, session.as_str())
        .await?
        .map(|s| s.agent_id);
    AgentId::parse(known.unwrap_or_else(|| UNKNOWN_AGENT.into()))
        .map_err(|e| ApiError::Internal(format!("stored agent id is invalid: {e}")))
}

/// Create an event
#[utoipa::path(post, path = "/v1/sessions/{session_id}/events", tag = "realm",
    params(("session_id" = String, Path, description = "Session id (created on first use)")),
    request_body = realm::EventIn,
    responses((status = 201, body = EventOut), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn create(
    State(st): State<AppState>,
    caller: Caller,
    PathParam(session_id): PathParam<String>,
    idem: Idempotency,
    JsonBytes(body): JsonBytes,
) -> Result<Response, ApiError> {
    let session = realm::session_param(&session_id)?;
    let agent = agent_of(&st, &caller, &session).await?;
    let evs = vec![realm::parse_event(&session, &agent, &body)?];
    let sub = Submission::events(Dialect::Realm, evs, idem.key_for(&body));
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

/// Batch create events
#[utoipa::path(post, path = "/v1/sessions/{session_id}/events/batch", tag = "realm",
    params(("session_id" = String, Path, description = "Session id (created on first use)")),
    request_body = realm::BatchRequest,
    responses((status = 201, body = BatchResponse), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn create_batch(
    State(st): State<AppState>,
    caller: Caller,
    PathParam(session_id): PathParam<String>,
    idem: Idempotency,
    JsonBytes(body): JsonBytes,
) -> Result<Response, ApiError> {
    let session = realm::session_param(&session_id)?;
    let agent = agent_of(&st, &caller, &session).await?;
    let events = realm::parse_batch(&session, &agent, &body)?;
    let sub = Submission::events(Dialect::Realm, events, idem.key_for(&body));
    submit(
        &st,
        &caller,
        sub,
        std::sync::Arc::new(|d: &Done<'_>| {
            json_reply(
                StatusCode::CREATED,
                &BatchResponse {
                    created: d.appended.len(),
                    event_ids: d
                        .appended
                        .iter()
                        .map(|a| a.id.to_prefixed(realm::EVENT_PREFIX))
                        .collect(),
                },
            )
        }),
    )
    .await
}

/// Get an event
///
/// Accepts the event's id in any form the APIs hand out.
#[utoipa::path(get, path = "/v1/events/{id}", tag = "realm",
    params(("id" = String, Path, description = "Event id")),
    responses((status = 200, body = EventOut), (status = 404, body = ErrorBody), (status = 401, body = ErrorBody)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn get_one(
    State(st): State<AppState>,
    caller: Caller,
    PathParam(id): PathParam<String>,
) -> Result<Json<EventOut>, ApiError> {
    let ev = fetch_event(&st, &caller, &id).await?;
    Ok(Json(EventOut::from_event(ev)))
}
