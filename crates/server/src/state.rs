//! Shared application state handed to every handler.

use std::sync::Arc;

use agentledger_store::EventStore;

use crate::metrics::Metrics;

#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn EventStore>,
    pub metrics: Arc<Metrics>,
}
