//! AgentLens: `/api/events`.

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;

use agentledger_core::Dialect;
use agentledger_dialects::agentlens::{
    self, EventList, EventOut, EventsParams, IngestResponse, IngestedEvent,
};
use agentledger_dialects::native::ErrorBody;

use super::shared::fetch_event;
use crate::auth::Caller;
use crate::body::JsonBytes;
use crate::error::ApiError;
use crate::extract::{PathParam, QueryParams};
use crate::ingest::{Done, Idempotency, Submission, json_reply, submit};
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    let r = Router::new()
        .route("/api/events", get(list).post(ingest))
        .route("/api/events/{id}", get(get_one));
    crate::ingest::ingest_routes(Dialect::AgentLens, r)
}

/// Ingest a batch of events
#[utoipa::path(post, path = "/api/events", tag = "agentlens",
    request_body = agentlens::IngestRequest,
    responses((status = 201, body = IngestResponse),
        (status = 400, body = ErrorBody, description = "Invalid JSON, validation error, empty or oversize batch"),
        (status = 401, body = ErrorBody), (status = 413, body = ErrorBody), (status = 415, body = ErrorBody),
        (status = 500, body = ErrorBody, description = "Storage error"), (status = 503, body = ErrorBody)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn ingest(
    State(st): State<AppState>,
    caller: Caller,
    idem: Idempotency,
    JsonBytes(body): JsonBytes,
) -> Result<Response, ApiError> {
    let events = agentlens::parse_ingest(&body)?;
    let sub = Submission::events(Dialect::AgentLens, events, idem.key_for(&body));
    submit(
        &st,
        &caller,
        sub,
        std::sync::Arc::new(|d: &Done<'_>| {
            json_reply(
                StatusCode::CREATED,
                &IngestResponse {
                    ingested: d.appended.len(),
                    events: d
                        .appended
                        .iter()
                        .map(|e| IngestedEvent {
                            id: e.id.to_string(),
                            hash: hex::encode(e.hash),
                        })
                        .collect(),
                },
            )
        }),
    )
    .await
}

/// Query events
#[utoipa::path(get, path = "/api/events", tag = "agentlens", params(EventsParams),
    responses((status = 200, body = EventList), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn list(
    State(st): State<AppState>,
    caller: Caller,
    QueryParams(p): QueryParams<EventsParams>,
) -> Result<Json<EventList>, ApiError> {
    let q = p.to_query()?;
    let offset = q.offset;
    let page = st.store.query_events(&caller.project, q).await?;
    let total = page.total.unwrap_or(0);
    let has_more = offset + (page.events.len() as u64) < total;
    Ok(Json(EventList {
        events: page.events.into_iter().map(EventOut::from).collect(),
        total,
        has_more,
    }))
}

/// Get one event
///
/// Accepts the event's id in any form the APIs hand out.
#[utoipa::path(get, path = "/api/events/{id}", tag = "agentlens",
    params(("id" = String, Path, description = "Event id")),
    responses((status = 200, body = EventOut), (status = 404, body = ErrorBody), (status = 401, body = ErrorBody)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn get_one(
    State(st): State<AppState>,
    caller: Caller,
    PathParam(id): PathParam<String>,
) -> Result<Json<EventOut>, ApiError> {
    let ev = fetch_event(&st, &caller, &id).await?;
    Ok(Json(ev.into()))
}
