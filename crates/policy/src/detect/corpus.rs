//! Every detector on its corpus (crates/policy/corpus/*.jsonl): positive
//! samples must be found under their rule, negative ones must stay silent.
//! Precision and recall are printed (docs/policy.md quotes them) and held to
//! a floor so a regression fails.

use serde::Deserialize;

use super::Detectors;

#[derive(Deserialize)]
struct Sample {
    text: String,
    rule: Option<String>,
}

struct Score {
    tp: usize,
    fp: usize,
    fn_: usize,
    tn: usize,
    misses: Vec<String>,
}

fn score(detector: &str, corpus: &str) -> Score {
    let d = Detectors::new();
    let mut s = Score {
        tp: 0,
        fp: 0,
        fn_: 0,
        tn: 0,
        misses: Vec::new(),
    };
    for line in corpus.lines().filter(|l| !l.trim().is_empty()) {
        let sample: Sample = serde_json::from_str(line).expect("corpus line");
        let hits = d.scan_str(detector, &sample.text);
        match &sample.rule {
            Some(rule) if hits.iter().any(|h| h.rule == rule) => s.tp += 1,
            Some(rule) => {
                s.fn_ += 1;
                s.misses
                    .push(format!("missed {rule}: {:?} (got {hits:?})", sample.text));
            }
            None if hits.is_empty() => s.tn += 1,
            None => {
                s.fp += 1;
                s.misses
                    .push(format!("false positive {:?}: {hits:?}", sample.text));
            }
        }
    }
    s
}

fn check(detector: &str, corpus: &str) {
    let s = score(detector, corpus);
    let precision = s.tp as f64 / (s.tp + s.fp).max(1) as f64;
    let recall = s.tp as f64 / (s.tp + s.fn_).max(1) as f64;
    println!(
        "{detector}: {} positive / {} negative samples; precision {precision:.3}, recall {recall:.3} (tp {} fp {} fn {} tn {})",
        s.tp + s.fn_,
        s.fp + s.tn,
        s.tp,
        s.fp,
        s.fn_,
        s.tn
    );
    for m in &s.misses {
        println!("  {m}");
    }
    assert!(
        precision >= 0.95 && recall >= 0.95,
        "{detector}: precision {precision:.3}, recall {recall:.3}:\n{}",
        s.misses.join("\n")
    );
}

#[test]
fn secrets_corpus() {
    check("secrets", include_str!("../../corpus/secrets.jsonl"));
}

#[test]
fn pii_corpus() {
    check("pii", include_str!("../../corpus/pii.jsonl"));
}

#[test]
fn injection_corpus() {
    check("injection", include_str!("../../corpus/injection.jsonl"));
}
