//! The binary itself: bootstrap key, SIGTERM, keys and export commands.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::helpers::*;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn wait_healthy(base: &str) {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if client.get(format!("{base}/healthz")).send().await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("server did not start");
}

#[tokio::test]
async fn first_start_prints_a_generated_admin_key_once_and_sigterm_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("l.db");
    let port = free_port();
    let mut child = Command::new(bin())
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--db",
            db.to_str().unwrap(),
        ])
        .env_remove("AGENTLEDGER_BOOTSTRAP_KEY")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let base = format!("http://127.0.0.1:{port}");
    wait_healthy(&base).await;
    let mut key = None;
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(5)) {
        if let Some(k) = line.split_whitespace().find(|w| w.starts_with("al_")) {
            key = Some(k.to_owned());
            break;
        }
    }
    let key = key.expect("generated key printed on stderr");
    let client = reqwest::Client::new();
    let r = client
        .post(format!("{base}/api/v1/events"))
        .bearer_auth(&key)
        .json(&json!({"events": [memory("s", 1)]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::CREATED);

    let st = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "graceful exit");
    let rest: Vec<String> = rx.try_iter().collect();
    assert!(
        rest.iter().all(|l| !l.contains(&key)),
        "the key is printed only once"
    );

    // What was acknowledged is on disk; a second start prints no new key.
    let out = cli_on(&db, &["export"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 1);
    let out = cli_on(&db, &["verify"]);
    assert!(out.status.success());
}

#[tokio::test]
async fn keys_create_prints_only_the_key() {
    let app = spawn_app().await;
    let out = app.cli(&["keys", "create", "--project", "p2", "--name", "ci"]);
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(stdout.lines().count(), 1);
    assert!(stdout.trim().starts_with("al_") && stdout.trim().len() == 46);
    let r = app.get_with("/api/v1/events", stdout.trim()).await;
    assert_eq!(r.status(), reqwest::StatusCode::OK);
}

#[tokio::test]
async fn cli_export_matches_the_http_export() {
    let app = spawn_app().await;
    app.ingest(json!([tool_call("x", "1"), memory("x", 2), memory("y", 3)]))
        .await;
    let http = app
        .get("/api/v1/sessions/x/export")
        .await
        .text()
        .await
        .unwrap();
    let out = app.cli(&["export", "--session", "x"]);
    assert!(out.status.success());
    assert_eq!(String::from_utf8(out.stdout).unwrap(), http);
    let all = app.cli(&["export"]);
    assert_eq!(String::from_utf8(all.stdout).unwrap().lines().count(), 3);
}

#[tokio::test]
async fn env_variables_configure_every_command() {
    let out = Command::new(bin())
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    for var in [
        "AGENTLEDGER_LISTEN",
        "AGENTLEDGER_DB",
        "AGENTLEDGER_BOOTSTRAP_KEY",
        "AGENTLEDGER_LOG",
    ] {
        assert!(help.contains(var), "{var} missing from help");
    }
}
