//! The machine's ceiling for verifying one session, measured in the same run
//! on the same ledger: what reading and hashing its stored rows costs, as the
//! server reads them (SQLite's own reads, no memory mapping).
//!
//! It reads every field the chain covers, of every event of the session (and
//! the session header the first event's hash covers), through the same index,
//! in the same chunks as the server's verify, on as many threads as the
//! machine has cores, and hashes each event's bytes once with SHA-256: the
//! payload alone (compared with its stored digest, so a ceiling that read
//! nothing cannot pass), then the other columns together. No envelope is
//! written, nothing is parsed, no derived column is checked, no HTTP. What the
//! server's verify spends beyond it is the cost of the format (the JSON
//! envelope and its nested digests) and of verify's checks (the chain's
//! order, the derived columns, the session row).

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags, Row, params};

use agentledger_core::chain::sha256;

/// The event columns the chain covers (docs/hash-chain.md), the payload and
/// its stored digest first, then the seq.
const SQL: &str = "SELECT payload, payload_sha256, seq, id, agent_id, kind, source_type, \
    dialect, severity, client_ts, server_ts, metadata, prev_hash, hash, envelope_version, \
    verdict, original_payload_sha256, original_metadata_sha256 \
    FROM events WHERE session_ref = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3";

/// The session, and its header (covered by its first event's hash).
const SESSION_SQL: &str = "SELECT rowid, agent_id, system_prompt, metadata, created_at \
    FROM sessions WHERE id = ?1 AND (SELECT count(*) FROM sessions WHERE id = ?1) = 1";

/// Events per read, as the server's verify reads them.
const CHUNK: u64 = agentledger_store::verify::CHUNK as u64;

/// One pass over a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pass {
    /// Events read and hashed.
    pub events: u64,
    /// Of those, the ones whose payload hashed to its stored digest.
    pub matched: u64,
    /// The digests of every event's other columns and of the session header,
    /// combined (exclusive or: the same whatever the threads and chunks).
    pub digest: [u8; 32],
}

/// Read and hash every event of `session` (its id; the ledger must hold one
/// session of that id) on `threads` threads.
pub fn pass(db: &Path, session: &str, threads: usize) -> Result<Pass, String> {
    pass_in_chunks(db, session, threads, CHUNK)
}

fn pass_in_chunks(db: &Path, session: &str, threads: usize, chunk: u64) -> Result<Pass, String> {
    let mut bytes = Vec::with_capacity(1024);
    let session_ref: i64 = open(db)?
        .query_row(SESSION_SQL, [session], |r| {
            columns(r, 1, &mut bytes)?;
            r.get(0)
        })
        .map_err(|e| format!("session {session} (exactly one) in {}: {e}", db.display()))?;
    let mut total = Pass {
        events: 0,
        matched: 0,
        digest: sha256(&bytes),
    };
    let next = AtomicU64::new(0);
    let passes = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads.max(1))
            .map(|_| s.spawn(|| read_chunks(db, session_ref, chunk, &next)))
            .collect();
        workers
            .into_iter()
            .map(|w| {
                w.join()
                    .map_err(|_| "a reading thread panicked".to_string())?
            })
            .collect::<Result<Vec<_>, String>>()
    })
    .map_err(|e| format!("reading session {session}: {e}"))?;
    for p in passes {
        total.events += p.events;
        total.matched += p.matched;
        xor(&mut total.digest, &p.digest);
    }
    Ok(total)
}

fn open(db: &Path) -> Result<Connection, String> {
    Connection::open_with_flags(
        db,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| format!("cannot open {}: {e}", db.display()))
}

fn xor(acc: &mut [u8; 32], d: &[u8; 32]) {
    for (a, b) in acc.iter_mut().zip(d) {
        *a ^= b;
    }
}

/// The row's columns from `from` on, appended to `out` as bytes.
fn columns(r: &Row<'_>, from: usize, out: &mut Vec<u8>) -> rusqlite::Result<()> {
    for col in from..r.as_ref().column_count() {
        match r.get_ref(col)? {
            ValueRef::Null => out.push(0),
            ValueRef::Integer(n) => out.extend_from_slice(&n.to_le_bytes()),
            ValueRef::Real(f) => out.extend_from_slice(&f.to_le_bytes()),
            ValueRef::Text(b) | ValueRef::Blob(b) => out.extend_from_slice(b),
        }
    }
    Ok(())
}

/// Chunks taken in turn from `next` until one comes back short. Chunk `i`
/// holds seqs `i * chunk + 1` on, in order, as verify assumes.
fn read_chunks(db: &Path, session_ref: i64, chunk: u64, next: &AtomicU64) -> Result<Pass, String> {
    let conn = open(db)?;
    let mut st = conn.prepare(SQL).map_err(|e| e.to_string())?;
    let mut done = Pass {
        events: 0,
        matched: 0,
        digest: [0; 32],
    };
    let mut other = Vec::with_capacity(1024);
    loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        let mut rows = st
            .query(params![session_ref, (i * chunk) as i64, chunk as i64])
            .map_err(|e| e.to_string())?;
        let mut got = 0;
        while let Some(r) = rows.next().map_err(|e| e.to_string())? {
            let seq: i64 = r.get(2).map_err(|e| e.to_string())?;
            got += 1;
            if u64::try_from(seq).ok() != Some(i * chunk + got) {
                return Err(format!(
                    "seq {seq} where {} was next: the session's seqs are not 1, 2, 3...",
                    i * chunk + got
                ));
            }
            if let (ValueRef::Text(p), ValueRef::Blob(d)) = (
                r.get_ref(0).map_err(|e| e.to_string())?,
                r.get_ref(1).map_err(|e| e.to_string())?,
            ) && sha256(p)[..] == *d
            {
                done.matched += 1;
            }
            other.clear();
            columns(r, 2, &mut other).map_err(|e| format!("seq {seq}: {e}"))?;
            xor(&mut done.digest, &sha256(&other));
        }
        done.events += got;
        if got < chunk {
            return Ok(done);
        }
    }
}

/// Timed passes over one session, each checked against the first: every one
/// must read `events` events, match every payload, and come to the same
/// digest.
pub struct Ceiling {
    db: std::path::PathBuf,
    session: String,
    events: u64,
    threads: usize,
    digest: Option<[u8; 32]>,
}

impl Ceiling {
    pub fn new(db: &Path, session: &str, events: u64) -> Ceiling {
        Ceiling {
            db: db.to_owned(),
            session: session.to_owned(),
            events,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            digest: None,
        }
    }

    /// One pass, timed.
    pub fn pass(&mut self) -> Result<Duration, String> {
        let (session, events) = (&self.session, self.events);
        let t = Instant::now();
        let p = pass(&self.db, session, self.threads)?;
        let took = t.elapsed();
        if p.events != events || p.matched != events {
            return Err(format!(
                "the verify ceiling read {} events of {session} ({} payloads matched their digests), not {events}",
                p.events, p.matched
            ));
        }
        if *self.digest.get_or_insert(p.digest) != p.digest {
            return Err(format!(
                "the verify ceiling's passes over {session} read different bytes"
            ));
        }
        Ok(took)
    }
}

/// One untimed pass, then `runs` timed ones.
#[cfg(test)]
fn measure(db: &Path, session: &str, events: u64, runs: usize) -> Result<Vec<Duration>, String> {
    let mut c = Ceiling::new(db, session, events);
    c.pass()?;
    (0..runs).map(|_| c.pass()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ledger of 100 sessions of 12 events each (the ingest ceiling's rows),
    /// each payload's digest its own.
    fn ledger(dir: &Path) -> std::path::PathBuf {
        let path = dir.join("ledger.db");
        crate::ceiling::fill(&path, 1_200).unwrap();
        let conn = Connection::open(&path).unwrap();
        let rows: Vec<(i64, String)> = conn
            .prepare("SELECT rowid, payload FROM events")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        for (rowid, payload) in rows {
            conn.execute(
                "UPDATE events SET payload_sha256 = ?1 WHERE rowid = ?2",
                params![&sha256(payload.as_bytes())[..], rowid],
            )
            .unwrap();
        }
        path
    }

    #[test]
    fn reads_and_hashes_every_event_of_the_session_once() {
        let dir = tempfile::tempdir().unwrap();
        let db = ledger(dir.path());
        let whole = pass(&db, "bench-7", 1).unwrap();
        assert_eq!((whole.events, whole.matched), (12, 12));
        // Chunks of 5 meet at seqs 5 and 10, and the last comes back short;
        // chunks of 4 end full, then one comes back empty.
        for (threads, chunk) in [(1, 5), (2, 5), (3, 5), (2, 4), (2, CHUNK)] {
            assert_eq!(
                pass_in_chunks(&db, "bench-7", threads, chunk).unwrap(),
                whole
            );
        }
        assert_eq!(measure(&db, "bench-7", 12, 2).unwrap().len(), 2);
        assert!(measure(&db, "bench-7", 13, 1).is_err());
        assert!(pass(&db, "no-such-session", 2).is_err());
    }

    #[test]
    fn every_covered_column_and_the_header_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let db = ledger(dir.path());
        let before = pass(&db, "bench-7", 2).unwrap();
        let conn = Connection::open(&db).unwrap();
        let bench_7 = "session_ref = (SELECT rowid FROM sessions WHERE id = 'bench-7')";
        for (change, restore) in [
            (
                format!("UPDATE events SET agent_id = 'other' WHERE seq = 12 AND {bench_7}"),
                format!("UPDATE events SET agent_id = 'bench-agent' WHERE seq = 12 AND {bench_7}"),
            ),
            (
                format!("UPDATE events SET verdict = '{{}}' WHERE seq = 3 AND {bench_7}"),
                format!("UPDATE events SET verdict = NULL WHERE seq = 3 AND {bench_7}"),
            ),
            (
                "UPDATE sessions SET system_prompt = 'be brief' WHERE id = 'bench-7'".to_string(),
                "UPDATE sessions SET system_prompt = NULL WHERE id = 'bench-7'".to_string(),
            ),
        ] {
            conn.execute(&change, []).unwrap();
            let p = pass(&db, "bench-7", 2).unwrap();
            assert_eq!((p.events, p.matched), (12, 12));
            assert_ne!(p.digest, before.digest, "{change}");
            conn.execute(&restore, []).unwrap();
            assert_eq!(pass(&db, "bench-7", 2).unwrap(), before, "{restore}");
        }
    }

    #[test]
    fn a_session_whose_seqs_have_a_gap_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let db = ledger(dir.path());
        Connection::open(&db)
            .unwrap()
            .execute(
                "UPDATE events SET seq = 99 WHERE seq = 4 AND \
                 session_ref = (SELECT rowid FROM sessions WHERE id = 'bench-7')",
                [],
            )
            .unwrap();
        let err = pass_in_chunks(&db, "bench-7", 1, 5).unwrap_err();
        assert!(err.contains("seq 5 where 4 was next"), "{err}");
    }

    #[test]
    fn a_payload_that_does_not_match_its_digest_is_counted() {
        let dir = tempfile::tempdir().unwrap();
        let db = ledger(dir.path());
        Connection::open(&db)
            .unwrap()
            .execute(
                "UPDATE events SET payload = '{\"changed\":true}' WHERE seq = 5 AND \
                 session_ref = (SELECT rowid FROM sessions WHERE id = 'bench-7')",
                [],
            )
            .unwrap();
        let p = pass(&db, "bench-7", 2).unwrap();
        assert_eq!((p.events, p.matched), (12, 11));
        let err = measure(&db, "bench-7", 12, 1).unwrap_err();
        assert!(err.contains("11 payloads matched"), "{err}");
    }
}
