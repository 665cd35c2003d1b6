//! Fabraix (seeds 000 and 001): `POST /v1/register-agent-run` starts a run and
//! hands out its `trace_id`; `POST /v1/event` logs one event whose `content`
//! (a string holding JSON) is validated against its `schema` (a string holding
//! a JSON Schema).
//!
//! An event is taken in three steps, so that the server can put the run's
//! lookup before any expensive work and the expensive work off its async
//! workers: [`read_event`] (cheap checks: types, sizes, JSON, I-JSON),
//! [`FabraixEvent::plan`] (what validation may cost, refused over budget),
//! [`FabraixEvent::validate`] (compile, or reuse, and validate).
//! [`parse_event`] does all three in place.

pub mod cost;
pub mod schema;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use jsonschema::Validator;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use utoipa::ToSchema;

use agentledger_core::{AgentId, Dialect, Kind, Micros, NewEvent, SessionId, Severity};

use crate::InputError;
use crate::common::{TypeTable, field, kind_in, names_in, object};
use crate::error::parse_json;
pub use cost::{ContentShape, SchemaCost, Work};
pub use schema::{Measured, Schema, SchemaCache};

/// Largest `content` string (bytes), checked before it is parsed.
pub const MAX_CONTENT_BYTES: usize = 1024 * 1024;
/// Largest `schema` string (bytes), checked before it is parsed.
pub const MAX_SCHEMA_BYTES: usize = 64 * 1024;

/// Validation this cheap runs where it is asked for (on an async worker):
/// about a third of a millisecond of keyword evaluations, string scans that
/// even a pathological regex gets through in about 16 ms, a content parsed
/// in well under a millisecond, with a validator already compiled.
const INLINE_KEYWORD_WORK: u64 = 256 * 1024;
const INLINE_STRING_WORK: u64 = 16 * 1024;
const INLINE_CONTENT_BYTES: usize = 64 * 1024;

/// Fabraix event types and the canonical kinds they map to.
pub const EVENT_TYPES: TypeTable = &[
    ("user", Kind::UserInput),
    ("model_input", Kind::LlmCall),
    ("model_output", Kind::LlmResponse),
    ("tool", Kind::ToolCall),
    ("environment", Kind::Environment),
    ("memory", Kind::Memory),
    ("system", Kind::System),
    ("error", Kind::Error),
];

pub fn kind_of(event_type: &str) -> Option<Kind> {
    kind_in(EVENT_TYPES, event_type)
}

/// `POST /v1/register-agent-run`
#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = fabraix::RegisterRequest)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    /// Your agent's stable identifier (1..=128 characters, no control characters).
    pub agent_id: String,
    /// When the run starts, ISO 8601 (e.g. 2024-01-15T14:30:45.123Z).
    pub timestamp: String,
    /// The system prompt given to the agent for this run.
    pub system_prompt: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[schema(as = fabraix::RegisterResponse)]
pub struct RegisterResponse {
    /// The run's id; every later event and action check carries it.
    pub trace_id: String,
    /// Server time of registration, ISO 8601 with milliseconds.
    pub timestamp: String,
}

/// A validated registration: the new session and its opening event.
#[derive(Debug)]
pub struct Registration {
    pub session_id: SessionId,
    pub agent_id: AgentId,
    pub system_prompt: String,
    /// `session_started`, carrying the registration body as received, so the
    /// system prompt a run was given is part of its chain.
    pub opening: NewEvent,
}

pub fn parse_register(body: &[u8]) -> Result<Registration, InputError> {
    let raw: &RawValue = parse_json(body)?;
    let req: RegisterRequest = parse_json(raw.get().as_bytes())?;
    let agent_id = AgentId::parse(req.agent_id).map_err(|e| {
        InputError::invalid("agent_id", format!("Invalid agent_id format: agent_id {e}"))
            .with_code("INVALID_AGENT_ID")
    })?;
    let started = field("timestamp", Micros::parse_rfc3339(&req.timestamp))?;
    crate::common::check_system_prompt(&req.system_prompt)?;
    let session_id = SessionId::generate();
    let opening = NewEvent {
        session_id: session_id.clone(),
        agent_id: agent_id.clone(),
        kind: Kind::SessionStarted,
        source_type: "register-agent-run".into(),
        dialect: Dialect::Fabraix,
        severity: Severity::Info,
        client_ts: Some(started),
        payload: object("body", raw)?,
        metadata: agentledger_core::event::empty_object(),
        judgement: None,
    };
    Ok(Registration {
        session_id,
        agent_id,
        system_prompt: req.system_prompt,
        opening,
    })
}

/// `POST /v1/event`
#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = fabraix::EventRequest)]
#[serde(deny_unknown_fields)]
pub struct EventRequest {
    /// user, model_input, model_output, tool, environment, memory, system or error.
    pub event_type: String,
    /// The run's id from register-agent-run.
    pub trace_id: String,
    /// When the event happened, Unix seconds.
    pub timestamp: f64,
    /// The event data: a string holding a JSON object (at most 1 MiB).
    pub content: String,
    /// A string holding the JSON Schema `content` must match (at most 64 KiB).
    pub schema: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[schema(as = fabraix::EventResponse)]
pub struct EventResponse {
    /// The event's id (UUID form of the ledger's 128-bit id).
    pub event_id: String,
    /// Server time the event was processed, Unix seconds.
    pub timestamp: f64,
}

/// An event that passed the cheap checks, waiting for its run to be looked
/// up and its content to be validated.
#[derive(Debug)]
pub struct FabraixEvent {
    pub trace_id: String,
    pub kind: Kind,
    pub source_type: String,
    pub client_ts: Micros,
    /// The decoded `content`: its JSON text, byte for byte.
    pub payload: Box<RawValue>,
    /// `{"schema": <the schema text as received>}`.
    pub metadata: Box<RawValue>,
    pub schema: Schema,
    pub content: ContentShape,
}

/// How one event's validation will go: the schema's cost and this
/// content's work, and the compiled validator if the cache has it (else the
/// measured schema, to compile).
#[derive(Clone)]
pub struct Plan {
    pub cost: SchemaCost,
    pub work: Work,
    schema: Compiled,
}

#[derive(Clone)]
enum Compiled {
    Cached(Arc<Validator>),
    ToCompile(Box<Measured>),
}

impl std::fmt::Debug for Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plan")
            .field("cost", &self.cost)
            .field("work", &self.work)
            .field("cached", &matches!(self.schema, Compiled::Cached(_)))
            .finish()
    }
}

impl FabraixEvent {
    /// What validating this event may cost. Refuses (413, naming `schema`) a
    /// schema whose compiled form, or whose work on this content, is over
    /// budget, and (400 INVALID_SCHEMA) references that cannot be resolved.
    /// Compiles nothing; a schema not cached is parsed and measured, linear
    /// in its size (about a millisecond for 64 KiB).
    pub fn plan(&self, cache: &SchemaCache) -> Result<Plan, InputError> {
        if let Some(plan) = self.plan_if_cached(cache)? {
            return Ok(plan);
        }
        let measured = self.schema.measure()?;
        Ok(Plan {
            cost: measured.cost,
            work: measured.cost.work(self.content)?,
            schema: Compiled::ToCompile(Box::new(measured)),
        })
    }

    /// The plan, if the schema's validator (and so its measured cost) is
    /// cached: a lookup and a multiplication.
    pub fn plan_if_cached(&self, cache: &SchemaCache) -> Result<Option<Plan>, InputError> {
        let Some((validator, cost)) = cache.get(self.schema.key()) else {
            return Ok(None);
        };
        Ok(Some(Plan {
            cost,
            work: cost.work(self.content)?,
            schema: Compiled::Cached(validator),
        }))
    }

    /// Whether validation is cheap enough to run on the caller's thread: the
    /// validator is compiled already and the work is small. Anything else is
    /// CPU work to run off the async workers.
    pub fn is_light(&self, plan: &Plan) -> bool {
        matches!(plan.schema, Compiled::Cached(_))
            && plan.work.keyword_evaluations <= INLINE_KEYWORD_WORK
            && plan.work.string_bytes_scanned <= INLINE_STRING_WORK
            && self.payload.get().len() <= INLINE_CONTENT_BYTES
    }

    /// Compile the schema (or reuse it) and validate the content: the
    /// documented SCHEMA_MISMATCH on failure.
    pub fn validate(&self, plan: &Plan, cache: &SchemaCache) -> Result<(), InputError> {
        let validator = match &plan.schema {
            Compiled::Cached(v) => v.clone(),
            Compiled::ToCompile(measured) => cache.validator(&self.schema, measured)?,
        };
        let value: serde_json::Value = serde_json::from_str(self.payload.get()).map_err(|e| {
            InputError::invalid("content", format!("content is not valid JSON: {e}"))
        })?;
        schema::check_with(&validator, &value, plan.work.detailed_errors)
    }

    /// The canonical event, once the run (session) and its agent are known.
    pub fn into_new_event(self, session_id: SessionId, agent_id: AgentId) -> NewEvent {
        NewEvent {
            session_id,
            agent_id,
            kind: self.kind,
            source_type: self.source_type,
            dialect: Dialect::Fabraix,
            severity: if self.kind == Kind::Error {
                Severity::Error
            } else {
                Severity::Info
            },
            client_ts: Some(self.client_ts),
            payload: self.payload,
            metadata: self.metadata,
            judgement: None,
        }
    }
}

/// Read an event and make the cheap checks: types, sizes (on byte length,
/// before parsing), content JSON (an I-JSON object), schema JSON (I-JSON,
/// bounded depth; skipped for a schema the cache holds). Nothing is
/// compiled or validated.
pub fn read_event(body: &[u8], schemas: &SchemaCache) -> Result<FabraixEvent, InputError> {
    let req: EventRequest = parse_json(body)?;
    let kind = kind_of(&req.event_type).ok_or_else(|| {
        InputError::invalid(
            "event_type",
            format!(
                "event_type: {:?} must be one of: {}",
                req.event_type,
                names_in(EVENT_TYPES)
            ),
        )
        .with_code("INVALID_EVENT_TYPE")
    })?;
    let client_ts = Micros::from_unix_seconds_f64(req.timestamp)
        .ok_or_else(|| InputError::invalid("timestamp", "timestamp: must be Unix seconds"))?;
    if req.content.len() > MAX_CONTENT_BYTES {
        return Err(InputError::too_large(
            "content",
            "content",
            MAX_CONTENT_BYTES,
        ));
    }
    if req.schema.len() > MAX_SCHEMA_BYTES {
        return Err(InputError::too_large("schema", "schema", MAX_SCHEMA_BYTES));
    }
    let content: Box<RawValue> = serde_json::from_str(&req.content).map_err(|e| {
        InputError::invalid("content", format!("content is not valid JSON: {e}"))
            .with_code("INVALID_CONTENT")
    })?;
    let payload = object("content", &content).map_err(|e| e.with_code("INVALID_CONTENT"))?;
    let metadata = format!("{{\"schema\":{}}}", req.schema.trim());
    let schema = Schema::read(req.schema, schemas)?;
    // Valid I-JSON, so this holds; still refused, never unwrapped.
    let metadata = RawValue::from_string(metadata).map_err(|e| {
        InputError::invalid("schema", format!("schema is not valid JSON: {e}"))
            .with_code("INVALID_SCHEMA")
    })?;
    let content = ContentShape::measure(payload.get());
    Ok(FabraixEvent {
        trace_id: req.trace_id,
        kind,
        source_type: req.event_type,
        client_ts,
        payload,
        metadata,
        schema,
        content,
    })
}

/// Read, plan and validate an event in place (tests and tools; the server
/// takes the steps apart).
pub fn parse_event(body: &[u8], schemas: &SchemaCache) -> Result<FabraixEvent, InputError> {
    let ev = read_event(body, schemas)?;
    let plan = ev.plan(schemas)?;
    ev.validate(&plan, schemas)?;
    Ok(ev)
}
