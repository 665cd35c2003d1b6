//! Canonical model of agentledger: events, sessions, kinds, ids, the hash-chain
//! envelope and its verifier. Pure: no I/O, no async, nothing about HTTP or SQL.

pub mod chain;
pub mod event;
pub mod ids;
pub mod keys;
pub mod kind;
pub mod payload;
pub mod query;
pub mod time;

pub use chain::{ChainVerifier, VerifyReport};
pub use event::{Event, ExportLine, NewEvent, Session, SessionStatus};
pub use ids::{AgentId, EventId, IdError, ProjectId, SessionId};
pub use kind::{Dialect, Kind, Severity};
pub use time::Micros;

/// Hard limits shared by every dialect (DESIGN: "bounded everything").
pub mod limits {
    /// Largest request body any route accepts.
    pub const MAX_BODY_BYTES: usize = 10 * 1024 * 1024;
    /// Largest single payload (or metadata) object.
    pub const MAX_PAYLOAD_BYTES: usize = 1024 * 1024;
    /// Most events in one batch.
    pub const MAX_BATCH_EVENTS: usize = 1000;
    /// Longest agent id.
    pub const MAX_AGENT_ID_CHARS: usize = 128;
    /// Longest session id.
    pub const MAX_SESSION_ID_CHARS: usize = 256;
    /// Longest source type string.
    pub const MAX_SOURCE_TYPE_CHARS: usize = 64;
    /// Longest system prompt stored on a session.
    pub const MAX_SYSTEM_PROMPT_BYTES: usize = 256 * 1024;
}
