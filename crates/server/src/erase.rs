//! Erasing an event's payload while keeping the proof (issue 17; core's
//! `erasure` says what is kept and why the chain still verifies). One path
//! for the admin API route and `agentledger erase`: read the event in the
//! caller's project, build its `event_erased` record, and append the record
//! through the store's one append path with the erasure in the same
//! transaction, so the payload is gone exactly when the record is chained.

use agentledger_core::erasure;
use agentledger_core::{EventId, Kind, Micros};
use agentledger_store::{AppendOutcome, AppendRequest, EraseTarget, EventStore, ProjectRef};

/// What an erasure did (or, for `AlreadyErased`, what the first one did).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Erased {
    pub event_id: EventId,
    pub session_id: String,
    pub seq: u64,
    pub by: String,
    pub at: Micros,
    /// The seq of the `event_erased` record in the same session.
    pub record_seq: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum EraseError {
    #[error("event not found")]
    NotFound,
    #[error("event {} is already erased", .0.event_id)]
    AlreadyErased(Box<Erased>),
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    #[error(transparent)]
    Store(#[from] agentledger_store::StoreError),
}

/// Erase event `id` of `project`'s ledger: `by` says who (`key:<id>`,
/// `cli:<user>`), `reason` why (kept in the record, never the content).
pub async fn erase(
    store: &dyn EventStore,
    project: &ProjectRef,
    id: EventId,
    by: &str,
    reason: &str,
) -> Result<Erased, EraseError> {
    erasure::check_reason(reason).map_err(|message| EraseError::Invalid {
        field: "reason",
        message,
    })?;
    if by.is_empty() || by.chars().count() > erasure::MAX_BY_CHARS {
        return Err(EraseError::Invalid {
            field: "by",
            message: format!("must be 1 to {} characters", erasure::MAX_BY_CHARS),
        });
    }
    let ev = store
        .get_event(project, id)
        .await?
        .ok_or(EraseError::NotFound)?;
    if let Some(e) = &ev.erased {
        return Err(EraseError::AlreadyErased(Box::new(Erased {
            event_id: id,
            session_id: ev.session_id,
            seq: ev.seq,
            by: e.by.clone(),
            at: e.at,
            record_seq: e.record_seq,
        })));
    }
    if ev.kind == Kind::EventErased {
        return Err(EraseError::Invalid {
            field: "id",
            message: "an erasure record names no content and cannot be erased".into(),
        });
    }
    let event = erasure::record_event(&ev, by, reason)
        .map_err(|e| agentledger_store::StoreError::Corrupt(format!("event {id}: {e}")))?;
    let req = AppendRequest {
        events: vec![event],
        erase: Some(Box::new(EraseTarget {
            event_id: id,
            seq: ev.seq,
            payload_sha256: ev.payload_sha256,
            by: by.to_owned(),
        })),
        ..AppendRequest::default()
    };
    let appended = match store.append_request(project, req).await {
        Ok(AppendOutcome::Committed { appended, .. }) => appended,
        Ok(_) => {
            return Err(agentledger_store::StoreError::Storage(
                "an erasure's append was not committed".into(),
            )
            .into());
        }
        // Another erasure of the same event committed first: answer with it.
        Err(agentledger_store::StoreError::AlreadyErased(_)) => {
            return match store.get_event(project, id).await?.and_then(|e| {
                e.erased.map(|x| Erased {
                    event_id: id,
                    session_id: e.session_id,
                    seq: e.seq,
                    by: x.by,
                    at: x.at,
                    record_seq: x.record_seq,
                })
            }) {
                Some(first) => Err(EraseError::AlreadyErased(Box::new(first))),
                None => Err(EraseError::NotFound),
            };
        }
        Err(e) => return Err(e.into()),
    };
    let record = appended
        .first()
        .ok_or_else(|| agentledger_store::StoreError::Storage("no record appended".into()))?;
    Ok(Erased {
        event_id: id,
        session_id: ev.session_id,
        seq: ev.seq,
        by: by.to_owned(),
        at: record.server_ts,
        record_seq: record.seq,
    })
}
