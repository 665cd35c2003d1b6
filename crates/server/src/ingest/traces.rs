//! OTLP: the session each trace belongs to, learnt from span attributes, so
//! spans of one trace exported over several requests land in one session.
//! Learnt only from requests that committed (state follows the ledger).

use std::num::NonZeroUsize;
use std::sync::Mutex;

use lru::LruCache;

use agentledger_store::ProjectRef;

/// Sessions by project and trace id.
pub struct TraceSessions(Mutex<LruCache<(i64, [u8; 16]), String>>);

impl TraceSessions {
    pub fn new(capacity: usize) -> Self {
        let cap = NonZeroUsize::new(capacity.max(1)).unwrap_or(NonZeroUsize::MIN);
        TraceSessions(Mutex::new(LruCache::new(cap)))
    }

    pub fn get(&self, project: &ProjectRef, trace: &[u8; 16]) -> Option<String> {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        m.get(&(project.id.0, *trace)).cloned()
    }

    pub fn learn(&self, project: &ProjectRef, learnt: Vec<([u8; 16], String)>) {
        if learnt.is_empty() {
            return;
        }
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        for (t, s) in learnt {
            m.put((project.id.0, t), s);
        }
    }
}
