//! Erasure that keeps the proof (issue 17; docs/transparency.md, "Erasure").
//!
//! Erasing an event removes its payload (personal data, a leaked secret) and
//! keeps its `payload_sha256`: the envelope hashes the digest, never the
//! bytes, so the chain, the transparency log's leaf (session, seq, chain
//! hash) and every proof still verify. A verifier takes the stored digest of
//! an erased event as given instead of hashing its payload.
//!
//! That would let whoever controls the database hide a tampered payload by
//! marking its event erased, so an erasure is only accepted with its
//! *record*: an `event_erased` event appended to the same session through
//! the normal append path, in the transaction that erases the payload. Its
//! payload ([`ErasureRecord`]) names the erased event, its seq and digest,
//! who erased it and why, and the usage figures the ledger keeps from the
//! erased payload; the record's own `server_ts` is the erasure time. The
//! chain covers the record like any event, so marking an event erased
//! without appending a record (which moves the session's head and the log)
//! is caught: [`crate::ChainVerifier`] refuses an erased event that no later
//! record in its chain names, or a record that disagrees with the row.

use serde::{Deserialize, Serialize};

use crate::Micros;
use crate::usage::Usage;

/// Longest erasure reason, in characters.
pub const MAX_REASON_CHARS: usize = 1000;
/// Longest name of who erased an event, in characters.
pub const MAX_BY_CHARS: usize = 256;

/// What the store keeps of an erased event's erasure, beside the row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Erasure {
    /// Who erased it: `key:<name>:<id>` (an admin API key) or `cli:<os user>`.
    pub by: String,
    /// When: the `server_ts` of the erasure's record.
    pub at: Micros,
    /// The seq of the `event_erased` record in the same session.
    pub record_seq: u64,
}

/// The payload of an `event_erased` event. Never any of the erased content:
/// only its digest, the usage figures (model name, token counts, cost)
/// that the ledger keeps in its usage columns and session counters, and a
/// tool call's tool name, which the policy checkpoint's session state keeps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ErasureRecord {
    pub erased_event_id: String,
    pub erased_seq: u64,
    /// Lowercase hex SHA-256 of the erased payload (as the erased row keeps it).
    pub payload_sha256: String,
    pub erased_by: String,
    pub reason: String,
    pub usage: RecordedUsage,
    /// A `tool_call`'s tool name, as its payload named it (absent for other
    /// kinds, for a call that named none, and in records written before it
    /// was kept). The policy checkpoint's session state counts calls per
    /// tool; a state rebuilt from the ledger reads the erased call's tool
    /// here, its payload being gone (`agentledger_policy::SessionState`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
}

/// [`Usage`] as a record writes it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RecordedUsage {
    pub model: Option<String>,
    pub input_tokens: Option<i64>,
    pub output_tokens: Option<i64>,
    pub cost_usd: Option<f64>,
}

impl From<&Usage> for RecordedUsage {
    fn from(u: &Usage) -> Self {
        RecordedUsage {
            model: u.model.clone(),
            input_tokens: u.input_tokens,
            output_tokens: u.output_tokens,
            cost_usd: u.cost_usd,
        }
    }
}

impl From<&RecordedUsage> for Usage {
    fn from(u: &RecordedUsage) -> Self {
        Usage {
            model: u.model.clone(),
            input_tokens: u.input_tokens,
            output_tokens: u.output_tokens,
            cost_usd: u.cost_usd,
        }
    }
}

impl ErasureRecord {
    /// Read a record from an `event_erased` payload.
    pub fn parse(payload: &str) -> Result<ErasureRecord, String> {
        serde_json::from_str(payload)
            .map_err(|e| format!("the event_erased payload is not an erasure record: {e}"))
    }
}

/// Check a reason given for an erasure: present and bounded.
pub fn check_reason(reason: &str) -> Result<(), String> {
    if reason.trim().is_empty() {
        return Err("reason must not be empty".into());
    }
    if reason.chars().count() > MAX_REASON_CHARS {
        return Err(format!(
            "reason is longer than {MAX_REASON_CHARS} characters"
        ));
    }
    Ok(())
}

/// An erased event's export member `erased`: who, when, and the record's seq.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErasedLine {
    pub by: String,
    pub at: String,
    pub record_seq: u64,
}

impl From<&Erasure> for ErasedLine {
    fn from(e: &Erasure) -> Self {
        ErasedLine {
            by: e.by.clone(),
            at: e.at.to_rfc3339(),
            record_seq: e.record_seq,
        }
    }
}

/// The `event_erased` record of erasing `ev` (which must not be erased
/// already): appended to `ev`'s session by the same agent, under native
/// dialect, with no client time (its `server_ts` is the erasure's time).
pub fn record_event(ev: &crate::Event, by: &str, reason: &str) -> Result<crate::NewEvent, String> {
    check_reason(reason)?;
    if by.is_empty() || by.chars().count() > MAX_BY_CHARS {
        return Err(format!(
            "who erased it must be 1 to {MAX_BY_CHARS} characters"
        ));
    }
    if ev.erased.is_some() {
        return Err(format!("event {} is already erased", ev.id));
    }
    if ev.kind == crate::Kind::EventErased {
        return Err("an erasure record names no content and cannot be erased".into());
    }
    let usage = Usage::of(ev.kind, ev.payload.get()).unwrap_or_default();
    let record = ErasureRecord {
        erased_event_id: ev.id.to_string(),
        erased_seq: ev.seq,
        payload_sha256: hex::encode(ev.payload_sha256),
        erased_by: by.to_owned(),
        reason: reason.to_owned(),
        usage: RecordedUsage::from(&usage),
        tool: (ev.kind == crate::Kind::ToolCall)
            .then(|| crate::payload::tool_name_in(ev.kind, ev.payload.get()))
            .flatten(),
    };
    Ok(crate::NewEvent {
        session_id: crate::SessionId::parse(ev.session_id.clone())
            .map_err(|e| format!("stored session id: {e}"))?,
        agent_id: crate::AgentId::parse(ev.agent_id.clone())
            .map_err(|e| format!("stored agent id: {e}"))?,
        kind: crate::Kind::EventErased,
        source_type: crate::Kind::EventErased.as_str().into(),
        dialect: crate::Dialect::Native,
        severity: crate::Severity::Info,
        client_ts: None,
        payload: serde_json::value::to_raw_value(&record).map_err(|e| e.to_string())?,
        metadata: crate::event::empty_object(),
        judgement: None,
    })
}

/// The JSON text an erased event's payload reads as (`null`): an event
/// payload is always an object, so `null` with the `erased` member is
/// unambiguous.
pub fn erased_payload() -> Box<serde_json::value::RawValue> {
    serde_json::value::RawValue::from_string("null".to_owned())
        .unwrap_or_else(|_| unreachable!("null is JSON"))
}
