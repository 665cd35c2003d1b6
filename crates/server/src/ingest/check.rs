//! Action checks: an agent proposes an action before running it; the
//! pipeline judges the proposal as the event it would be ([`proposal`]) and
//! records the check in the session's chain ([`record`]): kind `decision`,
//! source type `action_check`, the proposal as stored (redacted if so
//! configured) and whether it was allowed, with the verdict hashed in its
//! envelope. A check does not count as a call in the session's state, but
//! what its arguments reveal (a secret, say) does.

use serde_json::value::RawValue;

use agentledger_core::verdict::{Decision, Verdict};
use agentledger_core::{AgentId, Dialect, Kind, NewEvent, SessionId, Severity};
use agentledger_dialects::InputError;
use agentledger_policy::state::CHECK_SOURCE_TYPE;

use crate::error::ApiError;

/// A proposed action, as a route parsed it.
pub struct Proposed {
    pub session_id: SessionId,
    pub agent_id: AgentId,
    pub kind: Kind,
    pub tool: Option<String>,
    pub arguments: Option<Box<RawValue>>,
    /// More payload members (e.g. `model`), under the tool and arguments.
    pub extra: Option<Box<RawValue>>,
    pub dialect: Dialect,
}

/// The event the action would be, to be judged.
pub fn proposal(p: Proposed) -> Result<NewEvent, ApiError> {
    let mut payload = serde_json::Map::new();
    if let Some(extra) = &p.extra {
        let v: serde_json::Value = serde_json::from_str(extra.get())
            .map_err(|e| ApiError::Input(InputError::invalid("payload", e.to_string())))?;
        if let serde_json::Value::Object(m) = v {
            payload.extend(m);
        }
    }
    if let Some(t) = &p.tool {
        payload.insert("toolName".into(), t.clone().into());
    }
    if let Some(a) = &p.arguments {
        let v: serde_json::Value = serde_json::from_str(a.get())
            .map_err(|e| ApiError::Input(InputError::invalid("arguments", e.to_string())))?;
        payload.insert("arguments".into(), v);
    }
    let text = serde_json::Value::Object(payload).to_string();
    if text.len() > agentledger_core::limits::MAX_PAYLOAD_BYTES {
        return Err(InputError::too_large(
            "arguments",
            "proposed action",
            agentledger_core::limits::MAX_PAYLOAD_BYTES,
        )
        .into());
    }
    Ok(NewEvent {
        session_id: p.session_id,
        agent_id: p.agent_id,
        kind: p.kind,
        source_type: p.kind.as_str().into(),
        dialect: p.dialect,
        severity: Severity::Info,
        client_ts: None,
        payload: RawValue::from_string(text).map_err(|e| ApiError::Internal(e.to_string()))?,
        metadata: agentledger_core::event::empty_object(),
        judgement: None,
    })
}

/// The recorded check for a judged proposal and its verdict.
pub fn record(mut judged: Vec<NewEvent>, verdicts: &[Verdict]) -> Result<Vec<NewEvent>, ApiError> {
    let (Some(proposal), Some(verdict), true) = (
        judged.pop(),
        verdicts.first(),
        judged.is_empty() && verdicts.len() == 1,
    ) else {
        return Err(ApiError::Internal(
            "an action check needs one judged proposal".into(),
        ));
    };
    let payload = format!(
        r#"{{"check":{{"kind":{},"payload":{}}},"allowed":{}}}"#,
        serde_json::Value::from(proposal.kind.as_str()),
        proposal.payload.get(),
        verdict.allowed()
    );
    Ok(vec![NewEvent {
        kind: Kind::Decision,
        source_type: CHECK_SOURCE_TYPE.into(),
        severity: if verdict.decision == Decision::Deny {
            Severity::Warn
        } else {
            Severity::Info
        },
        payload: RawValue::from_string(payload).map_err(|e| ApiError::Internal(e.to_string()))?,
        ..proposal
    }])
}
