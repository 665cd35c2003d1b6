//! The reading tools: `search_events`, `get_session_timeline`,
//! `verify_session`. Each is the native route's store call (the same query,
//! page and verification) rendered with the native API's event, session and
//! verification objects, so MCP and HTTP answer alike.

use serde_json::{Value, json};

use agentledger_core::AgentId;
use agentledger_core::event::SessionCounters;
use agentledger_dialects::common::field;
use agentledger_dialects::native::{EventOut, EventsParams, SessionOut, VerifyOut};
use agentledger_store::verify::verify_session;

use super::args::{
    DEFAULT_SEARCH_LIMIT, DEFAULT_TIMELINE_LIMIT, MAX_CURSOR_CHARS, MAX_MODEL_CHARS,
    MAX_SEARCH_LIMIT, MAX_TIMELINE_LIMIT, SearchEvents, SessionTimeline, VerifySession,
    bounded_limit, list, session_id, short,
};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::state::AppState;

pub fn to_value<T: serde::Serialize>(v: &T) -> Result<Value, ApiError> {
    serde_json::to_value(v).map_err(|e| ApiError::Internal(e.to_string()))
}

/// `list_open_alerts`: the alerts route's listing (open ones).
pub async fn open_alerts(
    st: &AppState,
    caller: &Caller,
    a: super::args::ListOpenAlerts,
) -> Result<Value, ApiError> {
    let limit = bounded_limit(
        a.limit,
        super::args::DEFAULT_ALERTS_LIMIT,
        super::args::MAX_ALERTS_LIMIT,
    )?;
    let alerts = st.store.list_alerts(&caller.project, true, limit).await?;
    let out: Vec<crate::routes::alerts::AlertOut> = alerts
        .iter()
        .map(crate::routes::alerts::AlertOut::from)
        .collect();
    Ok(json!({ "alerts": to_value(&out)? }))
}

pub async fn search(st: &AppState, caller: &Caller, a: SearchEvents) -> Result<Value, ApiError> {
    if let Some(id) = &a.session_id {
        session_id(id.clone())?;
    }
    if let Some(id) = &a.agent_id {
        field("agent_id", AgentId::parse(id.clone()))?;
    }
    short("cursor", a.cursor.as_ref(), MAX_CURSOR_CHARS)?;
    short("model", a.model.as_ref(), MAX_MODEL_CHARS)?;
    let params = EventsParams {
        session_id: a.session_id,
        agent_id: a.agent_id,
        kind: list("kinds", a.kinds)?,
        severity: list("severities", a.severities)?,
        from: a.from,
        to: a.to,
        q: a.q,
        model: a.model,
        decision: list("decisions", a.decisions)?,
        dialect: a.dialect,
        order: a.order,
        limit: Some(bounded_limit(
            a.limit,
            DEFAULT_SEARCH_LIMIT,
            MAX_SEARCH_LIMIT,
        )?),
        cursor: a.cursor,
    };
    let page = st
        .store
        .query_events(&caller.project, params.to_query()?)
        .await?;
    let events: Vec<EventOut> = page.events.into_iter().map(EventOut::from).collect();
    Ok(json!({
        "events": to_value(&events)?,
        "total": page.total.unwrap_or(0),
        "total_capped": page.total_capped,
        "next_cursor": page.next_cursor.map(|c| c.encode()),
    }))
}

fn counters(c: &SessionCounters) -> Value {
    json!({
        "events": c.events,
        "tool_calls": c.tool_calls,
        "errors": c.errors,
        "llm_calls": c.llm_calls,
        "input_tokens": c.input_tokens,
        "output_tokens": c.output_tokens,
        "cost_usd": c.cost_usd,
    })
}

pub async fn timeline(
    st: &AppState,
    caller: &Caller,
    a: SessionTimeline,
) -> Result<Value, ApiError> {
    let id = session_id(a.session_id)?;
    let limit = bounded_limit(a.limit, DEFAULT_TIMELINE_LIMIT, MAX_TIMELINE_LIMIT)?;
    let after = a.after_seq.unwrap_or(0);
    // The page first, then the session: its head is then at least the
    // page's last seq, so `has_more` never misses events appended between.
    let events = st
        .store
        .session_events(&caller.project, id.as_str(), after, limit)
        .await?;
    let session = st
        .store
        .get_session(&caller.project, id.as_str())
        .await?
        .ok_or(ApiError::NotFound("session not found"))?;
    let head = session.head_seq;
    let last = events.last().map(|e| e.seq);
    let has_more = last.is_some_and(|s| s < head);
    let counters = counters(&session.counters);
    let mut session = to_value(&SessionOut::from(session))?;
    if let Some(s) = session.as_object_mut() {
        s.insert("counters".into(), counters);
    }
    let events: Vec<EventOut> = events.into_iter().map(EventOut::from).collect();
    Ok(json!({
        "session": session,
        "events": to_value(&events)?,
        "has_more": has_more,
        "next_after_seq": if has_more { last } else { None },
    }))
}

pub async fn verify(st: &AppState, caller: &Caller, a: VerifySession) -> Result<Value, ApiError> {
    let id = session_id(a.session_id)?;
    let report = verify_session(st.store.as_ref(), &caller.project, id.as_str())
        .await?
        .ok_or(ApiError::NotFound("session not found"))?;
    to_value(&VerifyOut::from(report))
}
