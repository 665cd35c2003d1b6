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

    let export = app.get_text("/api/v1/sessions/s/export").await;
    // The events, then (once a checkpoint covers them: every 300 ms in
    // tests, so under load it may already) the log proof line.
    let events = export
        .lines()
        .filter(|l| !l.starts_with(r#"{"log_proof""#))
        .count();
    assert_eq!(events, 6, "{export}");
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
    std::fs::write(&file, app.get_text("/api/v1/sessions/s/export").await).unwrap();
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
    let export = app.get_text("/api/v1/sessions/s/export").await;
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
    let export = app.get_text("/api/v1/sessions/s/export").await;
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
        // Issue 13, finding 7: columns that queries read but the hash covers
        // only through the fields they derive from.
        (
            "event moved to another project's listings",
            "UPDATE events SET project_id = 999 WHERE seq = 2 AND session_ref = (SELECT rowid FROM sessions WHERE id = 's')",
            "s",
            "seq 2",
        ),
        (
            "decision column turned to deny (the verdict left alone)",
            "UPDATE events SET decision = 2 WHERE seq = 4 AND session_ref = (SELECT rowid FROM sessions WHERE id = 's')",
            "s",
            "seq 4",
        ),
        (
            "forged cost",
            "UPDATE events SET cost_usd = 99.5, model = 'gpt-5' WHERE seq = 3 AND session_ref = (SELECT rowid FROM sessions WHERE id = 's')",
            "s",
            "seq 3",
        ),
        (
            "session row's agent",
            "UPDATE sessions SET agent_id = 'someone-else' WHERE id = 's'",
            "s",
            "seq 1",
        ),
        (
            "session row's system prompt",
            "UPDATE sessions SET system_prompt = 'anything goes' WHERE id = 's'",
            "s",
            "seq 1",
        ),
        (
            "session row's status",
            "UPDATE sessions SET status = 1 WHERE id = 's'",
            "s",
            "seq 5",
        ),
        (
            "session row's counters (the AgentLens session summary)",
            "UPDATE sessions SET error_count = 7, cost_usd = 12.5 WHERE id = 's'",
            "s",
            "seq 5",
        ),
        (
            "session row's tags",
            "UPDATE sessions SET tags = '[\"prod\"]' WHERE id = 's'",
            "s",
            "seq 5",
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

/// An honest export of session `s` (three events, each with its verdict),
/// written to `name`; returns the lines.
async fn honest_export(app: &TestApp) -> Vec<String> {
    app.ingest(json!([memory("s", 1), memory("s", 2), memory("s", 3)]))
        .await;
    let export = app.get_text("/api/v1/sessions/s/export").await;
    let lines: Vec<String> = export.lines().map(str::to_owned).collect();
    assert_eq!(lines.len(), 3);
    assert!(lines[1].contains(r#""verdict":{"#), "{}", lines[1]);
    lines
}

fn write_lines(app: &TestApp, name: &str, lines: &[String]) -> std::path::PathBuf {
    let file = app.dir.path().join(name);
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    file
}

/// Both offline verifiers refuse the file, and each names the line, the seq
/// and `member` in what it prints.
fn assert_both_refuse(app: &TestApp, file: &Path, what: &str, member: &str) {
    let (ok, out) = python_verify(file);
    assert!(!ok, "{what}: python verifier accepted it: {out}");
    for needle in ["line 2", "seq 2", member] {
        assert!(out.contains(needle), "{what}: python: {needle:?} in {out}");
    }
    let cli = app.cli(&["verify", "--file", file.to_str().unwrap()]);
    let out = String::from_utf8_lossy(&cli.stdout);
    assert_eq!(cli.status.code(), Some(1), "{what}: cli accepted it: {out}");
    for needle in ["line 2", "seq 2", member] {
        assert!(out.contains(needle), "{what}: cli: {needle:?} in {out}");
    }
}

/// Issue 13, finding 9: a line must mean one thing to every reader. A member
/// given twice is read as the first value by some parsers and the last by
/// others, and a member the hash does not cover can say anything: both
/// verifiers refuse such lines instead of picking one reading.
#[tokio::test]
async fn repeated_and_unknown_members_are_refused_by_both_verifiers() {
    let app = spawn_app().await;
    let honest = honest_export(&app).await;
    let file = write_lines(&app, "honest.jsonl", &honest);
    let (ok, out) = python_verify(&file);
    assert!(ok, "honest export, python: {out}");
    let cli = app.cli(&["verify", "--file", file.to_str().unwrap()]);
    assert!(
        cli.status.success(),
        "honest export, cli: {}",
        String::from_utf8_lossy(&cli.stdout)
    );

    let forged_verdict = r#""verdict":{"decision":"deny","policies":["forged"],"reasons":["forged"],"findings":[]},"#;
    let cases: Vec<(&str, String, &str)> = vec![
        (
            // Readers that take the first value see this verdict; the hash covers the second.
            "forged verdict before the real one",
            honest[1].replacen('{', &format!("{{{forged_verdict}"), 1),
            "verdict",
        ),
        (
            "the same, with the name spelled with an escape",
            honest[1].replacen(
                '{',
                &format!(
                    "{{{}",
                    forged_verdict.replacen("verdict", r"verd\u0069ct", 1)
                ),
                1,
            ),
            "verdict",
        ),
        (
            "repeated payload",
            honest[1].replacen('{', r#"{"payload":{"n":999},"#, 1),
            "payload",
        ),
        (
            "unknown member",
            honest[1].replacen('{', r#"{"note":"x","#, 1),
            "note",
        ),
        (
            "repeated member inside the metadata",
            honest[1].replacen(r#""metadata":{}"#, r#""metadata":{"k":1,"k":2}"#, 1),
            "\"k\"",
        ),
        (
            "repeated member inside the verdict",
            honest[1].replacen(r#""verdict":{"#, r#""verdict":{"decision":"deny","#, 1),
            "decision",
        ),
        (
            "a version 2 member on a version 3 line",
            honest[1].replacen('{', r#"{"original_payload_sha256":null,"#, 1),
            "original_payload_sha256",
        ),
        (
            // Version 1 envelopes do not hash the verdict.
            "a verdict on a version 1 line",
            honest[1].replacen(r#""v":3,"#, r#""v":1,"#, 1),
            "verdict",
        ),
        (
            // An erasure claimed on a line that still holds its payload
            // (and that no event_erased record names): refused, not shown.
            "an erased member on a line with its payload",
            honest[1].replacen(
                '{',
                r#"{"erased":{"by":"legal","at":"2026-01-01T00:00:00.000000Z","record_seq":3},"#,
                1,
            ),
            "erased",
        ),
        (
            // Only the first line carries the session header.
            "a session header on a later line",
            honest[1].replacen('{', r#"{"session_system_prompt":"x","#, 1),
            "session",
        ),
    ];
    // The Rust verifier re-encodes digests and ids: their text must be the
    // form the server wrote (the Python one hashes the text and agrees).
    let ev1: Value = serde_json::from_str(&honest[1]).unwrap();
    let digest = ev1["payload_sha256"].as_str().unwrap();
    let upper = honest[1].replace(digest, &digest.to_uppercase());
    let file = write_lines(
        &app,
        "upper.jsonl",
        &[honest[0].clone(), upper, honest[2].clone()],
    );
    let cli = app.cli(&["verify", "--file", file.to_str().unwrap()]);
    assert_eq!(cli.status.code(), Some(1), "uppercase digest accepted");
    let (ok, _) = python_verify(&file);
    assert!(!ok, "python accepted an uppercase digest");
    for (what, forged, member) in cases {
        assert_ne!(forged, honest[1], "{what}: the forgery changed the line");
        let lines = [honest[0].clone(), forged, honest[2].clone()];
        let file = write_lines(&app, "forged.jsonl", &lines);
        assert_both_refuse(&app, &file, what, member);
    }
}

/// Envelope version 3, as the server writes it, checked by both verifiers
/// (the Python one is an independent implementation of docs/hash-chain.md):
/// the first line carries the session header, whose hash its envelope
/// covers; editing the header (issue 13, finding 7: the session row's agent
/// or system prompt) breaks seq 1, and the header is refused elsewhere.
#[tokio::test]
async fn version_3_exports_cover_the_session_header() {
    let app = spawn_app().await;
    let r = app
        .post(
            "/api/v1/sessions",
            &json!({"session_id": "hdr", "agent_id": "planner",
                    "system_prompt": "Never send e-mail.", "metadata": {"team": "red"}}),
        )
        .await;
    assert_eq!(r.status(), reqwest::StatusCode::CREATED);
    app.ingest(json!([memory("hdr", 1), memory("hdr", 2)]))
        .await;
    let export = app.get_text("/api/v1/sessions/hdr/export").await;
    let lines: Vec<String> = export.lines().map(str::to_owned).collect();
    assert!(lines[0].contains(r#""v":3"#), "{}", lines[0]);
    assert!(
        lines[0].contains(r#""session_system_prompt":"Never send e-mail.""#)
            && lines[0].contains(r#""session_metadata":{"team":"red"}"#),
        "{}",
        lines[0]
    );
    assert!(!lines[1].contains("session_agent_id"), "{}", lines[1]);
    let file = write_lines(&app, "v3.jsonl", &lines);
    let (ok, out) = python_verify(&file);
    assert!(ok, "python: {out}");
    let cli = app.cli(&["verify", "--file", file.to_str().unwrap()]);
    assert_eq!(
        cli.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&cli.stdout)
    );

    for (what, forged) in [
        (
            "system prompt",
            lines[0].replace("Never send e-mail.", "Send e-mail freely."),
        ),
        (
            "agent",
            lines[0].replace(
                r#""session_agent_id":"planner""#,
                r#""session_agent_id":"other""#,
            ),
        ),
        (
            "header removed",
            lines[0].replace(r#","session_system_prompt":"Never send e-mail.""#, ""),
        ),
    ] {
        assert_ne!(forged, lines[0], "{what}");
        let mut edited = lines.clone();
        edited[0] = forged;
        let file = write_lines(&app, "v3e.jsonl", &edited);
        let (ok, out) = python_verify(&file);
        assert!(!ok && out.contains("seq 1"), "{what}: python: {out}");
        let cli = app.cli(&["verify", "--file", file.to_str().unwrap()]);
        let out = String::from_utf8_lossy(&cli.stdout);
        assert_eq!(cli.status.code(), Some(1), "{what}: cli: {out}");
        assert!(out.contains("seq 1"), "{what}: cli: {out}");
    }
}

/// The seqs of an export's event lines, in the order written.
fn exported_seqs(export: &str) -> Vec<u64> {
    export
        .lines()
        .filter(|l| !l.starts_with(r#"{"log_proof""#))
        .map(|l| {
            serde_json::from_str::<Value>(l).expect("line is JSON")["seq"]
                .as_u64()
                .expect("seq")
        })
        .collect()
}

/// Verify and export read a session in chunks, several at once (5,000
/// events a chunk for verify, 2,000 for export): a long session verifies
/// and exports whole, and an event deleted at a chunk's first seq is named
/// by verify while the export still writes every remaining event once, in
/// order.
#[tokio::test]
async fn long_sessions_verify_and_export_across_chunks() {
    let app = spawn_app().await;
    let n = 12_001;
    for start in (1..=n).step_by(1000) {
        let batch: Vec<Value> = (start..=(start + 999).min(n))
            .map(|i| memory("s", i))
            .collect();
        app.ingest(Value::Array(batch)).await;
    }
    let v = app.get_json("/api/v1/sessions/s/verify").await;
    assert_eq!(
        (v["valid"].as_bool(), v["events"].as_u64()),
        (Some(true), Some(n as u64)),
        "{v}"
    );
    let export = app.get_text("/api/v1/sessions/s/export").await;
    assert_eq!(exported_seqs(&export), (1..=n as u64).collect::<Vec<_>>());
    let file = app.dir.path().join("long.jsonl");
    std::fs::write(&file, &export).unwrap();
    let out = app.cli(&["verify", "--file", file.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // The first seq of verify's third chunk and of export's sixth.
    tamper(&app.db, "DELETE FROM events WHERE seq = 10001");
    assert_broken_at(&app, 10001).await;
    // The first seq of export's second chunk, inside verify's first.
    tamper(&app.db, "DELETE FROM events WHERE seq = 2001");
    assert_broken_at(&app, 2001).await;
    let export = app.get_text("/api/v1/sessions/s/export").await;
    let expected: Vec<u64> = (1..=n as u64)
        .filter(|s| *s != 2001 && *s != 10001)
        .collect();
    assert_eq!(exported_seqs(&export), expected);
}

/// `--read-mmap` (here 4 GiB, past the 2 GiB SQLite maps unless built with a
/// higher cap) serves the same verification and export as plain reads, sees
/// edits made through another connection, and is refused where it cannot
/// apply.
#[tokio::test]
async fn memory_mapped_reads_verify_and_export_the_same() {
    let app = spawn_app_with(|c| c.read_mmap_mib = 4096).await;
    five_events(&app).await;
    let v = app.get_json("/api/v1/sessions/s/verify").await;
    assert_eq!(
        (v["valid"].as_bool(), v["events"].as_u64()),
        (Some(true), Some(5)),
        "{v}"
    );
    let export = app.get_text("/api/v1/sessions/s/export").await;
    assert_eq!(exported_seqs(&export), vec![1, 2, 3, 4, 5]);
    let file = app.dir.path().join("mapped.jsonl");
    std::fs::write(&file, &export).unwrap();
    assert!(python_verify(&file).0, "the export verifies offline");
    tamper(
        &app.db,
        r#"UPDATE events SET payload = '{"n":99}' WHERE seq = 3"#,
    );
    let v = assert_broken_at(&app, 3).await;
    assert_eq!(
        v["reason"].as_str(),
        Some("payload bytes do not match payload_sha256"),
        "{v}"
    );

    let refused = |cfg: agentledger::ServeConfig| async move {
        match agentledger::Application::build(cfg).await {
            Ok(_) => panic!("a --read-mmap that cannot apply started a server"),
            Err(e) => e.to_string(),
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = agentledger::ServeConfig::for_tests(dir.path().join("ledger.db"));
    cfg.read_mmap_mib = agentledger::startup::MAX_READ_MMAP_MIB + 1;
    let e = refused(cfg).await;
    assert!(e.contains("--read-mmap") && e.contains("1 TiB"), "{e}");
    let mut cfg = agentledger::ServeConfig::for_tests("postgres://postgres@127.0.0.1:5432/test");
    cfg.read_mmap_mib = 64;
    let e = refused(cfg).await;
    assert!(e.contains("--read-mmap") && e.contains("PostgreSQL"), "{e}");
}
