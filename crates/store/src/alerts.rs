//! Alerting's storage: rules and destinations per project, and the durable
//! outbox (alerts and their deliveries).
//!
//! Why the outbox is written by the writer: an alert on a denied tool call
//! must exist if and only if the event does. The ingest pipeline hands the
//! project's event rules ([`RuleSet`], from the server's cache: no query on
//! the writer's path) to the store with the request; after the judge ran,
//! the writer matches each stored event (a few comparisons per rule) and
//! inserts the alert and one pending delivery per destination in the
//! append's own transaction. Nothing on that path touches the network.
//! Delivering, and appending the `alert_triggered` event to the causing
//! session, happen after COMMIT in the server's background workers, from
//! these rows, so a crash between COMMIT and delivery loses nothing.
//!
//! Threshold rules are evaluated off the write path by the server over
//! committed events; they open and resolve alerts with
//! [`AlertStore::open_threshold_alert`] and [`AlertStore::resolve_alert`].

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use agentledger_core::verdict::{Decision, Verdict};
use agentledger_core::{Kind, Micros, NewEvent, ProjectId};

use crate::{ProjectRef, StoreResult};

/// Rules a project may hold.
pub const MAX_RULES_PER_PROJECT: usize = 50;
/// Destinations a project may hold.
pub const MAX_DESTINATIONS_PER_PROJECT: usize = 20;
/// Destinations one rule may name.
pub const MAX_DESTINATIONS_PER_RULE: usize = 5;

/// What a rule fires on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Condition {
    /// An event the policy checkpoint decided one of these for (flag, deny).
    Decision { decisions: Vec<Decision> },
    /// An event with a finding of one of these detectors (or detector rules,
    /// as the verdict's findings name them).
    Detector { detectors: Vec<String> },
    /// An event of one of these kinds (`tool_error`, `error`, ...).
    EventKind { kinds: Vec<Kind> },
    /// A measure over a trailing window of committed events passing
    /// `threshold` (evaluated in the background; see the server's
    /// `alerts::threshold`).
    Threshold {
        metric: Metric,
        threshold: f64,
        window_secs: u32,
    },
}

impl Condition {
    pub fn is_threshold(&self) -> bool {
        matches!(self, Condition::Threshold { .. })
    }
}

/// What a threshold rule measures, and per what.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Cost in USD of one session's events in the window.
    SessionCost,
    /// `error` and `tool_error` events of one agent in the window.
    AgentErrors,
    /// Events of the project in the window.
    ProjectEvents,
}

impl Metric {
    pub fn as_str(self) -> &'static str {
        match self {
            Metric::SessionCost => "session_cost",
            Metric::AgentErrors => "agent_errors",
            Metric::ProjectEvents => "project_events",
        }
    }
}

/// A stored rule.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertRule {
    pub id: String,
    pub project_id: ProjectId,
    pub name: String,
    pub condition: Condition,
    /// Destination ids.
    pub destinations: Vec<String>,
    pub created_at: Micros,
}

/// A rule to create (validated by the caller).
#[derive(Debug, Clone)]
pub struct NewRule {
    pub name: String,
    pub condition: Condition,
    pub destinations: Vec<String>,
}

/// Where deliveries go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DestinationKind {
    /// JSON body, signed with HMAC-SHA256 (docs/alerts.md).
    Webhook,
    /// A Slack-compatible incoming webhook (`{"text": ...}`); its URL is
    /// the secret.
    Slack,
}

impl DestinationKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DestinationKind::Webhook => "webhook",
            DestinationKind::Slack => "slack",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "webhook" => Some(DestinationKind::Webhook),
            "slack" => Some(DestinationKind::Slack),
            _ => None,
        }
    }
}

/// A stored destination, secrets included: for the delivery worker only.
/// API views must show [`Destination::host`], never `url` or `secret`.
#[derive(Clone, PartialEq)]
pub struct Destination {
    pub id: String,
    pub project_id: ProjectId,
    pub name: String,
    pub kind: DestinationKind,
    pub url: String,
    /// The HMAC signing secret (webhooks).
    pub secret: Option<String>,
    pub created_at: Micros,
}

impl std::fmt::Debug for Destination {
    // Secrets are never logged, not even by a stray `{:?}`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Destination")
            .field("id", &self.id)
            .field("project_id", &self.project_id)
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("host", &self.host())
            .finish_non_exhaustive()
    }
}

impl Destination {
    /// The URL's host (and port), the only part of the URL ever shown.
    pub fn host(&self) -> String {
        host_of(&self.url)
    }
}

/// The authority of an `http(s)://` URL, without credentials.
pub fn host_of(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    authority
        .rsplit_once('@')
        .map_or(authority, |(_, h)| h)
        .to_owned()
}

/// A destination to create (validated by the caller).
#[derive(Debug, Clone)]
pub struct NewDestination {
    pub name: String,
    pub kind: DestinationKind,
    pub url: String,
    pub secret: Option<String>,
}

/// A project's event rules (not thresholds), handed to the writer with an
/// ingest request.
#[derive(Debug, Clone, Default)]
pub struct RuleSet {
    pub rules: Vec<AlertRule>,
}

impl RuleSet {
    /// The rules `ev` (as stored: judged) fires. Cheap: the verdict is
    /// parsed only when a detector rule exists and the event has one.
    pub fn matching(&self, ev: &NewEvent) -> Vec<&AlertRule> {
        let mut findings: Option<Vec<(String, String)>> = None;
        self.rules
            .iter()
            .filter(|r| match &r.condition {
                Condition::Decision { decisions } => ev
                    .judgement
                    .as_ref()
                    .is_some_and(|j| decisions.contains(&j.decision)),
                Condition::EventKind { kinds } => kinds.contains(&ev.kind),
                Condition::Detector { detectors } => {
                    let found = findings.get_or_insert_with(|| {
                        ev.judgement
                            .as_ref()
                            .and_then(|j| serde_json::from_str::<Verdict>(j.verdict.get()).ok())
                            .map(|v| {
                                v.findings
                                    .into_iter()
                                    .map(|f| (f.detector, f.rule))
                                    .collect()
                            })
                            .unwrap_or_default()
                    });
                    found
                        .iter()
                        .any(|(d, r)| detectors.iter().any(|want| want == d || want == r))
                }
                Condition::Threshold { .. } => false,
            })
            .collect()
    }
}

/// Whether an alert is still open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertStatus {
    Open,
    Resolved,
}

impl AlertStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertStatus::Open => "open",
            AlertStatus::Resolved => "resolved",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "open" => Some(AlertStatus::Open),
            "resolved" => Some(AlertStatus::Resolved),
            _ => None,
        }
    }
}

/// Which of an alert's two moments a delivery or an event records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    Triggered,
    Resolved,
}

impl Transition {
    pub fn as_str(self) -> &'static str {
        match self {
            Transition::Triggered => "triggered",
            Transition::Resolved => "resolved",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "triggered" => Some(Transition::Triggered),
            "resolved" => Some(Transition::Resolved),
            _ => None,
        }
    }
}

/// An alert: one rule firing on one event (open until an admin resolves
/// it), or one threshold rule passing its threshold for one subject (open
/// until the measure falls back).
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    pub id: String,
    pub project_id: ProjectId,
    pub rule_id: String,
    pub rule_name: String,
    /// The rule's condition as JSON (as it was when the alert fired).
    pub condition: String,
    /// The session the `alert_triggered` event is appended to.
    pub session_id: String,
    /// The causing event (event rules only).
    pub event_id: Option<String>,
    /// What the alert is about: the session, agent or project measured
    /// (thresholds), or the causing event's id.
    pub subject: String,
    pub value: f64,
    pub threshold: f64,
    pub message: String,
    pub status: AlertStatus,
    pub created_at: Micros,
    pub resolved_at: Option<Micros>,
    /// Seq of the `alert_triggered` event, once appended.
    pub triggered_seq: Option<u64>,
    /// Seq of the `alert_resolved` event, once appended.
    pub resolved_seq: Option<u64>,
}

/// An alert to open (the store gives it its id and time).
#[derive(Debug, Clone)]
pub struct NewAlert {
    pub rule_id: String,
    pub rule_name: String,
    pub condition: String,
    pub session_id: String,
    pub event_id: Option<String>,
    pub subject: String,
    pub value: f64,
    pub threshold: f64,
    pub message: String,
    pub destinations: Vec<String>,
}

impl NewAlert {
    /// The alert `rule` raises for a stored event.
    pub fn for_event(rule: &AlertRule, ev: &NewEvent, event_id: &str) -> NewAlert {
        let what = match &ev.judgement {
            Some(j) if matches!(rule.condition, Condition::Decision { .. }) => {
                format!("decision {}", j.decision)
            }
            _ => format!("a {} event", ev.kind),
        };
        NewAlert {
            rule_id: rule.id.clone(),
            rule_name: rule.name.clone(),
            condition: serde_json::to_string(&rule.condition).unwrap_or_default(),
            session_id: ev.session_id.as_str().to_owned(),
            event_id: Some(event_id.to_owned()),
            subject: event_id.to_owned(),
            value: 1.0,
            threshold: 1.0,
            message: format!(
                "{}: {what} by agent {} in session {}",
                rule.name,
                ev.agent_id.as_str(),
                ev.session_id.as_str()
            ),
            destinations: rule.destinations.clone(),
        }
    }
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryStatus {
    /// Not delivered yet; tried again at `next_attempt_at`.
    Pending,
    Delivered,
    /// Given up after the configured number of attempts (or its destination
    /// was deleted).
    Failed,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Failed => "failed",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "pending" => Some(DeliveryStatus::Pending),
            "delivered" => Some(DeliveryStatus::Delivered),
            "failed" => Some(DeliveryStatus::Failed),
            _ => None,
        }
    }
}

/// One alert's delivery to one destination.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    /// Sent as `X-Agentledger-Delivery`: the same on every attempt.
    pub id: String,
    pub project_id: ProjectId,
    pub alert_id: String,
    pub destination_id: String,
    pub transition: Transition,
    pub status: DeliveryStatus,
    pub attempts: u32,
    pub next_attempt_at: Micros,
    pub last_error: Option<String>,
    pub last_status: Option<u16>,
    pub created_at: Micros,
    pub delivered_at: Option<Micros>,
}

/// How one attempt ended.
#[derive(Debug, Clone)]
pub enum AttemptResult {
    Delivered {
        status: u16,
    },
    /// Try again at `next_at`.
    Retry {
        error: String,
        status: Option<u16>,
        next_at: Micros,
    },
    /// Give up (dead letter).
    Failed {
        error: String,
        status: Option<u16>,
    },
}

/// A random id with a prefix (`alr_`, `dlv_`, ...): 80 random bits.
pub fn new_id(prefix: &str) -> String {
    let mut b = [0u8; 10];
    if getrandom::fill(&mut b).is_err() {
        // No randomness: fall back on the clock (ids stay unique per µs).
        b[..8].copy_from_slice(&Micros::now().0.to_be_bytes());
    }
    format!("{prefix}{}", hex::encode(b))
}

/// The outbox rows the writer inserts for one stored event.
pub fn outbox_for(rules: &RuleSet, ev: &NewEvent, event_id: &str) -> Vec<NewAlert> {
    rules
        .matching(ev)
        .into_iter()
        .map(|r| NewAlert::for_event(r, ev, event_id))
        .collect()
}

/// Rules, destinations and the outbox. Every method that names a project's
/// rows takes the caller's project; the background workers' methods that
/// span projects say so.
#[async_trait]
pub trait AlertStore: Send + Sync {
    async fn create_destination(
        &self,
        project: &ProjectRef,
        d: NewDestination,
    ) -> StoreResult<Destination>;
    async fn list_destinations(&self, project: &ProjectRef) -> StoreResult<Vec<Destination>>;
    /// False when the project has no destination with that id.
    async fn delete_destination(&self, project: &ProjectRef, id: &str) -> StoreResult<bool>;
    /// A destination of any project, for the delivery worker.
    async fn destination_by_id(&self, id: &str) -> StoreResult<Option<Destination>>;

    async fn create_rule(&self, project: &ProjectRef, r: NewRule) -> StoreResult<AlertRule>;
    /// The project's rules (`None`: every project's, for the server's cache).
    async fn list_rules(&self, project: Option<&ProjectRef>) -> StoreResult<Vec<AlertRule>>;
    async fn delete_rule(&self, project: &ProjectRef, id: &str) -> StoreResult<bool>;

    /// The project's alerts, newest first (`open_only`: those not resolved).
    async fn list_alerts(
        &self,
        project: &ProjectRef,
        open_only: bool,
        limit: u32,
    ) -> StoreResult<Vec<Alert>>;
    /// The project's open threshold alerts of one rule (at most `limit`),
    /// for its evaluation: never crowded out by alerts on events.
    async fn open_threshold_alerts(
        &self,
        project: &ProjectRef,
        rule_id: &str,
        limit: u32,
    ) -> StoreResult<Vec<Alert>>;
    /// An alert of any project, by id (for the delivery worker).
    async fn get_alert(&self, id: &str) -> StoreResult<Option<Alert>>;
    /// Open a threshold alert for `(rule, subject)` with its deliveries, in
    /// one transaction; `None` if one is already open.
    async fn open_threshold_alert(
        &self,
        project: &ProjectRef,
        a: NewAlert,
    ) -> StoreResult<Option<Alert>>;
    /// Resolve an open alert of the project and queue its `resolved`
    /// deliveries to `destinations`, in one transaction; false if it is not
    /// open (or not the project's).
    async fn resolve_alert(
        &self,
        project: &ProjectRef,
        id: &str,
        destinations: &[String],
    ) -> StoreResult<bool>;
    /// Alerts of every project whose `alert_triggered` (or, resolved,
    /// `alert_resolved`) event is not appended yet, oldest first.
    async fn alerts_to_record(&self, limit: u32) -> StoreResult<Vec<Alert>>;
    /// Remember the seqs of alerts' appended events (alert id, which
    /// event, seq), in one transaction.
    async fn mark_alerts_recorded(&self, marks: &[(String, Transition, u64)]) -> StoreResult<()>;

    /// Pending deliveries of every project due at `now`, oldest due first.
    async fn due_deliveries(&self, now: Micros, limit: u32) -> StoreResult<Vec<Delivery>>;
    /// Take a due delivery for an attempt: moves its next attempt to
    /// `lease_until` (so no other worker or node takes it meanwhile, and a
    /// crash mid-attempt retries it then); false if someone else took it.
    async fn claim_delivery(
        &self,
        id: &str,
        due_at: Micros,
        lease_until: Micros,
    ) -> StoreResult<bool>;
    async fn record_attempt(&self, id: &str, result: AttemptResult) -> StoreResult<()>;
    /// The project's deliveries, newest first (`alert`: of that alert only).
    async fn list_deliveries(
        &self,
        project: &ProjectRef,
        alert: Option<&str>,
        limit: u32,
    ) -> StoreResult<Vec<Delivery>>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use agentledger_core::verdict::Judgement;
    use agentledger_core::{AgentId, Dialect, SessionId, Severity};
    use serde_json::value::RawValue;

    fn ev(kind: Kind, decision: Option<Decision>, detector: Option<&str>) -> NewEvent {
        let judgement = decision.map(|d| {
            let mut v = Verdict {
                decision: d,
                policies: vec![],
                reasons: vec![],
                findings: vec![],
            };
            if let Some(det) = detector {
                v.findings.push(agentledger_core::verdict::Finding {
                    detector: det.into(),
                    rule: format!("{det}.rule"),
                    json_pointer: "/x".into(),
                    start: 0,
                    end: 1,
                    confidence: 1.0,
                });
            }
            Judgement::new(&v)
        });
        NewEvent {
            session_id: SessionId::parse("s1").unwrap(),
            agent_id: AgentId::parse("a1").unwrap(),
            kind,
            source_type: kind.as_str().into(),
            dialect: Dialect::Native,
            severity: Severity::Info,
            client_ts: None,
            payload: RawValue::from_string("{}".into()).unwrap(),
            metadata: RawValue::from_string("{}".into()).unwrap(),
            judgement,
        }
    }

    fn rule(c: Condition) -> AlertRule {
        AlertRule {
            id: "r".into(),
            project_id: ProjectId(1),
            name: "n".into(),
            condition: c,
            destinations: vec![],
            created_at: Micros(0),
        }
    }

    #[test]
    fn rules_match_decisions_kinds_and_detectors_only() {
        let set = RuleSet {
            rules: vec![
                rule(Condition::Decision {
                    decisions: vec![Decision::Deny],
                }),
                rule(Condition::EventKind {
                    kinds: vec![Kind::ToolError],
                }),
                rule(Condition::Detector {
                    detectors: vec!["secrets".into()],
                }),
                rule(Condition::Threshold {
                    metric: Metric::ProjectEvents,
                    threshold: 0.0,
                    window_secs: 60,
                }),
            ],
        };
        let n = |e: &NewEvent| set.matching(e).len();
        assert_eq!(n(&ev(Kind::ToolCall, Some(Decision::Deny), None)), 1);
        assert_eq!(n(&ev(Kind::ToolCall, Some(Decision::Allow), None)), 0);
        assert_eq!(n(&ev(Kind::ToolCall, Some(Decision::Flag), None)), 0);
        assert_eq!(n(&ev(Kind::ToolError, None, None)), 1);
        assert_eq!(
            n(&ev(Kind::ToolCall, Some(Decision::Flag), Some("secrets"))),
            1
        );
        assert_eq!(
            n(&ev(Kind::ToolError, Some(Decision::Deny), Some("secrets"))),
            3
        );
    }

    #[test]
    fn host_hides_path_query_and_credentials() {
        assert_eq!(
            host_of("https://hooks.slack.com/services/T0/B0/secret"),
            "hooks.slack.com"
        );
        assert_eq!(host_of("http://u:p@127.0.0.1:9/x?y"), "127.0.0.1:9");
    }

    #[test]
    fn conditions_round_trip_as_json() {
        let c = Condition::Threshold {
            metric: Metric::AgentErrors,
            threshold: 3.0,
            window_secs: 300,
        };
        let s = serde_json::to_string(&c).unwrap();
        assert_eq!(
            s,
            r#"{"type":"threshold","metric":"agent_errors","threshold":3.0,"window_secs":300}"#
        );
        assert_eq!(serde_json::from_str::<Condition>(&s).unwrap(), c);
    }
}
