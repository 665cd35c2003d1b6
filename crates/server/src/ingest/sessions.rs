//! The policy checkpoint's session state, kept so that what a request is
//! judged against is exactly the fold of the session's events up to the
//! head its events will be chained onto: never a request that failed, never
//! an order other than the commit order.
//!
//! Flow rules ("no e-mail once a secret was read", "at most 20 shell calls")
//! read this state. How it stays honest without giving up group commit:
//!
//! 1. **Tickets: judge and queue in one order per session.** A request takes
//!    a ticket for every session it touches, all at once (so the tickets of
//!    any two requests are in the same order on every session they share:
//!    no cycle, no deadlock). On each session in turn it waits until every
//!    earlier ticket has been judged there, judges its own events for that
//!    session against the state, and passes the state on; then it waits
//!    until every earlier ticket of its sessions has been queued for the
//!    writer, and queues its events naming, per session, the seq the state
//!    stood at (`AppendRequest::expect_heads`). The writer carries out
//!    requests in queue order, so requests to one session are judged in the
//!    order they are chained; two batches over the same sessions are judged
//!    side by side, one session apart, and still share a commit.
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
use tokio::sync::Notify;

use agentledger_policy::SessionState;
use agentledger_store::{EventStore, ProjectRef, StoreError, StoreResult};

/// Session states kept in memory.
const STATE_CACHE: usize = 50_000;
/// How long a request waits for its turn on a session (the requests before
/// it there are being judged and queued, or the session's state rebuilt)
/// before it is refused as busy (503, Retry-After): a session whose appends
/// are stuck must not collect waiting requests without bound.
const TURN_WAIT: std::time::Duration = std::time::Duration::from_secs(2);
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

/// A session in use: its tickets and, between turns, its state.
#[derive(Default)]
struct Slot {
    inner: Mutex<Turns>,
    turn: Notify,
}

#[derive(Default)]
struct Turns {
    /// The next ticket to hand out.
    next: u64,
    /// Tickets below this have been judged here (or gave up).
    judged: u64,
    /// Tickets below this have been queued for the writer (or gave up).
    queued: u64,
    /// The state after the last judged ticket; `None`: load it (kept, or
    /// rebuilt from the ledger).
    state: Option<Folded>,
    /// Tickets that gave up before their turn came (skipped when it does).
    gave_up_judging: std::collections::BTreeSet<u64>,
    gave_up_queueing: std::collections::BTreeSet<u64>,
}

impl Turns {
    /// Ticket `ticket` is done judging (or gave up): move the turn on, past
    /// any later ticket that gave up already.
    fn judged(&mut self, ticket: u64) {
        if self.judged == ticket {
            self.judged += 1;
            while self.gave_up_judging.remove(&self.judged) {
                self.judged += 1;
            }
        } else if ticket > self.judged {
            self.gave_up_judging.insert(ticket);
        }
    }

    fn queued(&mut self, ticket: u64) {
        if self.queued == ticket {
            self.queued += 1;
            while self.gave_up_queueing.remove(&self.queued) {
                self.queued += 1;
            }
        } else if ticket > self.queued {
            self.gave_up_queueing.insert(ticket);
        }
    }
}

/// Per-session tickets and the kept states.
pub struct SessionStates {
    /// Sessions in use: an entry lives while a ticket of it is out.
    slots: Mutex<HashMap<Key, Arc<Slot>>>,
    /// States at rest.
    kept: Mutex<LruCache<Key, Folded>>,
}

impl Default for SessionStates {
    fn default() -> Self {
        SessionStates {
            slots: Mutex::new(HashMap::new()),
            kept: Mutex::new(LruCache::new(
                NonZeroUsize::new(STATE_CACHE).unwrap_or(NonZeroUsize::MIN),
            )),
        }
    }
}

struct Entry {
    key: Key,
    slot: Arc<Slot>,
    ticket: u64,
    judged: bool,
    queued: bool,
}

/// One request's tickets, in session order. Dropped without having judged
/// or queued on a session, it gives its turn up there, so no later request
/// waits for it.
pub struct Tickets {
    owner: Arc<SessionStates>,
    entries: Vec<Entry>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl SessionStates {
    /// Tickets for `sessions` of `project` (sorted, deduplicated), taken
    /// all at once.
    pub fn tickets(
        self: &Arc<Self>,
        project: &ProjectRef,
        sessions: impl IntoIterator<Item = String>,
    ) -> Tickets {
        let mut ids: Vec<String> = sessions.into_iter().collect();
        ids.sort();
        ids.dedup();
        let mut slots = lock(&self.slots);
        let entries = ids
            .into_iter()
            .map(|id| {
                let key: Key = (project.id.0, id);
                let slot = slots.entry(key.clone()).or_default().clone();
                let ticket = {
                    let mut t = lock(&slot.inner);
                    t.next += 1;
                    t.next - 1
                };
                Entry {
                    key,
                    slot,
                    ticket,
                    judged: false,
                    queued: false,
                }
            })
            .collect();
        Tickets {
            owner: self.clone(),
            entries,
        }
    }

    /// Drop the kept states of `sessions` (a request to them failed or was
    /// replayed after they were advanced): they are rebuilt from the ledger
    /// on next use.
    pub fn forget<'a>(&self, project: &ProjectRef, sessions: impl IntoIterator<Item = &'a str>) {
        let slots = lock(&self.slots);
        let mut kept = lock(&self.kept);
        for s in sessions {
            let key = (project.id.0, s.to_owned());
            kept.pop(&key);
            if let Some(slot) = slots.get(&key) {
                lock(&slot.inner).state = None;
            }
        }
    }
}

/// Wait until `ready` holds for a slot's turns, at most [`TURN_WAIT`].
async fn wait_for(slot: &Slot, ready: impl Fn(&Turns) -> bool) -> StoreResult<()> {
    let wait = async {
        loop {
            let notified = slot.turn.notified();
            tokio::pin!(notified);
            // Registered before checking, so a notification in between is
            // not lost.
            notified.as_mut().enable();
            if ready(&lock(&slot.inner)) {
                return;
            }
            notified.await;
        }
    };
    tokio::time::timeout(TURN_WAIT, wait).await.map_err(|_| {
        tracing::warn!("a request waited over 2 s for its turn on a session; answered 503");
        StoreError::Overloaded
    })
}

impl Tickets {
    /// The sessions, in ticket (sorted) order.
    pub fn sessions(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|e| e.key.1.as_str())
    }

    /// Wait for this request's turn to judge on session `i` (every earlier
    /// ticket there has been judged) and take the state.
    pub async fn turn(
        &mut self,
        i: usize,
        store: &dyn EventStore,
        project: &ProjectRef,
    ) -> StoreResult<Folded> {
        let (slot, ticket, key) = match self.entries.get(i) {
            Some(e) => (e.slot.clone(), e.ticket, e.key.clone()),
            None => return Err(StoreError::Storage("no such ticket".into())),
        };
        wait_for(&slot, |t| t.judged == ticket).await?;
        let state = lock(&slot.inner).state.take();
        if let Some(f) = state {
            return Ok(f);
        }
        let kept = lock(&self.owner.kept).pop(&key);
        match kept {
            Some(f) => Ok(f),
            None => rebuild(store, project, &key.1).await,
        }
    }

    /// Session `i` was judged: its state (moved past this request's events)
    /// goes to the next ticket.
    pub fn judged(&mut self, i: usize, state: Folded) {
        if let Some(e) = self.entries.get_mut(i) {
            let mut t = lock(&e.slot.inner);
            t.state = Some(state);
            t.judged(e.ticket);
            drop(t);
            e.judged = true;
            e.slot.turn.notify_waiters();
        }
    }

    /// Wait until every earlier ticket of these sessions has been queued.
    pub async fn queue_turn(&self) -> StoreResult<()> {
        for e in &self.entries {
            let ticket = e.ticket;
            wait_for(&e.slot, |t| t.queued == ticket).await?;
        }
        Ok(())
    }

    /// The request was queued: the next tickets may queue.
    pub fn queued(mut self) {
        for e in &mut self.entries {
            e.queued = true;
            lock(&e.slot.inner).queued(e.ticket);
            e.slot.turn.notify_waiters();
        }
    }
}

impl Drop for Tickets {
    fn drop(&mut self) {
        let mut slots = lock(&self.owner.slots);
        let mut kept = lock(&self.owner.kept);
        for e in self.entries.drain(..) {
            {
                let mut t = lock(&e.slot.inner);
                // Gave up before judging or queueing here: pass the turn on
                // (if it took the state, the next ticket loads or rebuilds
                // it; a state that runs ahead of the ledger is caught by the
                // writer's seq check).
                if !e.judged {
                    t.judged(e.ticket);
                }
                if !e.queued {
                    t.queued(e.ticket);
                }
                // The last ticket out puts the state to rest.
                if t.queued == t.next && t.judged == t.next {
                    if let Some(f) = t.state.take() {
                        kept.put(e.key.clone(), f);
                    }
                    drop(t);
                    if Arc::strong_count(&e.slot) == 2 {
                        slots.remove(&e.key);
                    }
                }
            }
            e.slot.turn.notify_waiters();
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    async fn store() -> (tempfile::TempDir, Arc<dyn EventStore>, ProjectRef) {
        let dir = tempfile::tempdir().unwrap();
        let store = agentledger_store::sqlite::SqliteStore::open(
            agentledger_store::sqlite::SqliteOptions::new(dir.path().join("l.db")),
        )
        .unwrap();
        let p = agentledger_store::conformance::project(&store, "p").await;
        (dir, Arc::new(store), p)
    }

    #[tokio::test]
    async fn turns_follow_tickets_and_slots_go_when_done() {
        let (_d, store, p) = store().await;
        let states = Arc::new(SessionStates::default());
        let mut a = states.tickets(&p, ["s".to_owned(), "t".to_owned()]);
        let mut b = states.tickets(&p, ["s".to_owned()]);
        // b cannot judge s before a has.
        let early = tokio::time::timeout(
            std::time::Duration::from_millis(50),
            b.turn(0, store.as_ref(), &p),
        )
        .await;
        assert!(early.is_err(), "b waits for a's turn on s");
        let f = a.turn(0, store.as_ref(), &p).await.unwrap();
        a.judged(
            0,
            Folded {
                seq: f.seq + 1,
                ..f
            },
        );
        let f = b.turn(0, store.as_ref(), &p).await.unwrap();
        assert_eq!(f.seq, 1, "b sees a's judged state");
        b.judged(0, Folded { seq: 2, ..f });
        // b cannot queue before a.
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(50), b.queue_turn())
                .await
                .is_err()
        );
        let f = a.turn(1, store.as_ref(), &p).await.unwrap();
        a.judged(1, f);
        a.queue_turn().await.unwrap();
        a.queued();
        b.queue_turn().await.unwrap();
        b.queued();
        assert!(lock(&states.slots).is_empty(), "no slot left behind");
        assert_eq!(
            lock(&states.kept)
                .get(&(p.id.0, "s".to_owned()))
                .map(|f| f.seq),
            Some(2)
        );
    }

    #[tokio::test]
    async fn a_request_that_gives_up_passes_its_turn() {
        let (_d, store, p) = store().await;
        let states = Arc::new(SessionStates::default());
        let a = states.tickets(&p, ["s".to_owned()]);
        let mut b = states.tickets(&p, ["s".to_owned()]);
        drop(a);
        let f = b.turn(0, store.as_ref(), &p).await.unwrap();
        assert_eq!(f.seq, 0, "rebuilt from the (empty) ledger");
    }
}
