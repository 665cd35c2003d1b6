//! The policy checkpoint on the HTTP edge: every event is judged before it is
//! stored; action checks answer before the agent acts; admins list and
//! replace the policy set.

use std::collections::HashMap;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use utoipa::ToSchema;

use agentledger_core::verdict::{Decision, Finding, Verdict};
use agentledger_core::{AgentId, Dialect, Kind, NewEvent, SessionId, Severity};
use agentledger_dialects::InputError;
use agentledger_dialects::common::{field, optional_object};
use agentledger_dialects::error::parse_json;
use agentledger_dialects::native::ErrorBody;
use agentledger_policy::engine::SessionHandle;
use agentledger_policy::state::CHECK_SOURCE_TYPE;
use agentledger_policy::{PolicyError, PolicyInfo, SessionState, Source};
use agentledger_store::ProjectRef;

use super::shared::{append_judged, counted};
use crate::auth::Caller;
use crate::body::JsonBytes;
use crate::error::ApiError;
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/policies", get(list).put(replace).delete(clear))
        .route("/api/v1/check", post(check))
}

/// Batches up to this size are judged on the request's own task.
const INLINE_JUDGE: usize = 16;

/// Events read per page when a session's state is rebuilt from the ledger.
const REBUILD_PAGE: u32 = 1000;

/// The engine's state for a session, rebuilt from the ledger on first use
/// (after a restart, or once evicted from the cache).
async fn session_state(
    st: &AppState,
    project: &ProjectRef,
    session: &str,
) -> Result<Option<SessionHandle>, ApiError> {
    let Some(engine) = &st.policy else {
        return Ok(None);
    };
    if let Some(h) = engine.session(project.id.0, session) {
        return Ok(Some(h));
    }
    let mut state = SessionState::default();
    let mut after = 0;
    loop {
        let page = st
            .store
            .session_events(project, session, after, REBUILD_PAGE)
            .await?;
        for ev in &page {
            state.apply_stored(ev);
        }
        match page.last() {
            Some(last) if page.len() == REBUILD_PAGE as usize => after = last.seq,
            _ => break,
        }
    }
    Ok(Some(engine.install(project.id.0, session, state)))
}

/// Judge events in order (attaching verdicts, redacting if configured); their
/// verdicts. Without a policy engine, nothing is attached and none returned.
pub async fn judge(
    st: &AppState,
    caller: &Caller,
    events: &mut Vec<NewEvent>,
    check: bool,
) -> Result<Vec<Verdict>, ApiError> {
    let Some(engine) = st.policy.clone() else {
        return Ok(Vec::new());
    };
    // One state handle per distinct session of the batch, one per event.
    let mut by_session: HashMap<&str, SessionHandle> = HashMap::new();
    let mut handles = Vec::with_capacity(events.len());
    for ev in events.iter() {
        let s = ev.session_id.as_str();
        let h = match by_session.get(s) {
            Some(h) => h.clone(),
            None => {
                let h = session_state(st, &caller.project, s)
                    .await?
                    .ok_or_else(|| ApiError::Internal("policy engine vanished".into()))?;
                by_session.insert(s, h.clone());
                h
            }
        };
        handles.push(h);
    }
    drop(by_session);
    // The caller's project is judged by its own set (or the operator's
    // default), never by another project's.
    let project = caller.project.id.0;
    let run = move |mut evs: Vec<NewEvent>| {
        let mut verdicts = Vec::with_capacity(evs.len());
        for (ev, h) in evs.iter_mut().zip(&handles) {
            let mut state = h.lock().unwrap_or_else(|p| p.into_inner());
            verdicts.push(engine.judge_for(project, ev, &mut state, check));
        }
        (evs, verdicts)
    };
    let evs = std::mem::take(events);
    // Detectors and Cedar are CPU work (about 15 µs an event): a few events
    // are judged in place, a batch off the async workers.
    let (evs, verdicts) = if evs.len() <= INLINE_JUDGE {
        run(evs)
    } else {
        tokio::task::spawn_blocking(move || run(evs))
            .await
            .map_err(|e| ApiError::Internal(format!("policy evaluation failed: {e}")))?
    };
    *events = evs;
    for v in &verdicts {
        st.metrics.verdict(&caller.project.name, v);
    }
    Ok(verdicts)
}

/// The policies in force for the caller's project
#[derive(Debug, Serialize, ToSchema)]
pub struct PolicyList {
    /// Where the set came from: `project` (this project's own, saved through
    /// the API), else the operator's default: `default` (built in) or `file`
    /// (`--policies`, or a server-wide set saved by an earlier version).
    pub origin: String,
    pub policies: Vec<PolicyOut>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PolicyOut {
    pub id: String,
    /// permit or forbid
    pub effect: String,
    /// allow, flag or deny
    pub decides: String,
    pub reason: Option<String>,
    pub source: String,
    /// The policy's Cedar text.
    pub text: String,
}

impl From<&PolicyInfo> for PolicyOut {
    fn from(p: &PolicyInfo) -> Self {
        PolicyOut {
            id: p.id.clone(),
            effect: p.effect.clone(),
            decides: p.decides.as_str().into(),
            reason: p.reason.clone(),
            source: p.source.clone(),
            text: p.text.clone(),
        }
    }
}

fn admin(caller: &Caller) -> Result<(), ApiError> {
    if caller.admin {
        Ok(())
    } else {
        Err(ApiError::Forbidden("policies need an admin key"))
    }
}

fn engine(st: &AppState) -> Result<&agentledger_policy::Engine, ApiError> {
    st.policy.as_deref().ok_or(ApiError::Conflict(
        "the policy engine is off (--no-policy)".into(),
    ))
}

fn listing(st: &AppState, project: &ProjectRef) -> Result<PolicyList, ApiError> {
    let (c, own) = engine(st)?.current_for(project.id.0);
    Ok(PolicyList {
        origin: if own {
            "project"
        } else {
            c.sources
                .first()
                .map_or("default", |s| match s.name.as_str() {
                    "default" => "default",
                    _ => "file",
                })
        }
        .into(),
        policies: c.info.iter().map(PolicyOut::from).collect(),
    })
}

/// List the policies in force for this project
///
/// The project's own set, or the operator's default where it has none.
/// Needs an admin key of the project.
#[utoipa::path(get, path = "/api/v1/policies", tag = "policy",
    responses((status = 200, body = PolicyList), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 409, body = ErrorBody, description = "Policy engine off")),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn list(
    State(st): State<AppState>,
    caller: Caller,
) -> Result<Json<PolicyList>, ApiError> {
    admin(&caller)?;
    Ok(Json(listing(&st, &caller.project)?))
}

/// `PUT /api/v1/policies`
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplaceRequest {
    /// The whole new policy set, in Cedar.
    pub policies: String,
}

/// The largest policy text accepted.
const MAX_POLICY_BYTES: usize = 1024 * 1024;

/// Replace this project's policy set
///
/// Validated against the shipped Cedar schema as a whole: if any policy fails
/// to parse or validate, the answer names its line and reason and the set in
/// force stays. Otherwise the new set takes effect atomically for this
/// project only (other projects keep theirs, or the operator's default) and
/// is saved, so it survives a restart.
#[utoipa::path(put, path = "/api/v1/policies", tag = "policy", request_body = ReplaceRequest,
    responses((status = 200, body = PolicyList),
        (status = 400, body = ErrorBody, description = "A policy does not parse or validate: details.line"),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn replace(
    State(st): State<AppState>,
    caller: Caller,
    JsonBytes(body): JsonBytes,
) -> Result<Json<PolicyList>, ApiError> {
    admin(&caller)?;
    let req: ReplaceRequest = parse_json(&body)?;
    if req.policies.len() > MAX_POLICY_BYTES {
        return Err(InputError::too_large("policies", "policy text", MAX_POLICY_BYTES).into());
    }
    let sources = vec![Source {
        name: "api".into(),
        text: req.policies,
    }];
    let engine = engine(&st)?;
    // Validate before saving; save before it takes effect, so what judges
    // events is always what a restart would load.
    agentledger_policy::engine::compile(sources.clone(), engine.schema()).map_err(policy_error)?;
    st.store
        .save_policy_set(&caller.project, Some(serialise(&sources)))
        .await?;
    engine
        .replace_for(caller.project.id.0, sources)
        .map_err(policy_error)?;
    tracing::info!(key = %caller.key_id, project = %caller.project.name, "policy set replaced through the API");
    Ok(Json(listing(&st, &caller.project)?))
}

/// Drop this project's policy set
///
/// The operator's default set judges the project again. Needs an admin key
/// of the project.
#[utoipa::path(delete, path = "/api/v1/policies", tag = "policy",
    responses((status = 200, body = PolicyList),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn clear(
    State(st): State<AppState>,
    caller: Caller,
) -> Result<Json<PolicyList>, ApiError> {
    admin(&caller)?;
    let engine = engine(&st)?;
    st.store.save_policy_set(&caller.project, None).await?;
    engine.clear_for(caller.project.id.0);
    tracing::info!(key = %caller.key_id, project = %caller.project.name, "project policy set dropped");
    Ok(Json(listing(&st, &caller.project)?))
}

/// A refused policy set as a 400 naming the line.
pub fn policy_error(e: PolicyError) -> ApiError {
    match e {
        PolicyError::Invalid {
            file,
            line,
            message,
        } => InputError::invalid("policies", format!("{file}:{line}: {message}"))
            .with_code("INVALID_POLICY")
            .with_detail("line", line.to_string())
            .into(),
        PolicyError::Io(m) => ApiError::Internal(m),
    }
}

/// Policy sources as saved in the database.
pub fn serialise(sources: &[Source]) -> String {
    let v: Vec<serde_json::Value> = sources
        .iter()
        .map(|s| serde_json::json!({"name": s.name, "text": s.text}))
        .collect();
    serde_json::Value::Array(v).to_string()
}

pub fn deserialise(text: &str) -> Option<Vec<Source>> {
    #[derive(Deserialize)]
    struct S {
        name: String,
        text: String,
    }
    let v: Vec<S> = serde_json::from_str(text).ok()?;
    Some(
        v.into_iter()
            .map(|s| Source {
                name: s.name,
                text: s.text,
            })
            .collect(),
    )
}

/// `POST /api/v1/check`: an action the agent proposes.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckRequest {
    pub session_id: String,
    pub agent_id: String,
    /// The kind of event the action would be (default tool_call).
    pub kind: Option<String>,
    /// The tool (or, for other kinds, the resource) it targets.
    pub tool: Option<String>,
    /// The arguments it would be called with.
    #[schema(value_type = Option<Object>)]
    pub arguments: Option<Box<RawValue>>,
    /// More payload fields (e.g. `model`), merged under the tool and arguments.
    #[schema(value_type = Option<Object>)]
    pub payload: Option<Box<RawValue>>,
}

/// The answer to an action check.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CheckResponse {
    /// false only when the decision is deny.
    pub allowed: bool,
    /// allow, flag or deny
    pub decision: String,
    pub policies: Vec<String>,
    pub reasons: Vec<String>,
    #[schema(value_type = Vec<Object>)]
    pub findings: Vec<Finding>,
    /// The check as recorded in the session's chain.
    pub event_id: String,
    pub seq: u64,
}

/// A proposed action, judged as the event it would be, and the recorded check.
pub struct Proposed {
    pub session_id: SessionId,
    pub agent_id: AgentId,
    pub kind: Kind,
    pub tool: Option<String>,
    pub arguments: Option<Box<RawValue>>,
    pub extra: Option<Box<RawValue>>,
    pub dialect: Dialect,
}

/// Judge a proposed action before it runs, record the check in the session's
/// chain (kind `decision`, source type `action_check`, with the verdict), and
/// answer.
pub async fn run_check(
    st: &AppState,
    caller: &Caller,
    p: Proposed,
) -> Result<CheckResponse, ApiError> {
    engine(st)?;
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
    let proposed = NewEvent {
        session_id: p.session_id.clone(),
        agent_id: p.agent_id.clone(),
        kind: p.kind,
        source_type: p.kind.as_str().into(),
        dialect: p.dialect,
        severity: Severity::Info,
        client_ts: None,
        payload: RawValue::from_string(text).map_err(|e| ApiError::Internal(e.to_string()))?,
        metadata: agentledger_core::event::empty_object(),
        judgement: None,
    };
    let mut one = vec![proposed];
    let verdict = judge(st, caller, &mut one, true)
        .await?
        .pop()
        .ok_or_else(|| ApiError::Internal("no verdict".into()))?;
    let judged = one
        .pop()
        .ok_or_else(|| ApiError::Internal("no event".into()))?;
    // The recorded check: what was proposed (as stored, redacted if so
    // configured) and the verdict, which the envelope covers.
    let record_payload = format!(
        r#"{{"check":{{"kind":{},"payload":{}}},"allowed":{}}}"#,
        serde_json::Value::from(p.kind.as_str()),
        judged.payload.get(),
        verdict.allowed()
    );
    let record = NewEvent {
        kind: Kind::Decision,
        source_type: CHECK_SOURCE_TYPE.into(),
        severity: if verdict.decision == Decision::Deny {
            Severity::Warn
        } else {
            Severity::Info
        },
        payload: RawValue::from_string(record_payload)
            .map_err(|e| ApiError::Internal(e.to_string()))?,
        ..judged
    };
    let out = append_judged(st, caller, p.dialect, vec![record]).await?;
    let a = out
        .first()
        .ok_or_else(|| ApiError::Internal("append returned no event".into()))?;
    Ok(CheckResponse {
        allowed: verdict.allowed(),
        decision: verdict.decision.as_str().into(),
        policies: verdict.policies,
        reasons: verdict.reasons,
        findings: verdict.findings,
        event_id: a.id.to_string(),
        seq: a.seq,
    })
}

/// Check an action before running it
///
/// Judges the proposed action (kind, tool, arguments) against the policies
/// and the session so far, records the check in the session's chain, and
/// answers in the same request. A check does not count as a tool call in the
/// session's state, but what its arguments reveal (a secret, say) does.
#[utoipa::path(post, path = "/api/v1/check", tag = "policy", request_body = CheckRequest,
    responses((status = 200, body = CheckResponse), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 409, body = ErrorBody, description = "Policy engine off"),
        (status = 503, body = ErrorBody)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn check(
    State(st): State<AppState>,
    caller: Caller,
    JsonBytes(body): JsonBytes,
) -> Result<(StatusCode, Json<CheckResponse>), ApiError> {
    let r = async {
        let req: CheckRequest = parse_json(&body)?;
        let kind = match &req.kind {
            Some(k) => field("kind", k.parse::<Kind>())?,
            None => Kind::ToolCall,
        };
        if let Some(a) = &req.arguments {
            optional_object("arguments", Some(a))?;
        }
        let p = Proposed {
            session_id: field("session_id", SessionId::parse(req.session_id))?,
            agent_id: field("agent_id", AgentId::parse(req.agent_id))?,
            kind,
            tool: req.tool,
            arguments: req.arguments,
            extra: match &req.payload {
                Some(x) => Some(optional_object("payload", Some(x))?),
                None => None,
            },
            dialect: Dialect::Native,
        };
        run_check(&st, &caller, p).await
    }
    .await;
    counted(&st, Dialect::Native, r).map(|c| (StatusCode::OK, Json(c)))
}
