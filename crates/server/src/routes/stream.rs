//! `GET /api/v1/events/stream`: the project's events as they are committed,
//! as Server-Sent Events (see [`crate::live`]).

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use agentledger_dialects::InputError;
use agentledger_dialects::native::{ErrorBody, EventsParams};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::QueryParams;
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/api/v1/events/stream", get(stream))
}

/// Refuse the listing parameters a stream cannot honour (it has no pages,
/// no order but commit order, and matches no full text), naming the first.
pub fn stream_query(p: &EventsParams) -> Result<agentledger_core::query::EventQuery, ApiError> {
    for (name, given) in [
        ("q", p.q.is_some()),
        ("model", p.model.is_some()),
        ("order", p.order.is_some()),
        ("limit", p.limit.is_some()),
        ("cursor", p.cursor.is_some()),
    ] {
        if given {
            return Err(InputError::invalid(
                name,
                format!("{name}: not a filter of the stream (it sends every matching event once, as committed)"),
            )
            .into());
        }
    }
    Ok(p.to_query()?)
}

/// Stream events as they are committed
///
/// Server-Sent Events (`text/event-stream`): one `event: event` per event
/// of the key's project committed after the stream opened and matching the
/// filters (the list route's, less `q`, `model`, `order`, `limit` and
/// `cursor`), its `data` a JSON object {id, session_id, seq, agent_id, kind,
/// source_type, dialect, severity, decision, timestamp, received_at, hash}
/// and its `id` the event id. A reader too slow to keep up gets
/// `event: lagged` with `{"missed": N}` (read those with the list route); a
/// comment line every 15 s keeps the stream alive; after an hour the stream
/// sends `event: end` and closes (reconnect). At most 4 streams per key at
/// once (429 beyond). Each server sends the commits it made itself.
#[utoipa::path(get, path = "/api/v1/events/stream", tag = "native", params(EventsParams),
    responses(
        (status = 200, content_type = "text/event-stream", body = String,
            description = "Server-Sent Events, open until the client leaves, the hour is up or the server stops"),
        (status = 400, body = ErrorBody, description = "A filter is invalid or not a stream filter"),
        (status = 401, body = ErrorBody),
        (status = 429, body = ErrorBody, description = "The key already holds 4 streams")),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn stream(
    State(st): State<AppState>,
    caller: Caller,
    QueryParams(p): QueryParams<EventsParams>,
) -> Result<Response, ApiError> {
    let q = stream_query(&p)?;
    let sub = st
        .live
        .subscribe(&caller.key_id, caller.project.id.0)
        .ok_or(ApiError::RateLimited(5))?;
    // The caller (and its read slot) is dropped here: a stream reads
    // nothing from the database, so it does not hold one of the key's reads.
    Ok(crate::live::sse(sub, caller.project.id.0, q).into_response())
}
