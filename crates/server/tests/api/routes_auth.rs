//! Generated from /openapi.json: every documented route is tried without a
//! key, with a wrong key, with a revoked key, and with another project's key
//! on this project's ids. A new route is covered the day it is documented
//! (and the test names any path parameter it does not know how to fill).

use std::collections::BTreeMap;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;

/// Revoke a key through the CLI, by the id `keys list` shows for it.
fn revoke(app: &TestApp, key: &str) {
    let list = String::from_utf8(app.cli(&["keys", "list"]).stdout).unwrap();
    let prefix: String = key.chars().take(7).collect();
    let id = list
        .lines()
        .find(|l| l.contains(&prefix))
        .and_then(|l| l.split_whitespace().next())
        .expect("key listed")
        .to_owned();
    assert!(app.cli(&["keys", "revoke", &id]).status.success());
}

/// Project A's data in every dialect; returns the id each path parameter takes.
async fn seed(app: &TestApp) -> BTreeMap<&'static str, String> {
    let native = app
        .ingest(json!([tool_call("sess-of-project-a", "call_1")]))
        .await;
    let event_id = native["events"][0]["id"].as_str().unwrap().to_owned();
    let r = app
        .post(
            "/api/events",
            &json!({"events": [{"sessionId": "sess-of-project-a", "agentId": "my-agent", "eventType": "custom",
                "payload": {"type": "note", "data": {}}}]}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let al = app
        .get_json("/api/events?sessionId=sess-of-project-a&limit=1")
        .await;
    let al_id = al["events"][0]["id"].as_str().unwrap().to_owned();
    let r = app
        .post(
            "/v1/sessions/sess-of-project-a/events",
            &fixture_json("realm", "tool_call.json"),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let realm_id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = app
        .post(
            "/v1/agents/agt_of_project_a/events",
            &fixture_json("secureagentics", "event_request.json"),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    BTreeMap::from([
        ("/log/proof/inclusion/{id}", event_id.clone()),
        ("/log/proof/consistency/{from}", "1".to_owned()),
        ("/log/tile/{path}", "0/000.p/1".to_owned()),
        ("/api/v1/events/{id}/erase", event_id.clone()),
        ("/api/v1/events/{id}", event_id),
        ("/api/v1/sessions/{id}", "sess-of-project-a".to_owned()),
        (
            "/api/v1/sessions/{id}/export",
            "sess-of-project-a".to_owned(),
        ),
        (
            "/api/v1/sessions/{id}/verify",
            "sess-of-project-a".to_owned(),
        ),
        ("/api/events/{id}", al_id),
        ("/api/sessions/{id}", "sess-of-project-a".to_owned()),
        (
            "/api/sessions/{id}/timeline",
            "sess-of-project-a".to_owned(),
        ),
        ("/api/agents/{id}", "my-agent".to_owned()),
        // Admin-only routes: refused (403) before the id is looked up.
        ("/api/v1/alerts/{id}/resolve", "alr_none".to_owned()),
        ("/api/v1/alerts/rules/{id}", "rul_none".to_owned()),
        ("/api/v1/alerts/destinations/{id}", "dst_none".to_owned()),
        ("/v1/events/{id}", realm_id),
        ("/v1/agents/{id}/events", "agt_of_project_a".to_owned()),
        (
            "/v1/agents/{id}/events/batch",
            "agt_of_project_a".to_owned(),
        ),
        (
            "/v1/sessions/{session_id}/events",
            "sess-of-project-a".to_owned(),
        ),
        (
            "/v1/sessions/{session_id}/events/batch",
            "sess-of-project-a".to_owned(),
        ),
    ])
}

/// Authenticated routes that /openapi.json does not list, and why: see the
/// test below.
const UNDOCUMENTED: [(&str, &str); 3] = [("POST", "/mcp"), ("GET", "/mcp"), ("DELETE", "/mcp")];

fn fill(path: &str, ids: &BTreeMap<&'static str, String>) -> String {
    if !path.contains('{') {
        return path.to_owned();
    }
    let id = ids
        .get(path)
        .unwrap_or_else(|| panic!("no id for the path parameter of {path}: add one to seed()"));
    let start = path.find('{').unwrap();
    let end = path.find('}').unwrap();
    format!("{}{}{}", &path[..start], id, &path[end + 1..])
}

async fn call(app: &TestApp, method: &str, url: &str, key: Option<&str>) -> (StatusCode, String) {
    let mut req = app.client.request(method.parse().unwrap(), app.url(url));
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    if method != "GET" {
        req = req.json(&json!({"events": [memory("sess-of-project-b", 1)]}));
    }
    let r = req.send().await.unwrap();
    // A live stream stays open: its status is the answer.
    if r.headers()
        .get("content-type")
        .is_some_and(|c| c.as_bytes().starts_with(b"text/event-stream"))
    {
        return (r.status(), String::new());
    }
    (r.status(), r.text().await.unwrap())
}

#[tokio::test]
async fn every_documented_route_refuses_missing_wrong_and_revoked_keys_and_hides_other_projects() {
    let app = spawn_app().await;
    let ids = seed(&app).await;
    let other = app.new_key("other").await;
    let revoked = app.new_key("default").await;
    revoke(&app, &revoked);
    let used_then_revoked = app.new_key("default").await;
    assert_eq!(
        app.get_with("/api/v1/events", &used_then_revoked)
            .await
            .status(),
        StatusCode::OK
    );
    revoke(&app, &used_then_revoked);
    // A verified key is reused for at most 1 s (docs/operations.md).
    tokio::time::sleep(agentledger::auth::AUTH_CACHE_TTL + std::time::Duration::from_millis(100))
        .await;

    let doc = app.get_json("/openapi.json").await;
    // Ids the server made for project A (project B can name sessions and
    // agents of its own with A's names, but never make A's event ids).
    let a_secrets: Vec<&String> = ids
        .iter()
        .filter(|(route, _)| route.ends_with("/{id}") && route.contains("events"))
        .map(|(_, id)| id)
        .collect();
    assert_eq!(a_secrets.len(), 3);
    // Every read before any write, so project B's own writes (into sessions
    // and agents that share A's names) cannot answer B's reads of A's ids.
    let mut operations: Vec<(&String, String, &Value)> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .iter()
                .map(move |(m, op)| (path, m.to_uppercase(), op))
        })
        .collect();
    operations.sort_by_key(|(_, method, _)| method != "GET");
    let mut failures = Vec::new();
    let mut ops = 0;
    // The only routes documented as open (`security: [{}]`): health probes
    // that say nothing about any project.
    const PUBLIC: [&str; 2] = ["/healthz", "/api/health"];
    for (path, method, op) in operations {
        assert!(
            op["security"].as_array().is_some_and(|s| !s.is_empty()),
            "{method} {path} documents no security"
        );
        if op["security"] == serde_json::json!([{}]) {
            assert!(
                PUBLIC.contains(&path.as_str()),
                "{method} {path} is documented as open"
            );
            let (status, _) = call(&app, &method, path, None).await;
            assert_eq!(status, StatusCode::OK, "{path} answers without a key");
            continue;
        }
        ops += 1;
        let url = fill(path, &ids);
        for (who, key) in [
            ("no key", None),
            ("wrong key", Some("al_wrong_0000000000000000000000000000")),
            ("revoked key", Some(revoked.as_str())),
            ("used, then revoked key", Some(used_then_revoked.as_str())),
        ] {
            let (status, body) = call(&app, &method, &url, key).await;
            if status != StatusCode::UNAUTHORIZED {
                failures.push(format!("{method} {path} with {who}: {status}"));
            } else if body.contains(&revoked) || body.contains(&used_then_revoked) {
                failures.push(format!("{method} {path}: a key echoed back"));
            }
        }
        // Another project's key.
        let (status, body) = call(&app, &method, &url, Some(&other)).await;
        let admin_only = op["responses"].get("403").is_some();
        let expected: &[StatusCode] = if admin_only {
            &[StatusCode::FORBIDDEN]
        } else if method == "GET" && path.contains('{') && !path.ends_with("/events") {
            &[StatusCode::NOT_FOUND]
        } else if method == "GET" && path == "/log/checkpoint" {
            // Project B's own log, which has no checkpoint yet (it has no event).
            &[StatusCode::NOT_FOUND]
        } else if method == "GET" {
            &[StatusCode::OK]
        } else {
            // A write lands in the caller's own project (checked below),
            // or is refused for its body.
            &[
                StatusCode::OK,
                StatusCode::CREATED,
                StatusCode::BAD_REQUEST,
                StatusCode::NOT_FOUND,
                StatusCode::CONFLICT,
            ]
        };
        if !expected.contains(&status) {
            failures.push(format!(
                "{method} {path} with another project's key: {status}"
            ));
        }
        if let Some(leak) = a_secrets.iter().find(|id| body.contains(id.as_str())) {
            failures.push(format!("{method} {path}: another project's key saw {leak}"));
        }
    }
    // Served outside the OpenAPI document on purpose: the MCP endpoint speaks
    // JSON-RPC (docs/mcp.md), not REST, and has no operations to list. Its
    // key check is the same; another project's key is tried tool by tool in
    // mcp.rs.
    let doc_paths = doc["paths"].as_object().unwrap();
    for (method, path) in UNDOCUMENTED {
        assert!(!doc_paths.contains_key(path), "{path} is documented now");
        for (who, key) in [
            ("no key", None),
            ("wrong key", Some("al_wrong_0000000000000000000000000000")),
            ("revoked key", Some(revoked.as_str())),
            ("used, then revoked key", Some(used_then_revoked.as_str())),
        ] {
            let (status, body) = call(&app, method, path, key).await;
            if status != StatusCode::UNAUTHORIZED {
                failures.push(format!("{method} {path} with {who}: {status}"));
            } else if body.contains(&revoked) || body.contains(&used_then_revoked) {
                failures.push(format!("{method} {path}: a key echoed back"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(ops >= 27, "the document lists {ops} operations");
    // Project A's session was not touched by project B's writes.
    let s = app.get_json("/api/v1/sessions/sess-of-project-a").await;
    assert_eq!(s["event_count"], 3, "{s}");
    let v = app
        .get_json("/api/v1/sessions/sess-of-project-a/verify")
        .await;
    assert_eq!(v["valid"], true);
}

/// ULID-like event ids: the random part changes completely between two ids
/// made in the same millisecond (not a counter), and ids of every dialect are
/// built on it.
#[tokio::test]
async fn ids_are_neither_sequential_nor_guessable() {
    let app = spawn_app().await;
    let events: Vec<Value> = (0..500).map(|i| memory("s", i)).collect();
    let ack = app.ingest(Value::Array(events)).await;
    let ids: Vec<String> = ack["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    let decode = |s: &str| -> u128 {
        const ALPHABET: &[u8] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
        s.bytes().fold(0u128, |acc, c| {
            let d = ALPHABET
                .iter()
                .position(|&a| a == c)
                .expect("Crockford base32") as u128;
            (acc << 5) | d
        })
    };
    let mut distinct = std::collections::HashSet::new();
    let mut small_steps = 0;
    let mut bit_flips = 0u64;
    for w in ids.windows(2) {
        let (a, b) = (decode(&w[0]), decode(&w[1]));
        let (ra, rb) = (a & ((1 << 80) - 1), b & ((1 << 80) - 1));
        if ra.abs_diff(rb) < 1 << 40 {
            small_steps += 1;
        }
        bit_flips += u64::from((ra ^ rb).count_ones());
        distinct.insert(w[1].clone());
    }
    assert_eq!(distinct.len(), ids.len() - 1, "ids are unique");
    assert_eq!(small_steps, 0, "consecutive ids are not a counter");
    let mean = bit_flips as f64 / (ids.len() - 1) as f64;
    assert!(
        (30.0..50.0).contains(&mean),
        "80 random bits differ in ~40 places between ids, got {mean}"
    );
    // Session ids and key ids are the caller's or random; key ids too.
    let list = String::from_utf8(app.cli(&["keys", "list"]).stdout).unwrap();
    assert!(!list.contains(&app.key));
}
