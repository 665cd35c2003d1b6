//! What an agent has done so far in one session. Policies read it as
//! `context.session`; it is folded from the ledger's own records, so a restart
//! rebuilds exactly what was there.

use std::collections::{BTreeMap, BTreeSet};

use agentledger_core::erasure::ErasureRecord;
use agentledger_core::usage::Usage;
use agentledger_core::verdict::{Decision, Verdict};
use agentledger_core::{Event, Kind};

/// The source type of a recorded action check.
pub const CHECK_SOURCE_TYPE: &str = "action_check";

#[derive(Debug, Clone, Default, PartialEq)]
pub struct SessionState {
    pub events: u64,
    pub tool_calls: u64,
    /// Tool calls per tool name.
    pub tools: BTreeMap<String, u64>,
    /// Rules that matched in this session so far.
    pub findings: BTreeSet<String>,
    /// Detectors that matched in this session so far.
    pub detectors: BTreeSet<String>,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cost_usd: f64,
    pub denied: u64,
    pub flagged: u64,
    /// Erased events folded from the ledger without their payload, by seq:
    /// their tool name and usage are folded in from their `event_erased`
    /// record, which follows them in the chain ([`SessionState::apply_stored`]).
    unrecorded_erasures: BTreeMap<u64, Kind>,
}

impl SessionState {
    pub fn secret_seen(&self) -> bool {
        self.detectors.contains("secrets")
    }
    pub fn pii_seen(&self) -> bool {
        self.detectors.contains("pii")
    }
    pub fn untrusted_input_seen(&self) -> bool {
        self.detectors.contains("injection")
    }

    /// Calls of `tool` so far.
    pub fn calls_of(&self, tool: &str) -> u64 {
        self.tools.get(tool).copied().unwrap_or(0)
    }

    /// Fold one event in. Action checks contribute their findings (the agent
    /// holds that data) but are not calls, events or usage.
    pub fn apply(
        &mut self,
        kind: Kind,
        check: bool,
        tool: Option<&str>,
        usage: Option<&Usage>,
        verdict: Option<&Verdict>,
    ) {
        self.fold(kind, check, Some(tool), usage, verdict);
    }

    /// [`SessionState::apply`], where `tool` is `None` for a call whose tool
    /// is not known yet (an erased call before its record): the call is
    /// counted, its tool's entry is not.
    fn fold(
        &mut self,
        kind: Kind,
        check: bool,
        tool: Option<Option<&str>>,
        usage: Option<&Usage>,
        verdict: Option<&Verdict>,
    ) {
        if let Some(v) = verdict {
            for f in &v.findings {
                if !self.findings.contains(&f.rule) {
                    self.findings.insert(f.rule.clone());
                }
                if !self.detectors.contains(&f.detector) {
                    self.detectors.insert(f.detector.clone());
                }
            }
        }
        if check {
            return;
        }
        self.events += 1;
        if kind == Kind::ToolCall {
            self.tool_calls += 1;
            if let Some(tool) = tool {
                self.count_tool(tool);
            }
        }
        if let Some(u) = usage {
            self.add_usage(u);
        }
        match verdict.map(|v| v.decision) {
            Some(Decision::Deny) => self.denied += 1,
            Some(Decision::Flag) => self.flagged += 1,
            _ => {}
        }
    }

    /// One more call of `tool` ("unknown" when the call named none).
    fn count_tool(&mut self, tool: Option<&str>) {
        *self
            .tools
            .entry(tool.unwrap_or("unknown").to_owned())
            .or_default() += 1;
    }

    fn add_usage(&mut self, u: &Usage) {
        self.input_tokens = self
            .input_tokens
            .saturating_add(u.input_tokens.unwrap_or(0));
        self.output_tokens = self
            .output_tokens
            .saturating_add(u.output_tokens.unwrap_or(0));
        self.cost_usd += u.cost_usd.unwrap_or(0.0);
    }

    /// Fold a stored event in (rebuilding after a restart).
    ///
    /// An erased event's payload is gone, and with it the tool name and
    /// usage the state folded from it when it was appended. Its erasure
    /// record, later in the chain, keeps both (`ErasureRecord::tool`,
    /// `usage`): they are folded in when the record is, so a state rebuilt
    /// after an erasure is the state that was kept in memory. A state that
    /// folded the event before it was erased (kept in memory, or another
    /// node's) does not count them again at the record.
    pub fn apply_stored(&mut self, ev: &Event) {
        let (check, verdict) = stored_verdict(ev);
        if ev.erased.is_some() && !check {
            // Counted now, but for its tool's entry and its usage.
            self.unrecorded_erasures.insert(ev.seq, ev.kind);
            self.fold(ev.kind, check, None, None, verdict.as_ref());
            return;
        }
        // Only a tool call's tool is counted: read from the text, no tree.
        let tool = (ev.kind == Kind::ToolCall)
            .then(|| agentledger_core::payload::tool_name_in(ev.kind, ev.payload.get()))
            .flatten();
        let usage = Usage::of(ev.kind, ev.payload.get());
        self.apply(
            ev.kind,
            check,
            tool.as_deref(),
            usage.as_ref(),
            verdict.as_ref(),
        );
        if ev.kind == Kind::EventErased
            && let Ok(record) = ErasureRecord::parse(ev.payload.get())
            && let Some(kind) = self.unrecorded_erasures.remove(&record.erased_seq)
        {
            if kind == Kind::ToolCall {
                self.count_tool(record.tool.as_deref());
            }
            self.add_usage(&Usage::from(&record.usage));
        }
    }

    /// Fold an erased event whose erasure record was read ahead (a dry run
    /// reads the session first): counted where it stands in the chain with
    /// the tool and usage its record keeps, as it was when it was appended.
    /// Its record, folded later, then adds nothing.
    pub fn apply_erased(&mut self, ev: &Event, record: &ErasureRecord) {
        let (check, verdict) = stored_verdict(ev);
        self.apply(
            ev.kind,
            check,
            record.tool.as_deref(),
            Some(&Usage::from(&record.usage)),
            verdict.as_ref(),
        );
    }
}

/// Whether a stored event is a recorded action check, and its stored verdict.
fn stored_verdict(ev: &Event) -> (bool, Option<Verdict>) {
    (
        ev.source_type == CHECK_SOURCE_TYPE && ev.kind == Kind::Decision,
        ev.verdict
            .as_ref()
            .and_then(|v| serde_json::from_str(v.get()).ok()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use agentledger_core::erasure::{Erasure, record_event};
    use agentledger_core::{Dialect, EventId, Micros, Severity};
    use serde_json::value::RawValue;

    fn event(seq: u64, kind: Kind, payload: &str) -> Event {
        Event {
            id: EventId::generate(Micros(1_700_000_000_000_000 + seq as i64)),
            project: "p".into(),
            session_id: "s".into(),
            seq,
            agent_id: "a".into(),
            kind,
            source_type: kind.as_str().into(),
            dialect: Dialect::Native,
            severity: Severity::Info,
            client_ts: None,
            server_ts: Micros(1_700_000_000_000_000 + seq as i64),
            payload: RawValue::from_string(payload.into()).unwrap(),
            metadata: RawValue::from_string("{}".into()).unwrap(),
            payload_sha256: agentledger_core::chain::sha256(payload.as_bytes()),
            prev_hash: None,
            hash: [0; 32],
            envelope_version: 3,
            verdict: None,
            original_payload_sha256: None,
            original_metadata_sha256: None,
            session_header: None,
            erased: None,
        }
    }

    /// `ev` erased by the record at `record_seq`: the row as the ledger
    /// then holds it, and the record.
    fn erase(ev: &Event, record_seq: u64) -> (Event, Event) {
        let new = record_event(ev, "key:k1", "personal data").unwrap();
        let mut record = event(record_seq, Kind::EventErased, new.payload.get());
        record.source_type = new.source_type;
        let mut erased = ev.clone();
        erased.payload = agentledger_core::erasure::erased_payload();
        erased.erased = Some(Box::new(Erasure {
            by: "key:k1".into(),
            at: record.server_ts,
            record_seq,
        }));
        (erased, record)
    }

    fn fold<'a>(evs: impl IntoIterator<Item = &'a Event>) -> SessionState {
        let mut s = SessionState::default();
        for ev in evs {
            s.apply_stored(ev);
        }
        s
    }

    #[test]
    fn a_state_rebuilt_after_an_erasure_is_the_state_kept_before_it() {
        let call = event(
            1,
            Kind::ToolCall,
            r#"{"toolName":"send_email","to":"jo@example.com"}"#,
        );
        let llm = event(
            2,
            Kind::LlmResponse,
            r#"{"model":"m","usage":{"inputTokens":12,"outputTokens":5},"costUsd":0.5}"#,
        );
        let shell = event(3, Kind::ToolCall, r#"{"toolName":"shell"}"#);
        let (erased_call, record_call) = erase(&call, 4);
        let (erased_llm, record_llm) = erase(&llm, 5);

        // As kept in memory: each event folded as appended, payloads and all.
        let kept = fold([&call, &llm, &shell, &record_call, &record_llm]);
        assert_eq!(kept.calls_of("send_email"), 1);
        assert_eq!((kept.input_tokens, kept.output_tokens), (12, 5));
        assert_eq!(kept.cost_usd, 0.5);
        assert_eq!((kept.events, kept.tool_calls), (5, 2));

        // Rebuilt from the ledger after both erasures: the same state.
        let rebuilt = fold([&erased_call, &erased_llm, &shell, &record_call, &record_llm]);
        assert_eq!(rebuilt, kept);

        // Folded on from a state kept between the event and its erasure
        // (another node's, or this one's before a restart): counted once.
        let mut on = fold([&call, &llm, &shell]);
        on.apply_stored(&record_call);
        on.apply_stored(&record_llm);
        assert_eq!(on, kept);

        // Its record read ahead (a dry run): the same state, the erased
        // events counted where they stand.
        let rec = |r: &Event| ErasureRecord::parse(r.payload.get()).unwrap();
        let mut ahead = SessionState::default();
        ahead.apply_erased(&erased_call, &rec(&record_call));
        assert_eq!(ahead.calls_of("send_email"), 1);
        ahead.apply_erased(&erased_llm, &rec(&record_llm));
        assert_eq!(ahead.input_tokens, 12);
        for ev in [&shell, &record_call, &record_llm] {
            ahead.apply_stored(ev);
        }
        assert_eq!(ahead, kept);

        // Before the record is folded, the erased call counts as a call of
        // no tool yet (the record follows it in the same transaction, so a
        // fold of committed events never stops between them).
        let partial = fold([&erased_call]);
        assert_eq!((partial.tool_calls, partial.calls_of("send_email")), (1, 0));
        assert!(partial.tools.is_empty());
    }

    #[test]
    fn a_record_written_before_tool_names_were_kept_counts_an_unknown_tool() {
        let call = event(1, Kind::ToolCall, r#"{"toolName":"send_email"}"#);
        let (erased, record) = erase(&call, 2);
        let mut old: serde_json::Value = serde_json::from_str(record.payload.get()).unwrap();
        assert_eq!(old["tool"], "send_email");
        old.as_object_mut().unwrap().remove("tool");
        let mut old_record = record.clone();
        old_record.payload = serde_json::value::to_raw_value(&old).unwrap();
        let rebuilt = fold([&erased, &old_record]);
        assert_eq!(rebuilt.calls_of("unknown"), 1);
        assert_eq!(rebuilt.tool_calls, 1);
    }
}
