use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;

#[tokio::test]
async fn health_needs_no_key() {
    let app = spawn_app().await;
    let r = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn metrics_count_ingest_rejections_and_commits() {
    let app = spawn_app().await;
    app.ingest(json!([memory("s", 1), memory("s", 2)])).await;
    let _ = app
        .post_events(json!([{"session_id": "s", "agent_id": "a", "kind": "nope", "payload": {}}]))
        .await;
    let text = app.metrics().await;
    assert!(
        text.contains(r#"agentledger_events_ingested_total{dialect="native"} 2"#),
        "{text}"
    );
    assert!(
        text.contains(
            r#"agentledger_events_rejected_total{dialect="native",reason="VALIDATION_ERROR"} 1"#
        ),
        "{text}"
    );
    assert!(text.contains("agentledger_writer_queue_depth"));
    assert!(
        text.contains("agentledger_writer_pending_events 0"),
        "{text}"
    );
    assert!(text.contains("agentledger_commit_batch_events_count"));
    assert!(text.contains(r#"agentledger_http_request_duration_seconds_count{method="POST",route="/api/v1/events",status="201"} 1"#), "{text}");
}

/// Every dialect's refused writes are counted alike, whether an extractor
/// refused them (no key, wrong Content-Type, too large) or the pipeline.
#[tokio::test]
async fn refusals_are_counted_the_same_way_for_every_dialect() {
    let app = spawn_app().await;
    let routes = [
        ("native", "/api/v1/events"),
        ("agentlens", "/api/events"),
        ("fabraix", "/v1/event"),
        ("secureagentics", "/v1/agents/agt_x/events"),
        ("realm", "/v1/sessions/s/events"),
        ("otlp", "/v1/traces"),
    ];
    for (_, path) in routes {
        // No key: 401.
        let r = app
            .client
            .post(app.url(path))
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{path}");
        // Not JSON: 415.
        let r = app
            .client
            .post(app.url(path))
            .bearer_auth(&app.key)
            .header("content-type", "text/plain")
            .body("x")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE, "{path}");
        // Over the body limit: 413.
        let r = app
            .client
            .post(app.url(path))
            .bearer_auth(&app.key)
            .header("content-type", "application/json")
            .body(vec![b' '; 11 * 1024 * 1024])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE, "{path}");
    }
    let text = app.metrics().await;
    for (dialect, _) in routes {
        for reason in ["UNAUTHORIZED", "UNSUPPORTED_MEDIA_TYPE", "TOO_LARGE"] {
            let line = format!(
                r#"agentledger_events_rejected_total{{dialect="{dialect}",reason="{reason}"}} 1"#
            );
            assert!(text.contains(&line), "{line}\n{text}");
        }
    }
    // Reads are not writes: a refused GET is not counted.
    let _ = app.client.get(app.url("/api/events")).send().await.unwrap();
    let again = app.metrics().await;
    assert!(again.contains(
        r#"agentledger_events_rejected_total{dialect="agentlens",reason="UNAUTHORIZED"} 1"#
    ));
}

#[tokio::test]
async fn openapi_documents_every_native_route() {
    let app = spawn_app().await;
    let doc: Value = app
        .client
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let paths = doc["paths"].as_object().unwrap();
    for (path, method) in [
        ("/api/v1/events", "post"),
        ("/api/v1/events", "get"),
        ("/api/v1/events/{id}", "get"),
        ("/api/v1/sessions", "post"),
        ("/api/v1/sessions", "get"),
        ("/api/v1/sessions/{id}", "get"),
        ("/api/v1/sessions/{id}/verify", "get"),
        ("/api/v1/sessions/{id}/export", "get"),
        ("/metrics", "get"),
        ("/v1/register-agent-run", "post"),
        ("/v1/event", "post"),
        ("/api/events", "post"),
        ("/api/events", "get"),
        ("/api/events/{id}", "get"),
        ("/v1/agents/{id}/events", "post"),
        ("/v1/agents/{id}/events", "get"),
        ("/v1/agents/{id}/events/batch", "post"),
        ("/v1/sessions/{session_id}/events", "post"),
        ("/v1/sessions/{session_id}/events/batch", "post"),
        ("/v1/events/{id}", "get"),
    ] {
        assert!(
            paths.get(path).and_then(|p| p.get(method)).is_some(),
            "{method} {path} missing"
        );
    }
    let schemes = &doc["components"]["securitySchemes"];
    assert!(schemes.get("bearer").is_some() && schemes.get("api_key").is_some());
}
