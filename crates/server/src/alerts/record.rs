//! Appends `alert_triggered` (and `alert_resolved`) to the session an alert
//! is about, chained like every other event.
//!
//! Why not inside the writer's transaction with the causing event: the
//! writer would then chain a second event the request did not send, outside
//! the judge's fold of the session (the policy state kept beside the head
//! would no longer be the fold of the chain), in two writers. Appending it
//! here through the store's one append path keeps every invariant of an
//! append; the outbox row, written with the causing event, is what makes it
//! certain: until its `triggered_seq` is set this worker keeps trying, and
//! the append's idempotency key (`alert:<id>:triggered`) makes a retry after
//! a crash between the append and that bookkeeping replay instead of
//! appending twice. The event follows its cause by one worker pass
//! (milliseconds; half a second at most after a restart).

use std::sync::Arc;

use serde_json::json;
use sha2::{Digest, Sha256};

use agentledger_core::{AgentId, Dialect, Kind, NewEvent, SessionId, Severity};
use agentledger_store::alerts::{Alert, AlertStatus, Transition};
use agentledger_store::{
    AppendOutcome, AppendRequest, Committed, EventStore, IdempotencyKey, StoreError, StoredReply,
};

use super::Alerting;

/// Alerts recorded per pass.
const BATCH: u32 = 100;

pub async fn run(alerting: Arc<Alerting>, store: Arc<dyn EventStore>) {
    let mut stop = alerting.stopping();
    loop {
        if Alerting::pause(&alerting.wake_record, &mut stop, alerting.config.poll).await {
            break;
        }
        match store.alerts_to_record(BATCH).await {
            Ok(alerts) if alerts.is_empty() => {}
            Ok(alerts) => record(store.as_ref(), alerts).await,
            Err(StoreError::ShuttingDown) => break,
            Err(e) => tracing::warn!(error = %e, "alerts: could not read the outbox"),
        }
    }
}

/// Record a batch: every event queued before any is awaited, so the
/// writer commits them in a group, as it does concurrent ingest; then the
/// seqs are marked in one transaction.
async fn record(store: &dyn EventStore, alerts: Vec<Alert>) {
    let projects = match store.list_projects().await {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(error = %e, "alerts: could not list projects");
            return;
        }
    };
    let mut queued = Vec::new();
    'alerts: for a in &alerts {
        let Some(project) = projects.iter().find(|p| p.id == a.project_id) else {
            tracing::warn!(alert = %a.id, "alerts: the alert's project is gone");
            continue;
        };
        let mut todo = Vec::new();
        if a.triggered_seq.is_none() {
            todo.push(Transition::Triggered);
        }
        if a.status == AlertStatus::Resolved && a.resolved_seq.is_none() {
            todo.push(Transition::Resolved);
        }
        let agent = match store.get_session(project, &a.session_id).await {
            Ok(s) => s.map_or_else(|| "agentledger".to_owned(), |s| s.agent_id),
            Err(e) => {
                tracing::debug!(error = %e, "alerts: recording deferred");
                break;
            }
        };
        for t in todo {
            let outcome = match request(a, &agent, t) {
                Ok(req) => store.enqueue(project, req),
                Err(e) => Err(e),
            };
            match outcome {
                Ok(fut) => queued.push((a.id.clone(), t, Some(fut), None)),
                // Back-pressure: the rest waits for the next pass.
                Err(StoreError::Overloaded | StoreError::ShuttingDown) => break 'alerts,
                Err(e) => queued.push((a.id.clone(), t, None, Some(e))),
            }
        }
    }
    let mut marks = Vec::new();
    for (id, t, fut, refused) in queued {
        let result = match (fut, refused) {
            (Some(fut), _) => fut.await.and_then(seq_of),
            (None, Some(e)) => Err(e),
            (None, None) => continue,
        };
        match result {
            Ok(seq) => marks.push((id, t, seq)),
            Err(e @ (StoreError::Overloaded | StoreError::ShuttingDown)) => {
                tracing::debug!(error = %e, "alerts: recording deferred");
            }
            Err(e) => {
                // The session cannot take it (ended, say): kept as recorded
                // at seq 0 so it is not tried forever; the alert itself and
                // its deliveries are unaffected.
                tracing::warn!(error = %e, alert = %id, "alerts: the alert's event could not be appended to its session");
                marks.push((id, t, 0));
            }
        }
    }
    if let Err(e) = store.mark_alerts_recorded(&marks).await {
        // Tried again next pass: the idempotency keys replay, nothing is
        // appended twice.
        tracing::warn!(error = %e, "alerts: could not mark alerts recorded");
    }
}

/// The event recording an alert's transition.
fn event(a: &Alert, agent: &str, t: Transition) -> Result<NewEvent, StoreError> {
    let condition: serde_json::Value =
        serde_json::from_str(&a.condition).unwrap_or(serde_json::Value::Null);
    let payload = match t {
        Transition::Triggered => json!({
            "alertRuleId": a.rule_id,
            "alertName": a.rule_name,
            "condition": condition,
            "currentValue": a.value,
            "threshold": a.threshold,
            "message": a.message,
            "alertId": a.id,
            "eventId": a.event_id,
        }),
        Transition::Resolved => json!({
            "alertRuleId": a.rule_id,
            "alertName": a.rule_name,
            "resolvedBy": if a.event_id.is_some() { "admin" } else { "threshold" },
            "alertId": a.id,
        }),
    };
    let bad = |what: &str| StoreError::Storage(format!("alert {}: {what}", a.id));
    Ok(NewEvent {
        session_id: SessionId::parse(a.session_id.clone()).map_err(|_| bad("session id"))?,
        agent_id: AgentId::parse(agent.to_owned()).map_err(|_| bad("agent id"))?,
        kind: match t {
            Transition::Triggered => Kind::AlertTriggered,
            Transition::Resolved => Kind::AlertResolved,
        },
        source_type: match t {
            Transition::Triggered => "alert_triggered".into(),
            Transition::Resolved => "alert_resolved".into(),
        },
        dialect: Dialect::Native,
        severity: match t {
            Transition::Triggered => Severity::Warn,
            Transition::Resolved => Severity::Info,
        },
        client_ts: None,
        payload: serde_json::value::to_raw_value(&payload).map_err(|_| bad("payload"))?,
        metadata: agentledger_core::event::empty_object(),
        judgement: None,
    })
}

/// The append of a transition's event, under its idempotency key.
fn request(a: &Alert, agent: &str, t: Transition) -> Result<AppendRequest, StoreError> {
    let key = format!("alert:{}:{}", a.id, t.as_str());
    let fingerprint: [u8; 32] = Sha256::digest(key.as_bytes()).into();
    let render: agentledger_store::Render = Box::new(|c: &Committed<'_>| StoredReply {
        status: 201,
        content_type: "application/json".into(),
        body: json!({"seq": c.appended.first().map(|e| e.seq)})
            .to_string()
            .into_bytes(),
    });
    Ok(AppendRequest {
        events: vec![event(a, agent, t)?],
        idempotency: Some((IdempotencyKey { key, fingerprint }, render)),
        ..AppendRequest::default()
    })
}

/// The seq the event got, or got the first time (a replay).
fn seq_of(outcome: AppendOutcome) -> Result<u64, StoreError> {
    match outcome {
        AppendOutcome::Committed { appended, .. } => appended
            .first()
            .map(|e| e.seq)
            .ok_or_else(|| StoreError::Storage("no event appended".into())),
        AppendOutcome::Replayed(reply) => serde_json::from_slice::<serde_json::Value>(&reply.body)
            .ok()
            .and_then(|v| v["seq"].as_u64())
            .ok_or_else(|| StoreError::Storage("a kept reply without a seq".into())),
        AppendOutcome::NeedsState { .. } => Err(StoreError::Storage(
            "an unjudged request was handed back".into(),
        )),
    }
}
