//! Client timestamps the ledger cannot represent are refused, not stored
//! wrongly (issue 13, finding 14). A timestamp is hashed in its canonical UTC
//! text, so an instant outside years 0001..=9999 (after the offset is applied)
//! used to be written as 1970 or as `-001-…`: the chain then vouched for a
//! time the client never sent.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;

/// Offsets that push a four-digit local time outside the UTC years a
/// canonical timestamp can name.
const UNREPRESENTABLE: &[&str] = &[
    "9999-12-31T23:59:59-23:59",
    "0001-01-01T00:00:00+00:01",
    "0000-01-01T00:00:00Z",
];

async fn expect_refused(r: reqwest::Response, path: &str, what: &str) {
    assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{what}");
    let body: Value = r.json().await.expect("error body is JSON");
    assert_eq!(body["error"]["type"], "validation_error", "{what}: {body}");
    assert_eq!(body["error"]["details"]["path"], path, "{what}: {body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(path) && message.contains("0001-01-01T00:00:00Z"),
        "{what}: the message names the field and the range: {message}"
    );
}

#[tokio::test]
async fn native_ingest_refuses_unrepresentable_timestamps_and_stores_nothing() {
    let app = spawn_app().await;
    for ts in UNREPRESENTABLE {
        let mut bad = memory("s", 2);
        bad["timestamp"] = json!(ts);
        let r = app.post_events(json!([memory("s", 1), bad])).await;
        expect_refused(r, "events[1].timestamp", ts).await;
    }
    assert_eq!(app.event_total().await, 0);
    assert_eq!(
        app.get("/api/v1/sessions/s").await.status(),
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn agentlens_ingest_refuses_unrepresentable_timestamps_and_stores_nothing() {
    let app = spawn_app().await;
    for ts in UNREPRESENTABLE {
        let r = app
            .post(
                "/api/events",
                &json!({"events": [{"sessionId": "s", "agentId": "a", "eventType": "custom",
                    "payload": {"type": "t", "data": 1}, "timestamp": ts}]}),
            )
            .await;
        expect_refused(r, "events[0].timestamp", ts).await;
    }
    assert_eq!(app.get_json("/api/events").await["total"], 0);
}

#[tokio::test]
async fn query_bounds_follow_the_same_rule() {
    let app = spawn_app().await;
    for ts in UNREPRESENTABLE {
        let q: String = url_encode(ts);
        for (route, param) in [
            ("/api/v1/events", "from"),
            ("/api/v1/events", "to"),
            ("/api/events", "from"),
        ] {
            let r = app.get(&format!("{route}?{param}={q}")).await;
            expect_refused(r, param, &format!("{route} {param}={ts}")).await;
        }
    }
}

#[tokio::test]
async fn the_edges_of_the_range_are_kept_and_read_back_as_sent() {
    let app = spawn_app().await;
    let edges = [
        ("0001-01-01T00:00:00Z", "0001-01-01T00:00:00.000000Z"),
        ("0001-01-01T00:00:00-00:01", "0001-01-01T00:01:00.000000Z"),
        ("9999-12-31T23:59:59.999999Z", "9999-12-31T23:59:59.999999Z"),
        ("9999-12-31T23:59:59+23:59", "9999-12-31T00:00:59.000000Z"),
    ];
    let events: Vec<Value> = edges
        .iter()
        .enumerate()
        .map(|(i, (sent, _))| {
            let mut e = memory("edges", i);
            e["timestamp"] = json!(sent);
            e
        })
        .collect();
    app.ingest(Value::Array(events)).await;
    let list = app
        .get_json("/api/v1/events?session_id=edges&order=asc")
        .await;
    let stored: Vec<&str> = list["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["client_timestamp"].as_str().unwrap_or_default())
        .collect();
    let mut expected: Vec<&str> = edges.iter().map(|(_, canon)| *canon).collect();
    expected.sort();
    let mut got = stored.clone();
    got.sort();
    assert_eq!(got, expected);
    let v = app.get_json("/api/v1/sessions/edges/verify").await;
    assert_eq!(v["valid"], true, "{v}");
}

/// Percent-encode the few characters a timestamp has that a query string
/// would misread (`+` means a space there).
fn url_encode(s: &str) -> String {
    s.replace('+', "%2B").replace(':', "%3A")
}
