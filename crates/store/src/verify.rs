//! Verification of stored chains, shared by the HTTP API and the CLI.
//!
//! The chain covers every field of an event's envelope. Queries also read
//! stored columns that are *derived* from covered fields: the event's
//! `project_id` (listings), `decision` (from the verdict), the usage columns
//! (from the payload), and the session row's `status`, `first_event_at`,
//! `last_event_at`, counters (events, tool calls, errors, LLM calls, tokens,
//! cost) and tags (from the events). Editing one of those moves an event
//! between listings or forges figures without touching a hash, so
//! verification re-derives each from the covered fields and compares. The
//! session row's header (agent, system prompt, metadata, creation time) is
//! covered by the first event's hash (envelope v3). docs/hash-chain.md lists
//! exactly what is covered and how.
//!
//! An erased event (core's `erasure`) has no payload to re-derive its usage
//! columns from: they are compared instead with the usage its chained
//! `event_erased` record wrote down, and the session's counters are folded
//! from those columns. An erased `session_started` event's tags cannot be
//! re-derived: if it comes before any other `session_started` with tags, the
//! session row's tags are not compared (docs/hash-chain.md says so).

use agentledger_core::chain::{ChainEntry, SessionHead, tag_list};
use agentledger_core::event::EventView;
use agentledger_core::usage::Usage;
use agentledger_core::verdict::Decision;
use agentledger_core::{ChainVerifier, Micros, SessionStatus, Severity, VerifyReport};

use futures_util::StreamExt;

use crate::{DerivedColumns, EventStore, ProjectRef, StoreResult};

/// Events read per round trip while verifying.
pub const CHUNK: u32 = 5_000;

/// Chunks of one session that a verification (or an export) has in hand at
/// once, being read, hashed or rendered, ahead of the one being checked (or
/// sent): enough to keep both cores of a small machine busy.
pub const CHUNKS_AHEAD: usize = 3;

/// Of those, the chunks being read at once. Each holds a read connection
/// while it is read, so one request uses at most two (`--reads-per-key`
/// bounds a key's requests), for the tens of milliseconds a chunk takes.
pub const CHUNK_READS: usize = 2;

/// Verify one session's chain as stored, including its recorded head and
/// every derived column. Returns `None` if the session does not exist in
/// `project`.
pub async fn verify_session(
    store: &dyn EventStore,
    project: &ProjectRef,
    session_id: &str,
) -> StoreResult<Option<VerifyReport>> {
    let Some(session) = store.get_session(project, session_id).await? else {
        return Ok(None);
    };
    let mut verifier = ChainVerifier::new();
    let mut derived = SessionFacts::default();
    // Usage columns of erased events, until their record is read.
    let mut erased_usage: std::collections::HashMap<u64, Usage> = Default::default();
    // Chunks are read and prepared by the store as it reads them (the
    // per-event work that needs no order: SHA-256 of each payload and
    // envelope, the usage each payload states; `session_verify_rows`),
    // [`CHUNK_READS`] at a time and up to [`CHUNKS_AHEAD`] ahead, then
    // checked in seq order, which is cheap. Chunk `i` is read as the events after seq `i * CHUNK`: a
    // session's seqs are 1, 2, 3, ... so the chunks meet exactly, and where
    // they do not (an event deleted or renumbered), the ordered check fails
    // at that seq before reaching the next chunk.
    let reads = tokio::sync::Semaphore::new(CHUNK_READS);
    let mut chunks = futures_util::stream::iter(0u64..)
        .map(|i| {
            let reads = &reads;
            async move {
                let _reading = reads
                    .acquire()
                    .await
                    .map_err(|_| crate::StoreError::Storage("verification stopped".into()))?;
                store
                    .session_verify_rows(project, session_id, i * u64::from(CHUNK), CHUNK)
                    .await
            }
        })
        .buffered(CHUNKS_AHEAD);
    while let Some(rows) = chunks.next().await {
        let rows = rows?;
        let full = rows.len() == CHUNK as usize;
        let p = project.clone();
        // The ordered checks of 5,000 events are milliseconds of CPU: off the async workers.
        (verifier, derived, erased_usage) = crate::blocking("verification", move || {
            for row in &rows {
                if !verifier.push_entry(&row.entry) {
                    break;
                }
                if let Err(reason) = check_columns(&p, row)
                    .and_then(|()| check_erasure_usage(row, &mut erased_usage))
                {
                    verifier.fail_at(row.entry.seq, reason);
                    break;
                }
                derived.add(row);
            }
            // Freed here, off the async workers too.
            drop(rows);
            (verifier, derived, erased_usage)
        })
        .await?;
        if verifier.failed() || !full {
            break;
        }
    }
    if !verifier.failed()
        && let Err(reason) = derived.compare(&session)
    {
        verifier.fail_at(session.head_seq, reason);
    }
    Ok(Some(
        verifier.finish(Some((session.head_seq, session.head_hash))),
    ))
}

/// What verifying one stored event needs, computed from its row ahead of
/// the ordered checks, in any order (by the store, as it reads the row):
/// the chain's entry with its digests, the usage its payload states, the
/// decision its verdict states, and its derived columns as stored.
#[derive(Debug, Clone)]
pub struct VerifyRow {
    pub entry: ChainEntry,
    pub severity: Severity,
    /// [`EventView::time`].
    pub time: Micros,
    /// The decision the stored verdict states (`None` without a verdict);
    /// `Err` when it states none readable.
    decision: Result<Option<Decision>, ()>,
    /// The usage the payload states (`None` for an erased event, whose
    /// payload is gone), read once for the column check and the counters.
    usage: Option<Usage>,
    /// A `session_started` event's payload: the session's tags come from it.
    started_payload: Option<Box<str>>,
    pub cols: DerivedColumns,
}

impl VerifyRow {
    pub fn new(ev: &EventView<'_>, cols: DerivedColumns) -> Self {
        VerifyRow {
            entry: ChainEntry::new(ev),
            severity: ev.severity,
            time: ev.time(),
            decision: match ev.verdict {
                None => Ok(None),
                Some(v) => verdict_decision(v).map(Some).ok_or(()),
            },
            usage: ev
                .erased
                .is_none()
                .then(|| Usage::of(ev.kind, ev.payload).unwrap_or_default()),
            started_payload: (ev.kind == agentledger_core::Kind::SessionStarted)
                .then(|| ev.payload.into()),
            cols,
        }
    }
}

/// The event's derived columns against what its covered fields say.
fn check_columns(project: &ProjectRef, row: &VerifyRow) -> Result<(), String> {
    let cols = &row.cols;
    if cols.project_id != project.id.0 {
        return Err(format!(
            "stored project_id {} is not the session's project ({}): the row was moved between projects",
            cols.project_id, project.id.0
        ));
    }
    let decided = row
        .decision
        .map_err(|()| "the stored verdict has no readable decision".to_string())?;
    if cols.decision != decided {
        return Err(format!(
            "stored decision column ({}) does not match the hashed verdict ({})",
            cols.decision.map_or("none", Decision::as_str),
            decided.map_or("none", Decision::as_str)
        ));
    }
    let Some(usage) = &row.usage else {
        // Erased: compared with the erasure's record (`check_erasure_usage`).
        return Ok(());
    };
    if cols.usage != *usage {
        return Err(format!(
            "stored usage columns (model, tokens, cost) do not match the hashed payload: stored {:?}, payload says {:?}",
            cols.usage, usage
        ));
    }
    Ok(())
}

/// An erased event's usage columns against the usage its `event_erased`
/// record wrote down (the record follows the erased event in the chain; the
/// chain verifier has already matched the two).
fn check_erasure_usage(
    row: &VerifyRow,
    pending: &mut std::collections::HashMap<u64, Usage>,
) -> Result<(), String> {
    let ev = &row.entry;
    if ev.erased.is_some() {
        pending.insert(ev.seq, row.cols.usage.clone());
        return Ok(());
    }
    let record = match &ev.record {
        None => return Ok(()),
        Some(record) => record.as_ref().map_err(Clone::clone)?,
    };
    let recorded = Usage::from(&record.usage);
    match pending.remove(&record.erased_seq) {
        Some(stored) if stored == recorded => Ok(()),
        Some(stored) => Err(format!(
            "stored usage columns of erased seq {} do not match its erasure record: stored {stored:?}, record says {recorded:?}",
            record.erased_seq
        )),
        None => Err(format!(
            "the event_erased record names seq {}, which is not erased",
            record.erased_seq
        )),
    }
}

fn verdict_decision(text: &str) -> Option<Decision> {
    agentledger_core::verdict::decision_of(text)
}

/// What the events say about their session row: the same fold the
/// writer does as it appends (core's `SessionHead::advance`).
#[derive(Default)]
struct SessionFacts(SessionHead, TagsUnknown);

/// An erased `session_started` came while no tags were known yet: the
/// session's tags may have been its, so they cannot be checked.
#[derive(Default)]
struct TagsUnknown(bool);

impl SessionFacts {
    fn add(&mut self, row: &VerifyRow) {
        let kind = row.entry.kind;
        let payload = row.started_payload.as_deref().unwrap_or("{}");
        let Some(usage) = &row.usage else {
            if kind == agentledger_core::Kind::SessionStarted && self.0.tags.is_none() {
                self.1.0 = true;
            }
            // The usage columns, as checked against the erasure's record.
            self.0
                .advance(kind, row.severity, row.time, "{}", &row.cols.usage);
            return;
        };
        self.0.advance(kind, row.severity, row.time, payload, usage);
    }

    fn compare(&self, s: &agentledger_core::Session) -> Result<(), String> {
        let f = &self.0;
        let status = if f.ended {
            SessionStatus::Ended
        } else {
            SessionStatus::Active
        };
        if s.status != status {
            return Err(format!(
                "session row status is {} but its events say {}",
                s.status.as_str(),
                status.as_str()
            ));
        }
        if (s.first_event_at, s.last_event_at) != (f.first_at.map(Micros), f.last_at.map(Micros)) {
            return Err("session row first/last event times do not match its events".into());
        }
        let (a, b) = (&s.counters, &f.counters);
        // Cost is a float sum: the backfill of older rows (SQL SUM) may
        // round differently from the writer's running sum in the last bits.
        let cost_close = (a.cost_usd - b.cost_usd).abs() <= 1e-9 * b.cost_usd.abs().max(1.0);
        if (
            a.events,
            a.tool_calls,
            a.errors,
            a.llm_calls,
            a.input_tokens,
            a.output_tokens,
        ) != (
            b.events,
            b.tool_calls,
            b.errors,
            b.llm_calls,
            b.input_tokens,
            b.output_tokens,
        ) || !cost_close
        {
            return Err(format!(
                "session row counters do not match its events: stored {a:?}, events say {b:?}"
            ));
        }
        // The row's tags are read back as the array's string members.
        if !self.1.0 && s.tags != tag_list(f.tags.as_deref()) {
            return Err("session row tags do not match its session_started event".into());
        }
        Ok(())
    }
}
