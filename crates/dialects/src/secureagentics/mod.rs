//! Secureagentics (seed 003): events posted per agent at
//! `/v1/agents/{id}/events` (single, `/batch` of up to 100, and a listing),
//! answered with the event and its `policy_result`.

#[cfg(test)]
mod tests;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use agentledger_core::verdict::Verdict;
use utoipa::{IntoParams, ToSchema};

use agentledger_core::event::empty_object;
use agentledger_core::query::EventQuery;
use agentledger_core::{
    AgentId, Dialect, Event, EventId, Kind, Micros, NewEvent, SessionId, Severity,
};

use crate::InputError;
use crate::common::{Oversize, TypeTable, batch_bounds, field, kind_in, names_in, object};
use crate::error::parse_json;
use crate::native::time_param;

pub const MAX_BATCH: usize = 100;
pub const AGENT_PREFIX: &str = "agt_";
pub const EVENT_PREFIX: &str = "evt_";

/// Secureagentics event types and their canonical kinds.
pub const EVENT_TYPES: TypeTable = &[
    ("prompt", Kind::LlmCall),
    ("completion", Kind::LlmResponse),
    ("tool_call", Kind::ToolCall),
    ("error", Kind::Error),
    ("custom", Kind::Custom),
];

pub fn kind_of(t: &str) -> Option<Kind> {
    kind_in(EVENT_TYPES, t)
}

/// The type an event shows in this API: its own type if it came through
/// here, otherwise the nearest Secureagentics type of its kind.
pub fn type_of(e: &Event) -> String {
    if e.dialect == Dialect::Secureagentics {
        return e.source_type.clone();
    }
    match e.kind {
        Kind::LlmCall => "prompt",
        Kind::LlmResponse => "completion",
        Kind::ToolCall => "tool_call",
        Kind::Error | Kind::ToolError => "error",
        _ => "custom",
    }
    .into()
}

/// The `{id}` path segment: an agent id that starts with `agt_`.
pub fn agent_param(id: &str) -> Result<AgentId, InputError> {
    if !id.starts_with(AGENT_PREFIX) {
        return Err(InputError::invalid(
            "id",
            format!("agent id {id:?} must start with {AGENT_PREFIX}"),
        )
        .with_code("INVALID_AGENT_ID"));
    }
    AgentId::parse(id).map_err(|e| {
        InputError::invalid("id", format!("agent id {e}")).with_code("INVALID_AGENT_ID")
    })
}

#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = secureagentics::EventIn)]
#[serde(deny_unknown_fields)]
pub struct EventIn<'a> {
    /// prompt, completion, tool_call, error or custom.
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(borrow)]
    #[schema(value_type = Object)]
    pub payload: &'a RawValue,
    /// Correlates events of one request or conversation (one session).
    pub trace_id: Option<String>,
    /// ISO 8601; defaults to the server's time.
    pub timestamp: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = secureagentics::BatchRequest)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest<'a> {
    /// 1 to 100 events.
    #[serde(borrow)]
    pub events: Vec<EventIn<'a>>,
}

fn event(prefix: &str, agent: &AgentId, e: &EventIn<'_>) -> Result<NewEvent, InputError> {
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
    // Events of one trace form one session; without a trace, the agent's own stream.
    let session_id = match &e.trace_id {
        Some(t) => field(at("trace_id"), SessionId::parse(t.as_str()))?,
        None => field(at("id"), SessionId::parse(agent.as_str()))?,
    };
    Ok(NewEvent {
        session_id,
        agent_id: agent.clone(),
        kind,
        source_type: e.kind.clone(),
        dialect: Dialect::Secureagentics,
        severity: if kind == Kind::Error {
            Severity::Error
        } else {
            Severity::Info
        },
        client_ts: e
            .timestamp
            .as_deref()
            .map(|t| field(at("timestamp"), Micros::parse_rfc3339(t)))
            .transpose()?,
        payload: object(&at("payload"), e.payload)?,
        metadata: empty_object(),
        judgement: None,
    })
}

pub fn parse_event(agent: &AgentId, body: &[u8]) -> Result<NewEvent, InputError> {
    let e: EventIn<'_> = parse_json(body)?;
    event("", agent, &e)
}

/// A batch is validated whole: one bad event refuses the batch and stores nothing.
pub fn parse_batch(agent: &AgentId, body: &[u8]) -> Result<Vec<NewEvent>, InputError> {
    let req: BatchRequest<'_> = parse_json(body)?;
    batch_bounds("events", req.events.len(), MAX_BATCH, Oversize::TooLarge)?;
    req.events
        .iter()
        .enumerate()
        .map(|(i, e)| event(&format!("events[{i}]."), agent, e))
        .collect()
}

/// The outcome of policy evaluation for an event.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(as = secureagentics::PolicyResult)]
pub struct PolicyResult {
    /// Whether any policy was evaluated.
    pub evaluated: bool,
    /// allow, flag or deny; `not_evaluated` when no policy engine ran.
    pub decision: String,
    /// Ids of the policies that decided.
    pub policies: Vec<String>,
    pub reasons: Vec<String>,
}

impl PolicyResult {
    /// The stored (or just attached) verdict, as this API shows it.
    pub fn of(verdict: Option<&RawValue>) -> Self {
        let Some(v) = verdict.and_then(|v| serde_json::from_str::<Verdict>(v.get()).ok()) else {
            return PolicyResult::not_evaluated();
        };
        PolicyResult {
            evaluated: true,
            decision: v.decision.as_str().into(),
            policies: v.policies,
            reasons: v.reasons,
        }
    }

    /// The event was recorded without evaluation (the server runs with --no-policy).
    pub fn not_evaluated() -> Self {
        PolicyResult {
            evaluated: false,
            decision: "not_evaluated".into(),
            policies: Vec::new(),
            reasons: vec![
                "the policy checkpoint is off; the event was recorded without evaluation".into(),
            ],
        }
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[schema(as = secureagentics::EventOut)]
pub struct EventOut {
    /// `evt_` + the event id.
    pub id: String,
    pub agent_id: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// Null when the payload was erased.
    #[schema(value_type = Option<Object>)]
    pub payload: Box<RawValue>,
    pub trace_id: Option<String>,
    /// When the event occurred, ISO 8601.
    pub timestamp: String,
    pub policy_result: PolicyResult,
}

fn trace_of(session_id: &str, agent_id: &str) -> Option<String> {
    (session_id != agent_id).then(|| session_id.to_owned())
}

impl EventOut {
    /// A stored event, as this API shows it.
    pub fn from_event(e: Event) -> Self {
        EventOut {
            id: e.id.to_prefixed(EVENT_PREFIX),
            kind: type_of(&e),
            timestamp: e.time().to_rfc3339_millis(),
            trace_id: trace_of(&e.session_id, &e.agent_id),
            agent_id: e.agent_id,
            policy_result: PolicyResult::of(e.verdict.as_deref()),
            payload: e.payload,
        }
    }

    /// An event just appended.
    pub fn created(e: NewEvent, id: EventId, server_ts: Micros) -> Self {
        EventOut {
            id: id.to_prefixed(EVENT_PREFIX),
            kind: e.source_type,
            timestamp: e.client_ts.unwrap_or(server_ts).to_rfc3339_millis(),
            trace_id: trace_of(e.session_id.as_str(), e.agent_id.as_str()),
            agent_id: e.agent_id.to_string(),
            policy_result: PolicyResult::of(e.judgement.as_ref().map(|j| &*j.verdict)),
            payload: e.payload,
        }
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[schema(as = secureagentics::BatchResponse)]
pub struct BatchResponse {
    /// One result per submitted event, in order.
    pub results: Vec<EventOut>,
    /// Events processed.
    pub total: usize,
}

/// Query parameters of `GET /v1/agents/{id}/events`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// 1..=500, default 50.
    pub limit: Option<u32>,
    /// Events to skip (default 0, at most 100,000).
    pub offset: Option<u64>,
    /// prompt, completion, tool_call, error or custom.
    #[serde(rename = "type")]
    #[param(rename = "type")]
    pub kind: Option<String>,
    /// ISO 8601: events at or after.
    pub from: Option<String>,
    /// ISO 8601: events at or before.
    pub to: Option<String>,
}

impl ListParams {
    pub fn to_query(&self, agent: &AgentId) -> Result<EventQuery, InputError> {
        let limit = self.limit.unwrap_or(50);
        if !(1..=500).contains(&limit) {
            return Err(InputError::invalid(
                "limit",
                "limit: accepted range is 1-500",
            ));
        }
        let kinds = match &self.kind {
            None => Vec::new(),
            Some(t) => match t.as_str() {
                // custom covers every kind without a Secureagentics type of its own.
                "custom" => Kind::ALL
                    .iter()
                    .copied()
                    .filter(|k| {
                        !matches!(
                            k,
                            Kind::LlmCall
                                | Kind::LlmResponse
                                | Kind::ToolCall
                                | Kind::Error
                                | Kind::ToolError
                        )
                    })
                    .collect(),
                "error" => vec![Kind::Error, Kind::ToolError],
                other => vec![kind_of(other).ok_or_else(|| {
                    InputError::invalid(
                        "type",
                        format!("type: {other:?} must be one of: {}", names_in(EVENT_TYPES)),
                    )
                })?],
            },
        };
        Ok(EventQuery {
            agent_id: Some(agent.to_string()),
            kinds,
            from: time_param("from", &self.from)?,
            to: time_param("to", &self.to)?,
            limit,
            offset: crate::common::offset(self.offset)?,
            ..Default::default()
        })
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[schema(as = secureagentics::EventList)]
pub struct EventList {
    pub items: Vec<EventOut>,
    /// Events matching the filters, regardless of paging.
    pub total: u64,
}
