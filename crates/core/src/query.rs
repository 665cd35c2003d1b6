//! Canonical query types shared by every dialect's query API.

use crate::{Event, Kind, Micros, Session, SessionStatus, Severity};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Order {
    Asc,
    #[default]
    Desc,
}

/// A keyset position: the id of the last row returned (an event's id, or a
/// session's). The store finds that row *in the caller's project* and
/// continues after it, so a cursor carries no storage position (row ids
/// would reveal how many events the whole server holds) and names nothing
/// outside the project it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub after: Vec<u8>,
}

/// Longest id a cursor may carry (bytes).
const MAX_CURSOR_ID: usize = 512;

impl Cursor {
    pub fn after(id: impl Into<Vec<u8>>) -> Self {
        Cursor { after: id.into() }
    }

    /// Opaque text form used by the HTTP APIs.
    pub fn encode(&self) -> String {
        format!("c{}", hex::encode(&self.after))
    }

    pub fn decode(s: &str) -> Option<Self> {
        let h = s.strip_prefix('c')?;
        if h.is_empty() || h.len() > 2 * MAX_CURSOR_ID {
            return None;
        }
        Some(Cursor {
            after: hex::decode(h).ok()?,
        })
    }
}

/// Filters for an event listing. Empty lists mean "any".
#[derive(Debug, Clone, Default)]
pub struct EventQuery {
    pub session_id: Option<String>,
    pub agent_id: Option<String>,
    pub kinds: Vec<Kind>,
    pub severities: Vec<Severity>,
    /// Inclusive bounds on the event time (client timestamp, else receive time).
    pub from: Option<Micros>,
    pub to: Option<Micros>,
    /// Full-text terms; every term must occur in the payload.
    pub text: Option<String>,
    /// Restrict to these source types (the dialect's own type names).
    pub source_types: Vec<String>,
    pub dialect: Option<crate::Dialect>,
    /// Only events whose usage names this model (see [`crate::usage`]).
    pub model: Option<String>,
    /// Only events whose verdict is one of these.
    pub decisions: Vec<crate::verdict::Decision>,
    pub order: Order,
    pub limit: u32,
    pub cursor: Option<Cursor>,
    /// Offset paging, for dialects that document it. Ignored when a cursor is given.
    pub offset: u64,
    /// Skip counting the total (cheaper); `total` is then `None`.
    pub skip_total: bool,
}

/// How usage sums are grouped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsageGroup {
    Model,
    Agent,
    Session,
    Kind,
}

/// Token and cost sums over the events that carry usage, for one group (or
/// all, when `group` is `None`).
#[derive(Debug, Clone, PartialEq)]
pub struct UsageRow {
    pub group: Option<String>,
    /// Events that carried any usage figure.
    pub events: u64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cost_usd: f64,
}

#[derive(Debug, Clone)]
pub struct EventPage {
    pub events: Vec<Event>,
    /// Matching events, counted up to [`COUNT_LIMIT`] ([`TEXT_COUNT_LIMIT`]
    /// with a full-text term); `total_capped` says the count stopped there.
    pub total: Option<u64>,
    pub total_capped: bool,
    /// Present when more events match after this page.
    pub next_cursor: Option<Cursor>,
}

/// Matches counted for a listing's `total`, at most: every listing does
/// bounded work however many events match.
pub const COUNT_LIMIT: u64 = 10_000;
/// The same for listings with a full-text term (each counted match is an
/// index probe, not an index entry).
pub const TEXT_COUNT_LIMIT: u64 = 1_000;

#[derive(Debug, Clone, Default)]
pub struct SessionQuery {
    pub agent_id: Option<String>,
    pub status: Option<SessionStatus>,
    /// Inclusive bounds on the session's creation time.
    pub from: Option<Micros>,
    pub to: Option<Micros>,
    pub limit: u32,
    pub cursor: Option<Cursor>,
}

#[derive(Debug, Clone)]
pub struct SessionPage {
    pub sessions: Vec<Session>,
    pub total: u64,
    pub next_cursor: Option<Cursor>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_refuse_anything_else() {
        for c in [
            Cursor::after(vec![0]),
            Cursor::after(b"sess_01".to_vec()),
            Cursor::after([0xffu8; 16].to_vec()),
        ] {
            assert_eq!(Cursor::decode(&c.encode()), Some(c));
        }
        assert_eq!(Cursor::decode("zz"), None);
        assert_eq!(Cursor::decode("1.zz"), None);
        assert_eq!(Cursor::decode("c"), None);
        assert_eq!(Cursor::decode(&format!("c{}", "ab".repeat(513))), None);
    }
}
