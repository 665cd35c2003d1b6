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
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let log_w = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            log_w.lock().unwrap().push_str(&line);
        }
    });
    let base = format!("http://127.0.0.1:{port}");
    wait_healthy(&base).await;
    // Standard output carries the key alone, on its own line.
    let key = rx
        .recv_timeout(Duration::from_secs(5))
        .expect("generated key printed on stdout");
    assert!(key.starts_with("al_") && key.len() == 46, "{key:?}");
    assert!(
        !log.lock().unwrap().contains(&key),
        "the key must not appear in the log"
    );
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
    // Both exports end with the log proof of the same checkpoint: wait for the one that
    // holds all three events, or one could be signed between the two exports.
    crate::log::checkpoint_of_size(&app, &app.key, 3, &crate::log::vkey(&app, "default")).await;
    let http = app.get_text("/api/v1/sessions/x/export").await;
    assert!(
        http.ends_with("\n") && http.contains(r#"{"log_proof""#),
        "{http}"
    );
    let out = app.cli(&["export", "--session", "x"]);
    assert!(out.status.success());
    assert_eq!(String::from_utf8(out.stdout).unwrap(), http);
    let all = app.cli(&["export"]);
    let all = String::from_utf8(all.stdout).unwrap();
    let events = all
        .lines()
        .filter(|l| !l.starts_with(r#"{"log_proof""#))
        .count();
    assert_eq!(events, 3, "{all}");
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

/// Run the real binary with every crate logging at debug, feed it known
/// secrets through every kind of request (stored, refused, judged, checked,
/// with a wrong key), and scan all it printed: no key, no secret, no detector
/// match may appear.
#[tokio::test]
async fn logs_never_contain_keys_secrets_or_detector_matches() {
    const AWS: &str = "AKIAUJZDEGXDNCF32EPF";
    const GITHUB: &str = "ghp_8rESQedUStPKR0CsTy4Qwb8DwkNhFdnXsiVp";
    const EMAIL: &str = "jane.roe.4417@example.org";
    const WRONG_KEY: &str = "al_wrongwrongwrongwrongwrongwrongwrongwrongwr";
    let key = agentledger_core::keys::generate_key();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("l.db");
    let port = free_port();
    let mut child = Command::new(bin())
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--db"])
        .arg(&db)
        .args(["--log", "debug"])
        .env("AGENTLEDGER_BOOTSTRAP_KEY", &key)
        .stderr(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut readers = Vec::new();
    for pipe in [
        Box::new(child.stderr.take().unwrap()) as Box<dyn std::io::Read + Send>,
        Box::new(child.stdout.take().unwrap()),
    ] {
        readers.push(std::thread::spawn(move || {
            let mut s = String::new();
            let _ = std::io::Read::read_to_string(&mut BufReader::new(pipe), &mut s);
            s
        }));
    }
    let base = format!("http://127.0.0.1:{port}");
    wait_healthy(&base).await;
    let client = reqwest::Client::new();
    let secret_text = format!("deploy with {AWS} and {GITHUB}, mail {EMAIL}");
    let post = |path: &str, k: &str, body: String| {
        client
            .post(format!("{base}{path}"))
            .bearer_auth(k)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let stored = json!({"events": [{"session_id": "s", "agent_id": "a", "kind": "tool_call",
        "payload": {"toolName": "shell", "callId": "1", "arguments": {"cmd": secret_text}}}]});
    let r = post("/api/v1/events", &key, stored.to_string())
        .await
        .unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::CREATED);
    let checked = json!({"session_id": "s", "agent_id": "a", "tool": "send_email",
        "arguments": {"to": EMAIL, "body": secret_text}});
    let r = post("/api/v1/check", &key, checked.to_string())
        .await
        .unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::OK);
    // Refused: a bad kind, broken JSON, a wrong key, a bad policy set.
    let bad_kind = json!({"events": [{"session_id": "s", "agent_id": "a", "kind": AWS, "payload": {"x": GITHUB}}]});
    let r = post("/api/v1/events", &key, bad_kind.to_string())
        .await
        .unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::BAD_REQUEST);
    let r = post("/api/v1/events", &key, format!("{{\"events\": [{GITHUB}"))
        .await
        .unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::BAD_REQUEST);
    let r = post("/api/v1/events", WRONG_KEY, stored.to_string())
        .await
        .unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::UNAUTHORIZED);
    let r = client
        .put(format!("{base}/api/v1/policies"))
        .bearer_auth(&key)
        .header("content-type", "application/json")
        .body(json!({"policies": format!("forbid (principal, action, resource) when {{ \"{AWS}\" }};")}).to_string())
        .send()
        .await
        .unwrap();
    assert!(r.status().is_client_error());
    let r = client
        .get(format!("{base}/api/v1/events?q={GITHUB}&agent_id={AWS}"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::OK);

    let st = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    assert_eq!(child.wait().unwrap().code(), Some(0));
    let logs: String = readers.into_iter().map(|r| r.join().unwrap()).collect();
    assert!(
        logs.contains("agentledger ready"),
        "debug logs were captured: {logs}"
    );
    for needle in [key.as_str(), WRONG_KEY, AWS, GITHUB, EMAIL, &key[..12]] {
        assert!(
            !logs.contains(needle),
            "{needle} appeared in the logs:\n{logs}"
        );
    }
}
