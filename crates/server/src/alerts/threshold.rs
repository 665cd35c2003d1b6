//! Threshold rules, evaluated every `--alert-threshold-every` over committed
//! events (never on the acknowledgement path): a measure per subject over
//! the rule's trailing window; an alert opens when a subject's measure
//! reaches the threshold and resolves when it falls below. Events recording
//! alerts are not counted (an alert must not keep itself open).
//!
//! Bounded: each rule reads at most one page of the store's listings per
//! pass (10,000 events counted for `project_events`, the last 1,000 errors
//! for `agent_errors`, the 1,000 costliest sessions for `session_cost`).

use std::collections::HashMap;
use std::sync::Arc;

use agentledger_core::{Kind, Micros};
use agentledger_store::alerts::{AlertRule, AlertStatus, Condition, Metric, NewAlert};
use agentledger_store::{EventQuery, EventStore, Order, ProjectRef, StoreResult, UsageGroup};

use super::Alerting;

/// Open alerts of one rule looked at per pass (subjects measured per pass
/// are at most 1,000).
const MAX_OPEN_PER_RULE: u32 = 5000;
/// Errors read per `agent_errors` pass.
const MAX_ERRORS_READ: u32 = 1000;

pub async fn run(alerting: Arc<Alerting>, store: Arc<dyn EventStore>) {
    let mut stop = alerting.stopping();
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            _ = tokio::time::sleep(alerting.config.threshold_every) => {}
        }
        let rules = alerting.threshold_rules();
        if rules.is_empty() {
            continue;
        }
        let projects = match store.list_projects().await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "alerts: could not list projects");
                continue;
            }
        };
        let mut woke = false;
        for rule in rules {
            let Some(project) = projects.iter().find(|p| p.id == rule.project_id) else {
                continue;
            };
            match evaluate(store.as_ref(), project, &rule).await {
                Ok(changed) => woke |= changed,
                Err(e) => {
                    tracing::warn!(error = %e, rule = %rule.id, "alerts: a threshold rule was not evaluated")
                }
            }
        }
        if woke {
            alerting.wake();
        }
    }
}

/// What one subject measured, and the session its alert is recorded in.
struct Measure {
    value: f64,
    session: String,
}

/// Every kind but the server's own records (alerts, erasures).
fn counted_kinds() -> Vec<Kind> {
    Kind::ALL
        .iter()
        .copied()
        .filter(|k| {
            !matches!(
                k,
                Kind::AlertTriggered | Kind::AlertResolved | Kind::EventErased
            )
        })
        .collect()
}

async fn measure(
    store: &dyn EventStore,
    project: &ProjectRef,
    metric: Metric,
    window_secs: u32,
) -> StoreResult<HashMap<String, Measure>> {
    let from = Micros(Micros::now().0 - i64::from(window_secs) * 1_000_000);
    let mut out = HashMap::new();
    match metric {
        Metric::ProjectEvents => {
            let page = store
                .query_events(
                    project,
                    EventQuery {
                        kinds: counted_kinds(),
                        from: Some(from),
                        order: Order::Desc,
                        limit: 1,
                        ..EventQuery::default()
                    },
                )
                .await?;
            if let (Some(total), Some(last)) = (page.total, page.events.first()) {
                out.insert(
                    "project".to_owned(),
                    Measure {
                        value: total as f64,
                        session: last.session_id.clone(),
                    },
                );
            }
        }
        Metric::AgentErrors => {
            let page = store
                .query_events(
                    project,
                    EventQuery {
                        kinds: vec![Kind::Error, Kind::ToolError],
                        from: Some(from),
                        order: Order::Desc,
                        limit: MAX_ERRORS_READ,
                        skip_total: true,
                        ..EventQuery::default()
                    },
                )
                .await?;
            // Newest first: the first event seen of an agent names the session.
            for ev in page.events {
                out.entry(ev.agent_id.clone())
                    .or_insert(Measure {
                        value: 0.0,
                        session: ev.session_id.clone(),
                    })
                    .value += 1.0;
            }
        }
        Metric::SessionCost => {
            let rows = store
                .usage(
                    project,
                    EventQuery {
                        from: Some(from),
                        ..EventQuery::default()
                    },
                    Some(UsageGroup::Session),
                )
                .await?;
            for r in rows {
                if let Some(s) = r.group {
                    out.insert(
                        s.clone(),
                        Measure {
                            value: r.cost_usd,
                            session: s,
                        },
                    );
                }
            }
        }
    }
    Ok(out)
}

/// Open and resolve the rule's alerts; true if any changed.
pub async fn evaluate(
    store: &dyn EventStore,
    project: &ProjectRef,
    rule: &AlertRule,
) -> StoreResult<bool> {
    let Condition::Threshold {
        metric,
        threshold,
        window_secs,
    } = rule.condition
    else {
        return Ok(false);
    };
    let measured = measure(store, project, metric, window_secs).await?;
    let mut changed = false;
    // Resolve what fell below (open alerts of this rule, any subject).
    let open = store
        .open_threshold_alerts(project, &rule.id, MAX_OPEN_PER_RULE)
        .await?;
    for a in open.iter().filter(|a| a.status == AlertStatus::Open) {
        let now = measured.get(&a.subject).map_or(0.0, |m| m.value);
        if now < threshold
            && store
                .resolve_alert(project, &a.id, &rule.destinations)
                .await?
        {
            changed = true;
        }
    }
    let condition = serde_json::to_string(&rule.condition).unwrap_or_default();
    for (subject, m) in measured {
        if m.value < threshold {
            continue;
        }
        let what = match metric {
            Metric::ProjectEvents => format!("{} events in {window_secs} s", m.value),
            Metric::AgentErrors => {
                format!("{} errors of agent {subject} in {window_secs} s", m.value)
            }
            Metric::SessionCost => format!(
                "session {subject} cost {:.4} USD in {window_secs} s",
                m.value
            ),
        };
        let alert = NewAlert {
            rule_id: rule.id.clone(),
            rule_name: rule.name.clone(),
            condition: condition.clone(),
            session_id: m.session,
            event_id: None,
            subject,
            value: m.value,
            threshold,
            message: format!("{}: {what} (threshold {threshold})", rule.name),
            destinations: rule.destinations.clone(),
        };
        if store.open_threshold_alert(project, alert).await?.is_some() {
            changed = true;
        }
    }
    Ok(changed)
}
