//! The policy checkpoint on the HTTP edge: every event is judged before it is
//! stored; action checks answer before the agent acts; admins list and
//! replace the policy set.

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use utoipa::ToSchema;

use agentledger_core::verdict::Finding;
use agentledger_core::{AgentId, Dialect, Kind, SessionId};
use agentledger_dialects::InputError;
use agentledger_dialects::common::{field, optional_object};
use agentledger_dialects::error::parse_json;
use agentledger_dialects::native::ErrorBody;
use agentledger_policy::{PolicyError, PolicyInfo, Source};
use agentledger_store::ProjectRef;

use crate::auth::Caller;
use crate::body::JsonBytes;
use crate::error::ApiError;
use crate::ingest::{
    Done, Idempotency, Judge, Submission, check, internal_reply, json_reply, submit,
};
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    let r = Router::new()
        .route("/api/v1/policies", get(list).put(replace).delete(clear))
        .route("/api/v1/check", post(check));
    crate::ingest::ingest_routes(Dialect::Native, r)
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

/// Judge a proposed action and record the check, through the pipeline.
pub async fn submit_check(
    st: &AppState,
    caller: &Caller,
    p: check::Proposed,
    key: Option<agentledger_store::IdempotencyKey>,
    render: crate::ingest::Renderer,
) -> Result<Response, ApiError> {
    engine(st)?;
    let dialect = p.dialect;
    let sub = Submission {
        judge: Judge::Check,
        ..Submission::events(dialect, vec![check::proposal(p)?], key)
    };
    submit(st, caller, sub, render).await
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
    idem: Idempotency,
    JsonBytes(body): JsonBytes,
) -> Result<Response, ApiError> {
    {
        let req: CheckRequest = parse_json(&body)?;
        let kind = match &req.kind {
            Some(k) => field("kind", k.parse::<Kind>())?,
            None => Kind::ToolCall,
        };
        if let Some(a) = &req.arguments {
            optional_object("arguments", Some(a))?;
        }
        let p = check::Proposed {
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
        submit_check(
            &st,
            &caller,
            p,
            idem.key_for(&body),
            std::sync::Arc::new(
                |d: &Done<'_>| match (d.verdicts.first(), d.appended.first()) {
                    (Some(v), Some(a)) => json_reply(
                        StatusCode::OK,
                        &CheckResponse {
                            allowed: v.allowed(),
                            decision: v.decision.as_str().into(),
                            policies: v.policies.clone(),
                            reasons: v.reasons.clone(),
                            findings: v.findings.clone(),
                            event_id: a.id.to_string(),
                            seq: a.seq,
                        },
                    ),
                    _ => internal_reply(),
                },
            ),
        )
        .await
    }
}
