//! AgentLens's read API beyond events (sessions, timeline, agents, health,
//! LLM analytics, the 501s), over HTTP, with its shapes and its tenancy.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;

fn al(session: &str, agent: &str, ty: &str, payload: Value) -> Value {
    json!({"sessionId": session, "agentId": agent, "eventType": ty, "payload": payload})
}

/// One AgentLens session: started with tags, an LLM call pair, a tool call,
/// a tool error, ended.
async fn seed_session(app: &TestApp, session: &str, agent: &str) {
    let events = json!({"events": [
        al(session, agent, "session_started", json!({"agentName": "Planner", "tags": ["prod", "eu", 7]})),
        al(session, agent, "llm_call", json!({"callId": "c1", "provider": "openai", "model": "gpt-4o",
            "messages": [{"role": "user", "content": "hi"}]})),
        al(session, agent, "llm_response", json!({"callId": "c1", "provider": "openai", "model": "gpt-4o",
            "completion": "hello", "finishReason": "stop",
            "usage": {"inputTokens": 12, "outputTokens": 5, "totalTokens": 17},
            "costUsd": 0.25, "latencyMs": 300})),
        al(session, agent, "tool_call", json!({"toolName": "search", "callId": "t1", "arguments": {}})),
        al(session, agent, "tool_error", json!({"toolName": "search", "callId": "t1", "error": "boom", "durationMs": 3})),
        al(session, agent, "session_ended", json!({"reason": "completed"})),
    ]});
    let r = app.post("/api/events", &events).await;
    assert_eq!(
        r.status(),
        StatusCode::CREATED,
        "{}",
        r.text().await.unwrap()
    );
}

#[tokio::test]
async fn sessions_carry_counters_tags_and_status_and_filter_like_the_sdk() {
    let app = spawn_app().await;
    seed_session(&app, "al-s1", "planner").await;
    app.ingest(json!([tool_call("al-s2", "x")])).await;

    let s = app.get_json("/api/sessions/al-s1").await;
    assert_eq!(s["id"], "al-s1");
    assert_eq!(s["agentId"], "planner");
    assert_eq!(s["status"], "completed");
    assert_eq!(s["eventCount"], 6);
    assert_eq!(s["llmCallCount"], 1);
    assert_eq!(s["toolCallCount"], 1);
    assert_eq!(s["errorCount"], 1);
    assert_eq!(s["totalInputTokens"], 12);
    assert_eq!(s["totalOutputTokens"], 5);
    assert_eq!(s["totalCostUsd"], 0.25);
    // Only the string members of the tags array are tags.
    assert_eq!(s["tags"], json!(["prod", "eu"]));
    assert!(s["startedAt"].as_str().unwrap().ends_with('Z'));
    assert!(s["endedAt"].is_string());

    let s2 = app.get_json("/api/sessions/al-s2").await;
    assert_eq!(s2["status"], "active");
    assert_eq!(s2["endedAt"], Value::Null);
    assert_eq!(s2["tags"], json!([]));
    assert_eq!(s2["eventCount"], 1);

    let all = app.get_json("/api/sessions").await;
    assert_eq!(all["total"], 2);
    assert_eq!(all["hasMore"], false);
    let page = app.get_json("/api/sessions?limit=1").await;
    assert_eq!(page["sessions"].as_array().unwrap().len(), 1);
    assert_eq!(page["hasMore"], true);
    let page2 = app.get_json("/api/sessions?limit=1&offset=1").await;
    assert_eq!(page2["hasMore"], false);
    assert_ne!(page["sessions"][0]["id"], page2["sessions"][0]["id"]);
    for (q, ids) in [
        ("agentId=planner", vec!["al-s1"]),
        ("status=completed", vec!["al-s1"]),
        ("status=active", vec!["al-s2"]),
        ("status=error", vec![]),
        ("tags=eu", vec!["al-s1"]),
        ("tags=nope,prod", vec!["al-s1"]),
        ("tags=nope", vec![]),
        ("from=2999-01-01T00:00:00Z", vec![]),
    ] {
        let l = app.get_json(&format!("/api/sessions?{q}")).await;
        let got: Vec<&str> = l["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap())
            .collect();
        assert_eq!(got, ids, "{q}");
        assert_eq!(l["total"], ids.len(), "{q}");
    }
    for bad in ["status=done", "limit=0", "offset=100001", "from=yesterday"] {
        let r = app.get(&format!("/api/sessions?{bad}")).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{bad}");
    }
    assert_eq!(
        app.get("/api/sessions/nope").await.status(),
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn timeline_is_the_chain_in_order_with_a_real_verdict() {
    let app = spawn_app().await;
    seed_session(&app, "al-t", "planner").await;
    let t = app.get_json("/api/sessions/al-t/timeline").await;
    assert_eq!(t["chainValid"], true);
    assert_eq!(t["total"], 6);
    assert_eq!(t["hasMore"], false);
    let events = t["events"].as_array().unwrap();
    let types: Vec<&str> = events
        .iter()
        .map(|e| e["eventType"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "session_started",
            "llm_call",
            "llm_response",
            "tool_call",
            "tool_error",
            "session_ended"
        ]
    );
    for w in events.windows(2) {
        assert_eq!(w[1]["prevHash"], w[0]["hash"]);
    }
    let p = app
        .get_json("/api/sessions/al-t/timeline?limit=2&offset=2")
        .await;
    assert_eq!(p["events"].as_array().unwrap().len(), 2);
    assert_eq!(p["events"][0]["eventType"], "llm_response");
    assert_eq!(p["hasMore"], true);

    // A payload edited on disk: the timeline says so.
    tamper(
        &app.db,
        r#"UPDATE events SET payload = '{"toolName":"search","callId":"t1","arguments":{"x":1}}' WHERE seq = 4"#,
    );
    let t = app.get_json("/api/sessions/al-t/timeline").await;
    assert_eq!(t["chainValid"], false);
}

#[tokio::test]
async fn agents_are_read_from_their_sessions() {
    let app = spawn_app().await;
    seed_session(&app, "a1", "planner").await;
    seed_session(&app, "a2", "planner").await;
    seed_session(&app, "a3", "booker").await;
    let a = app.get_json("/api/agents/planner").await;
    assert_eq!(a["id"], "planner");
    assert_eq!(a["name"], "planner");
    assert_eq!(a["sessionCount"], 2);
    assert_eq!(a["tenantId"], "default");
    assert!(a["firstSeenAt"].as_str().unwrap() <= a["lastSeenAt"].as_str().unwrap());
    let l = app.get_json("/api/agents").await;
    assert_eq!(l["total"], 2);
    let ids: Vec<&str> = l["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["booker", "planner"]);
    assert_eq!(
        app.get("/api/agents/nobody").await.status(),
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn llm_analytics_sums_the_usage_columns() {
    let app = spawn_app().await;
    seed_session(&app, "u1", "planner").await;
    seed_session(&app, "u2", "booker").await;
    let a = app.get_json("/api/analytics/llm").await;
    assert_eq!(a["summary"]["totalCalls"], 2);
    assert_eq!(a["summary"]["totalInputTokens"], 24);
    assert_eq!(a["summary"]["totalOutputTokens"], 10);
    assert_eq!(a["summary"]["totalCostUsd"], 0.5);
    assert_eq!(a["summary"]["avgCostPerCall"], 0.25);
    assert_eq!(a["summary"]["avgLatencyMs"], 300.0);
    assert_eq!(a["byModel"][0]["provider"], "openai");
    assert_eq!(a["byModel"][0]["model"], "gpt-4o");
    assert_eq!(a["byModel"][0]["calls"], 2);
    assert_eq!(a["byModel"][0]["avgLatencyMs"], 300.0);
    // One day bucket (default granularity), starting at midnight UTC.
    let t = a["byTime"].as_array().unwrap();
    assert_eq!(t.len(), 1, "{a}");
    assert!(t[0]["bucket"].as_str().unwrap().ends_with("T00:00:00.000Z"));
    assert_eq!(t[0]["calls"], 2);
    assert_eq!(t[0]["inputTokens"], 24);
    let h = app.get_json("/api/analytics/llm?granularity=hour").await;
    assert!(
        h["byTime"][0]["bucket"]
            .as_str()
            .unwrap()
            .ends_with(":00:00.000Z")
    );
    let one = app.get_json("/api/analytics/llm?agentId=booker").await;
    assert_eq!(one["summary"]["totalCalls"], 1);
    let openai = app.get_json("/api/analytics/llm?provider=openai").await;
    assert_eq!(openai["summary"]["totalCalls"], 2);
    let none = app
        .get_json("/api/analytics/llm?to=2000-01-01T00:00:00Z")
        .await;
    assert_eq!(none["summary"]["totalCalls"], 0);
    assert_eq!(none["summary"]["avgLatencyMs"], 0.0);
    assert_eq!(none["byModel"], json!([]));
    assert_eq!(none["byTime"], json!([]));
    let other = app.get_json("/api/analytics/llm?provider=anthropic").await;
    assert_eq!(other["summary"]["totalCalls"], 0);
    for bad in ["granularity=minute", "from=x"] {
        let r = app.get(&format!("/api/analytics/llm?{bad}")).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{bad}");
    }
}

#[tokio::test]
async fn another_projects_key_sees_none_of_it() {
    let app = spawn_app().await;
    seed_session(&app, "secret-s", "secret-agent").await;
    let other = app.new_key("other").await;
    for path in [
        "/api/sessions/secret-s",
        "/api/sessions/secret-s/timeline",
        "/api/agents/secret-agent",
    ] {
        let r = app.get_with(path, &other).await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{path}");
    }
    for path in ["/api/sessions", "/api/agents", "/api/analytics/llm"] {
        let r = app.get_with(path, &other).await;
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        let body = r.text().await.unwrap();
        assert!(!body.contains("secret"), "{path}: {body}");
    }
    let a = app.get_with("/api/analytics/llm", &other).await;
    let a: Value = a.json().await.unwrap();
    assert_eq!(a["summary"]["totalCalls"], 0);
}

#[tokio::test]
async fn health_needs_no_key_and_missing_features_answer_501_by_name() {
    let app = spawn_app().await;
    let r = app.client.get(app.url("/api/health")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let h: Value = r.json().await.unwrap();
    assert_eq!(h["status"], "ok");
    assert_eq!(h["version"], env!("CARGO_PKG_VERSION"));

    for (method, path, feature) in [
        ("GET", "/api/recall?query=x", "recall"),
        ("GET", "/api/reflect?analysis=error_patterns", "reflect"),
        ("GET", "/api/context?topic=x", "context"),
        ("GET", "/api/lessons", "lessons"),
        ("POST", "/api/lessons", "lessons"),
        ("DELETE", "/api/lessons/l1", "lessons"),
        ("GET", "/api/guardrails", "guardrails"),
        ("PUT", "/api/guardrails/g1", "guardrails"),
        ("GET", "/api/guardrails/history", "guardrails"),
        ("GET", "/api/guardrails/g1/status", "guardrails"),
        ("GET", "/api/agents/a/health", "agent health scores"),
        ("GET", "/api/health/history?agentId=a", "health history"),
        ("GET", "/api/health/overview", "health overview"),
        (
            "GET",
            "/api/optimize/recommendations",
            "optimization recommendations",
        ),
    ] {
        let req = |key: Option<&str>| {
            let mut r = app
                .client
                .request(method.parse().unwrap(), app.url(path))
                .json(&json!({}));
            if let Some(k) = key {
                r = r.bearer_auth(k);
            }
            r.send()
        };
        assert_eq!(
            req(None).await.unwrap().status(),
            StatusCode::UNAUTHORIZED,
            "{method} {path}"
        );
        let r = req(Some(&app.key)).await.unwrap();
        assert_eq!(r.status(), StatusCode::NOT_IMPLEMENTED, "{method} {path}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], "NOT_IMPLEMENTED");
        assert_eq!(body["error"]["type"], "not_implemented");
        assert_eq!(body["error"]["details"]["feature"], feature);
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .starts_with(feature)
        );
    }
}

/// A 100,000-event session answers `GET /api/sessions/{id}` from its kept
/// counters, in milliseconds. Ignored by default (it writes 100,000 events);
/// run it with `--ignored` to measure.
#[tokio::test]
#[ignore = "writes 100,000 events; run explicitly to measure"]
async fn a_large_session_is_summarised_in_milliseconds() {
    let app = spawn_app().await;
    for b in 0..100 {
        let batch: Vec<Value> = (0..1000).map(|i| memory("big", b * 1000 + i)).collect();
        app.ingest(Value::Array(batch)).await;
    }
    let mut best = std::time::Duration::MAX;
    for _ in 0..20 {
        let t = std::time::Instant::now();
        let s = app.get_json("/api/sessions/big").await;
        best = best.min(t.elapsed());
        assert_eq!(s["eventCount"], 100_000);
    }
    println!("GET /api/sessions/big (100,000 events): best of 20 {best:?}");
    assert!(best < std::time::Duration::from_millis(50), "{best:?}");
}
