//! The machine's ceiling for verifying one session, measured in the same run
//! on the same ledger: the least any verifier of these stored rows must do.
//!
//! It reads every column the chain covers, of every event of the session,
//! through the same index, in the same chunks as the server's verify, on as
//! many threads as the machine has cores, and hashes each event's bytes once
//! with SHA-256: the payload alone (compared with its stored digest, so a
//! ceiling that read nothing cannot pass), then the other columns together.
//! No envelope is written, nothing is parsed, no derived column is checked,
//! no HTTP. What the server's verify spends beyond it is the cost of the
//! format (the JSON envelope and its nested digests) and of verify's checks
//! (the chain's order, the derived columns, the session row).

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags, params};

use agentledger_core::chain::sha256;

/// The columns the chain covers (docs/hash-chain.md), the payload first.
const SQL: &str = "SELECT payload, payload_sha256, id, seq, agent_id, kind, source_type, \
    dialect, severity, client_ts, server_ts, metadata, prev_hash, hash, envelope_version, \
    verdict, original_payload_sha256, original_metadata_sha256 \
    FROM events WHERE session_ref = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3";

/// Events per read, as the server's verify reads them.
const CHUNK: u64 = agentledger_store::verify::CHUNK as u64;

/// One pass over a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pass {
    /// Events read and hashed.
    pub events: u64,
    /// Of those, the ones whose payload hashed to its stored digest.
    pub matched: u64,
}

/// Read and hash every event of `session` (its id; the ledger must hold one
/// session of that id) on `threads` threads.
pub fn pass(db: &Path, session: &str, threads: usize) -> Result<Pass, String> {
    pass_in_chunks(db, session, threads, CHUNK)
}

fn pass_in_chunks(db: &Path, session: &str, threads: usize, chunk: u64) -> Result<Pass, String> {
    let session_ref: i64 = open(db)?
        .query_row(
            "SELECT rowid FROM sessions WHERE id = ?1 AND \
             (SELECT count(*) FROM sessions WHERE id = ?1) = 1",
            [session],
            |r| r.get(0),
        )
        .map_err(|e| format!("session {session} (exactly one) in {}: {e}", db.display()))?;
    let next = AtomicU64::new(0);
    let totals = std::thread::scope(|s| {
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
    })?;
    Ok(Pass {
        events: totals.iter().map(|p| p.events).sum(),
        matched: totals.iter().map(|p| p.matched).sum(),
    })
}

fn open(db: &Path) -> Result<Connection, String> {
    Connection::open_with_flags(
        db,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| format!("cannot open {}: {e}", db.display()))
}

/// Chunks taken in turn from `next` until one comes back short.
fn read_chunks(db: &Path, session_ref: i64, chunk: u64, next: &AtomicU64) -> Result<Pass, String> {
    let conn = open(db)?;
    let mut st = conn.prepare(SQL).map_err(|e| e.to_string())?;
    let mut done = Pass {
        events: 0,
        matched: 0,
    };
    let mut other = Vec::with_capacity(1024);
    let mut digests = [0u8; 32];
    loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        let mut rows = st
            .query(params![session_ref, (i * chunk) as i64, chunk as i64])
            .map_err(|e| e.to_string())?;
        let mut got = 0;
        while let Some(r) = rows.next().map_err(|e| e.to_string())? {
            got += 1;
            let payload = r.get_ref(0).map_err(|e| e.to_string())?;
            let stored = r.get_ref(1).map_err(|e| e.to_string())?;
            if let (ValueRef::Text(p), ValueRef::Blob(d)) = (payload, stored)
                && sha256(p)[..] == *d
            {
                done.matched += 1;
            }
            other.clear();
            for col in 2..r.as_ref().column_count() {
                match r.get_ref(col).map_err(|e| e.to_string())? {
                    ValueRef::Null => other.push(0),
                    ValueRef::Integer(n) => other.extend_from_slice(&n.to_le_bytes()),
                    ValueRef::Real(f) => other.extend_from_slice(&f.to_le_bytes()),
                    ValueRef::Text(b) | ValueRef::Blob(b) => other.extend_from_slice(b),
                }
            }
            for (a, b) in digests.iter_mut().zip(sha256(&other)) {
                *a ^= b;
            }
        }
        done.events += got;
        if got < chunk {
            break;
        }
    }
    // The other columns' digests, kept from being optimised away.
    std::hint::black_box(digests);
    Ok(done)
}

/// One untimed pass, then `runs` timed ones; each must read `events` events
/// and match every payload.
pub fn measure(
    db: &Path,
    session: &str,
    events: u64,
    runs: usize,
) -> Result<Vec<Duration>, String> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut lat = Vec::with_capacity(runs);
    for run in 0..=runs {
        let t = Instant::now();
        let p = pass(db, session, threads)?;
        if p.events != events || p.matched != events {
            return Err(format!(
                "the verify ceiling read {} events of {session} ({} payloads matched their digests), not {events}",
                p.events, p.matched
            ));
        }
        if run > 0 {
            lat.push(t.elapsed());
        }
    }
    Ok(lat)
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
        // Chunks of 5 meet at seqs 5 and 10, and the last comes back short.
        for (threads, chunk) in [(1, 5), (2, 5), (3, 5), (2, 4), (2, CHUNK)] {
            assert_eq!(
                pass_in_chunks(&db, "bench-7", threads, chunk).unwrap(),
                Pass {
                    events: 12,
                    matched: 12
                }
            );
        }
        assert_eq!(measure(&db, "bench-7", 12, 2).unwrap().len(), 2);
        assert!(measure(&db, "bench-7", 13, 1).is_err());
        assert!(pass(&db, "no-such-session", 2).is_err());
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
