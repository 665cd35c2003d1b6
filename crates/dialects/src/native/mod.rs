//! The native agentledger API (`/api/v1`): request parsing into canonical
//! events and rendering of events, sessions and reports.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use utoipa::{IntoParams, ToSchema};

use agentledger_core::limits::MAX_BATCH_EVENTS;
use agentledger_core::query::{Cursor, EventQuery, Order, SessionQuery, UsageGroup, UsageRow};
use agentledger_core::{
    AgentId, Dialect, Event, Micros, NewEvent, Session, SessionId, SessionStatus, VerifyReport,
};

use crate::InputError;
use crate::common::{
    FieldNames, Oversize, TypedEvent, batch_bounds, field, optional_object, typed_event,
};
use crate::error::parse_json;

#[cfg(test)]
mod tests;

// ---------- requests ----------

/// `POST /api/v1/events`
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IngestRequest<'a> {
    /// 1 to 1000 events, stored all-or-nothing.
    #[serde(borrow)]
    pub events: Vec<EventIn<'a>>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EventIn<'a> {
    /// Session (run) id; a session named for the first time is created.
    pub session_id: String,
    pub agent_id: String,
    /// One of the canonical kinds (tool_call, llm_call, ...).
    pub kind: String,
    /// debug / info / warn / error / critical (default info).
    pub severity: Option<String>,
    /// Event payload (a JSON object), stored byte for byte as sent.
    #[serde(borrow)]
    #[schema(value_type = Object)]
    pub payload: &'a RawValue,
    #[serde(borrow, default)]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<&'a RawValue>,
    /// RFC 3339 time the event happened (default: receive time).
    pub timestamp: Option<String>,
}

/// `POST /api/v1/sessions`
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSessionRequest<'a> {
    pub agent_id: String,
    pub system_prompt: Option<String>,
    #[serde(borrow, default)]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<&'a RawValue>,
    /// Optional client-chosen id; a UUID is generated otherwise.
    pub session_id: Option<String>,
}

/// A session to create, validated.
pub struct SessionSpec {
    pub id: SessionId,
    pub agent_id: AgentId,
    pub system_prompt: Option<String>,
    pub metadata: Box<RawValue>,
}

/// Parse and validate a native ingest body.
pub fn parse_ingest(body: &[u8]) -> Result<Vec<NewEvent>, InputError> {
    let req: IngestRequest<'_> = parse_json(body)?;
    batch_bounds(
        "events",
        req.events.len(),
        MAX_BATCH_EVENTS,
        Oversize::TooLarge,
    )?;
    const NAMES: FieldNames = FieldNames {
        session_id: "session_id",
        agent_id: "agent_id",
        kind: "kind",
    };
    req.events
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let fields = TypedEvent {
                session_id: &e.session_id,
                agent_id: &e.agent_id,
                kind: &e.kind,
                severity: e.severity.as_deref(),
                payload: e.payload,
                metadata: e.metadata,
                timestamp: e.timestamp.as_deref(),
            };
            typed_event(i, &fields, &NAMES, |_| true, Dialect::Native)
        })
        .collect()
}

/// Parse and validate a create-session body.
pub fn parse_create_session(body: &[u8]) -> Result<SessionSpec, InputError> {
    let req: CreateSessionRequest<'_> = parse_json(body)?;
    if let Some(p) = &req.system_prompt {
        crate::common::check_system_prompt(p)?;
    }
    Ok(SessionSpec {
        id: match req.session_id {
            Some(s) => field("session_id", SessionId::parse(s))?,
            None => SessionId::generate(),
        },
        agent_id: field("agent_id", AgentId::parse(req.agent_id))?,
        system_prompt: req.system_prompt,
        metadata: optional_object("metadata", req.metadata)?,
    })
}

// ---------- query parameters ----------

/// Filters of `GET /api/v1/events`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventsParams {
    pub session_id: Option<String>,
    pub agent_id: Option<String>,
    /// Comma-separated kinds.
    pub kind: Option<String>,
    /// Comma-separated severities.
    pub severity: Option<String>,
    /// RFC 3339 lower bound (inclusive) on the event time.
    pub from: Option<String>,
    /// RFC 3339 upper bound (inclusive) on the event time.
    pub to: Option<String>,
    /// Full-text search over payloads; every word must occur.
    pub q: Option<String>,
    /// Only events whose usage names this model (response model, else request model).
    pub model: Option<String>,
    /// Comma-separated policy decisions: allow, flag, deny.
    pub decision: Option<String>,
    /// Only events that arrived through this API: native, fabraix, agentlens,
    /// secureagentics, realm or otlp.
    pub dialect: Option<String>,
    /// asc or desc (default desc; within one session: seq order).
    pub order: Option<String>,
    /// Page size, 1..=500 (default 50).
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// Filters of `GET /api/v1/sessions`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SessionsParams {
    pub agent_id: Option<String>,
    /// active or ended
    pub status: Option<String>,
    /// RFC 3339 lower bound (inclusive) on creation time.
    pub from: Option<String>,
    /// RFC 3339 upper bound (inclusive) on creation time.
    pub to: Option<String>,
    /// Page size, 1..=500 (default 50).
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

pub const DEFAULT_LIMIT: u32 = 50;
pub const MAX_LIMIT: u32 = 500;
/// Longest full-text query accepted.
pub const MAX_QUERY_CHARS: usize = 1024;

/// Parse a comma list of enum names, naming the parameter on error.
pub fn comma_list<T: std::str::FromStr>(
    param: &str,
    v: &Option<String>,
) -> Result<Vec<T>, InputError>
where
    T::Err: std::fmt::Display,
{
    let Some(v) = v else { return Ok(Vec::new()) };
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<T>()
                .map_err(|e| InputError::invalid(param, format!("{param}: {s:?} {e}")))
        })
        .collect()
}

pub fn time_param(param: &str, v: &Option<String>) -> Result<Option<Micros>, InputError> {
    v.as_deref()
        .map(|t| field(param, Micros::parse_rfc3339(t)))
        .transpose()
}

pub fn limit_param(v: Option<u32>) -> Result<u32, InputError> {
    match v.unwrap_or(DEFAULT_LIMIT) {
        0 => Err(InputError::invalid("limit", "limit: must be at least 1")),
        n if n > MAX_LIMIT => Err(InputError::invalid(
            "limit",
            format!("limit: must be at most {MAX_LIMIT}"),
        )),
        n => Ok(n),
    }
}

pub fn order_param(v: &Option<String>) -> Result<Order, InputError> {
    match v.as_deref() {
        None | Some("desc") => Ok(Order::Desc),
        Some("asc") => Ok(Order::Asc),
        Some(o) => Err(InputError::invalid(
            "order",
            format!("order: {o:?} must be asc or desc"),
        )),
    }
}

/// Distinct words one full-text search may ask for: each is a posting list
/// to intersect, and the cost grows with every common one.
pub const MAX_SEARCH_TERMS: usize = 16;

pub fn text_param(v: &Option<String>) -> Result<Option<String>, InputError> {
    if let Some(q) = v {
        let distinct: std::collections::HashSet<&str> = q.split_whitespace().collect();
        if distinct.len() > MAX_SEARCH_TERMS {
            return Err(InputError::invalid(
                "q",
                format!(
                    "q: at most {MAX_SEARCH_TERMS} distinct words ({} given)",
                    distinct.len()
                ),
            ));
        }
    }
    match v {
        Some(q) if q.chars().count() > MAX_QUERY_CHARS => Err(InputError::invalid(
            "q",
            format!("q: at most {MAX_QUERY_CHARS} characters"),
        )),
        // The full-text query language ends a string at NUL.
        Some(q) if q.contains('\0') => Err(InputError::invalid(
            "q",
            "q: must not contain the NUL character",
        )),
        Some(q) if q.trim().is_empty() => Ok(None),
        other => Ok(other.clone()),
    }
}

pub fn status_param(v: &Option<String>) -> Result<Option<SessionStatus>, InputError> {
    v.as_deref()
        .map(|s| {
            SessionStatus::parse(s)
                .ok_or_else(|| InputError::invalid("status", "status: must be active or ended"))
        })
        .transpose()
}

// ---------- responses ----------

#[derive(Debug, Serialize, ToSchema)]
pub struct IngestResponse {
    pub ingested: usize,
    pub events: Vec<IngestedEvent>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct IngestedEvent {
    pub id: String,
    pub session_id: String,
    pub seq: u64,
    pub hash: String,
}

/// An event with everything needed to check its place in the chain.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventOut {
    pub id: String,
    pub session_id: String,
    pub seq: u64,
    pub agent_id: String,
    pub kind: String,
    /// The type name the client used.
    pub source_type: String,
    /// The API the event arrived through.
    pub dialect: String,
    pub severity: String,
    /// When it happened: the client's timestamp, else the receive time.
    pub timestamp: String,
    pub client_timestamp: Option<String>,
    pub received_at: String,
    /// Null when the payload was erased (see `erased`).
    #[schema(value_type = Option<Object>)]
    pub payload: Box<RawValue>,
    #[schema(value_type = Object)]
    pub metadata: Box<RawValue>,
    pub payload_sha256: String,
    pub prev_hash: Option<String>,
    pub hash: String,
    /// The policy verdict {decision, policies, reasons, findings}, covered by
    /// the hash; null when the server ran without the policy checkpoint.
    #[schema(value_type = Option<Object>)]
    pub verdict: Option<Box<RawValue>>,
    /// SHA-256 of the payload as received, when redaction changed it
    /// (events of envelope v2 only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub original_payload_sha256: Option<String>,
    /// HMAC-SHA256 of the payload as received under the event's redaction
    /// salt (kept apart, never returned), when redaction changed it (v3).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub original_payload_hmac: Option<String>,
    /// Present when the payload was erased (`payload` is then null;
    /// `payload_sha256` is kept and the chain still verifies).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub erased: Option<ErasedOut>,
}

/// Who erased an event's payload, when, and the seq of the `event_erased`
/// record appended to its session.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErasedOut {
    /// `key:<api key id>` or `cli:<os user>`.
    pub by: String,
    pub at: String,
    pub record_seq: u64,
}

impl From<&agentledger_core::erasure::Erasure> for ErasedOut {
    fn from(e: &agentledger_core::erasure::Erasure) -> Self {
        ErasedOut {
            by: e.by.clone(),
            at: e.at.to_rfc3339(),
            record_seq: e.record_seq,
        }
    }
}

impl From<Event> for EventOut {
    fn from(e: Event) -> Self {
        EventOut {
            id: e.id.to_string(),
            timestamp: e.time().to_rfc3339(),
            session_id: e.session_id,
            seq: e.seq,
            agent_id: e.agent_id,
            kind: e.kind.as_str().into(),
            source_type: e.source_type,
            dialect: e.dialect.as_str().into(),
            severity: e.severity.as_str().into(),
            client_timestamp: e.client_ts.map(Micros::to_rfc3339),
            received_at: e.server_ts.to_rfc3339(),
            payload: e.payload,
            metadata: e.metadata,
            payload_sha256: hex::encode(e.payload_sha256),
            prev_hash: e.prev_hash.map(hex::encode),
            hash: hex::encode(e.hash),
            verdict: e.verdict,
            original_payload_sha256: (e.envelope_version < 3)
                .then(|| e.original_payload_sha256.map(hex::encode))
                .flatten(),
            original_payload_hmac: (e.envelope_version >= 3)
                .then(|| e.original_payload_sha256.map(hex::encode))
                .flatten(),
            erased: e.erased.as_deref().map(ErasedOut::from),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EventList {
    pub events: Vec<EventOut>,
    /// Events matching the filters (all pages), counted up to 10,000 (up to
    /// 1,000 when a full-text term is common).
    pub total: u64,
    /// True when more events match than `total` counted.
    pub total_capped: bool,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SessionOut {
    pub id: String,
    pub agent_id: String,
    pub system_prompt: Option<String>,
    #[schema(value_type = Object)]
    pub metadata: Box<RawValue>,
    /// active or ended
    pub status: String,
    pub created_at: String,
    pub event_count: u64,
    pub head_seq: u64,
    pub head_hash: Option<String>,
    pub first_event_at: Option<String>,
    pub last_event_at: Option<String>,
}

impl From<Session> for SessionOut {
    fn from(s: Session) -> Self {
        SessionOut {
            id: s.id,
            agent_id: s.agent_id,
            system_prompt: s.system_prompt,
            metadata: s.metadata,
            status: s.status.as_str().into(),
            created_at: s.created_at.to_rfc3339(),
            event_count: s.head_seq,
            head_seq: s.head_seq,
            head_hash: s.head_hash.map(hex::encode),
            first_event_at: s.first_event_at.map(Micros::to_rfc3339),
            last_event_at: s.last_event_at.map(Micros::to_rfc3339),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SessionList {
    pub sessions: Vec<SessionOut>,
    pub total: u64,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct VerifyOut {
    pub valid: bool,
    pub events: u64,
    pub head_hash: Option<String>,
    pub first_invalid_seq: Option<u64>,
    pub reason: Option<String>,
}

impl From<VerifyReport> for VerifyOut {
    fn from(r: VerifyReport) -> Self {
        VerifyOut {
            valid: r.valid,
            events: r.events,
            head_hash: r.head_hash,
            first_invalid_seq: r.first_invalid_seq,
            reason: r.reason,
        }
    }
}

/// The error envelope of the native API.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    pub message: String,
    /// validation_error, authentication_error, not_found, conflict,
    /// payload_too_large, unsupported_media_type, overloaded, internal_error
    #[serde(rename = "type")]
    pub kind: String,
    pub code: String,
    #[schema(value_type = Option<Object>)]
    pub details: Option<serde_json::Value>,
}

fn cursor_param(v: &Option<String>) -> Result<Option<Cursor>, InputError> {
    v.as_deref()
        .map(|c| {
            Cursor::decode(c).ok_or_else(|| {
                InputError::invalid("cursor", "cursor: not a cursor this API returned")
            })
        })
        .transpose()
}

impl EventsParams {
    /// The canonical query these parameters ask for.
    pub fn to_query(&self) -> Result<EventQuery, InputError> {
        Ok(EventQuery {
            session_id: self.session_id.clone(),
            agent_id: self.agent_id.clone(),
            kinds: comma_list("kind", &self.kind)?,
            severities: comma_list("severity", &self.severity)?,
            from: time_param("from", &self.from)?,
            to: time_param("to", &self.to)?,
            text: text_param(&self.q)?,
            model: self.model.clone(),
            decisions: comma_list("decision", &self.decision)?,
            dialect: dialect_param(&self.dialect)?,
            order: order_param(&self.order)?,
            limit: limit_param(self.limit)?,
            cursor: cursor_param(&self.cursor)?,
            ..Default::default()
        })
    }
}

/// Filters and grouping of `GET /api/v1/usage`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UsageParams {
    pub session_id: Option<String>,
    pub agent_id: Option<String>,
    /// Comma-separated kinds (e.g. llm_response to avoid counting cost_tracked twice).
    pub kind: Option<String>,
    pub model: Option<String>,
    pub dialect: Option<String>,
    /// RFC 3339 lower bound (inclusive) on the event time.
    pub from: Option<String>,
    /// RFC 3339 upper bound (inclusive) on the event time.
    pub to: Option<String>,
    /// model, agent, session or kind (default: one total).
    pub group_by: Option<String>,
}

impl UsageParams {
    pub fn to_query(&self) -> Result<(EventQuery, Option<UsageGroup>), InputError> {
        let group = match self.group_by.as_deref() {
            None | Some("") => None,
            Some("model") => Some(UsageGroup::Model),
            Some("agent") => Some(UsageGroup::Agent),
            Some("session") => Some(UsageGroup::Session),
            Some("kind") => Some(UsageGroup::Kind),
            Some(_) => {
                return Err(InputError::invalid(
                    "group_by",
                    "group_by: must be one of: model, agent, session, kind",
                ));
            }
        };
        let q = EventQuery {
            session_id: self.session_id.clone(),
            agent_id: self.agent_id.clone(),
            kinds: comma_list("kind", &self.kind)?,
            model: self.model.clone(),
            dialect: dialect_param(&self.dialect)?,
            from: time_param("from", &self.from)?,
            to: time_param("to", &self.to)?,
            skip_total: true,
            ..Default::default()
        };
        Ok((q, group))
    }
}

/// `GET /api/v1/usage`: token and cost sums.
#[derive(Debug, Serialize, ToSchema)]
pub struct UsageReport {
    /// What the rows are grouped by, or null for one total.
    pub group_by: Option<String>,
    /// Largest cost first; at most 1,000.
    pub rows: Vec<UsageRowOut>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UsageRowOut {
    /// The model, agent, session or kind; null for the total (or events without a model).
    pub group: Option<String>,
    /// Events that carried usage.
    pub events: u64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub total_tokens: i64,
    pub cost_usd: f64,
}

impl From<UsageRow> for UsageRowOut {
    fn from(r: UsageRow) -> Self {
        UsageRowOut {
            group: r.group,
            events: r.events,
            input_tokens: r.input_tokens,
            output_tokens: r.output_tokens,
            total_tokens: r.input_tokens.saturating_add(r.output_tokens),
            cost_usd: r.cost_usd,
        }
    }
}

pub fn dialect_param(v: &Option<String>) -> Result<Option<Dialect>, InputError> {
    v.as_deref()
        .filter(|s| !s.is_empty())
        .map(|s| field("dialect", s.parse::<Dialect>()))
        .transpose()
}

impl SessionsParams {
    pub fn to_query(&self) -> Result<SessionQuery, InputError> {
        Ok(SessionQuery {
            agent_id: self.agent_id.clone(),
            status: status_param(&self.status)?,
            from: time_param("from", &self.from)?,
            to: time_param("to", &self.to)?,
            limit: limit_param(self.limit)?,
            cursor: cursor_param(&self.cursor)?,
        })
    }
}
