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
//! (milliseconds; at most `--alert-poll` after a restart).

use std::sync::Arc;

use serde_json::json;
use sha2::{Digest, Sha256};

use agentledger_core::{AgentId, Dialect, Kind, NewEvent, ProjectId, SessionId, Severity};
use agentledger_store::alerts::{Alert, AlertStatus, Transition};
use agentledger_store::{
    AppendOutcome, AppendRequest, Committed, EventStore, IdempotencyKey, ProjectRef, StoreError,
    StoredReply,
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
            Ok(alerts) => {
                for a in alerts {
                    record_one(store.as_ref(), &a).await;
                }
            }
            Err(StoreError::ShuttingDown) => break,
            Err(e) => tracing::warn!(error = %e, "alerts: could not read the outbox"),
        }
    }
}

async fn project_of(store: &dyn EventStore, id: ProjectId) -> Option<ProjectRef> {
    store
        .list_projects()
        .await
        .ok()?
        .into_iter()
        .find(|p| p.id == id)
}

async fn record_one(store: &dyn EventStore, a: &Alert) {
    let Some(project) = project_of(store, a.project_id).await else {
        tracing::warn!(alert = %a.id, "alerts: the alert's project is gone");
        return;
    };
    let mut todo = Vec::new();
    if a.triggered_seq.is_none() {
        todo.push(Transition::Triggered);
    }
    if a.status == AlertStatus::Resolved && a.resolved_seq.is_none() {
        todo.push(Transition::Resolved);
    }
    for t in todo {
        match append(store, &project, a, t).await {
            Ok(seq) => {
                if let Err(e) = store.mark_alert_recorded(&a.id, t, seq).await {
                    tracing::warn!(error = %e, alert = %a.id, "alerts: could not mark an alert recorded");
                }
            }
            Err(e @ (StoreError::Overloaded | StoreError::ShuttingDown)) => {
                tracing::debug!(error = %e, "alerts: recording deferred");
                return;
            }
            Err(e) => {
                // The session cannot take it (ended, say): kept as recorded
                // at seq 0 so it is not tried forever; the alert itself and
                // its deliveries are unaffected.
                tracing::warn!(error = %e, alert = %a.id, "alerts: the alert's event could not be appended to its session");
                let _ = store.mark_alert_recorded(&a.id, t, 0).await;
            }
        }
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

/// Append the transition's event once; its seq.
async fn append(
    store: &dyn EventStore,
    project: &ProjectRef,
    a: &Alert,
    t: Transition,
) -> Result<u64, StoreError> {
    let agent = store
        .get_session(project, &a.session_id)
        .await?
        .map_or_else(|| "agentledger".to_owned(), |s| s.agent_id);
    let key = format!("alert:{}:{}", a.id, t.as_str());
    let fingerprint: [u8; 32] = Sha256::digest(key.as_bytes()).into();
    let render: agentledger_store::Render = Box::new(|c: &Committed<'_>| StoredReply {
        status: 201,
        content_type: "application/json".into(),
        body: json!({"seq": c.appended.first().map(|e| e.seq)})
            .to_string()
            .into_bytes(),
    });
    let req = AppendRequest {
        events: vec![event(a, &agent, t)?],
        idempotency: Some((IdempotencyKey { key, fingerprint }, render)),
        ..AppendRequest::default()
    };
    match store.append_request(project, req).await? {
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
