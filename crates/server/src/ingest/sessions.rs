//! The policy checkpoint's session state, kept so that it is exactly the
//! fold of the session's *committed* events, in commit order.
//!
//! Flow rules ("no e-mail once a secret was read", "at most 20 shell calls")
//! read this state. Two rules keep it honest:
//!
//! 1. **Judge and commit under one lock per session.** A request takes the
//!    lock of every session it touches (sorted, so two multi-session batches
//!    cannot deadlock), judges against the state, appends, and only then
//!    releases. Two concurrent requests to one session are therefore judged
//!    in the order they commit, and the second sees the first's events.
//! 2. **Judge a copy; keep it only after COMMIT.** Judging folds events into
//!    a working copy. The copy replaces the kept state only when the append
//!    committed; a request refused by the store (503 back-pressure, 507 disk
//!    full, a failed COMMIT) leaves the state as it was, so its retry is not
//!    counted twice.
//!
//! The kept states are a cache: evicted or never loaded, a session's state is
//! rebuilt from the ledger, under its lock (so no commit of that session is in
//! flight). It remembers the seq it has folded up to; when a commit shows
//! that the session moved past that on its own (another writer of the same
//! database), the state is dropped and rebuilt on next use.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

use lru::LruCache;
use tokio::sync::OwnedMutexGuard;

use agentledger_policy::SessionState;
use agentledger_store::{AppendedEvent, EventStore, ProjectRef, StoreError, StoreResult};

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

/// A session's state and the seq of the last event folded into it.
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
    /// The request committed: keep the working states, each moved to the
    /// seq its session reached. A session that also took events from
    /// elsewhere (its first new seq is not the next one) is dropped, to be
    /// rebuilt from the ledger.
    pub fn committed(mut self, appended: &[AppendedEvent]) {
        let mut first: HashMap<&str, u64> = HashMap::new();
        let mut last: HashMap<&str, u64> = HashMap::new();
        for a in appended {
            first.entry(a.session_id.as_str()).or_insert(a.seq);
            last.insert(a.session_id.as_str(), a.seq);
        }
        let project = match self.locks.first() {
            Some((k, _)) => k.0,
            None => return,
        };
        let mut kept = self.owner.kept.lock().unwrap_or_else(|p| p.into_inner());
        for (session, mut folded) in self.working.drain() {
            let key = (project, session);
            match first.get(key.1.as_str()) {
                // Judged but nothing appended to it (a replay): unchanged.
                None => {}
                Some(&f) if f == folded.seq + 1 => {
                    folded.seq = last.get(key.1.as_str()).copied().unwrap_or(f);
                    kept.put(key, folded);
                }
                Some(_) => {
                    kept.pop(&key);
                }
            }
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
