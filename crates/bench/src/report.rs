//! Results: latency percentiles, the printed table and the JSON file.

use std::path::Path;
use std::time::Duration;

use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub scenario: String,
    pub count: u64,
    pub seconds: f64,
    pub per_sec: f64,
    pub unit: String,
    pub mb_per_sec: Option<f64>,
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub p999_ms: Option<f64>,
    /// Throughput as a fraction of its ceiling's: the raw-insert ceiling for
    /// ingest rows, the verify ceiling for the verify row (counts over total
    /// times, so a ratio of means).
    pub of_ceiling: Option<f64>,
    pub peak_rss_mb: Option<f64>,
    pub disk_bytes_per_event: Option<f64>,
    pub note: String,
    /// Detector quality rows only: precision and recall over the corpus.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quality: Option<crate::quality::Quality>,
}

impl Row {
    pub fn throughput(scenario: &str, count: u64, seconds: f64, bytes: Option<u64>) -> Row {
        Row {
            scenario: scenario.into(),
            count,
            seconds,
            per_sec: count as f64 / seconds.max(1e-9),
            unit: "events/s".into(),
            mb_per_sec: bytes.map(|b| b as f64 / 1e6 / seconds.max(1e-9)),
            p50_ms: None,
            p95_ms: None,
            p99_ms: None,
            p999_ms: None,
            of_ceiling: None,
            peak_rss_mb: None,
            disk_bytes_per_event: None,
            note: String::new(),
            quality: None,
        }
    }

    pub fn note(mut self, n: &str) -> Row {
        self.note = n.into();
        self
    }

    pub fn unit(mut self, u: &str) -> Row {
        self.unit = u.into();
        self
    }

    /// Attach request latency percentiles.
    pub fn latencies(mut self, mut l: Vec<Duration>) -> Row {
        if l.is_empty() {
            return self;
        }
        l.sort_unstable();
        let at = |q: f64| {
            let i = ((l.len() as f64 * q).ceil() as usize).clamp(1, l.len()) - 1;
            l[i].as_secs_f64() * 1000.0
        };
        self.p50_ms = Some(at(0.50));
        self.p95_ms = Some(at(0.95));
        self.p99_ms = Some(at(0.99));
        self.p999_ms = Some(at(0.999));
        self
    }

    pub fn with_ceiling(mut self, ceiling: Option<f64>) -> Row {
        self.of_ceiling = ceiling.map(|c| self.per_sec / c);
        self
    }
}

fn opt(v: Option<f64>, prec: usize) -> String {
    v.map(|x| format!("{x:.prec$}"))
        .unwrap_or_else(|| "-".into())
}

pub fn print(rows: &[Row]) {
    println!(
        "\n| {:<52} | {:>9} | {:>14} | {:>6} | {:>8} | {:>8} | {:>8} | {:>8} | {:>7} | {:>6} | {:>9} |",
        "scenario",
        "count",
        "rate",
        "MB/s",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "p999 ms",
        "ceiling",
        "RSS MB",
        "disk B/ev"
    );
    println!(
        "|{:-<54}|{:-<11}|{:-<16}|{:-<8}|{:-<10}|{:-<10}|{:-<10}|{:-<10}|{:-<9}|{:-<8}|{:-<11}|",
        "", "", "", "", "", "", "", "", "", "", ""
    );
    for r in rows {
        println!(
            "| {:<52} | {:>9} | {:>14} | {:>6} | {:>8} | {:>8} | {:>8} | {:>8} | {:>7} | {:>6} | {:>9} |",
            r.scenario,
            r.count,
            format!("{:.0} {}", r.per_sec, r.unit.trim_end_matches("/s")).replace("events", "ev")
                + "/s",
            opt(r.mb_per_sec, 1),
            opt(r.p50_ms, 2),
            opt(r.p95_ms, 2),
            opt(r.p99_ms, 2),
            opt(r.p999_ms, 2),
            r.of_ceiling
                .map(|c| format!("{:.0}%", c * 100.0))
                .unwrap_or_else(|| "-".into()),
            opt(r.peak_rss_mb, 0),
            opt(r.disk_bytes_per_event, 0),
        );
    }
    for r in rows.iter().filter(|r| !r.note.is_empty()) {
        println!("  {}: {}", r.scenario, r.note);
    }
    print_quality(rows);
}

/// Precision and recall per detector and per evasion class, and the samples
/// scored wrong.
fn print_quality(rows: &[Row]) {
    let qs: Vec<&crate::quality::Quality> =
        rows.iter().filter_map(|r| r.quality.as_ref()).collect();
    if qs.is_empty() {
        return;
    }
    println!(
        "\n| {:<15} | {:<14} | {:>7} | {:>4} | {:>4} | {:>4} | {:>4} | {:>9} | {:>6} |",
        "detector", "evasion", "samples", "TP", "FP", "FN", "TN", "precision", "recall"
    );
    println!(
        "|{:-<17}|{:-<16}|{:-<9}|{:-<6}|{:-<6}|{:-<6}|{:-<6}|{:-<11}|{:-<8}|",
        "", "", "", "", "", "", "", "", ""
    );
    for q in &qs {
        let lines = std::iter::once(("all", &q.all))
            .chain(q.by_evasion.iter().map(|(k, v)| (k.as_str(), v)));
        for (class, s) in lines {
            println!(
                "| {:<15} | {:<14} | {:>7} | {:>4} | {:>4} | {:>4} | {:>4} | {:>9} | {:>6} |",
                q.detector,
                class,
                s.samples,
                s.tp,
                s.fp,
                s.fn_,
                s.tn,
                crate::quality::ratio(s.precision),
                crate::quality::ratio(s.recall),
            );
        }
    }
    for q in &qs {
        for w in &q.wrong {
            println!("  wrong: {w}");
        }
    }
}

pub fn write_json(path: &Path, rows: &[Row]) -> std::io::Result<()> {
    let text = serde_json::to_string_pretty(rows).map_err(std::io::Error::other)?;
    std::fs::write(path, text)
}
