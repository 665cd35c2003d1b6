//! The real OpenTelemetry Python SDK against the running server. `.ci/run`
//! installs the SDK into a virtualenv and runs these with `--ignored`; set
//! AGENTLEDGER_PYTHON to that interpreter to run them by hand.

use serde_json::Value;

use crate::helpers::*;

fn python() -> String {
    std::env::var("AGENTLEDGER_PYTHON").unwrap_or_else(|_| "python3".into())
}

async fn emit(app: &TestApp, conversation: &str, extra: &[&str], env: &[(&str, &str)]) {
    let script = format!("{}/tests/otel/emit.py", env!("CARGO_MANIFEST_DIR"));
    let mut cmd = tokio::process::Command::new(python());
    cmd.arg(&script)
        .arg(conversation)
        .args(extra)
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &app.base)
        .env(
            "OTEL_EXPORTER_OTLP_HEADERS",
            format!("x-api-key={}", app.key),
        )
        .env_remove("OTEL_EXPORTER_OTLP_COMPRESSION");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().await.expect("run python");
    assert!(
        out.status.success(),
        "emit.py failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// What every encoding must produce: the right session, agent, kinds, usage
/// and a valid chain.
async fn assert_trail(app: &TestApp, conversation: &str) {
    let page = app
        .get_json(&format!(
            "/api/v1/events?session_id={conversation}&order=asc&limit=50"
        ))
        .await;
    let events = page["events"].as_array().expect("events");
    let kinds: Vec<&str> = events.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    // Spans arrive in the order they ended: children before their agent span.
    assert_eq!(
        kinds,
        ["llm_call", "tool_call", "tool_call", "error", "agent"],
        "{page}"
    );
    for e in events {
        assert_eq!(e["agent_id"], "travel-planner");
        assert_eq!(e["dialect"], "otlp");
        assert_eq!(
            e["metadata"]["resource"]["service.name"],
            "sdk-travel-agent"
        );
    }
    let chat = &events[0]["payload"];
    assert_eq!(chat["model"], "gpt-4o-2024-08-06");
    assert_eq!(chat["usage"]["input_tokens"], 120);
    assert_eq!(chat["usage"]["output_tokens"], 40);
    assert_eq!(chat["finish_reasons"][0], "tool_calls");
    let agent = &events[4]["payload"];
    assert_eq!(chat["trace_id"], agent["trace_id"]);
    assert_eq!(chat["parent_span_id"], agent["span_id"], "the tree is kept");
    assert_eq!(events[1]["payload"]["tool"]["arguments"]["city"], "Paris");
    assert_eq!(events[3]["payload"]["message"], "no rooms left");
    assert_eq!(
        events[3]["payload"]["exceptions"][0]["type"],
        "RuntimeError"
    );
    let usage = app
        .get_json(&format!("/api/v1/usage?session_id={conversation}"))
        .await;
    assert_eq!(usage["rows"][0]["input_tokens"], 120, "{usage}");
    let v: Value = app
        .get_json(&format!("/api/v1/sessions/{conversation}/verify"))
        .await;
    assert_eq!(v["valid"], true, "{v}");
    assert_eq!(v["events"], 5);
}

#[tokio::test]
#[ignore = "needs the OpenTelemetry Python SDK; .ci/run installs it and runs this"]
async fn otel_python_sdk_protobuf() {
    let app = spawn_app().await;
    emit(&app, "conv-sdk-protobuf", &[], &[]).await;
    assert_trail(&app, "conv-sdk-protobuf").await;
}

#[tokio::test]
#[ignore = "needs the OpenTelemetry Python SDK; .ci/run installs it and runs this"]
async fn otel_python_sdk_protobuf_gzip() {
    let app = spawn_app().await;
    emit(
        &app,
        "conv-sdk-gzip",
        &[],
        &[("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip")],
    )
    .await;
    assert_trail(&app, "conv-sdk-gzip").await;
}

#[tokio::test]
#[ignore = "needs the OpenTelemetry Python SDK; .ci/run installs it and runs this"]
async fn otel_python_sdk_json() {
    let app = spawn_app().await;
    emit(&app, "conv-sdk-json", &["--json"], &[]).await;
    assert_trail(&app, "conv-sdk-json").await;
}
