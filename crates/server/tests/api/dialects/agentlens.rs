use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;

/// Shaped like an AgentLens key (`als_…`); the documents' `als_your_key` is
/// too short to be accepted as a chosen key.
const ALS_KEY: &str = "als_4fQ9zK2mW7pX1vB8nR3tY6cH5jL0dG";

#[tokio::test]
async fn documented_ingest_and_reads_with_an_als_key() {
    let app = spawn_app_with_key(ALS_KEY).await;
    for name in ["ingest_request.json", "ingest_curl_example.json"] {
        let r = app
            .client
            .post(app.url("/api/events"))
            .bearer_auth(ALS_KEY)
            .json(&fixture_json("agentlens", name))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED, "{name}");
        let body: Value = r.json().await.unwrap();
        let documented = fixture_json("agentlens", "ingest_response.json");
        assert_eq!(keys(&body), keys(&documented));
        assert_eq!(keys(&body["events"][0]), keys(&documented["events"][0]));
        assert_eq!(body["ingested"], 1);
        let id = body["events"][0]["id"].as_str().unwrap();
        let got: Value = app
            .client
            .get(app.url(&format!("/api/events/{id}")))
            .bearer_auth(ALS_KEY)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(
            keys(&got),
            keys(&fixture_json("agentlens", "get_response.json"))
        );
        assert_eq!(got["hash"], body["events"][0]["hash"]);
        assert_eq!(got["eventType"], "tool_call");
    }
    let list: Value = app.get_json("/api/events").await;
    assert_eq!(
        keys(&list),
        keys(&fixture_json("agentlens", "list_response.json"))
    );
    assert_eq!(
        (list["total"].as_u64(), list["hasMore"].as_bool()),
        (Some(2), Some(false))
    );
}

#[tokio::test]
async fn every_documented_filter_and_paging() {
    let app = spawn_app().await;
    let ev = |s: &str, t: &str, sev: &str, ts: &str, p: Value| json!({"sessionId": s, "agentId": "my-agent", "eventType": t, "severity": sev, "timestamp": ts, "payload": p});
    let tool_error = json!({"callId": "c", "toolName": "db", "error": "timeout talking to replica", "durationMs": 30000});
    let r = app
        .post("/api/events", &json!({"events": [
            ev("s1", "tool_error", "error", "2026-02-08T10:00:00Z", tool_error.clone()),
            ev("s1", "tool_error", "warn", "2026-02-08T11:00:00Z", tool_error.clone()),
            ev("s2", "tool_error", "error", "2026-02-06T10:00:00Z", tool_error),
            ev("s2", "custom", "info", "2026-02-08T12:00:00Z", json!({"type": "note", "data": "all good"})),
        ]}))
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    // The document's curl example: tool errors of the last day.
    let p = app
        .get_json("/api/events?eventType=tool_error&severity=error&from=2026-02-07T00:00:00Z")
        .await;
    assert_eq!(p["total"], 1);
    let p = app
        .get_json("/api/events?eventType=tool_error,custom&sessionId=s2")
        .await;
    assert_eq!(p["total"], 2);
    let p = app
        .get_json("/api/events?agentId=my-agent&to=2026-02-08T10:30:00Z")
        .await;
    assert_eq!(p["total"], 2);
    app.wait_for_search().await;
    let p = app.get_json("/api/events?search=replica").await;
    assert_eq!(p["total"], 3);
    let p = app.get_json("/api/events?order=asc&limit=1").await;
    assert_eq!(
        (p["events"][0]["timestamp"].as_str(), p["hasMore"].as_bool()),
        (Some("2026-02-06T10:00:00.000Z"), Some(true))
    );
    let p = app.get_json("/api/events?order=asc&limit=2&offset=2").await;
    assert_eq!(
        (
            p["events"].as_array().unwrap().len(),
            p["hasMore"].as_bool()
        ),
        (2, Some(false))
    );
    assert_eq!(p["events"][1]["timestamp"], "2026-02-08T12:00:00.000Z");
    let p = app.get_json("/api/events?limit=9999").await;
    assert_eq!(
        p["events"].as_array().unwrap().len(),
        4,
        "limit capped, not refused"
    );
}

#[tokio::test]
async fn errors_follow_the_documents_table() {
    let app = spawn_app().await;
    let one = json!({"sessionId": "s", "agentId": "a", "eventType": "custom", "payload": {"type": "t", "data": 1}});
    for (name, body, status) in [
        ("empty", json!({"events": []}), StatusCode::BAD_REQUEST),
        (
            "oversize",
            json!({"events": vec![one.clone(); 1001]}),
            StatusCode::BAD_REQUEST,
        ),
        (
            "bad type",
            json!({"events": [{"sessionId": "s", "agentId": "a", "eventType": "memory", "payload": {}}]}),
            StatusCode::BAD_REQUEST,
        ),
        (
            "untyped payload",
            json!({"events": [{"sessionId": "s", "agentId": "a", "eventType": "tool_call", "payload": {"toolName": "x"}}]}),
            StatusCode::BAD_REQUEST,
        ),
    ] {
        assert_eq!(
            app.post("/api/events", &body).await.status(),
            status,
            "{name}"
        );
    }
    let r = app
        .client
        .post(app.url("/api/events"))
        .bearer_auth(&app.key)
        .header("content-type", "application/json")
        .body("{nope")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        app.get("/api/events/01HXYZ00000000000000000000")
            .await
            .status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(app.get_json("/api/events").await["total"], 0);
}
