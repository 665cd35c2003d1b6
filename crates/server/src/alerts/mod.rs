//! Alerting, after COMMIT: the rule cache the ingest pipeline hands to the
//! store's writer (which writes the outbox in the append's transaction, see
//! `agentledger_store::alerts`), and three background workers that read the
//! outbox and never touch the acknowledgement path:
//!
//! - [`record`]: appends `alert_triggered` / `alert_resolved` to the causing
//!   session through the normal append path, under an idempotency key per
//!   alert, so a crash between the append and its bookkeeping cannot append
//!   it twice;
//! - [`deliver`]: signed webhook and Slack deliveries, at least once, with
//!   backoff and jitter, bounded per destination, dead-lettered after the
//!   configured attempts;
//! - [`threshold`]: evaluates threshold rules over committed events.
//!
//! docs/alerts.md is the user's account of all this.

pub mod admin;
pub mod deliver;
pub mod record;
pub mod sign;
pub mod threshold;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::{Notify, watch};

use agentledger_store::EventStore;
use agentledger_store::alerts::{AlertRule, RuleSet};

/// Operator settings of alerting (`serve --alert-*`).
#[derive(Debug, Clone)]
pub struct AlertConfig {
    /// Attempts per delivery before it is dead-lettered (`failed`).
    pub max_attempts: u32,
    /// Timeout of one delivery attempt (connect, send, answer).
    pub timeout: Duration,
    /// Attempts in flight per destination.
    pub per_destination: usize,
    /// The first retry's delay; doubled per attempt up to `retry_max`.
    pub retry_base: Duration,
    pub retry_max: Duration,
    /// How often the workers look at the outbox when nothing woke them.
    pub poll: Duration,
    /// How often threshold rules are evaluated.
    pub threshold_every: Duration,
}

impl Default for AlertConfig {
    fn default() -> Self {
        AlertConfig {
            max_attempts: 12,
            timeout: Duration::from_secs(10),
            per_destination: 4,
            retry_base: Duration::from_secs(1),
            retry_max: Duration::from_secs(600),
            poll: Duration::from_millis(500),
            threshold_every: Duration::from_secs(15),
        }
    }
}

/// The rules of every project, as the ingest pipeline and the workers read
/// them; reloaded from the store after every change through this node's API
/// and every few seconds (another node's changes).
pub struct Alerting {
    pub config: AlertConfig,
    /// Event rules per project id (what the writer matches).
    events: RwLock<HashMap<i64, Arc<RuleSet>>>,
    /// Threshold rules of every project.
    thresholds: RwLock<Vec<AlertRule>>,
    /// Wake the recorder and the delivery worker (an alert was written).
    wake_record: Notify,
    wake_deliver: Notify,
    stop: watch::Sender<bool>,
}

/// The shortest time between two passes of a worker over the outbox.
const MIN_GAP: Duration = Duration::from_millis(50);

/// How often the rule cache is reloaded from the store.
const RELOAD_EVERY: Duration = Duration::from_secs(5);

impl Alerting {
    pub fn new(config: AlertConfig) -> Self {
        Alerting {
            config,
            events: RwLock::default(),
            thresholds: RwLock::default(),
            wake_record: Notify::new(),
            wake_deliver: Notify::new(),
            stop: watch::channel(false).0,
        }
    }

    /// The project's event rules, for an ingest request (`None`: it has none).
    pub fn event_rules(&self, project: i64) -> Option<Arc<RuleSet>> {
        self.events
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&project)
            .cloned()
    }

    pub fn threshold_rules(&self) -> Vec<AlertRule> {
        self.thresholds
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Read every project's rules from the store into the cache.
    pub async fn reload(&self, store: &dyn EventStore) -> agentledger_store::StoreResult<()> {
        let rules = store.list_rules(None).await?;
        let mut events: HashMap<i64, RuleSet> = HashMap::new();
        let mut thresholds = Vec::new();
        for r in rules {
            if r.condition.is_threshold() {
                thresholds.push(r);
            } else {
                events.entry(r.project_id.0).or_default().rules.push(r);
            }
        }
        *self.events.write().unwrap_or_else(|p| p.into_inner()) =
            events.into_iter().map(|(k, v)| (k, Arc::new(v))).collect();
        *self.thresholds.write().unwrap_or_else(|p| p.into_inner()) = thresholds;
        Ok(())
    }

    /// A receiver that turns true when the server stops.
    pub fn stopping(&self) -> watch::Receiver<bool> {
        self.stop.subscribe()
    }

    /// Stop the workers (before the store closes).
    pub fn shutdown(&self) {
        let _ = self.stop.send(true);
    }

    /// Start the background workers.
    pub fn spawn_workers(self: &Arc<Self>, store: Arc<dyn EventStore>) {
        let me = self.clone();
        let s = store.clone();
        tokio::spawn(async move {
            let mut stop = me.stopping();
            loop {
                tokio::select! {
                    _ = stop.changed() => break,
                    _ = tokio::time::sleep(RELOAD_EVERY) => {}
                }
                if let Err(e) = me.reload(s.as_ref()).await {
                    tracing::warn!(error = %e, "could not reload the alert rules");
                }
            }
        });
        tokio::spawn(record::run(self.clone(), store.clone()));
        tokio::spawn(deliver::run(self.clone(), store.clone()));
        tokio::spawn(threshold::run(self.clone(), store));
    }

    /// An alert may have been written: the workers look now rather than
    /// at their next poll.
    pub fn wake(&self) {
        self.wake_record.notify_one();
        self.wake_deliver.notify_one();
    }

    /// Sleep until woken, `every` passed, or the server stops (true). At
    /// least [`MIN_GAP`] passes first, so a stream of wakes (every
    /// acknowledged request of a project with rules wakes the workers)
    /// costs at most a pass per gap, not a pass per request.
    async fn pause(wake: &Notify, stop: &mut watch::Receiver<bool>, every: Duration) -> bool {
        tokio::select! {
            _ = stop.changed() => return true,
            _ = tokio::time::sleep(MIN_GAP.min(every)) => {}
        }
        tokio::select! {
            _ = stop.changed() => true,
            _ = wake.notified() => *stop.borrow(),
            _ = tokio::time::sleep(every) => *stop.borrow(),
        }
    }
}
