use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;

const EVENTS: &[&str] = &[
    "event_user.json",
    "event_tool.json",
    "event_model_output.json",
    "event_memory.json",
    "event_error.json",
    "event_complete_user.json",
    "event_complete_tool.json",
    "event_email_detailed_schema.json",
];

async fn register(app: &TestApp) -> String {
    let r = app
        .post(
            "/v1/register-agent-run",
            &fixture_json("fabraix", "register_request.json"),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        keys(&body),
        keys(&fixture_json("fabraix", "register_response.json"))
    );
    let ts = body["timestamp"].as_str().unwrap();
    assert!(
        ts.len() == 24 && ts.ends_with('Z') && &ts[19..20] == ".",
        "ISO 8601 with milliseconds: {ts}"
    );
    body["trace_id"].as_str().unwrap().to_owned()
}

async fn post_raw(app: &TestApp, path: &str, body: String) -> reqwest::Response {
    app.client
        .post(app.url(path))
        .header("x-api-key", &app.key)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn registering_a_run_chains_its_system_prompt() {
    let app = spawn_app().await;
    let trace = register(&app).await;
    assert_eq!(trace.len(), 36);
    let s = app.get_json(&format!("/api/v1/sessions/{trace}")).await;
    assert_eq!(s["agent_id"], "a1b2c3d4-e5f6-7890-1234-567890abcdef");
    assert!(
        s["system_prompt"]
            .as_str()
            .unwrap()
            .starts_with("You are a helpful customer service assistant")
    );
    assert_eq!(s["event_count"], 1);
    let first = &app
        .get_json(&format!("/api/v1/events?session_id={trace}"))
        .await["events"][0];
    assert_eq!(
        (first["kind"].as_str(), first["dialect"].as_str()),
        (Some("session_started"), Some("fabraix"))
    );
    assert_eq!(first["payload"]["system_prompt"], s["system_prompt"]);
}

#[tokio::test]
async fn every_documented_event_is_accepted_and_stored_as_sent() {
    let app = spawn_app().await;
    let trace = register(&app).await;
    for name in EVENTS {
        let body = fixture("fabraix", name).replace("TRACE_ID", &trace);
        let r = post_raw(&app, "/v1/event", body.clone()).await;
        assert_eq!(r.status(), StatusCode::OK, "{name}");
        let out: Value = r.json().await.unwrap();
        assert_eq!(
            keys(&out),
            keys(&fixture_json("fabraix", "event_response.json")),
            "{name}"
        );
        assert!(out["timestamp"].is_f64(), "{name}: float seconds");
        let id = out["event_id"].as_str().unwrap();
        assert_eq!(id.len(), 36, "UUID");
        let stored = app.get_json(&format!("/api/v1/events/{id}")).await;
        let sent: Value = serde_json::from_str(&body).unwrap();
        let content: Value = serde_json::from_str(sent["content"].as_str().unwrap()).unwrap();
        assert_eq!(stored["payload"], content, "{name}");
        assert_eq!(stored["source_type"], sent["event_type"], "{name}");
        assert_eq!(stored["agent_id"], "a1b2c3d4-e5f6-7890-1234-567890abcdef");
    }
    let v = app
        .get_json(&format!("/api/v1/sessions/{trace}/verify"))
        .await;
    assert_eq!(
        (v["valid"].as_bool(), v["events"].as_u64()),
        (Some(true), Some(1 + EVENTS.len() as u64)),
        "{v}"
    );
}

#[tokio::test]
async fn schema_mismatch_answers_exactly_the_documented_envelope() {
    let app = spawn_app().await;
    let trace = register(&app).await;
    let body = fixture("fabraix", "event_user_missing_user_id.json").replace("TRACE_ID", &trace);
    let r = post_raw(&app, "/v1/event", body).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let got: Value = r.json().await.unwrap();
    let documented = fixture_json("fabraix", "error_schema_mismatch.json");
    assert_eq!(got["error"]["type"], documented["error"]["type"]);
    assert_eq!(got["error"]["code"], documented["error"]["code"]);
    assert_eq!(got["error"]["details"], documented["error"]["details"]);
    assert!(
        got["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("Content does not match provided schema")
    );
    assert_eq!(
        app.get_json(&format!("/api/v1/sessions/{trace}")).await["event_count"],
        1,
        "nothing stored"
    );
}

#[tokio::test]
async fn unknown_trace_is_404_and_oversize_is_413() {
    let app = spawn_app().await;
    let body = fixture("fabraix", "event_user.json")
        .replace("TRACE_ID", "f4f4f4f4-f4f4-f4f4-f4f4-f4f4f4f4f4f4");
    let r = post_raw(&app, "/v1/event", body).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["type"], "not_found");

    let trace = register(&app).await;
    let mut ev = fixture_json("fabraix", "event_user.json");
    ev["trace_id"] = trace.clone().into();
    let mut big = ev.clone();
    big["content"] = json!({"message": "x".repeat(1024 * 1024), "user_id": "u"})
        .to_string()
        .into();
    assert_eq!(
        app.post("/v1/event", &big).await.status(),
        StatusCode::PAYLOAD_TOO_LARGE
    );
    let mut big = ev.clone();
    big["schema"] = format!("{{\"description\":\"{}\"}}", "d".repeat(64 * 1024)).into();
    assert_eq!(
        app.post("/v1/event", &big).await.status(),
        StatusCode::PAYLOAD_TOO_LARGE
    );
    for (field, value, code) in [
        ("content", "{oops", "INVALID_CONTENT"),
        ("schema", "{oops", "INVALID_SCHEMA"),
        ("schema", r#"{"type": 5}"#, "INVALID_SCHEMA"),
        ("event_type", "thought", "INVALID_EVENT_TYPE"),
    ] {
        let mut bad = ev.clone();
        bad[field] = value.into();
        let r = app.post("/v1/event", &bad).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{field}={value}");
        let e: Value = r.json().await.unwrap();
        assert_eq!(e["error"]["code"], code, "{field}={value}");
    }
    assert_eq!(
        app.get_json(&format!("/api/v1/sessions/{trace}")).await["event_count"],
        1,
        "nothing stored"
    );
}

#[tokio::test]
async fn invalid_agent_id_has_the_documented_code() {
    let app = spawn_app().await;
    let mut body = fixture_json("fabraix", "register_request.json");
    body["agent_id"] = "".into();
    let r = app.post("/v1/register-agent-run", &body).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let e: Value = r.json().await.unwrap();
    let documented = fixture_json("fabraix", "register_error.json");
    assert_eq!(
        (&e["error"]["type"], &e["error"]["code"]),
        (&documented["error"]["type"], &documented["error"]["code"])
    );
    assert_eq!(app.get_json("/api/v1/sessions").await["total"], 0);
}
