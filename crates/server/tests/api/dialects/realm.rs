use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;

#[tokio::test]
async fn documented_events_batch_and_get() {
    let app = spawn_app().await;
    let mut ids = Vec::new();
    for name in [
        "tool_call.json",
        "decision.json",
        "llm_call.json",
        "error.json",
    ] {
        let sent = fixture_json("realm", name);
        let r = app.post("/v1/sessions/session_abc123/events", &sent).await;
        assert_eq!(r.status(), StatusCode::CREATED, "{name}");
        let ev: Value = r.json().await.unwrap();
        assert_eq!(
            keys(&ev),
            keys(&fixture_json("realm", "get_response.json")),
            "{name}"
        );
        assert_eq!(
            (&ev["type"], &ev["data"]),
            (&sent["type"], &sent["data"]),
            "{name}"
        );
        assert!(ev["id"].as_str().unwrap().starts_with("event_"));
        ids.push(ev["id"].as_str().unwrap().to_owned());
    }
    let batch = json!({"events": [fixture_json("realm", "decision.json"), fixture_json("realm", "tool_call.json"), fixture_json("realm", "llm_call.json")]});
    let r = app
        .post("/v1/sessions/session_abc123/events/batch", &batch)
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let b: Value = r.json().await.unwrap();
    assert_eq!(
        keys(&b),
        keys(&fixture_json("realm", "batch_response.json"))
    );
    assert_eq!(b["created"], 3);
    ids.extend(
        b["event_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_owned()),
    );
    for id in &ids {
        let got = app.get_json(&format!("/v1/events/{id}")).await;
        assert_eq!(
            (got["id"].as_str(), got["session_id"].as_str()),
            (Some(id.as_str()), Some("session_abc123"))
        );
    }
    let s = app.get_json("/api/v1/sessions/session_abc123").await;
    assert_eq!(
        (s["event_count"].as_u64(), s["agent_id"].as_str()),
        (Some(7), Some("unknown"))
    );
    assert_eq!(
        app.get_json("/api/v1/sessions/session_abc123/verify").await["valid"],
        true
    );
}

#[tokio::test]
async fn bad_requests() {
    let app = spawn_app().await;
    for body in [
        json!({"type": "thought", "data": {}}),
        json!({"type": "custom", "data": "x"}),
        json!({"type": "custom"}),
    ] {
        assert_eq!(
            app.post("/v1/sessions/s/events", &body).await.status(),
            StatusCode::BAD_REQUEST,
            "{body}"
        );
    }
    assert_eq!(
        app.post("/v1/sessions/s/events/batch", &json!({"events": []}))
            .await
            .status(),
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        app.get("/v1/events/event_nothing").await.status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.get("/v1/events/event_01hxyz00000000000000000000")
            .await
            .status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(app.event_total().await, 0);
}
