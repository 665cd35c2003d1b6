//! The per-session hash chain. docs/hash-chain.md is the normative description;
//! this module and `scripts/verify_export.py` are two implementations of it.
//!
//! Each event's hash is SHA-256 over the RFC 8785 (JCS) serialisation of a small
//! envelope built by the server. The envelope holds only strings, non-negative
//! integers and nulls, with ASCII keys; for such values serde_json's compact
//! output of a struct whose fields are declared in sorted order *is* JCS
//! (a unit test holds this against an independent JCS implementation).

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::event::EventView;
use crate::{Event, EventId, Micros};

mod link;
pub use link::{LinkError, LinkFacts, Linked, SessionHead, link, session_tags, tag_list};

/// The version new events are hashed with. Versions 1 (no verdict) and 2
/// (unsalted digests of redacted originals, no session header) still verify.
pub const ENVELOPE_VERSION: u32 = 3;

pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// Lower-case hex of a digest, as the envelope writes them. `hex::encode`
/// builds its string a `char` at a time; the store's writer hashes several
/// digests per event on the one serial path, so this writes the bytes at
/// once (`encode_to_slice`).
fn hex32(bytes: &[u8; 32]) -> String {
    let mut out = [0u8; 64];
    match hex::encode_to_slice(bytes, &mut out) {
        Ok(()) => String::from_utf8(out.to_vec()).unwrap_or_else(|_| hex::encode(bytes)),
        Err(_) => hex::encode(bytes),
    }
}

/// A session's header: what the session row says about it beyond its events.
/// Its hash is in the envelope of the session's first event (v3).
#[derive(Debug, Clone, Copy)]
pub struct SessionHeader<'a> {
    pub session_id: &'a str,
    pub agent_id: &'a str,
    pub system_prompt: Option<&'a str>,
    /// The session metadata bytes exactly as received (`{}` when none).
    pub metadata: &'a [u8],
    pub created_at: Micros,
}

/// The header's canonical form, sorted (JCS, as the envelope).
#[derive(Serialize)]
struct SessionHeaderJcs<'a> {
    agent_id: &'a str,
    created_at: String,
    metadata_sha256: String,
    session_id: &'a str,
    system_prompt: Option<&'a str>,
}

impl SessionHeader<'_> {
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let h = SessionHeaderJcs {
            agent_id: self.agent_id,
            created_at: self.created_at.to_rfc3339(),
            metadata_sha256: hex::encode(sha256(self.metadata)),
            session_id: self.session_id,
            system_prompt: self.system_prompt,
        };
        serde_json::to_vec(&h).unwrap_or_default()
    }

    pub fn hash(&self) -> [u8; 32] {
        sha256(&self.canonical_bytes())
    }
}

/// HMAC-SHA256 of `bytes` under `salt`: the v3 commitment to redacted bytes.
pub fn redaction_commitment(salt: &[u8; 32], bytes: &[u8]) -> [u8; 32] {
    use hmac::{KeyInit, Mac};
    // A 32-byte key is always a valid HMAC key.
    let mut mac = <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(salt)
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(bytes);
    mac.finalize().into_bytes().into()
}

/// Room for an envelope: about 750 bytes with a verdict and short names
/// (four hex digests, two timestamps, a ULID and the names).
const ENVELOPE_ROOM: usize = 1024;

/// The fields an event hash covers. `payload_sha256` is passed in (not
/// recomputed) so that a verifier can tell a changed payload from a changed hash.
pub struct HashInput<'a> {
    pub project: &'a str,
    pub session_id: &'a str,
    pub seq: u64,
    pub event_id: &'a str,
    pub agent_id: &'a str,
    pub kind: &'a str,
    pub source_type: &'a str,
    pub dialect: &'a str,
    pub severity: &'a str,
    pub client_ts: Option<Micros>,
    pub server_ts: Micros,
    pub payload_sha256: &'a [u8; 32],
    pub metadata: &'a [u8],
    pub prev_hash: Option<&'a [u8; 32]>,
    /// 1, 2 or 3. Version 1 ignores the fields below.
    pub version: u32,
    /// The stored verdict text.
    pub verdict: Option<&'a [u8]>,
    /// v2: SHA-256 of the original bytes; v3: their HMAC commitment.
    pub original_payload_sha256: Option<&'a [u8; 32]>,
    pub original_metadata_sha256: Option<&'a [u8; 32]>,
    /// v3: the session header's hash, on the session's first event only.
    pub session_sha256: Option<[u8; 32]>,
}

impl HashInput<'_> {
    /// The canonical envelope bytes (exposed for docs and tests): JCS of
    /// the version's members, in sorted order (docs/hash-chain.md). Written
    /// member by member: this runs for every append and every verified
    /// event. The tests hold it to serde_json's output of the envelope
    /// structs and to an independent JCS implementation.
    pub fn envelope_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(ENVELOPE_ROOM);
        self.write_envelope(&mut out);
        out
    }

    /// [`HashInput::envelope_bytes`], appended to `out`.
    fn write_envelope(&self, out: &mut Vec<u8>) {
        let mut o = crate::jsonw::Obj::new(out);
        let v = self.version.clamp(1, 3);
        o.str("agent_id", self.agent_id);
        o.opt_time("client_ts", self.client_ts);
        o.str("dialect", self.dialect);
        o.str("event_id", self.event_id);
        o.str("kind", self.kind);
        o.hex("metadata_sha256", &sha256(self.metadata));
        match v {
            2 => {
                o.opt_hex("original_metadata_sha256", self.original_metadata_sha256);
                o.opt_hex("original_payload_sha256", self.original_payload_sha256);
            }
            3 => {
                o.opt_hex("original_metadata_hmac", self.original_metadata_sha256);
                o.opt_hex("original_payload_hmac", self.original_payload_sha256);
            }
            _ => {}
        }
        o.hex("payload_sha256", self.payload_sha256);
        o.opt_hex("prev_hash", self.prev_hash);
        o.str("project", self.project);
        o.u64("seq", self.seq);
        o.time("server_ts", self.server_ts);
        o.str("session_id", self.session_id);
        if v == 3 {
            o.opt_hex("session_sha256", self.session_sha256.as_ref());
        }
        o.str("severity", self.severity);
        o.str("source_type", self.source_type);
        o.u64("v", v.into());
        if v >= 2 {
            o.opt_hex("verdict_sha256", self.verdict.map(sha256).as_ref());
        }
        o.end();
    }

    /// SHA-256 of the envelope, written into a buffer each thread keeps (this
    /// runs for every append and every verified event: no allocation each).
    pub fn hash(&self) -> [u8; 32] {
        thread_local! {
            static ENVELOPE: std::cell::RefCell<Vec<u8>> =
                std::cell::RefCell::new(Vec::with_capacity(ENVELOPE_ROOM));
        }
        ENVELOPE.with_borrow_mut(|buf| {
            buf.clear();
            self.write_envelope(buf);
            let digest = sha256(buf);
            // An envelope of long names may have grown it: not kept past this.
            if buf.capacity() > 4 * ENVELOPE_ROOM {
                *buf = Vec::with_capacity(ENVELOPE_ROOM);
            }
            digest
        })
    }
}

impl Event {
    /// Recompute this event's hash from its stored fields.
    pub fn compute_hash(&self) -> [u8; 32] {
        self.view().compute_hash()
    }

    /// What verifying this event hashes ([`EventView::digests`]).
    pub fn digests(&self) -> Digests {
        self.view().digests()
    }
}

impl<'a> EventView<'a> {
    pub fn hash_input<'b>(&'b self, event_id: &'b str) -> HashInput<'b> {
        HashInput {
            project: self.project,
            session_id: self.session_id,
            seq: self.seq,
            event_id,
            agent_id: self.agent_id,
            kind: self.kind.as_str(),
            source_type: self.source_type,
            dialect: self.dialect.as_str(),
            severity: self.severity.as_str(),
            client_ts: self.client_ts,
            server_ts: self.server_ts,
            payload_sha256: &self.payload_sha256,
            metadata: self.metadata.as_bytes(),
            prev_hash: self.prev_hash.as_ref(),
            version: self.envelope_version,
            verdict: self.verdict.map(str::as_bytes),
            original_payload_sha256: self.original_payload_sha256.as_ref(),
            original_metadata_sha256: self.original_metadata_sha256.as_ref(),
            session_sha256: self.session_header.map(|h| {
                SessionHeader {
                    session_id: self.session_id,
                    agent_id: h.agent_id,
                    system_prompt: h.system_prompt,
                    metadata: h.metadata.as_bytes(),
                    created_at: h.created_at,
                }
                .hash()
            }),
        }
    }

    /// Recompute this event's hash from its stored fields.
    pub fn compute_hash(&self) -> [u8; 32] {
        let mut buf = [0u8; ulid::ULID_LEN];
        let id = self.id.encode(&mut buf);
        self.hash_input(id).hash()
    }

    /// What verifying this event hashes: its payload (unless erased) and its
    /// envelope. Pure, so a verifier may compute it for many events at once
    /// and check them in order after ([`ChainVerifier::push_entry`]).
    pub fn digests(&self) -> Digests {
        Digests {
            payload: self
                .erased
                .is_none()
                .then(|| sha256(self.payload.as_bytes())),
            envelope: self.compute_hash(),
        }
    }
}

/// What the ordered check of a chain needs of one event, its digests
/// computed: made from an [`EventView`] in any order (on any thread), then
/// checked in seq order by [`ChainVerifier::push_entry`].
#[derive(Debug, Clone)]
pub struct ChainEntry {
    pub id: EventId,
    pub seq: u64,
    pub kind: crate::Kind,
    pub server_ts: Micros,
    pub payload_sha256: [u8; 32],
    pub prev_hash: Option<[u8; 32]>,
    pub hash: [u8; 32],
    pub digests: Digests,
    pub erased: Option<crate::erasure::Erasure>,
    /// Erased, yet its payload reads other than `null`.
    erased_holds_payload: bool,
    /// An `event_erased` record (not itself erased): the record its payload
    /// holds, or why it holds none.
    pub record: Option<Result<crate::erasure::ErasureRecord, String>>,
}

impl ChainEntry {
    pub fn new(ev: &EventView<'_>) -> Self {
        ChainEntry {
            id: ev.id,
            seq: ev.seq,
            kind: ev.kind,
            server_ts: ev.server_ts,
            payload_sha256: ev.payload_sha256,
            prev_hash: ev.prev_hash,
            hash: ev.hash,
            digests: ev.digests(),
            erased: ev.erased.clone(),
            erased_holds_payload: ev.erased.is_some() && ev.payload != "null",
            record: (ev.erased.is_none() && ev.kind == crate::Kind::EventErased)
                .then(|| crate::erasure::ErasureRecord::parse(ev.payload)),
        }
    }
}

/// An event's digests as [`EventView::digests`] computes them.
#[derive(Debug, Clone, Copy)]
pub struct Digests {
    /// SHA-256 of the stored payload bytes; `None` for an erased event.
    pub payload: Option<[u8; 32]>,
    /// The recomputed envelope hash.
    pub envelope: [u8; 32],
}

/// Result of verifying one session's chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    pub valid: bool,
    /// Events examined.
    pub events: u64,
    /// Hash of the last event that verified (hex), if any.
    pub head_hash: Option<String>,
    pub first_invalid_seq: Option<u64>,
    pub reason: Option<String>,
}

/// Verifies a session's events fed in seq order, stopping at the first break.
#[derive(Debug, Default)]
pub struct ChainVerifier {
    events: u64,
    last_seq: u64,
    prev: Option<[u8; 32]>,
    failure: Option<(u64, String)>,
    /// Erased events whose `event_erased` record has not been seen yet, by seq.
    unrecorded: std::collections::BTreeMap<u64, PendingErasure>,
    /// Seqs whose erasure record was seen.
    recorded: std::collections::BTreeSet<u64>,
}

/// An erased event as the verifier saw it, until its record confirms it.
#[derive(Debug)]
struct PendingErasure {
    id: EventId,
    payload_sha256: [u8; 32],
    erasure: crate::erasure::Erasure,
}

impl ChainVerifier {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn failed(&self) -> bool {
        self.failure.is_some()
    }

    fn fail(&mut self, seq: u64, reason: String) -> bool {
        self.failure = Some((seq, reason));
        false
    }

    /// Record a failure found outside the chain itself (a stored column that
    /// disagrees with the hashed fields it derives from), unless an earlier
    /// one was recorded. Later events are then ignored.
    pub fn fail_at(&mut self, seq: u64, reason: String) {
        if self.failure.is_none() {
            self.failure = Some((seq, reason));
        }
    }

    /// Check the next event. Returns false once the chain is broken; later
    /// events are then ignored.
    pub fn push(&mut self, ev: &Event) -> bool {
        if self.failed() {
            return false;
        }
        self.push_entry(&ChainEntry::new(&ev.view()))
    }

    /// Check the next event, its digests computed ahead ([`ChainEntry::new`]).
    /// Returns false once the chain is broken; later events are then ignored.
    pub fn push_entry(&mut self, ev: &ChainEntry) -> bool {
        if self.failed() {
            return false;
        }
        self.events += 1;
        let expected = self.last_seq + 1;
        if ev.seq > expected {
            return self.fail(
                expected,
                format!(
                    "event seq {expected} is missing (next stored seq is {})",
                    ev.seq
                ),
            );
        }
        if ev.seq < expected {
            return self.fail(
                ev.seq,
                format!(
                    "seq {} is out of order or repeated after seq {}",
                    ev.seq, self.last_seq
                ),
            );
        }
        match &ev.erased {
            // The payload is gone: the stored digest is taken as given, and
            // only once a later record in this chain confirms the erasure.
            Some(e) => {
                if let Err(reason) = self.erased(ev, e) {
                    return self.fail(ev.seq, reason);
                }
            }
            None => {
                if ev.digests.payload != Some(ev.payload_sha256) {
                    return self.fail(ev.seq, "payload bytes do not match payload_sha256".into());
                }
            }
        }
        if let Some(record) = &ev.record
            && let Err(reason) = self.record(ev, record)
        {
            return self.fail(ev.seq, reason);
        }
        if ev.prev_hash != self.prev {
            return self.fail(
                ev.seq,
                "prev_hash does not match the hash of the previous event".into(),
            );
        }
        if ev.digests.envelope != ev.hash {
            return self.fail(
                ev.seq,
                "hash does not match the recomputed envelope hash".into(),
            );
        }
        self.last_seq = ev.seq;
        self.prev = Some(ev.hash);
        true
    }

    fn erased(&mut self, ev: &ChainEntry, e: &crate::erasure::Erasure) -> Result<(), String> {
        if ev.erased_holds_payload {
            return Err("an erased event still holds a payload".into());
        }
        if ev.kind == crate::Kind::EventErased {
            return Err("an erasure record cannot itself be erased".into());
        }
        if e.record_seq <= ev.seq {
            return Err(format!(
                "the erasure's record is said to be seq {}, which does not follow the erased event",
                e.record_seq
            ));
        }
        self.unrecorded.insert(
            ev.seq,
            PendingErasure {
                id: ev.id,
                payload_sha256: ev.payload_sha256,
                erasure: e.clone(),
            },
        );
        Ok(())
    }

    /// An `event_erased` record: it must name an erased event earlier in
    /// this chain, and agree with what its row says (id, digest, who, when,
    /// where the record is).
    fn record(
        &mut self,
        ev: &ChainEntry,
        r: &Result<crate::erasure::ErasureRecord, String>,
    ) -> Result<(), String> {
        let r = r.as_ref().map_err(Clone::clone)?;
        if r.erased_seq >= ev.seq {
            return Err("an event_erased record names an event that does not precede it".into());
        }
        if !self.recorded.insert(r.erased_seq) {
            return Err(format!(
                "seq {} has a second event_erased record",
                r.erased_seq
            ));
        }
        let Some(p) = self.unrecorded.remove(&r.erased_seq) else {
            return Err(format!(
                "an event_erased record names seq {}, whose payload is not erased",
                r.erased_seq
            ));
        };
        if r.erased_event_id != p.id.to_string()
            || r.payload_sha256 != hex32(&p.payload_sha256)
            || r.erased_by != p.erasure.by
            || p.erasure.at != ev.server_ts
            || p.erasure.record_seq != ev.seq
        {
            return Err(format!(
                "the event_erased record does not match erased seq {} (its id, payload_sha256, who erased it, when, or where the record is)",
                r.erased_seq
            ));
        }
        Ok(())
    }

    /// Finish, optionally checking the head the ledger recorded for the session
    /// (catches deletion of the last events).
    pub fn finish(mut self, recorded_head: Option<(u64, Option<[u8; 32]>)>) -> VerifyReport {
        if self.failure.is_none()
            && let Some((seq, _)) = self.unrecorded.iter().next()
        {
            self.failure = Some((
                *seq,
                "the payload is erased but no event_erased record in the chain names it".into(),
            ));
        }
        if let (None, Some((head_seq, head_hash))) = (&self.failure, recorded_head) {
            if head_seq != self.last_seq {
                let seq = self.last_seq + 1;
                self.failure = Some((
                    seq,
                    format!(
                        "session head is seq {head_seq} but the chain ends at seq {}",
                        self.last_seq
                    ),
                ));
            } else if head_hash != self.prev {
                self.failure = Some((
                    self.last_seq,
                    "session head hash does not match the last event".into(),
                ));
            }
        }
        VerifyReport {
            valid: self.failure.is_none(),
            events: self.events,
            head_hash: self.prev.map(hex::encode),
            first_invalid_seq: self.failure.as_ref().map(|f| f.0),
            reason: self.failure.map(|f| f.1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::empty_object;
    use crate::{Dialect, EventId, Kind, Severity};
    use serde_json::value::RawValue;

    fn chain(n: u64) -> Vec<Event> {
        let mut out: Vec<Event> = Vec::new();
        for seq in 1..=n {
            let payload =
                RawValue::from_string(format!(r#"{{"n": {seq}, "s":"ünï\u0001"}}"#)).unwrap();
            let mut ev = Event {
                id: EventId::generate(Micros(1_700_000_000_000_000)),
                project: "default".into(),
                session_id: "sess\"1".into(),
                seq,
                agent_id: "agent-é".into(),
                kind: Kind::Custom,
                source_type: "custom".into(),
                dialect: Dialect::Native,
                severity: Severity::Info,
                client_ts: if seq % 2 == 0 {
                    Some(Micros(seq as i64))
                } else {
                    None
                },
                server_ts: Micros(1_700_000_000_000_000 + seq as i64),
                payload_sha256: sha256(payload.get().as_bytes()),
                payload,
                metadata: empty_object(),
                prev_hash: out.last().map(|p| p.hash),
                hash: [0; 32],
                envelope_version: 2,
                verdict: (seq % 2 == 1).then(|| {
                    RawValue::from_string(r#"{"decision":"flag","policies":["p"]}"#.into()).unwrap()
                }),
                original_payload_sha256: (seq == 2).then_some([9; 32]),
                original_metadata_sha256: None,
                session_header: None,
                erased: None,
            };
            ev.hash = ev.compute_hash();
            out.push(ev);
        }
        out
    }

    fn verify(evs: &[Event], head: Option<(u64, Option<[u8; 32]>)>) -> VerifyReport {
        let mut v = ChainVerifier::new();
        for e in evs {
            v.push(e);
        }
        v.finish(head)
    }

    /// The worked example of docs/hash-chain.md, byte for byte. The Python
    /// verifier reproduces the same numbers; change all three together.
    #[test]
    fn worked_example_of_the_spec() {
        let mk = |seq, id: &str, kind: Kind, payload: &str, client_ts, server_ts, prev| {
            let payload = RawValue::from_string(payload.to_owned()).unwrap();
            Event {
                id: id.parse().unwrap(),
                project: "default".into(),
                session_id: "sess_01".into(),
                seq,
                agent_id: "my-agent".into(),
                kind,
                source_type: kind.as_str().into(),
                dialect: Dialect::Native,
                severity: Severity::Info,
                client_ts,
                server_ts,
                payload_sha256: sha256(payload.get().as_bytes()),
                payload,
                metadata: empty_object(),
                prev_hash: prev,
                hash: [0; 32],
                envelope_version: 1,
                verdict: None,
                original_payload_sha256: None,
                original_metadata_sha256: None,
                session_header: None,
                erased: None,
            }
        };
        let t = |s: &str| Micros::parse_rfc3339(s).unwrap();
        let mut first = mk(
            1,
            "01KAZ3V5Q8X9R2T4W6Y8A0C2E4",
            Kind::ToolCall,
            r#"{"toolName":"search","callId":"c1","arguments":{"query":"test"}}"#,
            Some(t("2026-02-08T10:00:00Z")),
            t("2026-02-08T10:00:00.25Z"),
            None,
        );
        let id = first.id.to_string();
        assert_eq!(
            String::from_utf8(first.view().hash_input(&id).envelope_bytes()).unwrap(),
            r#"{"agent_id":"my-agent","client_ts":"2026-02-08T10:00:00.000000Z","dialect":"native","event_id":"01KAZ3V5Q8X9R2T4W6Y8A0C2E4","kind":"tool_call","metadata_sha256":"44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","payload_sha256":"f29ce418b3ad89e0c4cd299ed190102683b4807c639c36ffc24243cdbeccab9c","prev_hash":null,"project":"default","seq":1,"server_ts":"2026-02-08T10:00:00.250000Z","session_id":"sess_01","severity":"info","source_type":"tool_call","v":1}"#
        );
        first.hash = first.compute_hash();
        assert_eq!(
            hex::encode(first.hash),
            "c4c3194c15756abd10d8fac5a9cb51c4951d839c504c9d2fa77a7291fabe8635"
        );
        let second = mk(
            2,
            "01KAZ3V5Q9B7D5F3H1K9M7P5R3",
            Kind::ToolResponse,
            r#"{"callId":"c1","toolName":"search","result":["r1"],"durationMs":42}"#,
            None,
            t("2026-02-08T10:00:01Z"),
            Some(first.hash),
        );
        assert_eq!(
            hex::encode(second.compute_hash()),
            "c56f8d0adcb34483e106b0dc5791e7dcc50cbe9f18c0fc73c3e6222cd7157483"
        );
    }

    // The envelope as it was first defined: serde_json's compact output of
    // structs whose fields are declared in sorted order. The hand-written
    // `envelope_bytes` must give the same bytes for every version.
    /// The hashed envelope. Field order here is the JCS (sorted) order; keep it sorted.
    #[derive(Serialize)]
    struct EnvelopeV1<'a> {
        agent_id: &'a str,
        client_ts: Option<String>,
        dialect: &'a str,
        event_id: String,
        kind: &'a str,
        metadata_sha256: String,
        payload_sha256: String,
        prev_hash: Option<String>,
        project: &'a str,
        seq: u64,
        server_ts: String,
        session_id: &'a str,
        severity: &'a str,
        source_type: &'a str,
        v: u32,
    }

    /// Version 2 adds the verdict and the originals of redacted bytes. Sorted.
    #[derive(Serialize)]
    struct EnvelopeV2<'a> {
        agent_id: &'a str,
        client_ts: Option<String>,
        dialect: &'a str,
        event_id: String,
        kind: &'a str,
        metadata_sha256: String,
        original_metadata_sha256: Option<String>,
        original_payload_sha256: Option<String>,
        payload_sha256: String,
        prev_hash: Option<String>,
        project: &'a str,
        seq: u64,
        server_ts: String,
        session_id: &'a str,
        severity: &'a str,
        source_type: &'a str,
        v: u32,
        verdict_sha256: Option<String>,
    }

    /// Version 3: the originals of redacted bytes are committed to with a keyed
    /// hash (HMAC-SHA256 under a random per-event salt kept apart from the
    /// events and destroyable), so a redacted value cannot be recovered by
    /// guessing; and the first event of a session covers the session's header
    /// (`session_sha256`). Sorted.
    #[derive(Serialize)]
    struct EnvelopeV3<'a> {
        agent_id: &'a str,
        client_ts: Option<String>,
        dialect: &'a str,
        event_id: String,
        kind: &'a str,
        metadata_sha256: String,
        original_metadata_hmac: Option<String>,
        original_payload_hmac: Option<String>,
        payload_sha256: String,
        prev_hash: Option<String>,
        project: &'a str,
        seq: u64,
        server_ts: String,
        session_id: &'a str,
        session_sha256: Option<String>,
        severity: &'a str,
        source_type: &'a str,
        v: u32,
        verdict_sha256: Option<String>,
    }

    fn serde_envelope(h: &HashInput<'_>) -> Vec<u8> {
        let hex = |d: &[u8; 32]| hex::encode(d);
        match h.version {
            3.. => serde_json::to_vec(&EnvelopeV3 {
                agent_id: h.agent_id,
                client_ts: h.client_ts.map(Micros::to_rfc3339),
                dialect: h.dialect,
                event_id: h.event_id.to_owned(),
                kind: h.kind,
                metadata_sha256: hex(&sha256(h.metadata)),
                original_metadata_hmac: h.original_metadata_sha256.map(hex),
                original_payload_hmac: h.original_payload_sha256.map(hex),
                payload_sha256: hex(h.payload_sha256),
                prev_hash: h.prev_hash.map(hex),
                project: h.project,
                seq: h.seq,
                server_ts: h.server_ts.to_rfc3339(),
                session_id: h.session_id,
                session_sha256: h.session_sha256.as_ref().map(hex),
                severity: h.severity,
                source_type: h.source_type,
                v: 3,
                verdict_sha256: h.verdict.map(|v| hex(&sha256(v))),
            }),
            2 => serde_json::to_vec(&EnvelopeV2 {
                agent_id: h.agent_id,
                client_ts: h.client_ts.map(Micros::to_rfc3339),
                dialect: h.dialect,
                event_id: h.event_id.to_owned(),
                kind: h.kind,
                metadata_sha256: hex(&sha256(h.metadata)),
                original_metadata_sha256: h.original_metadata_sha256.map(hex),
                original_payload_sha256: h.original_payload_sha256.map(hex),
                payload_sha256: hex(h.payload_sha256),
                prev_hash: h.prev_hash.map(hex),
                project: h.project,
                seq: h.seq,
                server_ts: h.server_ts.to_rfc3339(),
                session_id: h.session_id,
                severity: h.severity,
                source_type: h.source_type,
                v: 2,
                verdict_sha256: h.verdict.map(|v| hex(&sha256(v))),
            }),
            _ => serde_json::to_vec(&EnvelopeV1 {
                agent_id: h.agent_id,
                client_ts: h.client_ts.map(Micros::to_rfc3339),
                dialect: h.dialect,
                event_id: h.event_id.to_owned(),
                kind: h.kind,
                metadata_sha256: hex(&sha256(h.metadata)),
                payload_sha256: hex(h.payload_sha256),
                prev_hash: h.prev_hash.map(hex),
                project: h.project,
                seq: h.seq,
                server_ts: h.server_ts.to_rfc3339(),
                session_id: h.session_id,
                severity: h.severity,
                source_type: h.source_type,
                v: 1,
            }),
        }
        .unwrap()
    }

    proptest::proptest! {
        #[test]
        fn envelope_is_the_serde_envelope(
            version in 0u32..5,
            strs in proptest::collection::vec(proptest::prelude::any::<String>(), 8),
            seq in proptest::prelude::any::<u64>(),
            client_ts in proptest::option::of(proptest::prelude::any::<i64>()),
            server_ts in proptest::prelude::any::<i64>(),
            digest in proptest::prelude::any::<[u8; 32]>(),
            optional in proptest::collection::vec(
                proptest::option::of(proptest::prelude::any::<[u8; 32]>()), 4),
            verdict in proptest::option::of(proptest::prelude::any::<String>()),
        ) {
            let h = HashInput {
                project: &strs[0],
                session_id: &strs[1],
                seq,
                event_id: &strs[2],
                agent_id: &strs[3],
                kind: &strs[4],
                source_type: &strs[5],
                dialect: &strs[6],
                severity: &strs[7],
                client_ts: client_ts.map(Micros),
                server_ts: Micros(server_ts),
                payload_sha256: &digest,
                metadata: strs[0].as_bytes(),
                prev_hash: optional[0].as_ref(),
                version,
                verdict: verdict.as_deref().map(str::as_bytes),
                original_payload_sha256: optional[1].as_ref(),
                original_metadata_sha256: optional[2].as_ref(),
                session_sha256: optional[3],
            };
            proptest::prop_assert_eq!(
                String::from_utf8(h.envelope_bytes()).unwrap(),
                String::from_utf8(serde_envelope(&h)).unwrap()
            );
        }
    }

    #[test]
    fn envelope_is_jcs() {
        for ev in chain(3) {
            let id = ev.id.to_string();
            let ours = ev.view().hash_input(&id).envelope_bytes();
            let value: serde_json::Value = serde_json::from_slice(&ours).unwrap();
            let jcs = serde_json_canonicalizer::to_vec(&value).unwrap();
            assert_eq!(
                String::from_utf8(ours).unwrap(),
                String::from_utf8(jcs).unwrap()
            );
        }
    }

    #[test]
    fn intact_chain_verifies() {
        let evs = chain(5);
        let r = verify(&evs, Some((5, Some(evs[4].hash))));
        assert!(r.valid, "{r:?}");
        assert_eq!(r.events, 5);
        assert_eq!(r.head_hash, Some(hex::encode(evs[4].hash)));
    }

    #[test]
    fn edited_payload_fails_at_its_seq() {
        let mut evs = chain(5);
        evs[2].payload = RawValue::from_string(r#"{"n": 99}"#.into()).unwrap();
        let r = verify(&evs, None);
        assert_eq!((r.valid, r.first_invalid_seq), (false, Some(3)));
        assert!(r.reason.unwrap().contains("payload"));
    }

    #[test]
    fn edited_field_with_recomputed_payload_hash_still_fails() {
        let mut evs = chain(4);
        evs[1].agent_id = "someone-else".into();
        let r = verify(&evs, None);
        assert_eq!(r.first_invalid_seq, Some(2));
        // Rehashing the edited event breaks the link to the next one instead.
        evs[1].hash = evs[1].compute_hash();
        let r = verify(&evs, None);
        assert_eq!(r.first_invalid_seq, Some(3));
    }

    #[test]
    fn deleted_middle_event_fails_at_missing_seq() {
        let mut evs = chain(5);
        evs.remove(2);
        let r = verify(&evs, None);
        assert_eq!(r.first_invalid_seq, Some(3));
    }

    #[test]
    fn reordered_events_fail() {
        let mut evs = chain(4);
        evs.swap(1, 2);
        let r = verify(&evs, None);
        assert!(!r.valid);
        assert_eq!(r.first_invalid_seq, Some(2));
    }

    /// A chain of `n` events whose seq `erased` is erased, followed by its
    /// `event_erased` record (seq n + 1), hashes as the server writes them.
    /// The export line written by hand is, byte for byte, serde_json's
    /// text of `to_export_line()`, for every version, optional member,
    /// kind, dialect and severity, a session header and an erasure.
    #[test]
    fn export_line_is_the_serde_export_line() {
        let mut evs = chain(4);
        evs.extend(erased_chain(5, 2));
        evs.extend(crate::chain::props::build(
            &[r#"{"a":"\u00e9\n"}"#.into(), "[1,2.5,null]".into()],
            "s\u{1}\"",
            "a\\b",
        ));
        let mut v1 = chain(1).remove(0);
        v1.envelope_version = 1;
        v1.verdict = None;
        evs.push(v1);
        let mut v3 = crate::chain::props::build(&["{}".into()], "s", "a").remove(0);
        v3.original_payload_sha256 = Some([7; 32]);
        v3.original_metadata_sha256 = Some([8; 32]);
        if let Some(h) = v3.session_header.as_mut() {
            h.system_prompt = None;
        }
        evs.push(v3);
        for (i, k) in Kind::ALL.iter().enumerate() {
            let mut ev = chain(1).remove(0);
            ev.kind = *k;
            ev.dialect = Dialect::ALL[i % Dialect::ALL.len()];
            ev.severity = Severity::ALL[i % Severity::ALL.len()];
            evs.push(ev);
        }
        for ev in &evs {
            let mut ours = Vec::new();
            ev.write_export_line(&mut ours);
            assert_eq!(
                String::from_utf8(ours).unwrap(),
                serde_json::to_string(&ev.to_export_line()).unwrap(),
                "seq {} v{}",
                ev.seq,
                ev.envelope_version
            );
        }
    }

    fn erased_chain(n: u64, erased: u64) -> Vec<Event> {
        let mut evs = chain(n);
        let target = evs[erased as usize - 1].clone();
        let record_ts = Micros(1_800_000_000_000_000);
        let record = crate::erasure::ErasureRecord {
            erased_event_id: target.id.to_string(),
            erased_seq: erased,
            payload_sha256: hex::encode(target.payload_sha256),
            erased_by: "key:k1".into(),
            reason: "personal data".into(),
            usage: Default::default(),
            tool: None,
        };
        let payload = serde_json::value::to_raw_value(&record).unwrap();
        let mut rec = evs[n as usize - 1].clone();
        rec.seq = n + 1;
        rec.id = EventId::generate(record_ts);
        rec.kind = Kind::EventErased;
        rec.source_type = "event_erased".into();
        rec.client_ts = None;
        rec.server_ts = record_ts;
        rec.payload_sha256 = sha256(payload.get().as_bytes());
        rec.payload = payload;
        rec.verdict = None;
        rec.original_payload_sha256 = None;
        rec.prev_hash = Some(evs[n as usize - 1].hash);
        rec.hash = rec.compute_hash();
        evs.push(rec);
        let e = &mut evs[erased as usize - 1];
        e.payload = crate::erasure::erased_payload();
        e.erased = Some(Box::new(crate::erasure::Erasure {
            by: "key:k1".into(),
            at: record_ts,
            record_seq: n + 1,
        }));
        evs
    }

    #[test]
    fn an_erased_payload_verifies_with_its_record() {
        let evs = erased_chain(4, 2);
        let r = verify(&evs, Some((5, Some(evs[4].hash))));
        assert!(r.valid, "{r:?}");
        assert_eq!(r.events, 5);
    }

    #[test]
    fn an_erasure_without_its_record_fails() {
        // Marked erased in the database, no record appended: refused.
        let mut evs = erased_chain(4, 2);
        evs.pop();
        let r = verify(&evs, None);
        assert!(!r.valid);
        assert_eq!(r.first_invalid_seq, Some(2));
        assert!(r.reason.unwrap().contains("no event_erased record"));
        // A tampered payload is still refused: erasure is not a way round it.
        let mut evs = chain(4);
        evs[1].payload = RawValue::from_string(r#"{"n": 99}"#.into()).unwrap();
        assert_eq!(verify(&evs, None).first_invalid_seq, Some(2));
    }

    #[test]
    fn an_erasure_that_disagrees_with_its_record_fails() {
        let base = erased_chain(4, 2);
        type Edit = Box<dyn Fn(&mut Vec<Event>)>;
        let broken: Vec<Edit> = vec![
            // Who erased it, rewritten on the row.
            Box::new(|evs| evs[1].erased.as_mut().unwrap().by = "key:other".into()),
            // When.
            Box::new(|evs| evs[1].erased.as_mut().unwrap().at = Micros(1)),
            // Where the record is.
            Box::new(|evs| evs[1].erased.as_mut().unwrap().record_seq = 4),
            // A payload left in place on a row marked erased.
            Box::new(|evs| evs[1].payload = RawValue::from_string(r#"{"n": 2}"#.into()).unwrap()),
            // Another event marked erased than the record names.
            Box::new(|evs| {
                let e = evs[1].erased.take();
                evs[2].erased = e;
                evs[2].payload = crate::erasure::erased_payload();
                evs[1].payload = RawValue::from_string(r#"{"n": 2}"#.into()).unwrap();
            }),
        ];
        for (i, b) in broken.iter().enumerate() {
            let mut evs = base.clone();
            b(&mut evs);
            assert!(!verify(&evs, None).valid, "case {i} verified");
        }
    }

    #[test]
    fn deleted_tail_is_caught_by_the_recorded_head() {
        let evs = chain(5);
        let r = verify(&evs[..4], Some((5, Some(evs[4].hash))));
        assert_eq!((r.valid, r.first_invalid_seq), (false, Some(5)));
    }
}

/// Property tests: the envelope is canonical JSON for any field values, and
/// the verifier accepts every honest chain and no altered one.
#[cfg(test)]
mod props {
    use super::*;
    use crate::event::empty_object;
    use crate::{Dialect, EventId, Kind, Severity};
    use proptest::prelude::*;
    use serde_json::value::RawValue;

    /// Any JSON text an event could carry as its payload (an object).
    fn payload() -> impl Strategy<Value = String> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(serde_json::Value::from),
            ".{0,40}".prop_map(serde_json::Value::from),
        ];
        let value = leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::from),
                prop::collection::btree_map(".{0,12}", inner, 0..6)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        });
        prop::collection::btree_map(".{0,12}", value, 0..6).prop_map(|m| {
            serde_json::to_string(&serde_json::Value::Object(m.into_iter().collect()))
                .unwrap_or_default()
        })
    }

    pub(super) fn build(payloads: &[String], session: &str, agent: &str) -> Vec<Event> {
        let mut out: Vec<Event> = Vec::new();
        for (i, p) in payloads.iter().enumerate() {
            let seq = i as u64 + 1;
            let payload = RawValue::from_string(p.clone()).expect("valid JSON");
            let mut ev = Event {
                id: EventId::generate(Micros(1_700_000_000_000_000 + seq as i64)),
                project: "p".into(),
                session_id: session.into(),
                seq,
                agent_id: agent.into(),
                kind: Kind::Custom,
                source_type: "custom".into(),
                dialect: Dialect::Native,
                severity: Severity::Info,
                client_ts: None,
                server_ts: Micros(1_700_000_000_000_000 + seq as i64),
                payload_sha256: sha256(payload.get().as_bytes()),
                payload,
                metadata: empty_object(),
                prev_hash: out.last().map(|p| p.hash),
                hash: [0; 32],
                envelope_version: ENVELOPE_VERSION,
                verdict: None,
                original_payload_sha256: None,
                original_metadata_sha256: None,
                session_header: (seq == 1).then(|| {
                    Box::new(crate::event::SessionHeaderOut {
                        agent_id: agent.into(),
                        system_prompt: Some("be careful".into()),
                        metadata: empty_object(),
                        created_at: Micros(1_700_000_000_000_000),
                    })
                }),
                erased: None,
            };
            ev.hash = ev.compute_hash();
            out.push(ev);
        }
        out
    }

    fn verify(evs: &[Event]) -> VerifyReport {
        let mut v = ChainVerifier::new();
        for e in evs {
            v.push(e);
        }
        let head = evs.last().map(|e| (e.seq, Some(e.hash)));
        v.finish(head.or(Some((0, None))))
    }

    proptest! {
        // PROPTEST_CASES sets the number of cases (default 256).
        #![proptest_config(ProptestConfig::default())]

        #[test]
        fn envelope_is_canonical_json_for_any_strings(
            session in ".{1,40}", agent in ".{1,40}", p in payload()
        ) {
            let evs = build(&[p], &session, &agent);
            let bytes = evs[0].view().hash_input(&evs[0].id.to_string()).envelope_bytes();
            let parsed: serde_json::Value = serde_json::from_slice(&bytes).expect("envelope is JSON");
            let canonical = serde_json_canonicalizer::to_vec(&parsed).expect("canonical");
            prop_assert_eq!(&canonical, &bytes);
            prop_assert_eq!(parsed["session_id"].as_str(), Some(session.as_str()));
            prop_assert_eq!(evs[0].compute_hash(), sha256(&bytes));
        }

        #[test]
        fn honest_chains_verify(payloads in prop::collection::vec(payload(), 1..12)) {
            let evs = build(&payloads, "s", "a");
            let r = verify(&evs);
            prop_assert!(r.valid, "{:?}", r.reason);
            prop_assert_eq!(r.events, payloads.len() as u64);
        }

        #[test]
        fn no_altered_chain_verifies(
            payloads in prop::collection::vec(payload(), 2..10),
            victim in any::<prop::sample::Index>(),
            other in any::<prop::sample::Index>(),
            mutation in 0u8..9,
            byte in any::<prop::sample::Index>(),
        ) {
            let mut evs = build(&payloads, "s", "a");
            let n = evs.len();
            let i = victim.index(n);
            let j = other.index(n);
            let original_head = evs.last().map(|e| (e.seq, Some(e.hash)));
            match mutation {
                // Edit the payload bytes (keeping them JSON): append a member.
                0 => {
                    let p = evs[i].payload.get();
                    let edited = if p == "{}" { r#"{"x":1}"#.to_owned() } else { format!(r#"{{"x":1,{}"#, &p[1..]) };
                    evs[i].payload = RawValue::from_string(edited).expect("json");
                }
                // Edit the payload and recompute its sha (but not the chain).
                1 => {
                    evs[i].payload = RawValue::from_string(r#"{"forged":true}"#.into()).expect("json");
                    evs[i].payload_sha256 = sha256(evs[i].payload.get().as_bytes());
                }
                // Forge a verdict.
                2 => evs[i].verdict = Some(RawValue::from_string(r#"{"decision":"allow"}"#.into()).expect("json")),
                // Delete an event.
                3 => { evs.remove(i); }
                // Swap two events.
                4 => {
                    prop_assume!(i != j);
                    evs.swap(i, j);
                }
                // Flip one bit of a stored hash.
                5 => { let b = byte.index(32); evs[i].hash[b] ^= 1; }
                // Change who or when.
                6 => evs[i].agent_id = format!("{}x", evs[i].agent_id),
                7 => evs[i].server_ts = Micros(evs[i].server_ts.0 + 1),
                // Rewrite an event fully and re-hash it (an attacker with the
                // database): the link from the next event, or the recorded
                // head, still breaks.
                _ => {
                    evs[i].payload = RawValue::from_string(r#"{"rewritten":1}"#.into()).expect("json");
                    evs[i].payload_sha256 = sha256(evs[i].payload.get().as_bytes());
                    evs[i].hash = evs[i].compute_hash();
                }
            }
            let mut v = ChainVerifier::new();
            for e in &evs {
                v.push(e);
            }
            let r = v.finish(original_head);
            prop_assert!(!r.valid, "mutation {} at {} was accepted", mutation, i);
        }
    }

    /// RFC 4231, test case 2: the commitment is standard HMAC-SHA256.
    #[test]
    fn redaction_commitment_is_hmac_sha256() {
        use hmac::{KeyInit, Mac};
        let mut mac = <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"what do ya want for nothing?");
        let tag: [u8; 32] = mac.finalize().into_bytes().into();
        assert_eq!(
            hex::encode(tag),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        let salt = [1u8; 32];
        let a = redaction_commitment(&salt, b"123-45-6789");
        assert_ne!(a, sha256(b"123-45-6789"), "keyed, not a plain digest");
        assert_ne!(a, redaction_commitment(&[2u8; 32], b"123-45-6789"));
    }

    /// v3: the first event covers the session header; editing any header
    /// field changes that event's hash, and only the first event carries it.
    #[test]
    fn v3_first_event_covers_the_session_header() {
        let header = |agent: &'static str, prompt: Option<&'static str>, meta: &'static [u8]| {
            SessionHeader {
                session_id: "s",
                agent_id: agent,
                system_prompt: prompt,
                metadata: meta,
                created_at: Micros(1_700_000_000_000_000),
            }
            .hash()
        };
        let base = header("a", Some("be careful"), b"{}");
        for other in [
            header("b", Some("be careful"), b"{}"),
            header("a", None, b"{}"),
            header("a", Some("be reckless"), b"{}"),
            header("a", Some("be careful"), b"{\"x\":1}"),
        ] {
            assert_ne!(base, other);
        }
        let evs = build(&["{}".to_owned(), "{}".to_owned()], "s", "a");
        assert_eq!(evs[0].envelope_version, 3);
        assert!(verify(&evs).valid);
        let mut forged = evs.clone();
        if let Some(h) = forged[0].session_header.as_mut() {
            h.system_prompt = Some("be reckless".into());
        }
        let r = verify(&forged);
        assert_eq!((r.valid, r.first_invalid_seq), (false, Some(1)));
        let env = String::from_utf8(
            evs[1]
                .view()
                .hash_input(&evs[1].id.to_string())
                .envelope_bytes(),
        )
        .unwrap();
        assert!(env.contains("\"session_sha256\":null"), "{env}");
    }
}
