//! WAL checkpoints off the writer's thread.
//!
//! SQLite's automatic checkpoint runs inside the COMMIT that crosses the
//! threshold, so one unlucky group of requests pays for copying the whole WAL
//! back into the database and fsyncing it. The writer's connection turns that
//! off (`wal_autocheckpoint = 0`) and this thread checkpoints instead, with its
//! own connection: PASSIVE checkpoints never block the writer. Readers that are
//! always active keep SQLite from starting the WAL over, so it would grow
//! forever (and every append would pay for extending a file); once it holds
//! `RESTART_FRAMES` pages a RESTART checkpoint waits for the current
//! transaction and readers and lets the next commit write from the start of
//! the file again, which bounds its size. On shutdown a TRUNCATE checkpoint
//! leaves the database file complete on its own.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use rusqlite::Connection;

/// How often to checkpoint.
const PERIOD: Duration = Duration::from_millis(200);
/// WAL frames (pages, 4 KiB) after which a RESTART checkpoint is run.
const RESTART_FRAMES: i64 = 16 * 1024;

#[derive(Default)]
pub(crate) struct Stop {
    flag: AtomicBool,
    lock: Mutex<()>,
    cv: Condvar,
}

impl Stop {
    pub(crate) fn stop(&self) {
        self.flag.store(true, Ordering::Relaxed);
        let _g = self.lock.lock();
        self.cv.notify_all();
    }

    /// Sleep up to `d`; false once stopped.
    fn sleep(&self, d: Duration) -> bool {
        if self.flag.load(Ordering::Relaxed) {
            return false;
        }
        if let Ok(g) = self.lock.lock() {
            let _ = self.cv.wait_timeout(g, d);
        }
        !self.flag.load(Ordering::Relaxed)
    }
}

pub(crate) struct Checkpointer {
    conn: Connection,
    stop: Arc<Stop>,
}

impl Checkpointer {
    pub(crate) fn open(path: &Path, stop: Arc<Stop>) -> rusqlite::Result<Checkpointer> {
        let conn = Connection::open(path)?;
        conn.execute_batch("PRAGMA busy_timeout = 5000; PRAGMA synchronous = FULL;")?;
        Ok(Checkpointer { conn, stop })
    }

    /// (busy, frames in the WAL, frames checkpointed)
    fn checkpoint(&self, mode: &str) -> rusqlite::Result<(i64, i64, i64)> {
        self.conn
            .query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
    }

    pub(crate) fn run(self) {
        while self.stop.sleep(PERIOD) {
            match self.checkpoint("PASSIVE") {
                Ok((_, log, _)) if log >= RESTART_FRAMES => {
                    if let Err(e) = self.checkpoint("RESTART") {
                        tracing::warn!(error = %e, "WAL restart checkpoint failed");
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "WAL checkpoint failed"),
            }
        }
        // Stopped after the writer: fold the WAL back into the database.
        if let Err(e) = self.checkpoint("TRUNCATE") {
            tracing::warn!(error = %e, "final WAL checkpoint failed");
        }
    }
}
