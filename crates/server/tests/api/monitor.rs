//! `agentledger log monitor` against a real server (issue 17): it follows a growing log,
//! refuses a rolled-back, forked or wrongly signed one, and catches a session rewritten in the
//! database. The monitor runs as the real binary, talking HTTP to the test server.

use std::path::{Path, PathBuf};

use serde_json::Value;

use agentledger_tlog::Checkpoint;
use agentledger_tlog::cosignature::CosignatureSigner;
use agentledger_tlog::note::{Ed25519Signer, Ed25519Verifier, Note};

use crate::helpers::*;
use crate::log::{batch, checkpoint_of_size, vkey};

/// One round of the monitor: (exit status, stdout).
async fn monitor(
    app: &TestApp,
    key: &str,
    log_key: &str,
    state: &Path,
    extra: &[&str],
) -> (i32, String) {
    let mut args: Vec<String> = [
        "log",
        "monitor",
        "--once",
        "--url",
        &app.base,
        "--key",
        key,
        "--log-key",
        log_key,
        "--state",
        state.to_str().expect("utf8 path"),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    let db = app.db.clone();
    // The server runs on this test's runtime: wait for the process off it.
    let out = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        cli_on(&db, &args)
    })
    .await
    .expect("monitor ran");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!("monitor: {text}{}", String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

fn state_file(app: &TestApp) -> PathBuf {
    app.dir.path().join("monitor.db")
}

fn trusted_size(state: &Path) -> u64 {
    let conn = rusqlite::Connection::open(state).expect("state");
    conn.query_row("SELECT size FROM trusted", [], |r| r.get::<_, i64>(0))
        .expect("a trusted checkpoint") as u64
}

async fn ingest(app: &TestApp, events: Value) {
    app.ingest(events).await;
}

#[tokio::test]
async fn the_monitor_follows_a_growing_log_across_rounds() {
    let app = spawn_app().await;
    let verifier = vkey(&app, "default");
    let vk = verifier.to_vkey();
    let state = state_file(&app);

    // Before the first checkpoint there is nothing to judge yet.
    let (code, text) = monitor(&app, &app.key, &vk, &state, &[]).await;
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("no checkpoint published yet"), "{text}");

    ingest(&app, batch("g", 0, 5)).await;
    checkpoint_of_size(&app, &app.key, 5, &verifier).await;
    let (code, text) = monitor(&app, &app.key, &vk, &state, &[]).await;
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("OK agentledger.test/default: size 5, root ")
            && text.contains("3 sessions match the log"),
        "{text}"
    );
    assert_eq!(trusted_size(&state), 5);

    // Across an entry bundle's edge (256 leaves) and a second level tile.
    for k in 0..3 {
        ingest(&app, batch("g", 5 + 100 * k, 100)).await;
    }
    checkpoint_of_size(&app, &app.key, 305, &verifier).await;
    let (code, text) = monitor(&app, &app.key, &vk, &state, &[]).await;
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("size 305"), "{text}");
    assert_eq!(trusted_size(&state), 305);

    // Nothing new: the same checkpoint again.
    let (code, text) = monitor(&app, &app.key, &vk, &state, &[]).await;
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("size 305") && text.contains("(unchanged)"),
        "{text}"
    );

    // Events past the checkpoint: their sessions are checked at the logged seq (export).
    ingest(&app, batch("g", 305, 6)).await;
    let (code, text) = monitor(&app, &app.key, &vk, &state, &[]).await;
    assert_eq!(code, 0, "{text}");
    checkpoint_of_size(&app, &app.key, 311, &verifier).await;
    let (code, text) = monitor(&app, &app.key, &vk, &state, &[]).await;
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("size 311"), "{text}");

    // An entry served that is not the one the signed tree holds: refused, state unchanged.
    ingest(&app, batch("g", 311, 3)).await;
    checkpoint_of_size(&app, &app.key, 314, &verifier).await;
    let conn = rusqlite::Connection::open(&app.db).expect("db");
    let mut entry: Vec<u8> = conn
        .query_row("SELECT entry FROM tlog_leaves WHERE idx = 312", [], |r| {
            r.get(0)
        })
        .expect("leaf 312");
    if let Some(last) = entry.last_mut() {
        *last ^= 1;
    }
    conn.execute("UPDATE tlog_leaves SET entry = ?1 WHERE idx = 312", [entry])
        .expect("tamper");
    drop(conn);
    let (code, text) = monitor(&app, &app.key, &vk, &state, &[]).await;
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("FAIL entries: the entries of leaves 311..314 hash to root "),
        "{text}"
    );
    assert_eq!(trusted_size(&state), 311);
}

/// A smaller checkpoint (rollback), another root for the trusted size (fork) and a larger
/// tree that does not extend the trusted one are refused, and the state stays as it was.
#[tokio::test]
async fn the_monitor_refuses_a_rolled_back_or_forked_log() {
    let app = spawn_app().await;
    let verifier = vkey(&app, "default");
    let vk = verifier.to_vkey();
    let state = state_file(&app);
    ingest(&app, batch("f", 0, 3)).await;
    checkpoint_of_size(&app, &app.key, 3, &verifier).await;
    ingest(&app, batch("f", 3, 2)).await;
    checkpoint_of_size(&app, &app.key, 5, &verifier).await;
    let (code, text) = monitor(&app, &app.key, &vk, &state, &[]).await;
    assert_eq!(code, 0, "{text}");

    // A second server at the same origin with the same log key but other events: first a
    // smaller tree (rollback), then one of the trusted size (fork).
    let key_file = app.db.with_file_name("log.key");
    let fork_dir = tempfile::tempdir().expect("dir");
    let fork_key = fork_dir.path().join("log.key");
    std::fs::copy(&key_file, &fork_key).expect("copy key");
    let fork = spawn_app_with(move |cfg| cfg.log.key = fork_key).await;
    ingest(&fork, batch("x", 0, 3)).await;
    checkpoint_of_size(&fork, &fork.key, 3, &verifier).await;
    let (code, text) = monitor(&fork, &fork.key, &vk, &state, &[]).await;
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("FAIL rollback: checkpoint size 3 is smaller than the trusted size 5"),
        "{text}"
    );
    assert_eq!(trusted_size(&state), 5);
    ingest(&fork, batch("x", 3, 2)).await;
    checkpoint_of_size(&fork, &fork.key, 5, &verifier).await;
    let (code, text) = monitor(&fork, &fork.key, &vk, &state, &[]).await;
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("FAIL fork: checkpoint of size 5 has root "),
        "{text}"
    );
    // ... and when it grows, its tree does not contain the trusted one.
    ingest(&fork, batch("x", 5, 3)).await;
    checkpoint_of_size(&fork, &fork.key, 8, &verifier).await;
    let (code, text) = monitor(&fork, &fork.key, &vk, &state, &[]).await;
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains(
            "FAIL inconsistent: checkpoint of size 8 is not consistent with the trusted size 5"
        ),
        "{text}"
    );
    assert_eq!(trusted_size(&state), 5);
}

/// The gap the log closes, seen from outside: a session rewritten and re-chained in the
/// database verifies on its own, but the monitor's copy of the log names it; a session
/// renamed away is named as vanished.
#[tokio::test]
async fn the_monitor_catches_a_session_rewritten_in_the_database() {
    let app = spawn_app().await;
    let verifier = vkey(&app, "default");
    let vk = verifier.to_vkey();
    let state = state_file(&app);
    ingest(&app, Value::Array((0..5).map(|i| memory("r", i)).collect())).await;
    ingest(&app, Value::Array(vec![memory("q", 0)])).await;
    checkpoint_of_size(&app, &app.key, 6, &verifier).await;
    let (code, text) = monitor(&app, &app.key, &vk, &state, &[]).await;
    assert_eq!(code, 0, "{text}");

    let export = String::from_utf8(crate::log::get_bytes(&app, "/api/v1/sessions/r/export").await)
        .expect("utf8");
    let line = export.lines().nth(4).expect("seq 5");
    let mut ev = serde_json::from_str::<agentledger_core::ExportLine>(line)
        .expect("export line")
        .into_event()
        .expect("event");
    let logged = hex::encode(ev.hash);
    ev.agent_id = "mallory".into();
    let forged = hex::encode(ev.compute_hash());
    tamper(
        &app.db,
        &format!(
            "UPDATE events SET agent_id = 'mallory', hash = x'{forged}' \
             WHERE seq = 5 AND session_ref = (SELECT rowid FROM sessions WHERE id = 'r')"
        ),
    );
    tamper(
        &app.db,
        &format!("UPDATE sessions SET head_hash = x'{forged}' WHERE id = 'r'"),
    );
    let v = app.get_json("/api/v1/sessions/r/verify").await;
    assert_eq!(v["valid"], true, "the chain alone cannot tell: {v}");
    tamper(
        &app.db,
        "UPDATE sessions SET id = 'q-renamed' WHERE id = 'q'",
    );

    let (code, text) = monitor(&app, &app.key, &vk, &state, &[]).await;
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains(&format!(
            "FAIL session r: seq 5 has hash {forged} in the API, {logged} in the log"
        )),
        "{text}"
    );
    assert!(
        text.contains("FAIL session q: vanished from the API; the log holds seq 1"),
        "{text}"
    );
    assert!(!text.contains("OK "), "{text}");
}

/// Checkpoints not signed by the given log key are refused: another project's log (another
/// origin), and a key of the right name that is not the log's.
#[tokio::test]
async fn the_monitor_refuses_a_wrong_log_key() {
    let app = spawn_app().await;
    let verifier = vkey(&app, "default");
    ingest(&app, batch("w", 0, 2)).await;
    checkpoint_of_size(&app, &app.key, 2, &verifier).await;

    let other_project = vkey(&app, "other").to_vkey();
    let (code, text) = monitor(&app, &app.key, &other_project, &state_file(&app), &[]).await;
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("FAIL checkpoint: not signed by the log key agentledger.test/other"),
        "{text}"
    );

    let impostor = Ed25519Signer::from_seed("agentledger.test/default", [9; 32])
        .expect("key")
        .verifier()
        .to_vkey();
    let state = app.dir.path().join("monitor-2.db");
    let (code, text) = monitor(&app, &app.key, &impostor, &state, &[]).await;
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("FAIL checkpoint: not signed by the log key agentledger.test/default"),
        "{text}"
    );
    // The real key is then accepted from a fresh state.
    let (code, text) = monitor(&app, &app.key, &verifier.to_vkey(), &state, &[]).await;
    assert_eq!(code, 0, "{text}");
}

/// `--witness-policy`: the checkpoint must meet the policy's quorum. The server does not
/// serve cosigned checkpoints yet, so the cosignature is added to the stored note here, by a
/// witness key of the test's own.
#[tokio::test]
async fn the_monitor_checks_the_witness_quorum() {
    let app = spawn_app().await;
    let verifier: Ed25519Verifier = vkey(&app, "default");
    let vk = verifier.to_vkey();
    let state = state_file(&app);
    ingest(&app, batch("p", 0, 4)).await;
    let (note, cp): (Vec<u8>, Checkpoint) = checkpoint_of_size(&app, &app.key, 4, &verifier).await;
    let witness = CosignatureSigner::from_seed("witness.example", [5; 32]).expect("witness");
    let policy = app.dir.path().join("policy.txt");
    std::fs::write(
        &policy,
        format!(
            "log {vk}\nwitness w1 {}\nquorum w1\n",
            witness.verifier().to_vkey()
        ),
    )
    .expect("policy");
    let with_policy = ["--witness-policy", policy.to_str().expect("utf8")];

    let (code, text) = monitor(&app, &app.key, &vk, &state, &with_policy).await;
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("FAIL witness policy: checkpoint of size 4:") && text.contains("quorum"),
        "{text}"
    );

    let mut cosigned = Note::parse(&note).expect("note");
    assert_eq!(cosigned.text, cp.to_text());
    let text = cosigned.text.clone();
    cosigned.add_signature(witness.cosign(&text, 1_700_000_000).expect("cosign"));
    let conn = rusqlite::Connection::open(&app.db).expect("db");
    conn.execute(
        "UPDATE tlog_checkpoints SET note = ?1 WHERE size = 4",
        [cosigned.to_bytes()],
    )
    .expect("cosigned note stored");
    drop(conn);
    let (code, text) = monitor(&app, &app.key, &vk, &state, &with_policy).await;
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("OK agentledger.test/default: size 4"),
        "{text}"
    );
}
