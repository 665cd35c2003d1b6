use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;

const AGENT: &str = "agt_01j9xkz2m3n4p5q6r7s8t9u0";

#[tokio::test]
async fn documented_event_batch_and_listing() {
    let app = spawn_app().await;
    let r = app
        .post(
            &format!("/v1/agents/{AGENT}/events"),
            &fixture_json("secureagentics", "event_request.json"),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let ev: Value = r.json().await.unwrap();
    let documented: std::collections::BTreeSet<String> = [
        "id",
        "agent_id",
        "type",
        "payload",
        "trace_id",
        "timestamp",
        "policy_result",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(keys(&ev), documented);
    assert!(ev["id"].as_str().unwrap().starts_with("evt_"));
    assert_eq!(
        (
            ev["agent_id"].as_str(),
            ev["type"].as_str(),
            ev["trace_id"].as_str()
        ),
        (Some(AGENT), Some("prompt"), Some("trace_abc123"))
    );
    assert_eq!(
        ev["payload"],
        fixture_json("secureagentics", "event_request.json")["payload"]
    );
    assert_eq!(ev["timestamp"], "2026-05-04T10:30:00.000Z");
    // The default policy set judged it: nothing in the example is a secret,
    // personal data or an injection.
    assert_eq!(ev["policy_result"]["evaluated"], true, "{ev}");
    assert_eq!(ev["policy_result"]["decision"], "allow", "{ev}");

    let r = app
        .post(
            &format!("/v1/agents/{AGENT}/events/batch"),
            &fixture_json("secureagentics", "batch_request.json"),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let b: Value = r.json().await.unwrap();
    assert_eq!(b["total"], 2);
    let types: Vec<&str> = b["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, vec!["prompt", "completion"]);

    let all = app.get_json(&format!("/v1/agents/{AGENT}/events")).await;
    assert_eq!(
        (keys(&all), all["total"].as_u64()),
        (
            ["items", "total"].iter().map(|s| s.to_string()).collect(),
            Some(3)
        )
    );
    let prompts = app
        .get_json(&format!(
            "/v1/agents/{AGENT}/events?type=prompt&from=2026-05-01T00:00:00Z&limit=50"
        ))
        .await;
    assert_eq!(
        prompts["total"], 2,
        "the documented query: prompts since May 1st (one untimed, so now)"
    );
    let may = app.get_json(&format!("/v1/agents/{AGENT}/events?type=prompt&from=2026-05-01T00:00:00Z&to=2026-06-01T00:00:00Z")).await;
    assert_eq!(
        (may["total"].as_u64(), may["items"][0]["trace_id"].as_str()),
        (Some(1), Some("trace_abc123"))
    );
    let page = app
        .get_json(&format!("/v1/agents/{AGENT}/events?limit=1&offset=1"))
        .await;
    assert_eq!(
        (
            page["items"].as_array().unwrap().len(),
            page["total"].as_u64()
        ),
        (1, Some(3))
    );
    // One trace is one session in the ledger.
    let s = app.get_json("/api/v1/sessions/trace_xyz789").await;
    assert_eq!(
        (s["event_count"].as_u64(), s["agent_id"].as_str()),
        (Some(2), Some(AGENT))
    );
}

#[tokio::test]
async fn bad_requests() {
    let app = spawn_app().await;
    let ev = json!({"type": "prompt", "payload": {"input": "x"}});
    let r = app.post("/v1/agents/01j9xkz/events", &ev).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["code"], "INVALID_AGENT_ID");
    assert_eq!(
        app.get("/v1/agents/nope/events").await.status(),
        StatusCode::BAD_REQUEST
    );
    let r = app
        .post(
            &format!("/v1/agents/{AGENT}/events/batch"),
            &json!({"events": vec![ev.clone(); 101]}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    for bad in [
        json!({"events": []}),
        json!({"events": [ev.clone(), {"type": "thought", "payload": {}}]}),
    ] {
        assert_eq!(
            app.post(&format!("/v1/agents/{AGENT}/events/batch"), &bad)
                .await
                .status(),
            StatusCode::BAD_REQUEST
        );
    }
    assert_eq!(
        app.post(
            &format!("/v1/agents/{AGENT}/events"),
            &json!({"type": "prompt"})
        )
        .await
        .status(),
        StatusCode::BAD_REQUEST
    );
    for q in ["limit=0", "limit=501", "type=thought", "from=soon"] {
        assert_eq!(
            app.get(&format!("/v1/agents/{AGENT}/events?{q}"))
                .await
                .status(),
            StatusCode::BAD_REQUEST,
            "{q}"
        );
    }
    assert_eq!(
        app.get_json(&format!("/v1/agents/{AGENT}/events")).await["total"],
        0
    );
}
