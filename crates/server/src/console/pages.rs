//! The pages that read the ledger: sessions, a session's timeline, an
//! event, verification, search, live tail, export.

use std::collections::HashMap;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use agentledger_core::query::{Cursor, EventQuery, Order};
use agentledger_core::verdict::{Decision, Finding, Verdict};
use agentledger_core::{Event, Session};
use agentledger_dialects::native::{EventsParams, SessionsParams};
use agentledger_store::verify::verify_session;

use super::auth::Signed;
use super::error::{ConsoleError, render};
use super::payload::{Segment, segments};
use super::views::{Nav, Row, filled, form_time, time, urlencode, usd};
use crate::extract::PathParam;
use crate::state::AppState;

/// Events per page of a session's timeline: a page of a 100,000-event
/// session reads these rows by seq (an index range), however long it is.
pub const PAGE: u64 = 200;
/// Sessions (or hits) per listing page.
const LIST: u32 = 50;

/// A session as a listing row.
pub struct SessionRow {
    pub id: String,
    pub agent: String,
    pub status: String,
    pub created: String,
    pub last: String,
    pub events: u64,
    pub tool_calls: u64,
    pub errors: u64,
    pub tokens: i64,
    pub cost: String,
}

impl SessionRow {
    fn of(s: &Session) -> SessionRow {
        SessionRow {
            id: s.id.clone(),
            agent: s.agent_id.clone(),
            status: s.status.as_str().into(),
            created: time(s.created_at),
            last: s.last_event_at.map(time).unwrap_or_default(),
            events: s.counters.events,
            tool_calls: s.counters.tool_calls,
            errors: s.counters.errors,
            tokens: s.counters.input_tokens + s.counters.output_tokens,
            cost: usd(s.counters.cost_usd),
        }
    }

    pub fn href(&self) -> String {
        format!("/console/sessions/{}", urlencode(&self.id))
    }
}

#[derive(Deserialize, Default)]
pub struct SessionFilters {
    agent_id: Option<String>,
    status: Option<String>,
    decision: Option<String>,
    from: Option<String>,
    to: Option<String>,
    cursor: Option<String>,
}

#[derive(Template)]
#[template(path = "console/sessions.html")]
struct SessionsPage {
    nav: Nav,
    agent_id: String,
    status: String,
    decision: String,
    from: String,
    to: String,
    rows: Vec<SessionRow>,
    total: String,
    next: Option<String>,
}

pub async fn sessions(
    State(st): State<AppState>,
    signed: Signed,
    Query(f): Query<SessionFilters>,
) -> Result<Response, ConsoleError> {
    let project = &signed.caller.project;
    let decision = filled(&f.decision);
    let (rows, total, next_cursor) = if let Some(d) = &decision {
        // Sessions holding an event of this decision: the project's events
        // of that decision newest first, one row per session they fall in.
        let p = EventsParams {
            agent_id: filled(&f.agent_id),
            decision: Some(d.clone()),
            from: form_time(&f.from),
            to: form_time(&f.to),
            cursor: filled(&f.cursor),
            limit: Some(200),
            ..Default::default()
        };
        let mut q = p.to_query()?;
        q.skip_total = true;
        let page = st.store.query_events(project, q).await?;
        let mut seen = std::collections::HashSet::new();
        let mut rows = Vec::new();
        for e in &page.events {
            if seen.insert(e.session_id.clone())
                && let Some(s) = st.store.get_session(project, &e.session_id).await?
                && filled(&f.status).is_none_or(|want| want == s.status.as_str())
            {
                rows.push(SessionRow::of(&s));
            }
        }
        (rows, format!("sessions with a {d} event"), page.next_cursor)
    } else {
        let p = SessionsParams {
            agent_id: filled(&f.agent_id),
            status: filled(&f.status),
            from: form_time(&f.from),
            to: form_time(&f.to),
            limit: Some(LIST),
            cursor: filled(&f.cursor),
        };
        let page = st.store.list_sessions(project, p.to_query()?).await?;
        (
            page.sessions.iter().map(SessionRow::of).collect(),
            format!("{} sessions", page.total),
            page.next_cursor,
        )
    };
    let keep = |name: &str, v: &Option<String>| {
        filled(v)
            .map(|v| format!("{name}={}&", urlencode(&v)))
            .unwrap_or_default()
    };
    let next = next_cursor.map(|c| {
        format!(
            "/console/sessions?{}{}{}{}{}cursor={}",
            keep("agent_id", &f.agent_id),
            keep("status", &f.status),
            keep("decision", &f.decision),
            keep("from", &f.from),
            keep("to", &f.to),
            c.encode()
        )
    });
    render(&SessionsPage {
        nav: Nav::new(&signed, "sessions"),
        agent_id: filled(&f.agent_id).unwrap_or_default(),
        status: filled(&f.status).unwrap_or_default(),
        decision: decision.unwrap_or_default(),
        from: filled(&f.from).unwrap_or_default(),
        to: filled(&f.to).unwrap_or_default(),
        rows,
        total,
        next,
    })
}

#[derive(Deserialize, Default)]
pub struct At {
    /// Show the page holding this seq.
    at: Option<u64>,
    /// Show the events after this seq.
    after: Option<u64>,
}

#[derive(Template)]
#[template(path = "console/session.html")]
struct SessionPage {
    nav: Nav,
    s: SessionRow,
    head_seq: u64,
    head_hash: String,
    rows: Vec<Row>,
    first: u64,
    last: u64,
    prev: Option<String>,
    next: Option<String>,
    prev_finding: Option<String>,
    next_finding: Option<String>,
}

#[derive(Deserialize)]
pub struct FindingQuery {
    /// `next` (after `from`) or `prev` (before it).
    dir: String,
    from: u64,
}

/// "Next / previous flag or deny": found when asked, not while the page
/// renders (in a long session with few findings the search reads many
/// rows; the timeline page itself reads only its 200). Redirects to the
/// page holding it, or says there is none.
pub async fn finding(
    State(st): State<AppState>,
    signed: Signed,
    PathParam(id): PathParam<String>,
    Query(f): Query<FindingQuery>,
) -> Result<Response, ConsoleError> {
    let project = &signed.caller.project;
    let order = match f.dir.as_str() {
        "next" => Order::Asc,
        "prev" => Order::Desc,
        _ => return Err(ConsoleError::BadRequest("dir is next or prev".into())),
    };
    // The cursor is the event at `from` (its id): paging by seq from it.
    let at = st
        .store
        .session_events(project, &id, f.from.saturating_sub(1), 1)
        .await?;
    let Some(from) = at.first().filter(|e| e.seq == f.from) else {
        return Err(ConsoleError::NotFound("no such event in this session"));
    };
    let q = EventQuery {
        session_id: Some(id.clone()),
        decisions: vec![Decision::Flag, Decision::Deny],
        order,
        limit: 1,
        cursor: Some(Cursor::after(from.id.to_bytes().to_vec())),
        skip_total: true,
        ..Default::default()
    };
    let page = st.store.query_events(project, q).await?;
    match page.events.first() {
        Some(e) => Ok(axum::response::Redirect::to(&format!(
            "/console/sessions/{}?at={}#e{}",
            urlencode(&id),
            e.seq,
            e.seq
        ))
        .into_response()),
        None => Err(ConsoleError::NotFound(if order == Order::Asc {
            "no flag or deny after this event in the session"
        } else {
            "no flag or deny before this event in the session"
        })),
    }
}

pub async fn session(
    State(st): State<AppState>,
    signed: Signed,
    PathParam(id): PathParam<String>,
    Query(at): Query<At>,
) -> Result<Response, ConsoleError> {
    let s = st
        .store
        .get_session(&signed.caller.project, &id)
        .await?
        .ok_or(ConsoleError::NotFound("no such session in this project"))?;
    let start = match (at.at, at.after) {
        (Some(seq), _) if seq > 0 => (seq - 1) / PAGE * PAGE,
        (_, Some(after)) => after,
        _ => 0,
    };
    let events = st
        .store
        .session_events(&signed.caller.project, &id, start, PAGE as u32)
        .await?;
    let mut rows: Vec<Row> = events.iter().map(Row::of).collect();
    nest(&events, &mut rows);
    let base = format!("/console/sessions/{}", urlencode(&id));
    let last = events.last().map_or(start, |e| e.seq);
    render(&SessionPage {
        nav: Nav::new(&signed, "sessions"),
        head_seq: s.head_seq,
        head_hash: s.head_hash.map(hex::encode).unwrap_or_default(),
        s: SessionRow::of(&s),
        first: events.first().map_or(0, |e| e.seq),
        last,
        prev: (start > 0).then(|| format!("{base}?after={}", start.saturating_sub(PAGE))),
        next: (last < s.head_seq).then(|| format!("{base}?after={last}")),
        prev_finding: events
            .first()
            .map(|e| format!("{base}/finding?dir=prev&from={}", e.seq)),
        next_finding: events
            .last()
            .map(|e| format!("{base}/finding?dir=next&from={}", e.seq)),
        rows,
    })
}

/// Indent each event under its OTLP parent span when that span is on the
/// same page (spans end, and so arrive, before their parents: a child may
/// come first).
fn nest(events: &[Event], rows: &mut [Row]) {
    let span = |e: &Event| -> Option<(String, Option<String>)> {
        let v: serde_json::Value = serde_json::from_str(e.payload.get()).ok()?;
        let id = v.get("span_id")?.as_str()?.to_owned();
        let parent = v
            .get("parent_span_id")
            .and_then(|p| p.as_str())
            .map(str::to_owned);
        Some((id, parent))
    };
    let spans: Vec<Option<(String, Option<String>)>> = events.iter().map(span).collect();
    let parents: HashMap<&str, Option<&str>> = spans
        .iter()
        .flatten()
        .map(|(id, p)| (id.as_str(), p.as_deref()))
        .collect();
    for (row, sp) in rows.iter_mut().zip(&spans) {
        let Some((_, mut parent)) = sp.as_ref().map(|(i, p)| (i.as_str(), p.as_deref())) else {
            continue;
        };
        let mut depth = 0;
        while let Some(p) = parent {
            match parents.get(p) {
                Some(up) if depth < 8 => {
                    depth += 1;
                    parent = *up;
                }
                _ => break,
            }
        }
        row.depth = depth;
    }
}

#[derive(Template)]
#[template(path = "console/event.html")]
struct EventPage {
    nav: Nav,
    row: Row,
    e: Event,
    prev_hash: String,
    hash: String,
    payload_sha256: String,
    verdict: Option<Verdict>,
    payload: Vec<Segment>,
    metadata: Vec<Segment>,
}

pub async fn event(
    State(st): State<AppState>,
    signed: Signed,
    PathParam(id): PathParam<String>,
) -> Result<Response, ConsoleError> {
    let e = crate::routes::shared::fetch_event(&st, &signed.caller, &id)
        .await
        .map_err(|_| ConsoleError::NotFound("no such event in this project"))?;
    let verdict: Option<Verdict> = e
        .verdict
        .as_ref()
        .and_then(|v| serde_json::from_str(v.get()).ok());
    let findings: &[Finding] = verdict.as_ref().map_or(&[], |v| &v.findings);
    let payload = segments(e.payload.get(), "/payload", findings);
    let metadata = segments(e.metadata.get(), "/metadata", findings);
    render(&EventPage {
        nav: Nav::new(&signed, "sessions"),
        row: Row::of(&e),
        prev_hash: e.prev_hash.map(hex::encode).unwrap_or_default(),
        hash: hex::encode(e.hash),
        payload_sha256: hex::encode(e.payload_sha256),
        payload,
        metadata,
        verdict,
        e,
    })
}

#[derive(Template)]
#[template(path = "console/verify.html")]
struct VerifyPage {
    nav: Nav,
    id: String,
    href: String,
    valid: bool,
    events: u64,
    head_seq: u64,
    head_hash: String,
    first_invalid_seq: Option<u64>,
    reason: String,
    export: String,
}

pub async fn verify(
    State(st): State<AppState>,
    signed: Signed,
    PathParam(id): PathParam<String>,
) -> Result<Response, ConsoleError> {
    let s = st
        .store
        .get_session(&signed.caller.project, &id)
        .await?
        .ok_or(ConsoleError::NotFound("no such session in this project"))?;
    let r = verify_session(st.store.as_ref(), &signed.caller.project, &id)
        .await?
        .ok_or(ConsoleError::NotFound("no such session in this project"))?;
    let base = format!("/console/sessions/{}", urlencode(&id));
    render(&VerifyPage {
        nav: Nav::new(&signed, "sessions"),
        href: base.clone(),
        export: format!("{base}/export"),
        id,
        valid: r.valid,
        events: r.events,
        head_seq: s.head_seq,
        head_hash: s.head_hash.map(hex::encode).unwrap_or_default(),
        first_invalid_seq: r.first_invalid_seq,
        reason: r.reason.unwrap_or_default(),
    })
}

/// The session as JSON Lines, as `GET /api/v1/sessions/{id}/export` gives
/// it (the in-browser verification reads this).
pub async fn export(
    State(st): State<AppState>,
    signed: Signed,
    Path(id): Path<String>,
) -> Result<Response, ConsoleError> {
    crate::routes::native::export(State(st), signed.caller, PathParam(id))
        .await
        .map_err(|e| match e {
            crate::error::ApiError::NotFound(_) => {
                ConsoleError::NotFound("no such session in this project")
            }
            other => other.into(),
        })
}

#[derive(Deserialize, Default)]
pub struct SearchForm {
    q: Option<String>,
    agent_id: Option<String>,
    session_id: Option<String>,
    kind: Option<String>,
    decision: Option<String>,
    from: Option<String>,
    to: Option<String>,
    cursor: Option<String>,
}

#[derive(Template)]
#[template(path = "console/search.html")]
struct SearchPage {
    nav: Nav,
    q: String,
    agent_id: String,
    session_id: String,
    kind: String,
    decision: String,
    from: String,
    to: String,
    searched: bool,
    rows: Vec<Row>,
    total: String,
    next: Option<String>,
}

pub async fn search(
    State(st): State<AppState>,
    signed: Signed,
    Query(f): Query<SearchForm>,
) -> Result<Response, ConsoleError> {
    let p = EventsParams {
        q: filled(&f.q),
        agent_id: filled(&f.agent_id),
        session_id: filled(&f.session_id),
        kind: filled(&f.kind),
        decision: filled(&f.decision),
        from: form_time(&f.from),
        to: form_time(&f.to),
        cursor: filled(&f.cursor),
        limit: Some(LIST),
        ..Default::default()
    };
    let searched = [
        &p.q,
        &p.agent_id,
        &p.session_id,
        &p.kind,
        &p.decision,
        &p.from,
        &p.to,
    ]
    .iter()
    .any(|v| v.is_some());
    let (rows, total, next) = if searched {
        let page = st
            .store
            .query_events(&signed.caller.project, p.to_query()?)
            .await?;
        let total = match (page.total, page.total_capped) {
            (Some(n), true) => format!("more than {n} events"),
            (Some(n), false) => format!("{n} events"),
            (None, _) => String::new(),
        };
        let keep = |name: &str, v: &Option<String>| {
            filled(v)
                .map(|v| format!("{name}={}&", urlencode(&v)))
                .unwrap_or_default()
        };
        let next = page.next_cursor.map(|c| {
            format!(
                "/console/search?{}{}{}{}{}{}{}cursor={}",
                keep("q", &f.q),
                keep("agent_id", &f.agent_id),
                keep("session_id", &f.session_id),
                keep("kind", &f.kind),
                keep("decision", &f.decision),
                keep("from", &f.from),
                keep("to", &f.to),
                c.encode()
            )
        });
        (page.events.iter().map(Row::of).collect(), total, next)
    } else {
        (Vec::new(), String::new(), None)
    };
    render(&SearchPage {
        nav: Nav::new(&signed, "search"),
        q: filled(&f.q).unwrap_or_default(),
        agent_id: filled(&f.agent_id).unwrap_or_default(),
        session_id: filled(&f.session_id).unwrap_or_default(),
        kind: filled(&f.kind).unwrap_or_default(),
        decision: filled(&f.decision).unwrap_or_default(),
        from: filled(&f.from).unwrap_or_default(),
        to: filled(&f.to).unwrap_or_default(),
        searched,
        rows,
        total,
        next,
    })
}

#[derive(Template)]
#[template(path = "console/live.html")]
struct LivePage {
    nav: Nav,
}

pub async fn live(signed: Signed) -> Result<Response, ConsoleError> {
    render(&LivePage {
        nav: Nav::new(&signed, "live"),
    })
}

/// The live tail's stream: the API's, authenticated by the console cookie.
pub async fn live_stream(
    State(st): State<AppState>,
    signed: Signed,
    Query(p): Query<EventsParams>,
) -> Result<Response, ConsoleError> {
    let q = crate::routes::stream::stream_query(&p)?;
    let sub = st
        .live
        .subscribe(&signed.caller.key_id, signed.caller.project.id.0)
        .ok_or(ConsoleError::Api(crate::error::ApiError::RateLimited(5)))?;
    Ok(crate::live::sse(sub, signed.caller.project.id.0, q).into_response())
}
