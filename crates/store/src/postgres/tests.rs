//! The conformance suite and multi-node checks against a real PostgreSQL
//! (`AGENTLEDGER_TEST_PG`, default `postgres://postgres@127.0.0.1:5432/test`,
//! started by `.ci/run`). Each test creates its own database and drops it.

use std::sync::Arc;

use super::{PostgresOptions, PostgresStore};
use crate::EventStore;
use crate::conformance as c;

fn admin_url() -> String {
    std::env::var("AGENTLEDGER_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// The URL of another database on the same server.
fn url_of(db: &str) -> String {
    let base = admin_url();
    let (head, query) = match base.split_once('?') {
        Some((h, q)) => (h.to_owned(), format!("?{q}")),
        None => (base.clone(), String::new()),
    };
    let cut = head.rfind('/').expect("a database in the URL");
    format!("{}/{db}{query}", &head[..cut])
}

/// Whether the test PostgreSQL answers. On a machine without one (a fresh
/// checkout with only the Rust toolchain) the PostgreSQL tests say so and
/// pass; CI sets `AGENTLEDGER_REQUIRE_PG=1`, so there they cannot skip.
async fn available() -> bool {
    let ok = tokio_postgres::connect(&admin_url(), tokio_postgres::NoTls)
        .await
        .is_ok();
    if !ok {
        assert!(
            std::env::var_os("AGENTLEDGER_REQUIRE_PG").is_none(),
            "AGENTLEDGER_REQUIRE_PG is set but no PostgreSQL answers at {}",
            admin_url()
        );
        eprintln!(
            "skipped: no PostgreSQL at {} (set AGENTLEDGER_TEST_PG, or start one)",
            admin_url()
        );
    }
    ok
}

async fn admin() -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(&admin_url(), tokio_postgres::NoTls)
        .await
        .expect("PostgreSQL for tests (start it: pg_ctlcluster 15 main start)");
    tokio::spawn(conn);
    client
}

/// A database of its own, dropped when the test ends (even by a panic).
pub(super) struct TestDb {
    pub name: String,
}

impl TestDb {
    /// `None` (the test passes, saying it skipped) when no PostgreSQL
    /// answers and CI does not require one.
    pub async fn new() -> Option<TestDb> {
        if !available().await {
            return None;
        }
        let mut b = [0u8; 6];
        getrandom::fill(&mut b).expect("random");
        let name = format!("agentledger_t_{}", hex::encode(b));
        admin()
            .await
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create database");
        Some(TestDb { name })
    }

    pub fn url(&self) -> String {
        url_of(&self.name)
    }

    /// As SQLite's tests: a query budget no loaded machine reaches (results, not speed).
    pub async fn open(&self) -> PostgresStore {
        let mut o = PostgresOptions::new(self.url());
        o.query_budget = std::time::Duration::from_secs(120);
        PostgresStore::open(o).await.expect("open")
    }

    pub async fn client(&self) -> tokio_postgres::Client {
        let (client, conn) = tokio_postgres::connect(&self.url(), tokio_postgres::NoTls)
            .await
            .expect("connect");
        tokio::spawn(conn);
        client
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Dropped outside any runtime the test may be tearing down.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                admin()
                    .await
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await
                    .expect("drop database");
            });
        })
        .join();
    }
}

macro_rules! conformance {
    ($($name:ident => $check:ident),+ $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let Some(db) = TestDb::new().await else {
        return;
    };
            let store = db.open().await;
            c::$check(&store).await;
            store.close().await;
        }
    )+};
}

conformance! {
    conformance_rollups => rollups_equal_a_recount,
    conformance_append => append_assigns_seqs_and_chains,
    conformance_isolation => projects_are_isolated,
    conformance_queries => queries_filter_and_page,
    conformance_search_is_fresh => search_finds_what_was_acknowledged,
    conformance_search_pages_common_and_rare => search_pages_common_and_rare_words,
    conformance_sessions => sessions_are_listed,
    conformance_keys => keys_authenticate_and_revoke,
    conformance_policy_sets => policy_sets_are_per_project,
    conformance_alerts => alerts_outbox_and_deliveries,
    conformance_idempotency => idempotency_keys_replay_once,
    conformance_usage => usage_is_filtered_and_summed,
    conformance_projects_and_keys => projects_and_keys_are_listed,
    conformance_sessions_and_agents => sessions_and_agents_page_and_filter,
    conformance_llm_usage => llm_usage_groups_by_model_and_time,
    conformance_events_columns_and_salts => events_columns_and_salts_are_read_back,
    conformance_gauges_and_close => gauges_settle_and_close_refuses,
    conformance_log => log_integrates_every_event_once,
    conformance_log_racing_passes => log_racing_passes_integrate_each_event_once,
    conformance_erasure => erasure_keeps_the_proof,
    conformance_erasure_replies => erasure_scrubs_kept_replies,
}

/// A group's events are inserted each session's side by side (`pos`, and so
/// the heap, in that order); answered in the order given.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_stores_each_sessions_events_side_by_side() {
    let Some(db) = TestDb::new().await else {
        return;
    };
    let store = db.open().await;
    c::a_mixed_request_chains_each_session_in_order(&store).await;
    let rows: Vec<(String, i64)> = db
        .client()
        .await
        .query(
            "SELECT s.id, e.seq FROM events e JOIN sessions s ON s.ref = e.session_ref \
             ORDER BY e.pos",
            &[],
        )
        .await
        .expect("query")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let rows: Vec<(&str, i64)> = rows.iter().map(|(s, q)| (s.as_str(), *q)).collect();
    assert_eq!(
        rows,
        [("a", 1), ("a", 2), ("a", 3), ("b", 1), ("b", 2), ("c", 1)]
    );
}

/// The integrator never passes a transaction that is still running: an event committed after
/// a pass cannot land behind the cursor. A transaction held open elsewhere on the server keeps
/// the events appended after it out of the log until it ends; then they are integrated, each
/// once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_waits_for_transactions_still_running() {
    use agentledger_core::Kind;
    let Some(db) = TestDb::new().await else {
        return;
    };
    let store = db.open().await;
    let p = c::project(&store, "p").await;
    store
        .append(&p, vec![c::event("s", Kind::Memory, "{}")])
        .await
        .expect("append");
    c::integrate_exactly(&store, &p, 1, 100).await;
    // Another client's transaction takes a transaction id and stays open.
    let mut other = db.client().await;
    let tx = other.transaction().await.expect("begin");
    tx.query_one("SELECT pg_current_xact_id()::text", &[])
        .await
        .expect("xid");
    store
        .append(
            &p,
            vec![
                c::event("s", Kind::Memory, "{}"),
                c::event("t", Kind::Memory, "{}"),
            ],
        )
        .await
        .expect("append");
    assert_eq!(
        c::integrate_all(&store, &p, 100).await,
        0,
        "integrated past a running transaction"
    );
    tx.rollback().await.expect("end");
    c::integrate_exactly(&store, &p, 2, 100).await;
    assert_eq!(c::integrate_all(&store, &p, 100).await, 0);
    assert_eq!(store.log_head(&p).await.expect("head").size, 3);
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conformance_judged_in_commit_order() {
    let Some(db) = TestDb::new().await else {
        return;
    };
    let store = Arc::new(db.open().await);
    c::judged_in_commit_order(store.clone()).await;
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_judge_in_commit_order() {
    let Some(db) = TestDb::new().await else {
        return;
    };
    let (a, b) = (Arc::new(db.open().await), Arc::new(db.open().await));
    c::judged_in_commit_order_across_nodes([a.clone(), b.clone()]).await;
    a.close().await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conformance_concurrency() {
    let Some(db) = TestDb::new().await else {
        return;
    };
    let store = Arc::new(db.open().await);
    c::concurrent_appends_do_not_fork(store.clone()).await;
    store.close().await;
}

/// Two nodes (two stores, two writers, two pools) on one database append
/// to the same sessions at once, creating some of them in the race: every
/// acknowledged event is there once, seqs have no gap, every chain verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_never_fork_a_chain() {
    use agentledger_core::Kind;
    let Some(db) = TestDb::new().await else {
        return;
    };
    let nodes = [Arc::new(db.open().await), Arc::new(db.open().await)];
    let p = c::project(nodes[0].as_ref(), "p").await;
    let sessions = ["a", "b", "c", "d"];
    let mut tasks = Vec::new();
    for (n, node) in nodes.iter().enumerate() {
        for t in 0..6 {
            let (node, p) = (node.clone(), p.clone());
            tasks.push(tokio::spawn(async move {
                let mut acked = Vec::new();
                for i in 0..15 {
                    // Batches span sessions in different orders, so two
                    // nodes lock overlapping sets concurrently.
                    let batch: Vec<_> = (0..1 + (i + t) % 3)
                        .map(|k| {
                            let s = sessions[(n + t + i + k) % sessions.len()];
                            let payload = format!(r#"{{"node":{n},"task":{t},"i":{i},"k":{k}}}"#);
                            c::event(s, Kind::Memory, &payload)
                        })
                        .collect();
                    let out = node.append(&p, batch).await.expect("append");
                    acked.extend(out.into_iter().map(|a| a.id));
                }
                acked
            }));
        }
    }
    let mut acked = Vec::new();
    for t in tasks {
        acked.extend(t.await.expect("task"));
    }
    let mut stored = Vec::new();
    for s in sessions {
        let evs = nodes[1]
            .session_events(&p, s, 0, 10_000)
            .await
            .expect("read");
        assert_eq!(
            evs.iter().map(|e| e.seq).collect::<Vec<_>>(),
            (1..=evs.len() as u64).collect::<Vec<_>>(),
            "session {s} has no gap"
        );
        let report = crate::verify::verify_session(nodes[0].as_ref(), &p, s)
            .await
            .expect("verify")
            .expect("exists");
        assert!(report.valid, "session {s}: {report:?}");
        stored.extend(evs.into_iter().map(|e| e.id));
    }
    acked.sort();
    stored.sort();
    assert_eq!(acked, stored, "every acknowledged event once, nothing else");
    for node in &nodes {
        node.close().await;
    }
}

/// Two nodes starting on an empty database at once: one migrates, the other
/// waits and finds the schema current.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_starts_migrate_once() {
    let Some(db) = TestDb::new().await else {
        return;
    };
    let (a, b) = tokio::join!(
        PostgresStore::open(PostgresOptions::new(db.url())),
        PostgresStore::open(PostgresOptions::new(db.url()))
    );
    let (a, b) = (a.expect("first"), b.expect("second"));
    let versions: Vec<i32> = db
        .client()
        .await
        .query(
            "SELECT version FROM schema_migrations ORDER BY version",
            &[],
        )
        .await
        .expect("versions")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        versions,
        (1..=super::SCHEMA_VERSION as i32).collect::<Vec<_>>()
    );
    a.close().await;
    b.close().await;
}

/// A node whose binary knows fewer migrations than the database refuses to
/// start, saying why.
#[tokio::test]
async fn a_newer_schema_is_refused() {
    let Some(db) = TestDb::new().await else {
        return;
    };
    db.open().await.close().await;
    db.client()
        .await
        .execute("INSERT INTO schema_migrations (version) VALUES (999)", &[])
        .await
        .expect("a newer version");
    let err = PostgresStore::open(PostgresOptions::new(db.url()))
        .await
        .err()
        .expect("refused");
    let msg = err.to_string();
    assert!(
        msg.contains("version 999") && msg.contains("newer than this binary"),
        "{msg}"
    );
}

/// Every unique index and foreign key of a per-project table is led by
/// `project_id`, so the tables can be distributed by project (Citus)
/// without changing a constraint.
#[tokio::test]
async fn unique_indexes_lead_with_project() {
    let Some(db) = TestDb::new().await else {
        return;
    };
    db.open().await.close().await;
    let rows = db
        .client()
        .await
        .query(
            "SELECT c.relname::text, i.relname::text,
                    (SELECT a.attname::text FROM pg_attribute a
                     WHERE a.attrelid = c.oid AND a.attnum = x.indkey[0])
             FROM pg_index x JOIN pg_class c ON c.oid = x.indrelid
             JOIN pg_class i ON i.oid = x.indexrelid
             WHERE x.indisunique
               AND c.relname IN ('sessions', 'events', 'redaction_salts', 'idempotency_keys')
             UNION ALL
             SELECT c.relname::text, k.conname::text,
                    (SELECT a.attname::text FROM pg_attribute a
                     WHERE a.attrelid = c.oid AND a.attnum = k.conkey[1])
             FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid
             WHERE k.contype = 'f'
               AND c.relname IN ('sessions', 'events', 'redaction_salts', 'idempotency_keys')",
            &[],
        )
        .await
        .expect("catalog");
    assert!(rows.len() >= 6, "found {} constraints", rows.len());
    for r in &rows {
        let (table, index, first): (String, String, String) = (r.get(0), r.get(1), r.get(2));
        assert_eq!(
            first, "project_id",
            "{table}.{index} is not led by project_id"
        );
    }
}

/// The test server is durable: no warning. A database whose default is
/// `synchronous_commit=off` is reported (the writer still commits with it on).
#[tokio::test]
async fn durability_settings_are_reported() {
    let Some(db) = TestDb::new().await else {
        return;
    };
    let store = db.open().await;
    assert_eq!(store.durability_warnings(), Vec::<String>::new());
    store.close().await;
    db.client()
        .await
        .batch_execute(&format!(
            "ALTER DATABASE {} SET synchronous_commit = off",
            db.name
        ))
        .await
        .expect("alter");
    let store = db.open().await;
    let warnings = store.durability_warnings();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains("synchronous_commit is off"),
        "{warnings:?}"
    );
    store.close().await;
}

/// While the database refuses connections, reads and appends answer
/// `Overloaded` (503 with Retry-After); once it is back the store
/// reconnects by itself and nothing acknowledged is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unavailable_database_is_busy_then_recovers() {
    use crate::StoreError;
    use agentledger_core::Kind;
    let Some(db) = TestDb::new().await else {
        return;
    };
    let mut opts = PostgresOptions::new(db.url());
    opts.read_wait = std::time::Duration::from_millis(200);
    opts.connect_timeout = std::time::Duration::from_millis(500);
    let store = PostgresStore::open(opts).await.expect("open");
    let p = c::project(&store, "p").await;
    let before = store
        .append(&p, vec![c::event("s", Kind::Memory, "{}")])
        .await
        .expect("append");
    let admin = admin().await;
    admin
        .batch_execute(&format!(
            "ALTER DATABASE {0} ALLOW_CONNECTIONS false;
             SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{0}';",
            db.name
        ))
        .await
        .expect("take the database away");
    let read = store.get_session(&p, "s").await;
    assert!(matches!(read, Err(StoreError::Overloaded)), "{read:?}");
    let append = store
        .append(&p, vec![c::event("s", Kind::Memory, "{}")])
        .await;
    assert!(matches!(append, Err(StoreError::Overloaded)), "{append:?}");
    admin
        .batch_execute(&format!(
            "ALTER DATABASE {} ALLOW_CONNECTIONS true",
            db.name
        ))
        .await
        .expect("bring it back");
    let after = store
        .append(&p, vec![c::event("s", Kind::Memory, "{}")])
        .await
        .expect("append after reconnecting");
    assert_eq!(
        after[0].seq,
        before[0].seq + 1,
        "the refused append stored nothing"
    );
    let report = crate::verify::verify_session(&store, &p, "s")
        .await
        .expect("verify")
        .expect("exists");
    assert!(report.valid && report.events == 2, "{report:?}");
    store.close().await;
}

/// `--db postgres://...` through the composition root opens this backend.
#[tokio::test]
async fn the_composition_root_opens_postgres() {
    let Some(db) = TestDb::new().await else {
        return;
    };
    let store = crate::open(&db.url()).await.expect("open");
    let p = c::project(store.as_ref(), "p").await;
    assert_eq!(store.project_by_name("p").await.expect("read"), Some(p));
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_import() {
    let (Some(a), Some(b)) = (TestDb::new().await, TestDb::new().await) else {
        return;
    };
    let (source, target) = (a.open().await, b.open().await);
    c::import_copies_a_ledger_as_stored(&source, &target).await;
    source.close().await;
    target.close().await;
}

/// Migration 2's backfill (SQL over the events) builds exactly the rollups
/// the writers kept (Rust, as events arrived, in shards): delete them, run
/// it, compare.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollup_backfill_rebuilds_what_the_writer_kept() {
    let Some(db) = TestDb::new().await else {
        return;
    };
    let store = db.open().await;
    let (p, _, _) = c::random_rollup_ledger(&store).await;
    let kept = c::rollup_table(&store, &p).await;
    let client = db.client().await;
    client
        .batch_execute("DELETE FROM rollups")
        .await
        .expect("delete");
    client
        .batch_execute(super::schema::ROLLUP_BACKFILL)
        .await
        .expect("backfill");
    c::assert_rollups_equal(&c::rollup_table(&store, &p).await, &kept);
    store.close().await;
}

/// Events stored before migration 4 read `log_xid` 0 (the column's first default, no table
/// rewrite): they are integrated first, in `pos` order, then the newer ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_integrates_events_from_before_the_migration() {
    use agentledger_core::Kind;
    let Some(db) = TestDb::new().await else {
        return;
    };
    let store = db.open().await;
    let p = c::project(&store, "p").await;
    let old = store
        .append(
            &p,
            vec![
                c::event("s", Kind::Memory, "{}"),
                c::event("t", Kind::Memory, "{}"),
                c::event("s", Kind::Memory, "{}"),
            ],
        )
        .await
        .expect("append");
    // As the migration leaves rows it found.
    db.client()
        .await
        .execute("UPDATE events SET log_xid = 0", &[])
        .await
        .expect("age the rows");
    let new = store
        .append(&p, vec![c::event("s", Kind::Memory, "{}")])
        .await
        .expect("append");
    c::integrate_exactly(&store, &p, 4, 100).await;
    let mut indices = Vec::new();
    for e in old.iter().chain(&new) {
        indices.push(store.log_leaf_index(&p, e.id).await.expect("index"));
    }
    // Commit order: the first request's events were stored session by
    // session (s, s, t), then the second request's.
    assert_eq!(indices, [Some(0), Some(2), Some(1), Some(3)]);
    store.close().await;
}

/// Two nodes append to one project at once while both run integration passes: every event
/// gets exactly one leaf index, the indices are 0..n, and the tiles give the root of the
/// leaves in index order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_integrate_one_log_without_giving_an_index_twice() {
    use agentledger_core::Kind;
    let Some(db) = TestDb::new().await else {
        return;
    };
    let nodes = [Arc::new(db.open().await), Arc::new(db.open().await)];
    let p = c::project(nodes[0].as_ref(), "p").await;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut integrators = Vec::new();
    for node in &nodes {
        let (node, p, stop) = (node.clone(), p.clone(), stop.clone());
        integrators.push(tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                node.log_integrate(&p, 7).await.expect("integrate");
            }
        }));
    }
    let mut writers = Vec::new();
    for (n, node) in nodes.iter().enumerate() {
        for t in 0..3 {
            let (node, p) = (node.clone(), p.clone());
            writers.push(tokio::spawn(async move {
                let mut acked = Vec::new();
                for i in 0..20 {
                    let s = ["a", "b", "c"][(n + t + i) % 3];
                    let batch = vec![
                        c::event(s, Kind::Memory, "{}"),
                        c::event("d", Kind::Memory, "{}"),
                    ];
                    acked.extend(node.append(&p, batch).await.expect("append"));
                }
                acked
            }));
        }
    }
    let mut acked = Vec::new();
    for w in writers {
        acked.extend(w.await.expect("writer"));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for i in integrators {
        i.await.expect("integrator");
    }
    let n = acked.len() as u64;
    let done = nodes[0].log_head(&p).await.expect("head").size;
    c::integrate_exactly(nodes[1].as_ref(), &p, n - done, 100).await;
    let head = nodes[0].log_head(&p).await.expect("head");
    assert_eq!(head.size, n);
    let mut indices = std::collections::HashSet::new();
    for a in &acked {
        let index = nodes[0]
            .log_leaf_index(&p, a.id)
            .await
            .expect("index")
            .expect("integrated");
        assert!(indices.insert(index), "index {index} twice");
    }
    assert_eq!(indices, (0..n).collect());
    // Each session's events are in the log in seq order, whichever node appended them.
    let mut by_session: std::collections::HashMap<&str, Vec<(u64, u64)>> = Default::default();
    for a in &acked {
        let index = nodes[0].log_leaf_index(&p, a.id).await.expect("index");
        by_session
            .entry(a.session_id.as_str())
            .or_default()
            .push((a.seq, index.expect("integrated")));
    }
    for (s, mut v) in by_session {
        v.sort_unstable();
        assert!(v.windows(2).all(|w| w[0].1 < w[1].1), "session {s}: {v:?}");
    }
    let entries = nodes[0]
        .log_entries(&p, 0, n as u16)
        .await
        .expect("entries");
    let tree = agentledger_tlog::MemoryTree::from_entries(&entries);
    assert_eq!(
        agentledger_tlog::tree_hash(n, &tree).expect("root"),
        head.root
    );
    assert_eq!(
        crate::log::root_at(nodes[1].as_ref(), &p, n)
            .await
            .expect("root from tiles"),
        head.root
    );
    for node in nodes {
        node.close().await;
    }
}

/// The JSON reads that guard against `\u0000` write their literals as escape
/// strings, so a server with `standard_conforming_strings = off` (an old
/// setting some still carry) reads LLM analytics and tag-filtered sessions
/// alike; with plain literals every such query was an error there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_hold_without_standard_conforming_strings() {
    let Some(db) = TestDb::new().await else {
        return;
    };
    admin()
        .await
        .batch_execute(&format!(
            "ALTER DATABASE {} SET standard_conforming_strings = off",
            db.name
        ))
        .await
        .expect("alter database");
    let store = db.open().await;
    c::llm_usage_groups_by_model_and_time(&store).await;
    c::sessions_and_agents_page_and_filter(&store).await;
    store.close().await;
}
