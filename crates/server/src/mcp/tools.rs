//! The MCP tools. Each one is a thin edge over what the native API already
//! does (the same store queries, the same chain verification, the same
//! policy judgement), so an answer over MCP never differs from the answer
//! over HTTP. Each takes the caller's project from the request the route
//! authenticated (see the module above), bounds its inputs, and answers a
//! failure as an MCP tool error (`isError: true`) with the API's error
//! message and code: never a panic, never an internal cause, never a key.

use axum::http::request::Parts;
use rmcp::handler::server::tool::Extension;
use rmcp::model::{
    CallToolResult, ContentBlock, Implementation, JsonObject, ServerCapabilities, ServerConfig,
};
use rmcp::schemars::{self, JsonSchema};
use rmcp::{ServerHandler, tool, tool_handler, tool_router};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

use agentledger_core::event::SessionCounters;
use agentledger_core::{AgentId, Dialect, Kind, SessionId};
use agentledger_dialects::InputError;
use agentledger_dialects::common::field;
use agentledger_dialects::native::{EventOut, EventsParams, SessionOut, VerifyOut};
use agentledger_store::verify::verify_session;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::ingest::check::Proposed;
use crate::state::AppState;

/// Largest page of `search_events` (smaller than the HTTP API's 500: every
/// event lands in a model's context).
pub const MAX_SEARCH_LIMIT: u32 = 100;
const DEFAULT_SEARCH_LIMIT: u32 = 20;
/// Largest page of `get_session_timeline`.
pub const MAX_TIMELINE_LIMIT: u32 = 200;
const DEFAULT_TIMELINE_LIMIT: u32 = 50;
/// Most values in one list filter (kinds, severities, decisions).
const MAX_LIST: usize = 32;
/// Longest cursor accepted (the API's cursors are far shorter).
const MAX_CURSOR_CHARS: usize = 512;
const MAX_MODEL_CHARS: usize = 256;
const MAX_TOOL_CHARS: usize = 1024;

/// The agentledger MCP server's tools.
#[derive(Debug, Clone, Copy)]
pub struct LedgerTools;

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
    #[schemars(length(min = 1, max = 256))]
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
    #[schemars(length(min = 1, max = 256))]
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

#[tool_router]
impl LedgerTools {
    /// Search the project's events.
    #[tool(
        description = "Search this project's audit trail: full-text over event payloads plus \
            filters (session, agent, kinds, severities, policy decisions, dialect, model, time \
            range). Newest first unless order=asc. Answers {events, total, total_capped, \
            next_cursor}; each event has its id, session_id, seq, kind, payload, verdict and hash. \
            Pass next_cursor as cursor for the next page.",
        input_schema = schema::<SearchEvents>(),
        annotations(
            title = "Search events",
            read_only_hint = true,
            open_world_hint = false
        )
    )]
    async fn search_events(
        &self,
        Extension(parts): Extension<Parts>,
        args: JsonObject,
    ) -> CallToolResult {
        answer(async { search(&parts, parse(args)?).await }.await)
    }

    /// A session's events in chain order.
    #[tool(
        description = "Read one session's timeline: the session (status, head, counters: events, \
            tool calls, errors, LLM calls, tokens, cost) and a page of its events in chain (seq) \
            order after after_seq. Answers {session, events, has_more, next_after_seq}.",
        input_schema = schema::<SessionTimeline>(),
        annotations(
            title = "Session timeline",
            read_only_hint = true,
            open_world_hint = false
        )
    )]
    async fn get_session_timeline(
        &self,
        Extension(parts): Extension<Parts>,
        args: JsonObject,
    ) -> CallToolResult {
        answer(async { timeline(&parts, parse(args)?).await }.await)
    }

    /// Verify a session's hash chain.
    #[tool(
        description = "Verify a session's hash chain as stored: recompute every payload digest \
            and envelope hash and check the links and the recorded head. Answers {valid, events, \
            head_hash, first_invalid_seq, reason}; valid=false names the first broken seq and why.",
        input_schema = schema::<VerifySession>(),
        annotations(
            title = "Verify session",
            read_only_hint = true,
            open_world_hint = false
        )
    )]
    async fn verify_session(
        &self,
        Extension(parts): Extension<Parts>,
        args: JsonObject,
    ) -> CallToolResult {
        answer(async { verify(&parts, parse(args)?).await }.await)
    }

    /// Ask for a policy decision before acting.
    #[tool(
        description = "Ask the policy checkpoint before acting: judge a proposed action (kind, \
            tool, arguments) against this project's policies and the session so far, without \
            recording anything. Answers {allowed, decision (allow, flag or deny), policies, \
            reasons, findings, recorded: false}; findings locate detected secrets, PII or \
            injections by JSON pointer and offsets, never by their text.",
        input_schema = schema::<CheckPolicy>(),
        annotations(title = "Check policy", read_only_hint = true, open_world_hint = false)
    )]
    async fn check_policy(
        &self,
        Extension(parts): Extension<Parts>,
        args: JsonObject,
    ) -> CallToolResult {
        answer(async { check(&parts, parse(args)?).await }.await)
    }
}

#[tool_handler]
impl ServerHandler for LedgerTools {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new(
                "agentledger",
                env!("CARGO_PKG_VERSION"),
            ))
            .with_instructions(
                "agentledger is the tamper-evident audit trail of this project's AI agents. \
                 Search its events, read a session's timeline, verify a session's hash chain, \
                 and ask the policy checkpoint before acting. Every tool sees only the project \
                 of the API key this connection uses.",
            )
    }
}

/// A tool's input schema, from its arguments' type.
fn schema<T: JsonSchema + 'static>() -> std::sync::Arc<JsonObject> {
    rmcp::handler::server::common::schema_for_input::<T>().unwrap_or_else(|e| {
        tracing::error!(error = %e, "an MCP tool's input schema did not generate");
        rmcp::handler::server::common::schema_for_empty_input()
    })
}

/// A tool's arguments. Parsed here rather than by the SDK's `Parameters`,
/// whose error quotes the offending value: a value may be a secret, and the
/// answer says what was expected (or which field is missing or unknown),
/// never what was sent.
fn parse<T: DeserializeOwned>(args: JsonObject) -> Result<T, ApiError> {
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

/// The state and caller the route put on the request.
fn context(parts: &Parts) -> Result<(&AppState, &Caller), ApiError> {
    match (
        parts.extensions.get::<AppState>(),
        parts.extensions.get::<Caller>(),
    ) {
        (Some(st), Some(caller)) => Ok((st, caller)),
        _ => Err(ApiError::Internal(
            "an MCP request reached a tool without its caller".into(),
        )),
    }
}

/// A tool's answer: its value as structured content, or a tool error with
/// the API's message and code (an internal cause is logged, not shown).
fn answer(r: Result<Value, ApiError>) -> CallToolResult {
    match r {
        Ok(v) => CallToolResult::structured(v),
        Err(e) => {
            if let ApiError::Internal(cause) | ApiError::StorageFull(cause) = &e {
                tracing::error!(%cause, "MCP tool failed");
            }
            let body = e.body();
            let text = format!("{} ({})", body.error.message, body.error.code);
            let mut r = CallToolResult::error(vec![ContentBlock::text(text)]);
            r.structured_content = serde_json::to_value(&body.error).ok();
            r
        }
    }
}

fn to_value<T: serde::Serialize>(v: &T) -> Result<Value, ApiError> {
    serde_json::to_value(v).map_err(|e| ApiError::Internal(e.to_string()))
}

fn bounded_limit(v: Option<u32>, default: u32, max: u32) -> Result<u32, ApiError> {
    match v.unwrap_or(default) {
        n @ 1.. if n <= max => Ok(n),
        _ => Err(InputError::invalid("limit", format!("limit: must be 1 to {max}")).into()),
    }
}

fn list(param: &str, v: Option<Vec<String>>) -> Result<Option<String>, ApiError> {
    match v {
        Some(items) if items.len() > MAX_LIST => {
            Err(InputError::invalid(param, format!("{param}: at most {MAX_LIST} values")).into())
        }
        Some(items) if !items.is_empty() => Ok(Some(items.join(","))),
        _ => Ok(None),
    }
}

/// A free-text argument of at most `max` characters.
fn short(param: &str, v: Option<&String>, max: usize) -> Result<(), ApiError> {
    if v.is_some_and(|s| s.chars().count() > max) {
        return Err(
            InputError::invalid(param, format!("{param}: at most {max} characters")).into(),
        );
    }
    Ok(())
}

fn session_id(v: String) -> Result<SessionId, ApiError> {
    Ok(field("session_id", SessionId::parse(v))?)
}

async fn search(parts: &Parts, a: SearchEvents) -> Result<Value, ApiError> {
    let (st, caller) = context(parts)?;
    if let Some(id) = &a.session_id {
        session_id(id.clone())?;
    }
    if let Some(id) = &a.agent_id {
        field("agent_id", AgentId::parse(id.clone()))?;
    }
    short("cursor", a.cursor.as_ref(), MAX_CURSOR_CHARS)?;
    short("model", a.model.as_ref(), MAX_MODEL_CHARS)?;
    let params = EventsParams {
        session_id: a.session_id,
        agent_id: a.agent_id,
        kind: list("kinds", a.kinds)?,
        severity: list("severities", a.severities)?,
        from: a.from,
        to: a.to,
        q: a.q,
        model: a.model,
        decision: list("decisions", a.decisions)?,
        dialect: a.dialect,
        order: a.order,
        limit: Some(bounded_limit(
            a.limit,
            DEFAULT_SEARCH_LIMIT,
            MAX_SEARCH_LIMIT,
        )?),
        cursor: a.cursor,
    };
    let page = st
        .store
        .query_events(&caller.project, params.to_query()?)
        .await?;
    let events: Vec<EventOut> = page.events.into_iter().map(EventOut::from).collect();
    Ok(json!({
        "events": to_value(&events)?,
        "total": page.total.unwrap_or(0),
        "total_capped": page.total_capped,
        "next_cursor": page.next_cursor.map(|c| c.encode()),
    }))
}

fn counters(c: &SessionCounters) -> Value {
    json!({
        "events": c.events,
        "tool_calls": c.tool_calls,
        "errors": c.errors,
        "llm_calls": c.llm_calls,
        "input_tokens": c.input_tokens,
        "output_tokens": c.output_tokens,
        "cost_usd": c.cost_usd,
    })
}

async fn timeline(parts: &Parts, a: SessionTimeline) -> Result<Value, ApiError> {
    let (st, caller) = context(parts)?;
    let id = session_id(a.session_id)?;
    let limit = bounded_limit(a.limit, DEFAULT_TIMELINE_LIMIT, MAX_TIMELINE_LIMIT)?;
    let after = a.after_seq.unwrap_or(0);
    let session = st
        .store
        .get_session(&caller.project, id.as_str())
        .await?
        .ok_or(ApiError::NotFound("session not found"))?;
    let events = st
        .store
        .session_events(&caller.project, id.as_str(), after, limit)
        .await?;
    let head = session.head_seq;
    let last = events.last().map(|e| e.seq);
    let has_more = last.is_some_and(|s| s < head);
    let counters = counters(&session.counters);
    let mut session = to_value(&SessionOut::from(session))?;
    if let Some(s) = session.as_object_mut() {
        s.insert("counters".into(), counters);
    }
    let events: Vec<EventOut> = events.into_iter().map(EventOut::from).collect();
    Ok(json!({
        "session": session,
        "events": to_value(&events)?,
        "has_more": has_more,
        "next_after_seq": if has_more { last } else { None },
    }))
}

async fn verify(parts: &Parts, a: VerifySession) -> Result<Value, ApiError> {
    let (st, caller) = context(parts)?;
    let id = session_id(a.session_id)?;
    let report = verify_session(st.store.as_ref(), &caller.project, id.as_str())
        .await?
        .ok_or(ApiError::NotFound("session not found"))?;
    to_value(&VerifyOut::from(report))
}

async fn check(parts: &Parts, a: CheckPolicy) -> Result<Value, ApiError> {
    let (st, caller) = context(parts)?;
    short("tool", a.tool.as_ref(), MAX_TOOL_CHARS)?;
    let kind = match &a.kind {
        Some(k) => field("kind", k.parse::<Kind>())?,
        None => Kind::ToolCall,
    };
    let raw = |name: &str, m: Option<Map<String, Value>>| {
        m.map(|m| {
            serde_json::value::to_raw_value(&m)
                .map_err(|e| ApiError::from(InputError::invalid(name, format!("{name}: {e}"))))
        })
        .transpose()
    };
    let p = Proposed {
        session_id: session_id(a.session_id)?,
        agent_id: field("agent_id", AgentId::parse(a.agent_id))?,
        kind,
        tool: a.tool,
        arguments: raw("arguments", a.arguments)?,
        extra: raw("payload", a.payload)?,
        dialect: Dialect::Native,
    };
    let v = super::check::judge(st, caller, p).await?;
    Ok(json!({
        "allowed": v.allowed(),
        "decision": v.decision.as_str(),
        "policies": v.policies,
        "reasons": v.reasons,
        "findings": to_value(&v.findings)?,
        "recorded": false,
    }))
}
