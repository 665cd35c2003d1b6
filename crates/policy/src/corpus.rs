//! The labelled detector corpus (`crates/policy/corpus/*.jsonl`), read by the
//! detectors' own tests and by the benchmark's detector-quality scenario.
//!
//! A line is `{"text": "...", "rule": "..." | null}`, optionally with
//! `"evasion": "<class>"` (how the sample hides what it carries), or with
//! `"json": <value>` instead of `text` for samples that only exist as JSON
//! (a card number sent as a JSON number). `rule: null` marks a negative.

use serde::Deserialize;
use serde_json::Value;

/// Each detector's corpus, by detector name.
pub const CORPORA: &[(&str, &str)] = &[
    ("secrets", include_str!("../corpus/secrets.jsonl")),
    ("pii", include_str!("../corpus/pii.jsonl")),
    ("injection", include_str!("../corpus/injection.jsonl")),
];

/// One labelled sample.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sample {
    #[serde(default)]
    pub text: Option<String>,
    #[serde(default)]
    pub json: Option<Value>,
    /// The rule that must find it; `None` for a sample that must stay silent.
    pub rule: Option<String>,
    #[serde(default)]
    pub evasion: Option<String>,
}

/// The samples of one corpus, in order, with their 1-based line numbers
/// (blank lines skipped); a line that does not parse is an error naming it.
pub fn samples(corpus: &str) -> impl Iterator<Item = Result<(usize, Sample), String>> + '_ {
    corpus
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l)
                .map(|s| (i + 1, s))
                .map_err(|e| format!("corpus line {}: {e}", i + 1))
        })
}
