use std::sync::Arc;

use super::{SqliteOptions, SqliteStore, search};
use crate::EventStore;
use crate::conformance as c;

/// The conformance tests check results, not speed: a query budget no shared, loaded machine
/// reaches (the default 2 s was once exceeded by a search while a build ran beside CI).
fn open(dir: &tempfile::TempDir) -> SqliteStore {
    let mut o = SqliteOptions::new(dir.path().join("ledger.db"));
    o.query_budget = std::time::Duration::from_secs(120);
    SqliteStore::open(o).expect("open")
}

/// SQLite as .cargo/config.toml builds it: memory-mapped reads up to 1 TiB
/// (`--read-mmap`), and no memory management, whose one global page-cache
/// mutex every connection queued on (docs/benchmarks.md, fifth round). A
/// build that lost either flag fails here, not as a slower benchmark.
#[test]
fn sqlite_is_built_as_configured() {
    let options = super::compile_options(&rusqlite::Connection::open_in_memory().unwrap()).unwrap();
    assert!(
        options.iter().any(|o| o == "MAX_MMAP_SIZE=1099511627776"),
        "{options:?}"
    );
    assert!(
        !options.iter().any(|o| o == "ENABLE_MEMORY_MANAGEMENT"),
        "{options:?}"
    );
}

/// A build that kept SQLite's memory management (LIBSQLITE3_FLAGS set in the
/// environment overrides .cargo/config.toml) is said at start; one without it
/// (this one: `sqlite_is_built_as_configured`) is not.
#[test]
fn a_build_with_memory_management_is_warned_about() {
    let mut options = vec!["MAX_MMAP_SIZE=1099511627776".to_owned()];
    assert!(super::build_warnings(&options).is_empty());
    options.push("ENABLE_MEMORY_MANAGEMENT".to_owned());
    let warnings = super::build_warnings(&options);
    assert_eq!(warnings.len(), 1);
    assert!(
        warnings[0].contains("SQLITE_ENABLE_MEMORY_MANAGEMENT"),
        "{warnings:?}"
    );
    assert!(warnings[0].contains("LIBSQLITE3_FLAGS"), "{warnings:?}");
}

/// A request that names several sessions stores each session's events side
/// by side, in the session's order, so that reading a session back touches
/// fewer pages; it is still answered in the order given.
#[tokio::test]
async fn a_request_stores_each_sessions_events_side_by_side() {
    let d = tempfile::tempdir().unwrap();
    let store = open(&d);
    c::a_mixed_request_chains_each_session_in_order(&store).await;
    let rows: Vec<(String, i64)> = store
        .read(|c| {
            c.prepare(
                "SELECT s.id, e.seq FROM events e JOIN sessions s ON s.rowid = e.session_ref \
                 ORDER BY e.rowid",
            )?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect()
        })
        .await
        .unwrap();
    let rows: Vec<(&str, i64)> = rows.iter().map(|(s, q)| (s.as_str(), *q)).collect();
    assert_eq!(
        rows,
        [("a", 1), ("a", 2), ("a", 3), ("b", 1), ("b", 2), ("c", 1)]
    );
}

#[tokio::test]
async fn conformance_append() {
    let d = tempfile::tempdir().unwrap();
    c::append_assigns_seqs_and_chains(&open(&d)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conformance_concurrency() {
    let d = tempfile::tempdir().unwrap();
    c::concurrent_appends_do_not_fork(Arc::new(open(&d))).await;
}

#[tokio::test]
async fn conformance_log() {
    let d = tempfile::tempdir().unwrap();
    c::log_integrates_every_event_once(&open(&d)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conformance_log_racing_passes() {
    let d = tempfile::tempdir().unwrap();
    c::log_racing_passes_integrate_each_event_once(&open(&d)).await;
}

/// The compare-and-set of an integration pass: two passes prepared from the same cursor,
/// then applied one after the other; the first writes, the second finds the cursor moved
/// and writes nothing (no event gets a second index), and a new pass takes the rest.
#[tokio::test]
async fn log_pass_applies_only_from_the_cursor_it_read() {
    use super::tlog::{PassOutcome, prepare_pass};
    use super::writer::Cmd;
    use agentledger_core::Kind;

    let d = tempfile::tempdir().unwrap();
    let store = open(&d);
    let p = c::project(&store, "p").await;
    let events = (0..10)
        .map(|i| c::event("s", Kind::Memory, &format!("{{\"n\":{i}}}")))
        .collect();
    let acked = store.append(&p, events).await.expect("append");
    let id = p.id.0;
    let store = &store;
    let prepare = |max: usize| async move {
        store
            .read(move |c| Ok(prepare_pass(c, id, max)))
            .await
            .expect("read")
            .expect("prepare")
            .expect("events wait")
    };
    let first = Box::new(prepare(4).await);
    let second = Box::new(prepare(6).await);
    let apply = |pass| store.admin(move |reply| Cmd::LogIntegrate { pass, reply });
    let won = apply(first).await.expect("apply first");
    let PassOutcome::Applied(done) = won else {
        panic!("the first pass found a moved cursor");
    };
    assert_eq!((done.added, done.head.size), (4, 4));
    assert_eq!(
        apply(second).await.expect("apply second"),
        PassOutcome::Stale
    );
    assert_eq!(store.log_head(&p).await.expect("head"), done.head);
    assert_eq!(c::integrate_all(store, &p, 100).await, 6);
    for (i, a) in acked.iter().enumerate() {
        assert_eq!(
            store.log_leaf_index(&p, a.id).await.expect("index"),
            Some(i as u64),
            "event {i}"
        );
    }
    // A pass prepared before another one caught up is stale as well.
    let more = store
        .append(&p, vec![c::event("s", Kind::Memory, "{}")])
        .await
        .expect("append");
    let late = Box::new(prepare(8).await);
    assert_eq!(c::integrate_all(store, &p, 100).await, 1);
    assert_eq!(apply(late).await.expect("apply late"), PassOutcome::Stale);
    assert_eq!(
        store.log_leaf_index(&p, more[0].id).await.expect("index"),
        Some(10)
    );
    assert_eq!(store.log_head(&p).await.expect("head").size, 11);
}

#[tokio::test]
async fn conformance_erasure() {
    let d = tempfile::tempdir().unwrap();
    c::erasure_keeps_the_proof(&open(&d)).await;
}

#[tokio::test]
async fn conformance_erasure_replies() {
    let d = tempfile::tempdir().unwrap();
    c::erasure_scrubs_kept_replies(&open(&d)).await;
}

/// The erased payload's terms leave the index file itself (not only the
/// answers, which skip erased rows anyway): a contentless FTS5 table
/// forgets a row only when given its text, so the writer does that with
/// the indexer paused.
#[tokio::test]
async fn erasure_takes_the_terms_out_of_the_index_file() {
    use agentledger_core::Kind;
    let d = tempfile::tempdir().unwrap();
    let store = open(&d);
    let p = c::project(&store, "p").await;
    let out = store
        .append(
            &p,
            vec![
                c::event("s", Kind::Memory, r#"{"note":"zebrafinch one"}"#),
                c::event("s", Kind::Memory, r#"{"note":"zebrafinch two"}"#),
            ],
        )
        .await
        .unwrap();
    c::wait_for_search(&store).await;
    c::erase(&store, &p, out[0].id, "key:k").await.unwrap();
    c::wait_for_search(&store).await;
    let index =
        rusqlite::Connection::open(search::index_path(&d.path().join("ledger.db"))).unwrap();
    let rows: Vec<i64> = index
        .prepare("SELECT rowid FROM events_fts WHERE events_fts MATCH 'zebrafinch' ORDER BY rowid")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(rows.len(), 1, "the erased row's terms are still indexed");
    let check: String = index
        .query_row(
            "INSERT INTO events_fts (events_fts, rank) VALUES ('integrity-check', 0) RETURNING 'ok'",
            [],
            |r| r.get(0),
        )
        .unwrap_or_else(|e| e.to_string());
    assert_eq!(check, "ok");
    store.close().await;
}

#[tokio::test]
async fn conformance_isolation() {
    let d = tempfile::tempdir().unwrap();
    c::projects_are_isolated(&open(&d)).await;
}

#[tokio::test]
async fn conformance_queries() {
    let d = tempfile::tempdir().unwrap();
    c::queries_filter_and_page(&open(&d)).await;
}

#[tokio::test]
async fn conformance_search_is_fresh() {
    let d = tempfile::tempdir().unwrap();
    c::search_finds_what_was_acknowledged(&open(&d)).await;
}

#[tokio::test]
async fn conformance_search_pages_common_and_rare() {
    let d = tempfile::tempdir().unwrap();
    c::search_pages_common_and_rare_words(&open(&d)).await;
}

#[tokio::test]
async fn conformance_sessions() {
    let d = tempfile::tempdir().unwrap();
    c::sessions_are_listed(&open(&d)).await;
}

#[tokio::test]
async fn conformance_keys() {
    let d = tempfile::tempdir().unwrap();
    c::keys_authenticate_and_revoke(&open(&d)).await;
}

#[tokio::test]
async fn conformance_alerts() {
    let d = tempfile::tempdir().unwrap();
    c::alerts_outbox_and_deliveries(&open(&d)).await;
}

#[tokio::test]
async fn conformance_policy_sets() {
    let d = tempfile::tempdir().unwrap();
    c::policy_sets_are_per_project(&open(&d)).await;
}

#[tokio::test]
async fn conformance_idempotency() {
    let d = tempfile::tempdir().unwrap();
    c::idempotency_keys_replay_once(&open(&d)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conformance_judged_in_commit_order() {
    let d = tempfile::tempdir().unwrap();
    c::judged_in_commit_order(Arc::new(open(&d))).await;
}

#[tokio::test]
async fn conformance_usage() {
    let d = tempfile::tempdir().unwrap();
    c::usage_is_filtered_and_summed(&open(&d)).await;
}

#[tokio::test]
async fn conformance_projects_and_keys() {
    let d = tempfile::tempdir().unwrap();
    c::projects_and_keys_are_listed(&open(&d)).await;
}

#[tokio::test]
async fn conformance_sessions_and_agents() {
    let d = tempfile::tempdir().unwrap();
    c::sessions_and_agents_page_and_filter(&open(&d)).await;
}

#[tokio::test]
async fn conformance_llm_usage() {
    let d = tempfile::tempdir().unwrap();
    c::llm_usage_groups_by_model_and_time(&open(&d)).await;
}

#[tokio::test]
async fn conformance_events_columns_and_salts() {
    let d = tempfile::tempdir().unwrap();
    c::events_columns_and_salts_are_read_back(&open(&d)).await;
}

#[tokio::test]
async fn conformance_gauges_and_close() {
    let d = tempfile::tempdir().unwrap();
    c::gauges_settle_and_close_refuses(&open(&d)).await;
}

#[tokio::test]
async fn reopen_continues_the_chain() {
    let d = tempfile::tempdir().unwrap();
    let store = open(&d);
    let p = c::project(&store, "p").await;
    store
        .append(
            &p,
            vec![c::event("s", agentledger_core::Kind::Memory, "{}")],
        )
        .await
        .unwrap();
    store.close().await;
    drop(store);
    let store = open(&d);
    let out = store
        .append(
            &p,
            vec![c::event("s", agentledger_core::Kind::Memory, "{}")],
        )
        .await
        .unwrap();
    assert_eq!(out[0].seq, 2);
    let r = crate::verify::verify_session(&store, &p, "s")
        .await
        .unwrap()
        .unwrap();
    assert!(r.valid && r.events == 2, "{r:?}");
}

#[tokio::test]
async fn appends_after_close_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let store = open(&d);
    let p = c::project(&store, "p").await;
    store.close().await;
    let r = store
        .append(
            &p,
            vec![c::event("s", agentledger_core::Kind::Memory, "{}")],
        )
        .await;
    assert!(matches!(r, Err(crate::StoreError::ShuttingDown)), "{r:?}");
}

#[tokio::test]
async fn search_index_is_rebuilt_when_missing_and_resumes_after_restart() {
    use agentledger_core::Kind;
    let d = tempfile::tempdir().unwrap();
    async fn search(store: &SqliteStore, p: &crate::ProjectRef, text: &str) -> usize {
        let q = crate::EventQuery {
            limit: 100,
            text: Some(text.into()),
            ..Default::default()
        };
        c::wait_for_search(store).await;
        store.query_events(p, q).await.unwrap().events.len()
    }
    let store = open(&d);
    let p = c::project(&store, "p").await;
    let batch = (0..50)
        .map(|i| c::event("s", Kind::Memory, &format!(r#"{{"w":"alpha{}"}}"#, i % 2)))
        .collect();
    store.append(&p, batch).await.unwrap();
    assert_eq!(search(&store, &p, "alpha0").await, 25);
    store.close().await;
    drop(store);

    // Events appended while the index is gone are found once it is rebuilt.
    let index = super::index_path(&d.path().join("ledger.db"));
    for suffix in ["", "-wal", "-shm"] {
        let mut f = index.clone().into_os_string();
        f.push(suffix);
        let _ = std::fs::remove_file(f);
    }
    let store = open(&d);
    store
        .append(&p, vec![c::event("s", Kind::Memory, r#"{"w":"beta"}"#)])
        .await
        .unwrap();
    assert_eq!(search(&store, &p, "alpha1").await, 25);
    assert_eq!(search(&store, &p, "beta").await, 1);
    store.close().await;
    drop(store);

    // A restart resumes from the watermark without duplicating anything.
    let store = open(&d);
    store
        .append(
            &p,
            vec![c::event("s", Kind::Memory, r#"{"w":"gamma alpha0"}"#)],
        )
        .await
        .unwrap();
    assert_eq!(search(&store, &p, "alpha0").await, 26);
    assert_eq!(search(&store, &p, "gamma").await, 1);
    assert_eq!(store.search_backlog(), 0);
}

#[tokio::test]
async fn common_and_rare_terms_page_count_and_stay_in_their_project() {
    use agentledger_core::Kind;
    let d = tempfile::tempdir().unwrap();
    let store = open(&d);
    let a = c::project(&store, "a").await;
    let b = c::project(&store, "b").await;
    for chunk in 0..6 {
        let batch = (0..1000)
            .map(|i| {
                let n = chunk * 1000 + i;
                let word = if n % 2000 == 7 {
                    "common rare"
                } else {
                    "common"
                };
                c::event("s", Kind::Memory, &format!(r#"{{"n":{n},"w":"{word}"}}"#))
            })
            .collect();
        store.append(&a, batch).await.unwrap();
    }
    let batch = (0..100)
        .map(|n| {
            c::event(
                "s",
                Kind::Memory,
                &format!(r#"{{"n":{n},"w":"common rare"}}"#),
            )
        })
        .collect();
    store.append(&b, batch).await.unwrap();
    c::wait_for_search(&store).await;
    let q = |text: &str| crate::EventQuery {
        limit: 50,
        text: Some(text.into()),
        ..Default::default()
    };

    // A common term (more than 5,000 matches): probed in time order, counted to 1,000.
    let page = store.query_events(&a, q("common")).await.unwrap();
    assert_eq!((page.total, page.total_capped), (Some(1000), true));
    assert_eq!(page.events.len(), 50);
    assert!(page.events.windows(2).all(|w| w[0].seq > w[1].seq));
    assert!(page.events[0].payload.get().contains(r#""n":5999"#));
    let mut next = q("common");
    next.cursor = page.next_cursor;
    let page2 = store.query_events(&a, next).await.unwrap();
    assert!(page2.events[0].payload.get().contains(r#""n":5949"#));
    let page = store.query_events(&b, q("common")).await.unwrap();
    assert_eq!((page.total, page.total_capped), (Some(100), false));

    // A rare term: looked up by rowid and sorted, counted exactly.
    let page = store.query_events(&a, q("rare")).await.unwrap();
    assert_eq!((page.total, page.total_capped), (Some(3), false));
    assert!(page.events.windows(2).all(|w| w[0].seq > w[1].seq));
    let page = store.query_events(&b, q("rare")).await.unwrap();
    assert_eq!(page.total, Some(100));
    let page = store.query_events(&b, q("common rare")).await.unwrap();
    assert_eq!(page.events.len(), 50);

    // Without a term: exact below the 10,000 cap.
    let page = store
        .query_events(
            &a,
            crate::EventQuery {
                limit: 10,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!((page.total, page.total_capped), (Some(6000), false));
}

/// Keys whose digests share the 8 bytes the index narrows by are told apart
/// by the constant-time comparison of the whole digest.
#[tokio::test]
async fn keys_sharing_a_digest_prefix_are_told_apart() {
    let d = tempfile::tempdir().unwrap();
    let store = open(&d);
    let digest = |tail: u8| {
        let mut h = [7u8; 32];
        h[8..].fill(tail);
        h
    };
    let a = store
        .create_key("p", "a", digest(1), "al_aaaa", false)
        .await
        .unwrap();
    let b = store
        .create_key("p", "b", digest(2), "al_bbbb", false)
        .await
        .unwrap();
    let found = |k: Option<crate::ApiKeyInfo>| k.map(|k| k.id);
    assert_eq!(
        found(store.authenticate(digest(1)).await.unwrap()),
        Some(a.id)
    );
    assert_eq!(
        found(store.authenticate(digest(2)).await.unwrap()),
        Some(b.id)
    );
    assert_eq!(found(store.authenticate(digest(3)).await.unwrap()), None);
    assert_eq!(found(store.authenticate([7u8; 32]).await.unwrap()), None);
}

/// Full-text search over the not-yet-indexed tail (search.rs, "Search finds
/// what was acknowledged"): the indexer is held so the tail has a known size.
mod search_tail {
    use super::*;
    use crate::{EventQuery, Order, ProjectRef, StoreError};
    use agentledger_core::Kind;

    /// A small deterministic generator (xorshift64*): reproducible cases, no
    /// dependency.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
        fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
            from[self.below(from.len())]
        }
    }

    /// Words where unicode61 does something: case folding (ASCII and not),
    /// diacritics removed (precomposed and combining), separators and token
    /// characters, digits of other scripts, ligatures, CJK, emoji.
    const WORDS: &[&str] = &[
        "alpha",
        "Alpha",
        "ALPHA",
        "café",
        "Cafe",
        "CAFÉ",
        "cafe\u{301}",
        "naïve",
        "naive",
        "straße",
        "STRASSE",
        "ǅemal",
        "ﬁle",
        "file",
        "foo-bar",
        "foo_bar",
        "a.b",
        "x1",
        "X1",
        "日本語",
        "日本",
        "١٢٣",
        "123",
        "Σίσυφος",
        "σισυφος",
        "İstanbul",
        "istanbul",
        "ı",
        "ø",
        "o",
        "Œuvre",
        "oeuvre",
        "emoji😀x",
        "x",
        "tab\tsep",
        "quote\"d",
        "back\\slash",
        "ÅNGSTRÖM",
        "angstrom",
        "ſ",
        "µ",
        "μ",
        "Ǆ",
        "dž",
        "e\u{301}",
        "ĳ",
        "ÿ",
        "Ÿ",
        "ñ",
        "n",
        "2026-02-08",
        "10:00",
        "id=7",
        "bar",
        "foo",
    ];

    /// Query terms: the words and pieces of them, plus FTS5 syntax that must
    /// stay literal.
    const TERMS: &[&str] = &[
        "alpha",
        "ALPHA",
        "cafe",
        "CAFÉ",
        "café",
        "naive",
        "naïve",
        "strasse",
        "straße",
        "file",
        "ﬁle",
        "foo-bar",
        "foo",
        "bar",
        "a.b",
        "b",
        "x1",
        "日本語",
        "日本",
        "١٢٣",
        "123",
        "σίσυφος",
        "ΣΙΣΥΦΟΣ",
        "istanbul",
        "İstanbul",
        "ı",
        "o",
        "ø",
        "oeuvre",
        "œuvre",
        "emoji",
        "x",
        "😀",
        "sep",
        "quote\"d",
        "\"",
        "slash",
        "angstrom",
        "ångström",
        "ſ",
        "s",
        "µ",
        "μ",
        "ǆ",
        "dž",
        "e",
        "é",
        "ĳ",
        "ij",
        "y",
        "ÿ",
        "n",
        "ñ",
        "2026",
        "02",
        "10",
        "7",
        "id",
        "AND",
        "OR",
        "NOT",
        "NEAR",
        "*",
        "x*",
        "(",
        ")",
        "-",
        ":",
        "payload:x",
        "project",
    ];

    fn payload(rng: &mut Rng) -> String {
        let n = 1 + rng.below(6);
        let text: Vec<&str> = (0..n).map(|_| rng.pick(WORDS)).collect();
        let key = rng.pick(WORDS);
        serde_json::json!({ key: text.join(if rng.below(3) == 0 { "," } else { " " }) }).to_string()
    }

    fn terms(rng: &mut Rng) -> String {
        let n = 1 + rng.below(3);
        (0..n)
            .map(|_| rng.pick(TERMS))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Ids and total of every match, or the error's text.
    async fn search(
        store: &SqliteStore,
        p: &ProjectRef,
        text: &str,
    ) -> Result<(Vec<String>, Option<u64>), String> {
        let q = EventQuery {
            limit: 10_000,
            text: Some(text.into()),
            ..Default::default()
        };
        store
            .query_events(p, q)
            .await
            .map(|page| {
                let ids = page.events.iter().map(|e| e.id.to_string()).collect();
                (ids, page.total)
            })
            .map_err(|e| e.to_string())
    }

    #[tokio::test]
    async fn tail_scan_matches_the_index() {
        let d = tempfile::tempdir().unwrap();
        let store = open(&d);
        let projects = [c::project(&store, "a").await, c::project(&store, "b").await];
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        // Some events indexed, then a held tail: queries then answer from both.
        for (i, p) in projects.iter().enumerate() {
            let batch = (0..100)
                .map(|_| c::event(&format!("s{i}"), Kind::Memory, &payload(&mut rng)))
                .collect();
            store.append(p, batch).await.unwrap();
        }
        c::wait_for_search(&store).await;
        store.search.hold(true);
        for round in 0..4 {
            for (i, p) in projects.iter().enumerate() {
                let batch = (0..150)
                    .map(|_| c::event(&format!("t{i}{round}"), Kind::Memory, &payload(&mut rng)))
                    .collect();
                store.append(p, batch).await.unwrap();
            }
        }
        assert_eq!(store.search_backlog(), 1200, "the tail is held");
        let queries: Vec<String> = (0..400).map(|_| terms(&mut rng)).collect();
        let mut from_tail = Vec::new();
        for q in &queries {
            for p in &projects {
                from_tail.push(search(&store, p, q).await);
            }
        }
        assert_eq!(store.search_backlog(), 1200, "answered with the tail held");
        store.search.hold(false);
        c::wait_for_search(&store).await;
        let (mut matched, mut tail_matched) = (0, 0);
        let mut answers = from_tail.into_iter();
        for q in &queries {
            for p in &projects {
                let indexed = search(&store, p, q).await;
                let tail = answers.next().unwrap();
                assert_eq!(tail, indexed, "query {q:?} in project {}", p.name);
                if let Ok((ids, _)) = &indexed {
                    matched += ids.len();
                    // Events of the held rounds live in sessions t..
                    tail_matched += usize::from(!ids.is_empty());
                }
            }
        }
        // The comparison is not vacuous: many queries matched, in the tail too.
        assert!(matched > 2_000, "{matched} matches");
        assert!(
            tail_matched > 200,
            "{tail_matched} queries matched something"
        );
    }

    async fn all_pages(
        store: &SqliteStore,
        p: &ProjectRef,
        q: EventQuery,
    ) -> (Vec<String>, Option<u64>) {
        let mut q = q;
        let mut ids = Vec::new();
        let first = store.query_events(p, q.clone()).await.unwrap();
        let total = first.total;
        let mut page = first;
        loop {
            ids.extend(page.events.iter().map(|e| e.id.to_string()));
            let Some(c) = page.next_cursor.clone() else {
                break;
            };
            q.cursor = Some(c);
            page = store.query_events(p, q.clone()).await.unwrap();
            assert_eq!(page.total, total, "the total does not move between pages");
        }
        (ids, total)
    }

    #[tokio::test]
    async fn tail_matches_merge_in_order_with_totals_and_cursors() {
        let d = tempfile::tempdir().unwrap();
        let store = open(&d);
        let p = c::project(&store, "p").await;
        let other = c::project(&store, "other").await;
        let ev = |i: usize| {
            c::event(
                if i.is_multiple_of(2) { "s" } else { "t" },
                Kind::Memory,
                &format!(r#"{{"w":"needle n{i}"}}"#),
            )
        };
        let mut ids = Vec::new();
        for i in 0..10 {
            ids.push(
                store.append(&p, vec![ev(i)]).await.unwrap()[0]
                    .id
                    .to_string(),
            );
        }
        c::wait_for_search(&store).await;
        store.search.hold(true);
        for i in 10..20 {
            ids.push(
                store.append(&p, vec![ev(i)]).await.unwrap()[0]
                    .id
                    .to_string(),
            );
            // Another project's tail matches too, and must never show.
            store.append(&other, vec![ev(i)]).await.unwrap();
        }
        for order in [Order::Asc, Order::Desc] {
            let q = EventQuery {
                limit: 3,
                text: Some("NEEDLE".into()),
                order,
                ..Default::default()
            };
            let (got, total) = all_pages(&store, &p, q).await;
            let mut want = ids.clone();
            if order == Order::Desc {
                want.reverse();
            }
            assert_eq!(got, want, "{order:?}");
            assert_eq!(total, Some(20));
        }
        // One session, in chain order, paged.
        let q = EventQuery {
            limit: 4,
            text: Some("needle".into()),
            session_id: Some("s".into()),
            order: Order::Asc,
            ..Default::default()
        };
        let (got, total) = all_pages(&store, &p, q).await;
        let want: Vec<String> = ids.iter().step_by(2).cloned().collect();
        assert_eq!((got, total), (want, Some(10)));
        // A term only a tail event holds; and a phrase across tokens.
        assert_eq!(
            search(&store, &p, "n17").await.unwrap().0,
            vec![ids[17].clone()]
        );
        assert_eq!(
            search(&store, &p, "needle n3").await.unwrap().0,
            vec![ids[3].clone()]
        );
        assert_eq!(
            search(&store, &p, "n99").await.unwrap().0,
            Vec::<String>::new()
        );
        assert_eq!(store.search_backlog(), 20, "the tail was held throughout");
        store.search.hold(false);
    }

    #[tokio::test]
    async fn many_matches_probe_the_index_and_the_tail() {
        let d = tempfile::tempdir().unwrap();
        let store = open(&d);
        let p = c::project(&store, "p").await;
        let n = super::super::LOOKUP_MATCHES as usize + 100;
        for k in 0..n.div_ceil(1000) {
            let batch = (k * 1000..((k + 1) * 1000).min(n))
                .map(|i| c::event("s", Kind::Memory, &format!(r#"{{"w":"common c{i}"}}"#)))
                .collect();
            store.append(&p, batch).await.unwrap();
        }
        c::wait_for_search(&store).await;
        store.search.hold(true);
        let batch = (0..50)
            .map(|i| c::event("s", Kind::Memory, &format!(r#"{{"w":"common late{i}"}}"#)))
            .collect();
        let late = store.append(&p, batch).await.unwrap();
        let q = EventQuery {
            limit: 60,
            text: Some("common".into()),
            order: Order::Desc,
            ..Default::default()
        };
        let page = store.query_events(&p, q).await.unwrap();
        // Counted from the full-text side up to its cap.
        let cap = agentledger_core::query::TEXT_COUNT_LIMIT;
        assert_eq!((page.total, page.total_capped), (Some(cap), true));
        let want: Vec<String> = late.iter().rev().map(|e| e.id.to_string()).collect();
        let got: Vec<String> = page.events.iter().map(|e| e.id.to_string()).collect();
        assert_eq!(&got[..50], &want[..], "the newest (tail) events first");
        store.search.hold(false);
    }

    #[tokio::test]
    async fn a_tail_too_long_is_refused_not_dropped() {
        let d = tempfile::tempdir().unwrap();
        let store = open(&d);
        let p = c::project(&store, "p").await;
        let quiet = c::project(&store, "quiet").await;
        store
            .append(&quiet, vec![c::event("s", Kind::Memory, r#"{"w":"word"}"#)])
            .await
            .unwrap();
        c::wait_for_search(&store).await;
        store.search.hold(true);
        let n = search::TAIL_EVENTS + 1;
        for k in 0..n.div_ceil(1000) {
            let batch = (k * 1000..((k + 1) * 1000).min(n))
                .map(|_| c::event("s", Kind::Memory, r#"{"w":"word"}"#))
                .collect();
            store.append(&p, batch).await.unwrap();
        }
        let q = |text: &str| EventQuery {
            limit: 10,
            text: Some(text.into()),
            ..Default::default()
        };
        let r = store.query_events(&p, q("word")).await;
        assert!(
            matches!(r, Err(StoreError::Overloaded)),
            "{:?}",
            r.map(|p| p.total)
        );
        // Another filter that leaves few candidates is answered.
        let mut few = q("word");
        few.kinds = vec![Kind::UserInput];
        assert_eq!(store.query_events(&p, few).await.unwrap().total, Some(0));
        // Another project's tail is small: it is answered.
        let page = store.query_events(&quiet, q("word")).await.unwrap();
        assert_eq!(page.total, Some(1));
        store.search.hold(false);
        c::wait_for_search(&store).await;
        let page = store.query_events(&p, q("word")).await.unwrap();
        assert_eq!((page.events.len(), page.total_capped), (10, true));
    }
}

/// What a search costs with a tail of N events (run in release:
/// `cargo test --release -p agentledger-store -- --ignored search_tail_cost --nocapture`).
#[tokio::test]
#[ignore = "a measurement, not a test"]
async fn search_tail_cost() {
    use agentledger_core::Kind;
    let d = tempfile::tempdir().unwrap();
    let store = open(&d);
    let p = c::project(&store, "p").await;
    store.search.hold(true);
    let mut have = 0;
    for n in [0usize, 100, 1_000, 4_000, 8_000] {
        while have < n {
            let batch = (have..n.min(have + 1000))
                .map(|i| {
                    c::event(
                        "s",
                        Kind::LlmCall,
                        &format!(
                            r#"{{"model":"gpt-4o","prompt":"summarise the quarterly report for customer {i}","tokens":{i}}}"#
                        ),
                    )
                })
                .collect();
            store.append(&p, batch).await.unwrap();
            have = n.min(have + 1000);
        }
        let mut times = Vec::new();
        for k in 0..21 {
            let q = crate::EventQuery {
                limit: 50,
                text: Some(format!("customer {}", k * 37 % n.max(1))),
                ..Default::default()
            };
            let t = std::time::Instant::now();
            store.query_events(&p, q).await.unwrap();
            times.push(t.elapsed());
        }
        times.sort();
        eprintln!(
            "tail {n:>5} events ({} bytes each): search median {:?}, max {:?}",
            90, times[10], times[20]
        );
    }
    // Another project's tail: walked (rowid range), never tokenized.
    let quiet = c::project(&store, "quiet").await;
    let noisy = c::project(&store, "noisy").await;
    for k in 0..100 {
        let batch = (0..1000)
            .map(|i| c::event("s", Kind::LlmCall, &format!(r#"{{"model":"gpt-4o","prompt":"summarise the quarterly report for customer {k}{i}","tokens":{i}}}"#)))
            .collect();
        store.append(&noisy, batch).await.unwrap();
    }
    let mut times = Vec::new();
    for _ in 0..21 {
        let q = crate::EventQuery {
            limit: 50,
            text: Some("customer".into()),
            ..Default::default()
        };
        let t = std::time::Instant::now();
        store.query_events(&quiet, q).await.unwrap();
        times.push(t.elapsed());
    }
    times.sort();
    eprintln!(
        "another project's tail of 100000 events: search median {:?}, max {:?}",
        times[10], times[20]
    );
    store.search.hold(false);
}

#[tokio::test]
async fn conformance_import() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (source, target) = (open(&a), open(&b));
    c::import_copies_a_ledger_as_stored(&source, &target).await;
}

#[tokio::test]
async fn conformance_rollups_equal_a_recount() {
    let d = tempfile::tempdir().unwrap();
    c::rollups_equal_a_recount(&open(&d)).await;
}

/// Migration 9's backfill (SQL over the events) builds exactly the rollups
/// the writer kept (Rust, as events arrived): delete them, run it, compare.
#[tokio::test]
async fn rollup_backfill_rebuilds_what_the_writer_kept() {
    let d = tempfile::tempdir().unwrap();
    let store = open(&d);
    let (p, _, _) = c::random_rollup_ledger(&store).await;
    let kept = c::rollup_table(&store, &p).await;
    store.close().await;
    let conn = rusqlite::Connection::open(d.path().join("ledger.db")).unwrap();
    conn.execute_batch("DELETE FROM rollups").unwrap();
    conn.execute_batch(super::schema::ROLLUP_BACKFILL).unwrap();
    drop(conn);
    let store = open(&d);
    c::assert_rollups_equal(&c::rollup_table(&store, &p).await, &kept);
}
