//! Row <-> model mapping for the PostgreSQL backend. Columns are read by
//! name (the SELECT lists below alias them), never by position.

use serde_json::value::RawValue;
use tokio_postgres::Row;
use tokio_postgres::types::FromSql;

use agentledger_core::chain::tag_list;
use agentledger_core::event::{BadJson, EventView, HeaderView, SessionCounters};
use agentledger_core::verdict::Decision;
use agentledger_core::{Dialect, Event, EventId, Kind, Micros, Session, SessionStatus, Severity};

use crate::{DerivedColumns, StoreError};

/// Columns of an event row; the query must alias events as `e` and sessions as `s`.
pub const EVENT_COLS: &str = "e.pos, e.id, s.id AS session_id, e.seq, e.agent_id, e.kind, \
    e.source_type, e.dialect, e.severity, e.client_ts, e.server_ts, e.payload, e.metadata, \
    e.payload_sha256, e.prev_hash, e.hash, e.ts, e.envelope_version, e.verdict, \
    e.original_payload_sha256, e.original_metadata_sha256, s.agent_id AS session_agent_id, \
    s.system_prompt AS session_system_prompt, s.metadata AS session_metadata, \
    s.created_at AS session_created_at, e.erased_at, e.erased_by, e.erasure_seq";

/// The derived columns verification compares (see `verify.rs`).
pub const DERIVED_COLS: &str = "e.project_id, e.decision, e.model, e.input_tokens, \
    e.output_tokens, e.cost_usd";

pub const EVENT_FROM: &str =
    "events e JOIN sessions s ON s.project_id = e.project_id AND s.ref = e.session_ref";

pub const SESSION_COLS: &str = "s.ref, s.id, s.agent_id, s.system_prompt, s.metadata, \
    s.created_at, s.ended, s.head_seq, s.head_hash, s.first_event_at, s.last_event_at, \
    s.event_count, s.tool_call_count, s.error_count, s.llm_call_count, s.input_tokens, \
    s.output_tokens, s.cost_usd, s.tags";

fn corrupt(column: &str, what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("column {column}: {what}"))
}

/// A column's value, or `Corrupt` naming the column.
pub fn get<'a, T: FromSql<'a>>(r: &'a Row, column: &str) -> Result<T, StoreError> {
    r.try_get(column).map_err(|e| corrupt(column, e))
}

fn hash32(r: &Row, column: &str) -> Result<[u8; 32], StoreError> {
    let v: &[u8] = get(r, column)?;
    v.try_into()
        .map_err(|_| corrupt(column, "hash is not 32 bytes"))
}

fn opt_hash32(r: &Row, column: &str) -> Result<Option<[u8; 32]>, StoreError> {
    get::<Option<&[u8]>>(r, column)?
        .map(|v| {
            v.try_into()
                .map_err(|_| corrupt(column, "hash is not 32 bytes"))
        })
        .transpose()
}

fn json(r: &Row, column: &str) -> Result<Box<RawValue>, StoreError> {
    let s: String = get(r, column)?;
    RawValue::from_string(s).map_err(|_| corrupt(column, "stored JSON does not parse"))
}

fn code<T>(r: &Row, column: &str, from: fn(u8) -> Option<T>) -> Result<T, StoreError> {
    let c: i16 = get(r, column)?;
    u8::try_from(c)
        .ok()
        .and_then(from)
        .ok_or_else(|| corrupt(column, format!("unknown code {c}")))
}

fn count(r: &Row, column: &str) -> Result<u64, StoreError> {
    let n: i64 = get(r, column)?;
    u64::try_from(n).map_err(|_| corrupt(column, "negative count"))
}

/// An event row (columns as [`EVENT_COLS`]) as a view borrowing the row:
/// its JSON texts as stored, not parsed again (verification and export
/// read every event of a session through this).
pub fn event_view<'r>(r: &'r Row, project: &'r str) -> Result<EventView<'r>, StoreError> {
    let id: &[u8] = get(r, "id")?;
    let id: [u8; 16] = id
        .try_into()
        .map_err(|_| corrupt("id", "event id is not 16 bytes"))?;
    let envelope_version = u32::try_from(get::<i32>(r, "envelope_version")?)
        .map_err(|_| corrupt("envelope_version", "negative"))?;
    let seq = count(r, "seq")?;
    let erased = erasure(r)?.map(|e| *e);
    Ok(EventView {
        id: EventId::from_bytes(id),
        project,
        session_id: get(r, "session_id")?,
        seq,
        agent_id: get(r, "agent_id")?,
        kind: code(r, "kind", Kind::from_code)?,
        source_type: get(r, "source_type")?,
        dialect: code(r, "dialect", Dialect::from_code)?,
        severity: code(r, "severity", Severity::from_code)?,
        client_ts: get::<Option<i64>>(r, "client_ts")?.map(Micros),
        server_ts: Micros(get(r, "server_ts")?),
        // An erased row keeps an empty payload column; its erasure
        // columns say so. One that still holds bytes is read as it is:
        // verification then says the erasure left the payload behind.
        payload: match get::<&str>(r, "payload")? {
            "" if erased.is_some() => "null",
            stored => stored,
        },
        metadata: get(r, "metadata")?,
        payload_sha256: hash32(r, "payload_sha256")?,
        prev_hash: opt_hash32(r, "prev_hash")?,
        hash: hash32(r, "hash")?,
        envelope_version,
        verdict: get(r, "verdict")?,
        original_payload_sha256: opt_hash32(r, "original_payload_sha256")?,
        original_metadata_sha256: opt_hash32(r, "original_metadata_sha256")?,
        // The session's first event covers its header (read from the
        // session row, so an edited row breaks this event's hash).
        session_header: if seq == 1 && envelope_version >= 3 {
            Some(HeaderView {
                agent_id: get(r, "session_agent_id")?,
                system_prompt: get(r, "session_system_prompt")?,
                metadata: get(r, "session_metadata")?,
                created_at: Micros(get(r, "session_created_at")?),
            })
        } else {
            None
        },
        erased,
    })
}

/// Map an event row (columns as [`EVENT_COLS`]).
pub fn event_from_row(r: &Row, project: &str) -> Result<Event, StoreError> {
    event_view(r, project)?.to_event().map_err(|which| {
        let column = match which {
            BadJson::Payload => "payload",
            BadJson::Metadata => "metadata",
            BadJson::Verdict => "verdict",
            BadJson::SessionMetadata => "session_metadata",
        };
        corrupt(column, "stored JSON does not parse")
    })
}

/// The erasure of an event row, if its payload was erased (`erasure.rs`).
fn erasure(r: &Row) -> Result<Option<Box<agentledger_core::erasure::Erasure>>, StoreError> {
    let Some(at) = get::<Option<i64>>(r, "erased_at")? else {
        return Ok(None);
    };
    Ok(Some(Box::new(agentledger_core::erasure::Erasure {
        by: get::<Option<String>>(r, "erased_by")?.unwrap_or_default(),
        at: Micros(at),
        record_seq: get::<Option<i64>>(r, "erasure_seq")?
            .and_then(|s| u64::try_from(s).ok())
            .ok_or_else(|| corrupt("erasure_seq", "an erased row names no record"))?,
    })))
}

/// Map a session row (columns as [`SESSION_COLS`]).
pub fn session_from_row(r: &Row, project: &str) -> Result<Session, StoreError> {
    Ok(Session {
        id: get(r, "id")?,
        project: project.to_owned(),
        agent_id: get(r, "agent_id")?,
        system_prompt: get(r, "system_prompt")?,
        metadata: json(r, "metadata")?,
        created_at: Micros(get(r, "created_at")?),
        status: if get::<bool>(r, "ended")? {
            SessionStatus::Ended
        } else {
            SessionStatus::Active
        },
        head_seq: count(r, "head_seq")?,
        head_hash: opt_hash32(r, "head_hash")?,
        first_event_at: get::<Option<i64>>(r, "first_event_at")?.map(Micros),
        last_event_at: get::<Option<i64>>(r, "last_event_at")?.map(Micros),
        counters: counters_from_row(r)?,
        tags: tag_list(get::<Option<String>>(r, "tags")?.as_deref()),
    })
}

/// A session row's counters.
pub fn counters_from_row(r: &Row) -> Result<SessionCounters, StoreError> {
    Ok(SessionCounters {
        events: count(r, "event_count")?,
        tool_calls: count(r, "tool_call_count")?,
        errors: count(r, "error_count")?,
        llm_calls: count(r, "llm_call_count")?,
        input_tokens: get(r, "input_tokens")?,
        output_tokens: get(r, "output_tokens")?,
        cost_usd: get(r, "cost_usd")?,
    })
}

/// The derived columns (as [`DERIVED_COLS`]).
pub fn derived_from_row(r: &Row) -> Result<DerivedColumns, StoreError> {
    let decision = get::<Option<i16>>(r, "decision")?
        .map(|c| {
            u8::try_from(c)
                .ok()
                .and_then(Decision::from_code)
                .ok_or_else(|| corrupt("decision", format!("unknown code {c}")))
        })
        .transpose()?;
    Ok(DerivedColumns {
        project_id: get(r, "project_id")?,
        decision,
        usage: agentledger_core::usage::Usage {
            model: get(r, "model")?,
            input_tokens: get(r, "input_tokens")?,
            output_tokens: get(r, "output_tokens")?,
            cost_usd: get(r, "cost_usd")?,
        },
    })
}
