//! Row <-> model mapping for the SQLite backend.

use rusqlite::Row;
use rusqlite::types::{Type, ValueRef};
use serde_json::value::RawValue;

use agentledger_core::chain::tag_list;
use agentledger_core::event::{BadJson, EventView, HeaderView, SessionCounters};
use agentledger_core::{Dialect, Event, EventId, Kind, Micros, Session, SessionStatus, Severity};

/// Columns of an event row; the query must alias events as `e` and sessions as `s`.
/// The session's header is read on its first event only (the only one whose
/// hash covers it): a long system prompt is not copied out with every row.
pub const EVENT_COLS: &str = "e.rowid, e.id, s.id, e.seq, e.agent_id, e.kind, e.source_type, \
    e.dialect, e.severity, e.client_ts, e.server_ts, e.payload, e.metadata, e.payload_sha256, \
    e.prev_hash, e.hash, e.ts, e.envelope_version, e.verdict, e.original_payload_sha256, \
    e.original_metadata_sha256, \
    CASE WHEN e.seq = 1 THEN s.agent_id END, CASE WHEN e.seq = 1 THEN s.system_prompt END, \
    CASE WHEN e.seq = 1 THEN s.metadata END, CASE WHEN e.seq = 1 THEN s.created_at END, \
    e.erased_at, e.erased_by, e.erasure_seq";
/// How many columns [`EVENT_COLS`] has.
pub const EVENT_COL_COUNT: usize = 28;

pub const EVENT_FROM: &str = "events e JOIN sessions s ON s.rowid = e.session_ref";

pub const SESSION_COLS: &str = "s.id, s.agent_id, s.system_prompt, s.metadata, s.created_at, \
    s.status, s.head_seq, s.head_hash, s.first_event_at, s.last_event_at, s.rowid, \
    s.event_count, s.tool_call_count, s.error_count, s.llm_call_count, s.input_tokens, \
    s.output_tokens, s.cost_usd, s.tags";

fn bad(idx: usize, what: &str) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(idx, Type::Blob, what.to_owned().into())
}

/// A fixed-size blob, read in place (no vector per column: these are read
/// for every event a verification or an export streams).
fn blob<const N: usize>(r: &Row<'_>, idx: usize, what: &str) -> rusqlite::Result<Option<[u8; N]>> {
    match r.get_ref(idx)? {
        ValueRef::Null => Ok(None),
        ValueRef::Blob(b) => b.try_into().map(Some).map_err(|_| bad(idx, what)),
        other => Err(rusqlite::Error::InvalidColumnType(
            idx,
            what.to_owned(),
            other.data_type(),
        )),
    }
}

fn hash32(r: &Row<'_>, idx: usize) -> rusqlite::Result<[u8; 32]> {
    blob(r, idx, "hash is not 32 bytes")?.ok_or_else(|| bad(idx, "hash is missing"))
}

fn opt_hash32(r: &Row<'_>, idx: usize) -> rusqlite::Result<Option<[u8; 32]>> {
    blob(r, idx, "hash is not 32 bytes")
}

fn json(r: &Row<'_>, idx: usize) -> rusqlite::Result<Box<RawValue>> {
    let s: String = r.get(idx)?;
    RawValue::from_string(s).map_err(|_| bad(idx, "stored JSON does not parse"))
}

/// A text column, borrowed from the row.
fn text<'r>(r: &'r Row<'_>, idx: usize) -> rusqlite::Result<&'r str> {
    r.get_ref(idx)?
        .as_str()
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(idx, Type::Text, e.into()))
}

fn opt_text<'r>(r: &'r Row<'_>, idx: usize) -> rusqlite::Result<Option<&'r str>> {
    r.get_ref(idx)?
        .as_str_or_null()
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(idx, Type::Text, e.into()))
}

/// An event row (columns as [`EVENT_COLS`]) as a view borrowing the row:
/// its JSON texts as stored, not parsed again (verification and export
/// read every event of a session through this).
pub fn event_view<'r>(r: &'r Row<'_>, project: &'r str) -> rusqlite::Result<EventView<'r>> {
    let id: [u8; 16] =
        blob(r, 1, "event id is not 16 bytes")?.ok_or_else(|| bad(1, "event id is missing"))?;
    let kind = Kind::from_code(r.get(5)?).ok_or_else(|| bad(5, "unknown kind code"))?;
    let dialect = Dialect::from_code(r.get(7)?).ok_or_else(|| bad(7, "unknown dialect code"))?;
    let severity = Severity::from_code(r.get(8)?).ok_or_else(|| bad(8, "unknown severity code"))?;
    let seq = r.get::<_, i64>(3)? as u64;
    let envelope_version = r.get::<_, i64>(17)? as u32;
    let erased = match r.get::<_, Option<i64>>(25)? {
        None => None,
        Some(at) => Some(agentledger_core::erasure::Erasure {
            by: opt_text(r, 26)?.unwrap_or_default().to_owned(),
            at: Micros(at),
            record_seq: r
                .get::<_, Option<i64>>(27)?
                .and_then(|s| u64::try_from(s).ok())
                .ok_or_else(|| bad(27, "an erased row names no record"))?,
        }),
    };
    Ok(EventView {
        id: EventId::from_bytes(id),
        project,
        session_id: text(r, 2)?,
        seq,
        agent_id: text(r, 4)?,
        kind,
        source_type: text(r, 6)?,
        dialect,
        severity,
        client_ts: r.get::<_, Option<i64>>(9)?.map(Micros),
        server_ts: Micros(r.get(10)?),
        // An erased row keeps an empty payload column (NOT NULL since
        // migration 1); its erasure columns say so. One that still holds
        // bytes is read as it is: verification then says the erasure left
        // the payload behind.
        payload: match text(r, 11)? {
            "" if erased.is_some() => "null",
            stored => stored,
        },
        metadata: text(r, 12)?,
        payload_sha256: hash32(r, 13)?,
        prev_hash: opt_hash32(r, 14)?,
        hash: hash32(r, 15)?,
        envelope_version,
        verdict: opt_text(r, 18)?,
        original_payload_sha256: opt_hash32(r, 19)?,
        original_metadata_sha256: opt_hash32(r, 20)?,
        // The session's first event covers its header (read from the
        // session row, so an edited row breaks this event's hash).
        session_header: if seq == 1 && envelope_version >= 3 {
            Some(HeaderView {
                agent_id: text(r, 21)?,
                system_prompt: opt_text(r, 22)?,
                metadata: text(r, 23)?,
                created_at: Micros(r.get(24)?),
            })
        } else {
            None
        },
        erased,
    })
}

/// Map an event row (columns as [`EVENT_COLS`]); also returns (rowid, ts) for cursors.
pub fn event_from_row(r: &Row<'_>, project: &str) -> rusqlite::Result<(Event, i64, i64)> {
    let ev = event_view(r, project)?.to_event().map_err(|which| {
        let (idx, what) = match which {
            BadJson::Payload => (11, "stored payload does not parse"),
            BadJson::Metadata => (12, "stored metadata does not parse"),
            BadJson::Verdict => (18, "stored verdict does not parse"),
            BadJson::SessionMetadata => (23, "stored session metadata does not parse"),
        };
        bad(idx, what)
    })?;
    Ok((ev, r.get(0)?, r.get(16)?))
}

/// Map a session row (columns as [`SESSION_COLS`]).
pub fn session_from_row(r: &Row<'_>, project: &str) -> rusqlite::Result<Session> {
    Ok(Session {
        id: r.get(0)?,
        project: project.to_owned(),
        agent_id: r.get(1)?,
        system_prompt: r.get(2)?,
        metadata: json(r, 3)?,
        created_at: Micros(r.get(4)?),
        status: if r.get::<_, i64>(5)? == 1 {
            SessionStatus::Ended
        } else {
            SessionStatus::Active
        },
        head_seq: r.get::<_, i64>(6)? as u64,
        head_hash: opt_hash32(r, 7)?,
        first_event_at: r.get::<_, Option<i64>>(8)?.map(Micros),
        last_event_at: r.get::<_, Option<i64>>(9)?.map(Micros),
        counters: SessionCounters {
            events: r.get::<_, i64>(11)? as u64,
            tool_calls: r.get::<_, i64>(12)? as u64,
            errors: r.get::<_, i64>(13)? as u64,
            llm_calls: r.get::<_, i64>(14)? as u64,
            input_tokens: r.get(15)?,
            output_tokens: r.get(16)?,
            cost_usd: r.get(17)?,
        },
        tags: tag_list(r.get::<_, Option<String>>(18)?.as_deref()),
    })
}

/// The derived columns (project_id, decision, model, input_tokens,
/// output_tokens, cost_usd) selected from index `at` on.
pub fn derived_from_row(r: &Row<'_>, at: usize) -> rusqlite::Result<crate::DerivedColumns> {
    let decision = match r.get::<_, Option<i64>>(at + 1)? {
        None => None,
        Some(code) => Some(
            u8::try_from(code)
                .ok()
                .and_then(agentledger_core::verdict::Decision::from_code)
                .ok_or_else(|| bad(at + 1, "unknown decision code"))?,
        ),
    };
    Ok(crate::DerivedColumns {
        project_id: r.get(at)?,
        decision,
        usage: agentledger_core::usage::Usage {
            model: r.get(at + 2)?,
            input_tokens: r.get(at + 3)?,
            output_tokens: r.get(at + 4)?,
            cost_usd: r.get(at + 5)?,
        },
    })
}
