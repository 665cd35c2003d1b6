//! Realm: `/v1/sessions/:session_id/events` and `/v1/events/:id`.

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};

use agentledger_core::{AgentId, Dialect, SessionId};
use agentledger_dialects::native::ErrorBody;
use agentledger_dialects::realm::{self, BatchResponse, EventOut, UNKNOWN_AGENT};

use super::shared::{append, append_judged, counted, fetch_event};
use crate::auth::Caller;
use crate::body::JsonBytes;
use crate::error::ApiError;
use crate::extract::PathParam;
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/sessions/{session_id}/events", post(create))
        .route("/v1/sessions/{session_id}/events/batch", post(create_batch))
        .route("/v1/events/{id}", get(get_one))
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
    JsonBytes(body): JsonBytes,
) -> Result<(StatusCode, Json<EventOut>), ApiError> {
    let r = async {
        let session = realm::session_param(&session_id)?;
        let agent = agent_of(&st, &caller, &session).await?;
        let mut evs = vec![realm::parse_event(&session, &agent, &body)?];
        super::policy::judge(&st, &caller, &mut evs, false).await?;
        let out = append_judged(&st, &caller, Dialect::Realm, evs.clone()).await?;
        let (Some(ev), Some(first)) = (evs.pop(), out.first()) else {
            return Err(ApiError::Internal("append returned no event".into()));
        };
        Ok(EventOut::created(ev, first.id, first.server_ts))
    }
    .await;
    counted(&st, Dialect::Realm, r).map(|e| (StatusCode::CREATED, Json(e)))
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
    JsonBytes(body): JsonBytes,
) -> Result<(StatusCode, Json<BatchResponse>), ApiError> {
    let r = async {
        let session = realm::session_param(&session_id)?;
        let agent = agent_of(&st, &caller, &session).await?;
        let events = realm::parse_batch(&session, &agent, &body)?;
        let out = append(&st, &caller, Dialect::Realm, events).await?;
        Ok(BatchResponse {
            created: out.len(),
            event_ids: out
                .iter()
                .map(|a| a.id.to_prefixed(realm::EVENT_PREFIX))
                .collect(),
        })
    }
    .await;
    counted(&st, Dialect::Realm, r).map(|b| (StatusCode::CREATED, Json(b)))
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
