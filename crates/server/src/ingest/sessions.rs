//! The policy checkpoint's session state, kept so that what a request is
//! judged against is exactly the fold of the session's events up to the
//! head its events will be chained onto: never a request that failed, never
//! an order other than the commit order.
//!
//! Flow rules ("no e-mail once a secret was read", "at most 20 shell calls")
//! read this state. How it stays honest without giving up group commit:
//!
//! 1. **Judge and queue under one lock per session.** A request takes the
//!    lock of every session it touches (sorted, so two multi-session batches
//!    cannot deadlock), judges its events against the state, *queues* them
//!    for the writer naming, per session, the seq the state stands at
//!    (`AppendRequest::expect_heads`), and releases the locks. The writer
//!    carries out requests in queue order, so requests to one session are
//!    judged in the order they are chained, and different requests still
//!    share a commit.
//! 2. **The writer checks the seq.** Inside the transaction, a request whose
//!    sessions are not at the expected seqs is refused (`HeadMoved`) and
//!    stores nothing. The state a request was judged against therefore is
//!    the fold of exactly the events before it in the chain.
//! 3. **A failure forgets, a retry re-judges.** The kept state runs ahead of
//!    the commit by the queued requests (that is what lets the next request
//!    be judged without waiting). When a request fails (503, 507, a failed
//!    COMMIT) its sessions' states are dropped; requests queued behind it
//!    were judged against a state that included it, so the writer refuses
//!    them with `HeadMoved`, and the pipeline judges them again against the
//!    state rebuilt from the ledger and queues them again. A client retrying
//!    through failures is judged on what was recorded, once.
//!
//! The kept states are a cache of 50,000 sessions: evicted, never loaded, or
//! dropped, a session's state is rebuilt from the ledger under its lock.
//! Another process appending to the same database is caught the same way:
//! its events move the head, the writer refuses, the state is rebuilt.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

use lru::LruCache;
use tokio::sync::OwnedMutexGuard;

use agentledger_policy::SessionState;
use agentledger_store::{EventStore, ProjectRef, StoreError, StoreResult};

/// Session states kept in memory.
const STATE_CACHE: usize = 50_000;
/// How long a request waits for its session's lock (the requests before it
/// to the same session are being judged and committed) before it is
/// refused as busy (503, Retry-After): a session whose appends are stuck
/// (a stalled disk) must not collect waiting requests without bound.
const SESSION_WAIT: std::time::Duration = std::time::Duration::from_secs(2);
/// Events read per page when a session's state is rebuilt from the ledger.
const REBUILD_PAGE: u32 = 1000;

type Key = (i64, String);

/// A session's state and the seq of the last event folded into it (queued
/// events included).
#[derive(Debug, Clone, Default)]
pub struct Folded {
    pub state: SessionState,
    pub seq: u64,
}

/// Per-session locks and the kept states.
pub struct SessionStates {
    /// One lock per session in use; an entry lives while someone holds or
    /// waits for it.
    locks: Mutex<HashMap<Key, Arc<tokio::sync::Mutex<()>>>>,
    kept: Mutex<LruCache<Key, Folded>>,
}

impl Default for SessionStates {
    fn default() -> Self {
        SessionStates {
            locks: Mutex::new(HashMap::new()),
            kept: Mutex::new(LruCache::new(
                NonZeroUsize::new(STATE_CACHE).unwrap_or(NonZeroUsize::MIN),
            )),
        }
    }
}

/// The locks of the sessions one request touches, and their working states.
pub struct Held {
    owner: Arc<SessionStates>,
    locks: Vec<(Key, Option<OwnedMutexGuard<()>>)>,
    /// Working copies, by session id (the request's project is fixed).
    pub working: HashMap<String, Folded>,
}

impl SessionStates {
    /// Lock `sessions` of `project` (sorted, deduplicated) and load each
    /// one's committed state (kept, or rebuilt from the ledger).
    pub async fn hold(
        self: &Arc<Self>,
        store: &dyn EventStore,
        project: &ProjectRef,
        sessions: impl IntoIterator<Item = String>,
    ) -> StoreResult<Held> {
        let mut ids: Vec<String> = sessions.into_iter().collect();
        ids.sort();
        ids.dedup();
        let mut held = Held {
            owner: self.clone(),
            locks: Vec::with_capacity(ids.len()),
            working: HashMap::with_capacity(ids.len()),
        };
        for id in ids {
            let key: Key = (project.id.0, id);
            let lock = {
                let mut m = self.locks.lock().unwrap_or_else(|p| p.into_inner());
                m.entry(key.clone()).or_default().clone()
            };
            // Pushed before awaiting, so that a request cancelled while
            // waiting still cleans up its entry (Held's Drop).
            held.locks.push((key, None));
            let guard = tokio::time::timeout(SESSION_WAIT, lock.lock_owned())
                .await
                .map_err(|_| StoreError::Overloaded)?;
            if let Some(last) = held.locks.last_mut() {
                last.1 = Some(guard);
            }
        }
        for (key, _) in &held.locks {
            let kept = self
                .kept
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(key)
                .cloned();
            let folded = match kept {
                Some(f) => f,
                None => rebuild(store, project, &key.1).await?,
            };
            held.working.insert(key.1.clone(), folded);
        }
        Ok(held)
    }
}

/// Fold a session's committed events from the ledger.
async fn rebuild(
    store: &dyn EventStore,
    project: &ProjectRef,
    session: &str,
) -> StoreResult<Folded> {
    let mut f = Folded::default();
    loop {
        let page = store
            .session_events(project, session, f.seq, REBUILD_PAGE)
            .await?;
        for ev in &page {
            f.state.apply_stored(ev);
            f.seq = ev.seq;
        }
        if page.len() < REBUILD_PAGE as usize {
            return Ok(f);
        }
    }
}

impl Held {
    /// The seq each held session's state stands at: the heads the request
    /// must be chained onto.
    pub fn heads(&self) -> Vec<(String, u64)> {
        self.working
            .iter()
            .map(|(s, f)| (s.clone(), f.seq))
            .collect()
    }

    /// The request was queued with `events` events per session: keep the
    /// judged states, moved past them, for the next request; release the
    /// locks.
    pub fn queued(mut self, events: &HashMap<String, u64>) {
        let Some(project) = self.locks.first().map(|(k, _)| k.0) else {
            return;
        };
        let mut kept = self.owner.kept.lock().unwrap_or_else(|p| p.into_inner());
        for (session, mut folded) in self.working.drain() {
            folded.seq += events.get(&session).copied().unwrap_or(0);
            kept.put((project, session), folded);
        }
    }
}

impl SessionStates {
    /// Drop the kept states of `sessions` (a request to them failed or was
    /// replayed after they were advanced): they are rebuilt from the ledger
    /// on next use.
    pub fn forget<'a>(&self, project: &ProjectRef, sessions: impl IntoIterator<Item = &'a str>) {
        let mut kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        for s in sessions {
            kept.pop(&(project.id.0, s.to_owned()));
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut m = self.owner.locks.lock().unwrap_or_else(|p| p.into_inner());
        for (key, guard) in self.locks.drain(..) {
            drop(guard);
            // Only the map holds it now: nobody holds or waits for this session.
            if m.get(&key).is_some_and(|l| Arc::strong_count(l) == 1) {
                m.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_session_lock_is_exclusive_and_its_entry_goes_when_released() {
        let dir = tempfile::tempdir().unwrap();
        let store = agentledger_store::sqlite::SqliteStore::open(
            agentledger_store::sqlite::SqliteOptions::new(dir.path().join("l.db")),
        )
        .unwrap();
        let p = agentledger_store::conformance::project(&store, "p").await;
        let states = Arc::new(SessionStates::default());
        let a = states.hold(&store, &p, ["s".to_owned()]).await.unwrap();
        let states2 = states.clone();
        let p2 = p.clone();
        let store = Arc::new(store);
        let s2 = store.clone();
        let waiter = tokio::spawn(async move {
            let _b = states2
                .hold(s2.as_ref(), &p2, ["s".to_owned()])
                .await
                .unwrap();
        });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!waiter.is_finished(), "the second holder waits");
        drop(a);
        waiter.await.unwrap();
        assert!(
            states.locks.lock().unwrap().is_empty(),
            "no entry left behind"
        );
    }
}
