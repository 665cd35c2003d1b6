//! One integration-test binary: every test starts the real server on port 0
//! with a temporary database and talks HTTP to it as a client would.

mod alerts;
mod auth;
mod browser;
mod cli;
mod connections;
mod console;
mod copy;
mod crash;
mod dialects;
mod erase;
mod faults;
mod helpers;
mod hostile;
mod idempotency;
mod ingest;
mod limits;
mod log;
mod mcp;
mod monitor;
mod ops;
mod otel_sdk;
mod otlp;
mod policy;
mod postgres;
mod query;
mod routes_auth;
mod search_fresh;
mod session_state;
mod sessions;
mod tenancy;
mod timestamps;
mod verify;
mod witness;
mod witnessed;
