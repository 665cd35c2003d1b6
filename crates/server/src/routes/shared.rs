//! What every dialect's routes share: append and count, count refusals, and
//! find an event by any rendering of its id.

use agentledger_core::{Dialect, Event, EventId, NewEvent};
use agentledger_store::AppendedEvent;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::state::AppState;

/// Judge a validated batch against the policies, then append it for the
/// caller's project and count it. A denied event is still recorded.
pub async fn append(
    st: &AppState,
    caller: &Caller,
    dialect: Dialect,
    mut events: Vec<NewEvent>,
) -> Result<Vec<AppendedEvent>, ApiError> {
    super::policy::judge(st, caller, &mut events, false).await?;
    append_judged(st, caller, dialect, events).await
}

/// Append events that were already judged (or need no judging).
pub async fn append_judged(
    st: &AppState,
    caller: &Caller,
    dialect: Dialect,
    events: Vec<NewEvent>,
) -> Result<Vec<AppendedEvent>, ApiError> {
    let n = events.len();
    let out = st.store.append(&caller.project, events).await?;
    st.metrics.ingested(dialect.as_str(), n);
    Ok(out)
}

/// Append one event; its place in the chain.
pub async fn append_one(
    st: &AppState,
    caller: &Caller,
    dialect: Dialect,
    event: NewEvent,
) -> Result<AppendedEvent, ApiError> {
    append(st, caller, dialect, vec![event])
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| ApiError::Internal("append returned no event".into()))
}

/// The caller's event named by `id` in any rendering, or 404.
pub async fn fetch_event(st: &AppState, caller: &Caller, id: &str) -> Result<Event, ApiError> {
    st.store
        .get_event(&caller.project, event_id(id)?)
        .await?
        .ok_or(ApiError::NotFound("event not found"))
}

/// Count a refused write under its dialect and reason, passing the result on.
pub fn counted<T>(st: &AppState, dialect: Dialect, r: Result<T, ApiError>) -> Result<T, ApiError> {
    if let Err(e) = &r {
        st.metrics.rejected(dialect.as_str(), e.reason());
    }
    r
}

/// Any rendering of an event id (ULID, UUID, `evt_…`, `event_…`); anything
/// else cannot name an event, so it is a 404 like an unknown id.
pub fn event_id(text: &str) -> Result<EventId, ApiError> {
    EventId::parse_any(text).map_err(|_| ApiError::NotFound("event not found"))
}
