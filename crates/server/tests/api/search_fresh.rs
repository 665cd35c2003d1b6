//! Search finds what was acknowledged (issue 14, part 4): an event is found by
//! any full-text search that starts after its `201`, through the native `q=`
//! and the AgentLens `search=`, while other writers keep the background
//! indexer behind (the store answers the not-yet-indexed tail by scanning it).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app};

/// Writers that post one event and search for it at once, and the rounds
/// each does; every round searches through both APIs.
const PROBES: usize = 4;
const ROUNDS: usize = 300;
/// Writers that post batches meanwhile, so the index always has a tail.
const LOADERS: usize = 2;

async fn search(app: &TestApp, path: &str) -> Value {
    let r = app.get(path).await;
    let status = r.status();
    let body: Value = r.json().await.expect("json");
    assert_eq!(status, StatusCode::OK, "{path}: {body}");
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_acknowledged_event_is_found_by_the_next_search() {
    let app = Arc::new(spawn_app().await);
    let stop = Arc::new(AtomicBool::new(false));
    let loaded = Arc::new(AtomicU64::new(0));
    let mut loaders = Vec::new();
    for l in 0..LOADERS {
        let (app, stop, loaded) = (app.clone(), stop.clone(), loaded.clone());
        loaders.push(tokio::spawn(async move {
            let mut k = 0;
            while !stop.load(Ordering::Relaxed) {
                k += 1;
                let events: Vec<Value> = (0..200)
                    .map(|i| json!({"session_id": format!("load{l}"), "agent_id": "loader", "kind": "memory", "payload": {"w": format!("filler{k}x{i} common words")}}))
                    .collect();
                app.ingest(Value::Array(events)).await;
                loaded.fetch_add(200, Ordering::Relaxed);
            }
        }));
    }
    // The backlog seen while probing: the test means something only if the
    // searches ran while the index trailed.
    let sampler = {
        let (app, stop) = (app.clone(), stop.clone());
        tokio::spawn(async move {
            let mut max = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let m = app.metrics().await;
                let backlog = m
                    .lines()
                    .find_map(|l| l.strip_prefix("agentledger_search_backlog_events "))
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .unwrap_or(0);
                max = max.max(backlog);
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            max
        })
    };
    let mut probes = Vec::new();
    for w in 0..PROBES {
        let app = app.clone();
        probes.push(tokio::spawn(async move {
            let (mut searches, mut misses) = (0u64, Vec::new());
            for r in 0..ROUNDS {
                let token = format!("fresh{w}x{r}q{}", std::process::id());
                // Posted alternately through the native API and AgentLens.
                let id = if r % 2 == 0 {
                    let body = app
                        .ingest(json!([{"session_id": format!("probe{w}"), "agent_id": "probe", "kind": "memory", "payload": {"key": token}}]))
                        .await;
                    body["events"][0]["id"].as_str().expect("id").to_owned()
                } else {
                    let r = app
                        .post("/api/events", &json!({"events": [{"sessionId": format!("probe{w}"), "agentId": "probe", "eventType": "custom", "severity": "info", "payload": {"type": "note", "data": token}}]}))
                        .await;
                    assert_eq!(r.status(), StatusCode::CREATED);
                    let body: Value = r.json().await.expect("json");
                    body["events"][0]["id"].as_str().expect("id").to_owned()
                };
                for path in [
                    format!("/api/v1/events?q={token}&limit=5"),
                    format!("/api/events?search={token}&limit=5"),
                ] {
                    let page = search(&app, &path).await;
                    searches += 1;
                    let ids: Vec<&str> = page["events"]
                        .as_array()
                        .expect("events")
                        .iter()
                        .filter_map(|e| e["id"].as_str())
                        .collect();
                    if page["total"] != 1 || ids != [id.as_str()] {
                        misses.push(format!("{path}: {page}"));
                    }
                }
            }
            (searches, misses)
        }));
    }
    let (mut searches, mut misses) = (0, Vec::new());
    for p in probes {
        let (s, m) = p.await.expect("probe");
        searches += s;
        misses.extend(m);
    }
    stop.store(true, Ordering::Relaxed);
    for l in loaders {
        l.await.expect("loader");
    }
    let max_backlog = sampler.await.expect("sampler");
    eprintln!(
        "search freshness: {searches} searches, {} misses, {} load events, max backlog {max_backlog}",
        misses.len(),
        loaded.load(Ordering::Relaxed)
    );
    assert_eq!(searches as usize, PROBES * ROUNDS * 2);
    assert!(
        misses.is_empty(),
        "{} misses, first: {:?}",
        misses.len(),
        misses.first()
    );
    assert!(
        max_backlog > 0,
        "the index never trailed: the tail was not exercised"
    );
}
