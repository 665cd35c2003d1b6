//! The realistic mix, the single-event concurrency sweep and the search
//! freshness probe.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::Client;

use crate::events::{Tail, mixed_batch_body, standard_event};
use crate::load::{NATIVE, Server, drive};
use crate::report::Row;

/// Native batches of the realistic mix (kinds and sizes, 1000 sessions).
pub async fn mixed_batches(
    dir: &Path,
    events: u64,
    batch: u64,
    clients: usize,
) -> Result<Row, String> {
    let server = Server::spawn(dir, "mix")?;
    let requests = events.div_ceil(batch);
    // 64 distinct bodies (6,400 distinct events) reused round-robin.
    let bodies: Vec<Bytes> = (0..requests.min(64))
        .map(|k| Bytes::from(mixed_batch_body(k * batch, batch, 1000, Tail::Large)))
        .collect();
    let per_body: Vec<u64> = bodies.iter().map(|b| b.len() as u64).collect();
    let bytes: u64 = (0..requests)
        .map(|i| per_body[(i % per_body.len() as u64) as usize])
        .sum();
    let (elapsed, lat) = drive(&server, NATIVE, Arc::new(bodies), requests, clients).await?;
    let stopped = server.stop()?;
    let n = requests * batch;
    let mut row = Row::throughput(
        &format!("realistic mix, native batches of {batch}, {clients} clients"),
        n,
        elapsed.as_secs_f64(),
        Some(bytes),
    )
    .latencies(lat)
    .note(&format!(
        "median event ~1 KB, 5% 20-100 KB, {:.0} B/event on the wire; latency per {batch}-event request",
        bytes as f64 / n as f64
    ));
    row.peak_rss_mb = stopped.peak_rss_mb;
    row.disk_bytes_per_event = Some(stopped.db_bytes as f64 / n as f64);
    Ok(row)
}

/// One point of the concurrency sweep.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SweepPoint {
    pub clients: usize,
    pub per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// Single durable events at increasing concurrency, one server.
pub async fn singles_sweep(
    dir: &Path,
    levels: &[usize],
) -> Result<(Vec<Row>, Vec<SweepPoint>), String> {
    let server = Server::spawn(dir, "sweep")?;
    let bodies: Arc<Vec<Bytes>> = Arc::new(
        (0..1024)
            .map(|i| Bytes::from(format!(r#"{{"events":[{}]}}"#, standard_event(i, 100))))
            .collect(),
    );
    let mut rows = Vec::new();
    let mut points = Vec::new();
    for &clients in levels {
        let requests = (clients as u64 * 60).max(1500);
        let (elapsed, lat) = drive(&server, NATIVE, bodies.clone(), requests, clients).await?;
        let row = Row::throughput(
            &format!("sweep: single events, {clients} clients"),
            requests,
            elapsed.as_secs_f64(),
            None,
        )
        .latencies(lat);
        points.push(SweepPoint {
            clients,
            per_sec: row.per_sec,
            p50_ms: row.p50_ms.unwrap_or(0.0),
            p99_ms: row.p99_ms.unwrap_or(0.0),
        });
        rows.push(row);
    }
    server.stop()?;
    Ok((rows, points))
}

/// While `stop` is false: every 200 ms append one event carrying a fresh
/// token, then search for it at once and every 5 ms until found; the time
/// from the append's ack to the first search that finds it, and how many
/// first searches missed (an acknowledged event must be found: 0).
pub async fn probe_freshness(
    base: String,
    key: String,
    stop: Arc<AtomicBool>,
) -> Result<(Vec<Duration>, Probed), String> {
    let client = Client::new();
    let mut lags = Vec::new();
    let mut probed = Probed::default();
    let mut k = 0u64;
    while !stop.load(Ordering::Relaxed) {
        k += 1;
        let token = format!("freshprobe{k}x{}", std::process::id());
        let body = format!(
            r#"{{"events":[{{"session_id":"probe","agent_id":"probe","kind":"memory","payload":{{"key":"{token}"}}}}]}}"#
        );
        crate::load::post_json(
            &client,
            &format!("{base}/api/v1/events"),
            &key,
            body,
            201,
            "probe append",
        )
        .await?;
        let acked = Instant::now();
        let mut first = true;
        loop {
            let r = client
                .get(format!("{base}/api/v1/events?q={token}&limit=1"))
                .header("authorization", format!("Bearer {key}"))
                .send()
                .await
                .map_err(|e| e.to_string())?;
            let status = r.status();
            let body = r.bytes().await.map_err(|e| e.to_string())?;
            let v: serde_json::Value = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
            if v["events"].as_array().is_some_and(|a| !a.is_empty()) {
                lags.push(acked.elapsed());
                break;
            }
            if std::mem::take(&mut first) {
                // A search answered without the acknowledged event is a
                // miss; one refused (503: the index too far behind to scan
                // the rest) answered nothing and is retried.
                if status.is_success() {
                    probed.missed += 1;
                } else {
                    probed.refused += 1;
                    probed.refusal = Some(format!(
                        "{status} {}",
                        v["error"]["code"].as_str().unwrap_or("")
                    ));
                }
            }
            if acked.elapsed() > Duration::from_secs(30) {
                return Err(format!("probe {token} not searchable after 30 s"));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok((lags, probed))
}

/// What the freshness probe's first searches got wrong.
#[derive(Debug, Default)]
pub struct Probed {
    /// Answered (2xx) without the acknowledged event: must be 0.
    pub missed: u64,
    /// Refused (not 2xx), then retried; the last refusal's status and code.
    pub refused: u64,
    pub refusal: Option<String>,
}
