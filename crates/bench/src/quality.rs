//! Detector quality: every labelled sample of the policy corpus
//! (`crates/policy/corpus/*.jsonl`) is sent to a running server as an action
//! check, and the findings it answers with are scored — true and false
//! positives, misses, precision and recall per detector and per evasion
//! class (zero-width characters, homoglyphs, %-encoding, double base64 …).
//! Through HTTP like every other scenario, so the figures are those of the
//! detectors as the ingest path runs them, not of a unit test.
//!
//! A sample is `{"text": …, "rule": … | null, "evasion": …}` (sent as the
//! payload `{"text": …}`) or `{"json": {…}, …}` (sent as that payload: a card
//! number as a JSON number only exists this way). Positive samples count when
//! the detector reports their rule; negative ones when it reports nothing.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use reqwest::Client;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::load::Server;
use crate::report::Row;
use agentledger_policy::corpus::{CORPORA, samples};

#[derive(Deserialize)]
struct Finding {
    detector: String,
    rule: String,
}

#[derive(Deserialize)]
struct CheckAnswer {
    findings: Vec<Finding>,
}

/// Counts for one detector, or one evasion class of it. Precision is `None`
/// when nothing was reported, recall when there was nothing to find.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Score {
    pub samples: u64,
    pub tp: u64,
    pub fp: u64,
    #[serde(rename = "fn")]
    pub fn_: u64,
    pub tn: u64,
    pub precision: Option<f64>,
    pub recall: Option<f64>,
}

impl Score {
    fn add(&mut self, expected: Option<&str>, reported: &[String]) {
        self.samples += 1;
        match expected {
            Some(rule) if reported.iter().any(|r| r == rule) => self.tp += 1,
            Some(_) => self.fn_ += 1,
            None if reported.is_empty() => self.tn += 1,
            None => self.fp += 1,
        }
        let ratio = |a: u64, b: u64| (a + b > 0).then(|| a as f64 / (a + b) as f64);
        self.precision = ratio(self.tp, self.fp);
        self.recall = ratio(self.tp, self.fn_);
    }
}

/// A ratio to three places, or `-` when undefined.
pub fn ratio(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |x| format!("{x:.3}"))
}

/// The quality figures of one detector, in its benchmark row (and JSON).
#[derive(Debug, Clone, Serialize)]
pub struct Quality {
    pub detector: String,
    pub all: Score,
    /// Per evasion class; `plain` for samples that hide nothing.
    pub by_evasion: BTreeMap<String, Score>,
    /// The samples scored wrong, for reading (never in a table).
    pub wrong: Vec<String>,
}

/// Score every detector on its corpus through `/api/v1/check`.
pub async fn detector_quality(dir: &Path) -> Result<Vec<Row>, String> {
    let server = Server::spawn(dir, "quality")?;
    let client = Client::new();
    let url = format!("{}/api/v1/check", server.base);
    let mut rows = Vec::new();
    let mut total_seconds = 0.0;
    let mut overall = Quality {
        detector: "all detectors".into(),
        all: Score::default(),
        by_evasion: BTreeMap::new(),
        wrong: Vec::new(),
    };
    for (detector, corpus) in CORPORA {
        let mut q = Quality {
            detector: (*detector).into(),
            all: Score::default(),
            by_evasion: BTreeMap::new(),
            wrong: Vec::new(),
        };
        let started = Instant::now();
        for sample in samples(corpus) {
            let (line, sample) = sample.map_err(|e| format!("{detector} {e}"))?;
            let payload = match (&sample.json, &sample.text) {
                (Some(v @ Value::Object(_)), _) => v.clone(),
                (None, Some(t)) => serde_json::json!({ "text": t }),
                _ => return Err(format!("{detector} corpus line {line}: no text")),
            };
            let body = serde_json::json!({
                "session_id": format!("quality-{detector}"),
                "agent_id": "bench-quality",
                "kind": "custom",
                "payload": payload,
            });
            let r = client
                .post(&url)
                .header("authorization", format!("Bearer {}", server.key))
                .header("content-type", "application/json")
                .body(body.to_string())
                .send()
                .await
                .map_err(|e| e.to_string())?;
            let status = r.status();
            let bytes = r.bytes().await.map_err(|e| e.to_string())?;
            if status.as_u16() != 200 {
                return Err(format!(
                    "check of {detector} sample {} answered {status}: {}",
                    line,
                    String::from_utf8_lossy(&bytes)
                ));
            }
            let answer: CheckAnswer = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
            let reported: Vec<String> = answer
                .findings
                .into_iter()
                .filter(|f| f.detector == *detector)
                .map(|f| f.rule)
                .collect();
            let expected = sample.rule.as_deref();
            let class = sample.evasion.clone().unwrap_or_else(|| "plain".into());
            let before = q.all.tp + q.all.tn;
            for s in [
                &mut q.all,
                q.by_evasion.entry(class.clone()).or_default(),
                &mut overall.all,
                overall.by_evasion.entry(class).or_default(),
            ] {
                s.add(expected, &reported);
            }
            if q.all.tp + q.all.tn == before {
                q.wrong.push(format!(
                    "{detector}: expected {expected:?}, got {reported:?} for {}",
                    sample.text.clone().unwrap_or_else(|| sample
                        .json
                        .as_ref()
                        .map(Value::to_string)
                        .unwrap_or_default())
                ));
            }
        }
        let elapsed = started.elapsed().as_secs_f64();
        total_seconds += elapsed;
        rows.push(quality_row(q, elapsed));
    }
    server.stop()?;
    rows.push(quality_row(overall, total_seconds));
    Ok(rows)
}

fn quality_row(q: Quality, seconds: f64) -> Row {
    let s = &q.all;
    let mut row = Row::throughput(
        &format!("detector quality: {}", q.detector),
        s.samples,
        seconds,
        None,
    )
    .unit("samples/s")
    .note(&format!(
        "precision {}, recall {} (tp {} fp {} fn {} tn {}); one action check per labelled sample",
        ratio(s.precision),
        ratio(s.recall),
        s.tp,
        s.fp,
        s.fn_,
        s.tn
    ));
    row.quality = Some(q);
    row
}
