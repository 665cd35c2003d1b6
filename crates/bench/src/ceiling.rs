//! The machine's ceiling, measured in the same run: the storage engine alone
//! inserting the same rows (same schema, indexes and durability settings, the
//! writer's own INSERT statement and connection) with no HTTP, no JSON parsing
//! and no hashing; the disk's fsync rate; and single-row commits. The
//! full-text index is maintained off the acknowledgement path by a background
//! indexer in the server, so the ceiling leaves it out too (its freshness is
//! measured by the ingest scenarios instead).

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use rusqlite::params;

use agentledger_store::sqlite::{INSERT_EVENT_SQL, open_writer};

use crate::events::{STANDARD_METADATA, standard_payload};
use crate::report::Row;

pub struct Ceiling {
    pub rows: u64,
    pub batch_seconds: f64,
    pub batch_rows_per_sec: f64,
    pub single_commits: u64,
    pub single_commits_per_sec: f64,
    pub fsyncs: u64,
    pub fsync_per_sec: f64,
}

const SESSIONS: i64 = 100;

struct Inserter {
    conn: rusqlite::Connection,
    seq: Vec<i64>,
    session_rowids: Vec<i64>,
    next: u64,
}

impl Inserter {
    fn new(path: &Path) -> rusqlite::Result<Self> {
        let conn =
            open_writer(path).map_err(|e| rusqlite::Error::InvalidParameterName(e.to_string()))?;
        conn.execute(
            "INSERT INTO projects (name, created_at) VALUES ('bench', 0)",
            [],
        )?;
        let mut session_rowids = Vec::new();
        for s in 0..SESSIONS {
            conn.execute(
                "INSERT INTO sessions (id, project_id, agent_id, metadata, created_at, status, head_seq)
                 VALUES (?1, 1, 'bench-agent', '{}', 0, 0, 0)",
                params![format!("bench-{s}")],
            )?;
            session_rowids.push(conn.last_insert_rowid());
        }
        Ok(Inserter {
            conn,
            seq: vec![0; SESSIONS as usize],
            session_rowids,
            next: 0,
        })
    }

    /// Insert one row exactly as the writer would, with stand-in hashes.
    fn insert(&mut self, payload: &str) -> rusqlite::Result<()> {
        let i = self.next;
        self.next += 1;
        let s = (i % SESSIONS as u64) as usize;
        self.seq[s] += 1;
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&i.to_be_bytes());
        id[8..].copy_from_slice(&(i ^ 0x5a5a_5a5a).to_le_bytes());
        let mut h = [7u8; 32];
        h[..8].copy_from_slice(&i.to_le_bytes());
        self.conn
            .prepare_cached(INSERT_EVENT_SQL)?
            .execute(params![
                &id[..],
                1i64,
                self.session_rowids[s],
                self.seq[s],
                "bench-agent",
                5i64,
                "tool_call",
                0i64,
                1i64,
                Option::<i64>::None,
                1_700_000_000_000_000i64 + i as i64,
                payload,
                STANDARD_METADATA,
                &h[..],
                &h[..],
                &h[..],
                Option::<&str>::None,
                Option::<i64>::None,
                Option::<i64>::None,
                Option::<f64>::None,
                2i64,
                Option::<&str>::None,
                Option::<i64>::None,
                Option::<&[u8]>::None,
                Option::<&[u8]>::None,
            ])?;
        Ok(())
    }
}

pub fn measure(dir: &Path, rows: u64) -> rusqlite::Result<Ceiling> {
    // Payloads are built before timing: the ceiling excludes JSON work.
    let payloads: Vec<String> = (0..1000).map(standard_payload).collect();
    let mut ins = Inserter::new(&dir.join("ceiling-batch.db"))?;
    let started = Instant::now();
    insert_batches(&mut ins, &payloads, rows)?;
    let batch_seconds = started.elapsed().as_secs_f64();

    let mut single = Inserter::new(&dir.join("ceiling-single.db"))?;
    let single_commits = 3_000;
    let started = Instant::now();
    for k in 0..single_commits {
        single.conn.execute_batch("BEGIN IMMEDIATE")?;
        single.insert(&payloads[(k % 1000) as usize])?;
        single.conn.execute_batch("COMMIT")?;
    }
    let single_seconds = started.elapsed().as_secs_f64();

    let (fsyncs, fsync_seconds) =
        fsync_rate(dir).map_err(|e| rusqlite::Error::InvalidParameterName(e.to_string()))?;
    Ok(Ceiling {
        rows,
        batch_seconds,
        batch_rows_per_sec: rows as f64 / batch_seconds,
        single_commits,
        single_commits_per_sec: single_commits as f64 / single_seconds,
        fsyncs,
        fsync_per_sec: fsyncs as f64 / fsync_seconds,
    })
}

/// Insert `rows` rows in transactions of 1000.
fn insert_batches(ins: &mut Inserter, payloads: &[String], rows: u64) -> rusqlite::Result<()> {
    let mut done = 0;
    while done < rows {
        let n = (rows - done).min(1000);
        ins.conn.execute_batch("BEGIN IMMEDIATE")?;
        for k in 0..n {
            ins.insert(&payloads[k as usize % payloads.len()])?;
        }
        ins.conn.execute_batch("COMMIT")?;
        done += n;
    }
    Ok(())
}

/// A ledger of `rows` rows written as the batch ceiling writes them, round
/// robin over sessions `bench-0` to `bench-99` (for tests of other ceilings).
#[cfg(test)]
pub fn fill(path: &Path, rows: u64) -> rusqlite::Result<()> {
    let payloads: Vec<String> = (0..1000).map(standard_payload).collect();
    insert_batches(&mut Inserter::new(path)?, &payloads, rows)
}

/// Append 4 KiB and fdatasync, repeatedly, for about one second.
fn fsync_rate(dir: &Path) -> std::io::Result<(u64, f64)> {
    let mut f = std::fs::File::create(dir.join("fsync.probe"))?;
    let block = vec![0xabu8; 4096];
    let started = Instant::now();
    let mut n = 0;
    while started.elapsed().as_secs_f64() < 1.0 {
        f.write_all(&block)?;
        f.sync_data()?;
        n += 1;
    }
    Ok((n, started.elapsed().as_secs_f64()))
}

impl Ceiling {
    pub fn rows(&self) -> Vec<Row> {
        vec![
            Row::throughput(
                "ceiling: raw insert, 1000-row txns",
                self.rows,
                self.batch_seconds,
                None,
            )
            .note("same schema, indexes, durability; no HTTP/JSON/hash; FTS is off the ack path"),
            Row::throughput(
                "ceiling: raw insert, 1 row per txn",
                self.single_commits,
                self.single_commits as f64 / self.single_commits_per_sec,
                None,
            )
            .note("what single events cost without group commit"),
            Row::throughput(
                "ceiling: disk fdatasync of 4 KiB",
                self.fsyncs,
                self.fsyncs as f64 / self.fsync_per_sec,
                None,
            )
            .unit("fsync/s"),
        ]
    }
}
