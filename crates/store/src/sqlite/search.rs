//! The full-text index, kept off the acknowledgement path.
//!
//! Events are indexed by a background thread into a separate SQLite file next
//! to the ledger (`<ledger>-fts`), a contentless FTS5 table keyed by the
//! event's rowid. A separate file has its own write lock, so indexing never
//! blocks the ledger's writer and runs on another core; the writer only
//! signals after each commit. The index is derived data: it records the last
//! indexed rowid and that event's id, and if the pair does not match the ledger
//! (file deleted, ledger restored from a backup) it is rebuilt from the ledger.
//!
//! Freshness: the indexer wakes on every commit and indexes in chunks of up to
//! `CHUNK` events per transaction, so under load search trails ingest by about
//! one chunk (measured by the benchmark, documented in docs/benchmarks.md).
//! `backlog()` says how many committed events are not searchable yet.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

/// Events indexed per transaction, at most.
const CHUNK: i64 = 4_000;
/// Payload bytes indexed per transaction, at most (big events make short chunks).
const CHUNK_BYTES: usize = 8 << 20;
/// Longest sleep between checks when nothing signals.
const IDLE_WAIT: Duration = Duration::from_millis(250);
/// Shortest time between two passes that are not catching up: a trickle of
/// small commits is indexed in one transaction per interval rather than one
/// each (every FTS5 transaction writes and later merges a segment). This is
/// the freshness floor under light load.
const MIN_INTERVAL: Duration = Duration::from_millis(100);

/// The index file of the ledger at `ledger`.
pub fn index_path(ledger: &Path) -> PathBuf {
    let mut p = ledger.as_os_str().to_owned();
    p.push("-fts");
    PathBuf::from(p)
}

/// The index layout this binary writes (`PRAGMA user_version` of the index
/// file). 2: a `project` column holding the owning project's token, so a
/// search's matches, counts and plan are those of one project only. An index
/// of another layout is dropped and rebuilt from the ledger.
const INDEX_LAYOUT: i64 = 2;

const CREATE_FTS: &str = "CREATE VIRTUAL TABLE IF NOT EXISTS events_fts USING fts5(
         payload, project, content='', tokenize='unicode61'
     );
     -- Merge 8 segments per level, not 4: measured 101k -> 135k rows/s indexed.
     INSERT INTO events_fts (events_fts, rank) VALUES ('automerge', 8);";

/// The token that marks a project's events in the index's project column.
pub(crate) fn project_token(project: agentledger_core::ProjectId) -> String {
    format!("p{}", project.0)
}

/// Open (creating) the index file for writing.
pub(crate) fn open_index(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    // The index can always be rebuilt from the ledger: WAL keeps it
    // consistent across a crash, and NORMAL skips the per-commit fsync.
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = NORMAL;
         PRAGMA busy_timeout = 5000;",
    )?;
    let layout: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if layout != INDEX_LAYOUT {
        tracing::warn!(
            found = layout,
            expected = INDEX_LAYOUT,
            "full-text index has another layout; rebuilding it from the ledger"
        );
        conn.execute_batch(
            "BEGIN IMMEDIATE;
             DROP TABLE IF EXISTS events_fts;
             DROP TABLE IF EXISTS indexed;
             COMMIT;",
        )?;
    }
    conn.execute_batch(CREATE_FTS)?;
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS indexed (
             one         INTEGER PRIMARY KEY CHECK (one = 1),
             last_rowid  INTEGER NOT NULL,
             last_id     BLOB
         );",
    )?;
    conn.pragma_update(None, "user_version", INDEX_LAYOUT)?;
    Ok(conn)
}

/// Shared between the writer (which signals) and the store (which reports).
#[derive(Default)]
pub(crate) struct Progress {
    /// Highest rowid committed by the writer (or found at start).
    committed: AtomicI64,
    /// Highest rowid searchable.
    indexed: AtomicI64,
    wake: Mutex<bool>,
    cv: Condvar,
    stop: AtomicBool,
}

impl Progress {
    /// The writer committed events up to `rowid`.
    pub(crate) fn committed(&self, rowid: i64) {
        self.committed.fetch_max(rowid, Ordering::Relaxed);
        if let Ok(mut w) = self.wake.lock() {
            *w = true;
            self.cv.notify_one();
        }
    }

    /// Committed events not yet searchable.
    pub(crate) fn backlog(&self) -> u64 {
        let c = self.committed.load(Ordering::Relaxed);
        let i = self.indexed.load(Ordering::Relaxed);
        c.saturating_sub(i).max(0) as u64
    }

    pub(crate) fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Ok(mut w) = self.wake.lock() {
            *w = true;
            self.cv.notify_one();
        }
    }

    fn wait(&self) {
        let Ok(mut w) = self.wake.lock() else { return };
        if !*w {
            w = match self.cv.wait_timeout(w, IDLE_WAIT) {
                Ok((w, _)) => w,
                Err(_) => return,
            };
        }
        *w = false;
    }
}

pub(crate) struct Indexer {
    ledger: Connection,
    index: Connection,
    progress: Arc<Progress>,
}

impl Indexer {
    /// Open both sides; check the index belongs to this ledger, else empty it.
    pub(crate) fn open(ledger: &Path, progress: Arc<Progress>) -> rusqlite::Result<Indexer> {
        let index = open_index(&index_path(ledger))?;
        let ledger = Connection::open_with_flags(
            ledger,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        ledger.execute_batch("PRAGMA busy_timeout = 5000; PRAGMA query_only = 1;")?;
        let me = Indexer {
            ledger,
            index,
            progress,
        };
        let (last, id) = me.watermark()?;
        let matches = if last == 0 {
            true
        } else {
            let stored: Option<Vec<u8>> = me
                .ledger
                .query_row(
                    "SELECT id FROM events WHERE rowid = ?1",
                    params![last],
                    |r| r.get(0),
                )
                .optional()?;
            stored.is_some() && stored == id
        };
        let last = if matches {
            last
        } else {
            tracing::warn!("full-text index does not match the ledger; rebuilding it");
            me.index.execute_batch(&format!(
                "BEGIN IMMEDIATE;
                 DELETE FROM indexed;
                 DROP TABLE events_fts;
                 {CREATE_FTS}
                 COMMIT;"
            ))?;
            0
        };
        let top: i64 =
            me.ledger
                .query_row("SELECT coalesce(max(rowid), 0) FROM events", [], |r| {
                    r.get(0)
                })?;
        me.progress.indexed.store(last, Ordering::Relaxed);
        me.progress.committed.fetch_max(top, Ordering::Relaxed);
        Ok(me)
    }

    fn watermark(&self) -> rusqlite::Result<(i64, Option<Vec<u8>>)> {
        Ok(self
            .index
            .query_row("SELECT last_rowid, last_id FROM indexed", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()?
            .unwrap_or((0, None)))
    }

    /// Index everything committed, chunk by chunk, until stopped.
    pub(crate) fn run(mut self) {
        let mut failures = 0u32;
        loop {
            let stopping = self.progress.stop.load(Ordering::Relaxed);
            let last_pass = std::time::Instant::now();
            match self.index_chunk() {
                Ok(Chunk::Full) if !stopping => continue,
                Ok(_) => failures = 0,
                Err(e) => {
                    failures += 1;
                    if failures == 1 || failures.is_multiple_of(100) {
                        tracing::error!(error = %e, failures, "full-text indexing failed; will retry");
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
            if stopping {
                break;
            }
            self.progress.wait();
            if let Some(rest) = MIN_INTERVAL.checked_sub(last_pass.elapsed()) {
                std::thread::sleep(rest);
            }
        }
    }

    /// Index the next chunk after the watermark.
    pub(crate) fn index_chunk(&mut self) -> rusqlite::Result<Chunk> {
        let from = self.progress.indexed.load(Ordering::Relaxed);
        let mut rows: Vec<(i64, Vec<u8>, String, i64)> = Vec::new();
        let mut bytes = 0;
        let mut full = false;
        {
            let mut st = self.ledger.prepare_cached(
                "SELECT rowid, id, payload, project_id FROM events \
                 WHERE rowid > ?1 ORDER BY rowid LIMIT ?2",
            )?;
            let mut it = st.query(params![from, CHUNK])?;
            while let Some(r) = it.next()? {
                let payload: String = r.get(2)?;
                bytes += payload.len();
                rows.push((r.get(0)?, r.get(1)?, payload, r.get(3)?));
                if bytes >= CHUNK_BYTES {
                    break;
                }
            }
            if rows.len() == CHUNK as usize || bytes >= CHUNK_BYTES {
                full = true;
            }
        }
        let Some((last, last_id, _, _)) = rows.last() else {
            return Ok(Chunk::Empty);
        };
        let (last, last_id) = (*last, last_id.clone());
        let itx = self.index.transaction()?;
        {
            let mut ins = itx.prepare_cached(
                "INSERT INTO events_fts (rowid, payload, project) VALUES (?1, ?2, ?3)",
            )?;
            for (rowid, _, payload, project) in &rows {
                ins.execute(params![
                    rowid,
                    payload,
                    project_token(agentledger_core::ProjectId(*project))
                ])?;
            }
            itx.execute(
                "INSERT INTO indexed (one, last_rowid, last_id) VALUES (1, ?1, ?2)
                 ON CONFLICT(one) DO UPDATE SET last_rowid = excluded.last_rowid, last_id = excluded.last_id",
                params![last, last_id],
            )?;
        }
        itx.commit()?;
        self.progress.indexed.store(last, Ordering::Relaxed);
        self.progress.committed.fetch_max(last, Ordering::Relaxed);
        Ok(if full { Chunk::Full } else { Chunk::Partial })
    }
}

/// What one indexing pass found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Chunk {
    Empty,
    /// Less than a chunk: caught up.
    Partial,
    /// A whole chunk: more may be waiting.
    Full,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_path_is_a_sibling() {
        assert_eq!(
            index_path(Path::new("/data/ledger.db")),
            PathBuf::from("/data/ledger.db-fts")
        );
    }
}
