//! Dialects: each turns a vendor's (or our own) wire format into canonical
//! [`agentledger_core::NewEvent`]s and renders results back. Pure functions,
//! no I/O; the server owns HTTP.

pub mod agentlens;
pub mod common;
pub mod error;
pub mod fabraix;
pub mod native;
pub mod otlp;
pub mod realm;
pub mod secureagentics;

pub use error::InputError;
