//! Each vendor API, driven over HTTP with its document's own examples.

mod agentlens;
mod cross;
mod fabraix;
mod realm;
mod secureagentics;
