//! Canonical query types shared by every dialect's query API.

use crate::{Event, Kind, Micros, Session, SessionStatus, Severity};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Order {
    Asc,
    #[default]
    Desc,
}

/// A keyset position: the sort key and the storage position of the last row
/// returned. For queries filtered to one session the key is the seq; otherwise
/// it is the event time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub key: i64,
    pub pos: i64,
}

impl Cursor {
    /// Opaque text form used by the HTTP APIs.
    pub fn encode(&self) -> String {
        format!("{:x}.{:x}", self.key as u64, self.pos as u64)
    }

    pub fn decode(s: &str) -> Option<Self> {
        let (a, b) = s.split_once('.')?;
        Some(Cursor {
            key: u64::from_str_radix(a, 16).ok()? as i64,
            pos: u64::from_str_radix(b, 16).ok()? as i64,
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
    fn cursor_roundtrip() {
        for c in [
            Cursor { key: 0, pos: 1 },
            Cursor {
                key: -5,
                pos: i64::MAX,
            },
        ] {
            assert_eq!(Cursor::decode(&c.encode()), Some(c));
        }
        assert_eq!(Cursor::decode("zz"), None);
        assert_eq!(Cursor::decode("1.zz"), None);
    }
}
