//! Detectors: secrets, personal data and prompt injection in every string of
//! an event (and card numbers and SSNs in its numbers). Pure Rust,
//! linear-time regexes behind keyword prefilters, and a time budget checked
//! between strings.
//!
//! Each string is scanned as the reader would see it and as a decoder
//! would: normalised (invisible characters dropped, compatibility forms and
//! Latin lookalikes folded, [`normalize`]) and with what %-encoding, base64
//! or hex hides in it decoded ([`views`]). Findings always point at a span
//! of the string as received.

mod decode;
pub mod injection;
mod normalize;
pub mod pii;
pub mod secrets;
mod spans;
mod views;

use std::time::Instant;

use serde_json::Value;

use agentledger_core::verdict::Finding;

pub use decode::Encoding;
use views::Views;

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
    /// Not everything was scanned: the deadline passed before every string
    /// was, or a string's normalised or decoded forms went past their bounds
    /// (see `incomplete_strings`). Either way the event must not pass as
    /// clean.
    pub budget_exceeded: bool,
    /// Strings whose normalised or decoded forms were cut short by a bound
    /// (depth, count or bytes of decoded text).
    pub incomplete_strings: usize,
}

/// One of the three detectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Which {
    Secrets,
    Pii,
    Injection,
}

impl Which {
    fn name(self) -> &'static str {
        match self {
            Which::Secrets => "secrets",
            Which::Pii => "pii",
            Which::Injection => "injection",
        }
    }
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

    /// Hits of one detector in one string, its normalised and decoded forms
    /// included, at spans of `s`.
    pub fn scan_str(&self, detector: &str, s: &str) -> Vec<Hit> {
        let which = match detector {
            "secrets" => Which::Secrets,
            "pii" => Which::Pii,
            "injection" => Which::Injection,
            _ => return Vec::new(),
        };
        self.hits(which, &Views::build(s, None))
    }

    /// One detector on one text, as it is.
    fn scan_text(&self, which: Which, text: &str) -> Vec<Hit> {
        match which {
            Which::Secrets => self.secrets.scan(text),
            Which::Pii => self.pii.scan(text),
            Which::Injection => self.injection.scan(text),
        }
    }

    /// One detector on every form of a string, mapped back to the original.
    fn hits(&self, which: Which, views: &Views) -> Vec<Hit> {
        let mut out = Vec::new();
        if views.scan_original {
            out = self.scan_text(which, views.original);
        }
        if which == Which::Injection {
            out.extend(self.injection.invisible(views.original));
        }
        for (i, v) in views.views.iter().enumerate().filter(|(_, v)| v.scan) {
            for h in self.scan_text(which, &v.text) {
                let (start, end) = views.to_original(i, h.start, h.end);
                let rule = match (which, v.encoding) {
                    (Which::Injection, Some(e)) => injection::encoded_rule(h.rule, e),
                    _ => h.rule,
                };
                out.push(Hit {
                    rule,
                    start,
                    end,
                    confidence: h.confidence,
                });
            }
        }
        dedup(out)
    }

    /// Scan every string in `value` (object keys are not scanned), and every
    /// number for card numbers and SSNs, naming each finding by its JSON
    /// pointer under `root` (`/payload`, `/metadata`). A number's finding
    /// spans its whole text as serde_json writes it.
    pub fn scan_value(&self, root: &str, value: &Value, deadline: Instant, out: &mut Scan) {
        let mut path = String::from(root);
        self.walk(value, "", &mut path, deadline, out, 0);
    }

    fn push(&self, which: Which, hits: Vec<Hit>, path: &str, out: &mut Scan) {
        for h in hits {
            if out.findings.len() >= MAX_FINDINGS {
                out.dropped += 1;
                continue;
            }
            out.findings.push(Finding {
                detector: which.name().to_owned(),
                rule: h.rule.to_owned(),
                json_pointer: path.to_owned(),
                start: h.start,
                end: h.end,
                confidence: h.confidence,
            });
        }
    }

    /// `key` is the name of the member that holds `v` (or, inside an array,
    /// the array): the context a number is read in.
    fn walk(
        &self,
        v: &Value,
        key: &str,
        path: &mut String,
        deadline: Instant,
        out: &mut Scan,
        depth: usize,
    ) {
        if depth > agentledger_core::limits::MAX_JSON_DEPTH
            || (out.budget_exceeded && Instant::now() >= deadline)
        {
            return;
        }
        match v {
            Value::String(s) => {
                if Instant::now() >= deadline {
                    out.budget_exceeded = true;
                    return;
                }
                let views = Views::build(s, Some(deadline));
                if views.incomplete {
                    out.incomplete_strings += 1;
                    out.budget_exceeded = true;
                }
                for (which, on) in [
                    (Which::Secrets, self.enabled.secrets),
                    (Which::Pii, self.enabled.pii),
                    (Which::Injection, self.enabled.injection),
                ] {
                    if on {
                        let hits = self.hits(which, &views);
                        self.push(which, hits, path, out);
                    }
                }
            }
            Value::Number(n) if self.enabled.pii && long_number(n) => {
                let hits = self.pii.scan_number(key, &n.to_string());
                self.push(Which::Pii, hits, path, out);
            }
            Value::Array(a) => {
                for (i, x) in a.iter().enumerate() {
                    let len = path.len();
                    path.push('/');
                    path.push_str(&i.to_string());
                    self.walk(x, key, path, deadline, out, depth + 1);
                    path.truncate(len);
                }
            }
            Value::Object(m) => {
                for (k, x) in m {
                    let len = path.len();
                    path.push('/');
                    // RFC 6901 escaping.
                    path.push_str(&k.replace('~', "~0").replace('/', "~1"));
                    self.walk(x, k, path, deadline, out, depth + 1);
                    path.truncate(len);
                }
            }
            _ => {}
        }
    }
}

/// A non-negative number with at least seven digits before any point: the
/// only ones that can be a card number or an SSN (which loses its leading
/// zeros as a number). Checked without formatting, so the usual small
/// numbers cost nothing.
fn long_number(n: &serde_json::Number) -> bool {
    const MIN: u64 = 1_000_000;
    match n.as_u64() {
        Some(u) => u >= MIN,
        None => n.as_f64().is_some_and(|f| f >= MIN as f64),
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
#[cfg(test)]
mod evasions;
