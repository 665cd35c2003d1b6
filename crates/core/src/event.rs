//! Events and sessions as the ledger holds them.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::{AgentId, Dialect, EventId, Kind, Micros, SessionId, Severity};

/// A validated event on its way into the ledger, in canonical form. Every
/// dialect adapter produces these.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub session_id: SessionId,
    pub agent_id: AgentId,
    pub kind: Kind,
    /// The type string the client used (e.g. `tool_call`, `model_output`).
    pub source_type: String,
    pub dialect: Dialect,
    pub severity: Severity,
    pub client_ts: Option<Micros>,
    /// The payload object exactly as received.
    pub payload: Box<RawValue>,
    /// The metadata object exactly as received (`{}` when absent).
    pub metadata: Box<RawValue>,
    /// The policy checkpoint's verdict, set before the event is stored.
    pub judgement: Option<crate::verdict::Judgement>,
}

impl NewEvent {
    /// The event as the store holds it once linked ([`crate::chain::link`]),
    /// built without reading it back: what a fold of stored events reads
    /// (the store's writer folds the events of a request without a judge
    /// into the states of its batch). Not its session header.
    pub fn stored(&self, project: &str, linked: &crate::chain::Linked) -> Event {
        let j = self.judgement.as_ref();
        Event {
            id: linked.id,
            project: project.to_owned(),
            session_id: self.session_id.as_str().to_owned(),
            seq: linked.seq,
            agent_id: self.agent_id.as_str().to_owned(),
            kind: self.kind,
            source_type: self.source_type.clone(),
            dialect: self.dialect,
            severity: self.severity,
            client_ts: self.client_ts,
            server_ts: linked.server_ts,
            payload: self.payload.clone(),
            metadata: self.metadata.clone(),
            payload_sha256: linked.payload_sha256,
            prev_hash: linked.prev_hash,
            hash: linked.hash,
            envelope_version: linked.envelope_version,
            verdict: j.map(|j| j.verdict.clone()),
            original_payload_sha256: j.and_then(|j| j.original_payload_sha256),
            original_metadata_sha256: j.and_then(|j| j.original_metadata_sha256),
            session_header: None,
            erased: None,
        }
    }
}

/// The JSON text `{}`: metadata of an event that carried none.
pub fn empty_object() -> Box<RawValue> {
    RawValue::from_string("{}".to_owned()).unwrap_or_else(|_| unreachable!("{{}} is JSON"))
}

/// An event as stored: everything needed to recompute its hash.
#[derive(Debug, Clone)]
pub struct Event {
    pub id: EventId,
    pub project: String,
    pub session_id: String,
    pub seq: u64,
    pub agent_id: String,
    pub kind: Kind,
    pub source_type: String,
    pub dialect: Dialect,
    pub severity: Severity,
    pub client_ts: Option<Micros>,
    pub server_ts: Micros,
    pub payload: Box<RawValue>,
    pub metadata: Box<RawValue>,
    pub payload_sha256: [u8; 32],
    pub prev_hash: Option<[u8; 32]>,
    pub hash: [u8; 32],
    /// The envelope version the hash was computed with (1 or 2).
    pub envelope_version: u32,
    /// The policy verdict as stored (v2; `None` when no policy ran).
    pub verdict: Option<Box<RawValue>>,
    /// When redaction changed the payload / metadata, a digest of the bytes
    /// as received: their SHA-256 (envelope v2) or their HMAC under the
    /// event's redaction salt (v3).
    pub original_payload_sha256: Option<[u8; 32]>,
    pub original_metadata_sha256: Option<[u8; 32]>,
    /// v3, first event of a session: the session's header as the store
    /// holds it (the envelope covers its hash; exports carry it).
    pub session_header: Option<Box<SessionHeaderOut>>,
    /// Set when the payload was erased (`payload` then reads `null`; the
    /// digest stays and the chain verifies against it, see `erasure`).
    pub erased: Option<Box<crate::erasure::Erasure>>,
}

/// A session's header as an export carries it on the session's first line
/// (flat members `session_agent_id`, … so verifiers read them like the rest).
#[derive(Debug, Clone)]
pub struct SessionHeaderOut {
    pub agent_id: String,
    pub system_prompt: Option<String>,
    pub metadata: Box<RawValue>,
    pub created_at: Micros,
}

impl SessionHeaderOut {
    /// The hash the first event's v3 envelope covers (`session_sha256`).
    pub fn hash(&self, session_id: &str) -> [u8; 32] {
        crate::chain::SessionHeader {
            session_id,
            agent_id: &self.agent_id,
            system_prompt: self.system_prompt.as_deref(),
            metadata: self.metadata.get().as_bytes(),
            created_at: self.created_at,
        }
        .hash()
    }
}

impl Event {
    /// The time the event happened: the client's timestamp when it sent one,
    /// otherwise the time the server received it. Time filters use this.
    pub fn time(&self) -> Micros {
        self.client_ts.unwrap_or(self.server_ts)
    }

    /// This event's export line (no newline) appended to `out`
    /// ([`EventView::write_export_line`]).
    pub fn write_export_line(&self, out: &mut Vec<u8>) {
        self.view().write_export_line(out);
    }

    /// This event as an [`EventView`], borrowing its fields.
    pub fn view(&self) -> EventView<'_> {
        EventView {
            id: self.id,
            project: &self.project,
            session_id: &self.session_id,
            seq: self.seq,
            agent_id: &self.agent_id,
            kind: self.kind,
            source_type: &self.source_type,
            dialect: self.dialect,
            severity: self.severity,
            client_ts: self.client_ts,
            server_ts: self.server_ts,
            payload: self.payload.get(),
            metadata: self.metadata.get(),
            payload_sha256: self.payload_sha256,
            prev_hash: self.prev_hash,
            hash: self.hash,
            envelope_version: self.envelope_version,
            verdict: self.verdict.as_deref().map(RawValue::get),
            original_payload_sha256: self.original_payload_sha256,
            original_metadata_sha256: self.original_metadata_sha256,
            session_header: self.session_header.as_deref().map(|h| HeaderView {
                agent_id: &h.agent_id,
                system_prompt: h.system_prompt.as_deref(),
                metadata: h.metadata.get(),
                created_at: h.created_at,
            }),
            erased: self.erased.as_deref().cloned(),
        }
    }

    /// The export line as a struct: serde_json's text of it is what
    /// [`Event::write_export_line`] writes, which the tests hold it to.
    #[cfg(test)]
    pub fn to_export_line(&self) -> ExportLine {
        ExportLine {
            v: self.envelope_version,
            project: self.project.clone(),
            session_id: self.session_id.clone(),
            seq: self.seq,
            id: self.id.to_string(),
            agent_id: self.agent_id.clone(),
            kind: self.kind,
            source_type: self.source_type.clone(),
            dialect: self.dialect,
            severity: self.severity,
            client_ts: self.client_ts.map(Micros::to_rfc3339),
            server_ts: self.server_ts.to_rfc3339(),
            payload: self.payload.clone(),
            metadata: self.metadata.clone(),
            payload_sha256: hex::encode(self.payload_sha256),
            prev_hash: self.prev_hash.map(hex::encode),
            hash: hex::encode(self.hash),
            verdict: self.verdict.clone(),
            original_payload_sha256: (self.envelope_version < 3)
                .then(|| self.original_payload_sha256.map(hex::encode))
                .flatten(),
            original_metadata_sha256: (self.envelope_version < 3)
                .then(|| self.original_metadata_sha256.map(hex::encode))
                .flatten(),
            original_payload_hmac: (self.envelope_version >= 3)
                .then(|| self.original_payload_sha256.map(hex::encode))
                .flatten(),
            original_metadata_hmac: (self.envelope_version >= 3)
                .then(|| self.original_metadata_sha256.map(hex::encode))
                .flatten(),
            session_agent_id: self.session_header.as_ref().map(|h| h.agent_id.clone()),
            session_system_prompt: self
                .session_header
                .as_ref()
                .and_then(|h| h.system_prompt.clone()),
            session_metadata: self.session_header.as_ref().map(|h| h.metadata.clone()),
            session_created_at: self
                .session_header
                .as_ref()
                .map(|h| h.created_at.to_rfc3339()),
            erased: self.erased.as_deref().map(crate::erasure::ErasedLine::from),
        }
    }
}

/// An event read where it is stored (a database row), borrowing its
/// fields: those of [`Event`], with the payload, metadata and verdict as
/// their stored JSON text, not parsed again. Verification and export read
/// every event of a session through this, without an [`Event`] (and its
/// copies and JSON validation) for each; [`EventView::to_event`] makes one.
#[derive(Debug, Clone)]
pub struct EventView<'a> {
    pub id: EventId,
    pub project: &'a str,
    pub session_id: &'a str,
    pub seq: u64,
    pub agent_id: &'a str,
    pub kind: Kind,
    pub source_type: &'a str,
    pub dialect: Dialect,
    pub severity: Severity,
    pub client_ts: Option<Micros>,
    pub server_ts: Micros,
    /// The payload's JSON text as stored (`null` once erased).
    pub payload: &'a str,
    pub metadata: &'a str,
    pub payload_sha256: [u8; 32],
    pub prev_hash: Option<[u8; 32]>,
    pub hash: [u8; 32],
    pub envelope_version: u32,
    pub verdict: Option<&'a str>,
    pub original_payload_sha256: Option<[u8; 32]>,
    pub original_metadata_sha256: Option<[u8; 32]>,
    pub session_header: Option<HeaderView<'a>>,
    pub erased: Option<crate::erasure::Erasure>,
}

/// [`SessionHeaderOut`], borrowed.
#[derive(Debug, Clone, Copy)]
pub struct HeaderView<'a> {
    pub agent_id: &'a str,
    pub system_prompt: Option<&'a str>,
    pub metadata: &'a str,
    pub created_at: Micros,
}

/// Which stored JSON text of an [`EventView`] does not parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadJson {
    Payload,
    Metadata,
    Verdict,
    SessionMetadata,
}

impl<'a> EventView<'a> {
    /// The time the event happened ([`Event::time`]).
    pub fn time(&self) -> Micros {
        self.client_ts.unwrap_or(self.server_ts)
    }

    /// This event's export line (no newline) appended to `out`: the bytes
    /// `serde_json` writes for its [`ExportLine`] (the tests hold it to that), written straight
    /// from the event, its stored payload and metadata copied as they are.
    /// Exports stream every event of a session through this.
    pub fn write_export_line(&self, out: &mut Vec<u8>) {
        let mut o = crate::jsonw::Obj::new(out);
        o.u64("v", self.envelope_version.into());
        o.str("project", self.project);
        o.str("session_id", self.session_id);
        o.u64("seq", self.seq);
        let mut id = [0u8; ulid::ULID_LEN];
        o.str("id", self.id.encode(&mut id));
        o.str("agent_id", self.agent_id);
        o.str("kind", self.kind.as_str());
        o.str("source_type", self.source_type);
        o.str("dialect", self.dialect.as_str());
        o.str("severity", self.severity.as_str());
        o.opt_time("client_ts", self.client_ts);
        o.time("server_ts", self.server_ts);
        o.raw("payload", self.payload);
        o.raw("metadata", self.metadata);
        o.hex("payload_sha256", &self.payload_sha256);
        o.opt_hex("prev_hash", self.prev_hash.as_ref());
        o.hex("hash", &self.hash);
        if let Some(v) = self.verdict {
            o.raw("verdict", v);
        }
        let (payload_original, metadata_original) = if self.envelope_version >= 3 {
            ("original_payload_hmac", "original_metadata_hmac")
        } else {
            ("original_payload_sha256", "original_metadata_sha256")
        };
        if let Some(d) = &self.original_payload_sha256 {
            o.hex(payload_original, d);
        }
        if let Some(d) = &self.original_metadata_sha256 {
            o.hex(metadata_original, d);
        }
        if let Some(h) = &self.session_header {
            o.str("session_agent_id", h.agent_id);
            if let Some(p) = h.system_prompt {
                o.str("session_system_prompt", p);
            }
            o.raw("session_metadata", h.metadata);
            o.time("session_created_at", h.created_at);
        }
        if let Some(e) = &self.erased {
            let mut inner = crate::jsonw::Obj::new(o.key("erased"));
            inner.str("by", &e.by);
            inner.time("at", e.at);
            inner.u64("record_seq", e.record_seq);
            inner.end();
        }
        o.end();
    }

    /// The event, its JSON texts parsed (validated) into an [`Event`].
    pub fn to_event(&self) -> Result<Event, BadJson> {
        let json =
            |text: &str, bad: BadJson| RawValue::from_string(text.to_owned()).map_err(|_| bad);
        Ok(Event {
            id: self.id,
            project: self.project.to_owned(),
            session_id: self.session_id.to_owned(),
            seq: self.seq,
            agent_id: self.agent_id.to_owned(),
            kind: self.kind,
            source_type: self.source_type.to_owned(),
            dialect: self.dialect,
            severity: self.severity,
            client_ts: self.client_ts,
            server_ts: self.server_ts,
            payload: json(self.payload, BadJson::Payload)?,
            metadata: json(self.metadata, BadJson::Metadata)?,
            payload_sha256: self.payload_sha256,
            prev_hash: self.prev_hash,
            hash: self.hash,
            envelope_version: self.envelope_version,
            verdict: self
                .verdict
                .map(|v| json(v, BadJson::Verdict))
                .transpose()?,
            original_payload_sha256: self.original_payload_sha256,
            original_metadata_sha256: self.original_metadata_sha256,
            session_header: self
                .session_header
                .map(|h| {
                    Ok::<_, BadJson>(Box::new(SessionHeaderOut {
                        agent_id: h.agent_id.to_owned(),
                        system_prompt: h.system_prompt.map(str::to_owned),
                        metadata: json(h.metadata, BadJson::SessionMetadata)?,
                        created_at: h.created_at,
                    }))
                })
                .transpose()?,
            erased: self.erased.clone().map(Box::new),
        })
    }
}

/// One line of a JSON Lines export. `payload` and `metadata` are written
/// verbatim: their bytes in the line are the bytes that were hashed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExportLine {
    pub v: u32,
    pub project: String,
    pub session_id: String,
    pub seq: u64,
    pub id: String,
    pub agent_id: String,
    pub kind: Kind,
    pub source_type: String,
    pub dialect: Dialect,
    pub severity: Severity,
    pub client_ts: Option<String>,
    pub server_ts: String,
    pub payload: Box<RawValue>,
    pub metadata: Box<RawValue>,
    pub payload_sha256: String,
    pub prev_hash: Option<String>,
    pub hash: String,
    /// v2: the policy verdict, verbatim (its bytes are hashed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<Box<RawValue>>,
    /// v2: SHA-256 of the payload / metadata as received, when redacted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_payload_sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_metadata_sha256: Option<String>,
    /// v3: HMAC-SHA256 of the payload / metadata as received, under the
    /// event's redaction salt (not exported), when redacted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_payload_hmac: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_metadata_hmac: Option<String>,
    /// v3, the session's first event: its header (agent, system prompt,
    /// metadata verbatim, creation time), whose hash the envelope covers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_agent_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_system_prompt: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_metadata: Option<Box<RawValue>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_created_at: Option<String>,
    /// An erased event: who erased it, when, and the seq of the erasure's
    /// record (`payload` is then `null`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub erased: Option<crate::erasure::ErasedLine>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionStatus {
    Active,
    Ended,
}

impl SessionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            SessionStatus::Active => "active",
            SessionStatus::Ended => "ended",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "active" => Some(SessionStatus::Active),
            "ended" => Some(SessionStatus::Ended),
            _ => None,
        }
    }
}

/// A session with its chain head and summary figures.
#[derive(Debug, Clone)]
pub struct Session {
    pub id: String,
    pub project: String,
    pub agent_id: String,
    pub system_prompt: Option<String>,
    pub metadata: Box<RawValue>,
    pub created_at: Micros,
    pub status: SessionStatus,
    pub head_seq: u64,
    pub head_hash: Option<[u8; 32]>,
    pub first_event_at: Option<Micros>,
    pub last_event_at: Option<Micros>,
    /// Summary figures, maintained by the store as events are appended (so
    /// reading them never counts events).
    pub counters: SessionCounters,
    /// The `tags` (strings) of the session's first `session_started` event
    /// that carries a `tags` array; empty when none did.
    pub tags: Vec<String>,
}

/// A session's running totals over its committed events.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SessionCounters {
    pub events: u64,
    /// Events of kind `tool_call`.
    pub tool_calls: u64,
    /// Events of kind `tool_error` or `error`, or of severity error or critical.
    pub errors: u64,
    /// Events of kind `llm_call`.
    pub llm_calls: u64,
    /// Sums of the usage read out of payloads (`usage::Usage`).
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cost_usd: f64,
}

impl SessionCounters {
    /// Count one appended event (its kind, severity and usage).
    pub fn add(&mut self, kind: Kind, severity: Severity, usage: &crate::usage::Usage) {
        self.events += 1;
        self.tool_calls += u64::from(kind == Kind::ToolCall);
        self.llm_calls += u64::from(kind == Kind::LlmCall);
        self.errors +=
            u64::from(matches!(kind, Kind::ToolError | Kind::Error) || severity >= Severity::Error);
        self.input_tokens = self
            .input_tokens
            .saturating_add(usage.input_tokens.unwrap_or(0));
        self.output_tokens = self
            .output_tokens
            .saturating_add(usage.output_tokens.unwrap_or(0));
        self.cost_usd += usage.cost_usd.unwrap_or(0.0);
    }
}

impl ExportLine {
    /// Rebuild the stored event from an export line, for offline verification.
    pub fn into_event(self) -> Result<Event, String> {
        fn h32(what: &str, s: &str) -> Result<[u8; 32], String> {
            let v = hex::decode(s).map_err(|_| format!("{what} is not hex"))?;
            v.try_into().map_err(|_| format!("{what} is not 32 bytes"))
        }
        let ts = |what: &str, s: &str| {
            Micros::parse_rfc3339(s).map_err(|_| format!("{what} is not a timestamp"))
        };
        if self.v == 0 || self.v > crate::chain::ENVELOPE_VERSION {
            return Err(format!("unsupported envelope version {}", self.v));
        }
        let mut ev = Event {
            id: self
                .id
                .parse()
                .map_err(|_| "id is not a ULID".to_string())?,
            project: self.project,
            session_id: self.session_id,
            seq: self.seq,
            agent_id: self.agent_id,
            kind: self.kind,
            source_type: self.source_type,
            dialect: self.dialect,
            severity: self.severity,
            client_ts: self
                .client_ts
                .as_deref()
                .map(|s| ts("client_ts", s))
                .transpose()?,
            server_ts: ts("server_ts", &self.server_ts)?,
            payload: self.payload,
            metadata: self.metadata,
            payload_sha256: h32("payload_sha256", &self.payload_sha256)?,
            prev_hash: self
                .prev_hash
                .as_deref()
                .map(|s| h32("prev_hash", s))
                .transpose()?,
            hash: h32("hash", &self.hash)?,
            envelope_version: self.v,
            verdict: self.verdict,
            session_header: None,
            erased: None,
            original_payload_sha256: self
                .original_payload_sha256
                .as_deref()
                .map(|s| h32("original_payload_sha256", s))
                .transpose()?,
            original_metadata_sha256: self
                .original_metadata_sha256
                .as_deref()
                .map(|s| h32("original_metadata_sha256", s))
                .transpose()?,
        };
        if self.v >= 3 {
            if self.original_payload_sha256.is_some() || self.original_metadata_sha256.is_some() {
                return Err(
                    "original_*_sha256 belong to envelope v2; v3 has original_*_hmac".into(),
                );
            }
            ev.original_payload_sha256 = self
                .original_payload_hmac
                .as_deref()
                .map(|s| h32("original_payload_hmac", s))
                .transpose()?;
            ev.original_metadata_sha256 = self
                .original_metadata_hmac
                .as_deref()
                .map(|s| h32("original_metadata_hmac", s))
                .transpose()?;
        } else if self.original_payload_hmac.is_some() || self.original_metadata_hmac.is_some() {
            return Err("original_*_hmac belong to envelope v3".into());
        }
        let header = match (
            self.session_agent_id,
            self.session_created_at,
            self.session_metadata,
        ) {
            (Some(agent_id), Some(created), Some(metadata)) => Some(SessionHeaderOut {
                agent_id,
                system_prompt: self.session_system_prompt,
                metadata,
                created_at: ts("session_created_at", &created)?,
            }),
            (None, None, None) if self.session_system_prompt.is_none() => None,
            _ => {
                return Err(
                    "session_agent_id, session_created_at and session_metadata come together"
                        .into(),
                );
            }
        };
        if self.v >= 3 && (self.seq == 1) != header.is_some() {
            return Err("the session header is on the first event (seq 1), and only there".into());
        }
        if self.v < 3 && header.is_some() {
            return Err("the session header belongs to envelope v3".into());
        }
        ev.session_header = header.map(Box::new);
        if let Some(e) = self.erased {
            if ev.payload.get() != "null" {
                return Err("an erased event's payload is null".into());
            }
            ev.erased = Some(Box::new(crate::erasure::Erasure {
                by: e.by,
                at: ts("erased.at", &e.at)?,
                record_seq: e.record_seq,
            }));
        }
        Ok(ev)
    }
}
