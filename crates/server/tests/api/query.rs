use serde_json::{Value, json};

use crate::helpers::*;

fn ev(session: &str, kind: &str, severity: &str, ts: &str, payload: Value) -> Value {
    json!({"session_id": session, "agent_id": format!("agent-{session}"), "kind": kind,
           "severity": severity, "timestamp": ts, "payload": payload})
}

async fn seeded() -> TestApp {
    let app = spawn_app().await;
    app.ingest(json!([
        ev("a", "tool_call", "info", "2026-02-08T10:00:00Z", json!({"toolName": "search", "callId": "1", "arguments": {"q": "quarterly revenue"}})),
        ev("a", "tool_error", "error", "2026-02-08T10:01:00Z", json!({"toolName": "search", "callId": "1", "error": "timeout", "durationMs": 30000})),
        ev("b", "llm_call", "info", "2026-02-08T11:00:00Z", json!({"callId": "2", "provider": "openai", "model": "gpt", "messages": [{"role": "user", "content": "hello world"}]})),
        ev("b", "error", "critical", "2026-02-08T12:00:00Z", json!({"message": "disk on fire"})),
        ev("c", "memory", "debug", "2026-02-07T09:00:00Z", json!({"key": "revenue"})),
    ]))
    .await;
    app
}

fn ids(page: &Value) -> Vec<String> {
    page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["payload"].to_string())
        .collect()
}

#[tokio::test]
async fn filters_combine() {
    let app = seeded().await;
    let p = app.get_json("/api/v1/events?kind=tool_error,error").await;
    assert_eq!(p["total"], 2);
    let p = app
        .get_json("/api/v1/events?severity=error,critical&agent_id=agent-b")
        .await;
    assert_eq!(p["total"], 1);
    assert_eq!(p["events"][0]["payload"]["message"], "disk on fire");
    let p = app
        .get_json("/api/v1/events?from=2026-02-08T10:00:30Z&to=2026-02-08T11:30:00Z")
        .await;
    assert_eq!(p["total"], 2);
    let p = app.get_json("/api/v1/events?session_id=a").await;
    assert_eq!(p["total"], 2);
    assert_eq!(
        p["events"][0]["seq"], 2,
        "desc within a session is seq desc"
    );
}

#[tokio::test]
async fn full_text_search_over_payloads() {
    let app = seeded().await;
    app.wait_for_search().await;
    let p = app.get_json("/api/v1/events?q=revenue").await;
    assert_eq!(p["total"], 2);
    let p = app.get_json("/api/v1/events?q=quarterly%20revenue").await;
    assert_eq!(p["total"], 1, "all words must match");
    let p = app.get_json("/api/v1/events?q=hello&kind=llm_call").await;
    assert_eq!(p["total"], 1);
    let p = app.get_json("/api/v1/events?q=%22OR%20(").await;
    assert_eq!(p["total"], 0, "FTS syntax in user text is literal");
}

#[tokio::test]
async fn order_and_time_sorting_use_event_time() {
    let app = seeded().await;
    let asc = app.get_json("/api/v1/events?order=asc").await;
    assert_eq!(
        asc["events"][0]["payload"]["key"], "revenue",
        "oldest client timestamp first"
    );
    let desc = app.get_json("/api/v1/events").await;
    assert_eq!(desc["events"][0]["payload"]["message"], "disk on fire");
    let mut reversed = ids(&asc);
    reversed.reverse();
    assert_eq!(ids(&desc), reversed);
}

#[tokio::test]
async fn cursor_paging_is_stable_while_events_arrive() {
    let app = spawn_app().await;
    let batch: Vec<Value> = (0..30).map(|i| memory(&format!("s{}", i % 4), i)).collect();
    app.ingest(Value::Array(batch)).await;
    let mut seen = Vec::new();
    let mut path = "/api/v1/events?limit=8".to_owned();
    loop {
        let page = app.get_json(&path).await;
        assert!(page["total"].as_u64().unwrap() >= 30);
        seen.extend(
            page["events"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["id"].as_str().unwrap().to_owned()),
        );
        // New events keep arriving between pages; they sort before the cursor.
        app.ingest(json!([memory("late", seen.len())])).await;
        match page["next_cursor"].as_str() {
            Some(c) => path = format!("/api/v1/events?limit=8&cursor={c}"),
            None => break,
        }
    }
    let unique: std::collections::HashSet<_> = seen.iter().collect();
    assert_eq!((seen.len(), unique.len()), (30, 30));
}
