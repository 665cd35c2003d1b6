//! The full-text index, kept off the acknowledgement path, and the tail scan
//! that makes every acknowledged event searchable anyway.
//!
//! Events are indexed by a background thread into a separate SQLite file next
//! to the ledger (`<ledger>-fts`), a contentless FTS5 table keyed by the
//! event's rowid. A separate file has its own write lock, so indexing never
//! blocks the ledger's writer and runs on another core; the writer only
//! signals after each commit. The index is derived data: it records the last
//! indexed rowid and that event's id, and if the pair does not match the ledger
//! (file deleted, ledger restored from a backup) it is rebuilt from the ledger.
//!
//! The indexer wakes on every commit and indexes in chunks of up to `CHUNK`
//! events per transaction, so the index trails ingest by about one chunk or
//! `MIN_INTERVAL`. `backlog()` says how many committed events are not indexed.
//!
//! # Search finds what was acknowledged
//!
//! A search answers from the index *and* from the tail: the committed events
//! past the index's watermark (`indexed.last_rowid`), matched at query time.
//! Why no acknowledged event can be missed, in order:
//!
//! 1. A search runs in one read transaction on the read connection (the
//!    ledger with the index file attached). Its first statement reads the
//!    watermark `W` from the index file, which pins the index's WAL snapshot:
//!    the FTS rows and `W` are written in one index transaction, so that
//!    snapshot holds exactly the events with rowid <= `W` (the indexer takes
//!    rowids in order, and the single writer hands them out in commit order:
//!    events are never deleted, so a rowid is never reused below `W`).
//! 2. The ledger's snapshot is pinned by the next statement, after the search
//!    began, hence after any acknowledgement that preceded it (an append is
//!    acknowledged only after its COMMIT). Every acknowledged event is in it.
//! 3. Such an event has rowid <= `W` (found by the index) or > `W` (found by
//!    the tail scan, which reads rowid > `W` from that same ledger snapshot).
//!    The two sets are disjoint, so counts add up and nothing is listed twice.
//!
//! The tail is matched exactly as FTS5 would once it is indexed, by the same
//! code: its rows are inserted into a scratch FTS5 table of the same
//! definition (`fts_table!`) in a private in-memory connection, and the very
//! same MATCH expression is run there, inside a transaction that is rolled
//! back. No second tokenizer exists to drift from unicode61 (case folding,
//! diacritics, what is a token character). A property test compares the two
//! on random payloads and terms (`sqlite::tests::search_tail`).
//!
//! Only the caller's project's tail is tokenized, and only its rows that pass
//! the query's other filters (other projects' tail rows are walked past in
//! rowid order, not read into the scratch table). The tail is bounded: past
//! `TAIL_SPAN` committed rowids (any project) or `TAIL_EVENTS` / `TAIL_BYTES`
//! of the caller's candidates, the search is refused as overloaded (503 with
//! Retry-After) rather than answered without the events it could not scan.
//! Refusing, not waiting for the indexer: only an index far behind gets there
//! (a rebuild after start, or ingest above the indexer's rate for a while),
//! where a short wait would not help and a long one would hold one of the few
//! read connections; the client retrying is the back-pressure the rest of the
//! API already uses.

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

/// Committed rowids past the watermark (any project) above which a search is
/// refused: finding the caller's rows in a longer tail costs too much (the
/// walk costs about 70 ns per other project's small event: 256,000 of them
/// about 18 ms, `tests::search_tail_cost`). The one bound that depends on
/// other projects, as the index's lag does; the indexer runs at about
/// 135,000 events/s, so only a rebuild or a long burst above that reaches it.
pub(crate) const TAIL_SPAN: i64 = 64 * CHUNK;
/// Candidate tail events (the caller's project, other filters applied) that
/// one search tokenizes, at most: about 1 ms of work per thousand small
/// events (`tests::search_tail_cost`, release build).
pub(crate) const TAIL_EVENTS: usize = 2 * CHUNK as usize;
/// Candidate tail payload bytes that one search tokenizes, at most.
pub(crate) const TAIL_BYTES: usize = CHUNK_BYTES;
/// Scratch connections kept for reuse (more are opened and dropped if needed).
const SCRATCH_KEPT: usize = 8;

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

/// The index table's definition. The tail scan builds its scratch table from
/// this same text, so both tokenize and match alike by construction.
macro_rules! fts_table {
    () => {
        "events_fts USING fts5(payload, project, content='', tokenize='unicode61')"
    };
}

const CREATE_FTS: &str = concat!(
    "CREATE VIRTUAL TABLE IF NOT EXISTS ",
    fts_table!(),
    ";
     -- Merge 8 segments per level, not 4: measured 101k -> 135k rows/s indexed.
     INSERT INTO events_fts (events_fts, rank) VALUES ('automerge', 8);"
);

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
        let existed: bool = conn.query_row(
            "SELECT count(*) > 0 FROM sqlite_master WHERE name = 'events_fts'",
            [],
            |r| r.get(0),
        )?;
        // A new, empty index file is not worth a warning.
        if existed {
            tracing::warn!(
                found = layout,
                expected = INDEX_LAYOUT,
                "full-text index has another layout; rebuilding it from the ledger"
            );
        }
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
    /// Held by the indexer for each chunk (read the ledger, write the
    /// index) and by the writer around the COMMIT of an erasure and its
    /// removal from the index ([`Progress::forget`]): so a chunk read the
    /// erased payload before that COMMIT and is already in the index
    /// (watermark at or past the row), or reads the row after it.
    chunk: Mutex<()>,
    /// The index file, once the indexer opened it.
    index_path: std::sync::OnceLock<PathBuf>,
    /// Tests hold the indexer to make a tail of known size.
    #[cfg(test)]
    held: AtomicBool,
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

    /// Stop the indexer between chunks until the guard is dropped; with it,
    /// the rowid up to which the index holds events.
    pub(crate) fn pause(&self) -> (std::sync::MutexGuard<'_, ()>, i64) {
        let guard = self.chunk.lock().unwrap_or_else(|p| p.into_inner());
        (guard, self.indexed.load(Ordering::Relaxed))
    }

    /// Take erased payloads out of the index (call while paused, after the
    /// erasure committed): rows up to `indexed` were indexed with their
    /// payload, which a contentless FTS5 table deletes only given the same
    /// text; later rows will be indexed as erased (empty).
    pub(crate) fn forget(&self, indexed: i64, erased: &[Erased]) -> rusqlite::Result<()> {
        let Some(path) = self.index_path.get() else {
            return Ok(());
        };
        let conn = Connection::open(path)?;
        conn.execute_batch("PRAGMA busy_timeout = 5000; BEGIN IMMEDIATE")?;
        {
            let mut del = conn.prepare(
                "INSERT INTO events_fts (events_fts, rowid, payload, project)                  VALUES ('delete', ?1, ?2, ?3)",
            )?;
            for e in erased.iter().filter(|e| e.rowid <= indexed) {
                del.execute(params![
                    e.rowid,
                    e.payload,
                    project_token(agentledger_core::ProjectId(e.project))
                ])?;
            }
        }
        conn.execute_batch("COMMIT")
    }

    /// Hold (or release) the indexer: it indexes nothing while held.
    #[cfg(test)]
    pub(crate) fn hold(&self, on: bool) {
        self.held.store(on, Ordering::SeqCst);
        self.committed(0);
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

/// An erased event's row as it was indexed: its payload is needed once
/// more to take its terms out of the index.
pub(crate) struct Erased {
    pub(crate) rowid: i64,
    pub(crate) payload: String,
    pub(crate) project: i64,
}

pub(crate) struct Indexer {
    ledger: Connection,
    index: Connection,
    progress: Arc<Progress>,
}

impl Indexer {
    /// Open both sides; check the index belongs to this ledger, else empty it.
    pub(crate) fn open(ledger: &Path, progress: Arc<Progress>) -> rusqlite::Result<Indexer> {
        let path = index_path(ledger);
        let index = open_index(&path)?;
        let _ = progress.index_path.set(path);
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
            let progress = self.progress.clone();
            let paused = progress.chunk.lock().unwrap_or_else(|p| p.into_inner());
            let done = self.index_chunk();
            drop(paused);
            match done {
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
        #[cfg(test)]
        if self.progress.held.load(Ordering::SeqCst) {
            return Ok(Chunk::Empty);
        }
        let from = self.progress.indexed.load(Ordering::Relaxed);
        let mut rows: Vec<(i64, Vec<u8>, String, i64)> = Vec::new();
        let mut bytes = 0;
        let mut full = false;
        {
            let mut st = self.ledger.prepare_cached(
                "SELECT rowid, id, CASE WHEN erased_at IS NULL THEN payload ELSE '' END, \
                 project_id FROM events WHERE rowid > ?1 ORDER BY rowid LIMIT ?2",
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

/// The search is refused: the index is further behind than a search may scan.
#[derive(Debug)]
pub(crate) struct TailTooLong;

impl std::fmt::Display for TailTooLong {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the full-text index is too far behind to scan the rest; retry shortly")
    }
}

impl std::error::Error for TailTooLong {}

fn tail_too_long() -> rusqlite::Error {
    rusqlite::Error::ToSqlConversionFailure(Box::new(TailTooLong))
}

/// The index's watermark as the read connection sees it. Read first in a
/// search's transaction: it pins the index snapshot the search then uses.
pub(crate) fn watermark(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row(
        "SELECT coalesce((SELECT last_rowid FROM search.indexed), 0)",
        [],
        |r| r.get(0),
    )
}

/// The rowids of the caller's tail events that `fts_match` matches: events
/// with rowid > `watermark` passing `filters` (a WHERE clause over `events e`
/// without the full-text term, with its parameters), matched as the index
/// would match them. Ascending. Refused (`TailTooLong`) past the bounds.
pub(crate) fn tail_matches(
    conn: &Connection,
    scratch: &Scratch,
    watermark: i64,
    filters: &str,
    params: &[rusqlite::types::Value],
    project: agentledger_core::ProjectId,
    fts_match: &str,
) -> rusqlite::Result<Vec<i64>> {
    let top: i64 = conn.query_row("SELECT coalesce(max(rowid), 0) FROM main.events", [], |r| {
        r.get(0)
    })?;
    if top <= watermark {
        return Ok(Vec::new());
    }
    if top - watermark > TAIL_SPAN {
        return Err(tail_too_long());
    }
    // NOT INDEXED: walk the rowid range past the watermark, never a project
    // or session index (which would read all of a project to find its tail).
    let sql = format!(
        "SELECT e.rowid, CASE WHEN e.erased_at IS NULL THEN e.payload ELSE '' END \
         FROM events e NOT INDEXED \
         WHERE e.rowid > ? AND {filters} ORDER BY e.rowid LIMIT {}",
        TAIL_EVENTS + 1
    );
    let mut st = conn.prepare_cached(&sql)?;
    let mut it = st.query(rusqlite::params_from_iter(
        std::iter::once(&rusqlite::types::Value::Integer(watermark)).chain(params.iter()),
    ))?;
    let mut rows: Vec<(i64, String)> = Vec::new();
    let mut bytes = 0;
    while let Some(r) = it.next()? {
        let payload: String = r.get(1)?;
        bytes += payload.len();
        rows.push((r.get(0)?, payload));
        if rows.len() > TAIL_EVENTS || bytes > TAIL_BYTES {
            return Err(tail_too_long());
        }
    }
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    scratch.matches(&rows, &project_token(project), fts_match)
}

/// Private in-memory connections holding an empty FTS5 table of the index's
/// definition, reused across searches.
#[derive(Default)]
pub(crate) struct Scratch {
    idle: Mutex<Vec<Connection>>,
}

impl Scratch {
    fn open() -> rusqlite::Result<Connection> {
        let c = Connection::open_in_memory()?;
        c.execute_batch(concat!("CREATE VIRTUAL TABLE ", fts_table!(), ";"))?;
        Ok(c)
    }

    /// Index `rows` (rowid, payload) of project `token` in a scratch table and
    /// run `fts_match` there; the rows are rolled back afterwards.
    pub(crate) fn matches(
        &self,
        rows: &[(i64, String)],
        token: &str,
        fts_match: &str,
    ) -> rusqlite::Result<Vec<i64>> {
        let kept = self.idle.lock().ok().and_then(|mut v| v.pop());
        let conn = match kept {
            Some(c) => c,
            None => Self::open()?,
        };
        let found = Self::run(&conn, rows, token, fts_match);
        // A connection whose rollback failed may hold rows: never reuse it.
        if found.is_ok()
            && conn.is_autocommit()
            && let Ok(mut idle) = self.idle.lock()
            && idle.len() < SCRATCH_KEPT
        {
            idle.push(conn);
        }
        found
    }

    fn run(
        conn: &Connection,
        rows: &[(i64, String)],
        token: &str,
        fts_match: &str,
    ) -> rusqlite::Result<Vec<i64>> {
        // Dropped (rolled back) at the end: the table is empty again.
        let tx = conn.unchecked_transaction()?;
        {
            let mut ins = tx.prepare_cached(
                "INSERT INTO events_fts (rowid, payload, project) VALUES (?1, ?2, ?3)",
            )?;
            for (rowid, payload) in rows {
                ins.execute(params![rowid, payload, token])?;
            }
        }
        let mut st = tx.prepare_cached(
            "SELECT rowid FROM events_fts WHERE events_fts MATCH ?1 ORDER BY rowid",
        )?;
        let found = st
            .query_map(params![fts_match], |r| r.get::<_, i64>(0))?
            .collect::<rusqlite::Result<Vec<i64>>>()?;
        drop(st);
        tx.rollback()?;
        Ok(found)
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
