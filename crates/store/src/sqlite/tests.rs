use std::sync::Arc;

use super::{SqliteOptions, SqliteStore};
use crate::EventStore;
use crate::conformance as c;

fn open(dir: &tempfile::TempDir) -> SqliteStore {
    SqliteStore::open(SqliteOptions::new(dir.path().join("ledger.db"))).expect("open")
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
async fn conformance_policy_sets() {
    let d = tempfile::tempdir().unwrap();
    c::policy_sets_are_per_project(&open(&d)).await;
}

#[tokio::test]
async fn conformance_usage() {
    let d = tempfile::tempdir().unwrap();
    c::usage_is_filtered_and_summed(&open(&d)).await;
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
