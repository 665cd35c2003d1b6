//! Erasing an event's payload (issue 17): admin keys only, in the caller's
//! project. The work is `crate::erase`, shared with `agentledger erase`.

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::routing::post;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use agentledger_dialects::InputError;
use agentledger_dialects::error::parse_json;
use agentledger_dialects::native::{ErasedOut, ErrorBody};

use super::shared::event_id;
use crate::auth::Caller;
use crate::body::JsonBytes;
use crate::erase::{EraseError, Erased, erase};
use crate::error::ApiError;
use crate::extract::PathParam;
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/api/v1/events/{id}/erase", post(erase_event))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EraseRequest {
    /// Why (kept in the chained `event_erased` record; 1 to 1000 characters).
    pub reason: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EraseResponse {
    pub event_id: String,
    pub session_id: String,
    pub seq: u64,
    pub erased: ErasedOut,
}

impl From<Erased> for EraseResponse {
    fn from(e: Erased) -> Self {
        EraseResponse {
            event_id: e.event_id.to_string(),
            session_id: e.session_id,
            seq: e.seq,
            erased: ErasedOut {
                by: e.by,
                at: e.at.to_rfc3339(),
                record_seq: e.record_seq,
            },
        }
    }
}

/// Erase an event's payload
///
/// Removes the payload (personal data, a leaked secret) and everything
/// derived from its text (full-text index), keeps its `payload_sha256`, and
/// appends an `event_erased` record to the event's session in the same
/// transaction: the chain, the transparency log and every proof still
/// verify. Needs an admin key of the event's project. Erasing an erased
/// event is refused (409) and changes nothing.
#[utoipa::path(post, path = "/api/v1/events/{id}/erase", tag = "native",
    params(("id" = String, Path, description = "Event id in any form: ULID, UUID, evt_…, event_…")),
    request_body = EraseRequest,
    responses((status = 200, body = EraseResponse), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "Already erased (the message says by whom and when)")),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn erase_event(
    State(st): State<AppState>,
    caller: Caller,
    PathParam(id): PathParam<String>,
    JsonBytes(body): JsonBytes,
) -> Result<Json<EraseResponse>, ApiError> {
    if !caller.admin {
        return Err(ApiError::Forbidden("erasing an event needs an admin key"));
    }
    let id = event_id(&id)?;
    let req: EraseRequest = parse_json(&body)?;
    let by = format!("key:{}", caller.key_id);
    match erase(st.store.as_ref(), &caller.project, id, &by, &req.reason).await {
        Ok(e) => Ok(Json(e.into())),
        Err(EraseError::NotFound) => Err(ApiError::NotFound("event not found")),
        Err(EraseError::AlreadyErased(first)) => Err(ApiError::Conflict(format!(
            "event {} is already erased (by {} at {}; its record is seq {})",
            first.event_id,
            first.by,
            first.at.to_rfc3339(),
            first.record_seq
        ))),
        Err(EraseError::Invalid { field, message }) => {
            Err(InputError::invalid(field, format!("{field}: {message}")).into())
        }
        Err(EraseError::Store(e)) => Err(e.into()),
    }
}
