//! Every detector on its corpus (crates/policy/corpus/*.jsonl): positive
//! samples must be found under their rule, negative ones must stay silent.
//! Precision and recall are printed, overall and per evasion class
//! (docs/policy.md quotes them), and held to a floor so a regression fails.
//!
//! A line is `{"text": "...", "rule": "..." | null}`, optionally with
//! `"evasion": "<class>"` (how the sample hides what it carries), or with
//! `"json": <value>` instead of `text` for samples that only exist as JSON
//! (a card number sent as a JSON number): those are scanned as an event
//! payload.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{Detectors, Enabled, Scan};
use crate::corpus::{CORPORA, Sample, samples};

#[derive(Default)]
struct Score {
    tp: usize,
    fp: usize,
    fn_: usize,
    tn: usize,
    misses: Vec<String>,
}

impl Score {
    /// 1 when nothing was reported (nothing wrongly said); printed as `-`.
    fn precision(&self) -> f64 {
        ratio(self.tp, self.fp)
    }
    /// 1 when there was nothing to find; printed as `-`.
    fn recall(&self) -> f64 {
        ratio(self.tp, self.fn_)
    }
}

fn ratio(good: usize, bad: usize) -> f64 {
    if good + bad == 0 {
        1.0
    } else {
        good as f64 / (good + bad) as f64
    }
}

fn shown(v: f64, defined: bool) -> String {
    if defined {
        format!("{v:.3}")
    } else {
        "-".into()
    }
}

/// The rules `detector` reports for one sample.
fn rules_of(d: &Detectors, detector: &str, sample: &Sample) -> Vec<String> {
    if let Some(text) = &sample.text {
        return d
            .scan_str(detector, text)
            .into_iter()
            .map(|h| h.rule.to_owned())
            .collect();
    }
    let Some(json) = &sample.json else {
        return Vec::new();
    };
    let mut only = Detectors::new();
    only.enabled = Enabled {
        secrets: detector == "secrets",
        pii: detector == "pii",
        injection: detector == "injection",
    };
    let mut scan = Scan::default();
    only.scan_value(
        "/payload",
        json,
        Instant::now() + Duration::from_secs(10),
        &mut scan,
    );
    scan.findings.into_iter().map(|f| f.rule).collect()
}

/// Scores overall (key "all") and per evasion class ("plain" for none).
fn score(detector: &str, corpus: &str) -> BTreeMap<String, Score> {
    let d = Detectors::new();
    let mut by: BTreeMap<String, Score> = BTreeMap::new();
    for sample in samples(corpus) {
        let (_, sample) = sample.expect("corpus line");
        let rules = rules_of(&d, detector, &sample);
        let class = sample.evasion.clone().unwrap_or_else(|| "plain".into());
        let shown = sample.text.clone().unwrap_or_else(|| {
            sample
                .json
                .as_ref()
                .map(Value::to_string)
                .unwrap_or_default()
        });
        for key in ["all".to_owned(), class] {
            let s = by.entry(key).or_default();
            match &sample.rule {
                Some(rule) if rules.contains(rule) => s.tp += 1,
                Some(rule) => {
                    s.fn_ += 1;
                    s.misses
                        .push(format!("missed {rule}: {shown:?} (got {rules:?})"));
                }
                None if rules.is_empty() => s.tn += 1,
                None => {
                    s.fp += 1;
                    s.misses
                        .push(format!("false positive {shown:?}: {rules:?}"));
                }
            }
        }
    }
    by
}

fn check(detector: &str, corpus: &str) {
    let by = score(detector, corpus);
    for (class, s) in &by {
        println!(
            "{detector} {class}: {} positive / {} negative; precision {}, recall {} (tp {} fp {} fn {} tn {})",
            s.tp + s.fn_,
            s.fp + s.tn,
            shown(s.precision(), s.tp + s.fp > 0),
            shown(s.recall(), s.tp + s.fn_ > 0),
            s.tp,
            s.fp,
            s.fn_,
            s.tn
        );
    }
    let all = &by["all"];
    for m in &all.misses {
        println!("  {m}");
    }
    assert!(
        all.precision() >= 0.95 && all.recall() >= 0.95,
        "{detector}: precision {:.3}, recall {:.3}:\n{}",
        all.precision(),
        all.recall(),
        all.misses.join("\n")
    );
}

#[test]
fn secrets_corpus() {
    check("secrets", corpus_of("secrets"));
}

#[test]
fn pii_corpus() {
    check("pii", corpus_of("pii"));
}

#[test]
fn injection_corpus() {
    check("injection", corpus_of("injection"));
}

fn corpus_of(detector: &str) -> &'static str {
    CORPORA
        .iter()
        .find(|(d, _)| *d == detector)
        .map(|(_, c)| *c)
        .expect("a corpus per detector")
}
