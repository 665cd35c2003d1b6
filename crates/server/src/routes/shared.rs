//! What every dialect's read routes share: find an event by any rendering
//! of its id. (Writes go through `crate::ingest`.)

use agentledger_core::{Event, EventId};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::state::AppState;

/// The caller's event named by `id` in any rendering, or 404.
pub async fn fetch_event(st: &AppState, caller: &Caller, id: &str) -> Result<Event, ApiError> {
    st.store
        .get_event(&caller.project, event_id(id)?)
        .await?
        .ok_or(ApiError::NotFound("event not found"))
}

/// Any rendering of an event id (ULID, UUID, `evt_…`, `event_…`); anything
/// else cannot name an event, so it is a 404 like an unknown id.
pub fn event_id(text: &str) -> Result<EventId, ApiError> {
    EventId::parse_any(text).map_err(|_| ApiError::NotFound("event not found"))
}
