//! Scenario `log`: the transparency log under batched ingest (issue 17). Measures what a user
//! would notice: how long after the last acknowledgement every event is in a signed checkpoint
//! (a backlog that grew during the load shows here), and how long an inclusion proof takes once
//! the tree holds every event.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::Client;

use crate::events::batch_body;
use crate::load::{NATIVE, Server, drive};
use crate::report::Row;

/// Proofs timed (the newest events, one request at a time).
const PROOFS: usize = 500;

async fn get(client: &Client, server: &Server, path: &str) -> Result<(u16, Bytes), String> {
    let r = client
        .get(format!("{}{path}", server.base))
        .header("authorization", format!("Bearer {}", server.key))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = r.status().as_u16();
    Ok((status, r.bytes().await.map_err(|e| e.to_string())?))
}

/// The size line of the latest checkpoint (0 before the first).
async fn checkpoint_size(client: &Client, server: &Server) -> Result<u64, String> {
    let (status, body) = get(client, server, "/log/checkpoint").await?;
    if status == 404 {
        return Ok(0);
    }
    if status != 200 {
        return Err(format!("GET /log/checkpoint answered {status}"));
    }
    let text = String::from_utf8_lossy(&body);
    text.lines()
        .nth(1)
        .and_then(|l| l.parse().ok())
        .ok_or_else(|| "a checkpoint without a size line".to_owned())
}

pub async fn log_rows(dir: &Path, events: u64) -> Result<Vec<Row>, String> {
    let server = Server::spawn(dir, "log")?;
    let client = Client::new();
    let batch = 1000u64;
    let requests = events.div_ceil(batch).max(1);
    let n = requests * batch;
    let bodies: Vec<Bytes> = (0..requests.min(16))
        .map(|k| Bytes::from(batch_body(k * batch, batch, 100)))
        .collect();
    let (elapsed, _) = drive(&server, NATIVE, Arc::new(bodies), requests, 4).await?;
    let acked = Instant::now();
    let mut size = checkpoint_size(&client, &server).await?;
    let behind_at_last_ack = n.saturating_sub(size);
    while size < n {
        if acked.elapsed() > Duration::from_secs(600) {
            return Err(format!(
                "after 10 minutes the log's checkpoint holds {size} of {n} events"
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        size = checkpoint_size(&client, &server).await?;
    }
    let lag = acked.elapsed();
    let ingest = Row::throughput(
        "log: every event in a signed checkpoint, batched ingest",
        n,
        (elapsed + lag).as_secs_f64(),
        None,
    )
    .note(&format!(
        "ingest {:.0} events/s (batches of 1000, 4 clients); at the last ack the checkpoint was \
         {behind_at_last_ack} events behind, all signed {} ms later (integrator every {} s, \
         checkpoints every {} s: serve's defaults)",
        n as f64 / elapsed.as_secs_f64(),
        lag.as_millis(),
        agentledger::transparency::INTEGRATE_EVERY_SECS,
        agentledger::transparency::CHECKPOINT_EVERY_SECS
    ));

    let (status, body) = get(
        &client,
        &server,
        &format!("/api/v1/events?limit={}", PROOFS.min(500)),
    )
    .await?;
    if status != 200 {
        return Err(format!("listing events answered {status}"));
    }
    let listing: serde_json::Value = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
    let ids: Vec<String> = listing["events"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|e| e["id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let started = Instant::now();
    let mut lat = Vec::with_capacity(ids.len());
    for id in &ids {
        let t = Instant::now();
        let (status, _) = get(&client, &server, &format!("/log/proof/inclusion/{id}")).await?;
        if status != 200 {
            return Err(format!("inclusion proof of {id} answered {status}"));
        }
        lat.push(t.elapsed());
    }
    let proofs = Row::throughput(
        &format!("log: inclusion proof at {n} leaves"),
        ids.len() as u64,
        started.elapsed().as_secs_f64(),
        None,
    )
    .unit("proofs/s")
    .latencies(lat)
    .note("one client, JSON answer; HTTP round trip included");
    server.stop()?;
    Ok(vec![ingest, proofs])
}
