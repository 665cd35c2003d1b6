//! Tamper evidence: the server's verify route, the CLI, and the independent
//! Python verifier must all catch edits, deletions and reordering.

use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};

use crate::helpers::*;

async fn five_events(app: &TestApp) {
    let events: Vec<Value> = (1..=5).map(|i| memory("s", i)).collect();
    app.ingest(Value::Array(events)).await;
}

/// The verify route reports the chain broken first at `seq`.
async fn assert_broken_at(app: &TestApp, seq: u64) -> Value {
    let v = app.get_json("/api/v1/sessions/s/verify").await;
    assert_eq!(
        (v["valid"].as_bool(), v["first_invalid_seq"].as_u64()),
        (Some(false), Some(seq)),
        "{v}"
    );
    v
}

fn python_verify(file: &Path) -> (bool, String) {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../scripts/verify_export.py"
    );
    let out = Command::new("python3")
        .arg(script)
        .arg(file)
        .output()
        .expect("python3 runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[tokio::test]
async fn intact_chain_verifies_everywhere() {
    let app = spawn_app().await;
    five_events(&app).await;
    app.ingest(
        json!([{"session_id": "s", "agent_id": "a", "kind": "custom",
        "payload": {"type": "t", "data": {"text": "naïve \"quotes\" \\ \n\t\u{1} 漢字 🙂"}},
        "metadata": {"k": "ü"}, "timestamp": "2026-02-08T10:00:00.123456Z"}]),
    )
    .await;
    let v = app.get_json("/api/v1/sessions/s/verify").await;
    assert_eq!(
        (v["valid"].as_bool(), v["events"].as_u64()),
        (Some(true), Some(6)),
        "{v}"
    );
    assert_eq!(
        v["head_hash"],
        app.get_json("/api/v1/sessions/s").await["head_hash"]
    );

    let export = app
        .get("/api/v1/sessions/s/export")
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(export.lines().count(), 6);
    let file = app.dir.path().join("export.jsonl");
    std::fs::write(&file, &export).unwrap();
    let (ok, out) = python_verify(&file);
    assert!(ok, "python verifier: {out}");
    let out = app.cli(&["verify", "--file", file.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = app.cli(&["verify"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[tokio::test]
async fn edited_payload_fails_at_its_seq() {
    let app = spawn_app().await;
    five_events(&app).await;
    tamper(
        &app.db,
        r#"UPDATE events SET payload = '{"n":99}' WHERE seq = 3"#,
    );
    assert_broken_at(&app, 3).await;
    let out = app.cli(&["verify", "--session", "s"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("seq 3"));

    // The tampered export fails the independent verifier at the same seq.
    let file = app.dir.path().join("t.jsonl");
    std::fs::write(
        &file,
        app.get("/api/v1/sessions/s/export")
            .await
            .text()
            .await
            .unwrap(),
    )
    .unwrap();
    let (ok, out) = python_verify(&file);
    assert!(!ok);
    assert!(out.contains("seq 3"), "{out}");
}

#[tokio::test]
async fn deleted_middle_event_fails_at_the_missing_seq() {
    let app = spawn_app().await;
    five_events(&app).await;
    tamper(&app.db, "DELETE FROM events WHERE seq = 2");
    assert_broken_at(&app, 2).await;
    let out = app.cli(&["verify"]);
    assert_eq!(out.status.code(), Some(1));
}

#[tokio::test]
async fn deleted_last_event_is_caught_by_the_session_head() {
    let app = spawn_app().await;
    five_events(&app).await;
    tamper(&app.db, "DELETE FROM events WHERE seq = 5");
    assert_broken_at(&app, 5).await;
}

#[tokio::test]
async fn a_recomputed_hash_still_breaks_the_next_link() {
    let app = spawn_app().await;
    five_events(&app).await;
    // The attacker edits event 4 and recomputes its hash with the public spec:
    // event 4 then checks out on its own, but event 5's prev_hash no longer matches.
    let export = app
        .get("/api/v1/sessions/s/export")
        .await
        .text()
        .await
        .unwrap();
    let line = export.lines().nth(3).unwrap();
    let mut ev = serde_json::from_str::<agentledger_core::ExportLine>(line)
        .unwrap()
        .into_event()
        .unwrap();
    ev.agent_id = "mallory".into();
    let forged = hex::encode(ev.compute_hash());
    tamper(
        &app.db,
        &format!("UPDATE events SET agent_id = 'mallory', hash = x'{forged}' WHERE seq = 4"),
    );
    let v = assert_broken_at(&app, 5).await;
    assert!(v["reason"].as_str().unwrap().contains("prev_hash"), "{v}");
}

#[tokio::test]
async fn reordered_export_fails_both_offline_verifiers() {
    let app = spawn_app().await;
    five_events(&app).await;
    let export = app
        .get("/api/v1/sessions/s/export")
        .await
        .text()
        .await
        .unwrap();
    let mut lines: Vec<&str> = export.lines().collect();
    lines.swap(1, 2);
    let file = app.dir.path().join("r.jsonl");
    std::fs::write(&file, lines.join("\n")).unwrap();
    let (ok, out) = python_verify(&file);
    assert!(!ok && out.contains("seq 2"), "{out}");
    let out = app.cli(&["verify", "--file", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("seq 2"));
}

/// Each tampering, done in SQL behind the server's back, is caught by the CLI
/// (`agentledger verify`, exit 1) at the seq where the chain first breaks.
#[tokio::test]
async fn the_cli_names_the_seq_of_every_kind_of_tampering() {
    let cases: &[(&str, &str, &str, &str)] = &[
        (
            "edited payload",
            r#"UPDATE events SET payload = '{"n":42}' WHERE seq = 3 AND session_ref = (SELECT rowid FROM sessions WHERE id = 's')"#,
            "s",
            "seq 3",
        ),
        (
            "edited verdict",
            r#"UPDATE events SET verdict = replace(verdict, '"allow"', '"deny"') WHERE seq = 4 AND session_ref = (SELECT rowid FROM sessions WHERE id = 's')"#,
            "s",
            "seq 4",
        ),
        (
            "deleted event",
            "DELETE FROM events WHERE seq = 2 AND session_ref = (SELECT rowid FROM sessions WHERE id = 's')",
            "s",
            "seq 2",
        ),
        (
            // Three statements: the (session, seq) index is unique.
            "reordered events",
            "UPDATE events SET seq = 100 WHERE seq = 2 AND session_ref = (SELECT rowid FROM sessions WHERE id = 's'); \
             UPDATE events SET seq = 2 WHERE seq = 3 AND session_ref = (SELECT rowid FROM sessions WHERE id = 's'); \
             UPDATE events SET seq = 3 WHERE seq = 100 AND session_ref = (SELECT rowid FROM sessions WHERE id = 's')",
            "s",
            "seq 2",
        ),
        (
            "event moved to another session",
            "UPDATE events SET session_ref = (SELECT rowid FROM sessions WHERE id = 't'), seq = 6 \
             WHERE seq = 5 AND session_ref = (SELECT rowid FROM sessions WHERE id = 's')",
            "t",
            "seq 6",
        ),
    ];
    for (what, sql, session, expect) in cases {
        let app = spawn_app().await;
        let events: Vec<Value> = (1..=5)
            .flat_map(|i| [memory("s", i), memory("t", i)])
            .collect();
        app.ingest(Value::Array(events)).await;
        let before = app.cli(&["verify"]);
        assert_eq!(before.status.code(), Some(0), "{what}: intact first");
        for statement in sql.split("; ") {
            tamper(&app.db, statement);
        }
        let out = app.cli(&["verify", "--session", session]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(1), "{what}: {stdout}");
        assert!(
            stdout.contains(expect),
            "{what}: expected {expect} in {stdout}"
        );
        assert_eq!(
            app.cli(&["verify"]).status.code(),
            Some(1),
            "{what}: whole ledger"
        );
    }
}
