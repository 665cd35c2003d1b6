//! Alerting as a user meets it: a local webhook receiver (an axum server on
//! port 0 in the test) gets signed deliveries of denied tool calls, keeps
//! getting them through an outage, and after the server was SIGKILLed; a
//! threshold rule fires and resolves; the API never shows a secret.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode as AxStatus};
use hmac::{KeyInit, Mac};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;

/// One request the receiver got.
#[derive(Clone, Debug)]
struct Got {
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Got {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("delivery body is JSON")
    }
}

/// A webhook receiver: answers 503 while `down`, else 200 and keeps what
/// it got.
#[derive(Clone, Default)]
struct Receiver {
    got: Arc<Mutex<Vec<Got>>>,
    refused: Arc<Mutex<u32>>,
    down: Arc<AtomicBool>,
}

impl Receiver {
    async fn start() -> (Receiver, SocketAddr) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let r = Receiver::default();
        r.serve(l);
        (r, addr)
    }

    fn serve(&self, l: tokio::net::TcpListener) {
        let me = self.clone();
        let app = axum::Router::new()
            .route(
                "/redirect",
                axum::routing::post(|| async {
                    (AxStatus::TEMPORARY_REDIRECT, [("location", "/hook")])
                }),
            )
            .route(
                "/hook",
                axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
                    let me = me.clone();
                    async move {
                        if me.down.load(Ordering::SeqCst) {
                            *me.refused.lock().unwrap() += 1;
                            return AxStatus::SERVICE_UNAVAILABLE;
                        }
                        me.got.lock().unwrap().push(Got {
                            headers,
                            body: body.to_vec(),
                        });
                        AxStatus::NO_CONTENT
                    }
                }),
            );
        tokio::spawn(async move { axum::serve(l, app).await });
    }

    fn got(&self) -> Vec<Got> {
        self.got.lock().unwrap().clone()
    }

    /// Wait until `n` distinct deliveries (by their id header) arrived.
    async fn wait_for(&self, n: usize, within: Duration) -> Vec<Got> {
        let deadline = Instant::now() + within;
        loop {
            let got = self.got();
            let mut ids: Vec<&str> = got
                .iter()
                .map(|g| g.header("x-agentledger-delivery"))
                .collect();
            ids.sort();
            ids.dedup();
            if ids.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "{} of {n} deliveries arrived within {within:?}",
                ids.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The receiver's check of a delivery, written from docs/alerts.md (not
/// with the server's code): HMAC-SHA256(secret, "<t>.<body>") in hex.
fn signature_valid(secret: &str, header: &str, body: &[u8]) -> bool {
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", x)) => t = Some(x.to_owned()),
            Some(("v1", x)) => v1 = Some(x.to_owned()),
            _ => {}
        }
    }
    let (Some(t), Some(v1)) = (t, v1) else {
        return false;
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    if (now - t.parse::<i64>().unwrap_or(0)).abs() > 300 {
        return false;
    }
    let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(t.as_bytes());
    mac.update(b".");
    mac.update(body);
    let Ok(sig) = hex::decode(v1) else {
        return false;
    };
    mac.verify_slice(&sig).is_ok()
}

/// `rm -rf` in a shell call is denied by the policy set below.
const POLICIES: &str = r#"
@id("allow-the-rest")
permit (principal, action, resource);

@id("no-rm-rf")
@reason("recursive forced deletion")
forbid (principal, action == Action::"tool_call", resource)
when { resource.hasTag("command") && resource.getTag("command") like "*rm -rf*" };
"#;

fn denied(session: &str) -> Value {
    json!({"session_id": session, "agent_id": "my-agent", "kind": "tool_call",
           "payload": {"toolName": "shell", "callId": "c",
                       "arguments": {"command": "sudo rm -rf / --no-preserve-root"}}})
}

async fn send(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    key: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = client.request(method, url).bearer_auth(key);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.expect("request");
    let status = r.status();
    let text = r.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Policies, a signed webhook to `hook` and a deny rule; the secret.
async fn configure(client: &reqwest::Client, base: &str, key: &str, hook: &str) -> String {
    let (s, body) = send(
        client,
        reqwest::Method::PUT,
        format!("{base}/api/v1/policies"),
        key,
        Some(json!({ "policies": POLICIES })),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let (s, dest) = send(
        client,
        reqwest::Method::POST,
        format!("{base}/api/v1/alerts/destinations"),
        key,
        Some(json!({"name": "siem", "kind": "webhook", "url": hook})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{dest}");
    let secret = dest["secret"].as_str().expect("a generated secret, once");
    let (s, rule) = send(
        client,
        reqwest::Method::POST,
        format!("{base}/api/v1/alerts/rules"),
        key,
        Some(json!({"name": "denied tool calls",
                    "condition": {"type": "decision", "decisions": ["deny"]},
                    "destinations": [dest["id"]]})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{rule}");
    secret.to_owned()
}

#[tokio::test]
async fn a_denied_tool_call_is_delivered_once_signed_and_recorded_in_its_session() {
    denied_call_delivered_once(spawn_app().await).await;
}

#[tokio::test]
async fn on_postgresql_a_denied_tool_call_is_delivered_once_and_recorded() {
    let Some(pg) = crate::postgres::PgDb::new() else {
        return;
    };
    let url = pg.url.clone();
    denied_call_delivered_once(spawn_app_with(move |c| c.db = url).await).await;
}

async fn denied_call_delivered_once(app: TestApp) {
    let (rx, addr) = Receiver::start().await;
    let secret = configure(
        &app.client,
        &app.base,
        &app.key,
        &format!("http://{addr}/hook"),
    )
    .await;

    let started = Instant::now();
    let ack = app
        .ingest(json!([tool_call("s1", "ok"), denied("s1")]))
        .await;
    let denied_id = ack["events"][1]["id"].as_str().unwrap().to_owned();
    let got = rx.wait_for(1, Duration::from_secs(10)).await;
    println!("denied tool call delivered in {:?}", started.elapsed());

    let d = &got[0];
    assert!(
        signature_valid(&secret, d.header("x-agentledger-signature"), &d.body),
        "signature {:?} verifies with the secret",
        d.header("x-agentledger-signature")
    );
    assert!(!signature_valid(
        "whsec_wrong_secret_123",
        d.header("x-agentledger-signature"),
        &d.body
    ));
    let body = d.json();
    assert_eq!(body["type"], "alert.triggered");
    assert_eq!(body["id"], d.header("x-agentledger-delivery"));
    assert_eq!(body["alert"]["event_id"], denied_id.as_str());
    assert_eq!(body["alert"]["session_id"], "s1");
    assert_eq!(body["alert"]["rule_name"], "denied tool calls");

    // Exactly one: the allowed call fired nothing, nothing came twice.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(rx.got().len(), 1);

    // Visible through the API: the open alert, its delivered delivery, and
    // the `alert_triggered` event chained into the causing session.
    let deadline = Instant::now() + Duration::from_secs(10);
    let alert = loop {
        let alerts = app.get_json("/api/v1/alerts").await;
        let a = alerts["alerts"][0].clone();
        if a["triggered_seq"].is_u64() {
            break a;
        }
        assert!(
            Instant::now() < deadline,
            "alert_triggered appended: {alerts}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(alert["status"], "open");
    assert_eq!(alert["triggered_seq"], 3);
    let deliveries = app.get_json("/api/v1/alerts/deliveries").await;
    assert_eq!(deliveries["deliveries"][0]["status"], "delivered");
    assert_eq!(deliveries["deliveries"][0]["attempts"], 1);
    assert_eq!(deliveries["deliveries"][0]["last_status"], 204);
    let evs = app
        .get_json("/api/v1/events?session_id=s1&kind=alert_triggered")
        .await;
    assert_eq!(evs["events"][0]["payload"]["alertId"], alert["id"]);
    assert_eq!(evs["events"][0]["payload"]["eventId"], denied_id.as_str());
    let v = app.get_json("/api/v1/sessions/s1/verify").await;
    assert_eq!(v["valid"], true, "{v}");
}

#[tokio::test]
async fn a_receiver_down_for_a_while_then_up_gets_every_alert() {
    let (rx, addr) = Receiver::start().await;
    rx.down.store(true, Ordering::SeqCst);
    let app = spawn_app().await;
    configure(
        &app.client,
        &app.base,
        &app.key,
        &format!("http://{addr}/hook"),
    )
    .await;
    for i in 0..5 {
        app.ingest(json!([denied(&format!("s{i}"))])).await;
    }
    // Down: attempts are refused and retried, nothing is lost.
    let deadline = Instant::now() + Duration::from_secs(10);
    while *rx.refused.lock().unwrap() < 10 {
        assert!(Instant::now() < deadline, "the workers retry");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let pending = app.get_json("/api/v1/alerts/deliveries").await;
    for d in pending["deliveries"].as_array().unwrap() {
        assert_eq!(d["status"], "pending", "{d}");
        assert_eq!(d["last_status"], 503, "{d}");
        assert_eq!(d["last_error"], "HTTP 503", "{d}");
    }
    rx.down.store(false, Ordering::SeqCst);
    let got = rx.wait_for(5, Duration::from_secs(30)).await;
    let mut sessions: Vec<String> = got
        .iter()
        .map(|g| g.json()["alert"]["session_id"].as_str().unwrap().to_owned())
        .collect();
    sessions.sort();
    sessions.dedup();
    assert_eq!(sessions, ["s0", "s1", "s2", "s3", "s4"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ds = app.get_json("/api/v1/alerts/deliveries").await;
        let ds = ds["deliveries"].as_array().unwrap().clone();
        if ds.iter().all(|d| d["status"] == "delivered") {
            assert!(ds.iter().all(|d| d["attempts"].as_u64() > Some(1)));
            break;
        }
        assert!(Instant::now() < deadline, "all delivered: {ds:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_destination_that_never_answers_well_is_dead_lettered_after_the_configured_attempts() {
    let (rx, addr) = Receiver::start().await;
    rx.down.store(true, Ordering::SeqCst);
    let app = spawn_app_with(|c| c.alerts.max_attempts = 3).await;
    configure(
        &app.client,
        &app.base,
        &app.key,
        &format!("http://{addr}/hook"),
    )
    .await;
    app.ingest(json!([denied("s1")])).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let ds = app.get_json("/api/v1/alerts/deliveries").await;
        let d = &ds["deliveries"][0];
        if d["status"] == "failed" {
            assert_eq!(d["attempts"], 3, "{d}");
            assert_eq!(d["last_error"], "HTTP 503", "{d}");
            break;
        }
        assert!(Instant::now() < deadline, "dead-lettered: {d}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(*rx.refused.lock().unwrap(), 3, "no attempt after giving up");
}

#[tokio::test]
async fn a_threshold_rule_fires_and_resolves() {
    threshold_fires_and_resolves(spawn_app().await).await;
}

#[tokio::test]
async fn on_postgresql_a_threshold_rule_fires_and_resolves() {
    let Some(pg) = crate::postgres::PgDb::new() else {
        return;
    };
    let url = pg.url.clone();
    threshold_fires_and_resolves(spawn_app_with(move |c| c.db = url).await).await;
}

async fn threshold_fires_and_resolves(app: TestApp) {
    let (rx, addr) = Receiver::start().await;
    let (s, dest) = send(
        &app.client,
        reqwest::Method::POST,
        app.url("/api/v1/alerts/destinations"),
        &app.key,
        Some(
            json!({"name": "ops", "kind": "webhook", "url": format!("http://{addr}/hook"),
                    "secret": "a-secret-of-my-own-choosing"}),
        ),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    assert!(
        dest.get("secret").is_none(),
        "a chosen secret is not echoed"
    );
    let (s, rule) = send(
        &app.client,
        reqwest::Method::POST,
        app.url("/api/v1/alerts/rules"),
        &app.key,
        Some(json!({"name": "busy",
                    "condition": {"type": "threshold", "metric": "project_events",
                                  "threshold": 3, "window_secs": 2},
                    "destinations": [dest["id"]]})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{rule}");
    app.ingest(json!([memory("t1", 1), memory("t1", 2), memory("t1", 3)]))
        .await;

    let got = rx.wait_for(1, Duration::from_secs(10)).await;
    let fired = got[0].json();
    assert_eq!(fired["type"], "alert.triggered");
    assert_eq!(fired["alert"]["subject"], "project");
    assert_eq!(fired["alert"]["value"], 3.0);
    assert!(signature_valid(
        "a-secret-of-my-own-choosing",
        got[0].header("x-agentledger-signature"),
        &got[0].body
    ));
    // The window passes: it resolves (once), and both are in the session.
    let got = rx.wait_for(2, Duration::from_secs(15)).await;
    let resolved = got[1].json();
    assert_eq!(resolved["type"], "alert.resolved");
    assert_eq!(resolved["alert"]["id"], fired["alert"]["id"]);
    assert_eq!(resolved["alert"]["status"], "resolved");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let evs = app.get_json("/api/v1/events?session_id=t1").await;
        let kinds: Vec<&str> = evs["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| e["kind"].as_str())
            .collect();
        if kinds.contains(&"alert_resolved") {
            assert!(kinds.contains(&"alert_triggered"), "{kinds:?}");
            break;
        }
        assert!(Instant::now() < deadline, "recorded: {kinds:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let open = app.get_json("/api/v1/alerts").await;
    assert_eq!(open["alerts"], json!([]), "nothing open once resolved");
    let all = app.get_json("/api/v1/alerts?status=all").await;
    assert_eq!(all["alerts"][0]["status"], "resolved");
    let v = app.get_json("/api/v1/sessions/t1/verify").await;
    assert_eq!(v["valid"], true, "{v}");
    // Its own events do not keep it open or open it again.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(rx.got().len(), 2);
}

#[tokio::test]
async fn rules_and_destinations_are_admin_only_bounded_and_never_show_secrets() {
    let app = spawn_app().await;
    let slack = "https://hooks.slack.com/services/T000/B000/XXXXSECRETXXXX";
    let (s, d) = send(
        &app.client,
        reqwest::Method::POST,
        app.url("/api/v1/alerts/destinations"),
        &app.key,
        Some(json!({"name": "team", "kind": "slack", "url": slack})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{d}");
    assert_eq!(d["host"], "hooks.slack.com");
    let listed = app.get("/api/v1/alerts/destinations").await;
    assert_eq!(listed.status(), StatusCode::OK);
    let text = listed.text().await.unwrap();
    assert!(!text.contains("XXXXSECRETXXXX"), "{text}");
    assert!(!text.contains("/services/"), "{text}");

    let bad = [
        (
            json!({"name": "x", "kind": "webhook", "url": "ftp://example.com/x"}),
            "url",
        ),
        (
            json!({"name": "x", "kind": "pager", "url": "http://example.com/x"}),
            "kind",
        ),
        (
            json!({"name": "", "kind": "webhook", "url": "http://example.com/x"}),
            "name",
        ),
        (
            json!({"name": "x", "kind": "webhook", "url": "http://u:p@example.com/x"}),
            "url",
        ),
        (
            json!({"name": "x", "kind": "webhook", "url": format!("http://example.com/{}", "a".repeat(3000))}),
            "url",
        ),
        (
            json!({"name": "x", "kind": "webhook", "url": "http://example.com/x", "secret": "short"}),
            "secret",
        ),
        (
            json!({"name": "x", "kind": "slack", "url": "http://example.com/x", "secret": "0123456789abcdefg"}),
            "secret",
        ),
    ];
    for (body, field) in bad {
        let (s, e) = send(
            &app.client,
            reqwest::Method::POST,
            app.url("/api/v1/alerts/destinations"),
            &app.key,
            Some(body.clone()),
        )
        .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body}: {e}");
        assert!(e.to_string().contains(field), "{body}: {e} names {field}");
    }
    let bad_rules = [
        (
            json!({"name": "r", "condition": {"type": "decision", "decisions": []}}),
            "condition.decisions",
        ),
        (
            json!({"name": "r", "condition": {"type": "decision", "decisions": ["allow"]}}),
            "condition.decisions",
        ),
        (
            json!({"name": "r", "condition": {"type": "event_kind", "kinds": ["alert_triggered"]}}),
            "condition.kinds",
        ),
        (
            json!({"name": "r", "condition": {"type": "threshold", "metric": "agent_errors", "threshold": -1, "window_secs": 300}}),
            "condition.threshold",
        ),
        (
            json!({"name": "r", "condition": {"type": "threshold", "metric": "agent_errors", "threshold": 3, "window_secs": 0}}),
            "condition.window_secs",
        ),
        (
            json!({"name": "r", "condition": {"type": "decision", "decisions": ["deny"]}, "destinations": ["dst_nope"]}),
            "destinations",
        ),
        (
            json!({"name": "r", "condition": {"type": "sometimes"}}),
            "condition",
        ),
    ];
    for (body, field) in bad_rules {
        let (s, e) = send(
            &app.client,
            reqwest::Method::POST,
            app.url("/api/v1/alerts/rules"),
            &app.key,
            Some(body.clone()),
        )
        .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body}: {e}");
        assert!(e.to_string().contains(field), "{body}: {e} names {field}");
    }
    // A non-admin key of the project reads alerts, changes nothing.
    let reader = app.new_key("default").await;
    let (s, _) = send(
        &app.client,
        reqwest::Method::POST,
        app.url("/api/v1/alerts/rules"),
        &reader,
        Some(json!({"name": "r", "condition": {"type": "decision", "decisions": ["deny"]}})),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert_eq!(
        app.get_with("/api/v1/alerts/destinations", &reader)
            .await
            .status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        app.get_with("/api/v1/alerts", &reader).await.status(),
        StatusCode::OK
    );
    // A destination a rule names is not deleted from under it.
    let (s, r) = send(
        &app.client,
        reqwest::Method::POST,
        app.url("/api/v1/alerts/rules"),
        &app.key,
        Some(
            json!({"name": "r", "condition": {"type": "decision", "decisions": ["deny", "flag"]},
                    "destinations": [d["id"]]}),
        ),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{r}");
    let del = |path: String| {
        let app = &app;
        async move {
            app.client
                .delete(app.url(&path))
                .bearer_auth(&app.key)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    let dest_path = format!("/api/v1/alerts/destinations/{}", d["id"].as_str().unwrap());
    assert_eq!(del(dest_path.clone()).await, StatusCode::CONFLICT);
    let rule_path = format!("/api/v1/alerts/rules/{}", r["id"].as_str().unwrap());
    assert_eq!(del(rule_path.clone()).await, StatusCode::NO_CONTENT);
    assert_eq!(del(rule_path).await, StatusCode::NOT_FOUND);
    assert_eq!(del(dest_path).await, StatusCode::NO_CONTENT);
}

// --- SIGKILL between commit and delivery: a real server process.

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

struct Server {
    child: Child,
    base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn server(db: &Path, key: &str) -> Server {
    let port = free_port();
    let child = Command::new(bin())
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--db", db.to_str().unwrap(), "--log", "warn"])
        .args(["--alert-retry-base", "0.2"])
        .env("AGENTLEDGER_BOOTSTRAP_KEY", key)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn server");
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while client.get(format!("{base}/healthz")).send().await.is_err() {
        assert!(Instant::now() < deadline, "server did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Server { child, base }
}

#[tokio::test]
async fn an_alert_committed_before_a_sigkill_is_delivered_after_the_restart() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ledger.db");
    let key = agentledger_core::keys::generate_key();
    // The receiver's port, not listening yet: nothing can be delivered
    // before the kill.
    let hook_port = free_port();
    let client = reqwest::Client::new();
    let mut first = server(&db, &key).await;
    configure(
        &client,
        &first.base,
        &key,
        &format!("http://127.0.0.1:{hook_port}/hook"),
    )
    .await;
    let (s, ack) = send(
        &client,
        reqwest::Method::POST,
        format!("{}/api/v1/events", first.base),
        &key,
        Some(json!({"events": [denied("killed")]})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{ack}");
    first.child.kill().expect("SIGKILL");
    let _ = first.child.wait();
    drop(first);

    let l = tokio::net::TcpListener::bind(("127.0.0.1", hook_port))
        .await
        .expect("the receiver's port");
    let rx = Receiver::default();
    rx.serve(l);
    let second = server(&db, &key).await;
    let started = Instant::now();
    let got = rx.wait_for(1, Duration::from_secs(30)).await;
    println!("delivered {:?} after the restart", started.elapsed());
    let body = got[0].json();
    assert_eq!(body["alert"]["session_id"], "killed");
    assert_eq!(body["alert"]["event_id"], ack["events"][0]["id"]);
    let (_, ds) = send(
        &client,
        reqwest::Method::GET,
        format!("{}/api/v1/alerts/deliveries", second.base),
        &key,
        None,
    )
    .await;
    assert_eq!(ds["deliveries"].as_array().map(Vec::len), Some(1), "{ds}");
}

#[tokio::test]
async fn redirects_are_not_followed_and_https_is_spoken_as_tls() {
    let (rx, addr) = Receiver::start().await;
    let app = spawn_app().await;
    for (name, url) in [
        ("redirected", format!("http://{addr}/redirect")),
        ("tls", format!("https://{addr}/hook")),
    ] {
        let (s, d) = send(
            &app.client,
            reqwest::Method::POST,
            app.url("/api/v1/alerts/destinations"),
            &app.key,
            Some(json!({"name": name, "kind": "webhook", "url": url})),
        )
        .await;
        assert_eq!(s, StatusCode::CREATED, "{d}");
        let (s, r) = send(
            &app.client,
            reqwest::Method::POST,
            app.url("/api/v1/alerts/rules"),
            &app.key,
            Some(
                json!({"name": name, "condition": {"type": "event_kind", "kinds": ["error"]},
                        "destinations": [d["id"]]}),
            ),
        )
        .await;
        assert_eq!(s, StatusCode::CREATED, "{r}");
    }
    app.ingest(json!([{"session_id": "s", "agent_id": "a", "kind": "error",
                       "payload": {"message": "boom"}}]))
        .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let ds = loop {
        let ds = app.get_json("/api/v1/alerts/deliveries").await;
        let ds = ds["deliveries"].as_array().unwrap().clone();
        if ds.len() == 2 && ds.iter().all(|d| d["attempts"].as_u64() >= Some(1)) {
            break ds;
        }
        assert!(Instant::now() < deadline, "attempted: {ds:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let errors: Vec<String> = ds
        .iter()
        .map(|d| d["last_error"].as_str().unwrap_or("").to_owned())
        .collect();
    println!("delivery errors: {errors:?}");
    assert!(
        errors
            .iter()
            .any(|e| e.contains("HTTP 307") && e.contains("not followed")),
        "{errors:?}"
    );
    // The plain-HTTP receiver cannot answer a TLS handshake.
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with("could not connect") || e.starts_with("request failed")),
        "{errors:?}"
    );
    assert!(ds.iter().all(|d| d["status"] == "pending"));
    assert!(rx.got().is_empty(), "nothing reached /hook: {:?}", rx.got());
}

#[tokio::test]
async fn a_slack_destination_gets_escaped_text_and_no_signature() {
    let (rx, addr) = Receiver::start().await;
    let app = spawn_app().await;
    let (s, d) = send(
        &app.client,
        reqwest::Method::POST,
        app.url("/api/v1/alerts/destinations"),
        &app.key,
        Some(json!({"name": "team", "kind": "slack", "url": format!("http://{addr}/hook")})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{d}");
    let (s, r) = send(
        &app.client,
        reqwest::Method::POST,
        app.url("/api/v1/alerts/rules"),
        &app.key,
        Some(json!({"name": "errors <!channel>", "condition": {"type": "event_kind", "kinds": ["error"]},
                    "destinations": [d["id"]]})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{r}");
    app.ingest(json!([{"session_id": "s", "agent_id": "a", "kind": "error",
                       "payload": {"message": "boom"}}]))
        .await;
    let got = rx.wait_for(1, Duration::from_secs(10)).await;
    let body = got[0].json();
    let text = body["text"].as_str().expect("a Slack text");
    assert!(text.contains("errors &lt;!channel&gt;"), "{text}");
    assert!(!text.contains("<!channel>"), "{text}");
    assert_eq!(got[0].header("x-agentledger-signature"), "");
    assert!(got[0].header("x-agentledger-delivery").starts_with("dlv_"));
}
