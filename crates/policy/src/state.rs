//! What an agent has done so far in one session. Policies read it as
//! `context.session`; it is folded from the ledger's own records, so a restart
//! rebuilds exactly what was there.

use std::collections::{BTreeMap, BTreeSet};

use agentledger_core::usage::Usage;
use agentledger_core::verdict::{Decision, Verdict};
use agentledger_core::{Event, Kind};

use crate::engine::tool_and_arguments;

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
            *self
                .tools
                .entry(tool.unwrap_or("unknown").to_owned())
                .or_default() += 1;
        }
        if let Some(u) = usage {
            self.input_tokens = self
                .input_tokens
                .saturating_add(u.input_tokens.unwrap_or(0));
            self.output_tokens = self
                .output_tokens
                .saturating_add(u.output_tokens.unwrap_or(0));
            self.cost_usd += u.cost_usd.unwrap_or(0.0);
        }
        match verdict.map(|v| v.decision) {
            Some(Decision::Deny) => self.denied += 1,
            Some(Decision::Flag) => self.flagged += 1,
            _ => {}
        }
    }

    /// Fold a stored event in (rebuilding after a restart).
    pub fn apply_stored(&mut self, ev: &Event) {
        let check = ev.source_type == CHECK_SOURCE_TYPE && ev.kind == Kind::Decision;
        let payload: serde_json::Value =
            serde_json::from_str(ev.payload.get()).unwrap_or(serde_json::Value::Null);
        let (tool, _) = tool_and_arguments(ev.kind, &payload);
        let verdict: Option<Verdict> = ev
            .verdict
            .as_ref()
            .and_then(|v| serde_json::from_str(v.get()).ok());
        let usage = Usage::of(ev.kind, ev.payload.get());
        self.apply(
            ev.kind,
            check,
            tool.as_deref(),
            usage.as_ref(),
            verdict.as_ref(),
        );
    }
}
