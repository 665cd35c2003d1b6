use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;

#[tokio::test]
async fn create_get_and_list_sessions() {
    let app = spawn_app().await;
    let r = app
        .post("/api/v1/sessions", &json!({"agent_id": "planner", "system_prompt": "You are careful.", "metadata": {"team": "red"}, "session_id": "run-1"}))
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let s: Value = r.json().await.unwrap();
    assert_eq!(
        (
            s["id"].as_str(),
            s["status"].as_str(),
            s["event_count"].as_u64()
        ),
        (Some("run-1"), Some("active"), Some(0))
    );
    assert_eq!(s["system_prompt"], "You are careful.");

    let r = app
        .post(
            "/api/v1/sessions",
            &json!({"agent_id": "planner", "session_id": "run-1"}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CONFLICT);

    let r = app
        .post("/api/v1/sessions", &json!({"agent_id": "other"}))
        .await;
    let generated: Value = r.json().await.unwrap();
    assert_eq!(
        generated["id"].as_str().map(str::len),
        Some(36),
        "UUID generated"
    );

    app.ingest(json!([
        {"session_id": "run-1", "agent_id": "planner", "kind": "user_input", "payload": {"text": "hi"}, "timestamp": "2026-02-08T10:00:00Z"},
        {"session_id": "run-1", "agent_id": "planner", "kind": "session_ended", "payload": {"reason": "completed"}, "timestamp": "2026-02-08T10:05:00Z"},
    ]))
    .await;
    let s = app.get_json("/api/v1/sessions/run-1").await;
    assert_eq!(s["event_count"], 2);
    assert_eq!(s["status"], "ended");
    assert_eq!(s["first_event_at"], "2026-02-08T10:00:00.000000Z");
    assert_eq!(s["last_event_at"], "2026-02-08T10:05:00.000000Z");
    assert_eq!(s["head_hash"].as_str().map(str::len), Some(64));

    let all = app.get_json("/api/v1/sessions").await;
    assert_eq!(all["total"], 2);
    let ended = app.get_json("/api/v1/sessions?status=ended").await;
    assert_eq!(ended["sessions"].as_array().unwrap().len(), 1);
    let by_agent = app.get_json("/api/v1/sessions?agent_id=other").await;
    assert_eq!(by_agent["total"], 1);
    let page1 = app.get_json("/api/v1/sessions?limit=1").await;
    let cursor = page1["next_cursor"]
        .as_str()
        .expect("more pages")
        .to_owned();
    let page2 = app
        .get_json(&format!("/api/v1/sessions?limit=1&cursor={cursor}"))
        .await;
    assert_ne!(page1["sessions"][0]["id"], page2["sessions"][0]["id"]);
    assert!(page2["next_cursor"].is_null());
}

#[tokio::test]
async fn implicit_sessions_take_the_first_events_agent() {
    let app = spawn_app().await;
    app.ingest(json!([tool_call("auto", "c")])).await;
    let s = app.get_json("/api/v1/sessions/auto").await;
    assert_eq!(
        (s["agent_id"].as_str(), s["event_count"].as_u64()),
        (Some("my-agent"), Some(1))
    );
}

#[tokio::test]
async fn invalid_session_bodies_are_400() {
    let app = spawn_app().await;
    for body in [
        json!({}),
        json!({"agent_id": ""}),
        json!({"agent_id": "a", "metadata": [1]}),
        json!({"agent_id": "a", "bogus": 1}),
    ] {
        let r = app.post("/api/v1/sessions", &body).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{body}");
    }
    assert_eq!(app.get_json("/api/v1/sessions").await["total"], 0);
}
