//! Prometheus metrics. One struct owns every metric; handlers call its methods.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use agentledger_store::WriterObserver;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DialectLabel {
    dialect: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RejectLabel {
    dialect: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabel {
    method: String,
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LogTaskLabel {
    task: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabel {
    decision: String,
}

/// Policies are a project's own, so their series carry the project: only
/// the operator (who sees every project) reads them.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PolicyLabel {
    project: String,
    policy: String,
    decision: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 100 µs .. ~13 s
    Histogram::new(exponential_buckets(0.0001, 2.0, 18))
}

pub struct Metrics {
    registry: Registry,
    ingested: Family<DialectLabel, Counter>,
    rejected: Family<RejectLabel, Counter>,
    latency: HistogramFamily<RouteLabel>,
    queue_depth: Gauge,
    pending_events: Gauge,
    search_backlog: Gauge,
    commit_events: Histogram,
    commit_seconds: Histogram,
    decisions: Family<DecisionLabel, Counter>,
    policy_verdicts: Family<PolicyLabel, Counter>,
    durability_warnings: Gauge,
    log_leaves: Counter,
    log_checkpoints: Counter,
    log_cosignatures: Counter,
    log_failures: Family<LogTaskLabel, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("agentledger");
        let ingested = Family::<DialectLabel, Counter>::default();
        let rejected = Family::<RejectLabel, Counter>::default();
        let latency: HistogramFamily<RouteLabel> = Family::new_with_constructor(latency_histogram);
        let queue_depth = Gauge::default();
        let pending_events = Gauge::default();
        let search_backlog = Gauge::default();
        let commit_events = Histogram::new(exponential_buckets(1.0, 2.0, 16));
        let commit_seconds = latency_histogram();
        registry.register(
            "events_ingested",
            "Events committed to the ledger",
            ingested.clone(),
        );
        registry.register(
            "events_rejected",
            "Ingest requests refused, by dialect and reason (a batch counts once)",
            rejected.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency",
            latency.clone(),
        );
        registry.register(
            "writer_queue_depth",
            "Requests waiting for the ledger writer",
            queue_depth.clone(),
        );
        registry.register(
            "writer_pending_events",
            "Events accepted for appending and not yet answered",
            pending_events.clone(),
        );
        registry.register(
            "search_backlog_events",
            "Committed events not yet visible to full-text search",
            search_backlog.clone(),
        );
        registry.register(
            "commit_batch_events",
            "Events per group-commit transaction",
            commit_events.clone(),
        );
        registry.register(
            "commit_duration_seconds",
            "Time to write and commit one group",
            commit_seconds.clone(),
        );
        let decisions = Family::<DecisionLabel, Counter>::default();
        let policy_verdicts = Family::<PolicyLabel, Counter>::default();
        registry.register(
            "policy_decisions",
            "Events and action checks judged, by decision",
            decisions.clone(),
        );
        registry.register(
            "policy_verdicts",
            "Verdicts each policy took part in, by project, policy and decision",
            policy_verdicts.clone(),
        );
        let durability_warnings = Gauge::default();
        registry.register(
            "durability_warnings",
            "Database settings that weaken durability (PostgreSQL fsync, \
             synchronous_commit, full_page_writes off), read at start; 0 is safe",
            durability_warnings.clone(),
        );
        let log_leaves = Counter::default();
        let log_checkpoints = Counter::default();
        let log_failures = Family::<LogTaskLabel, Counter>::default();
        let log_cosignatures = Counter::default();
        registry.register(
            "log_cosignatures_received",
            "Witness cosignatures of checkpoints received and kept by this node",
            log_cosignatures.clone(),
        );
        registry.register(
            "log_leaves_integrated",
            "Events added to their project's transparency log by this node",
            log_leaves.clone(),
        );
        registry.register(
            "log_checkpoints_signed",
            "Transparency log checkpoints signed by this node",
            log_checkpoints.clone(),
        );
        registry.register(
            "log_failures",
            "Transparency log passes that failed, by task (integrate, publish, cosign: a \
             witness exchange); the log says why",
            log_failures.clone(),
        );
        Metrics {
            log_cosignatures,
            log_leaves,
            log_checkpoints,
            log_failures,
            durability_warnings,
            decisions,
            policy_verdicts,
            registry,
            ingested,
            rejected,
            latency,
            queue_depth,
            pending_events,
            search_backlog,
            commit_events,
            commit_seconds,
        }
    }

    /// Count a verdict: once by decision, and once per policy that decided it.
    pub fn verdict(&self, project: &str, v: &agentledger_core::verdict::Verdict) {
        let decision = v.decision.as_str().to_owned();
        self.decisions
            .get_or_create(&DecisionLabel {
                decision: decision.clone(),
            })
            .inc();
        for p in &v.policies {
            self.policy_verdicts
                .get_or_create(&PolicyLabel {
                    project: project.to_owned(),
                    policy: p.clone(),
                    decision: decision.clone(),
                })
                .inc();
        }
    }

    /// Leaves one integration pass added.
    pub fn log_integrated(&self, leaves: u64) {
        self.log_leaves.inc_by(leaves);
    }

    pub fn log_checkpoint_signed(&self) {
        self.log_checkpoints.inc();
    }

    /// Cosignatures a witness returned and the store kept.
    pub fn log_cosigned(&self, n: usize) {
        self.log_cosignatures.inc_by(n as u64);
    }

    /// A failed integration pass, publication or witness exchange (`task`: integrate, publish
    /// or cosign).
    pub fn log_failure(&self, task: &str) {
        self.log_failures
            .get_or_create(&LogTaskLabel { task: task.into() })
            .inc();
    }

    /// How many durability-weakening settings the database reported.
    pub fn durability_warnings(&self, n: usize) {
        self.durability_warnings.set(n as i64);
    }

    pub fn ingested(&self, dialect: &str, n: usize) {
        self.ingested
            .get_or_create(&DialectLabel {
                dialect: dialect.into(),
            })
            .inc_by(n as u64);
    }

    pub fn rejected(&self, dialect: &str, reason: &str) {
        self.rejected
            .get_or_create(&RejectLabel {
                dialect: dialect.into(),
                reason: reason.into(),
            })
            .inc();
    }

    pub fn request(&self, method: &str, route: &str, status: u16, elapsed: Duration) {
        self.latency
            .get_or_create(&RouteLabel {
                method: method.into(),
                route: route.into(),
                status,
            })
            .observe(elapsed.as_secs_f64());
    }

    /// Prometheus text exposition, with the writer's queue and the search
    /// index's backlog sampled now.
    pub fn render(&self, queue_depth: usize, pending_events: usize, search_backlog: u64) -> String {
        self.queue_depth.set(queue_depth as i64);
        self.pending_events.set(pending_events as i64);
        self.search_backlog
            .set(i64::try_from(search_backlog).unwrap_or(i64::MAX));
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// Feeds the writer's commits into the metrics.
pub struct CommitObserver(pub Arc<Metrics>);

impl WriterObserver for CommitObserver {
    fn committed(&self, events: usize, _requests: usize, seconds: f64) {
        self.0.commit_events.observe(events as f64);
        self.0.commit_seconds.observe(seconds);
    }
}
