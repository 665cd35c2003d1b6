//! `Idempotency-Key` on every ingest route: a retry with the same key and
//! body gets the original answer byte for byte and appends nothing; another
//! body under the key is 409; keys are per project and expire.

use std::sync::Arc;

use reqwest::StatusCode;
use serde_json::{Value, json};

use agentledger_store::sqlite::Faults;

use crate::helpers::*;

/// POST `body` with an idempotency key; (status, replayed?, body bytes).
async fn post_keyed(
    app: &TestApp,
    path: &str,
    key: &str,
    body: &Value,
) -> (StatusCode, bool, Vec<u8>) {
    post_keyed_as(app, path, key, body, &app.key).await
}

async fn post_keyed_as(
    app: &TestApp,
    path: &str,
    key: &str,
    body: &Value,
    api_key: &str,
) -> (StatusCode, bool, Vec<u8>) {
    let r = app
        .client
        .post(app.url(path))
        .header("x-api-key", api_key)
        .header("idempotency-key", key)
        .json(body)
        .send()
        .await
        .unwrap();
    let replayed = r
        .headers()
        .get("idempotent-replayed")
        .is_some_and(|v| v == "true");
    (r.status(), replayed, r.bytes().await.unwrap().to_vec())
}

/// Every event of the project, by any API.
async fn total(app: &TestApp) -> u64 {
    app.event_total().await
}

#[tokio::test]
async fn every_ingest_route_replays_its_answer_and_appends_nothing() {
    let app = spawn_app().await;
    let mut reg = fixture_json("fabraix", "register_request.json");
    reg["agent_id"] = "agt_idem".into();
    // (route, body) for every route that records events; the Fabraix
    // event needs the run registered first.
    let (s, _, b) = post_keyed(&app, "/v1/register-agent-run", "reg-1", &reg).await;
    assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&b));
    let trace = serde_json::from_slice::<Value>(&b).unwrap()["trace_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let fab_event: Value =
        serde_json::from_str(&fixture("fabraix", "event_user.json").replace("TRACE_ID", &trace))
            .unwrap();
    let fab_other: Value =
        serde_json::from_str(&fixture("fabraix", "event_memory.json").replace("TRACE_ID", &trace))
            .unwrap();
    let mut reg_other = reg.clone();
    reg_other["agent_id"] = "agt_idem_other".into();
    let sa_batch = fixture_json("secureagentics", "batch_request.json");
    let sa_other = json!({"events": [sa_batch["events"][1].clone()]});
    let realm = fixture_json("realm", "tool_call.json");
    let realm_other = fixture_json("realm", "decision.json");
    // (route, body, another valid body) for every route that records events.
    let routes: Vec<(&str, Value, Value)> = vec![
        ("/v1/register-agent-run", reg.clone(), reg_other),
        ("/v1/event", fab_event, fab_other),
        (
            "/v1/check-action",
            json!({"trace_id": trace, "tool_name": "search", "arguments": {"q": "x"}}),
            json!({"trace_id": trace, "tool_name": "other", "arguments": {"q": "x"}}),
        ),
        (
            "/api/v1/events",
            json!({"events": [memory("n", 1), memory("n", 2)]}),
            json!({"events": [memory("n", 3)]}),
        ),
        (
            "/api/v1/sessions",
            json!({"session_id": "created-once", "agent_id": "a"}),
            json!({"session_id": "created-other", "agent_id": "a"}),
        ),
        (
            "/api/v1/check",
            json!({"session_id": "n", "agent_id": "a", "tool": "search"}),
            json!({"session_id": "n", "agent_id": "a", "tool": "other"}),
        ),
        (
            "/api/events",
            json!({"events": [{"sessionId": "al", "agentId": "a", "eventType": "custom",
                               "payload": {"type": "note", "data": {}}}]}),
            json!({"events": [{"sessionId": "al", "agentId": "a", "eventType": "custom",
                               "payload": {"type": "other", "data": {}}}]}),
        ),
        (
            "/v1/agents/agt_idem/events",
            json!({"type": "completion", "payload": {"output": "done"}}),
            json!({"type": "completion", "payload": {"output": "other"}}),
        ),
        (
            "/v1/agents/agt_idem/events/batch",
            sa_batch.clone(),
            sa_other,
        ),
        ("/v1/sessions/rs/events", realm.clone(), realm_other.clone()),
        (
            "/v1/sessions/rs/events/batch",
            json!({"events": [realm]}),
            json!({"events": [realm_other]}),
        ),
        (
            "/v1/traces",
            fixture_json("otlp", "genai_trace.json"),
            json!({"resourceSpans": []}),
        ),
        (
            "/v1/logs",
            fixture_json("otlp", "genai_logs.json"),
            json!({"resourceLogs": []}),
        ),
    ];
    for (i, (path, body, other)) in routes.iter().enumerate() {
        // The run was registered above under reg-1: its retry replays.
        let key = if *path == "/v1/register-agent-run" {
            "reg-1".to_owned()
        } else {
            format!("key-{i}")
        };
        let (s1, r1, b1) = post_keyed(&app, path, &key, body).await;
        assert!(
            s1.is_success(),
            "{path}: {s1} {}",
            String::from_utf8_lossy(&b1)
        );
        assert_eq!(r1, *path == "/v1/register-agent-run", "{path}");
        let before = total(&app).await;
        let (s2, r2, b2) = post_keyed(&app, path, &key, body).await;
        assert_eq!(
            (s2, b2.as_slice()),
            (s1, b1.as_slice()),
            "{path}: the same answer"
        );
        assert!(r2, "{path}: a replay says so");
        assert_eq!(
            total(&app).await,
            before,
            "{path}: the retry appended nothing"
        );

        // The same key with another (valid) request: 409 naming the key.
        let (s3, _, b3) = post_keyed(&app, path, &key, other).await;
        assert_eq!(
            s3,
            StatusCode::CONFLICT,
            "{path}: {}",
            String::from_utf8_lossy(&b3)
        );
        if *path != "/v1/traces" && *path != "/v1/logs" {
            let e: Value = serde_json::from_slice(&b3).unwrap();
            assert_eq!(e["error"]["code"], "IDEMPOTENCY_KEY_REUSED", "{path}: {e}");
            assert!(e["error"]["message"].as_str().unwrap().contains(&key));
        }
        assert_eq!(
            total(&app).await,
            before,
            "{path}: the conflict appended nothing"
        );
    }
    // The session created under a key exists once; every chain verifies.
    for s in ["n", "al", "rs", &trace, "created-once"] {
        let v = app.get_json(&format!("/api/v1/sessions/{s}/verify")).await;
        assert_eq!(v["valid"], true, "{s}: {v}");
    }
}

#[tokio::test]
async fn keys_belong_to_a_project() {
    let app = spawn_app().await;
    let other = app.new_key("other").await;
    let body = json!({"events": [memory("s", 1)]});
    let (s, _, a) = post_keyed(&app, "/api/v1/events", "shared", &body).await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, replayed, b) = post_keyed_as(&app, "/api/v1/events", "shared", &body, &other).await;
    assert_eq!(s, StatusCode::CREATED);
    assert!(
        !replayed,
        "another project's key of the same name is its own"
    );
    assert_ne!(a, b);
}

#[tokio::test]
async fn a_refused_request_keeps_nothing_and_its_retry_runs() {
    let faults = Arc::new(Faults::default());
    let f = faults.clone();
    let app = spawn_app_with(move |c| c.faults = Some(f)).await;
    let body = json!({"events": [memory("s", 1)]});
    faults.fail_next_commits(1);
    let (s, _, _) = post_keyed(&app, "/api/v1/events", "k", &body).await;
    assert_eq!(s, StatusCode::INTERNAL_SERVER_ERROR);
    let (s, replayed, _) = post_keyed(&app, "/api/v1/events", "k", &body).await;
    assert_eq!(s, StatusCode::CREATED);
    assert!(!replayed);
    assert_eq!(total(&app).await, 1);
    // A refused body (400) keeps nothing either.
    let bad = json!({"events": [{"session_id": "s"}]});
    let (s, _, _) = post_keyed(&app, "/api/v1/events", "k2", &bad).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _, _) = post_keyed(&app, "/api/v1/events", "k2", &body).await;
    assert_eq!(
        s,
        StatusCode::CREATED,
        "the key was not taken by the refused request"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_duplicates_append_once_and_all_get_the_same_answer() {
    let app = Arc::new(spawn_app().await);
    let body = json!({"events": [memory("dup", 1), memory("dup", 2)]});
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (app, body) = (app.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            post_keyed(&app, "/api/v1/events", "same", &body).await
        }));
    }
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(t.await.unwrap());
    }
    assert!(answers.iter().all(|(s, _, _)| *s == StatusCode::CREATED));
    assert!(answers.iter().all(|(_, _, b)| *b == answers[0].2));
    assert_eq!(
        answers.iter().filter(|(_, r, _)| !r).count(),
        1,
        "one original"
    );
    assert_eq!(total(&app).await, 2);
}

#[tokio::test]
async fn a_key_expires_after_its_ttl() {
    let app = spawn_app_with(|c| c.idempotency_ttl = std::time::Duration::from_millis(300)).await;
    let body = json!({"events": [memory("s", 1)]});
    post_keyed(&app, "/api/v1/events", "k", &body).await;
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    let (s, replayed, _) = post_keyed(&app, "/api/v1/events", "k", &body).await;
    assert_eq!(s, StatusCode::CREATED);
    assert!(!replayed, "an expired key is a new request");
    assert_eq!(total(&app).await, 2);
}

#[tokio::test]
async fn bad_keys_are_refused_naming_the_header() {
    let app = spawn_app().await;
    for bad in ["", "has space", &"x".repeat(256)] {
        let (s, _, b) = post_keyed(
            &app,
            "/api/v1/events",
            bad,
            &json!({"events": [memory("s", 1)]}),
        )
        .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad:?}");
        let e: Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(e["error"]["details"]["path"], "Idempotency-Key", "{e}");
    }
    assert_eq!(total(&app).await, 0);
}

#[tokio::test]
async fn without_the_header_nothing_changes() {
    let app = spawn_app().await;
    let body = json!([memory("s", 1)]);
    let a = app.ingest(body.clone()).await;
    let b = app.ingest(body).await;
    assert_ne!(a["events"][0]["id"], b["events"][0]["id"]);
    assert_eq!(total(&app).await, 2);
}
