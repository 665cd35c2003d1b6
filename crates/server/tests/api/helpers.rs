//! Spawn the real server on port 0 with a temporary database; talk HTTP to it.

use std::path::{Path, PathBuf};
use std::process::Command;

use reqwest::{Client, Response, StatusCode};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use agentledger::{Application, ServeConfig};

pub struct TestApp {
    pub base: String,
    pub key: String,
    /// The operator token (`--operator-token`), for /metrics.
    pub operator: String,
    pub client: Client,
    pub db: PathBuf,
    pub dir: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<std::io::Result<()>>>,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Spawn with a chosen admin key (e.g. one shaped like a vendor's `als_…`).
pub async fn spawn_app_with_key(key: &str) -> TestApp {
    let dir = tempfile::tempdir().expect("temp dir");
    start(dir, key.to_owned()).await
}

/// A documented example from a dialect's fixtures.
pub fn fixture(dialect: &str, name: &str) -> String {
    let path = format!(
        "{}/../dialects/src/{dialect}/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

pub fn fixture_json(dialect: &str, name: &str) -> Value {
    serde_json::from_str(&fixture(dialect, name)).expect("fixture is JSON")
}

/// The set of keys of a JSON object.
pub fn keys(v: &Value) -> std::collections::BTreeSet<String> {
    v.as_object().expect("object").keys().cloned().collect()
}

/// Spawn with adjusted settings (the database and key are set by the helper).
pub async fn spawn_app_with(adjust: impl FnOnce(&mut ServeConfig)) -> TestApp {
    let dir = tempfile::tempdir().expect("temp dir");
    let key = agentledger_core::keys::generate_key();
    start_with(dir, key, adjust).await
}

async fn start(dir: tempfile::TempDir, key: String) -> TestApp {
    start_with(dir, key, |_| {}).await
}

async fn start_with(
    dir: tempfile::TempDir,
    key: String,
    adjust: impl FnOnce(&mut ServeConfig),
) -> TestApp {
    let db = dir.path().join("ledger.db");
    let mut cfg = ServeConfig::for_tests(db.clone());
    let operator = agentledger_core::keys::generate_key();
    cfg.operator_token = Some(operator.clone());
    adjust(&mut cfg);
    cfg.bootstrap_key = Some(key.clone());
    let app = Application::build(cfg).await.expect("server starts");
    let base = format!("http://{}", app.local_addr());
    let (tx, rx) = oneshot::channel::<()>();
    let handle = tokio::spawn(app.run_until_stopped(async {
        let _ = rx.await;
    }));
    TestApp {
        base,
        key,
        operator,
        client: Client::new(),
        db,
        dir,
        stop: Some(tx),
        handle: Some(handle),
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Stop gracefully, then start a new server on the same database.
    pub async fn restart(mut self) -> TestApp {
        self.shutdown().await;
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().expect("temp dir"));
        start(dir, self.key.clone()).await
    }

    pub async fn shutdown(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.handle.take() {
            h.await.expect("server task").expect("server ran");
        }
    }

    pub async fn get(&self, path: &str) -> Response {
        self.get_with(path, &self.key).await
    }

    pub async fn get_with(&self, path: &str, key: &str) -> Response {
        self.client
            .get(self.url(path))
            .bearer_auth(key)
            .send()
            .await
            .expect("request")
    }

    /// The background indexer trails ingest (searches still find the tail by
    /// scanning it); tests that need the index itself caught up wait here:
    /// until `/metrics` says the search backlog is 0.
    pub async fn wait_for_search(&self) {
        for _ in 0..1000 {
            let text = self.metrics().await;
            if text
                .lines()
                .any(|l| l.trim() == "agentledger_search_backlog_events 0")
            {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("search index did not catch up in 10 s");
    }

    /// `/metrics` as the operator sees it.
    pub async fn metrics(&self) -> String {
        let r = self.get_with("/metrics", &self.operator).await;
        assert_eq!(r.status(), StatusCode::OK, "GET /metrics as the operator");
        r.text().await.expect("metrics")
    }

    pub async fn get_json(&self, path: &str) -> Value {
        let r = self.get(path).await;
        assert_eq!(r.status(), StatusCode::OK, "GET {path}");
        r.json().await.expect("json")
    }

    /// A GET's body as text (an export, a page), asserting 200.
    pub async fn get_text(&self, path: &str) -> String {
        let r = self.get(path).await;
        assert_eq!(r.status(), StatusCode::OK, "GET {path}");
        r.text().await.expect("text")
    }

    pub async fn post(&self, path: &str, body: &Value) -> Response {
        self.post_with(path, body, &self.key).await
    }

    pub async fn post_with(&self, path: &str, body: &Value, key: &str) -> Response {
        self.client
            .post(self.url(path))
            .header("x-api-key", key)
            .json(body)
            .send()
            .await
            .expect("request")
    }

    pub async fn post_events(&self, events: Value) -> Response {
        self.post("/api/v1/events", &json!({ "events": events }))
            .await
    }

    /// Post and expect 201; returns the response body.
    pub async fn ingest(&self, events: Value) -> Value {
        let r = self.post_events(events).await;
        let status = r.status();
        let body: Value = r.json().await.expect("json");
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body
    }

    /// Total events stored in this key's project.
    pub async fn event_total(&self) -> u64 {
        self.get_json("/api/v1/events?limit=1").await["total"]
            .as_u64()
            .expect("total")
    }

    /// Run the CLI against this app's database.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        cli_on(&self.db, args)
    }

    pub async fn new_admin_key(&self, project: &str) -> String {
        self.create_key(&["keys", "create", "--admin", "--project", project])
    }

    pub async fn new_key(&self, project: &str) -> String {
        self.create_key(&["keys", "create", "--project", project])
    }

    fn create_key(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .expect("utf8")
            .trim()
            .to_owned()
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_agentledger")
}

pub fn cli_on(db: &Path, args: &[&str]) -> std::process::Output {
    let mut cmd = Command::new(bin());
    cmd.args(args)
        .env("AGENTLEDGER_DB", db)
        .env_remove("AGENTLEDGER_BOOTSTRAP_KEY");
    cmd.output().expect("run cli")
}

/// A documented tool_call event (seed 002's example payload).
pub fn tool_call(session: &str, call: &str) -> Value {
    json!({
        "session_id": session,
        "agent_id": "my-agent",
        "kind": "tool_call",
        "payload": { "toolName": "search_database", "callId": call, "arguments": { "query": "user records" } }
    })
}

pub fn memory(session: &str, n: usize) -> Value {
    json!({ "session_id": session, "agent_id": "my-agent", "kind": "memory", "payload": { "n": n } })
}

/// Change stored rows directly, as an attacker with file access would.
pub fn tamper(db: &Path, sql: &str) {
    let conn = rusqlite::Connection::open(db).expect("open db");
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .expect("timeout");
    let n = conn.execute(sql, []).expect("tamper");
    assert!(n > 0, "tamper statement changed nothing: {sql}");
}

/// The real binary in a process of its own, for what only a process shows:
/// its memory (VmRSS) and its own runtime's workers. Killed when dropped.
pub struct ServerProcess {
    pub base: String,
    pub key: String,
    pub client: Client,
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

pub async fn spawn_process() -> ServerProcess {
    spawn_process_with(&[]).await
}

/// As [`spawn_process`], with environment variables for the server
/// (`TOKIO_WORKER_THREADS`, for one).
pub async fn spawn_process_with(env: &[(&str, &str)]) -> ServerProcess {
    let dir = tempfile::tempdir().expect("temp dir");
    let key = agentledger_core::keys::generate_key();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port");
    let db = dir.path().join("ledger.db");
    let child = Command::new(bin())
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--db")
        .arg(&db)
        .args(["--log", "warn"])
        .env("AGENTLEDGER_BOOTSTRAP_KEY", &key)
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn server");
    let server = ServerProcess {
        base: format!("http://127.0.0.1:{port}"),
        key,
        client: Client::new(),
        child,
        _dir: dir,
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while server
        .client
        .get(server.url("/healthz"))
        .send()
        .await
        .is_err()
    {
        assert!(std::time::Instant::now() < deadline, "server did not start");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    server
}

impl ServerProcess {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Resident memory of the server process, KiB.
    pub fn rss_kib(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmRSS:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|v| v.parse().ok())
            })
            .expect("VmRSS of the server process")
    }

    pub async fn post(&self, path: &str, body: &Value) -> Response {
        self.client
            .post(self.url(path))
            .header("x-api-key", &self.key)
            .json(body)
            .send()
            .await
            .expect("request")
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
