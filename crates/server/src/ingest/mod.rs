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
use agentledger_policy::engine::Scanned;
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
/// to one of its sessions failed, or another node appended to one of them,
/// before it is answered 503. Between attempts a request waits a random
/// while, growing with the attempt (at most ~64 ms), so two nodes racing
/// for one session stop colliding.
const ATTEMPTS: u32 = 10;

/// The random wait before attempt `n` (2, 3, …): up to 2^n ms, capped.
fn backoff(attempt: u32) -> std::time::Duration {
    let cap = 1u64 << attempt.min(6);
    std::time::Duration::from_micros(rand::random_range(0..cap * 1000))
}

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
        let req = request(session, events, key, &render, &[], Vec::new());
        let outcome = st.store.enqueue(&caller.project, req)?.await?;
        return finish(st, caller, dialect, outcome, &render, &[]);
    };
    for attempt in 1..=ATTEMPTS {
        // The detectors read no session: run them before taking a turn, so
        // concurrent requests scan in parallel.
        let (scanned_events, scanned) = scan(engine.clone(), events.clone()).await?;
        let judged = judge_in_turn(
            st,
            caller,
            engine.clone(),
            scanned_events,
            scanned,
            &per_session,
            how == Judge::Check,
        )
        .await;
        let (judged, verdicts, heads, tickets) = match judged {
            Ok(j) => j,
            Err(e) => {
                // States already passed on may hold this request's events.
                st.sessions
                    .forget(&caller.project, per_session.keys().map(String::as_str));
                return Err(e);
            }
        };
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
            &verdicts,
            heads,
        );
        let queued = match st.store.enqueue(&caller.project, req) {
            Ok(q) => {
                tickets.queued();
                q
            }
            Err(e) => {
                // The states were passed on with this request's events in
                // them: drop them (later requests are refused by the seq
                // check and judged again).
                drop(tickets);
                st.sessions
                    .forget(&caller.project, per_session.keys().map(String::as_str));
                return Err(e.into());
            }
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
                tokio::time::sleep(backoff(attempt + 1)).await;
            }
            Err(e) => {
                st.sessions.forget(&caller.project, sessions());
                return Err(match e {
                    StoreError::HeadMoved(s) => {
                        tracing::warn!(session = %s, attempts = ATTEMPTS, "a session kept moving under a judged request; answered 503");
                        ApiError::Overloaded
                    }
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
    verdicts: &[Verdict],
    expect_heads: Vec<(String, u64)>,
) -> AppendRequest {
    // Only a keyed request's renderer runs in the store (and needs its own
    // copy of the verdicts); the others are rendered here after COMMIT.
    let idempotency = key.map(|key| {
        let render = render.clone();
        let verdicts = verdicts.to_vec();
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

/// Run the detectors over events (no session state read): a few in place,
/// a batch off the async workers.
async fn scan(
    engine: std::sync::Arc<agentledger_policy::Engine>,
    events: Vec<NewEvent>,
) -> Result<(Vec<NewEvent>, Vec<Scanned>), ApiError> {
    let run = move |evs: Vec<NewEvent>| {
        let scanned = evs.iter().map(|ev| engine.scan(ev)).collect();
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

type Judged = (
    Vec<NewEvent>,
    Vec<Verdict>,
    Vec<(String, u64)>,
    sessions::Tickets,
);

/// Decide scanned events against their sessions' states, session by
/// session in ticket order, each in its turn (see [`sessions`]); the judged
/// events and verdicts in the request's order, the heads they were judged
/// at, and the tickets, still to be queued.
async fn judge_in_turn(
    st: &AppState,
    caller: &Caller,
    engine: std::sync::Arc<agentledger_policy::Engine>,
    events: Vec<NewEvent>,
    scanned: Vec<Scanned>,
    per_session: &HashMap<String, u64>,
    check: bool,
) -> Result<Judged, ApiError> {
    let mut tickets = st
        .sessions
        .tickets(&caller.project, per_session.keys().cloned());
    let order: Vec<String> = tickets.sessions().map(str::to_owned).collect();
    let mut at: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, ev) in events.iter().enumerate() {
        at.entry(ev.session_id.as_str()).or_default().push(i);
    }
    let at: HashMap<String, Vec<usize>> = at.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
    let n = events.len();
    let mut events: Vec<Option<NewEvent>> = events.into_iter().map(Some).collect();
    let mut scanned: Vec<Option<Scanned>> = scanned.into_iter().map(Some).collect();
    let mut verdicts: Vec<Option<Verdict>> = (0..n).map(|_| None).collect();
    let mut heads = Vec::with_capacity(order.len());
    for (i, session) in order.iter().enumerate() {
        let folded = tickets.turn(i, st.store.as_ref(), &caller.project).await?;
        heads.push((session.clone(), folded.seq));
        let idx = at.get(session).cloned().unwrap_or_default();
        let mut batch = Vec::with_capacity(idx.len());
        for &j in &idx {
            if let (Some(ev), Some(sc)) = (events[j].take(), scanned[j].take()) {
                batch.push((ev, sc));
            }
        }
        let (batch, mut folded) =
            decide_session(engine.clone(), caller.project.id.0, batch, folded, check).await?;
        folded.seq += per_session.get(session).copied().unwrap_or(0);
        tickets.judged(i, folded);
        for (&j, (ev, v)) in idx.iter().zip(batch) {
            events[j] = Some(ev);
            verdicts[j] = Some(v);
        }
    }
    tickets.queue_turn().await?;
    let events: Option<Vec<NewEvent>> = events.into_iter().collect();
    let verdicts: Option<Vec<Verdict>> = verdicts.into_iter().collect();
    match (events, verdicts) {
        (Some(e), Some(v)) => Ok((e, v, heads, tickets)),
        _ => Err(ApiError::Internal("an event was not judged".into())),
    }
}

/// Decide one session's scanned events in order against its state
/// (attaching verdicts, redacting where configured, folding each in): a
/// few in place, more off the async workers.
async fn decide_session(
    engine: std::sync::Arc<agentledger_policy::Engine>,
    project: i64,
    batch: Vec<(NewEvent, Scanned)>,
    folded: sessions::Folded,
    check: bool,
) -> Result<(Vec<(NewEvent, Verdict)>, sessions::Folded), ApiError> {
    let run = move |batch: Vec<(NewEvent, Scanned)>, mut folded: sessions::Folded| {
        let out = batch
            .into_iter()
            .map(|(mut ev, sc)| {
                // The caller's project is judged by its own set (or the
                // operator's default), never by another project's.
                let v = engine.decide_for(project, &mut ev, sc, &mut folded.state, check);
                (ev, v)
            })
            .collect();
        (out, folded)
    };
    if batch.len() <= INLINE_JUDGE {
        Ok(run(batch, folded))
    } else {
        tokio::task::spawn_blocking(move || run(batch, folded))
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
