//! The same server on PostgreSQL (`--db postgres://…`): every dialect's
//! writes, reads, search, verification and idempotent retries, end to end.
//! Needs the PostgreSQL of CI (127.0.0.1:5432, or AGENTLEDGER_TEST_PG);
//! each test makes its own database and drops it.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;

/// A fresh database on the test server; dropped with the guard.
pub struct PgDb {
    pub url: String,
    name: String,
    admin: String,
}

fn admin_url() -> String {
    std::env::var("AGENTLEDGER_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

fn psql(url: &str, sql: &str) {
    let out = std::process::Command::new("psql")
        .args([url, "-v", "ON_ERROR_STOP=1", "-qc", sql])
        .output()
        .expect("psql runs (PostgreSQL client installed)");
    assert!(
        out.status.success(),
        "{sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl PgDb {
    /// `None` when no PostgreSQL answers and `AGENTLEDGER_REQUIRE_PG` is not
    /// set (a machine with only the Rust toolchain); CI sets it.
    pub fn new() -> Option<PgDb> {
        let admin = admin_url();
        let up = std::process::Command::new("psql")
            .args([admin.as_str(), "-qc", "SELECT 1"])
            .output()
            .is_ok_and(|o| o.status.success());
        if !up {
            assert!(
                std::env::var_os("AGENTLEDGER_REQUIRE_PG").is_none(),
                "AGENTLEDGER_REQUIRE_PG is set but no PostgreSQL answers at {admin}"
            );
            eprintln!("skipped: no PostgreSQL at {admin}");
            return None;
        }
        let name = format!(
            "agentledger_api_{}",
            agentledger_core::EventId::generate(agentledger_core::Micros::now())
                .to_string()
                .to_lowercase()
        );
        psql(&admin, &format!("CREATE DATABASE {name}"));
        let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
        Some(PgDb {
            url: format!("{base}/{name}"),
            name,
            admin,
        })
    }
}

impl Drop for PgDb {
    fn drop(&mut self) {
        psql(
            &self.admin,
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
    }
}

#[tokio::test]
async fn the_server_runs_on_postgresql() {
    let Some(pg) = PgDb::new() else { return };
    let url = pg.url.clone();
    let app = spawn_app_with(move |c| c.db = url).await;
    app.ingest(json!([memory("s", 1), tool_call("s", "c1")]))
        .await;
    let r = app
        .post(
            "/api/events",
            &json!({"events": [{"sessionId": "s", "agentId": "my-agent", "eventType": "custom",
                "payload": {"type": "note", "data": {"word": "zanzibar"}}}]}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = app
        .post(
            "/v1/sessions/s/events",
            &fixture_json("realm", "tool_call.json"),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    // Read your writes: search sees it at once.
    let found = app.get_json("/api/v1/events?q=zanzibar").await;
    assert_eq!(found["total"], 1, "{found}");
    let v = app.get_json("/api/v1/sessions/s/verify").await;
    assert_eq!(
        (v["valid"].clone(), v["events"].clone()),
        (json!(true), json!(4)),
        "{v}"
    );
    let s: Value = app.get_json("/api/sessions/s").await;
    assert_eq!(s["eventCount"], 4, "{s}");
    // A retry under an idempotency key appends nothing.
    let send = || {
        app.client
            .post(app.url("/api/v1/events"))
            .bearer_auth(&app.key)
            .header("idempotency-key", "pg-1")
            .json(&json!({"events": [memory("s", 9)]}))
            .send()
    };
    let a = send().await.unwrap().bytes().await.unwrap();
    let b = send().await.unwrap();
    assert_eq!(b.headers()["idempotent-replayed"], "true");
    assert_eq!(b.bytes().await.unwrap(), a);
    assert_eq!(app.event_total().await, 5);
}

#[tokio::test]
async fn a_payload_past_the_full_text_limit_is_refused_with_400() {
    let Some(pg) = PgDb::new() else { return };
    let url = pg.url.clone();
    let app = spawn_app_with(move |c| c.db = url).await;
    // 130,001 distinct words in 0.9 MB: a full-text vector of 1.3 MB.
    let words: Vec<String> = (100_000..=230_000).map(|i| i.to_string()).collect();
    let r = app
        .post_events(
            json!([{"session_id": "big", "agent_id": "a", "kind": "memory",
                             "payload": {"text": words.join(" ")}}]),
        )
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["code"], "PAYLOAD_TOO_LARGE_FOR_INDEX", "{e}");
    assert_eq!(app.event_total().await, 0, "nothing stored");
    // The writer goes on.
    app.ingest(json!([memory("big", 1)])).await;
}

/// The transparency log on PostgreSQL, end to end: events integrated (below the oldest running
/// transaction), a signed checkpoint, a tlog-proof for every event.
#[tokio::test]
async fn the_log_runs_on_postgresql() {
    use crate::log::{acked, batch, checkpoint_of_size, vkey};
    use agentledger_tlog::leaf_hash;
    use agentledger_tlog::proof::TlogProof;
    let Some(pg) = PgDb::new() else { return };
    let url = pg.url.clone();
    let app = spawn_app_with(move |c| c.db = url).await;
    let mut events = acked(&app.ingest(batch("s", 0, 150)).await);
    events.extend(acked(&app.ingest(batch("t", 0, 150)).await));
    let verifier = vkey(&app, "default");
    let (note, _) = checkpoint_of_size(&app, &app.key, 300, &verifier).await;
    let mut indices = std::collections::HashSet::new();
    for (id, entry) in &events {
        let r = app
            .get(&format!("/log/proof/inclusion/{id}?format=text"))
            .await;
        assert_eq!(r.status(), StatusCode::OK);
        let proof = TlogProof::parse(&r.bytes().await.unwrap()).expect("tlog-proof");
        proof
            .verify(&leaf_hash(entry), &[&verifier])
            .expect("inclusion verifies");
        assert_eq!(proof.checkpoint, note);
        assert!(indices.insert(proof.index));
    }
}

/// Hostile query strings and ids (`hostile.rs`) on PostgreSQL, which refuses
/// NUL in text where SQLite matched nothing: never a 5xx.
#[tokio::test]
async fn hostile_reads_never_5xx_on_postgresql() {
    let Some(pg) = PgDb::new() else { return };
    let url = pg.url.clone();
    let app = spawn_app_with(move |c| c.db = url).await;
    crate::hostile::hostile_reads_get_400_or_404_and_never_5xx(&app).await;
}

/// A model or tool name holding NUL is a 400 on PostgreSQL as on SQLite (it
/// was a 500: text cannot hold NUL), and a NUL elsewhere in an LLM payload
/// leaves the project's LLM analytics readable.
#[tokio::test]
async fn nul_in_derived_names_is_refused_on_postgresql() {
    let Some(pg) = PgDb::new() else { return };
    let url = pg.url.clone();
    let app = spawn_app_with(move |c| c.db = url).await;
    crate::hostile::nul_in_a_model_or_tool_name_is_refused(&app).await;
}
