//! AgentLens (seed 002): batched ingest at `POST /api/events`, queries at
//! `GET /api/events` and `GET /api/events/:id`, camelCase throughout.

pub mod read;
#[cfg(test)]
mod tests;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use utoipa::{IntoParams, ToSchema};

use agentledger_core::limits::MAX_BATCH_EVENTS;
use agentledger_core::query::EventQuery;
use agentledger_core::{Dialect, Event, Kind, NewEvent};

use crate::InputError;
use crate::common::{FieldNames, Oversize, TypedEvent, batch_bounds, typed_event};
use crate::error::parse_json;
use crate::native::{comma_list, order_param, text_param, time_param};

/// The 18 event types the AgentLens document defines.
pub const EVENT_TYPES: &[Kind] = &[
    Kind::SessionStarted,
    Kind::SessionEnded,
    Kind::ToolCall,
    Kind::ToolResponse,
    Kind::ToolError,
    Kind::ApprovalRequested,
    Kind::ApprovalGranted,
    Kind::ApprovalDenied,
    Kind::ApprovalExpired,
    Kind::FormSubmitted,
    Kind::FormCompleted,
    Kind::FormExpired,
    Kind::LlmCall,
    Kind::LlmResponse,
    Kind::CostTracked,
    Kind::AlertTriggered,
    Kind::AlertResolved,
    Kind::Custom,
];

/// `POST /api/events`
#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = agentlens::IngestRequest)]
#[serde(deny_unknown_fields)]
pub struct IngestRequest<'a> {
    /// 1 to 1000 events, stored all-or-nothing.
    #[serde(borrow)]
    pub events: Vec<EventIn<'a>>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = agentlens::EventIn)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EventIn<'a> {
    pub session_id: String,
    pub agent_id: String,
    /// One of the 18 documented event types.
    pub event_type: String,
    /// debug / info / warn / error / critical (default info).
    pub severity: Option<String>,
    /// Typed per eventType, as the AgentLens document's table says.
    #[serde(borrow)]
    #[schema(value_type = Object)]
    pub payload: &'a RawValue,
    #[serde(borrow, default)]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<&'a RawValue>,
    /// ISO 8601 (default: server time).
    pub timestamp: Option<String>,
}

/// Parse and validate a batch. Empty and oversize batches are 400s, as the
/// document's error table lists only validation errors.
pub fn parse_ingest(body: &[u8]) -> Result<Vec<NewEvent>, InputError> {
    let req: IngestRequest<'_> = parse_json(body)?;
    batch_bounds(
        "events",
        req.events.len(),
        MAX_BATCH_EVENTS,
        Oversize::Invalid,
    )?;
    const NAMES: FieldNames = FieldNames {
        session_id: "sessionId",
        agent_id: "agentId",
        kind: "eventType",
    };
    req.events
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let fields = TypedEvent {
                session_id: &e.session_id,
                agent_id: &e.agent_id,
                kind: &e.event_type,
                severity: e.severity.as_deref(),
                payload: e.payload,
                metadata: e.metadata,
                timestamp: e.timestamp.as_deref(),
            };
            typed_event(
                i,
                &fields,
                &NAMES,
                |k| EVENT_TYPES.contains(&k),
                Dialect::AgentLens,
            )
        })
        .collect()
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[schema(as = agentlens::IngestResponse)]
pub struct IngestResponse {
    pub ingested: usize,
    pub events: Vec<IngestedEvent>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[schema(as = agentlens::IngestedEvent)]
pub struct IngestedEvent {
    /// ULID
    pub id: String,
    pub hash: String,
}

/// Query parameters of `GET /api/events`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase")]
pub struct EventsParams {
    pub session_id: Option<String>,
    pub agent_id: Option<String>,
    /// Event type(s), comma-separated.
    pub event_type: Option<String>,
    /// Severities, comma-separated.
    pub severity: Option<String>,
    /// ISO 8601 start of the time range (inclusive).
    pub from: Option<String>,
    /// ISO 8601 end of the time range (inclusive).
    pub to: Option<String>,
    /// Full-text search in payloads.
    pub search: Option<String>,
    /// Policy decisions, comma-separated: allow, flag, deny (an agentledger extension).
    pub decision: Option<String>,
    /// asc or desc (default desc).
    pub order: Option<String>,
    /// Results per page (default 50; larger values are capped at 500).
    pub limit: Option<u32>,
    /// Pagination offset (default 0, at most 100,000).
    pub offset: Option<u64>,
}

pub const DEFAULT_LIMIT: u32 = 50;
pub const MAX_LIMIT: u32 = 500;

impl EventsParams {
    pub fn to_query(&self) -> Result<EventQuery, InputError> {
        let limit = match self.limit {
            Some(0) => return Err(InputError::invalid("limit", "limit: must be at least 1")),
            Some(n) => n.min(MAX_LIMIT),
            None => DEFAULT_LIMIT,
        };
        Ok(EventQuery {
            session_id: self.session_id.clone(),
            agent_id: self.agent_id.clone(),
            kinds: comma_list("eventType", &self.event_type)?,
            severities: comma_list("severity", &self.severity)?,
            from: time_param("from", &self.from)?,
            to: time_param("to", &self.to)?,
            text: text_param(&self.search)?,
            decisions: comma_list("decision", &self.decision)?,
            order: order_param(&self.order)?,
            limit,
            offset: crate::common::offset(self.offset)?,
            ..Default::default()
        })
    }
}

/// An event in the AgentLens shape.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[schema(as = agentlens::EventOut)]
#[serde(rename_all = "camelCase")]
pub struct EventOut {
    /// ULID
    pub id: String,
    /// When it happened (the client's timestamp, else the receive time).
    pub timestamp: String,
    pub session_id: String,
    pub agent_id: String,
    /// The canonical kind (one of the 18 types for events sent here).
    pub event_type: String,
    pub severity: String,
    /// Null when the payload was erased (see `erased`).
    #[schema(value_type = Option<Object>)]
    pub payload: Box<RawValue>,
    #[schema(value_type = Object)]
    pub metadata: Box<RawValue>,
    pub prev_hash: Option<String>,
    pub hash: String,
    /// Present when the payload was erased (`payload` is then null).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub erased: Option<ErasedOut>,
}

/// Who erased an event's payload, when, and the seq of its `event_erased` record.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(as = agentlens::ErasedOut)]
#[serde(rename_all = "camelCase")]
pub struct ErasedOut {
    pub by: String,
    pub at: String,
    pub record_seq: u64,
}

impl From<Event> for EventOut {
    fn from(e: Event) -> Self {
        EventOut {
            id: e.id.to_string(),
            timestamp: e.time().to_rfc3339_millis(),
            session_id: e.session_id,
            agent_id: e.agent_id,
            event_type: e.kind.as_str().into(),
            severity: e.severity.as_str().into(),
            payload: e.payload,
            metadata: e.metadata,
            prev_hash: e.prev_hash.map(hex::encode),
            hash: hex::encode(e.hash),
            erased: e.erased.as_deref().map(|x| ErasedOut {
                by: x.by.clone(),
                at: x.at.to_rfc3339_millis(),
                record_seq: x.record_seq,
            }),
        }
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[schema(as = agentlens::EventList)]
#[serde(rename_all = "camelCase")]
pub struct EventList {
    pub events: Vec<EventOut>,
    pub total: u64,
    pub has_more: bool,
}
