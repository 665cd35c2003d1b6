//! Realm (seed 004): events posted per session at
//! `/v1/sessions/:session_id/events` (and `/batch`), read back at `/v1/events/:id`.

#[cfg(test)]
mod tests;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use utoipa::ToSchema;

use agentledger_core::event::empty_object;
use agentledger_core::limits::MAX_BATCH_EVENTS;
use agentledger_core::{
    AgentId, Dialect, Event, EventId, Kind, Micros, NewEvent, SessionId, Severity,
};

use crate::InputError;
use crate::common::{Oversize, TypeTable, batch_bounds, field, kind_in, names_in, object};
use crate::error::parse_json;

pub const EVENT_PREFIX: &str = "event_";
/// The agent recorded for a session first seen through Realm, whose events
/// carry no agent id.
pub const UNKNOWN_AGENT: &str = "unknown";

pub const EVENT_TYPES: TypeTable = &[
    ("tool_call", Kind::ToolCall),
    ("decision", Kind::Decision),
    ("llm_call", Kind::LlmCall),
    ("error", Kind::Error),
    ("custom", Kind::Custom),
];

pub fn kind_of(t: &str) -> Option<Kind> {
    kind_in(EVENT_TYPES, t)
}

/// The type an event shows here: its own if it came through Realm, else the
/// Realm type of its kind (custom for kinds Realm has no name for).
pub fn type_of(e: &Event) -> String {
    if e.dialect == Dialect::Realm {
        return e.source_type.clone();
    }
    match e.kind {
        Kind::ToolCall => "tool_call",
        Kind::Decision => "decision",
        Kind::LlmCall => "llm_call",
        Kind::Error | Kind::ToolError => "error",
        _ => "custom",
    }
    .into()
}

pub fn session_param(id: &str) -> Result<SessionId, InputError> {
    field("session_id", SessionId::parse(id))
}

#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = realm::EventIn)]
#[serde(deny_unknown_fields)]
pub struct EventIn<'a> {
    /// tool_call, decision, llm_call, error or custom.
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(borrow)]
    #[schema(value_type = Object)]
    pub data: &'a RawValue,
}

#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = realm::BatchRequest)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest<'a> {
    #[serde(borrow)]
    pub events: Vec<EventIn<'a>>,
}

fn event(
    prefix: &str,
    session: &SessionId,
    agent: &AgentId,
    e: &EventIn<'_>,
) -> Result<NewEvent, InputError> {
    let at = |f: &str| format!("{prefix}{f}");
    let kind = kind_of(&e.kind).ok_or_else(|| {
        InputError::invalid(
            at("type"),
            format!(
                "{}: {:?} must be one of: {}",
                at("type"),
                e.kind,
                names_in(EVENT_TYPES)
            ),
        )
    })?;
    Ok(NewEvent {
        session_id: session.clone(),
        agent_id: agent.clone(),
        kind,
        source_type: e.kind.clone(),
        dialect: Dialect::Realm,
        severity: if kind == Kind::Error {
            Severity::Error
        } else {
            Severity::Info
        },
        client_ts: None,
        payload: object(&at("data"), e.data)?,
        metadata: empty_object(),
        judgement: None,
    })
}

pub fn parse_event(
    session: &SessionId,
    agent: &AgentId,
    body: &[u8],
) -> Result<NewEvent, InputError> {
    let e: EventIn<'_> = parse_json(body)?;
    event("", session, agent, &e)
}

pub fn parse_batch(
    session: &SessionId,
    agent: &AgentId,
    body: &[u8],
) -> Result<Vec<NewEvent>, InputError> {
    let req: BatchRequest<'_> = parse_json(body)?;
    batch_bounds(
        "events",
        req.events.len(),
        MAX_BATCH_EVENTS,
        Oversize::TooLarge,
    )?;
    req.events
        .iter()
        .enumerate()
        .map(|(i, e)| event(&format!("events[{i}]."), session, agent, e))
        .collect()
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[schema(as = realm::EventOut)]
pub struct EventOut {
    /// `event_` + the event id.
    pub id: String,
    pub session_id: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// ISO 8601 with milliseconds.
    pub timestamp: String,
    /// Null when the payload was erased.
    #[schema(value_type = Option<Object>)]
    pub data: Box<RawValue>,
}

impl EventOut {
    pub fn from_event(e: Event) -> Self {
        EventOut {
            id: e.id.to_prefixed(EVENT_PREFIX),
            kind: type_of(&e),
            timestamp: e.time().to_rfc3339_millis(),
            session_id: e.session_id,
            data: e.payload,
        }
    }

    pub fn created(e: NewEvent, id: EventId, server_ts: Micros) -> Self {
        EventOut {
            id: id.to_prefixed(EVENT_PREFIX),
            session_id: e.session_id.to_string(),
            kind: e.source_type,
            timestamp: server_ts.to_rfc3339_millis(),
            data: e.payload,
        }
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[schema(as = realm::BatchResponse)]
pub struct BatchResponse {
    pub created: usize,
    pub event_ids: Vec<String>,
}
