//! The agentledger server: HTTP routes for every dialect over one port, the
//! CLI, startup and shutdown.

pub mod alerts;
pub mod auth;
pub mod body;
pub mod cli;
pub mod conn;
pub mod console;
pub mod cosign;
pub mod erase;
pub mod error;
pub mod export_proof;
pub mod extract;
pub mod ingest;
pub mod keyfile;
pub mod live;
pub mod log_proofs;
pub mod mcp;
pub mod metrics;
pub mod monitor;
pub mod ratelimit;
pub mod routes;
pub mod startup;
pub mod state;
pub mod transparency;
pub mod witness;

pub use startup::{Application, ServeConfig};
