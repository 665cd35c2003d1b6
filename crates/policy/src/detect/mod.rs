//! Detectors: secrets, personal data and prompt injection in every string of
//! an event. Pure Rust, linear-time regexes behind keyword prefilters, and a
//! time budget checked between strings.

pub mod injection;
pub mod pii;
pub mod secrets;

use std::time::Instant;

use serde_json::Value;

use agentledger_core::verdict::Finding;

/// The most findings kept per event; later ones are counted, not listed.
pub const MAX_FINDINGS: usize = 64;

/// A match inside one string, before it is placed in the event.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    pub rule: &'static str,
    pub start: usize,
    pub end: usize,
    pub confidence: f64,
}

/// Which detectors run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Enabled {
    pub secrets: bool,
    pub pii: bool,
    pub injection: bool,
}

impl Default for Enabled {
    fn default() -> Self {
        Enabled {
            secrets: true,
            pii: true,
            injection: true,
        }
    }
}

/// Every detector, compiled once.
pub struct Detectors {
    secrets: secrets::Secrets,
    pii: pii::Pii,
    injection: injection::Injection,
    pub enabled: Enabled,
}

/// The outcome of scanning one event.
#[derive(Debug, Default)]
pub struct Scan {
    pub findings: Vec<Finding>,
    /// Findings beyond [`MAX_FINDINGS`].
    pub dropped: usize,
    /// The deadline passed before every string was scanned.
    pub budget_exceeded: bool,
}

impl Default for Detectors {
    fn default() -> Self {
        Self::new()
    }
}

impl Detectors {
    pub fn new() -> Self {
        Detectors {
            secrets: secrets::Secrets::new(),
            pii: pii::Pii::new(),
            injection: injection::Injection::new(),
            enabled: Enabled::default(),
        }
    }

    /// Hits of one detector in one string.
    pub fn scan_str(&self, detector: &str, s: &str) -> Vec<Hit> {
        match detector {
            "secrets" => self.secrets.scan(s),
            "pii" => self.pii.scan(s),
            "injection" => self.injection.scan(s),
            _ => Vec::new(),
        }
    }

    /// Scan every string in `value` (object keys are not scanned), naming each
    /// finding by its JSON pointer under `root` (`/payload`, `/metadata`).
    pub fn scan_value(&self, root: &str, value: &Value, deadline: Instant, out: &mut Scan) {
        let mut path = String::from(root);
        self.walk(value, &mut path, deadline, out, 0);
    }

    fn walk(&self, v: &Value, path: &mut String, deadline: Instant, out: &mut Scan, depth: usize) {
        if out.budget_exceeded || depth > agentledger_core::limits::MAX_JSON_DEPTH {
            return;
        }
        match v {
            Value::String(s) => {
                if Instant::now() >= deadline {
                    out.budget_exceeded = true;
                    return;
                }
                for (name, on) in [
                    ("secrets", self.enabled.secrets),
                    ("pii", self.enabled.pii),
                    ("injection", self.enabled.injection),
                ] {
                    if !on {
                        continue;
                    }
                    for h in self.scan_str(name, s) {
                        if out.findings.len() >= MAX_FINDINGS {
                            out.dropped += 1;
                            continue;
                        }
                        out.findings.push(Finding {
                            detector: name.to_owned(),
                            rule: h.rule.to_owned(),
                            json_pointer: path.clone(),
                            start: h.start,
                            end: h.end,
                            confidence: h.confidence,
                        });
                    }
                }
            }
            Value::Array(a) => {
                for (i, x) in a.iter().enumerate() {
                    let len = path.len();
                    path.push('/');
                    path.push_str(&i.to_string());
                    self.walk(x, path, deadline, out, depth + 1);
                    path.truncate(len);
                }
            }
            Value::Object(m) => {
                for (k, x) in m {
                    let len = path.len();
                    path.push('/');
                    // RFC 6901 escaping.
                    path.push_str(&k.replace('~', "~0").replace('/', "~1"));
                    self.walk(x, path, deadline, out, depth + 1);
                    path.truncate(len);
                }
            }
            _ => {}
        }
    }
}

/// Shannon entropy of `s` in bits per byte.
pub fn entropy(s: &[u8]) -> f64 {
    if s.is_empty() {
        return 0.0;
    }
    let mut counts = [0u32; 256];
    for &b in s {
        counts[b as usize] += 1;
    }
    let n = s.len() as f64;
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = c as f64 / n;
            -p * p.log2()
        })
        .sum()
}

/// Drop hits that overlap an earlier, longer-or-equal hit of the same detector.
pub(crate) fn dedup(mut hits: Vec<Hit>) -> Vec<Hit> {
    hits.sort_by(|a, b| a.start.cmp(&b.start).then(b.end.cmp(&a.end)));
    let mut out: Vec<Hit> = Vec::with_capacity(hits.len());
    for h in hits {
        if out.last().is_some_and(|l| h.start < l.end) {
            continue;
        }
        out.push(h);
    }
    out
}

#[cfg(test)]
mod corpus;
