//! `agentledger copy` end to end: a ledger written through the server on
//! SQLite (verdicts, a saved policy set, a redacted event and its salt, two
//! projects) copied to PostgreSQL and back to a new SQLite file. The exports
//! are byte-identical, every chain verifies on each, the keys still work on
//! a server over the copy, a rerun copies nothing, and a target holding
//! another ledger is refused.

use std::path::Path;

use serde_json::{Value, json};

use crate::helpers::*;
use crate::postgres::PgDb;

fn run(args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(bin())
        .args(args)
        .env_remove("AGENTLEDGER_DB")
        .output()
        .expect("run cli");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn ok(args: &[&str]) -> String {
    let (success, stdout, stderr) = run(args);
    assert!(success, "{args:?}: {stdout}{stderr}");
    stdout
}

/// The events of every session (not the log proof lines: each database keeps a log of its
/// own, and a copy's is built by its first server).
fn export(db: &str) -> String {
    ok(&["export", "--db", db])
        .lines()
        .filter(|l| !l.starts_with("{\"log_proof\""))
        .map(|l| format!("{l}\n"))
        .collect()
}

fn sqlite(p: &Path) -> String {
    format!("sqlite:{}", p.display())
}

#[tokio::test]
async fn copy_moves_a_ledger_to_postgresql_and_back_unchanged() {
    let Some(pg) = PgDb::new() else { return };
    let mut app = spawn_app_with(|c| c.policy.redact = "secrets,pii".parse().unwrap()).await;
    let r = app
        .client
        .put(app.url("/api/v1/policies"))
        .bearer_auth(&app.key)
        .json(&json!({ "policies": crate::policy::documented_policies() }))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    let other = app.new_key("other").await;
    for i in 0..5 {
        app.ingest(json!([memory("a", i), tool_call("b", &format!("c{i}"))]))
            .await;
    }
    let redacted = app
        .ingest(
            json!([{"session_id": "pii", "agent_id": "a", "kind": "memory",
                        "payload": {"text": "SSN 219-09-9999 on file"}}]),
        )
        .await;
    let redacted = redacted["events"][0]["id"].as_str().unwrap().to_owned();
    let r = app
        .post_with(
            "/api/v1/events",
            &json!({"events": [memory("o", 1)]}),
            &other,
        )
        .await;
    assert_eq!(r.status(), reqwest::StatusCode::CREATED);
    let verdicts = app.get_json("/api/v1/events?session_id=b&limit=1").await;
    assert!(
        verdicts["events"][0]["verdict"].is_object(),
        "events carry verdicts: {verdicts}"
    );
    app.shutdown().await;

    let first = sqlite(&app.db);
    let back = sqlite(&app.dir.path().join("back.db"));
    let out = ok(&["copy", "--from", &first, "--to", &pg.url, "--batch", "3"]);
    assert!(
        out.contains("copied 12 events (0 were already there)"),
        "{out}"
    );
    assert!(out.contains("verified"), "{out}");
    // Rerun: resumes from where every session ends, here the end.
    let out = ok(&["copy", "--from", &first, "--to", &pg.url]);
    assert!(
        out.contains("copied 0 events (12 were already there)"),
        "{out}"
    );
    ok(&["verify", "--db", &pg.url]);
    ok(&["copy", "--from", &pg.url, "--to", &back]);
    ok(&["verify", "--db", &back]);

    let original = export(&first);
    assert_eq!(original.lines().count(), 12);
    assert_eq!(export(&pg.url), original, "PostgreSQL export differs");
    assert_eq!(export(&back), original, "round-trip export differs");
    let salt = |db: &str| ok(&["salts", "show", "--db", db, "--event", &redacted]);
    assert_eq!(salt(&pg.url), salt(&first));
    assert_eq!(salt(&back), salt(&first));

    // A server on the copy: the same keys, policies, events.
    let url = pg.url.clone();
    let (key, before) = (app.key.clone(), original.clone());
    let on_pg = spawn_app_with(move |c| c.db = url).await;
    let r = on_pg
        .client
        .get(on_pg.url("/api/v1/policies"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    let policies: Value = r.json().await.unwrap();
    assert_eq!(policies["origin"], "project", "{policies}");
    let r = on_pg
        .client
        .get(on_pg.url("/api/v1/events?limit=1"))
        .bearer_auth(&other)
        .send()
        .await
        .unwrap();
    let total: Value = r.json().await.unwrap();
    assert_eq!(total["total"], 1, "{total}");
    drop(on_pg);

    // A target holding another ledger is refused, and left as it was.
    let elsewhere = app.dir.path().join("elsewhere.db");
    cli_on(&elsewhere, &["keys", "create", "--project", "default"]);
    let (success, stdout, stderr) = run(&["copy", "--from", &first, "--to", &sqlite(&elsewhere)]);
    assert!(!success, "{stdout}");
    assert!(stderr.contains("different data"), "{stderr}");
    assert_eq!(export(&sqlite(&elsewhere)), "");
    assert_eq!(export(&first), before);
    // A source that does not exist is not created.
    let (success, _, stderr) = run(&["copy", "--from", "/nonexistent/x.db", "--to", &back]);
    assert!(!success && stderr.contains("no ledger"), "{stderr}");
}

/// A copy killed half way (SIGKILL) is finished by running it again: what
/// was committed stays, the rest follows, the result is the same ledger.
#[tokio::test]
async fn a_copy_killed_half_way_is_resumed_by_running_it_again() {
    let Some(pg) = PgDb::new() else { return };
    let mut app = spawn_app().await;
    for r in 0..30 {
        let events: Vec<Value> = (0..100)
            .map(|i| memory(&format!("s{}", r % 4), i))
            .collect();
        app.ingest(Value::Array(events)).await;
    }
    app.shutdown().await;
    let from = sqlite(&app.db);
    let mut child = std::process::Command::new(bin())
        .args(["copy", "--from", &from, "--to", &pg.url, "--batch", "20"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("copy starts");
    // Kill it once some of the 3,000 events are in.
    let count = || {
        let out = std::process::Command::new("psql")
            .args([pg.url.as_str(), "-qAtc", "SELECT count(*) FROM events"])
            .output()
            .expect("psql");
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse::<u64>()
            .unwrap_or(0)
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while count() < 200 {
        assert!(
            std::time::Instant::now() < deadline,
            "copy made no progress"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    child.kill().expect("kill");
    child.wait().expect("reaped");
    // Its sessions are gone from the server (a COMMIT it sent is done, one
    // way or the other) before the count is taken.
    let others = || {
        let out = std::process::Command::new("psql")
            .args([
                pg.url.as_str(),
                "-qAtc",
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE datname = current_database() AND pid <> pg_backend_pid()",
            ])
            .output()
            .expect("psql");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    while others() != "0" {
        assert!(
            std::time::Instant::now() < deadline,
            "the killed copy's sessions linger"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let partial = count();
    assert!(partial < 3000, "the copy finished before it was killed");
    let out = ok(&["copy", "--from", &from, "--to", &pg.url, "--batch", "20"]);
    let expect = format!(
        "copied {} events ({partial} were already there)",
        3000 - partial
    );
    assert!(out.contains(&expect), "{out}");
    assert_eq!(export(&pg.url), export(&from));
}
