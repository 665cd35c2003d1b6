//! What several pages show: the navigation bar and an event as a row.

use agentledger_core::usage::Usage;
use agentledger_core::verdict::{Decision, decision_of};
use agentledger_core::{Event, Micros};

use super::auth::Signed;

/// The frame of every signed-in page.
pub struct Nav {
    pub project: String,
    pub admin: bool,
    pub csrf: String,
    pub js: String,
    pub css: String,
    /// Which tab is current.
    pub tab: &'static str,
}

impl Nav {
    pub fn new(signed: &Signed, tab: &'static str) -> Nav {
        Nav {
            project: signed.caller.project.name.clone(),
            admin: signed.caller.admin,
            csrf: signed.csrf(),
            js: super::assets::script(),
            css: super::assets::stylesheet(),
            tab,
        }
    }

    pub fn is(&self, tab: &str) -> bool {
        self.tab == tab
    }
}

/// One event in a timeline or a list of hits.
pub struct Row {
    pub id: String,
    pub session_id: String,
    pub seq: u64,
    pub time: String,
    pub agent: String,
    pub kind: String,
    pub tool: String,
    /// allow, flag, deny, or empty when no policy judged it.
    pub decision: String,
    pub tokens: String,
    pub cost: String,
    /// Nesting under its OTLP parent span on the page (0: top).
    pub depth: usize,
    /// The payload's first characters (search hits).
    pub excerpt: String,
}

impl Row {
    pub fn of(e: &Event) -> Row {
        let payload: serde_json::Value =
            serde_json::from_str(e.payload.get()).unwrap_or(serde_json::Value::Null);
        let (tool, _) = agentledger_policy::engine::tool_and_arguments(e.kind, &payload);
        let usage = Usage::of(e.kind, e.payload.get());
        let tokens = usage
            .as_ref()
            .map(|u| u.input_tokens.unwrap_or(0) + u.output_tokens.unwrap_or(0))
            .filter(|t| *t > 0)
            .map(|t| t.to_string())
            .unwrap_or_default();
        let cost = usage
            .as_ref()
            .and_then(|u| u.cost_usd)
            .map(usd)
            .unwrap_or_default();
        let erased = e
            .erased
            .as_ref()
            .map(|x| format!("(erased by {} at {})", x.by, x.at.to_rfc3339()));
        let raw = erased.as_deref().unwrap_or(e.payload.get());
        let excerpt: String = raw.chars().take(160).collect();
        Row {
            id: e.id.to_string(),
            session_id: e.session_id.clone(),
            seq: e.seq,
            time: time(e.time()),
            agent: e.agent_id.clone(),
            kind: e.kind.as_str().into(),
            tool: tool.unwrap_or_default(),
            decision: decision(e)
                .map(|d| d.as_str().to_owned())
                .unwrap_or_default(),
            tokens,
            cost,
            depth: 0,
            excerpt: if excerpt.len() < raw.len() {
                format!("{excerpt}…")
            } else {
                excerpt
            },
        }
    }

    /// The session page at this event.
    pub fn href(&self) -> String {
        format!(
            "/console/sessions/{}?at={}#e{}",
            urlencode(&self.session_id),
            self.seq,
            self.seq
        )
    }

    pub fn flagged(&self) -> bool {
        self.decision == "flag" || self.decision == "deny"
    }
}

pub fn decision(e: &Event) -> Option<Decision> {
    e.verdict.as_ref().and_then(|v| decision_of(v.get()))
}

/// Seconds resolution, UTC, for reading (the exact value is in the export).
pub fn time(t: Micros) -> String {
    let s = t.to_rfc3339();
    // 2026-02-08T10:00:00.000000Z -> 2026-02-08 10:00:00
    match (s.get(0..10), s.get(11..19)) {
        (Some(d), Some(h)) => format!("{d} {h}"),
        _ => s,
    }
}

pub fn usd(v: f64) -> String {
    if v == 0.0 {
        String::new()
    } else if v < 0.01 {
        format!("${v:.5}")
    } else {
        format!("${v:.2}")
    }
}

/// Percent-encode a path segment or query value (ids may hold any
/// printable character).
pub fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// An empty form field is no filter.
pub fn filled(v: &Option<String>) -> Option<String> {
    v.as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// A time as a form gives it: RFC 3339, or a date (midnight UTC), or a
/// date and minutes (UTC), as RFC 3339.
pub fn form_time(v: &Option<String>) -> Option<String> {
    let s = filled(v)?;
    Some(match s.len() {
        10 => format!("{s}T00:00:00Z"),
        16 => format!("{s}:00Z"),
        _ => s,
    })
}
