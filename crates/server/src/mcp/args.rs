//! The tools' arguments: their types (whose JSON schemas are the tools'
//! `inputSchema`, bounds included), and the checks that hold those bounds,
//! since a client need not validate against the schema before calling.

use rmcp::model::JsonObject;
use rmcp::schemars::{self, JsonSchema};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use agentledger_core::SessionId;
use agentledger_dialects::InputError;
use agentledger_dialects::common::field;

use crate::error::ApiError;

/// Largest page of `search_events` (smaller than the HTTP API's 500: every
/// event lands in a model's context).
pub const MAX_SEARCH_LIMIT: u32 = 100;
pub const DEFAULT_SEARCH_LIMIT: u32 = 20;
/// Largest page of `get_session_timeline`.
pub const MAX_TIMELINE_LIMIT: u32 = 200;
pub const DEFAULT_TIMELINE_LIMIT: u32 = 50;
/// Most values in one list filter (kinds, severities, decisions).
pub const MAX_LIST: usize = 32;
/// Longest cursor accepted (the API's cursors are far shorter).
pub const MAX_CURSOR_CHARS: usize = 512;
pub const MAX_MODEL_CHARS: usize = 256;
pub const MAX_TOOL_CHARS: usize = 1024;

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchEvents {
    /// Full-text search over payloads: every word must occur (at most 1024
    /// characters, 16 distinct words).
    #[schemars(length(max = 1024))]
    pub q: Option<String>,
    /// Only this session's events (then in chain order unless `order` says otherwise).
    #[schemars(length(min = 1, max = 256))]
    pub session_id: Option<String>,
    #[schemars(length(min = 1, max = 128))]
    pub agent_id: Option<String>,
    /// Event kinds, e.g. tool_call, tool_error, llm_call, decision, error.
    #[schemars(length(max = 32))]
    pub kinds: Option<Vec<String>>,
    /// Severities: debug, info, warn, error, critical.
    #[schemars(length(max = 32))]
    pub severities: Option<Vec<String>>,
    /// Policy decisions: allow, flag, deny.
    #[schemars(length(max = 32))]
    pub decisions: Option<Vec<String>>,
    /// Only events that arrived through this API: native, fabraix, agentlens,
    /// secureagentics, realm or otlp.
    pub dialect: Option<String>,
    /// Only events whose usage names this model.
    #[schemars(length(max = 256))]
    pub model: Option<String>,
    /// RFC 3339 lower bound (inclusive) on the event time.
    pub from: Option<String>,
    /// RFC 3339 upper bound (inclusive) on the event time.
    pub to: Option<String>,
    /// asc or desc (default desc, newest first).
    pub order: Option<String>,
    /// Page size, 1..=100 (default 20).
    #[schemars(range(min = 1, max = 100))]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    #[schemars(length(max = 512))]
    pub cursor: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SessionTimeline {
    #[schemars(length(min = 1, max = 256))]
    pub session_id: String,
    /// Events after this seq (default 0: from the first); pass the previous
    /// page's `next_after_seq` for the next page.
    pub after_seq: Option<u64>,
    /// Page size, 1..=200 (default 50).
    #[schemars(range(min = 1, max = 200))]
    pub limit: Option<u32>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifySession {
    #[schemars(length(min = 1, max = 256))]
    pub session_id: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckPolicy {
    /// The session the action would be part of (its state so far is judged).
    #[schemars(length(min = 1, max = 256))]
    pub session_id: String,
    #[schemars(length(min = 1, max = 128))]
    pub agent_id: String,
    /// The kind of event the action would be (default tool_call).
    pub kind: Option<String>,
    /// The tool (or, for other kinds, the resource) it targets.
    #[schemars(length(max = 1024))]
    pub tool: Option<String>,
    /// The arguments it would be called with.
    pub arguments: Option<Map<String, Value>>,
    /// More payload fields (e.g. `model`), merged under the tool and arguments.
    pub payload: Option<Map<String, Value>>,
}

/// Largest page of `list_open_alerts`.
pub const MAX_ALERTS_LIMIT: u32 = 100;
pub const DEFAULT_ALERTS_LIMIT: u32 = 20;

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListOpenAlerts {
    /// Page size, 1..=100 (default 20), newest first.
    #[schemars(range(min = 1, max = 100))]
    pub limit: Option<u32>,
}

/// A tool's input schema, from its arguments' type.
pub fn schema<T: JsonSchema + 'static>() -> std::sync::Arc<JsonObject> {
    rmcp::handler::server::common::schema_for_input::<T>().unwrap_or_else(|e| {
        tracing::error!(error = %e, "an MCP tool's input schema did not generate");
        rmcp::handler::server::common::schema_for_empty_input()
    })
}

/// A tool's arguments. Parsed here rather than by the SDK's `Parameters`,
/// whose error quotes the offending value: a value may be a secret, and the
/// answer says what was expected (or which field is missing or unknown),
/// never what was sent.
pub fn parse<T: DeserializeOwned>(args: JsonObject) -> Result<T, ApiError> {
    serde_json::from_value(Value::Object(args)).map_err(|e| {
        let m = e.to_string();
        // "missing field `x`" and "unknown field `x`, expected one of …"
        // name fields only; the others ("invalid type: string \"…\",
        // expected u32") lose what they quote.
        let m = if m.starts_with("missing field") || m.starts_with("unknown field") {
            m
        } else {
            let kind = m.split(':').next().unwrap_or("invalid value");
            match m.split_once(", expected ") {
                Some((_, expected)) => format!("{kind}, expected {expected}"),
                None => kind.to_owned(),
            }
        };
        InputError::invalid("arguments", format!("arguments: {m}")).into()
    })
}

pub fn bounded_limit(v: Option<u32>, default: u32, max: u32) -> Result<u32, ApiError> {
    match v.unwrap_or(default) {
        n @ 1.. if n <= max => Ok(n),
        _ => Err(InputError::invalid("limit", format!("limit: must be 1 to {max}")).into()),
    }
}

pub fn list(param: &str, v: Option<Vec<String>>) -> Result<Option<String>, ApiError> {
    match v {
        Some(items) if items.len() > MAX_LIST => {
            Err(InputError::invalid(param, format!("{param}: at most {MAX_LIST} values")).into())
        }
        Some(items) if !items.is_empty() => Ok(Some(items.join(","))),
        _ => Ok(None),
    }
}

/// A short text argument: at most `max` characters, and no NUL (no id,
/// filter or cursor of the ledger holds one, and PostgreSQL text cannot: a
/// NUL bound to a query was an internal error there, an empty page on
/// SQLite).
pub fn short(param: &str, v: Option<&String>, max: usize) -> Result<(), ApiError> {
    if v.is_some_and(|s| s.chars().count() > max) {
        return Err(
            InputError::invalid(param, format!("{param}: at most {max} characters")).into(),
        );
    }
    if v.is_some_and(|s| s.contains('\0')) {
        return Err(InputError::invalid(
            param,
            format!("{param}: holds a NUL character, which no {param} may hold"),
        )
        .into());
    }
    Ok(())
}

pub fn session_id(v: String) -> Result<SessionId, ApiError> {
    Ok(field("session_id", SessionId::parse(v))?)
}
