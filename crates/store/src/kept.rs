//! The policy states both writers keep beside the chain heads (see
//! [`Judge`]): what one is, how many are kept, and where folding a session's
//! state up to its head starts.

use crate::{FOLD_IN_WRITER, Judge, SessionFold};

/// Policy session states a writer keeps.
pub(crate) const STATE_CACHE: usize = 50_000;

impl Clone for Box<dyn SessionFold> {
    fn clone(&self) -> Self {
        self.clone_box()
    }
}

/// A session's policy state and the seq of the last event folded into it.
#[derive(Clone)]
pub(crate) struct KeptState {
    pub(crate) seq: u64,
    pub(crate) fold: Box<dyn SessionFold>,
}

/// Where the state of `session` at seq `at` (its head) is folded from: the
/// kept one, else the judge's seed, else an empty state for a session of at
/// most [`FOLD_IN_WRITER`] events; each only if at most that many events
/// are left to fold. `None`: the request must be handed back for a seed.
pub(crate) fn fold_from(
    kept: Option<KeptState>,
    at: u64,
    session: &str,
    judge: &mut dyn Judge,
) -> Option<(u64, Box<dyn SessionFold>)> {
    let near = |seq: u64| seq <= at && at - seq <= FOLD_IN_WRITER;
    match kept {
        Some(s) if near(s.seq) => Some((s.seq, s.fold)),
        _ => match judge.seed(session) {
            Some((seq, fold)) if near(seq) => Some((seq, fold)),
            _ if at <= FOLD_IN_WRITER => Some((0, judge.empty())),
            _ => None,
        },
    }
}
