//! Fabraix: `/v1/register-agent-run`, `/v1/event` and `/v1/check-action`.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::post;
use axum::{Extension, Router};
use tokio::sync::Semaphore;

use agentledger_core::{Dialect, SessionId};
use agentledger_dialects::fabraix::{self, EventResponse, FabraixEvent, RegisterResponse};
use agentledger_dialects::native::ErrorBody;
use agentledger_store::NewSession;

use crate::auth::Caller;
use crate::body::JsonBytes;
use crate::error::ApiError;
use crate::ingest::{Done, Idempotency, Submission, check, internal_reply, json_reply, submit};
use crate::state::AppState;

/// Schema validations run off the async workers at once, at most. Each is
/// bounded in work (see `fabraix::cost`) but may still take a second of CPU;
/// two leave the workers, the writer and the other cores their share.
const VALIDATION_SLOTS: usize = 2;
/// How long an event waits for a validation slot before 503 (`Retry-After`).
const VALIDATION_WAIT: Duration = Duration::from_secs(1);

/// The Fabraix router's own slots for expensive validations (one set per
/// server: the router is built once per application).
#[derive(Clone)]
pub struct ValidationSlots(Arc<Semaphore>);

pub fn router() -> Router<AppState> {
    let r = Router::new()
        .route("/v1/register-agent-run", post(register))
        .route("/v1/event", post(event))
        .route("/v1/check-action", post(check_action))
        .layer(Extension(ValidationSlots(Arc::new(Semaphore::new(
            VALIDATION_SLOTS,
        )))));
    crate::ingest::ingest_routes(Dialect::Fabraix, r)
}

/// Register an agent run
///
/// Creates the run's session and chains a `session_started` event holding
/// the registration (agent, timestamp, system prompt) as received.
#[utoipa::path(post, path = "/v1/register-agent-run", tag = "fabraix",
    request_body = fabraix::RegisterRequest,
    responses((status = 200, body = RegisterResponse),
        (status = 400, body = ErrorBody, description = "INVALID_AGENT_ID, or a missing/invalid field"),
        (status = 401, body = ErrorBody), (status = 413, body = ErrorBody), (status = 415, body = ErrorBody),
        (status = 503, body = ErrorBody)),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn register(
    State(st): State<AppState>,
    caller: Caller,
    idem: Idempotency,
    JsonBytes(body): JsonBytes,
) -> Result<Response, ApiError> {
    let reg = fabraix::parse_register(&body)?;
    let sub = Submission {
        session: Some(NewSession {
            id: reg.session_id,
            agent_id: reg.agent_id,
            system_prompt: Some(reg.system_prompt),
            metadata: agentledger_core::event::empty_object(),
        }),
        ..Submission::events(Dialect::Fabraix, vec![reg.opening], idem.key_for(&body))
    };
    submit(
        &st,
        &caller,
        sub,
        std::sync::Arc::new(|d: &Done<'_>| match d.session {
            Some(s) => json_reply(
                StatusCode::OK,
                &RegisterResponse {
                    trace_id: s.id.clone(),
                    timestamp: s.created_at.to_rfc3339_millis(),
                },
            ),
            None => internal_reply(),
        }),
    )
    .await
}

/// Log an event of a run
///
/// `content` is validated against `schema` before anything is stored. The
/// run is looked up before the schema is compiled; what compiling and
/// validating may cost is measured first and refused over budget (413).
#[utoipa::path(post, path = "/v1/event", tag = "fabraix",
    request_body = fabraix::EventRequest,
    responses((status = 200, body = EventResponse),
        (status = 400, body = ErrorBody, description = "SCHEMA_MISMATCH (details.path, details.missing_field), INVALID_CONTENT, INVALID_SCHEMA (including repeated member names), INVALID_EVENT_TYPE"),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody, description = "Unknown trace_id"),
        (status = 413, body = ErrorBody, description = "content over 1 MiB or schema over 64 KiB; or (details.path `schema`) a schema over the validation budget: more than 32 distinct regular expressions, a compiled form over 48 MiB, or more keyword evaluations or string scans for this content than allowed"),
        (status = 415, body = ErrorBody),
        (status = 503, body = ErrorBody, description = "Busy (Retry-After): the ledger, or every schema validation slot for over a second")),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn event(
    State(st): State<AppState>,
    Extension(slots): Extension<ValidationSlots>,
    caller: Caller,
    idem: Idempotency,
    JsonBytes(body): JsonBytes,
) -> Result<Response, ApiError> {
    let ev = fabraix::read_event(&body, &st.schemas)?;
    let unknown = ApiError::NotFound("trace_id not found: register the run first");
    let session_id = SessionId::parse(ev.trace_id.as_str()).map_err(|_| unknown)?;
    let session = st
        .store
        .get_session(&caller.project, session_id.as_str())
        .await?
        .ok_or(ApiError::NotFound(
            "trace_id not found: register the run first",
        ))?;
    let agent = agentledger_core::AgentId::parse(session.agent_id)
        .map_err(|e| ApiError::Internal(format!("stored agent id is invalid: {e}")))?;
    let ev = validate(&st, &slots, ev).await?;
    let sub = Submission::events(
        Dialect::Fabraix,
        vec![ev.into_new_event(session_id, agent)],
        idem.key_for(&body),
    );
    submit(
        &st,
        &caller,
        sub,
        std::sync::Arc::new(|d: &Done<'_>| match d.appended.first() {
            Some(a) => json_reply(
                StatusCode::OK,
                &EventResponse {
                    event_id: a.id.to_uuid_string(),
                    timestamp: a.server_ts.as_unix_seconds_f64(),
                },
            ),
            None => internal_reply(),
        }),
    )
    .await
}

/// Validate an event's content against its schema, within the budget its
/// plan measures. Cheap validations (a cached validator, little work) run in
/// place; the rest (measuring and compiling a new schema, large contents,
/// costly schemas) run on the blocking pool in one of the validation slots,
/// so that no schema holds an async worker.
async fn validate(
    st: &AppState,
    slots: &ValidationSlots,
    ev: FabraixEvent,
) -> Result<FabraixEvent, ApiError> {
    let cached = ev.plan_if_cached(&st.schemas)?;
    if let Some(plan) = &cached
        && ev.is_light(plan)
    {
        ev.validate(plan, &st.schemas)?;
        return Ok(ev);
    }
    let slot = tokio::time::timeout(VALIDATION_WAIT, slots.0.clone().acquire_owned())
        .await
        .map_err(|_| ApiError::Overloaded)?
        .map_err(|_| ApiError::Internal("validation slots closed".into()))?;
    let schemas = st.schemas.clone();
    tokio::task::spawn_blocking(move || {
        // Held until the work ends, even if the client has gone: the slots
        // count the threads actually validating.
        let _slot = slot;
        let plan = match cached {
            Some(plan) => plan,
            None => ev.plan(&schemas)?,
        };
        ev.validate(&plan, &schemas).map(|()| ev)
    })
    .await
    .map_err(|e| ApiError::Internal(format!("schema validation failed: {e}")))?
    .map_err(ApiError::from)
}

/// `POST /v1/check-action`: an action a registered run proposes.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckActionRequest {
    /// The run, as `register-agent-run` returned it.
    pub trace_id: String,
    /// A Fabraix event type (default `tool`).
    pub action_type: Option<String>,
    /// The tool the action would call.
    pub tool_name: Option<String>,
    /// Its arguments.
    #[schema(value_type = Option<Object>)]
    pub arguments: Option<Box<serde_json::value::RawValue>>,
}

/// The verdict on a proposed action.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct CheckActionResponse {
    /// false only when the decision is deny: do not run the action.
    pub allowed: bool,
    /// allow, flag or deny
    pub decision: String,
    pub policies: Vec<String>,
    pub reasons: Vec<String>,
    #[schema(value_type = Vec<Object>)]
    pub findings: Vec<agentledger_core::verdict::Finding>,
    /// The recorded check, as a UUID like every Fabraix event id.
    pub event_id: String,
    pub trace_id: String,
}

/// Check an action before running it
///
/// Judges the proposed action against the policies and the run so far,
/// records the check in the run's chain, and answers in the same request.
#[utoipa::path(post, path = "/v1/check-action", tag = "fabraix",
    request_body = CheckActionRequest,
    responses((status = 200, body = CheckActionResponse),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "Unknown trace_id"),
        (status = 409, body = ErrorBody, description = "Policy engine off"),
        (status = 415, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn check_action(
    State(st): State<AppState>,
    caller: Caller,
    idem: Idempotency,
    JsonBytes(body): JsonBytes,
) -> Result<Response, ApiError> {
    {
        let req: CheckActionRequest = agentledger_dialects::error::parse_json(&body)?;
        let kind = match req.action_type.as_deref() {
            None => agentledger_core::Kind::ToolCall,
            Some(t) => fabraix::kind_of(t).ok_or_else(|| {
                agentledger_dialects::InputError::invalid(
                    "action_type",
                    format!("action_type: unknown event type {t:?}"),
                )
                .with_code("INVALID_EVENT_TYPE")
            })?,
        };
        if let Some(a) = &req.arguments {
            agentledger_dialects::common::optional_object("arguments", Some(a))?;
        }
        let unknown = || ApiError::NotFound("trace_id not found: register the run first");
        let session_id = SessionId::parse(req.trace_id.as_str()).map_err(|_| unknown())?;
        let session = st
            .store
            .get_session(&caller.project, session_id.as_str())
            .await?
            .ok_or_else(unknown)?;
        let agent = agentledger_core::AgentId::parse(session.agent_id)
            .map_err(|e| ApiError::Internal(format!("stored agent id is invalid: {e}")))?;
        let proposed = check::Proposed {
            session_id,
            agent_id: agent,
            kind,
            tool: req.tool_name,
            arguments: req.arguments,
            extra: None,
            dialect: Dialect::Fabraix,
        };
        let trace_id = req.trace_id;
        super::policy::submit_check(
            &st,
            &caller,
            proposed,
            idem.key_for(&body),
            std::sync::Arc::new(move |d: &Done<'_>| {
                match (d.verdicts.first(), d.appended.first()) {
                    (Some(v), Some(a)) => json_reply(
                        StatusCode::OK,
                        &CheckActionResponse {
                            allowed: v.allowed(),
                            decision: v.decision.as_str().into(),
                            policies: v.policies.clone(),
                            reasons: v.reasons.clone(),
                            findings: v.findings.clone(),
                            event_id: a.id.to_uuid_string(),
                            trace_id: trace_id.clone(),
                        },
                    ),
                    _ => internal_reply(),
                }
            }),
        )
        .await
    }
}
