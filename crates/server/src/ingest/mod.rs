//! The ingest pipeline: the one path every event takes, whichever dialect
//! sent it.
//!
//! ```text
//! route: parse (dialect) ─┐                       ┌─ route: render (dialect)
//!                         ▼                       │
//!   authenticate (Caller) → validate → judge → append → answer
//! ```
//!
//! Routes only parse their vendor's bytes into a [`Submission`] and give a
//! renderer for the answer; everything between is here: the idempotency
//! key, the policy checkpoint against the session state of committed events
//! ([`judge`]: detectors here, decisions in the store's writer), the store's
//! one write path (`append_request`, which chains
//! each event with core's `chain::link`), and the metrics. Refusals are
//! counted once, by the router's observer, for every dialect alike, whether
//! an extractor (401, 408, 413, 415, 429) or the pipeline refused.

pub mod check;
pub mod idempotency;
pub mod judge;
pub mod traces;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;

use agentledger_core::verdict::Verdict;
use agentledger_core::{Dialect, NewEvent, Session};
use agentledger_policy::engine::Scanned;
use agentledger_store::{
    AppendOutcome, AppendRequest, AppendedEvent, Committed, IdempotencyKey, NewSession, Render,
    StoredReply,
};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::state::AppState;

pub use idempotency::Idempotency;

/// Batches up to this size are scanned on the request's own task.
const INLINE_JUDGE: usize = 16;

/// How the policy checkpoint treats a submission's events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Judge {
    /// Judge each event, in order, against its session so far.
    Each,
    /// The one event is an action an agent proposes: judge it as a check and
    /// record the check (see [`check`]) instead of the action.
    Check,
}

/// What a route parsed, for the pipeline.
pub struct Submission {
    pub dialect: Dialect,
    /// Create this session first (409 if it exists).
    pub session: Option<NewSession>,
    pub events: Vec<NewEvent>,
    pub judge: Judge,
    /// From the request's `Idempotency-Key` header, if it sent one.
    pub key: Option<IdempotencyKey>,
}

impl Submission {
    /// Events to judge and append, under the request's idempotency key.
    pub fn events(dialect: Dialect, events: Vec<NewEvent>, key: Option<IdempotencyKey>) -> Self {
        Submission {
            dialect,
            session: None,
            events,
            judge: Judge::Each,
            key,
        }
    }
}

/// What a committed submission gives its renderer.
pub struct Done<'a> {
    /// The events as stored (judged; redacted where configured).
    pub events: &'a [NewEvent],
    pub appended: &'a [AppendedEvent],
    pub session: Option<&'a Session>,
    /// One per judged event (none with the policy engine off).
    pub verdicts: &'a [Verdict],
}

/// A route's renderer: the answer to a committed submission. With an
/// idempotency key it runs inside the append's transaction (the answer is
/// kept with the events), so it must be quick and pure.
pub type Renderer = std::sync::Arc<dyn Fn(&Done<'_>) -> StoredReply + Send + Sync>;

/// A model name, tool name or session tag holding NUL (`\u0000` in the
/// payload's JSON) is refused, on either backend: the ledger keeps each apart
/// from the payload (the model in the event's usage columns, the tool in the
/// overview's tallies, the tags in the session row), and PostgreSQL text
/// cannot hold NUL, where SQLite stored it; a payload may hold NUL anywhere
/// else. Only a payload whose text has the escape is read again.
fn nul_in_derived(i: usize, e: &NewEvent) -> Option<agentledger_dialects::InputError> {
    let payload = e.payload.get();
    if !payload.contains("\\u0000") {
        return None;
    }
    let model = agentledger_core::usage::Usage::of(e.kind, payload).and_then(|u| u.model);
    let what = if model.is_some_and(|m| m.contains('\0')) {
        "model name"
    } else if e.kind == agentledger_core::Kind::ToolCall
        && agentledger_core::payload::tool_name_in(e.kind, payload)
            .is_some_and(|t| t.contains('\0'))
    {
        "tool name"
    } else if e.kind == agentledger_core::Kind::SessionStarted
        && agentledger_core::chain::tag_list(
            agentledger_core::chain::session_tags(payload).as_deref(),
        )
        .iter()
        .any(|t| t.contains('\0'))
    {
        "session tag"
    } else {
        return None;
    };
    Some(agentledger_dialects::InputError::invalid(
        format!("events[{i}].payload"),
        format!(
            "events[{i}].payload: a {what} holds a NUL character (\\u0000), which the ledger does not store in a {what}"
        ),
    ))
}

/// A JSON answer.
pub fn json_reply<T: serde::Serialize>(status: StatusCode, body: &T) -> StoredReply {
    match serde_json::to_vec(body) {
        Ok(body) => StoredReply {
            status: status.as_u16(),
            content_type: "application/json".into(),
            body,
        },
        Err(e) => {
            tracing::error!(error = %e, "could not serialise an answer");
            StoredReply {
                status: 500,
                content_type: "application/json".into(),
                body: br#"{"error":{"message":"internal error","type":"internal_error","code":"INTERNAL"}}"#
                    .to_vec(),
            }
        }
    }
}

/// The answer of a renderer that found nothing to render (cannot happen
/// for a committed submission of the route's own shape).
pub fn internal_reply() -> StoredReply {
    json_reply(
        StatusCode::INTERNAL_SERVER_ERROR,
        &ApiError::Internal(String::new()).body(),
    )
}

/// How often a request handed back for a session's state (a long session
/// the store keeps no state of) is queued again with a state rebuilt from
/// the ledger, before it is answered 503 (each time, the session must have
/// grown by more than the store folds itself while the state was rebuilt).
const ATTEMPTS: u32 = 3;

/// Run a submission through the pipeline; the answer as its renderer made
/// it, or as kept under its idempotency key.
pub async fn submit(
    st: &AppState,
    caller: &Caller,
    sub: Submission,
    render: Renderer,
) -> Result<Response, ApiError> {
    // A retry of a request already answered: its answer, judging nothing.
    if let Some(key) = &sub.key
        && let Some((fingerprint, reply)) =
            st.store.idempotent_reply(&caller.project, &key.key).await?
    {
        if fingerprint != key.fingerprint {
            return Err(ApiError::IdempotencyConflict(key.key.clone()));
        }
        return Ok(response(reply, true));
    }
    let Submission {
        dialect,
        session,
        events,
        judge: how,
        key,
    } = sub;
    // The erasure record is the server's (crate::erase): a client-sent one
    // would claim an erasure that did not happen.
    if let Some(i) = events
        .iter()
        .position(|e| e.kind == agentledger_core::Kind::EventErased)
    {
        return Err(agentledger_dialects::InputError::invalid(
            format!("events[{i}]"),
            format!(
                "events[{i}]: kind event_erased is written by the server when an admin erases                  an event (POST /api/v1/events/{{id}}/erase), not sent"
            ),
        )
        .into());
    }
    if let Some(err) = events
        .iter()
        .enumerate()
        .find_map(|(i, e)| nul_in_derived(i, e))
    {
        return Err(err.into());
    }
    let (mut req, seeds) = match st.policy.clone() {
        None => (request(session, events, key, &render, None), None),
        Some(engine) => {
            // The detectors read no session: they run here, for concurrent
            // requests in parallel; the decisions run in the writer.
            let check = how == Judge::Check;
            let (events, scanned) =
                scan(engine.clone(), caller.project.id.0, check, events).await?;
            let seeds = judge::Seeds::default();
            let judge = judge::PolicyJudge {
                engine,
                project: caller.project.id.0,
                scanned: scanned.into_iter().map(Some).collect(),
                check,
                seeds: seeds.clone(),
            };
            (
                request(session, events, key, &render, Some(Box::new(judge))),
                Some(seeds),
            )
        }
    };
    // The project's alert rules ride with the request: the writer writes
    // the alerts they fire into the outbox in the events' transaction.
    req.alerts = st.alerts.event_rules(caller.project.id.0);
    let alerting = req.alerts.is_some();
    for _ in 0..ATTEMPTS {
        match st.store.enqueue(&caller.project, req)?.await? {
            AppendOutcome::NeedsState { request, sessions } => {
                // Long sessions the store keeps no state of: rebuilt here,
                // on the read path, and offered to the writer as seeds.
                let Some(seeds) = &seeds else {
                    return Err(ApiError::Internal(
                        "the store asked an unjudged request for a state".into(),
                    ));
                };
                for s in sessions {
                    let folded = judge::rebuild(st.store.as_ref(), &caller.project, &s).await?;
                    seeds
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(s, folded);
                }
                req = *request;
            }
            outcome => {
                if alerting {
                    st.alerts.wake();
                }
                return finish(st, caller, dialect, outcome, &render);
            }
        }
    }
    tracing::warn!(
        attempts = ATTEMPTS,
        "a long session kept growing while its policy state was rebuilt; answered 503"
    );
    Err(ApiError::Overloaded)
}

/// The store request: with a key, the renderer goes into the store so the
/// answer is kept with the events.
fn request(
    session: Option<NewSession>,
    events: Vec<NewEvent>,
    key: Option<IdempotencyKey>,
    render: &Renderer,
    judge: Option<Box<dyn agentledger_store::Judge>>,
) -> AppendRequest {
    // Only a keyed request's renderer runs in the store; the others are
    // rendered here after COMMIT.
    let idempotency = key.map(|key| {
        let render = render.clone();
        let in_store: Render = Box::new(move |c: &Committed<'_>| {
            render(&Done {
                events: c.events,
                appended: c.appended,
                session: c.session,
                verdicts: c.verdicts,
            })
        });
        (key, in_store)
    });
    AppendRequest {
        session,
        events,
        idempotency,
        judge,
        alerts: None,
        erase: None,
    }
}

/// Count and answer a request the store carried out.
fn finish(
    st: &AppState,
    caller: &Caller,
    dialect: Dialect,
    outcome: AppendOutcome,
    render: &Renderer,
) -> Result<Response, ApiError> {
    match outcome {
        AppendOutcome::Replayed(reply) => Ok(response(reply, true)),
        AppendOutcome::NeedsState { .. } => Err(ApiError::Overloaded),
        AppendOutcome::Committed {
            session,
            appended,
            events,
            reply,
            verdicts,
        } => {
            st.metrics.ingested(dialect.as_str(), appended.len());
            st.live.publish(caller.project.id.0, &events, &appended);
            for v in &verdicts {
                st.metrics.verdict(&caller.project.name, v);
            }
            let reply = reply.unwrap_or_else(|| {
                render(&Done {
                    events: &events,
                    appended: &appended,
                    session: session.as_deref(),
                    verdicts: &verdicts,
                })
            });
            Ok(response(reply, false))
        }
    }
}

/// Run the detectors over events (no session state read): a few in place,
/// a batch off the async workers.
async fn scan(
    engine: std::sync::Arc<agentledger_policy::Engine>,
    project: i64,
    check: bool,
    events: Vec<NewEvent>,
) -> Result<(Vec<NewEvent>, Vec<Scanned>), ApiError> {
    let run = move |evs: Vec<NewEvent>| {
        let scanned = evs
            .iter()
            .map(|ev| engine.scan(project, ev, check))
            .collect();
        (evs, scanned)
    };
    if events.len() <= INLINE_JUDGE {
        Ok(run(events))
    } else {
        tokio::task::spawn_blocking(move || run(events))
            .await
            .map_err(|e| ApiError::Internal(format!("detectors failed: {e}")))
    }
}

/// A kept or fresh answer as an HTTP response; a replay says so in
/// `Idempotent-Replayed` (as Stripe's API does).
fn response(reply: StoredReply, replayed: bool) -> Response {
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = Response::new(Body::from(reply.body));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    if let Ok(ct) = HeaderValue::from_str(&reply.content_type) {
        h.insert(header::CONTENT_TYPE, ct);
    }
    if replayed {
        h.insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    resp
}

/// Marks a dialect's routes: the observer counts their refused writes
/// (POST answering an error) under that dialect, whatever refused them.
pub fn ingest_routes(dialect: Dialect, router: Router<AppState>) -> Router<AppState> {
    router.route_layer(axum::middleware::map_response(
        move |mut resp: Response| async move {
            resp.extensions_mut().insert(dialect);
            resp
        },
    ))
}

/// Set by every error response (`ApiError`, the OTLP edge's status): the
/// reason the observer counts a refused write under.
#[derive(Debug, Clone, Copy)]
pub struct Refusal(pub &'static str);
