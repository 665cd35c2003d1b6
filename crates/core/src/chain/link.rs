//! Linking an event onto its session's chain: the one function every store
//! backend calls to turn a [`NewEvent`] into a stored row's chained fields.
//!
//! A backend owns the transaction, the ids and the clock; this function owns
//! every rule about what follows from them: the next seq, the envelope
//! (current version) and its hash, the usage columns read out of the payload,
//! and how the session's head moves (first/last time, ended, counters,
//! tags). Two backends that both call it cannot drift apart, and `verify`
//! re-derives the same facts from the same functions.

use std::collections::HashMap;

use serde_json::value::RawValue;

use super::{ENVELOPE_VERSION, HashInput, SessionHeader, sha256};
use crate::event::SessionCounters;
use crate::usage::Usage;
use crate::{EventId, Kind, Micros, NewEvent};

/// A session's head: where its chain ends and what its row says about the
/// events so far. Backends load it from the session row, pass it to
/// [`link`] for each event, and write it back in the same transaction.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SessionHead {
    /// The last event's seq (0: no event yet).
    pub seq: u64,
    /// The last event's hash (`None`: no event yet).
    pub hash: Option<[u8; 32]>,
    /// A `session_ended` event was appended.
    pub ended: bool,
    /// Earliest and latest event time (the client's, else the server's), µs.
    pub first_at: Option<i64>,
    pub last_at: Option<i64>,
    pub counters: SessionCounters,
    /// The session's tags as stored (a JSON array), from the first
    /// `session_started` event that carried them.
    pub tags: Option<String>,
}

impl SessionHead {
    /// Fold one event's facts into the row's running ones (not the chain's
    /// seq and hash): `time` is the event's client time, else its server
    /// time. `verify` folds stored events with this to check a session row.
    pub fn advance(
        &mut self,
        kind: Kind,
        severity: crate::Severity,
        time: Micros,
        payload: &str,
        usage: &Usage,
    ) {
        let t = time.0;
        self.first_at = Some(self.first_at.map_or(t, |f| f.min(t)));
        self.last_at = Some(self.last_at.map_or(t, |l| l.max(t)));
        if kind == Kind::SessionEnded {
            self.ended = true;
        }
        self.counters.add(kind, severity, usage);
        if self.tags.is_none() && kind == Kind::SessionStarted {
            self.tags = session_tags(payload);
        }
    }
}

/// What a backend needs to know about the event being linked, beyond the
/// event itself.
#[derive(Debug, Clone, Copy)]
pub struct LinkFacts<'a> {
    /// The project's name, as the envelope names it.
    pub project: &'a str,
    pub id: EventId,
    pub server_ts: Micros,
    /// The session's header. Only the first event (seq 1) covers it; the
    /// backend must pass it whenever the head has no event yet.
    pub header: Option<SessionHeader<'a>>,
}

/// The chained fields of one event, ready to be stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Linked {
    pub id: EventId,
    pub seq: u64,
    pub prev_hash: Option<[u8; 32]>,
    pub hash: [u8; 32],
    pub payload_sha256: [u8; 32],
    pub server_ts: Micros,
    pub envelope_version: u32,
    /// The usage columns (model, tokens, cost) read out of the payload.
    pub usage: Usage,
}

/// Why an event could not be linked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    #[error("the first event of session {0:?} needs the session's header")]
    MissingHeader(String),
    #[error("session {0:?} has reached the largest seq")]
    SeqExhausted(String),
}

/// Link `ev` onto `head`: compute its seq, envelope hash and usage, and move
/// the head past it. On error the head is unchanged.
pub fn link(
    head: &mut SessionHead,
    ev: &NewEvent,
    facts: LinkFacts<'_>,
) -> Result<Linked, LinkError> {
    let seq = head
        .seq
        .checked_add(1)
        .filter(|s| i64::try_from(*s).is_ok())
        .ok_or_else(|| LinkError::SeqExhausted(ev.session_id.as_str().to_owned()))?;
    let session_sha256 = if seq == 1 {
        let h = facts
            .header
            .ok_or_else(|| LinkError::MissingHeader(ev.session_id.as_str().to_owned()))?;
        Some(h.hash())
    } else {
        None
    };
    let id_text = facts.id.to_string();
    let payload = ev.payload.get();
    let payload_sha256 = sha256(payload.as_bytes());
    let judgement = ev.judgement.as_ref();
    let hash = HashInput {
        project: facts.project,
        session_id: ev.session_id.as_str(),
        seq,
        event_id: &id_text,
        agent_id: ev.agent_id.as_str(),
        kind: ev.kind.as_str(),
        source_type: &ev.source_type,
        dialect: ev.dialect.as_str(),
        severity: ev.severity.as_str(),
        client_ts: ev.client_ts,
        server_ts: facts.server_ts,
        payload_sha256: &payload_sha256,
        metadata: ev.metadata.get().as_bytes(),
        prev_hash: head.hash.as_ref(),
        version: ENVELOPE_VERSION,
        verdict: judgement.map(|j| j.verdict.get().as_bytes()),
        original_payload_sha256: judgement.and_then(|j| j.original_payload_sha256.as_ref()),
        original_metadata_sha256: judgement.and_then(|j| j.original_metadata_sha256.as_ref()),
        session_sha256,
    }
    .hash();
    let usage = Usage::of(ev.kind, payload).unwrap_or_default();

    let linked = Linked {
        id: facts.id,
        seq,
        prev_hash: head.hash,
        hash,
        payload_sha256,
        server_ts: facts.server_ts,
        envelope_version: ENVELOPE_VERSION,
        usage,
    };
    head.seq = seq;
    head.hash = Some(hash);
    head.advance(
        ev.kind,
        ev.severity,
        ev.client_ts.unwrap_or(facts.server_ts),
        payload,
        &linked.usage,
    );
    Ok(linked)
}

/// The `tags` array of a `session_started` payload, as stored JSON (the
/// AgentLens document types it as an array; anything else carries no tags).
pub fn session_tags(payload: &str) -> Option<String> {
    let mut members: HashMap<String, Box<RawValue>> = serde_json::from_str(payload).ok()?;
    let tags = members.remove("tags")?;
    tags.get().starts_with('[').then(|| tags.get().to_owned())
}

/// A session's stored tags (the JSON array [`session_tags`] kept) as its
/// string members; members of other types are not tags and are left out.
pub fn tag_list(stored: Option<&str>) -> Vec<String> {
    let Some(s) = stored else { return Vec::new() };
    serde_json::from_str::<Vec<serde_json::Value>>(s)
        .map(|v| {
            v.into_iter()
                .filter_map(|t| match t {
                    serde_json::Value::String(s) => Some(s),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::empty_object;
    use crate::{AgentId, Dialect, SessionId, Severity};

    fn event(kind: Kind, payload: &str) -> NewEvent {
        NewEvent {
            session_id: SessionId::parse("s-1").unwrap(),
            agent_id: AgentId::parse("a-1").unwrap(),
            kind,
            source_type: kind.as_str().into(),
            dialect: Dialect::Native,
            severity: Severity::Info,
            client_ts: None,
            payload: RawValue::from_string(payload.into()).unwrap(),
            metadata: empty_object(),
            judgement: None,
        }
    }

    fn header() -> SessionHeader<'static> {
        SessionHeader {
            session_id: "s-1",
            agent_id: "a-1",
            system_prompt: None,
            metadata: b"{}",
            created_at: Micros(1_700_000_000_000_000),
        }
    }

    fn facts(n: i64, header: Option<SessionHeader<'static>>) -> LinkFacts<'static> {
        let ts = Micros(1_700_000_000_000_000 + n);
        LinkFacts {
            project: "p",
            id: EventId::generate(ts),
            server_ts: ts,
            header,
        }
    }

    #[test]
    fn links_a_chain_that_the_verifier_accepts() {
        let mut head = SessionHead::default();
        let mut verifier = crate::ChainVerifier::new();
        let evs = [
            event(Kind::SessionStarted, r#"{"tags":["prod","eu"]}"#),
            event(Kind::ToolCall, r#"{"toolName":"shell"}"#),
            event(
                Kind::LlmResponse,
                r#"{"model":"m","usage":{"inputTokens":3,"outputTokens":4}}"#,
            ),
            event(Kind::SessionEnded, "{}"),
        ];
        for (i, ev) in evs.iter().enumerate() {
            let h = (i == 0).then(header);
            let l = link(&mut head, ev, facts(i as i64, h)).unwrap();
            assert_eq!(l.seq, i as u64 + 1);
            let stored = crate::Event {
                id: l.id,
                project: "p".into(),
                session_id: "s-1".into(),
                seq: l.seq,
                agent_id: "a-1".into(),
                kind: ev.kind,
                source_type: ev.source_type.clone(),
                dialect: ev.dialect,
                severity: ev.severity,
                client_ts: None,
                server_ts: l.server_ts,
                payload: ev.payload.clone(),
                metadata: ev.metadata.clone(),
                payload_sha256: l.payload_sha256,
                prev_hash: l.prev_hash,
                hash: l.hash,
                envelope_version: l.envelope_version,
                verdict: None,
                original_payload_sha256: None,
                original_metadata_sha256: None,
                session_header: (i == 0).then(|| {
                    Box::new(crate::event::SessionHeaderOut {
                        agent_id: "a-1".into(),
                        system_prompt: None,
                        metadata: empty_object(),
                        created_at: Micros(1_700_000_000_000_000),
                    })
                }),
                erased: None,
            };
            verifier.push(&stored);
        }
        let report = verifier.finish(Some((head.seq, head.hash)));
        assert!(report.valid, "{report:?}");
        assert_eq!(head.seq, 4);
        assert!(head.ended);
        assert_eq!(head.counters.events, 4);
        assert_eq!(head.counters.tool_calls, 1);
        assert_eq!(head.tags.as_deref(), Some(r#"["prod","eu"]"#));
    }

    #[test]
    fn the_first_event_needs_the_header_and_a_failure_moves_nothing() {
        let mut head = SessionHead::default();
        let err = link(&mut head, &event(Kind::ToolCall, "{}"), facts(0, None)).unwrap_err();
        assert_eq!(err, LinkError::MissingHeader("s-1".into()));
        assert_eq!(head, SessionHead::default());
        // Later events do not cover it.
        let mut later = SessionHead {
            seq: 7,
            hash: Some([1; 32]),
            ..SessionHead::default()
        };
        let l = link(&mut later, &event(Kind::ToolCall, "{}"), facts(1, None)).unwrap();
        assert_eq!((l.seq, l.prev_hash), (8, Some([1; 32])));
    }

    #[test]
    fn the_last_seq_is_refused() {
        let mut head = SessionHead {
            seq: i64::MAX as u64,
            hash: Some([0; 32]),
            ..SessionHead::default()
        };
        let before = head.clone();
        assert!(matches!(
            link(&mut head, &event(Kind::ToolCall, "{}"), facts(0, None)),
            Err(LinkError::SeqExhausted(_))
        ));
        assert_eq!(head, before);
    }

    #[test]
    fn tags_only_from_an_array() {
        assert_eq!(
            session_tags(r#"{"tags":["a"]}"#).as_deref(),
            Some(r#"["a"]"#)
        );
        assert_eq!(session_tags(r#"{"tags":"a"}"#), None);
        assert_eq!(session_tags("{}"), None);
        assert_eq!(tag_list(Some(r#"["a",1,"b"]"#)), ["a", "b"]);
        assert!(tag_list(None).is_empty());
    }
}
