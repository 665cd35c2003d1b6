//! Each vendor API, driven over HTTP with its document's own examples.

mod agentlens;
mod agentlens_read;
mod agentlens_sdk;
mod cross;
mod fabraix;
mod fabraix_limits;
mod realm;
mod secureagentics;
