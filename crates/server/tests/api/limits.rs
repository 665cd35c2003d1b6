//! Every refused request gets its documented status and error envelope, and
//! stores nothing.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;

async fn expect_error(r: reqwest::Response, status: StatusCode, kind: &str) -> Value {
    assert_eq!(r.status(), status);
    let body: Value = r.json().await.expect("error body is JSON");
    assert_eq!(body["error"]["type"], kind, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty())
    );
    assert!(body["error"]["code"].is_string());
    body
}

#[tokio::test]
async fn validation_failure_in_one_event_stores_none_of_the_batch() {
    let app = spawn_app().await;
    let bad = json!({"session_id": "s", "agent_id": "a", "kind": "tool_call", "payload": {"toolName": "x", "arguments": {}}});
    let r = app.post_events(json!([tool_call("s", "c1"), bad])).await;
    let body = expect_error(r, StatusCode::BAD_REQUEST, "validation_error").await;
    assert_eq!(body["error"]["details"]["path"], "events[1].payload.callId");
    assert_eq!(app.event_total().await, 0);
    assert_eq!(
        app.get("/api/v1/sessions/s").await.status(),
        StatusCode::NOT_FOUND,
        "no session either"
    );
}

#[tokio::test]
async fn bad_requests_are_400_and_store_nothing() {
    let app = spawn_app().await;
    let cases: Vec<(&str, String)> = vec![
        ("invalid JSON", "{\"events\": [".into()),
        ("empty batch", r#"{"events": []}"#.into()),
        ("missing events", r#"{}"#.into()),
        ("unknown kind", r#"{"events":[{"session_id":"s","agent_id":"a","kind":"toolcall","payload":{}}]}"#.into()),
        ("bad severity", r#"{"events":[{"session_id":"s","agent_id":"a","kind":"memory","severity":"loud","payload":{}}]}"#.into()),
        ("payload not object", r#"{"events":[{"session_id":"s","agent_id":"a","kind":"memory","payload":"x"}]}"#.into()),
        ("bad timestamp", r#"{"events":[{"session_id":"s","agent_id":"a","kind":"memory","payload":{},"timestamp":"yesterday"}]}"#.into()),
        ("agent id too long", format!(r#"{{"events":[{{"session_id":"s","agent_id":"{}","kind":"memory","payload":{{}}}}]}}"#, "a".repeat(129))),
        ("control char in session", r#"{"events":[{"session_id":"s\u0000","agent_id":"a","kind":"memory","payload":{}}]}"#.into()),
        ("deep nesting", format!(r#"{{"events":[{{"session_id":"s","agent_id":"a","kind":"memory","payload":{{"x":{}{}}}}}]}}"#, "[".repeat(5000), "]".repeat(5000))),
    ];
    for (name, body) in cases {
        let r = app
            .client
            .post(app.url("/api/v1/events"))
            .bearer_auth(&app.key)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{name}");
        let b: Value = r.json().await.unwrap();
        assert_eq!(b["error"]["type"], "validation_error", "{name}: {b}");
    }
    assert_eq!(app.event_total().await, 0);
}

#[tokio::test]
async fn oversize_inputs_are_413_and_store_nothing() {
    let app = spawn_app().await;
    // Batch over 1000 events.
    let events: Vec<Value> = (0..1001).map(|i| memory("s", i)).collect();
    let body = expect_error(
        app.post_events(Value::Array(events)).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    )
    .await;
    assert_eq!(body["error"]["details"]["path"], "events");
    // One payload over 1 MiB.
    let big = json!({"session_id": "s", "agent_id": "a", "kind": "memory", "payload": {"blob": "x".repeat(1024 * 1024)}});
    let body = expect_error(
        app.post_events(json!([memory("s", 1), big])).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    )
    .await;
    assert_eq!(body["error"]["details"]["path"], "events[1].payload");
    // Body over 10 MiB.
    let chunk = "y".repeat(900 * 1024);
    let events: Vec<Value> = (0..12).map(|i| json!({"session_id": "s", "agent_id": "a", "kind": "memory", "payload": {"i": i, "b": chunk}})).collect();
    expect_error(
        app.post_events(Value::Array(events)).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    )
    .await;
    assert_eq!(app.event_total().await, 0);
}

#[tokio::test]
async fn wrong_content_type_is_415() {
    let app = spawn_app().await;
    let r = app
        .client
        .post(app.url("/api/v1/events"))
        .bearer_auth(&app.key)
        .header("content-type", "text/plain")
        .body(json!({"events": [memory("s", 1)]}).to_string())
        .send()
        .await
        .unwrap();
    expect_error(
        r,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;
    assert_eq!(app.event_total().await, 0);
}

#[tokio::test]
async fn unknown_ids_and_routes_are_404() {
    let app = spawn_app().await;
    expect_error(
        app.get("/api/v1/events/01HXYZ00000000000000000000").await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    expect_error(
        app.get("/api/v1/events/not-an-id").await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    expect_error(
        app.get("/api/v1/sessions/nope").await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    expect_error(
        app.get("/api/v1/sessions/nope/verify").await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    expect_error(
        app.get("/api/v1/sessions/nope/export").await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    expect_error(
        app.get("/api/v1/nothing-here").await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
}

#[tokio::test]
async fn malformed_query_path_and_method_get_the_error_envelope() {
    let app = spawn_app().await;
    for path in [
        "/api/v1/events?limit=abc",
        "/api/v1/sessions?limit=-1",
        "/api/events?offset=-1",
        "/v1/agents/agt_x/events?limit=99999999999",
        "/api/v1/events/%FF%FE",
        "/v1/events/%FF",
    ] {
        let r = app.get(path).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{path}");
        let b: Value = r
            .json()
            .await
            .unwrap_or_else(|e| panic!("{path}: not JSON: {e}"));
        assert_eq!(b["error"]["type"], "validation_error", "{path}: {b}");
    }
    let r = app
        .client
        .delete(app.url("/api/v1/events"))
        .bearer_auth(&app.key)
        .send()
        .await
        .unwrap();
    expect_error(r, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed").await;
}

/// A deep offset costs a scan of every row it skips: each listing that
/// takes one refuses more than 100,000, naming the parameter (AgentLens's
/// session listing and timeline did; its event listing and Secureagentics'
/// agent events ran until the query budget stopped them).
#[tokio::test]
async fn deep_offsets_are_refused_in_every_listing() {
    let app = spawn_app().await;
    for path in [
        "/api/events?offset=100001",
        "/api/sessions?offset=100001",
        "/v1/agents/agt_x/events?offset=100001",
        "/api/events?offset=18446744073709551615",
    ] {
        let r = app.get(path).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{path}");
        let b: Value = r.json().await.unwrap();
        assert_eq!(b["error"]["type"], "validation_error", "{path}: {b}");
        assert!(b.to_string().contains("offset"), "{path}: {b}");
    }
    for path in [
        "/api/events?offset=100000",
        "/v1/agents/agt_x/events?offset=100000",
    ] {
        let r = app.get(path).await;
        assert_eq!(r.status(), StatusCode::OK, "{path}");
    }
}

#[tokio::test]
async fn bad_query_parameters_are_400() {
    let app = spawn_app().await;
    for q in [
        "limit=0",
        "limit=501",
        "kind=bogus",
        "severity=loud",
        "from=yesterday",
        "order=sideways",
        "cursor=zzz",
    ] {
        let r = app.get(&format!("/api/v1/events?{q}")).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{q}");
    }
    for q in ["status=paused", "limit=1000", "to=never"] {
        assert_eq!(
            app.get(&format!("/api/v1/sessions?{q}")).await.status(),
            StatusCode::BAD_REQUEST,
            "{q}"
        );
    }
}

#[tokio::test]
async fn a_saturated_writer_answers_503_with_retry_after_and_stores_nothing_of_it() {
    let app = spawn_app_with(|c| c.max_pending_events = 1000).await;
    // Stall the writer: another process holds the database's write lock.
    let blocker = rusqlite::Connection::open(&app.db).unwrap();
    blocker.execute_batch("BEGIN EXCLUSIVE").unwrap();

    let first = {
        let (client, url, key) = (
            app.client.clone(),
            app.url("/api/v1/events"),
            app.key.clone(),
        );
        let events: Vec<Value> = (0..1000).map(|i| memory("s", i)).collect();
        tokio::spawn(async move {
            client
                .post(url)
                .bearer_auth(key)
                .json(&json!({ "events": events }))
                .send()
                .await
                .unwrap()
        })
    };
    // Wait until the first batch holds every pending-event permit.
    let mut held = false;
    for _ in 0..250 {
        let text = app.metrics().await;
        if text
            .lines()
            .any(|l| l == "agentledger_writer_pending_events 1000")
        {
            held = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(held, "the first batch never reached the writer");
    let r = app.post_events(json!([memory("s", 9999)])).await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        r.headers().get("retry-after").and_then(|v| v.to_str().ok()),
        Some("1")
    );
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["type"], "overloaded");

    blocker.execute_batch("ROLLBACK").unwrap();
    let first = first.await.unwrap();
    assert_eq!(
        first.status(),
        StatusCode::CREATED,
        "the queued batch commits once the lock is gone"
    );
    assert_eq!(
        app.event_total().await,
        1000,
        "nothing of the refused request was stored"
    );
}

#[tokio::test]
async fn each_key_is_rate_limited_with_retry_after_and_nothing_stored() {
    let app = spawn_app_with(|c| {
        c.rate_limit = Some(agentledger::ratelimit::RateLimit {
            per_second: 0.5,
            burst: 3.0,
        })
    })
    .await;
    let other = app.new_key("default").await;
    for i in 0..3 {
        app.ingest(serde_json::json!([memory("rl", i)])).await;
    }
    let r = app.post_events(serde_json::json!([memory("rl", 9)])).await;
    assert_eq!(r.status(), reqwest::StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.headers()["retry-after"], "2", "one token per 2 s");
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "RATE_LIMITED");
    assert_eq!(body["error"]["details"]["retry_after_seconds"], 2);
    // Reads count too; another key has its own bucket.
    assert_eq!(
        app.get("/api/v1/events").await.status(),
        reqwest::StatusCode::TOO_MANY_REQUESTS
    );
    let listed: serde_json::Value = app
        .get_with("/api/v1/events?session_id=rl", &other)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed["total"], 3, "the refused append stored nothing");
}
