use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;

#[tokio::test]
async fn documented_event_is_stored_and_read_back_with_its_chain_fields() {
    let app = spawn_app().await;
    let body = app.ingest(json!([tool_call("sess_01", "call_01")])).await;
    assert_eq!(body["ingested"], 1);
    let ev = &body["events"][0];
    assert_eq!(
        (ev["seq"].as_u64(), ev["session_id"].as_str()),
        (Some(1), Some("sess_01"))
    );
    assert_eq!(ev["id"].as_str().map(str::len), Some(26), "ULID");
    assert_eq!(ev["hash"].as_str().map(str::len), Some(64));

    let got = app
        .get_json(&format!("/api/v1/events/{}", ev["id"].as_str().unwrap()))
        .await;
    assert_eq!(got["payload"]["arguments"]["query"], "user records");
    assert_eq!(got["kind"], "tool_call");
    assert_eq!(got["dialect"], "native");
    assert_eq!(got["severity"], "info");
    assert_eq!(got["prev_hash"], Value::Null);
    assert_eq!(got["hash"], ev["hash"]);
}

#[tokio::test]
async fn payload_bytes_are_kept_exactly_as_sent() {
    let app = spawn_app().await;
    let raw = r#"{"events":[{"session_id":"s","agent_id":"a","kind":"memory","payload":{ "b" : 1.50, "a":"\u00e9" }}]}"#;
    let r = app
        .client
        .post(app.url("/api/v1/events"))
        .bearer_auth(&app.key)
        .header("content-type", "application/json")
        .body(raw)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let export = app.get_text("/api/v1/sessions/s/export").await;
    assert!(
        export.contains(r#""payload":{ "b" : 1.50, "a":"\u00e9" }"#),
        "{export}"
    );
}

#[tokio::test]
async fn a_thousand_event_batch_is_one_atomic_append() {
    let app = spawn_app().await;
    let events: Vec<Value> = (0..1000)
        .map(|i| memory(&format!("s{}", i % 3), i))
        .collect();
    let body = app.ingest(Value::Array(events)).await;
    assert_eq!(body["ingested"], 1000);
    let seqs_s0: Vec<u64> = body["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["session_id"] == "s0")
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs_s0, (1..=334).collect::<Vec<_>>());
    assert_eq!(app.event_total().await, 1000);
    for s in ["s0", "s1", "s2"] {
        let v = app.get_json(&format!("/api/v1/sessions/{s}/verify")).await;
        assert_eq!(v["valid"], true, "{v}");
    }
}

#[tokio::test]
async fn sixteen_concurrent_clients_on_one_session_never_fork_the_chain() {
    let app = spawn_app().await;
    let mut tasks = Vec::new();
    for t in 0..16 {
        let (client, url, key) = (
            app.client.clone(),
            app.url("/api/v1/events"),
            app.key.clone(),
        );
        tasks.push(tokio::spawn(async move {
            for i in 0..20 {
                let r = client
                    .post(&url)
                    .bearer_auth(&key)
                    .json(&json!({"events": [memory("shared", t * 100 + i)]}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), StatusCode::CREATED);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let s = app.get_json("/api/v1/sessions/shared").await;
    assert_eq!(s["event_count"], 320);
    let mut seqs = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/v1/events?session_id=shared&order=asc&limit=500&cursor={c}"),
            None => "/api/v1/events?session_id=shared&order=asc&limit=500".into(),
        };
        let page = app.get_json(&path).await;
        seqs.extend(
            page["events"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["seq"].as_u64().unwrap()),
        );
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(seqs, (1..=320).collect::<Vec<_>>());
    let v = app.get_json("/api/v1/sessions/shared/verify").await;
    assert_eq!(
        (v["valid"].as_bool(), v["events"].as_u64()),
        (Some(true), Some(320)),
        "{v}"
    );
}

#[tokio::test]
async fn restart_keeps_everything_and_chains_continue() {
    let app = spawn_app().await;
    app.ingest(json!([tool_call("s", "c1"), memory("s", 2)]))
        .await;
    let before = app.get_json("/api/v1/sessions/s").await;
    let app = app.restart().await;
    let after = app.get_json("/api/v1/sessions/s").await;
    assert_eq!(before["head_hash"], after["head_hash"]);
    let body = app.ingest(json!([memory("s", 3)])).await;
    assert_eq!(body["events"][0]["seq"], 3);
    let ev = app
        .get_json(&format!(
            "/api/v1/events/{}",
            body["events"][0]["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(ev["prev_hash"], before["head_hash"]);
    assert_eq!(
        app.get_json("/api/v1/sessions/s/verify").await["valid"],
        true
    );
}

#[tokio::test]
async fn severity_metadata_and_client_timestamp_are_kept() {
    let app = spawn_app().await;
    app.ingest(json!([{
        "session_id": "s", "agent_id": "a", "kind": "error", "severity": "critical",
        "payload": {"message": "boom"}, "metadata": {"host": "h1"}, "timestamp": "2026-02-08T10:00:00.000Z"
    }]))
    .await;
    let page = app.get_json("/api/v1/events?session_id=s").await;
    let ev = &page["events"][0];
    assert_eq!(ev["severity"], "critical");
    assert_eq!(ev["metadata"]["host"], "h1");
    assert_eq!(ev["timestamp"], "2026-02-08T10:00:00.000000Z");
    assert_eq!(ev["client_timestamp"], "2026-02-08T10:00:00.000000Z");
    assert_ne!(ev["received_at"], ev["timestamp"]);
}
