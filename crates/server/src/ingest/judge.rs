//! The policy checkpoint as the store's writer runs it.
//!
//! Flow rules ("no e-mail once a secret was read", "at most 20 shell calls")
//! read the session's state, so what a request is judged against must be
//! exactly the fold of the session's committed events before it, in commit
//! order: never a request that failed, never two requests judged in one
//! order and chained in the other, never a node that missed what another
//! appended. The pipeline gets that by splitting judging in two:
//!
//! 1. **Detectors, before the queue.** [`Engine::scan`] reads no session and
//!    is the costly part, so it runs for every request in parallel, before
//!    the request is queued.
//! 2. **Decisions, in the writer.** A [`PolicyJudge`] travels with the request
//!    and the store calls it inside the transaction that appends it, with
//!    the session heads locked (`agentledger_store::Judge`): Cedar against
//!    the state the store keeps beside each head ([`PolicyState`]), which
//!    moves on only when that transaction commits.
//!
//! A state the store does not keep (a restart, an eviction) is folded by the
//! store from the session's events when the session is short; a long one is
//! handed back ([`AppendOutcome::NeedsState`](agentledger_store::AppendOutcome))
//! and rebuilt here from the ledger on the read path, off the writer, then
//! offered as a seed ([`Seeds`]) when the request is queued again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use agentledger_core::NewEvent;
use agentledger_core::verdict::Verdict;
use agentledger_policy::engine::Scanned;
use agentledger_policy::{Engine, SessionState};
use agentledger_store::{
    EventStore, Judge, ProjectRef, SessionFold, SessionStates, StoreError, StoreResult,
};

use super::check;

/// Events read per page when a session's state is rebuilt from the ledger.
const REBUILD_PAGE: u32 = 1000;

/// A session's policy state as the store keeps it.
#[derive(Debug, Clone, Default)]
pub struct PolicyState(pub SessionState);

impl SessionFold for PolicyState {
    fn apply_stored(&mut self, ev: &agentledger_core::Event) {
        self.0.apply_stored(ev);
    }
    fn clone_box(&self) -> Box<dyn SessionFold> {
        Box::new(self.clone())
    }
    fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
        self
    }
}

/// States rebuilt from the ledger for a request handed back, by session:
/// the seq folded up to and the state.
pub type Seeds = Arc<Mutex<HashMap<String, (u64, SessionState)>>>;

/// One request's judge: the detectors' findings for each event as sent, and
/// how to decide them.
pub struct PolicyJudge {
    pub engine: Arc<Engine>,
    pub project: i64,
    /// One per event as sent; taken by the first attempt (a retried
    /// transaction scans again).
    pub scanned: Vec<Option<Scanned>>,
    /// The one event is a proposed action: judge it as a check and store the
    /// check's record (see [`check`]).
    pub check: bool,
    pub seeds: Seeds,
}

impl Judge for PolicyJudge {
    fn empty(&self) -> Box<dyn SessionFold> {
        Box::new(PolicyState::default())
    }

    fn seed(&mut self, session: &str) -> Option<(u64, Box<dyn SessionFold>)> {
        let seeds = self.seeds.lock().unwrap_or_else(|p| p.into_inner());
        seeds.get(session).map(|(seq, s)| {
            (
                *seq,
                Box::new(PolicyState(s.clone())) as Box<dyn SessionFold>,
            )
        })
    }

    fn judge(
        &mut self,
        events: Vec<NewEvent>,
        states: &mut SessionStates,
    ) -> StoreResult<(Vec<NewEvent>, Vec<Verdict>)> {
        let mut judged = Vec::with_capacity(events.len());
        let mut verdicts = Vec::with_capacity(events.len());
        for (i, mut ev) in events.into_iter().enumerate() {
            let state = states
                .get_mut(ev.session_id.as_str())
                .and_then(|f| f.as_any_mut().downcast_mut::<PolicyState>())
                .ok_or_else(|| {
                    StoreError::Judge(format!("no state for session {}", ev.session_id))
                })?;
            let scanned = match self.scanned.get_mut(i).and_then(Option::take) {
                Some(s) => s,
                None => self.engine.scan(self.project, &ev, self.check),
            };
            // The caller's project is judged by its own set (or the
            // operator's default), never by another project's: the one
            // the scan found in force.
            let v = self.engine.decide(&mut ev, scanned, &mut state.0);
            judged.push(ev);
            verdicts.push(v);
        }
        if self.check {
            judged = check::record(judged, &verdicts)
                .map_err(|e| StoreError::Judge(format!("recording the check: {e:?}")))?;
        }
        Ok((judged, verdicts))
    }
}

/// Fold a session's committed events from the ledger (the read path, off
/// the writer): the seq folded up to and the state.
pub async fn rebuild(
    store: &dyn EventStore,
    project: &ProjectRef,
    session: &str,
) -> StoreResult<(u64, SessionState)> {
    let (mut seq, mut state) = (0, SessionState::default());
    loop {
        let page = store
            .session_events(project, session, seq, REBUILD_PAGE)
            .await?;
        for ev in &page {
            state.apply_stored(ev);
            seq = ev.seq;
        }
        if page.len() < REBUILD_PAGE as usize {
            return Ok((seq, state));
        }
    }
}
