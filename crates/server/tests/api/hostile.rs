//! Hostile and malformed requests across every route that takes a body or a
//! query: each is answered with its documented error, the server stays up,
//! and nothing is stored.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;

/// Every route that takes a body (path ids filled in).
const BODY_ROUTES: [(&str, &str); 14] = [
    ("POST", "/api/v1/events"),
    ("POST", "/api/v1/sessions"),
    ("POST", "/api/v1/check"),
    ("PUT", "/api/v1/policies"),
    ("POST", "/api/events"),
    ("POST", "/v1/agents/agt_1/events"),
    ("POST", "/v1/agents/agt_1/events/batch"),
    ("POST", "/v1/check-action"),
    ("POST", "/v1/event"),
    ("POST", "/v1/register-agent-run"),
    ("POST", "/v1/sessions/s1/events"),
    ("POST", "/v1/sessions/s1/events/batch"),
    ("POST", "/v1/traces"),
    ("POST", "/v1/logs"),
];

/// What's in the ledger, read from the file (not through the API under test).
fn stored(app: &TestApp) -> (i64, i64) {
    let conn = rusqlite::Connection::open(&app.db).unwrap();
    let count = |sql: &str| conn.query_row(sql, [], |r| r.get::<_, i64>(0)).unwrap();
    (
        count("SELECT count(*) FROM events"),
        count("SELECT count(*) FROM sessions"),
    )
}

fn nested(depth: usize) -> String {
    let mut s = String::with_capacity(depth * 2 + 2);
    s.push_str(r#"{"events":[{"session_id":"s","agent_id":"a","kind":"memory","payload":"#);
    s.push_str(&"[".repeat(depth));
    s.push_str(&"]".repeat(depth));
    s.push_str("}]}");
    s
}

/// (name, content type, body, statuses it may get).
fn hostile_bodies() -> Vec<(&'static str, &'static str, Vec<u8>, &'static [u16])> {
    let json = "application/json";
    let big = "a".repeat(1 << 20);
    let mut batch = String::from(r#"{"events":["#);
    for i in 0..1001 {
        if i > 0 {
            batch.push(',');
        }
        batch.push_str(r#"{"session_id":"s","agent_id":"a","kind":"memory","payload":{}}"#);
    }
    batch.push_str("]}");
    vec![
        (
            "invalid UTF-8",
            json,
            b"{\"events\":[{\"session_id\":\"\xff\xfe\",\"agent_id\":\"a\",\"kind\":\"memory\",\"payload\":{}}]}"
                .to_vec(),
            &[400],
        ),
        ("deeply nested JSON", json, nested(100_000).into_bytes(), &[400, 413]),
        ("nesting at 200", json, nested(200).into_bytes(), &[400]),
        (
            "1 MB session id",
            json,
            format!(r#"{{"events":[{{"session_id":"{big}","agent_id":"a","kind":"memory","payload":{{}}}}]}}"#)
                .into_bytes(),
            &[400, 413],
        ),
        (
            "1 MB key",
            json,
            format!(r#"{{"{big}":1}}"#).into_bytes(),
            &[400, 413],
        ),
        (
            "duplicate keys",
            json,
            br#"{"events":[{"session_id":"s","agent_id":"a","kind":"memory","payload":{}}],"events":[]}"#
                .to_vec(),
            &[400],
        ),
        (
            "duplicate keys in a payload",
            json,
            br#"{"events":[{"session_id":"s","agent_id":"a","kind":"memory","payload":{"a":1,"a":2}}]}"#
                .to_vec(),
            &[400],
        ),
        (
            "huge number",
            json,
            format!(r#"{{"events":[{{"session_id":"s","agent_id":"a","kind":"memory","payload":{{"n":1{}}}}}]}}"#, "0".repeat(5000))
                .into_bytes(),
            &[400],
        ),
        (
            "number out of range",
            json,
            br#"{"events":[{"session_id":"s","agent_id":"a","kind":"memory","payload":{"n":1e400}}]}"#
                .to_vec(),
            &[400],
        ),
        ("text/plain", "text/plain", br#"{"events":[]}"#.to_vec(), &[415]),
        ("no content type", "", br#"{"events":[]}"#.to_vec(), &[415]),
        ("xml", "application/xml", b"<events/>".to_vec(), &[415]),
        ("empty body", json, Vec::new(), &[400]),
        ("truncated JSON", json, br#"{"events":[{"session_id":"#.to_vec(), &[400]),
        ("JSON null", json, b"null".to_vec(), &[400]),
        ("a bare string", json, br#""events""#.to_vec(), &[400]),
        ("NUL bytes", json, b"{\"events\":[\0]}".to_vec(), &[400]),
        ("trailing garbage", json, br#"{"events":[]} xyz"#.to_vec(), &[400]),
        ("oversize batch (1001)", json, batch.into_bytes(), &[400, 413]),
        ("over 10 MiB", json, vec![b' '; 11 << 20], &[413]),
        (
            "protobuf garbage",
            "application/x-protobuf",
            vec![0xff, 0xff, 0xff, 0xff, 0x0f, 0x12, 0x34],
            &[400, 415],
        ),
    ]
}

fn error_code(body: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(body).ok()?;
    // The native envelope, or OTLP's google.rpc.Status.
    v["error"]["code"]
        .as_str()
        .map(str::to_owned)
        .or_else(|| v["code"].as_i64().map(|c| c.to_string()))
}

#[tokio::test]
async fn every_body_route_refuses_hostile_bodies_with_its_documented_error_and_stores_nothing() {
    let app = spawn_app().await;
    let mut failures = Vec::new();
    let mut tried = 0;
    for (method, path) in BODY_ROUTES {
        for (name, ct, body, allowed) in hostile_bodies() {
            let mut req = app
                .client
                .request(method.parse().unwrap(), app.url(path))
                .bearer_auth(&app.key)
                .body(body.clone());
            if !ct.is_empty() {
                req = req.header("content-type", ct);
            }
            let r = req.send().await.expect("the server answers");
            let status = r.status().as_u16();
            let protobuf = r
                .headers()
                .get("content-type")
                .is_some_and(|v| v.as_bytes() == b"application/x-protobuf");
            let bytes = r.bytes().await.unwrap();
            tried += 1;
            let otlp = path.starts_with("/v1/traces") || path.starts_with("/v1/logs");
            // OTLP receivers must ignore fields they do not know (OTLP/JSON
            // spec): a well-formed object of other fields is an empty export.
            let otlp_empty = otlp
                && status == 200
                && body.first() == Some(&b'{')
                && std::str::from_utf8(&body).is_ok()
                && serde_json::from_slice::<serde::de::IgnoredAny>(&body).is_ok();
            if otlp_empty {
                continue;
            }
            if protobuf && status == 400 {
                continue; // a google.rpc.Status in protobuf
            }
            if !allowed.contains(&status) {
                failures.push(format!(
                    "{method} {path} [{name}]: {status} {}",
                    String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
                ));
            } else if error_code(&bytes).is_none() {
                failures.push(format!("{method} {path} [{name}]: no error envelope"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(stored(&app), (0, 0), "nothing stored");
    assert_eq!(app.get("/healthz").await.status(), StatusCode::OK);
    println!("{tried} hostile requests refused");
}

#[tokio::test]
async fn hostile_query_strings_and_ids_get_400_or_404_and_never_5xx() {
    let app = spawn_app().await;
    hostile_reads_get_400_or_404_and_never_5xx(&app).await;
    assert_eq!(stored(&app), (1, 1));
}

/// Hostile query strings and ids on every listing and id route: 200, 400 or
/// 404, never a 5xx (a NUL in a URL is a 400 on every route). Also run on
/// PostgreSQL (`postgres.rs`), which refuses NUL in text where SQLite matched
/// nothing. Ingests one event first.
pub async fn hostile_reads_get_400_or_404_and_never_5xx(app: &TestApp) {
    app.ingest(serde_json::json!([memory("s", 1)])).await;
    let long = "a".repeat(10_000);
    let queries = [
        "limit=99999999999999999999999",
        "limit=-1",
        "limit=abc",
        "since=not-a-time",
        "since=99999-99-99T99:99:99Z",
        "until=1e400",
        "cursor=%FF%FE",
        "cursor=AAAA",
        "session_id=%FF",
        "kind=%00",
        "kind=no_such_kind",
        "decision=maybe",
        "order=sideways",
        "group_by=nothing",
        &format!("q={long}"),
        &format!("session_id={long}"),
        "limit=1&limit=2",
        "q=%22unterminated",
        "q=NEAR(",
        "q=*",
        "q=a%20OR%20",
        "q=a%00b",
        "search=S%C3%A6t%C2%91%06%0B-5%1B%00%7B%C2%8A",
    ];
    let list_routes = [
        "/api/v1/events",
        "/api/v1/sessions",
        "/api/v1/usage",
        "/api/events",
        "/v1/agents/agt_1/events",
    ];
    let mut failures = Vec::new();
    for route in list_routes {
        for q in &queries {
            let r = app.get(&format!("{route}?{q}")).await;
            let status = r.status().as_u16();
            if ![200, 400].contains(&status) {
                failures.push(format!("GET {route}?{q}: {status}"));
            }
        }
    }
    let ids = [
        "%FF",
        "%00",
        "..%2F..%2Fetc%2Fpasswd",
        &long,
        "01KAZ3V5Q8X9R2T4W6Y8A0C2E4",
    ];
    let id_routes = [
        "/api/v1/events/{}",
        "/api/v1/sessions/{}",
        "/api/v1/sessions/{}/verify",
        "/api/v1/sessions/{}/export",
        "/api/events/{}",
        "/v1/events/{}",
    ];
    for route in id_routes {
        for id in ids {
            let r = app.get(&route.replace("{}", id)).await;
            let status = r.status().as_u16();
            if ![400, 404].contains(&status) {
                failures.push(format!(
                    "GET {route} id={}: {status}",
                    &id[..id.len().min(20)]
                ));
            }
        }
    }
    for nul in [
        "/api/v1/sessions/a%00b",
        "/api/v1/events?agent_id=%00",
        "/api/v1/events?session_id=s%00",
        "/api/events?sessionId=%00",
        "/api/sessions/%00/timeline",
        "/api/agents/%00",
        "/api/analytics/llm?provider=%00",
        "/console/sessions/%00",
    ] {
        let r = app.get(nul).await;
        if r.status() != 400 {
            failures.push(format!(
                "GET {nul}: {} (a NUL in a URL is a 400)",
                r.status()
            ));
        } else {
            let b: Value = r.json().await.unwrap_or_default();
            if b["error"]["type"] != "validation_error" || !b.to_string().contains("%00") {
                failures.push(format!("GET {nul}: {b}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test]
async fn a_body_that_drips_in_slower_than_the_body_timeout_gets_408_and_stores_nothing() {
    let app = spawn_app_with(|c| c.body_timeout = Duration::from_millis(500)).await;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(1);
    let drip = tokio::spawn(async move {
        let body =
            br#"{"events":[{"session_id":"s","agent_id":"a","kind":"memory","payload":{}}]}"#;
        for b in body {
            if tx.send(Ok(vec![*b])).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let body = reqwest::Body::wrap_stream(tokio_stream_from(rx));
    let r = app
        .client
        .post(app.url("/api/v1/events"))
        .bearer_auth(&app.key)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("answered");
    assert_eq!(r.status(), StatusCode::REQUEST_TIMEOUT);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "REQUEST_TIMEOUT", "{v}");
    drip.abort();
    assert_eq!(stored(&app), (0, 0));
    // A body sent at normal speed on the same server is fine.
    app.ingest(serde_json::json!([memory("s", 1)])).await;
}

/// A receiver as a byte stream for reqwest.
fn tokio_stream_from(
    rx: tokio::sync::mpsc::Receiver<Result<Vec<u8>, std::io::Error>>,
) -> impl futures_util::Stream<Item = Result<Vec<u8>, std::io::Error>> {
    futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|v| (v, rx)) })
}

/// A model name, tool name or session tag, or a session's system prompt, holding NUL is
/// refused with 400 naming it, on either backend (PostgreSQL text cannot
/// store one; it answered 500), and nothing of the request is stored; a NUL
/// elsewhere in a payload is kept.
pub async fn nul_in_a_model_or_tool_name_is_refused(app: &TestApp) {
    let refused = [
        json!({"session_id": "n", "agent_id": "a", "kind": "llm_response",
               "payload": {"callId": "l", "provider": "p", "model": "m\u{0}", "completion": "hi",
                           "finishReason": "stop", "latencyMs": 9, "costUsd": 0.1,
                           "usage": {"inputTokens": 1, "outputTokens": 1}}}),
        json!({"session_id": "n", "agent_id": "a", "kind": "llm_call",
               "payload": {"callId": "l", "provider": "p", "model": "\u{0}",
                           "messages": [{"role": "user", "content": "hi"}]}}),
        json!({"session_id": "n", "agent_id": "a", "kind": "tool_call",
               "payload": {"toolName": "rm\u{0}", "callId": "c", "arguments": {}}}),
        json!({"session_id": "n", "agent_id": "a", "kind": "session_started",
               "payload": {"tags": ["prod", "a\u{0}"]}}),
    ];
    for (i, ev) in refused.iter().enumerate() {
        let r = app.post_events(json!([memory("n", 1), ev])).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{i}");
        let b: Value = r.json().await.unwrap();
        assert_eq!(b["error"]["type"], "validation_error", "{i}: {b}");
        let msg = b.to_string();
        assert!(
            msg.contains("events[1].payload") && msg.contains("NUL"),
            "{i}: {msg}"
        );
    }
    let r = app
        .post(
            "/api/v1/sessions",
            &json!({"agent_id": "a", "session_id": "p", "system_prompt": "be\u{0}careful"}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let b: Value = r.json().await.unwrap();
    assert_eq!(b["error"]["details"]["path"], "system_prompt", "{b}");
    assert_eq!(
        app.event_total().await,
        0,
        "nothing of a refused request is stored"
    );
    app.ingest(json!([
        {"session_id": "n", "agent_id": "a", "kind": "llm_response",
         "payload": {"callId": "l", "provider": "p", "model": "m", "completion": "a\u{0}b",
                     "finishReason": "stop", "latencyMs": 3, "costUsd": 0.1,
                     "usage": {"inputTokens": 1, "outputTokens": 1}}},
        {"session_id": "n", "agent_id": "a", "kind": "tool_call",
         "payload": {"toolName": "rm", "callId": "c", "arguments": {"path": "\u{0}"}}}
    ]))
    .await;
    assert_eq!(app.event_total().await, 2);
    let llm = app.get_json("/api/analytics/llm").await;
    assert!(llm.to_string().contains("\"m\""), "{llm}");
    let v = app.get_json("/api/v1/sessions/n/verify").await;
    assert_eq!(v["valid"], true, "{v}");
}

#[tokio::test]
async fn a_nul_in_a_model_or_tool_name_is_refused() {
    let app = spawn_app().await;
    nul_in_a_model_or_tool_name_is_refused(&app).await;
}
