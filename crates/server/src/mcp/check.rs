//! `check_policy` without recording: judge a proposed action as
//! `POST /api/v1/check` would (the same proposal event, detectors, the
//! project's policy set, in check mode, against the session's state) but
//! append nothing and move no state.
//!
//! Why not the check route's pipeline: that records the check in the
//! session's chain, and an MCP client asking "may I?" must leave no trace in
//! the ledger it is reading. The session's state is the fold of its
//! committed events, rebuilt on the read path as the pipeline rebuilds a
//! state the store does not keep ([`judge::rebuild`]); a request still in
//! the writer's queue is not in it, so two callers racing on one session may
//! be answered before the other's events commit: the recorded check and the
//! event itself are judged again, in commit order, when they are appended.

use serde_json::{Map, Value, json};

use agentledger_core::verdict::Verdict;
use agentledger_core::{AgentId, Dialect, Kind};
use agentledger_dialects::InputError;
use agentledger_dialects::common::field;
use agentledger_policy::Engine;

use super::args::{CheckPolicy, MAX_TOOL_CHARS, session_id, short};
use super::read::to_value;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::ingest::check::{Proposed, proposal};
use crate::ingest::judge;
use crate::state::AppState;

/// The verdict a proposed action would get now.
pub async fn judge(st: &AppState, caller: &Caller, p: Proposed) -> Result<Verdict, ApiError> {
    let engine: &Engine = st.policy.as_deref().ok_or(ApiError::Conflict(
        "the policy engine is off (--no-policy): there is nothing to check against".into(),
    ))?;
    let session = p.session_id.as_str().to_owned();
    let mut ev = proposal(p)?;
    let scanned = engine.scan(caller.project.id.0, &ev, true);
    let (_, mut state) = judge::rebuild(st.store.as_ref(), &caller.project, &session).await?;
    Ok(engine.decide(&mut ev, scanned, &mut state))
}

/// The `check_policy` tool: its arguments as the check route's proposal,
/// judged by [`judge`].
pub async fn check_policy(
    st: &AppState,
    caller: &Caller,
    a: CheckPolicy,
) -> Result<Value, ApiError> {
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
    let v = judge(st, caller, p).await?;
    Ok(json!({
        "allowed": v.allowed(),
        "decision": v.decision.as_str(),
        "policies": v.policies,
        "reasons": v.reasons,
        "findings": to_value(&v.findings)?,
        "recorded": false,
    }))
}
