//! Storage faults injected at the store boundary, so tests can prove what a
//! failing disk does to a request: a failed write or a failed COMMIT (what a
//! failed fsync looks like to SQLite) answers an error, stores nothing and
//! leaves every chain head where it was. Not reachable from the CLI or HTTP:
//! only code that builds [`super::SqliteOptions`] can set it.

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct Faults {
    writes: AtomicU64,
    commits: AtomicU64,
}

impl Faults {
    /// The next `n` event inserts fail as an I/O error would.
    pub fn fail_next_writes(&self, n: u64) {
        self.writes.store(n, Ordering::SeqCst);
    }

    /// The next `n` COMMITs fail (the transaction is rolled back), as a
    /// failed fsync of the WAL would.
    pub fn fail_next_commits(&self, n: u64) {
        self.commits.store(n, Ordering::SeqCst);
    }

    fn take(counter: &AtomicU64) -> bool {
        counter
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }

    pub(crate) fn write_fails(&self) -> bool {
        Self::take(&self.writes)
    }

    pub(crate) fn commit_fails(&self) -> bool {
        Self::take(&self.commits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_down_to_zero_and_stays_there() {
        let f = Faults::default();
        assert!(!f.commit_fails());
        f.fail_next_commits(2);
        assert!(f.commit_fails() && f.commit_fails());
        assert!(!f.commit_fails());
        f.fail_next_writes(1);
        assert!(f.write_fails() && !f.write_fails());
    }
}
