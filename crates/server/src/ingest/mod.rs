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
//! ([`sessions`]), the store's one write path (`append_request`, which chains
//! each event with core's `chain::link`), and the metrics. Refusals are
//! counted once, by the router's observer, for every dialect alike, whether
//! an extractor (401, 408, 413, 415, 429) or the pipeline refused.

pub mod check;
pub mod idempotency;
pub mod sessions;
pub mod traces;

use std::collections::HashMap;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;

use agentledger_core::verdict::Verdict;
use agentledger_core::{Dialect, NewEvent, Session};
use agentledger_store::{
    AppendOutcome, AppendRequest, AppendedEvent, Committed, IdempotencyKey, NewSession, Render,
    StoredReply,
};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::state::AppState;

pub use idempotency::Idempotency;

/// Batches up to this size are judged on the request's own task.
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
pub type Renderer = Box<dyn FnOnce(&Done<'_>) -> StoredReply + Send>;

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

/// Run a submission through the pipeline; the answer as its renderer made
/// it, or as kept under its idempotency key.
pub async fn submit(
    st: &AppState,
    caller: &Caller,
    mut sub: Submission,
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

    // Judge under the sessions' locks, held until the append is answered.
    let mut held = None;
    let mut verdicts = Vec::new();
    if let Some(engine) = st.policy.clone() {
        let mut h = st
            .sessions
            .hold(
                st.store.as_ref(),
                &caller.project,
                sub.events.iter().map(|e| e.session_id.as_str().to_owned()),
            )
            .await?;
        let check = sub.judge == Judge::Check;
        let events = std::mem::take(&mut sub.events);
        let (events, v, working) = judge(
            engine,
            caller.project.id.0,
            events,
            std::mem::take(&mut h.working),
            check,
        )
        .await?;
        h.working = working;
        sub.events = events;
        verdicts = v;
        held = Some(h);
    }
    if sub.judge == Judge::Check {
        sub.events = check::record(std::mem::take(&mut sub.events), &verdicts)?;
    }

    let n = sub.events.len();
    let dialect = sub.dialect;
    // The renderer goes into the store when the answer is to be kept with
    // the events; otherwise it runs here after COMMIT.
    let (idempotency, local_render) = match sub.key.take() {
        Some(key) => {
            let verdicts = verdicts.clone();
            let in_store: Render = Box::new(move |c: &Committed<'_>| {
                render(&Done {
                    events: c.events,
                    appended: c.appended,
                    session: c.session,
                    verdicts: &verdicts,
                })
            });
            (Some((key, in_store)), None)
        }
        None => (None, Some(render)),
    };
    let req = AppendRequest {
        session: sub.session.take(),
        events: std::mem::take(&mut sub.events),
        idempotency,
    };
    let outcome = st.store.append_request(&caller.project, req).await?;
    match outcome {
        AppendOutcome::Replayed(reply) => Ok(response(reply, true)),
        AppendOutcome::Committed {
            session,
            appended,
            events,
            reply,
        } => {
            if let Some(h) = held {
                h.committed(&appended);
            }
            st.metrics.ingested(dialect.as_str(), n);
            for v in &verdicts {
                st.metrics.verdict(&caller.project.name, v);
            }
            let reply = match (reply, local_render) {
                (Some(r), _) => r,
                (None, Some(render)) => render(&Done {
                    events: &events,
                    appended: &appended,
                    session: session.as_deref(),
                    verdicts: &verdicts,
                }),
                (None, None) => {
                    return Err(ApiError::Internal(
                        "the store kept no answer for an idempotent request".into(),
                    ));
                }
            };
            Ok(response(reply, false))
        }
    }
}

type Working = HashMap<String, sessions::Folded>;

/// Judge events in order against working copies of their sessions' states
/// (attaching verdicts, redacting where configured): a few in place, a
/// batch off the async workers (about 15 µs an event).
async fn judge(
    engine: std::sync::Arc<agentledger_policy::Engine>,
    project: i64,
    events: Vec<NewEvent>,
    working: Working,
    check: bool,
) -> Result<(Vec<NewEvent>, Vec<Verdict>, Working), ApiError> {
    let run = move |mut evs: Vec<NewEvent>, mut working: Working| {
        let mut verdicts = Vec::with_capacity(evs.len());
        for ev in evs.iter_mut() {
            let state = working
                .entry(ev.session_id.as_str().to_owned())
                .or_default();
            // The caller's project is judged by its own set (or the
            // operator's default), never by another project's.
            verdicts.push(engine.judge_for(project, ev, &mut state.state, check));
        }
        (evs, verdicts, working)
    };
    if events.len() <= INLINE_JUDGE {
        Ok(run(events, working))
    } else {
        tokio::task::spawn_blocking(move || run(events, working))
            .await
            .map_err(|e| ApiError::Internal(format!("policy evaluation failed: {e}")))
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
