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
use rmcp::{ServerHandler, tool, tool_handler, tool_router};
use serde_json::Value;

use super::args::{
    CheckPolicy, ListOpenAlerts, SearchEvents, SessionTimeline, VerifySession, parse, schema,
};
use super::{check, read};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::state::AppState;

/// The agentledger MCP server's tools.
#[derive(Debug, Clone, Copy)]
pub struct LedgerTools;

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
        answer(
            async {
                let (st, caller) = context(&parts)?;
                read::search(st, caller, parse::<SearchEvents>(args)?).await
            }
            .await,
        )
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
        answer(
            async {
                let (st, caller) = context(&parts)?;
                read::timeline(st, caller, parse::<SessionTimeline>(args)?).await
            }
            .await,
        )
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
        answer(
            async {
                let (st, caller) = context(&parts)?;
                read::verify(st, caller, parse::<VerifySession>(args)?).await
            }
            .await,
        )
    }

    /// The project's open alerts.
    #[tool(
        description = "List this project's open alerts, newest first: alerts fired by rules on \
            policy decisions (deny, flag), detector findings or event kinds, and threshold alerts \
            not yet resolved. Answers {alerts}; each has its id, rule_name, message, session_id, \
            event_id (the event that fired it), subject, value, threshold and created_at.",
        input_schema = schema::<ListOpenAlerts>(),
        annotations(
            title = "List open alerts",
            read_only_hint = true,
            open_world_hint = false
        )
    )]
    async fn list_open_alerts(
        &self,
        Extension(parts): Extension<Parts>,
        args: JsonObject,
    ) -> CallToolResult {
        answer(
            async {
                let (st, caller) = context(&parts)?;
                read::open_alerts(st, caller, parse::<ListOpenAlerts>(args)?).await
            }
            .await,
        )
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
        answer(
            async {
                let (st, caller) = context(&parts)?;
                check::check_policy(st, caller, parse::<CheckPolicy>(args)?).await
            }
            .await,
        )
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
                 list open alerts, and ask the policy checkpoint before acting. Every tool sees only the project \
                 of the API key this connection uses.",
            )
    }
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
