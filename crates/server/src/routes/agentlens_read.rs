//! AgentLens's read API beyond events, as the `agentlensai` SDK calls it:
//! sessions, a session's timeline, agents, health, LLM analytics; and the
//! SDK's features agentledger does not have, answered 501 naming the feature
//! (after authentication, like every route), never a bare 404.

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::routing::get;

use agentledger_core::Micros;
use agentledger_core::query::EventQuery;
use agentledger_dialects::InputError;
use agentledger_dialects::agentlens::EventOut;
use agentledger_dialects::agentlens::read::{
    AgentList, AgentOut, AgentsParams, HealthOut, LlmAnalytics, LlmAnalyticsParams, LlmByModel,
    LlmByTime, LlmSummary, SessionList, SessionOut, SessionsParams, TimelineOut, TimelineParams,
};
use agentledger_dialects::native::{ErrorBody, time_param};
use agentledger_store::verify::verify_session;
use agentledger_store::{AgentSummary, LlmGroup, SessionListing};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::{PathParam, QueryParams};
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/health", get(health))
        .route("/api/sessions", get(list_sessions))
        .route("/api/sessions/{id}", get(get_session))
        .route("/api/sessions/{id}/timeline", get(timeline))
        .route("/api/agents", get(list_agents))
        .route("/api/agents/{id}", get(get_agent))
        .route("/api/analytics/llm", get(llm_analytics))
        .merge(not_implemented())
}

/// Health (AgentLens)
///
/// No key needed (the SDK calls it without one): says the server answers and
/// which version it is, nothing about any project.
#[utoipa::path(get, path = "/api/health", tag = "agentlens",
    responses((status = 200, body = HealthOut)),
    security(()))]
pub async fn health() -> Json<HealthOut> {
    Json(HealthOut {
        status: "ok".into(),
        version: env!("CARGO_PKG_VERSION").into(),
    })
}

/// List sessions
///
/// Newest first, with each session's running totals.
#[utoipa::path(get, path = "/api/sessions", tag = "agentlens", params(SessionsParams),
    responses((status = 200, body = SessionList), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn list_sessions(
    State(st): State<AppState>,
    caller: Caller,
    QueryParams(p): QueryParams<SessionsParams>,
) -> Result<Json<SessionList>, ApiError> {
    let req = p.to_request()?;
    if req.matches_nothing {
        return Ok(Json(SessionList {
            sessions: Vec::new(),
            total: 0,
            has_more: false,
        }));
    }
    let offset = req.offset;
    let page = st
        .store
        .list_sessions_at(
            &caller.project,
            SessionListing {
                query: req.query,
                offset,
                any_tags: req.tags,
            },
        )
        .await?;
    Ok(Json(SessionList {
        has_more: page.next_cursor.is_some(),
        total: page.total,
        sessions: page.sessions.into_iter().map(SessionOut::from).collect(),
    }))
}

/// Get a session
///
/// Its totals are kept as events are appended: answering never counts events.
#[utoipa::path(get, path = "/api/sessions/{id}", tag = "agentlens",
    params(("id" = String, Path, description = "Session id")),
    responses((status = 200, body = SessionOut), (status = 404, body = ErrorBody), (status = 401, body = ErrorBody)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn get_session(
    State(st): State<AppState>,
    caller: Caller,
    PathParam(id): PathParam<String>,
) -> Result<Json<SessionOut>, ApiError> {
    let s = st
        .store
        .get_session(&caller.project, &id)
        .await?
        .ok_or(ApiError::NotFound("session not found"))?;
    Ok(Json(s.into()))
}

/// A session's timeline
///
/// Its events in chain order (a page of at most 1,000; `offset` for more) and
/// `chainValid`, the verdict of verifying the whole chain as stored (as
/// `GET /api/v1/sessions/{id}/verify` does).
#[utoipa::path(get, path = "/api/sessions/{id}/timeline", tag = "agentlens",
    params(("id" = String, Path, description = "Session id"), TimelineParams),
    responses((status = 200, body = TimelineOut), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 401, body = ErrorBody)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn timeline(
    State(st): State<AppState>,
    caller: Caller,
    PathParam(id): PathParam<String>,
    QueryParams(p): QueryParams<TimelineParams>,
) -> Result<Json<TimelineOut>, ApiError> {
    let (limit, offset) = p.page()?;
    let session = st
        .store
        .get_session(&caller.project, &id)
        .await?
        .ok_or(ApiError::NotFound("session not found"))?;
    // Verified after the page is read: events appended in between are
    // covered by the verdict too, never the other way round.
    let events = st
        .store
        .session_events(&caller.project, &id, offset, limit)
        .await?;
    let report = verify_session(st.store.as_ref(), &caller.project, &id)
        .await?
        .ok_or(ApiError::NotFound("session not found"))?;
    let total = session.head_seq;
    let has_more = events.last().is_some_and(|e| e.seq < total);
    Ok(Json(TimelineOut {
        events: events.into_iter().map(EventOut::from).collect(),
        chain_valid: report.valid,
        total,
        has_more,
    }))
}

fn agent_out(a: AgentSummary, project: &str) -> AgentOut {
    AgentOut {
        name: a.id.clone(),
        id: a.id,
        first_seen_at: a.first_seen_at.to_rfc3339_millis(),
        last_seen_at: a.last_seen_at.to_rfc3339_millis(),
        session_count: a.session_count,
        tenant_id: project.to_owned(),
    }
}

/// List agents
///
/// Every agent id the project's sessions name, by id.
#[utoipa::path(get, path = "/api/agents", tag = "agentlens", params(AgentsParams),
    responses((status = 200, body = AgentList), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn list_agents(
    State(st): State<AppState>,
    caller: Caller,
    QueryParams(p): QueryParams<AgentsParams>,
) -> Result<Json<AgentList>, ApiError> {
    let (limit, offset) = p.page()?;
    let page = st
        .store
        .list_agents(&caller.project, None, limit, offset)
        .await?;
    let has_more = offset + (page.agents.len() as u64) < page.total;
    Ok(Json(AgentList {
        agents: page
            .agents
            .into_iter()
            .map(|a| agent_out(a, &caller.project.name))
            .collect(),
        total: page.total,
        has_more,
    }))
}

/// Get an agent
///
/// When it was first and last seen and how many sessions it has, from its
/// sessions; `tenantId` is the caller's project.
#[utoipa::path(get, path = "/api/agents/{id}", tag = "agentlens",
    params(("id" = String, Path, description = "Agent id")),
    responses((status = 200, body = AgentOut), (status = 404, body = ErrorBody), (status = 401, body = ErrorBody)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn get_agent(
    State(st): State<AppState>,
    caller: Caller,
    PathParam(id): PathParam<String>,
) -> Result<Json<AgentOut>, ApiError> {
    let page = st
        .store
        .list_agents(&caller.project, Some(id), 1, 0)
        .await?;
    let a = page
        .agents
        .into_iter()
        .next()
        .ok_or(ApiError::NotFound("agent not found"))?;
    Ok(Json(agent_out(a, &caller.project.name)))
}

/// LLM analytics
///
/// Calls (events of type `llm_response`: AgentLens records a call as an
/// `llm_call`/`llm_response` pair and the response carries the usage),
/// tokens and cost from the usage columns the ledger keeps for every event;
/// provider and latency from the responses' payloads. In all, by provider and
/// model, and by time bucket.
#[utoipa::path(get, path = "/api/analytics/llm", tag = "agentlens", params(LlmAnalyticsParams),
    responses((status = 200, body = LlmAnalytics), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn llm_analytics(
    State(st): State<AppState>,
    caller: Caller,
    QueryParams(p): QueryParams<LlmAnalyticsParams>,
) -> Result<Json<LlmAnalytics>, ApiError> {
    let width = p.bucket_micros()?;
    let q = EventQuery {
        agent_id: p.agent_id.clone(),
        from: time_param("from", &p.from)?,
        to: time_param("to", &p.to)?,
        model: p.model.clone(),
        ..Default::default()
    };
    let by_model = st
        .store
        .llm_usage(
            &caller.project,
            q.clone(),
            p.provider.clone(),
            LlmGroup::Model,
        )
        .await?;
    let by_time = st
        .store
        .llm_usage(
            &caller.project,
            q,
            p.provider.clone(),
            LlmGroup::Time(width),
        )
        .await?;
    // Never answer a part as if it were the whole.
    if by_model.len() > MAX_GROUPS || by_time.len() > MAX_GROUPS {
        return Err(InputError::invalid(
            "granularity",
            format!(
                "more than {MAX_GROUPS} models or time buckets: narrow the range (from, to), \
                 filter by agentId or model, or use a coarser granularity"
            ),
        )
        .into());
    }
    let mean = |sum: f64, n: u64| if n == 0 { 0.0 } else { sum / n as f64 };
    let mut summary = LlmSummary {
        total_calls: 0,
        total_cost_usd: 0.0,
        total_input_tokens: 0,
        total_output_tokens: 0,
        avg_latency_ms: 0.0,
        avg_cost_per_call: 0.0,
    };
    let (mut latency_sum, mut latency_n) = (0.0, 0);
    for r in &by_model {
        summary.total_calls += r.calls;
        summary.total_cost_usd += r.cost_usd;
        summary.total_input_tokens = summary.total_input_tokens.saturating_add(r.input_tokens);
        summary.total_output_tokens = summary.total_output_tokens.saturating_add(r.output_tokens);
        latency_sum += r.latency_ms_sum;
        latency_n += r.latency_count;
    }
    summary.avg_latency_ms = mean(latency_sum, latency_n);
    summary.avg_cost_per_call = mean(summary.total_cost_usd, summary.total_calls);
    Ok(Json(LlmAnalytics {
        summary,
        by_model: by_model
            .into_iter()
            .map(|r| LlmByModel {
                // Responses that named no provider or model are grouped under "".
                provider: r.provider.unwrap_or_default(),
                model: r.model.unwrap_or_default(),
                calls: r.calls,
                cost_usd: r.cost_usd,
                input_tokens: r.input_tokens,
                output_tokens: r.output_tokens,
                avg_latency_ms: mean(r.latency_ms_sum, r.latency_count),
            })
            .collect(),
        by_time: by_time
            .into_iter()
            .map(|r| LlmByTime {
                bucket: r.bucket.unwrap_or(Micros(0)).to_rfc3339_millis(),
                calls: r.calls,
                cost_usd: r.cost_usd,
                input_tokens: r.input_tokens,
                output_tokens: r.output_tokens,
                avg_latency_ms: mean(r.latency_ms_sum, r.latency_count),
            })
            .collect(),
    }))
}

/// Models or time buckets in one analytics answer, at most.
const MAX_GROUPS: usize = 1_000;

/// A handler per SDK route of a feature agentledger does not have: 501 with
/// the envelope naming the feature, once the key is checked (so the answer
/// says nothing to a caller without one). They are left out of the OpenAPI
/// document: it lists what serves data (its generated tenancy tests and the
/// schemathesis run in CI expect no 5xx from a documented route);
/// docs/dialects.md lists them.
macro_rules! not_implemented {
    ($name:ident, $feature:literal) => {
        async fn $name(_caller: Caller) -> ApiError {
            ApiError::NotImplemented($feature)
        }
    };
}

not_implemented!(recall, "recall");
not_implemented!(reflect, "reflect");
not_implemented!(context, "context");
not_implemented!(lessons, "lessons");
not_implemented!(guardrails, "guardrails");
not_implemented!(agent_health, "agent health scores");
not_implemented!(health_history, "health history");
not_implemented!(health_overview, "health overview");
not_implemented!(optimize, "optimization recommendations");

fn not_implemented() -> Router<AppState> {
    Router::new()
        .route("/api/recall", get(recall))
        .route("/api/reflect", get(reflect))
        .route("/api/context", get(context))
        .route("/api/lessons", get(lessons).post(lessons))
        .route(
            "/api/lessons/{id}",
            get(lessons).put(lessons).delete(lessons),
        )
        .route("/api/guardrails", get(guardrails).post(guardrails))
        .route("/api/guardrails/history", get(guardrails))
        .route(
            "/api/guardrails/{id}",
            get(guardrails).put(guardrails).delete(guardrails),
        )
        .route("/api/guardrails/{id}/status", get(guardrails))
        .route("/api/agents/{id}/health", get(agent_health))
        .route("/api/health/history", get(health_history))
        .route("/api/health/overview", get(health_overview))
        .route("/api/optimize/recommendations", get(optimize))
}
