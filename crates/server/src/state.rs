//! Shared application state handed to every handler.

use std::sync::Arc;

use agentledger_dialects::fabraix::SchemaCache;
use agentledger_policy::Engine;
use agentledger_store::EventStore;

use crate::ingest::traces::TraceSessions;
use crate::metrics::Metrics;

#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn EventStore>,
    pub metrics: Arc<Metrics>,
    /// Compiled Fabraix JSON Schemas, by schema hash.
    pub schemas: Arc<SchemaCache>,
    /// OTLP: sessions learnt per trace id.
    pub traces: Arc<TraceSessions>,
    /// The policy checkpoint; `None` with `--no-policy`.
    pub policy: Option<Arc<Engine>>,
    /// SHA-256 of the operator token (`--operator-token`), if one is set.
    pub operator: Option<[u8; 32]>,
    /// Reads in flight per API key.
    pub readers: Arc<crate::auth::ReadGate>,
    /// Recently verified API keys.
    pub auth: Arc<crate::auth::AuthCache>,
    /// Per-key request rate limits (`--rate-limit`); `None` when off.
    pub limiter: Option<Arc<crate::ratelimit::RateLimiter>>,
    /// Committed events for live streams.
    pub live: Arc<crate::live::Live>,
    /// Browsers signed in to the web console.
    pub console: Arc<crate::console::ConsoleState>,
    /// Alert rules (cached) and the outbox's workers.
    pub alerts: Arc<crate::alerts::Alerting>,
    /// `--witness-policy`: the witnesses and the quorum of served checkpoints.
    pub witnessing: Option<Arc<crate::cosign::Witnessing>>,
}
