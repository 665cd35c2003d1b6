//! The MCP endpoint (`/mcp`, Streamable HTTP) spoken to as a client would,
//! JSON-RPC over real HTTP: the key checked before any MCP processing, each
//! tool's answer, its bounds and errors, and tenancy. The same tools through
//! the official Python MCP client are in `mcp_python` below (`.ci/run`).

use reqwest::{Response, StatusCode};
use serde_json::{Value, json};

use crate::helpers::*;

const AWS_KEY: &str = "AKIAZ7Q2MPLEXAB3CD4E";

async fn post_mcp(app: &TestApp, key: Option<&str>, body: &Value) -> Response {
    let mut req = app
        .client
        .post(app.url("/mcp"))
        .header("accept", "application/json, text/event-stream")
        .json(body);
    if let Some(k) = key {
        req = req.header("x-api-key", k);
    }
    req.send().await.expect("request")
}

/// A JSON-RPC request's `result` (panics on a JSON-RPC error).
async fn rpc(app: &TestApp, key: &str, method: &str, params: Value) -> Value {
    let r = post_mcp(
        app,
        Some(key),
        &json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}),
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    let v: Value = r.json().await.expect("json");
    assert!(v.get("error").is_none(), "{method}: {v}");
    v["result"].clone()
}

/// A tool's result: (is_error, structured content, text).
async fn call_with(app: &TestApp, key: &str, tool: &str, args: Value) -> (bool, Value, String) {
    let r = rpc(
        app,
        key,
        "tools/call",
        json!({"name": tool, "arguments": args}),
    )
    .await;
    let text = r["content"][0]["text"].as_str().unwrap_or("").to_owned();
    (
        r["isError"].as_bool().unwrap_or(false),
        r["structuredContent"].clone(),
        text,
    )
}

/// A tool's structured answer; panics on a tool error.
async fn call(app: &TestApp, tool: &str, args: Value) -> Value {
    let (err, v, text) = call_with(app, &app.key, tool, args).await;
    assert!(!err, "{tool} failed: {text}");
    v
}

/// A tool error's message.
async fn tool_error(app: &TestApp, key: &str, tool: &str, args: Value) -> (Value, String) {
    let (err, v, text) = call_with(app, key, tool, args).await;
    assert!(err, "{tool} should fail: {v}");
    (v, text)
}

async fn with_documented_policies(app: &TestApp) {
    let r = app
        .client
        .put(app.url("/api/v1/policies"))
        .bearer_auth(&app.key)
        .json(&json!({"policies": crate::policy::documented_policies()}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn mcp_refuses_a_missing_wrong_or_revoked_key_before_any_mcp_processing() {
    let app = spawn_app().await;
    let list = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"});
    for key in [None, Some("al_wrong_0000000000000000000000000000")] {
        let r = post_mcp(&app, key, &list).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], "UNAUTHORIZED", "{body}");
    }
    // Not even a malformed body or a wrong method gets past the key check.
    let r = app
        .client
        .post(app.url("/mcp"))
        .body("not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = app.client.get(app.url("/mcp")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // Bearer works like x-api-key.
    let r = app
        .client
        .post(app.url("/mcp"))
        .bearer_auth(&app.key)
        .header("accept", "application/json, text/event-stream")
        .json(&list)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // Stateless: no server-to-client stream to open.
    let r = app
        .client
        .get(app.url("/mcp"))
        .header("x-api-key", &app.key)
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    // A body over the limit is refused as elsewhere in the API.
    let big = "x".repeat(agentledger::mcp::MAX_BODY_BYTES + 1);
    let r = app
        .client
        .post(app.url("/mcp"))
        .header("x-api-key", &app.key)
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn mcp_initializes_and_lists_five_tools_with_bounded_schemas() {
    let app = spawn_app().await;
    let init = rpc(
        &app,
        &app.key,
        "initialize",
        json!({"protocolVersion": "2025-06-18", "capabilities": {},
               "clientInfo": {"name": "test", "version": "0"}}),
    )
    .await;
    assert_eq!(init["serverInfo"]["name"], "agentledger", "{init}");
    assert!(init["capabilities"]["tools"].is_object(), "{init}");
    let tools = rpc(&app, &app.key, "tools/list", json!({})).await;
    let tools = tools["tools"].as_array().expect("tools");
    let names: Vec<&str> = tools.iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "check_policy",
            "get_session_timeline",
            "list_open_alerts",
            "search_events",
            "verify_session"
        ]
    );
    let schema =
        |name: &str| tools.iter().find(|t| t["name"] == name).unwrap()["inputSchema"].clone();
    let search = schema("search_events");
    assert_eq!(search["properties"]["limit"]["maximum"], 100, "{search}");
    assert_eq!(search["properties"]["q"]["maxLength"], 1024, "{search}");
    let timeline = schema("get_session_timeline");
    assert_eq!(timeline["properties"]["limit"]["maximum"], 200);
    assert_eq!(timeline["required"], json!(["session_id"]));
    for t in tools {
        assert!(t["description"].as_str().unwrap().len() > 40, "{t}");
        assert_eq!(t["annotations"]["readOnlyHint"], true, "{t}");
    }
}

#[tokio::test]
async fn search_events_is_the_native_query_with_bounds() {
    let app = spawn_app().await;
    app.ingest(json!([
        tool_call("s1", "c1"),
        memory("s1", 1),
        {"session_id": "s2", "agent_id": "other-agent", "kind": "tool_call",
         "payload": {"toolName": "fetch_weather", "callId": "w", "arguments": {"city": "Lisbon"}}},
    ]))
    .await;
    let found = call(&app, "search_events", json!({"q": "Lisbon"})).await;
    assert_eq!(found["total"], 1, "{found}");
    let e = &found["events"][0];
    assert_eq!(e["session_id"], "s2");
    assert_eq!(e["payload"]["arguments"]["city"], "Lisbon");
    assert_eq!(e["hash"].as_str().unwrap().len(), 64);
    // The same answer as GET /api/v1/events.
    let native = app.get_json("/api/v1/events?q=Lisbon").await;
    assert_eq!(native["events"][0]["id"], e["id"]);

    let tools = call(
        &app,
        "search_events",
        json!({"kinds": ["tool_call"], "order": "asc", "limit": 1}),
    )
    .await;
    assert_eq!(tools["total"], 2);
    assert_eq!(tools["events"].as_array().unwrap().len(), 1);
    assert_eq!(tools["events"][0]["session_id"], "s1");
    let cursor = tools["next_cursor"].as_str().expect("a next page");
    let next = call(
        &app,
        "search_events",
        json!({"kinds": ["tool_call"], "order": "asc", "limit": 1, "cursor": cursor}),
    )
    .await;
    assert_eq!(next["events"][0]["session_id"], "s2");
    assert!(next["next_cursor"].is_null());

    // Bounds and bad input are tool errors naming the field.
    let (v, text) = tool_error(&app, &app.key, "search_events", json!({"limit": 101})).await;
    assert!(text.contains("limit"), "{text}");
    assert_eq!(v["type"], "validation_error");
    let (_, text) = tool_error(
        &app,
        &app.key,
        "search_events",
        json!({"q": "x".repeat(1025)}),
    )
    .await;
    assert!(text.contains("1024"), "{text}");
    let (_, text) = tool_error(&app, &app.key, "search_events", json!({"kinds": ["nope"]})).await;
    assert!(text.contains("kind"), "{text}");
    let (_, text) = tool_error(
        &app,
        &app.key,
        "search_events",
        json!({"cursor": "garbage"}),
    )
    .await;
    assert!(text.contains("cursor"), "{text}");
    // A NUL in a text filter is refused, naming it (PostgreSQL cannot bind
    // one: it was an internal error there, an empty page on SQLite).
    for arg in ["model", "cursor"] {
        let (v, text) = tool_error(&app, &app.key, "search_events", json!({ arg: "m\u{0}" })).await;
        assert!(text.contains(arg) && text.contains("NUL"), "{text}");
        assert_eq!(v["type"], "validation_error");
    }
    // Unknown arguments are refused, not ignored.
    let (_, text) = tool_error(&app, &app.key, "search_events", json!({"query": "x"})).await;
    assert!(text.contains("unknown field `query`"), "{text}");
    // A value of the wrong type is refused without being quoted back.
    let (v, text) = tool_error(&app, &app.key, "search_events", json!({"limit": AWS_KEY})).await;
    assert!(text.contains("expected u32"), "{text}");
    assert!(
        !text.contains(AWS_KEY) && !v.to_string().contains(AWS_KEY),
        "{v}"
    );
    let (_, text) = tool_error(&app, &app.key, "verify_session", json!({})).await;
    assert!(text.contains("missing field `session_id`"), "{text}");
    // An unknown tool is a JSON-RPC error.
    let r = post_mcp(
        &app,
        Some(&app.key),
        &json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                "params": {"name": "no_such_tool", "arguments": {}}}),
    )
    .await;
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], -32602, "{v}");
}

#[tokio::test]
async fn the_timeline_pages_a_session_in_chain_order_with_its_counters() {
    let app = spawn_app().await;
    app.ingest(json!([
        tool_call("t", "c1"),
        memory("t", 1),
        tool_call("t", "c2"),
        {"session_id": "t", "agent_id": "my-agent", "kind": "tool_error",
         "payload": {"toolName": "search_database", "callId": "c2", "error": "timeout", "durationMs": 5}},
        memory("t", 2),
    ]))
    .await;
    let page = call(
        &app,
        "get_session_timeline",
        json!({"session_id": "t", "limit": 2}),
    )
    .await;
    let seqs: Vec<u64> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [1, 2]);
    assert_eq!(page["has_more"], true);
    assert_eq!(page["next_after_seq"], 2);
    let s = &page["session"];
    assert_eq!(s["id"], "t");
    assert_eq!(s["head_seq"], 5);
    assert_eq!(s["counters"]["events"], 5, "{s}");
    assert_eq!(s["counters"]["tool_calls"], 2);
    assert_eq!(s["counters"]["errors"], 1);
    // Each event links to the one before it.
    assert_eq!(page["events"][1]["prev_hash"], page["events"][0]["hash"]);
    let last = call(
        &app,
        "get_session_timeline",
        json!({"session_id": "t", "after_seq": 4, "limit": 2}),
    )
    .await;
    assert_eq!(last["events"].as_array().unwrap().len(), 1);
    assert_eq!(last["events"][0]["seq"], 5);
    assert_eq!(last["has_more"], false);
    assert!(last["next_after_seq"].is_null());

    let (v, text) = tool_error(
        &app,
        &app.key,
        "get_session_timeline",
        json!({"session_id": "nope"}),
    )
    .await;
    assert_eq!(v["code"], "NOT_FOUND");
    assert!(text.contains("session not found"), "{text}");
    let (_, text) = tool_error(
        &app,
        &app.key,
        "get_session_timeline",
        json!({"session_id": "t", "limit": 201}),
    )
    .await;
    assert!(text.contains("limit"), "{text}");
    let (_, text) = tool_error(
        &app,
        &app.key,
        "get_session_timeline",
        json!({"session_id": "x".repeat(300)}),
    )
    .await;
    assert!(text.contains("session_id"), "{text}");
}

#[tokio::test]
async fn verify_session_runs_the_real_verification() {
    let app = spawn_app().await;
    app.ingest(json!([memory("v", 1), memory("v", 2), memory("v", 3)]))
        .await;
    let ok = call(&app, "verify_session", json!({"session_id": "v"})).await;
    assert_eq!(ok["valid"], true, "{ok}");
    assert_eq!(ok["events"], 3);
    let native = app.get_json("/api/v1/sessions/v/verify").await;
    assert_eq!(ok["head_hash"], native["head_hash"]);
    tamper(
        &app.db,
        r#"UPDATE events SET payload = '{"n":99}' WHERE seq = 2"#,
    );
    let bad = call(&app, "verify_session", json!({"session_id": "v"})).await;
    assert_eq!(bad["valid"], false, "{bad}");
    assert_eq!(bad["first_invalid_seq"], 2);
    assert!(bad["reason"].as_str().unwrap().len() > 5);
    let (v, _) = tool_error(
        &app,
        &app.key,
        "verify_session",
        json!({"session_id": "missing"}),
    )
    .await;
    assert_eq!(v["code"], "NOT_FOUND");
}

#[tokio::test]
async fn check_policy_decides_like_the_check_route_and_records_nothing() {
    let app = spawn_app().await;
    with_documented_policies(&app).await;
    let email = json!({"session_id": "chk", "agent_id": "my-agent", "tool": "send_email",
                       "arguments": {"to": "a@b.c"}});
    let ok = call(&app, "check_policy", email.clone()).await;
    assert_eq!(ok["allowed"], true, "{ok}");
    assert_eq!(ok["decision"], "allow");
    assert_eq!(ok["recorded"], false);
    // Nothing appended: the session does not even exist.
    assert_eq!(
        app.get("/api/v1/sessions/chk").await.status(),
        StatusCode::NOT_FOUND
    );
    // The agent reads a secret; the next e-mail is refused, as the HTTP
    // check route refuses it.
    app.ingest(json!([{"session_id": "chk", "agent_id": "my-agent", "kind": "tool_response",
        "payload": {"toolName": "read_file", "callId": "c", "result": format!("AWS {AWS_KEY}"), "durationMs": 5}}]))
        .await;
    let no = call(&app, "check_policy", email.clone()).await;
    assert_eq!(no["allowed"], false, "{no}");
    assert_eq!(no["decision"], "deny");
    assert_eq!(no["policies"], json!(["deny-email-after-secret"]));
    assert_eq!(
        no["reasons"],
        json!(["a secret was seen earlier in this session; no e-mail may leave"])
    );
    let before = app.get_json("/api/v1/sessions/chk").await;
    assert_eq!(before["event_count"], 1, "the checks appended nothing");
    // The native check route agrees (and records its check).
    let r = app.post("/api/v1/check", &email).await;
    let native: Value = r.json().await.unwrap();
    assert_eq!(native["decision"], no["decision"]);
    assert_eq!(native["policies"], no["policies"]);

    // A secret in the arguments: findings locate it, never echo it.
    let leak = json!({"session_id": "fresh", "agent_id": "my-agent", "tool": "http_request",
                      "arguments": {"url": "https://x.example", "body": format!("key {AWS_KEY}")}});
    let (err, v, text) = call_with(&app, &app.key, "check_policy", leak).await;
    assert!(!err, "{text}");
    assert_eq!(v["decision"], "deny", "{v}");
    assert!(
        v["policies"]
            .as_array()
            .unwrap()
            .contains(&json!("no-secrets-outbound"))
    );
    let f = &v["findings"][0];
    assert_eq!(f["detector"], "secrets", "{v}");
    assert_eq!(f["json_pointer"], "/payload/arguments/body");
    assert!(!text.contains(AWS_KEY) && !v.to_string().contains(AWS_KEY));
    assert_eq!(
        app.get("/api/v1/sessions/fresh").await.status(),
        StatusCode::NOT_FOUND
    );

    let (_, text) = tool_error(
        &app,
        &app.key,
        "check_policy",
        json!({"session_id": "x", "agent_id": "a", "kind": "nope"}),
    )
    .await;
    assert!(text.contains("kind"), "{text}");
}

#[tokio::test]
async fn check_policy_with_the_engine_off_is_a_tool_error() {
    let app = spawn_app_with(|c| c.policy.enabled = false).await;
    let (v, text) = tool_error(
        &app,
        &app.key,
        "check_policy",
        json!({"session_id": "s", "agent_id": "a", "tool": "x"}),
    )
    .await;
    assert_eq!(v["code"], "CONFLICT");
    assert!(text.contains("--no-policy"), "{text}");
}

#[tokio::test]
async fn a_key_sees_only_its_own_project_through_mcp() {
    let app = spawn_app().await;
    app.ingest(json!([
        tool_call("secret-session", "c1"),
        memory("secret-session", 1)
    ]))
    .await;
    let other = app.new_key("other").await;
    for tool in ["get_session_timeline", "verify_session"] {
        let (v, _) = tool_error(&app, &other, tool, json!({"session_id": "secret-session"})).await;
        assert_eq!(v["code"], "NOT_FOUND", "{tool}: {v}");
    }
    let (err, found, _) = call_with(
        &app,
        &other,
        "search_events",
        json!({"session_id": "secret-session"}),
    )
    .await;
    assert!(!err);
    assert_eq!(found["total"], 0, "{found}");
    let (_, found, _) =
        call_with(&app, &other, "search_events", json!({"q": "user records"})).await;
    assert_eq!(found["total"], 0, "{found}");
    // Project B's check is judged on B's (empty) session, not A's.
    let (err, v, _) = call_with(
        &app,
        &other,
        "check_policy",
        json!({"session_id": "secret-session", "agent_id": "my-agent", "tool": "ls"}),
    )
    .await;
    assert!(!err, "{v}");
    // Project A still has exactly its two events.
    let s = app.get_json("/api/v1/sessions/secret-session").await;
    assert_eq!(s["event_count"], 2);
}

fn python() -> String {
    std::env::var("AGENTLEDGER_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// The official MCP Python SDK (`mcp` from PyPI) connects over Streamable
/// HTTP with the API key header, lists the tools and calls each one; the
/// script checks the values it gets. `.ci/run` installs the pinned SDK and
/// runs this with `--ignored`.
#[tokio::test]
#[ignore = "needs the mcp Python package (AGENTLEDGER_PYTHON); .ci/run runs it"]
async fn mcp_python_client() {
    let app = spawn_app().await;
    with_documented_policies(&app).await;
    app.ingest(json!([
        tool_call("py-session", "c1"),
        {"session_id": "py-session", "agent_id": "my-agent", "kind": "tool_response",
         "payload": {"toolName": "read_file", "callId": "c2", "result": format!("AWS {AWS_KEY}"), "durationMs": 5}},
        memory("py-session", 3),
    ]))
    .await;
    // A rule on denied events and one denied call, in a session of its own
    // (py-session's counts stay as the script expects).
    let r = app
        .post(
            "/api/v1/alerts/rules",
            &json!({"name": "denied", "condition": {"type": "decision", "decisions": ["deny"]}}),
        )
        .await;
    assert_eq!(r.status(), reqwest::StatusCode::CREATED);
    app.ingest(json!([
        {"session_id": "py-alerts", "agent_id": "my-agent", "kind": "tool_call",
         "payload": {"toolName": "shell", "callId": "c", "arguments": {"command": "rm -rf /"}}}
    ]))
    .await;
    let other = app.new_key("other").await;
    let script = format!("{}/tests/mcp/client.py", env!("CARGO_MANIFEST_DIR"));
    let out = tokio::process::Command::new(python())
        .arg(&script)
        .env("MCP_URL", app.url("/mcp"))
        .env("MCP_KEY", &app.key)
        .env("MCP_OTHER_KEY", &other)
        .output()
        .await
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "client.py failed:\n{stdout}\n{stderr}"
    );
    println!("{stdout}");
    assert!(stdout.contains("mcp client: all checks passed"), "{stdout}");
    // The client's calls appended nothing.
    let s = app.get_json("/api/v1/sessions/py-session").await;
    assert_eq!(s["event_count"], 3);
}

/// `list_open_alerts` answers what `GET /api/v1/alerts` does, for the
/// key's project only.
#[tokio::test]
async fn list_open_alerts_lists_the_projects_open_alerts() {
    let app = spawn_app().await;
    let r = app
        .post(
            "/api/v1/alerts/rules",
            &json!({"name": "tool errors",
                    "condition": {"type": "event_kind", "kinds": ["tool_error"]}}),
        )
        .await;
    assert_eq!(r.status(), reqwest::StatusCode::CREATED);
    let none = call(&app, "list_open_alerts", json!({})).await;
    assert_eq!(none["alerts"], json!([]));
    app.ingest(json!([
        {"session_id": "alerting", "agent_id": "my-agent", "kind": "tool_error",
         "payload": {"toolName": "read_file", "callId": "c1", "error": "ENOENT", "durationMs": 3}},
        memory("alerting", 1)
    ]))
    .await;
    let open = call(&app, "list_open_alerts", json!({"limit": 5})).await;
    let alerts = open["alerts"].as_array().expect("alerts");
    assert_eq!(alerts.len(), 1, "{open}");
    assert_eq!(alerts[0]["rule_name"], "tool errors");
    assert_eq!(alerts[0]["session_id"], "alerting");
    assert_eq!(alerts[0]["status"], "open");
    let api = app.get_json("/api/v1/alerts").await;
    assert_eq!(api["alerts"][0]["id"], alerts[0]["id"]);
    let other = app.new_key("other").await;
    let (err, theirs, _) = call_with(&app, &other, "list_open_alerts", json!({})).await;
    assert!(!err);
    assert_eq!(theirs["alerts"], json!([]), "another project sees none");
    let (v, text) = tool_error(&app, &app.key, "list_open_alerts", json!({"limit": 1000})).await;
    assert_eq!(v["code"], "VALIDATION_ERROR", "{v}");
    assert!(text.contains("limit"), "{text}");
}
