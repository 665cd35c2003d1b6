//! OTLP/HTTP intake: the examples in both encodings, gzip, partial success,
//! bad input, and the spans read back through the native API.

use std::io::Write;

use agentledger_dialects::otlp::{Encoding, RpcStatus, decode_traces};
use prost::Message;
use reqwest::StatusCode;
use reqwest::header::{CONTENT_ENCODING, CONTENT_TYPE};
use serde_json::Value;

use crate::helpers::*;

const SESSION: &str = "conv_5j66UpCpwteGg4YSxUnt7lPY";
const PROTOBUF: &str = "application/x-protobuf";

fn genai_json() -> String {
    fixture("otlp", "genai_trace.json")
}

fn genai_protobuf() -> Vec<u8> {
    decode_traces(genai_json().as_bytes(), Encoding::Json)
        .unwrap()
        .encode_to_vec()
}

fn gzip(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

async fn post(app: &TestApp, path: &str, ct: &str, body: Vec<u8>) -> reqwest::Response {
    app.client
        .post(app.url(path))
        .header("x-api-key", &app.key)
        .header(CONTENT_TYPE, ct)
        .body(body)
        .send()
        .await
        .unwrap()
}

/// The stored trail of the example trace, checked through the native API.
async fn assert_example_stored(app: &TestApp) {
    let page: Value = app
        .get(&format!(
            "/api/v1/events?session_id={SESSION}&order=asc&limit=50"
        ))
        .await
        .json()
        .await
        .unwrap();
    let events = page["events"].as_array().unwrap();
    let kinds: Vec<&str> = events.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "agent",
            "llm_call",
            "tool_call",
            "tool_call",
            "error",
            "custom"
        ]
    );
    for e in events {
        assert_eq!(e["agent_id"], "asst_5j66UpCpwteGg4YSxUnt7lPY");
        assert_eq!(e["dialect"], "otlp");
    }
    let chat = &events[1]["payload"];
    assert_eq!(chat["usage"]["input_tokens"], 97);
    assert_eq!(chat["usage"]["output_tokens"], 52);
    assert_eq!(chat["parent_span_id"], "eee19b7ec3c1b174");
    let v: Value = app
        .get(&format!("/api/v1/sessions/{SESSION}/verify"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["valid"], true, "{v}");
    assert_eq!(v["events"], 6);
}

#[tokio::test]
async fn json_export_is_stored_and_answered_in_json() {
    let app = spawn_app().await;
    let r = post(
        &app,
        "/v1/traces",
        "application/json",
        genai_json().into_bytes(),
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()[CONTENT_TYPE], "application/json");
    let body: Value = r.json().await.unwrap();
    assert!(
        body.get("partialSuccess").is_none_or(Value::is_null),
        "{body}"
    );
    assert_example_stored(&app).await;
}

#[tokio::test]
async fn protobuf_export_plain_and_gzipped() {
    let app = spawn_app().await;
    let r = post(&app, "/v1/traces", PROTOBUF, genai_protobuf()).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()[CONTENT_TYPE], PROTOBUF);
    assert!(
        r.bytes().await.unwrap().is_empty(),
        "an all-accepted answer is empty"
    );
    assert_example_stored(&app).await;

    let app = spawn_app().await;
    let r = app
        .client
        .post(app.url("/v1/traces"))
        .bearer_auth(&app.key)
        .header(CONTENT_TYPE, PROTOBUF)
        .header(CONTENT_ENCODING, "gzip")
        .body(gzip(&genai_protobuf()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_example_stored(&app).await;
}

#[tokio::test]
async fn usage_is_filtered_and_summed_through_the_native_api() {
    let app = spawn_app().await;
    post(
        &app,
        "/v1/traces",
        "application/json",
        genai_json().into_bytes(),
    )
    .await;
    post(
        &app,
        "/v1/traces",
        "application/json",
        fixture("otlp", "openinference_trace.json").into_bytes(),
    )
    .await;
    let by_model: Value = app
        .get("/api/v1/usage?group_by=model")
        .await
        .json()
        .await
        .unwrap();
    let rows = by_model["rows"].as_array().unwrap();
    let row = |m: &str| rows.iter().find(|r| r["group"] == m).unwrap().clone();
    assert_eq!(row("gpt-4o-2024-08-06")["input_tokens"], 97);
    assert_eq!(row("gpt-4o-mini")["total_tokens"], 150);
    let page: Value = app
        .get("/api/v1/events?model=gpt-4o-mini&dialect=otlp")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page["events"].as_array().unwrap().len(), 1);
    assert_eq!(page["events"][0]["session_id"], "phx-session-42");
    let bad = app.get("/api/v1/usage?group_by=colour").await;
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn unmappable_spans_are_reported_and_the_rest_stored() {
    let app = spawn_app().await;
    let mut req = decode_traces(genai_json().as_bytes(), Encoding::Json).unwrap();
    req.resource_spans[0].scope_spans[0].spans[5 - 1].trace_id = vec![0; 16];
    let r = post(&app, "/v1/traces", PROTOBUF, req.encode_to_vec()).await;
    assert_eq!(r.status(), StatusCode::OK);
    let resp = opentelemetry_response(&r.bytes().await.unwrap());
    assert_eq!(resp.0, 1);
    assert!(resp.1.contains("trace_id"), "{}", resp.1);
    let page: Value = app
        .get(&format!("/api/v1/events?session_id={SESSION}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page["total"], 5, "4 spans kept, one with an error event");
}

/// (rejected_spans, error_message) of a protobuf ExportTraceServiceResponse.
fn opentelemetry_response(b: &[u8]) -> (i64, String) {
    use agentledger_dialects::otlp::proto::collector::trace::v1::ExportTraceServiceResponse;
    let r = ExportTraceServiceResponse::decode(b).unwrap();
    let p = r.partial_success.unwrap_or_default();
    (p.rejected_spans, p.error_message)
}

#[tokio::test]
async fn bad_input_is_refused_with_a_status_and_stores_nothing() {
    let app = spawn_app().await;
    let pb = genai_protobuf();

    let r = post(&app, "/v1/traces", PROTOBUF, pb[..pb.len() - 7].to_vec()).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(r.headers()[CONTENT_TYPE], PROTOBUF);
    let st = RpcStatus::decode(&r.bytes().await.unwrap()[..]).unwrap();
    assert_eq!(st.code, 3);
    assert!(st.message.contains("protobuf"), "{}", st.message);

    let r = post(&app, "/v1/traces", "text/plain", genai_json().into_bytes()).await;
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);

    let r = post(
        &app,
        "/v1/traces",
        "application/json",
        b"{\"resourceSpans\":".to_vec(),
    )
    .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let st: Value = r.json().await.unwrap();
    assert_eq!(st["code"], 3);

    let r = post(&app, "/v1/traces", "application/json", Vec::new()).await;
    assert_eq!(
        r.status(),
        StatusCode::BAD_REQUEST,
        "an empty JSON body is not a message"
    );

    let r = post(&app, "/v1/traces", PROTOBUF, vec![0u8; 11 << 20]).await;
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);

    // A small gzip body that inflates past the limit.
    let bomb = gzip(&vec![0u8; 12 << 20]);
    assert!(bomb.len() < 100_000);
    let r = app
        .client
        .post(app.url("/v1/traces"))
        .bearer_auth(&app.key)
        .header(CONTENT_TYPE, PROTOBUF)
        .header(CONTENT_ENCODING, "gzip")
        .body(bomb)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);

    let r = app
        .client
        .post(app.url("/v1/traces"))
        .bearer_auth(&app.key)
        .header(CONTENT_TYPE, PROTOBUF)
        .header(CONTENT_ENCODING, "br")
        .body(pb.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);

    let r = app
        .client
        .post(app.url("/v1/traces"))
        .header(CONTENT_TYPE, PROTOBUF)
        .body(pb.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        RpcStatus::decode(&r.bytes().await.unwrap()[..])
            .unwrap()
            .code,
        16
    );

    assert_eq!(app.event_total().await, 0);
    // An empty protobuf message is a valid request with nothing in it.
    let r = post(&app, "/v1/traces", PROTOBUF, Vec::new()).await;
    assert_eq!(r.status(), StatusCode::OK);
    let r = post(&app, "/v1/traces", "application/json", b"{}".to_vec()).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(app.event_total().await, 0);
}

#[tokio::test]
async fn logs_and_later_spans_join_the_conversation_learnt_from_earlier_spans() {
    let app = spawn_app().await;
    post(
        &app,
        "/v1/traces",
        "application/json",
        genai_json().into_bytes(),
    )
    .await;
    // The log records carry only the trace id; the server learnt its conversation.
    let r = post(
        &app,
        "/v1/logs",
        "application/json",
        fixture("otlp", "genai_logs.json").into_bytes(),
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    let page: Value = app
        .get(&format!(
            "/api/v1/events?session_id={SESSION}&order=asc&kind=user_input,llm_response"
        ))
        .await
        .json()
        .await
        .unwrap();
    let kinds: Vec<&str> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["user_input", "llm_response"]);
    assert_eq!(page["events"][0]["seq"], 7);
}

#[tokio::test]
async fn another_projects_key_sees_nothing() {
    let app = spawn_app().await;
    post(&app, "/v1/traces", PROTOBUF, genai_protobuf()).await;
    let other = app.new_key("other").await;
    let v: Value = app
        .get_with(&format!("/api/v1/events?session_id={SESSION}"), &other)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["total"], 0);
}
