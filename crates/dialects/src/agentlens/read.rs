//! AgentLens's read API beyond events, in the shapes the `agentlensai` SDK's
//! pydantic models parse (camelCase): sessions, a session's timeline, agents,
//! health and LLM analytics. Values come from the ledger as stored; where the
//! ledger records nothing for a field the SDK requires, the docs
//! (docs/dialects.md) say what is answered.

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use agentledger_core::query::SessionQuery;
use agentledger_core::{Session, SessionStatus};

use super::EventOut;
use crate::InputError;
use crate::native::{comma_list, time_param};

/// Sessions per page by default, and at most.
pub const SESSIONS_DEFAULT_LIMIT: u32 = 50;
pub const SESSIONS_MAX_LIMIT: u32 = 500;
pub use crate::common::MAX_OFFSET;
use crate::common::offset;
/// Events per timeline page (the SDK asks for one page; the rest is reached
/// with `offset`).
pub const TIMELINE_MAX_EVENTS: u32 = 1_000;
/// Tags per filter.
pub const MAX_TAGS: usize = 20;

fn limit(v: Option<u32>, default: u32, max: u32) -> Result<u32, InputError> {
    match v {
        Some(0) => Err(InputError::invalid("limit", "limit: must be at least 1")),
        Some(n) => Ok(n.min(max)),
        None => Ok(default),
    }
}

/// AgentLens's session status, from the ledger's: an ended session is
/// `completed`. The ledger records no `error` status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(as = agentlens::SessionStatus)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Active,
    Completed,
    Error,
}

impl std::str::FromStr for Status {
    type Err = &'static str;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "active" => Ok(Status::Active),
            "completed" => Ok(Status::Completed),
            "error" => Ok(Status::Error),
            _ => Err("must be one of: active, completed, error"),
        }
    }
}

/// Query parameters of `GET /api/sessions`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase")]
pub struct SessionsParams {
    pub agent_id: Option<String>,
    /// Statuses, comma-separated: active, completed, error (agentledger
    /// never marks a session `error`, so that one matches none).
    pub status: Option<String>,
    /// ISO 8601: sessions created at or after.
    pub from: Option<String>,
    /// ISO 8601: sessions created at or before.
    pub to: Option<String>,
    /// Tags, comma-separated: sessions carrying any of them (at most 20).
    pub tags: Option<String>,
    /// Results per page (default 50; larger values are capped at 500).
    pub limit: Option<u32>,
    /// Sessions to skip (at most 100,000).
    pub offset: Option<u64>,
}

/// What a session listing asks of the store; `None` when the statuses asked
/// for can match no session (only `error`).
#[derive(Debug, Clone)]
pub struct SessionsRequest {
    pub query: SessionQuery,
    pub offset: u64,
    pub tags: Vec<String>,
    pub matches_nothing: bool,
}

impl SessionsParams {
    pub fn to_request(&self) -> Result<SessionsRequest, InputError> {
        let statuses: Vec<Status> = comma_list("status", &self.status)?;
        let active = statuses.contains(&Status::Active);
        let completed = statuses.contains(&Status::Completed);
        let status = match (active, completed) {
            (true, false) => Some(SessionStatus::Active),
            (false, true) => Some(SessionStatus::Ended),
            _ => None,
        };
        let tags: Vec<String> = comma_list("tags", &self.tags)?;
        if tags.len() > MAX_TAGS {
            return Err(InputError::invalid(
                "tags",
                format!("tags: at most {MAX_TAGS} ({} given)", tags.len()),
            ));
        }
        Ok(SessionsRequest {
            query: SessionQuery {
                agent_id: self.agent_id.clone(),
                status,
                from: time_param("from", &self.from)?,
                to: time_param("to", &self.to)?,
                limit: limit(self.limit, SESSIONS_DEFAULT_LIMIT, SESSIONS_MAX_LIMIT)?,
                cursor: None,
            },
            offset: offset(self.offset)?,
            tags,
            matches_nothing: !statuses.is_empty() && !active && !completed,
        })
    }
}

/// A session with its running totals (kept as events are appended).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[schema(as = agentlens::Session)]
#[serde(rename_all = "camelCase")]
pub struct SessionOut {
    pub id: String,
    pub agent_id: String,
    /// agentledger keeps no agent names: always null.
    pub agent_name: Option<String>,
    /// The first event's time (the session's creation time until it has one).
    pub started_at: String,
    /// The last event's time, once a `session_ended` event ended the session.
    pub ended_at: Option<String>,
    pub status: Status,
    pub event_count: u64,
    pub tool_call_count: u64,
    /// Events of type tool_error or error, or of severity error or critical.
    pub error_count: u64,
    pub total_cost_usd: f64,
    pub llm_call_count: u64,
    pub total_input_tokens: i64,
    pub total_output_tokens: i64,
    /// The string `tags` of the session's first `session_started` event that has any.
    pub tags: Vec<String>,
}

impl From<Session> for SessionOut {
    fn from(s: Session) -> Self {
        let ended = s.status == SessionStatus::Ended;
        let c = s.counters;
        SessionOut {
            started_at: s.first_event_at.unwrap_or(s.created_at).to_rfc3339_millis(),
            ended_at: ended.then(|| s.last_event_at.unwrap_or(s.created_at).to_rfc3339_millis()),
            status: if ended {
                Status::Completed
            } else {
                Status::Active
            },
            id: s.id,
            agent_id: s.agent_id,
            agent_name: None,
            event_count: c.events,
            tool_call_count: c.tool_calls,
            error_count: c.errors,
            total_cost_usd: c.cost_usd,
            llm_call_count: c.llm_calls,
            total_input_tokens: c.input_tokens,
            total_output_tokens: c.output_tokens,
            tags: s.tags,
        }
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[schema(as = agentlens::SessionList)]
#[serde(rename_all = "camelCase")]
pub struct SessionList {
    pub sessions: Vec<SessionOut>,
    pub total: u64,
    pub has_more: bool,
}

/// Query parameters of `GET /api/sessions/{id}/timeline`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase")]
pub struct TimelineParams {
    /// Events per page (default and maximum 1000).
    pub limit: Option<u32>,
    /// Events to skip from the start of the chain.
    pub offset: Option<u64>,
}

impl TimelineParams {
    /// (limit, offset): events with seq > offset, at most limit of them.
    pub fn page(&self) -> Result<(u32, u64), InputError> {
        Ok((
            limit(self.limit, TIMELINE_MAX_EVENTS, TIMELINE_MAX_EVENTS)?,
            // A seq position (an index seek, whatever its size); seqs are
            // stored as signed 64-bit integers.
            self.offset.unwrap_or(0).min(i64::MAX as u64),
        ))
    }
}

/// A session's events in chain order, with the verdict of a full
/// verification of its chain.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[schema(as = agentlens::Timeline)]
#[serde(rename_all = "camelCase")]
pub struct TimelineOut {
    pub events: Vec<EventOut>,
    /// Every event of the session re-hashed and linked, the head included.
    pub chain_valid: bool,
    /// Events in the session.
    pub total: u64,
    /// More events follow this page (ask again with `offset`).
    pub has_more: bool,
}

/// An agent as its sessions describe it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[schema(as = agentlens::Agent)]
#[serde(rename_all = "camelCase")]
pub struct AgentOut {
    pub id: String,
    /// agentledger keeps no agent names: the id.
    pub name: String,
    pub first_seen_at: String,
    pub last_seen_at: String,
    pub session_count: u64,
    /// The project the caller's key belongs to.
    pub tenant_id: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[schema(as = agentlens::AgentList)]
#[serde(rename_all = "camelCase")]
pub struct AgentList {
    pub agents: Vec<AgentOut>,
    pub total: u64,
    pub has_more: bool,
}

/// Query parameters of `GET /api/agents`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase")]
pub struct AgentsParams {
    /// Results per page (default 50; larger values are capped at 500).
    pub limit: Option<u32>,
    /// Agents to skip (at most 100,000).
    pub offset: Option<u64>,
}

impl AgentsParams {
    pub fn page(&self) -> Result<(u32, u64), InputError> {
        Ok((
            limit(self.limit, SESSIONS_DEFAULT_LIMIT, SESSIONS_MAX_LIMIT)?,
            offset(self.offset)?,
        ))
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[schema(as = agentlens::Health)]
pub struct HealthOut {
    pub status: String,
    pub version: String,
}

/// Query parameters of `GET /api/analytics/llm`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase")]
pub struct LlmAnalyticsParams {
    /// ISO 8601 start (inclusive).
    pub from: Option<String>,
    /// ISO 8601 end (inclusive).
    pub to: Option<String>,
    pub agent_id: Option<String>,
    /// Only this model.
    pub model: Option<String>,
    /// Only calls whose response names this provider.
    pub provider: Option<String>,
    /// `byTime` buckets: hour, day (default) or week (weeks start on
    /// Mondays, UTC). More than 1,000 buckets is 400: narrow the range.
    pub granularity: Option<String>,
}

const HOUR_MICROS: i64 = 3_600 * 1_000_000;

impl LlmAnalyticsParams {
    /// The `byTime` bucket width in microseconds.
    pub fn bucket_micros(&self) -> Result<i64, InputError> {
        match self.granularity.as_deref() {
            Some("hour") => Ok(HOUR_MICROS),
            None | Some("day") => Ok(24 * HOUR_MICROS),
            Some("week") => Ok(7 * 24 * HOUR_MICROS),
            Some(_) => Err(InputError::invalid(
                "granularity",
                "granularity: must be hour, day or week",
            )),
        }
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[schema(as = agentlens::LlmAnalyticsSummary)]
#[serde(rename_all = "camelCase")]
pub struct LlmSummary {
    pub total_calls: u64,
    pub total_cost_usd: f64,
    pub total_input_tokens: i64,
    pub total_output_tokens: i64,
    /// Mean of the responses' numeric `latencyMs` (0 when none has one).
    pub avg_latency_ms: f64,
    pub avg_cost_per_call: f64,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[schema(as = agentlens::LlmAnalyticsByModel)]
#[serde(rename_all = "camelCase")]
pub struct LlmByModel {
    /// The responses' `provider` ("" when they name none).
    pub provider: String,
    pub model: String,
    pub calls: u64,
    pub cost_usd: f64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    /// Mean of the responses' numeric `latencyMs` (0 when none has one).
    pub avg_latency_ms: f64,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[schema(as = agentlens::LlmAnalyticsByTime)]
#[serde(rename_all = "camelCase")]
pub struct LlmByTime {
    /// The bucket's start.
    pub bucket: String,
    pub calls: u64,
    pub cost_usd: f64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub avg_latency_ms: f64,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[schema(as = agentlens::LlmAnalytics)]
#[serde(rename_all = "camelCase")]
pub struct LlmAnalytics {
    pub summary: LlmSummary,
    /// By provider and model, largest cost first.
    pub by_model: Vec<LlmByModel>,
    /// By time bucket (`granularity`), in time order; buckets without calls
    /// are left out.
    pub by_time: Vec<LlmByTime>,
}
