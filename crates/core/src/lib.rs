//! Canonical model of agentledger: events, sessions, kinds, ids, the hash-chain
//! envelope and its verifier. Pure: no I/O, no async, nothing about HTTP or SQL.

pub mod chain;
pub mod erasure;
pub mod event;
pub mod ids;
pub mod ijson;
pub mod jsonw;
pub mod keys;
pub mod kind;
pub mod payload;
pub mod query;
pub mod time;
pub mod usage;
pub mod verdict;

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
    /// Deepest nesting of arrays and objects inside a payload or metadata
    /// object (the same bound serde_json applies to typed parsing).
    pub const MAX_JSON_DEPTH: usize = 128;

    /// Nesting depth of a JSON text (`{}` is 1), in one pass over its bytes.
    /// Needed because skipping a value as raw text is not depth-limited.
    pub fn json_depth(text: &str) -> usize {
        let (mut depth, mut max, mut in_str, mut escaped) = (0usize, 0usize, false, false);
        for &b in text.as_bytes() {
            if in_str {
                match (escaped, b) {
                    (true, _) => escaped = false,
                    (false, b'\\') => escaped = true,
                    (false, b'"') => in_str = false,
                    _ => {}
                }
                continue;
            }
            match b {
                b'"' => in_str = true,
                b'{' | b'[' => {
                    depth += 1;
                    max = max.max(depth);
                }
                b'}' | b']' => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
        max
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn depth_ignores_brackets_in_strings() {
            assert_eq!(super::json_depth("{}"), 1);
            assert_eq!(super::json_depth(r#"{"a":[{"b":"[[[{{"}]}"#), 3);
            assert_eq!(super::json_depth(r#"{"a":"\\\"[["}"#), 1);
            assert_eq!(
                super::json_depth(&format!("{}{}", "[".repeat(500), "]".repeat(500))),
                500
            );
        }
    }
}
