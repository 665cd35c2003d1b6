//! Validation shared by every dialect: JSON objects within bounds, batch
//! sizes, and the typed-event checks of the native and AgentLens APIs.

use serde_json::value::RawValue;

use agentledger_core::event::empty_object;
use agentledger_core::limits::{MAX_JSON_DEPTH, MAX_PAYLOAD_BYTES, json_depth};
use agentledger_core::{AgentId, Dialect, Kind, Micros, NewEvent, SessionId, Severity, payload};

use crate::InputError;

/// The furthest an offset may skip in any listing: deeper pages cost a scan
/// of what is skipped, so they are refused rather than run long (or until
/// the query budget ends them).
pub const MAX_OFFSET: u64 = 100_000;

/// A listing's `offset` parameter (0 when absent), at most [`MAX_OFFSET`].
pub fn offset(v: Option<u64>) -> Result<u64, InputError> {
    match v.unwrap_or(0) {
        n if n > MAX_OFFSET => Err(InputError::invalid(
            "offset",
            format!("offset: must be at most {MAX_OFFSET} (narrow the listing with filters)"),
        )),
        n => Ok(n),
    }
}

/// A session's system prompt: at most 256 KiB, and no NUL. The prompt is
/// stored apart from the events, in the session row (PostgreSQL text cannot
/// hold NUL: it answered 500 where SQLite stored it).
pub fn check_system_prompt(prompt: &str) -> Result<(), InputError> {
    use agentledger_core::limits::MAX_SYSTEM_PROMPT_BYTES;
    if prompt.len() > MAX_SYSTEM_PROMPT_BYTES {
        return Err(InputError::too_large(
            "system_prompt",
            "system prompt",
            MAX_SYSTEM_PROMPT_BYTES,
        ));
    }
    if prompt.contains('\0') {
        return Err(InputError::invalid(
            "system_prompt",
            "system_prompt: holds a NUL character (\\u0000), which the ledger does not store in a system prompt",
        ));
    }
    Ok(())
}

/// A JSON object of at most 1 MiB and 128 levels, copied out of the request.
pub fn object(path: &str, raw: &RawValue) -> Result<Box<RawValue>, InputError> {
    if raw.get().len() > MAX_PAYLOAD_BYTES {
        return Err(InputError::too_large(path, "object", MAX_PAYLOAD_BYTES));
    }
    if !raw.get().starts_with('{') {
        return Err(InputError::invalid(
            path,
            format!("{path}: must be a JSON object"),
        ));
    }
    if json_depth(raw.get()) > MAX_JSON_DEPTH {
        return Err(InputError::invalid(
            path,
            format!("{path}: nested deeper than {MAX_JSON_DEPTH} levels"),
        ));
    }
    // Stored verbatim and hashed as sent: it must read the same everywhere.
    agentledger_core::ijson::check(raw.get())
        .map_err(|e| InputError::invalid(path, format!("{path}: not I-JSON: {e}")))?;
    Ok(raw.to_owned())
}

/// An optional object; absent or null becomes `{}`.
pub fn optional_object(path: &str, raw: Option<&RawValue>) -> Result<Box<RawValue>, InputError> {
    match raw {
        Some(m) if m.get() != "null" => object(path, m),
        _ => Ok(empty_object()),
    }
}

/// Map a parse result's error to a 400 naming `path`.
pub fn field<T, E: std::fmt::Display>(
    path: impl Into<String>,
    r: Result<T, E>,
) -> Result<T, InputError> {
    r.map_err(|e| {
        let path = path.into();
        InputError::invalid(path.clone(), format!("{path}: {e}"))
    })
}

/// A vendor's event type names and the canonical kinds they map to.
pub type TypeTable = &'static [(&'static str, Kind)];

/// The kind a vendor type name maps to.
pub fn kind_in(table: TypeTable, name: &str) -> Option<Kind> {
    table.iter().find(|(n, _)| *n == name).map(|(_, k)| *k)
}

/// The table's names, for error messages.
pub fn names_in(table: TypeTable) -> String {
    table.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
}

/// How a dialect answers a batch over its limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Oversize {
    /// 413, as the native API and most clients expect.
    TooLarge,
    /// 400, where the vendor documents validation errors only.
    Invalid,
}

/// A batch must hold 1..=max events.
pub fn batch_bounds(
    path: &str,
    len: usize,
    max: usize,
    oversize: Oversize,
) -> Result<(), InputError> {
    if len == 0 {
        return Err(InputError::invalid(
            path,
            format!("{path}: must hold at least one event"),
        ));
    }
    if len > max {
        let message = format!("{path}: a batch holds at most {max} events, got {len}");
        return Err(match oversize {
            Oversize::TooLarge => InputError::TooLarge {
                path: path.into(),
                message,
                limit: max,
            },
            Oversize::Invalid => InputError::invalid(path, message).with_code("BATCH_TOO_LARGE"),
        });
    }
    Ok(())
}

/// The fields of a typed event (native and AgentLens share these semantics
/// under different names).
pub struct TypedEvent<'a> {
    pub session_id: &'a str,
    pub agent_id: &'a str,
    pub kind: &'a str,
    pub severity: Option<&'a str>,
    pub payload: &'a RawValue,
    pub metadata: Option<&'a RawValue>,
    pub timestamp: Option<&'a str>,
}

/// The JSON names of those fields in a dialect, for error paths.
pub struct FieldNames {
    pub session_id: &'static str,
    pub agent_id: &'static str,
    pub kind: &'static str,
}

/// Validate a typed event: kind (restricted to `allowed`), severity, payload
/// object with the per-kind fields of seed 002, metadata, ids and timestamp.
pub fn typed_event(
    i: usize,
    e: &TypedEvent<'_>,
    names: &FieldNames,
    allowed: fn(Kind) -> bool,
    dialect: Dialect,
) -> Result<NewEvent, InputError> {
    let at = |f: &str| format!("events[{i}].{f}");
    let kind: Kind = match e.kind.parse::<Kind>() {
        Ok(k) if allowed(k) => k,
        Ok(_) => {
            return Err(InputError::invalid(
                at(names.kind),
                format!(
                    "{}: {:?} is not an event type of this API",
                    at(names.kind),
                    e.kind
                ),
            ));
        }
        Err(err) => {
            return Err(InputError::invalid(
                at(names.kind),
                format!("{}: {err}", at(names.kind)),
            ));
        }
    };
    let severity = match e.severity {
        None => Severity::Info,
        Some(s) => field(at("severity"), s.parse())?,
    };
    let payload = object(&at("payload"), e.payload)?;
    payload::validate(kind, &payload).map_err(|err| {
        let path = match err.field() {
            Some(f) => at(&format!("payload.{f}")),
            None => at("payload"),
        };
        InputError::invalid(path, format!("events[{i}].{err}"))
    })?;
    Ok(NewEvent {
        session_id: field(at(names.session_id), SessionId::parse(e.session_id))?,
        agent_id: field(at(names.agent_id), AgentId::parse(e.agent_id))?,
        kind,
        source_type: kind.as_str().to_owned(),
        dialect,
        severity,
        client_ts: e
            .timestamp
            .map(|t| field(at("timestamp"), Micros::parse_rfc3339(t)))
            .transpose()?,
        payload,
        metadata: optional_object(&at("metadata"), e.metadata)?,
        judgement: None,
    })
}
