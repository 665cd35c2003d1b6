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
    StoreError, StoredReply,
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
pub type Renderer = std::sync::Arc<dyn Fn(&Done<'_>) -> StoredReply + Send + Sync>;

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

/// How often a request is judged again because a request queued before it
/// to one of its sessions failed (or another process appended), before it
/// is answered 503.
const ATTEMPTS: usize = 5;

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
    // Events per session, as the request will append them.
    let mut per_session: HashMap<String, u64> = HashMap::new();
    if sub.judge == Judge::Check {
        for ev in &sub.events {
            per_session.insert(ev.session_id.as_str().to_owned(), 1);
        }
    } else {
        for ev in &sub.events {
            *per_session
                .entry(ev.session_id.as_str().to_owned())
                .or_default() += 1;
        }
    }
    let Submission {
        dialect,
        session,
        events,
        judge: how,
        key,
    } = sub;
    let Some(engine) = st.policy.clone() else {
        // Nothing to judge: one attempt, no session state involved.
        let req = request(session, events, key, &render, Vec::new(), Vec::new());
        let outcome = st.store.enqueue(&caller.project, req)?.await?;
        return finish(st, caller, dialect, outcome, &render, &[]);
    };
    for attempt in 1..=ATTEMPTS {
        // Judge and queue under the sessions' locks; the commit is awaited
        // after they are released.
        let held = st
            .sessions
            .hold(
                st.store.as_ref(),
                &caller.project,
                per_session.keys().cloned(),
            )
            .await?;
        let heads = held.heads();
        let (judged, verdicts, held) = judge(
            engine.clone(),
            caller.project.id.0,
            events.clone(),
            held,
            how == Judge::Check,
        )
        .await?;
        let judged = if how == Judge::Check {
            check::record(judged, &verdicts)?
        } else {
            judged
        };
        let req = request(
            session.clone(),
            judged,
            key.clone(),
            &render,
            verdicts.clone(),
            heads,
        );
        let queued = st.store.enqueue(&caller.project, req);
        let queued = match queued {
            Ok(q) => {
                held.queued(&per_session);
                q
            }
            // Refused before it was queued: the kept states are untouched.
            Err(e) => return Err(e.into()),
        };
        let sessions = || per_session.keys().map(String::as_str);
        match queued.await {
            Ok(outcome @ AppendOutcome::Committed { .. }) => {
                return finish(st, caller, dialect, outcome, &render, &verdicts);
            }
            Ok(replay @ AppendOutcome::Replayed(_)) => {
                // Nothing was appended, yet the states were moved past it.
                st.sessions.forget(&caller.project, sessions());
                return finish(st, caller, dialect, replay, &render, &verdicts);
            }
            Err(StoreError::HeadMoved(_)) if attempt < ATTEMPTS => {
                st.sessions.forget(&caller.project, sessions());
            }
            Err(e) => {
                st.sessions.forget(&caller.project, sessions());
                return Err(match e {
                    StoreError::HeadMoved(_) => ApiError::Overloaded,
                    other => other.into(),
                });
            }
        }
    }
    Err(ApiError::Overloaded)
}

/// The store request: with a key, the renderer goes into the store so the
/// answer is kept with the events.
fn request(
    session: Option<NewSession>,
    events: Vec<NewEvent>,
    key: Option<IdempotencyKey>,
    render: &Renderer,
    verdicts: Vec<Verdict>,
    expect_heads: Vec<(String, u64)>,
) -> AppendRequest {
    let idempotency = key.map(|key| {
        let render = render.clone();
        let in_store: Render = Box::new(move |c: &Committed<'_>| {
            render(&Done {
                events: c.events,
                appended: c.appended,
                session: c.session,
                verdicts: &verdicts,
            })
        });
        (key, in_store)
    });
    AppendRequest {
        session,
        events,
        idempotency,
        expect_heads,
    }
}

/// Count and answer a request the store carried out.
fn finish(
    st: &AppState,
    caller: &Caller,
    dialect: Dialect,
    outcome: AppendOutcome,
    render: &Renderer,
    verdicts: &[Verdict],
) -> Result<Response, ApiError> {
    match outcome {
        AppendOutcome::Replayed(reply) => Ok(response(reply, true)),
        AppendOutcome::Committed {
            session,
            appended,
            events,
            reply,
        } => {
            st.metrics.ingested(dialect.as_str(), appended.len());
            st.live.publish(caller.project.id.0, &events, &appended);
            for v in verdicts {
                st.metrics.verdict(&caller.project.name, v);
            }
            let reply = reply.unwrap_or_else(|| {
                render(&Done {
                    events: &events,
                    appended: &appended,
                    session: session.as_deref(),
                    verdicts,
                })
            });
            Ok(response(reply, false))
        }
    }
}

/// Judge events in order against the held sessions' states (attaching
/// verdicts, redacting where configured): a few in place, a batch off the
/// async workers (about 15 µs an event).
async fn judge(
    engine: std::sync::Arc<agentledger_policy::Engine>,
    project: i64,
    events: Vec<NewEvent>,
    held: sessions::Held,
    check: bool,
) -> Result<(Vec<NewEvent>, Vec<Verdict>, sessions::Held), ApiError> {
    let run = move |mut evs: Vec<NewEvent>, mut held: sessions::Held| {
        let mut verdicts = Vec::with_capacity(evs.len());
        for ev in evs.iter_mut() {
            let state = held
                .working
                .entry(ev.session_id.as_str().to_owned())
                .or_default();
            // The caller's project is judged by its own set (or the
            // operator's default), never by another project's.
            verdicts.push(engine.judge_for(project, ev, &mut state.state, check));
        }
        (evs, verdicts, held)
    };
    if events.len() <= INLINE_JUDGE {
        Ok(run(events, held))
    } else {
        tokio::task::spawn_blocking(move || run(events, held))
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
