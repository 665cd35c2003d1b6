//! The transparency log on SQLite (see `crate::log` and docs/transparency.md).
//!
//! **Integration order is commit order.** One writer thread commits every event, and rowids
//! only grow (events are never deleted, so SQLite never reuses one), so the events' rowid
//! order is the order their transactions committed. The integration cursor is the rowid of
//! the last integrated event.
//!
//! **A pass is split in two so the writer only writes.** [`prepare_pass`] runs on a read
//! connection (a blocking task): in one read snapshot it reads the cursor, the events after
//! it and the right-edge tiles, then computes the leaf hashes, the new tiles and the root.
//! [`apply_pass`] runs on the writer thread as a command of its own, between group commits
//! (never inside an append's transaction, so an acknowledgement never waits on it): it checks
//! that the stored cursor and tree are still the ones the pass started from (a
//! compare-and-set) and then writes the tiles, the leaves and the new cursor, committing all
//! of it at once. If another pass moved the cursor in between, it writes nothing and the
//! caller prepares again. Since the writer is the only connection that writes, the check and
//! the writes are atomic: no event gets two indexes and none is skipped (the events a pass
//! read are exactly those after the cursor it checked, and rowids only grow, so no event can
//! later appear behind that cursor). A crash before the COMMIT leaves the cursor where it was
//! (the next pass does the same work again); after it, those events are behind the cursor and
//! never integrated again (and `tlog_leaves_event` refuses a second index for an event in any
//! case).

use rusqlite::{Connection, OptionalExtension, params};

use agentledger_core::Micros;
use agentledger_tlog::integrate::{integrate, right_edge_tiles};
use agentledger_tlog::{Hash, Tile, leaf_hash};

use crate::log::{Integrated, LogCheckpoint, LogCosignature, LogHead, cut_tile, leaf_entry};
use crate::{StoreError, StoreResult};

fn db(e: rusqlite::Error) -> StoreError {
    crate::sqlite::classify(&e)
}

fn hash_of(bytes: Vec<u8>) -> StoreResult<Hash> {
    Hash::from_slice(&bytes).map_err(|e| StoreError::Corrupt(format!("a stored log hash: {e}")))
}

fn u64_of(v: i64) -> StoreResult<u64> {
    u64::try_from(v).map_err(|_| StoreError::Corrupt("a negative log size or index".into()))
}

fn i64_of(v: u64) -> StoreResult<i64> {
    i64::try_from(v).map_err(|_| StoreError::Storage("a log size past i64".into()))
}

/// The head and cursor of a project's log (empty and 0 before the first pass).
fn state(conn: &Connection, project: i64) -> StoreResult<(LogHead, i64)> {
    let row: Option<(i64, Vec<u8>, i64)> = conn
        .prepare_cached("SELECT size, root, cursor FROM tlog_state WHERE project_id = ?1")
        .and_then(|mut st| {
            st.query_row([project], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .optional()
        })
        .map_err(db)?;
    match row {
        None => Ok((LogHead::EMPTY, 0)),
        Some((size, root, cursor)) => Ok((
            LogHead {
                size: u64_of(size)?,
                root: hash_of(root)?,
            },
            cursor,
        )),
    }
}

pub(crate) fn head(conn: &Connection, project: i64) -> StoreResult<LogHead> {
    state(conn, project).map(|(h, _)| h)
}

/// The work of one integration pass, computed on a read connection: where the tree stood
/// when the pass read it (the compare-and-set guard) and everything the writer must store.
#[derive(Debug)]
pub(crate) struct PreparedPass {
    project: i64,
    /// The cursor and tree the pass started from: the write applies only if they are still
    /// the stored ones.
    from_cursor: i64,
    from: LogHead,
    /// The rowid of the last event integrated (the new cursor).
    last_rowid: i64,
    /// Each new leaf: its event id and entry, in index order from `from.size`.
    leaves: Vec<(Vec<u8>, Vec<u8>)>,
    tiles: Vec<(Tile, Vec<u8>)>,
    to: LogHead,
}

/// What the writer did with a [`PreparedPass`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PassOutcome {
    Applied(Integrated),
    /// The stored cursor moved since the pass read it (another pass won): nothing was
    /// written, and the caller prepares again from the new state.
    Stale,
}

/// Reads the events past `project`'s cursor (at most `max`) and the right-edge tiles, all in
/// one read transaction (one snapshot), and computes their leaves and the new tiles; `None`
/// when nothing waits. Runs on a read connection, so the hashing never occupies the writer.
pub(crate) fn prepare_pass(
    conn: &Connection,
    project: i64,
    max: usize,
) -> StoreResult<Option<PreparedPass>> {
    // A deferred read transaction: the state, the events and the tiles come from one
    // snapshot. Dropped (rolled back) on every path; it wrote nothing.
    let snapshot = conn.unchecked_transaction().map_err(db)?;
    let (from, from_cursor) = state(&snapshot, project)?;
    let limit = i64::try_from(max.clamp(1, crate::log::MAX_INTEGRATE)).unwrap_or(1);
    let mut events: Vec<(i64, Vec<u8>, Vec<u8>)> = Vec::new();
    {
        let mut st = snapshot
            .prepare_cached(
                "SELECT e.rowid, e.id, s.id, e.seq, e.hash FROM events e \
                 JOIN sessions s ON s.rowid = e.session_ref \
                 WHERE e.project_id = ?1 AND e.rowid > ?2 ORDER BY e.rowid LIMIT ?3",
            )
            .map_err(db)?;
        let mut rows = st.query(params![project, from_cursor, limit]).map_err(db)?;
        while let Some(r) = rows.next().map_err(db)? {
            let rowid: i64 = r.get(0).map_err(db)?;
            let id: Vec<u8> = r.get(1).map_err(db)?;
            let session: String = r.get(2).map_err(db)?;
            let seq: i64 = r.get(3).map_err(db)?;
            let hash: Vec<u8> = r.get(4).map_err(db)?;
            let hash: [u8; 32] = hash
                .try_into()
                .map_err(|_| StoreError::Corrupt("an event hash is not 32 bytes".into()))?;
            events.push((rowid, id, leaf_entry(&session, u64_of(seq)?, &hash)?));
        }
    }
    let Some(last_rowid) = events.last().map(|e| e.0) else {
        return Ok(None);
    };
    let right_edge = read_tiles_exact(&snapshot, project, &right_edge_tiles(from.size))?;
    drop(snapshot);
    let leaves: Vec<Hash> = events
        .iter()
        .map(|(_, _, entry)| leaf_hash(entry))
        .collect();
    let grown = integrate(from.size, &right_edge, &leaves)
        .map_err(|e| StoreError::Corrupt(format!("transparency log tiles: {e}")))?;
    Ok(Some(PreparedPass {
        project,
        from_cursor,
        from,
        last_rowid,
        leaves: events
            .into_iter()
            .map(|(_, id, entry)| (id, entry))
            .collect(),
        tiles: grown.tiles,
        to: LogHead {
            size: grown.size,
            root: grown.root,
        },
    }))
}

/// Stores a prepared pass — its tiles, leaves and the new cursor — if the project's cursor
/// and tree are still the ones it was computed from (a compare-and-set); otherwise writes
/// nothing and answers [`PassOutcome::Stale`]. The caller runs it inside a transaction of
/// the writer (the only connection that writes, so the check and the writes are atomic).
pub(crate) fn apply_pass(conn: &Connection, pass: &PreparedPass) -> StoreResult<PassOutcome> {
    let project = pass.project;
    let (head, cursor) = state(conn, project)?;
    if cursor != pass.from_cursor || head != pass.from {
        return Ok(PassOutcome::Stale);
    }
    {
        let mut put = conn
            .prepare_cached(
                "INSERT INTO tlog_tiles (project_id, level, idx, width, data) \
                 VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (project_id, level, idx) \
                 DO UPDATE SET width = excluded.width, data = excluded.data",
            )
            .map_err(db)?;
        for (tile, data) in &pass.tiles {
            put.execute(params![
                project,
                tile.level,
                i64_of(tile.index)?,
                tile.width,
                data
            ])
            .map_err(db)?;
        }
        let mut leaf = conn
            .prepare_cached(
                "INSERT INTO tlog_leaves (project_id, idx, event_id, entry) VALUES (?1, ?2, ?3, ?4)",
            )
            .map_err(db)?;
        for (i, (id, entry)) in pass.leaves.iter().enumerate() {
            leaf.execute(params![project, i64_of(head.size + i as u64)?, id, entry])
                .map_err(db)?;
        }
    }
    let size = i64_of(pass.to.size)?;
    conn.prepare_cached(
        "INSERT INTO tlog_state (project_id, size, root, cursor) VALUES (?1, ?2, ?3, ?4) \
         ON CONFLICT (project_id) DO UPDATE SET size = excluded.size, root = excluded.root, \
         cursor = excluded.cursor",
    )
    .and_then(|mut st| {
        st.execute(params![
            project,
            size,
            pass.to.root.as_bytes().as_slice(),
            pass.last_rowid
        ])
    })
    .map_err(db)?;
    Ok(PassOutcome::Applied(Integrated {
        head: pass.to,
        added: pass.leaves.len() as u64,
    }))
}

/// Tiles that must exist at exactly their width (the integrator's right edge).
fn read_tiles_exact(
    conn: &Connection,
    project: i64,
    tiles: &[Tile],
) -> StoreResult<Vec<(Tile, Vec<u8>)>> {
    read_tiles(conn, project, tiles)?
        .into_iter()
        .zip(tiles)
        .map(|(data, tile)| {
            data.map(|d| (*tile, d)).ok_or_else(|| {
                StoreError::Corrupt(format!(
                    "transparency log: tile {} is missing from the store",
                    tile.path()
                ))
            })
        })
        .collect()
}

pub(crate) fn read_tiles(
    conn: &Connection,
    project: i64,
    tiles: &[Tile],
) -> StoreResult<Vec<Option<Vec<u8>>>> {
    let mut st = conn
        .prepare_cached(
            "SELECT width, data FROM tlog_tiles WHERE project_id = ?1 AND level = ?2 AND idx = ?3",
        )
        .map_err(db)?;
    tiles
        .iter()
        .map(|tile| {
            let Ok(index) = i64::try_from(tile.index) else {
                return Ok(None);
            };
            let row: Option<(u16, Vec<u8>)> = st
                .query_row(params![project, tile.level, index], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .optional()
                .map_err(db)?;
            Ok(row.and_then(|(width, data)| cut_tile(tile, width, data)))
        })
        .collect()
}

pub(crate) fn entries(
    conn: &Connection,
    project: i64,
    first: u64,
    count: u16,
) -> StoreResult<Vec<Vec<u8>>> {
    let Ok(first) = i64::try_from(first) else {
        return Ok(Vec::new());
    };
    let mut st = conn
        .prepare_cached(
            "SELECT entry FROM tlog_leaves WHERE project_id = ?1 AND idx >= ?2 AND idx < ?3 \
             ORDER BY idx",
        )
        .map_err(db)?;
    let rows = st
        .query_map(
            params![project, first, first.saturating_add(i64::from(count))],
            |r| r.get::<_, Vec<u8>>(0),
        )
        .map_err(db)?;
    rows.collect::<Result<Vec<_>, _>>().map_err(db)
}

pub(crate) fn leaf_index(
    conn: &Connection,
    project: i64,
    event: &[u8],
) -> StoreResult<Option<u64>> {
    let idx: Option<i64> = conn
        .prepare_cached("SELECT idx FROM tlog_leaves WHERE project_id = ?1 AND event_id = ?2")
        .and_then(|mut st| {
            st.query_row(params![project, event], |r| r.get(0))
                .optional()
        })
        .map_err(db)?;
    idx.map(u64_of).transpose()
}

pub(crate) fn checkpoint(
    conn: &Connection,
    project: i64,
    size: Option<u64>,
) -> StoreResult<Option<LogCheckpoint>> {
    // A size past i64 names no stored checkpoint (sizes come from requests).
    let size = match size.map(i64::try_from).transpose() {
        Ok(size) => size,
        Err(_) => return Ok(None),
    };
    let row: Option<(i64, Vec<u8>, Vec<u8>, i64)> = conn
        .prepare_cached(
            "SELECT size, root, note, created_at FROM tlog_checkpoints \
             WHERE project_id = ?1 AND (?2 IS NULL OR size = ?2) ORDER BY size DESC LIMIT 1",
        )
        .and_then(|mut st| {
            st.query_row(params![project, size], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })
            .optional()
        })
        .map_err(db)?;
    row.map(|(size, root, note, at)| {
        Ok(LogCheckpoint {
            size: u64_of(size)?,
            root: hash_of(root)?,
            note,
            created_at: Micros(at),
        })
    })
    .transpose()
}

/// Keeps `cp` unless a checkpoint of its size is stored; returns the stored one.
pub(crate) fn add_checkpoint(
    conn: &Connection,
    project: i64,
    cp: &LogCheckpoint,
) -> StoreResult<LogCheckpoint> {
    conn.prepare_cached(
        "INSERT INTO tlog_checkpoints (project_id, size, root, note, created_at) \
         VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (project_id, size) DO NOTHING",
    )
    .and_then(|mut st| {
        st.execute(params![
            project,
            i64::try_from(cp.size).unwrap_or(i64::MAX),
            cp.root.as_bytes().as_slice(),
            cp.note,
            cp.created_at.0
        ])
    })
    .map_err(db)?;
    checkpoint(conn, project, Some(cp.size))?
        .ok_or_else(|| StoreError::Storage("a checkpoint just kept is not there".into()))
}

/// Keeps cosignatures (the first one kept per size and witness key stays).
pub(crate) fn add_cosignatures(
    conn: &Connection,
    project: i64,
    cosignatures: &[LogCosignature],
) -> rusqlite::Result<()> {
    let mut st = conn.prepare_cached(
        "INSERT INTO tlog_cosignatures (project_id, size, witness, key_id, line, created_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT DO NOTHING",
    )?;
    for c in cosignatures {
        st.execute(params![
            project,
            i64::try_from(c.size).unwrap_or(i64::MAX),
            c.witness,
            i64::from(c.key_id),
            c.line,
            c.created_at.0
        ])?;
    }
    Ok(())
}

/// The cosignatures of the `sizes` newest cosigned sizes up to `max_size`, newest first.
pub(crate) fn cosignatures(
    conn: &Connection,
    project: i64,
    max_size: Option<u64>,
    sizes: u32,
) -> StoreResult<Vec<LogCosignature>> {
    let max = max_size.map_or(i64::MAX, |m| i64::try_from(m).unwrap_or(i64::MAX));
    let mut st = conn
        .prepare_cached(
            "SELECT size, witness, key_id, line, created_at FROM tlog_cosignatures \
             WHERE project_id = ?1 AND size IN (SELECT DISTINCT size FROM tlog_cosignatures \
               WHERE project_id = ?1 AND size <= ?2 ORDER BY size DESC LIMIT ?3) \
             ORDER BY size DESC, witness, key_id",
        )
        .map_err(db)?;
    let rows = st
        .query_map(params![project, max, sizes], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, i64>(4)?,
            ))
        })
        .map_err(db)?;
    let mut out = Vec::new();
    for row in rows {
        let (size, witness, key_id, line, at) = row.map_err(db)?;
        out.push(LogCosignature {
            size: u64_of(size)?,
            witness,
            key_id: u32::try_from(key_id)
                .map_err(|_| StoreError::Corrupt("a cosignature's key ID past u32".into()))?,
            line,
            created_at: Micros(at),
        });
    }
    Ok(out)
}
