//! Storage faults: a failed write, a failed COMMIT (a failed fsync) and a
//! full disk each answer 5xx and never 2xx, move no chain head, store
//! nothing, and the server takes appends again once the fault clears.

use std::sync::Arc;

use reqwest::StatusCode;
use serde_json::{Value, json};

use agentledger_store::sqlite::Faults;

use crate::helpers::*;

/// (event_count, last event's hash) of a session.
async fn head(app: &TestApp, session: &str) -> (u64, Value) {
    let s = app.get_json(&format!("/api/v1/sessions/{session}")).await;
    let page = app
        .get_json(&format!(
            "/api/v1/events?session_id={session}&order=desc&limit=1"
        ))
        .await;
    (
        s["event_count"].as_u64().expect("count"),
        page["events"][0]["hash"].clone(),
    )
}

async fn assert_valid(app: &TestApp, session: &str) {
    let v = app
        .get_json(&format!("/api/v1/sessions/{session}/verify"))
        .await;
    assert_eq!(v["valid"], true, "{v}");
}

#[tokio::test]
async fn a_failed_commit_answers_5xx_on_every_edge_and_moves_no_head() {
    let faults = Arc::new(Faults::default());
    let f = faults.clone();
    let app = spawn_app_with(move |c| c.faults = Some(f)).await;
    app.ingest(json!([memory("s", 1), memory("s", 2), memory("s", 3)]))
        .await;
    let before = head(&app, "s").await;

    faults.fail_next_commits(3);
    let r = app.post_events(json!([memory("s", 4)])).await;
    assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "INTERNAL", "{body}");
    assert!(
        !body.to_string().contains("fsync"),
        "the cause is logged, not sent: {body}"
    );
    let r = app
        .post(
            "/api/events",
            &json!({"events": [{"sessionId": "s", "agentId": "my-agent", "eventType": "custom",
                "payload": {"type": "note", "data": {}}}]}),
        )
        .await;
    assert!(r.status().is_server_error(), "AgentLens: {}", r.status());
    let r = app
        .post(
            "/v1/sessions/s/events",
            &fixture_json("realm", "tool_call.json"),
        )
        .await;
    assert!(r.status().is_server_error(), "Realm: {}", r.status());
    assert_eq!(head(&app, "s").await, before, "the head did not move");

    // The fault has cleared: the next append continues from the stored head.
    let ack = app.ingest(json!([memory("s", 5)])).await;
    assert_eq!(ack["events"][0]["seq"], 4);
    let id = ack["events"][0]["id"].as_str().unwrap();
    let ev = app.get_json(&format!("/api/v1/events/{id}")).await;
    assert_eq!(ev["prev_hash"], before.1);
    assert_eq!(app.event_total().await, 4);
    assert_valid(&app, "s").await;
}

#[tokio::test]
async fn a_failed_write_stores_nothing_of_its_batch_and_the_batch_can_be_retried() {
    let faults = Arc::new(Faults::default());
    let f = faults.clone();
    let app = spawn_app_with(move |c| c.faults = Some(f)).await;
    app.ingest(json!([memory("a", 0)])).await;
    let before = head(&app, "a").await;
    // Fail on the third event of a five-event batch across two sessions.
    let batch = json!([
        memory("a", 1),
        memory("b", 1),
        memory("a", 2),
        memory("b", 2),
        memory("a", 3)
    ]);
    faults.fail_next_writes(0);
    let r = app.post_events(batch.clone()).await;
    assert_eq!(r.status(), StatusCode::CREATED, "no fault armed");
    faults.fail_next_writes(1);
    let r = app.post_events(batch.clone()).await;
    assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let mid = head(&app, "a").await;
    assert_eq!(mid.0, before.0 + 3, "only the unfaulted batch is stored");
    assert_eq!(app.event_total().await, 6);
    let ack = app.ingest(batch).await;
    assert_eq!(ack["events"][0]["seq"], 5);
    assert_eq!(app.event_total().await, 11);
    assert_valid(&app, "a").await;
    assert_valid(&app, "b").await;
}

/// A real full disk: the ledger on a 4 MiB tmpfs, filled with large events;
/// then the filesystem grows and appends continue. Needs root (mount); run by
/// .ci/run with `--ignored`.
#[tokio::test]
#[ignore = "needs root to mount a small tmpfs; .ci/run runs it"]
async fn disk_full_answers_507_moves_no_head_and_recovers_when_space_returns() {
    let mnt = tempfile::tempdir().unwrap();
    let mount = |opts: &str| {
        let mut cmd = std::process::Command::new("mount");
        if opts.contains("remount") {
            cmd.args(["-o", opts]);
        } else {
            cmd.args(["-t", "tmpfs", "-o", opts, "tmpfs"]);
        }
        let st = cmd.arg(mnt.path()).status().expect("mount");
        assert!(st.success(), "mount {opts}");
    };
    mount("size=4m");
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .args(["-l"])
                .arg(&self.0)
                .status();
        }
    }
    let _guard = Unmount(mnt.path().to_owned());
    let db = mnt.path().join("ledger.db");
    let d = db.clone();
    let mut app = spawn_app_with(move |c| c.db = d.display().to_string()).await;

    let big = "x".repeat(200_000);
    let event = |i: usize| {
        json!({"session_id": "full", "agent_id": "a", "kind": "memory",
            "payload": {"n": i, "blob": big}})
    };
    let mut stored = 0;
    let mut refusal = None;
    for i in 0..100 {
        let r = app.post_events(json!([event(i)])).await;
        if r.status() == StatusCode::CREATED {
            stored += 1;
            continue;
        }
        refusal = Some((r.status(), r.json::<Value>().await.unwrap()));
        break;
    }
    let (status, body) = refusal.expect("a 4 MiB filesystem filled up");
    assert!(stored > 0, "some events fit before the disk filled");
    assert_eq!(status, StatusCode::INSUFFICIENT_STORAGE, "{body}");
    assert_eq!(body["error"]["code"], "STORAGE_FULL", "{body}");
    let mut before = head(&app, "full").await;
    assert_eq!(before.0, stored);
    // Retries while full: each refusal moves no head. (A background thread
    // on the same filesystem, the search indexer or the checkpointer, may
    // give back a little space after its own write failed; an append that
    // then fits is a proper append, one seq further.)
    let mut refused = 0;
    for i in 0..5 {
        let r = app.post_events(json!([event(1000 + i)])).await;
        let now = head(&app, "full").await;
        if r.status() == StatusCode::CREATED {
            stored += 1;
            assert_eq!(now.0, stored, "an accepted append is one seq further");
        } else {
            assert!(r.status().is_server_error(), "{}", r.status());
            assert_eq!(now, before, "a refused append moved the head");
            refused += 1;
        }
        before = now;
    }
    assert!(refused > 0, "the filesystem stayed full for some retries");

    mount("remount,size=64m");
    let ack = app.ingest(json!([event(2000)])).await;
    assert_eq!(ack["events"][0]["seq"].as_u64(), Some(stored + 1));
    assert_valid(&app, "full").await;
    app.shutdown().await;
    let out = cli_on(&db, &["verify"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let conn = rusqlite::Connection::open(&db).unwrap();
    let ok: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ok, "ok");
}
