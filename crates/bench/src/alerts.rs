//! Ingest with alert rules present (issue 18): the batch scenario's native
//! batches, on a server whose project has the most rules a project may have
//! (50), none of which fires on these events, so the row beside `batch` says
//! what matching every event against the rules in the writer costs the
//! acknowledgement; one of them is a threshold rule, evaluated in the
//! background meanwhile.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use reqwest::Client;
use serde_json::{Value, json};

use crate::events::batch_body;
use crate::load::{NATIVE, SESSIONS, Server, drive};
use crate::report::Row;

/// Rules a project may have (the server's bound).
const RULES: usize = 50;

async fn create(
    client: &Client,
    server: &Server,
    path: &str,
    body: Value,
) -> Result<Value, String> {
    let r = client
        .post(format!("{}{path}", server.base))
        .bearer_auth(&server.key)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .map_err(|e| format!("POST {path}: {e}"))?;
    let status = r.status();
    let bytes = r.bytes().await.map_err(|e| format!("POST {path}: {e}"))?;
    let v: Value = serde_json::from_slice(&bytes).map_err(|e| format!("POST {path}: {e}"))?;
    if status.as_u16() != 201 {
        return Err(format!("POST {path} answered {status}: {v}"));
    }
    Ok(v)
}

/// The rules: decisions the default set never makes, kinds and detectors
/// these tool calls never carry, and a threshold on errors (there are none).
fn rules(destination: &Value) -> Vec<Value> {
    let condition = |i: usize| match i % 3 {
        0 => json!({"type": "decision", "decisions": ["deny"]}),
        1 => json!({"type": "event_kind", "kinds": ["tool_error", "error"]}),
        _ => json!({"type": "detector", "detectors": ["secrets", "pii", "injection"]}),
    };
    let mut rules: Vec<Value> = (0..RULES - 1)
        .map(|i| json!({"name": format!("silent {i}"), "condition": condition(i), "destinations": [destination]}))
        .collect();
    rules.push(json!({"name": "errors per agent per 5 minutes",
        "condition": {"type": "threshold", "metric": "agent_errors",
                      "threshold": 1, "window_secs": 300},
        "destinations": [destination]}));
    rules
}

pub async fn batches_with_rules(
    dir: &Path,
    events: u64,
    batch: u64,
    clients: usize,
) -> Result<Row, String> {
    let server = Server::spawn(dir, "alerts")?;
    let client = Client::new();
    let dest = create(
        &client,
        &server,
        "/api/v1/alerts/destinations",
        json!({"name": "sink", "kind": "webhook", "url": "http://127.0.0.1:9/never"}),
    )
    .await?;
    for rule in rules(&dest["id"]) {
        create(&client, &server, "/api/v1/alerts/rules", rule).await?;
    }
    let requests = events.div_ceil(batch);
    let bodies: Vec<Bytes> = (0..requests.min(16))
        .map(|k| Bytes::from(batch_body(k * batch, batch, SESSIONS)))
        .collect();
    let bytes = bodies[0].len() as u64 * requests;
    let (elapsed, lat) = drive(&server, NATIVE, Arc::new(bodies), requests, clients).await?;
    // Nothing fired: the rules were matched, never met.
    let listed = client
        .get(format!("{}/api/v1/alerts?status=all", server.base))
        .bearer_auth(&server.key)
        .send()
        .await
        .map_err(|e| e.to_string())?
        .bytes()
        .await
        .map_err(|e| e.to_string())?;
    let open: Value = serde_json::from_slice(&listed).map_err(|e| e.to_string())?;
    let fired = open["alerts"].as_array().map_or(0, Vec::len);
    if fired != 0 {
        return Err(format!(
            "{fired} alerts fired; the scenario's rules must stay silent"
        ));
    }
    let stopped = server.stop()?;
    let n = requests * batch;
    let mut row = Row::throughput(
        &format!("native batches of {batch}, {clients} clients, {RULES} alert rules"),
        n,
        elapsed.as_secs_f64(),
        Some(bytes),
    )
    .latencies(lat)
    .note(&format!(
        "latency is per 1000-event request; {} event rules matched against every event in the writer, none fires; 1 threshold rule evaluated in the background",
        RULES - 1
    ));
    row.peak_rss_mb = stopped.peak_rss_mb;
    Ok(row)
}
