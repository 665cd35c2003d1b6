//! Each vendor API, driven over HTTP with its document's own examples.

mod agentlens;
mod cross;
mod fabraix;
mod fabraix_limits;
mod realm;
mod secureagentics;
