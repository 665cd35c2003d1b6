//! Identifiers. Every id that comes from a client validates itself on `parse`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use ulid::Ulid;

use crate::limits::{MAX_AGENT_ID_CHARS, MAX_SESSION_ID_CHARS};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("must not be empty")]
    Empty,
    #[error("must be at most {0} characters")]
    TooLong(usize),
    #[error("must not contain control characters")]
    ControlCharacter,
    #[error("is not a valid event id (expected a 26-character ULID)")]
    BadEventId,
}

/// Internal numeric id of a project (tenant). Opaque outside the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProjectId(pub i64);

/// A 128-bit event id, rendered as a ULID. Generated with a fresh random part
/// for every event (no monotonic increment) so ids are not guessable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventId(pub Ulid);

impl EventId {
    /// A new id for an event received at `now`.
    pub fn generate(now: crate::Micros) -> Self {
        let random = buffered_random16();
        let ms = (now.0.max(0) / 1000) as u64;
        EventId(Ulid::from_parts(ms, u128::from_le_bytes(random)))
    }
    pub fn to_bytes(self) -> [u8; 16] {
        self.0.to_bytes()
    }
    pub fn from_bytes(b: [u8; 16]) -> Self {
        EventId(Ulid::from_bytes(b))
    }
}

/// 16 bytes from the OS random source, read 4 KiB at a time per thread (one
/// system call per 256 ids instead of one per id on the writer's hot path).
/// The bytes are the kernel's CSPRNG output and each is handed out once.
fn buffered_random16() -> [u8; 16] {
    use std::cell::RefCell;
    const BUF: usize = 4096;
    thread_local! {
        static POOL: RefCell<(Box<[u8; BUF]>, usize)> = RefCell::new((Box::new([0; BUF]), BUF));
    }
    POOL.with(|p| {
        let mut p = p.borrow_mut();
        if p.1 + 16 > BUF {
            getrandom_fill(&mut p.0[..]);
            p.1 = 0;
        }
        let at = p.1;
        let mut out = [0u8; 16];
        out.copy_from_slice(&p.0[at..at + 16]);
        // Used bytes are cleared so they never linger in memory.
        p.0[at..at + 16].fill(0);
        p.1 += 16;
        out
    })
}

// getrandom only fails when the OS has no entropy source at all; a
// time-and-counter fallback would make ids guessable, so we abort loudly.
fn getrandom_fill(buf: &mut [u8]) {
    if let Err(e) = getrandom::fill(buf) {
        panic!("operating system random source unavailable: {e}");
    }
}

impl EventId {
    /// The same 128 bits as a UUID string (the Fabraix rendering).
    pub fn to_uuid_string(self) -> String {
        uuid_text(self.to_bytes())
    }

    /// `prefix` + the ULID in lower case (`evt_…` for Secureagentics, `event_…` for Realm).
    pub fn to_prefixed(self, prefix: &str) -> String {
        format!("{prefix}{}", self.0.to_string().to_ascii_lowercase())
    }

    /// Parse any rendering an API hands out: a ULID (either case), a UUID (with
    /// or without dashes), optionally behind an `evt_` or `event_` prefix.
    pub fn parse_any(s: &str) -> Result<Self, IdError> {
        let bare = s
            .strip_prefix("evt_")
            .or_else(|| s.strip_prefix("event_"))
            .unwrap_or(s);
        if bare.len() == 26 {
            return Ulid::from_string(&bare.to_ascii_uppercase())
                .map(EventId)
                .map_err(|_| IdError::BadEventId);
        }
        let hexits: String = bare.chars().filter(|c| *c != '-').collect();
        let dashes_ok = bare.len() == 32
            || (bare.len() == 36 && [8, 13, 18, 23].iter().all(|&i| bare.as_bytes()[i] == b'-'));
        if hexits.len() == 32 && dashes_ok {
            let mut b = [0u8; 16];
            hex::decode_to_slice(&hexits, &mut b).map_err(|_| IdError::BadEventId)?;
            return Ok(EventId::from_bytes(b));
        }
        Err(IdError::BadEventId)
    }
}

impl EventId {
    /// The id's text (as `Display` writes it) in `buf`, without allocating.
    pub fn encode(self, buf: &mut [u8; ulid::ULID_LEN]) -> &str {
        self.0.array_to_str(buf)
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for EventId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ulid::from_string(s)
            .map(EventId)
            .map_err(|_| IdError::BadEventId)
    }
}

fn check_text(s: &str, max: usize) -> Result<(), IdError> {
    if s.is_empty() {
        return Err(IdError::Empty);
    }
    if s.chars().count() > max {
        return Err(IdError::TooLong(max));
    }
    if s.chars().any(char::is_control) {
        return Err(IdError::ControlCharacter);
    }
    Ok(())
}

macro_rules! text_id {
    ($(#[$doc:meta])* $name:ident, $max:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub fn parse(s: impl Into<String>) -> Result<Self, IdError> {
                let s = s.into();
                check_text(&s, $max)?;
                Ok(Self(s))
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, IdError> {
                Self::parse(s)
            }
        }
        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.0
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

text_id!(
    /// A session (run / trace / conversation) id: client-chosen text, 1..=256
    /// characters, no control characters. Unique within a project.
    SessionId,
    MAX_SESSION_ID_CHARS
);
text_id!(
    /// An agent id: 1..=128 characters, no control characters.
    AgentId,
    MAX_AGENT_ID_CHARS
);

impl SessionId {
    /// A server-generated session id (a random UUID v4 in its usual form).
    pub fn generate() -> Self {
        let mut b = [0u8; 16];
        getrandom_fill(&mut b);
        b[6] = (b[6] & 0x0f) | 0x40;
        b[8] = (b[8] & 0x3f) | 0x80;
        SessionId(uuid_text(b))
    }
}

/// 16 bytes in the 8-4-4-4-12 hex form of a UUID.
fn uuid_text(b: [u8; 16]) -> String {
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_stay_unique_across_random_buffer_refills() {
        let now = crate::Micros::now();
        let ids: std::collections::HashSet<_> = (0..2000)
            .map(|_| EventId::generate(now).to_bytes())
            .collect();
        assert_eq!(ids.len(), 2000);
    }

    #[test]
    fn agent_id_rules() {
        assert!(AgentId::parse("my-agent").is_ok());
        assert_eq!(AgentId::parse(""), Err(IdError::Empty));
        assert_eq!(AgentId::parse("a".repeat(129)), Err(IdError::TooLong(128)));
        assert!(
            AgentId::parse("é".repeat(128)).is_ok(),
            "limit counts characters"
        );
        assert_eq!(AgentId::parse("a\nb"), Err(IdError::ControlCharacter));
    }

    #[test]
    fn event_ids_roundtrip_and_differ() {
        let now = crate::Micros::now();
        let a = EventId::generate(now);
        let b = EventId::generate(now);
        assert_ne!(a, b, "same millisecond must still give different ids");
        assert_eq!(a.to_string().parse::<EventId>().unwrap(), a);
        assert_eq!(EventId::from_bytes(a.to_bytes()), a);
        assert!("not-an-id".parse::<EventId>().is_err());
    }

    #[test]
    fn every_rendering_parses_back() {
        let id = EventId::generate(crate::Micros::now());
        for text in [
            id.to_string(),
            id.to_string().to_ascii_lowercase(),
            id.to_uuid_string(),
            id.to_uuid_string().replace('-', ""),
            id.to_prefixed("evt_"),
            id.to_prefixed("event_"),
        ] {
            assert_eq!(EventId::parse_any(&text), Ok(id), "{text}");
        }
        assert_eq!(id.to_uuid_string().len(), 36);
        for bad in [
            "",
            "evt_",
            "event_123",
            "zz",
            &"g".repeat(32),
            "0123456789abcdef0123456789abcdef0",
        ] {
            assert!(EventId::parse_any(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn generated_session_ids_are_uuid_shaped() {
        let s = SessionId::generate();
        assert_eq!(s.as_str().len(), 36);
        assert_eq!(&s.as_str()[14..15], "4");
    }
}
