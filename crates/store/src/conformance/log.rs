//! The transparency log's conformance checks (issue 17; see `crate::log`).

use agentledger_core::{Kind, Micros};

use super::{event, project};
use crate::{EventStore, ProjectRef};

/// Integrates every pending event of `p` in passes of `max`; returns the leaves added.
/// (On PostgreSQL an event waits for every older transaction on the server to end: see
/// [`integrate_exactly`] for a count that must be reached.)
pub async fn integrate_all(store: &dyn EventStore, p: &ProjectRef, max: usize) -> u64 {
    let mut added = 0;
    // Bounded: a backend that never finishes fails here instead of hanging.
    for _ in 0..10_000 {
        let pass = store.log_integrate(p, max).await.expect("integrate");
        added += pass.added;
        if pass.added == 0 {
            return added;
        }
    }
    panic!("integration never caught up");
}

/// Integrates exactly `n` more leaves of `p` in passes of at most `max`, waiting (up to 30 s)
/// while none is ready (another transaction on a PostgreSQL server still running).
pub async fn integrate_exactly(store: &dyn EventStore, p: &ProjectRef, n: u64, max: usize) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut done = 0;
    while done < n {
        let want = usize::try_from(n - done).unwrap_or(max).min(max);
        let pass = store.log_integrate(p, want).await.expect("integrate");
        assert!(pass.added <= want as u64, "a pass added more than asked");
        done += pass.added;
        if pass.added == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "only {done} of {n} leaves integrated after 30 s"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
}

/// Transparency log (issue 17): every committed event becomes exactly one leaf of its
/// project's tree, with the documented entry bytes; the tiles give back the root and proofs
/// that verify; integrating again adds nothing; projects' logs are apart; one checkpoint per
/// size.
pub async fn log_integrates_every_event_once(store: &dyn EventStore) {
    use crate::log::{
        LogCheckpoint, LogCosignature, consistency_proof, inclusion_proof, leaf_entry, root_at,
    };
    use agentledger_tlog::{MemoryTree, Tile, leaf_hash, tree_hash, verify_consistency};

    let p = project(store, "p").await;
    let q = project(store, "q").await;
    let mut acked = Vec::new();
    // 300 events (more than one full level 0 tile), over three sessions, in batches.
    for batch in 0..10 {
        let events = (0..30)
            .map(|i| {
                event(
                    ["s1", "s2", "s3"][(batch + i) % 3],
                    Kind::Memory,
                    &format!("{{\"n\":{}}}", batch * 30 + i),
                )
            })
            .collect();
        acked.extend(store.append(&p, events).await.expect("append"));
    }
    let other = store
        .append(&q, vec![event("s1", Kind::Memory, "{}")])
        .await
        .expect("append q");
    assert_eq!(store.log_head(&p).await.expect("head").size, 0);

    // Part of the way, then the rest: the tree grows across passes.
    integrate_exactly(store, &p, 100, 100).await;
    let first = store.log_head(&p).await.expect("head");
    assert_eq!(first.size, 100);
    let root_100 = first.root;
    integrate_exactly(store, &p, 200, 64).await;
    let head = store.log_head(&p).await.expect("head");
    assert_eq!(head.size, 300);
    assert_eq!(integrate_all(store, &p, 64).await, 0, "no event twice");

    // Every event is one leaf, with the documented bytes; the leaves are the tree.
    let entries = store.log_entries(&p, 0, 300).await.expect("entries");
    assert_eq!(entries.len(), 300);
    let tree = MemoryTree::from_entries(&entries);
    assert_eq!(tree_hash(300, &tree).expect("root"), head.root);
    assert_eq!(
        root_at(store, &p, 300).await.expect("root from tiles"),
        head.root
    );
    assert_eq!(root_at(store, &p, 100).await.expect("old root"), root_100);
    let mut seen = std::collections::HashSet::new();
    for a in &acked {
        let index = store
            .log_leaf_index(&p, a.id)
            .await
            .expect("leaf index")
            .expect("integrated");
        assert!(seen.insert(index), "index {index} given twice");
        let entry = leaf_entry(&a.session_id, a.seq, &a.hash).expect("entry");
        assert_eq!(entries[index as usize], entry, "entry of leaf {index}");
        let proof = inclusion_proof(store, &p, index, 300).await.expect("proof");
        agentledger_tlog::verify_inclusion(&leaf_hash(&entry), index, 300, &proof, &head.root)
            .expect("inclusion verifies");
    }
    // In commit order: one session's events keep their seq order in the log.
    for s in ["s1", "s2", "s3"] {
        let mut indices = Vec::new();
        for a in acked.iter().filter(|a| a.session_id == s) {
            indices.push(store.log_leaf_index(&p, a.id).await.expect("index"));
        }
        assert!(indices.windows(2).all(|w| w[0] < w[1]), "{s}: {indices:?}");
    }
    let proof = consistency_proof(store, &p, 100, 300)
        .await
        .expect("consistency");
    verify_consistency(100, 300, &root_100, &head.root, &proof).expect("consistent");

    // Tiles: full and partial ones served at the width asked, nothing past the tree.
    let tiles = [
        Tile {
            level: 0,
            index: 0,
            width: 256,
        },
        Tile {
            level: 0,
            index: 1,
            width: 44,
        },
        Tile {
            level: 0,
            index: 1,
            width: 10,
        },
        Tile {
            level: 0,
            index: 1,
            width: 45,
        },
        Tile {
            level: 1,
            index: 0,
            width: 1,
        },
        Tile {
            level: 0,
            index: 2,
            width: 1,
        },
    ];
    let got = store.log_tiles(&p, &tiles).await.expect("tiles");
    assert_eq!(got[0].as_ref().map(Vec::len), Some(256 * 32));
    assert_eq!(got[1].as_ref().map(Vec::len), Some(44 * 32));
    assert_eq!(got[2].as_deref(), got[1].as_ref().map(|t| &t[..10 * 32]));
    assert_eq!((got[3].is_none(), got[5].is_none()), (true, true));
    assert_eq!(
        got[4].as_deref(),
        Some(
            tree_hash(256, &tree)
                .expect("root of 256")
                .as_bytes()
                .as_slice()
        )
    );

    // Another project's log is its own.
    assert_eq!(
        store.log_leaf_index(&p, other[0].id).await.expect("x"),
        None
    );
    integrate_exactly(store, &q, 1, 64).await;
    assert_eq!(store.log_head(&q).await.expect("head q").size, 1);
    assert_eq!(store.log_head(&p).await.expect("head p").size, 300);
    assert!(store.log_tiles(&q, &tiles[..1]).await.expect("q")[0].is_none());

    // Appends after integration continue the same tree.
    let more = store
        .append(&p, vec![event("s4", Kind::Memory, "{}")])
        .await
        .expect("append");
    integrate_exactly(store, &p, 1, 64).await;
    assert_eq!(integrate_all(store, &p, 64).await, 0);
    assert_eq!(
        store.log_leaf_index(&p, more[0].id).await.expect("index"),
        Some(300)
    );

    // One checkpoint per size: the first kept wins; the latest is the largest size.
    let cp = |size: u64, root: agentledger_tlog::Hash, note: &str| LogCheckpoint {
        size,
        root,
        note: note.as_bytes().to_vec(),
        created_at: Micros(1),
    };
    assert_eq!(store.log_checkpoint(&p, None).await.expect("none"), None);
    let kept = store
        .log_add_checkpoint(&p, cp(100, root_100, "note 100\n"))
        .await
        .expect("keep");
    assert_eq!(kept.note, b"note 100\n");
    let again = store
        .log_add_checkpoint(&p, cp(100, head.root, "another root\n"))
        .await
        .expect("keep");
    assert_eq!((again.root, again.note), (root_100, b"note 100\n".to_vec()));
    store
        .log_add_checkpoint(&p, cp(300, head.root, "note 300\n"))
        .await
        .expect("keep");
    let latest = store.log_checkpoint(&p, None).await.expect("latest");
    assert_eq!(latest.map(|c| c.size), Some(300));
    let at = store.log_checkpoint(&p, Some(100)).await.expect("at 100");
    assert_eq!(at.map(|c| c.root), Some(root_100));
    assert_eq!(store.log_checkpoint(&q, None).await.expect("q"), None);

    // Cosignatures: kept per (size, witness key), the first kept stays, read newest size
    // first, bounded by size and by the number of sizes, and scoped by project.
    let co = |size: u64, witness: &str, key_id: u32, line: &str| LogCosignature {
        size,
        witness: witness.into(),
        key_id,
        line: line.into(),
        created_at: Micros(7),
    };
    assert!(
        store
            .log_cosignatures(&p, None, 10)
            .await
            .expect("none")
            .is_empty()
    );
    store
        .log_add_cosignatures(
            &p,
            vec![
                co(100, "w1", 1, "— w1 a\n"),
                co(100, "w2", 2, "— w2 b\n"),
                co(300, "w1", 1, "— w1 c\n"),
            ],
        )
        .await
        .expect("keep");
    store
        .log_add_cosignatures(
            &p,
            vec![
                co(300, "w1", 1, "— w1 again\n"),
                co(300, "w2", 2, "— w2 d\n"),
            ],
        )
        .await
        .expect("keep");
    let all = store.log_cosignatures(&p, None, 10).await.expect("read");
    let lines: Vec<(u64, &str)> = all.iter().map(|c| (c.size, c.line.as_str())).collect();
    assert_eq!(
        lines,
        [
            (300, "— w1 c\n"),
            (300, "— w2 d\n"),
            (100, "— w1 a\n"),
            (100, "— w2 b\n")
        ]
    );
    assert_eq!(all[0], co(300, "w1", 1, "— w1 c\n"));
    let newest = store.log_cosignatures(&p, None, 1).await.expect("read");
    assert_eq!(newest.len(), 2);
    assert!(newest.iter().all(|c| c.size == 300));
    let older = store
        .log_cosignatures(&p, Some(299), 5)
        .await
        .expect("read");
    assert_eq!(older.len(), 2);
    assert!(older.iter().all(|c| c.size == 100));
    assert!(
        store
            .log_cosignatures(&q, None, 10)
            .await
            .expect("q")
            .is_empty()
    );
}

/// Passes that race each other (and appends) never give an event two indexes nor skip one:
/// three integrators run while 500 events are appended; together with a final catch-up they
/// add exactly 500 leaves, each event at one index, and the leaves are the tree.
pub async fn log_racing_passes_integrate_each_event_once(store: &dyn EventStore) {
    use crate::StoreError;
    use crate::log::leaf_entry;
    use agentledger_tlog::{MemoryTree, tree_hash};

    let p = project(store, "race").await;
    let appends = async {
        let mut acked = Vec::new();
        for batch in 0..20 {
            let events = (0..25)
                .map(|i| {
                    event(
                        ["r1", "r2"][(batch + i) % 2],
                        Kind::Memory,
                        &format!("{{\"n\":{}}}", batch * 25 + i),
                    )
                })
                .collect();
            acked.extend(store.append(&p, events).await.expect("append"));
            tokio::task::yield_now().await;
        }
        acked
    };
    let racer = |max: usize| {
        let p = &p;
        async move {
            let mut added = 0;
            for _ in 0..60 {
                match store.log_integrate(p, max).await {
                    Ok(pass) => added += pass.added,
                    // Lost the race too often in a row: others made progress.
                    Err(StoreError::Overloaded) => {}
                    Err(e) => panic!("integrate: {e}"),
                }
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
            added
        }
    };
    let (acked, a, b, c) = tokio::join!(appends, racer(7), racer(32), racer(100));
    assert!(a + b + c <= 500, "{a} + {b} + {c} leaves for 500 events");
    integrate_exactly(store, &p, 500 - (a + b + c), 64).await;
    assert_eq!(integrate_all(store, &p, 64).await, 0, "no event twice");
    let head = store.log_head(&p).await.expect("head");
    assert_eq!(head.size, 500);
    let entries = store.log_entries(&p, 0, 500).await.expect("entries");
    assert_eq!(entries.len(), 500);
    let tree = MemoryTree::from_entries(&entries);
    assert_eq!(tree_hash(500, &tree).expect("root"), head.root);
    let mut seen = std::collections::HashSet::new();
    for e in &acked {
        let index = store
            .log_leaf_index(&p, e.id)
            .await
            .expect("leaf index")
            .expect("integrated");
        assert!(seen.insert(index), "index {index} given twice");
        let entry = leaf_entry(&e.session_id, e.seq, &e.hash).expect("entry");
        assert_eq!(entries[index as usize], entry, "entry of leaf {index}");
    }
}
