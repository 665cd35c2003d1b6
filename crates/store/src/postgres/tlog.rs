//! The transparency log on PostgreSQL (see `crate::log` and docs/transparency.md).
//!
//! **Integration order.** Several nodes commit concurrently, so neither `pos` (assigned at
//! INSERT) nor commit time gives an order a cursor can follow: a transaction that inserted
//! `pos = 10` may commit after one that inserted `pos = 11` was integrated, and would be
//! skipped forever. Instead every event carries `log_xid`, the 64-bit id of the transaction
//! that inserted it (the column's default, `pg_current_xact_id()`), and a pass integrates, in
//! `(log_xid, pos)` order, only events whose `log_xid` is below the *horizon*: the xmin of a
//! snapshot taken in the pass, i.e. the oldest transaction still running anywhere on the
//! server. Every transaction below it has ended (committed or rolled back), and every one that
//! commits later has an id at or above it, so no event can ever appear behind the cursor
//! `(log_xid, pos)` of the last integrated event. An event is in the log within about a second
//! of its commit unless some transaction on the server stays open longer (then integration
//! waits for it; `idle_in_transaction_session_timeout` bounds the writer's own).
//!
//! The order agrees with every session's seq order: a writer takes its sessions' advisory locks
//! before it writes anything, so the transaction id of a later append to a session is assigned
//! after the earlier append committed, and is larger.
//!
//! **Several integrators.** Each pass locks the project's `tlog_state` row (FOR UPDATE) and
//! commits the leaves, tiles and cursor together, so two nodes' passes serialise and the second
//! reads the first's cursor. `UNIQUE (project_id, event_id)` refuses a second index for an
//! event in any case. Passes run on a read-pool connection, never on the writer's.

use deadpool_postgres::Object;

use agentledger_core::Micros;
use agentledger_tlog::integrate::{integrate, right_edge_tiles};
use agentledger_tlog::{EMPTY_ROOT, Hash, Tile, leaf_hash};

use super::errors::describe;
use crate::log::{Integrated, LogCheckpoint, LogCosignature, LogHead, cut_tile, leaf_entry};
use crate::{StoreError, StoreResult};

fn db(e: tokio_postgres::Error) -> StoreError {
    StoreError::Storage(describe(&e))
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

pub(crate) async fn head(client: &tokio_postgres::Client, project: i64) -> StoreResult<LogHead> {
    let row = client
        .query_opt(
            "SELECT size, root FROM tlog_state WHERE project_id = $1",
            &[&project],
        )
        .await
        .map_err(db)?;
    match row {
        None => Ok(LogHead::EMPTY),
        Some(r) => Ok(LogHead {
            size: u64_of(r.try_get(0).map_err(db)?)?,
            root: hash_of(r.try_get(1).map_err(db)?)?,
        }),
    }
}

/// Whether a pass would find anything, read without a lock or a write: an idle project then
/// costs no transaction id, no row lock and no WAL every pass.
async fn pending(client: &tokio_postgres::Client, project: i64) -> StoreResult<bool> {
    let cursor = client
        .query_opt(
            "SELECT cursor_xid, cursor_pos FROM tlog_state WHERE project_id = $1",
            &[&project],
        )
        .await
        .map_err(db)?;
    let (cursor_xid, cursor_pos): (i64, i64) = match cursor {
        Some(r) => (r.try_get(0).map_err(db)?, r.try_get(1).map_err(db)?),
        None => (-1, 0),
    };
    client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM events WHERE project_id = $1 \
             AND (log_xid, pos) > ($2, $3) \
             AND log_xid < pg_snapshot_xmin(pg_current_snapshot())::text::bigint)",
            &[&project, &cursor_xid, &cursor_pos],
        )
        .await
        .map_err(db)?
        .try_get(0)
        .map_err(db)
}

pub(crate) async fn integrate_pass(
    client: &mut Object,
    project: i64,
    max: usize,
) -> StoreResult<Integrated> {
    if !pending(client, project).await? {
        return Ok(Integrated {
            head: head(client, project).await?,
            added: 0,
        });
    }
    let tx = client.transaction().await.map_err(db)?;
    tx.execute(
        "INSERT INTO tlog_state (project_id, size, root, cursor_xid, cursor_pos) \
         VALUES ($1, 0, $2, -1, 0) ON CONFLICT (project_id) DO NOTHING",
        &[&project, &EMPTY_ROOT.as_bytes().as_slice()],
    )
    .await
    .map_err(db)?;
    let state = tx
        .query_one(
            "SELECT size, root, cursor_xid, cursor_pos FROM tlog_state \
             WHERE project_id = $1 FOR UPDATE",
            &[&project],
        )
        .await
        .map_err(db)?;
    let head = LogHead {
        size: u64_of(state.try_get(0).map_err(db)?)?,
        root: hash_of(state.try_get(1).map_err(db)?)?,
    };
    let (cursor_xid, cursor_pos): (i64, i64) =
        (state.try_get(2).map_err(db)?, state.try_get(3).map_err(db)?);
    // Taken after the state row is locked: any event below it has ended its transaction.
    let horizon: i64 = tx
        .query_one(
            "SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint",
            &[],
        )
        .await
        .map_err(db)?
        .try_get(0)
        .map_err(db)?;
    let limit = i64::try_from(max.clamp(1, crate::log::MAX_INTEGRATE)).unwrap_or(1);
    let rows = tx
        .query(
            "SELECT e.log_xid, e.pos, e.id, s.id AS session, e.seq, e.hash FROM events e \
             JOIN sessions s ON s.project_id = e.project_id AND s.ref = e.session_ref \
             WHERE e.project_id = $1 AND (e.log_xid, e.pos) > ($2, $3) AND e.log_xid < $4 \
             ORDER BY e.log_xid, e.pos LIMIT $5",
            &[&project, &cursor_xid, &cursor_pos, &horizon, &limit],
        )
        .await
        .map_err(db)?;
    if rows.is_empty() {
        tx.rollback().await.map_err(db)?;
        return Ok(Integrated { head, added: 0 });
    }
    let mut ids: Vec<Vec<u8>> = Vec::with_capacity(rows.len());
    let mut entries: Vec<Vec<u8>> = Vec::with_capacity(rows.len());
    let mut last = (cursor_xid, cursor_pos);
    for r in &rows {
        last = (r.try_get(0).map_err(db)?, r.try_get(1).map_err(db)?);
        ids.push(r.try_get(2).map_err(db)?);
        let session: String = r.try_get(3).map_err(db)?;
        let seq: i64 = r.try_get(4).map_err(db)?;
        let hash: Vec<u8> = r.try_get(5).map_err(db)?;
        let hash: [u8; 32] = hash
            .try_into()
            .map_err(|_| StoreError::Corrupt("an event hash is not 32 bytes".into()))?;
        entries.push(leaf_entry(&session, u64_of(seq)?, &hash)?);
    }
    let edge = right_edge_tiles(head.size);
    let stored = read_tiles(&tx, project, &edge).await?;
    let right_edge = edge
        .iter()
        .zip(stored)
        .map(|(tile, data)| {
            data.map(|d| (*tile, d)).ok_or_else(|| {
                StoreError::Corrupt(format!(
                    "transparency log: tile {} is missing from the store",
                    tile.path()
                ))
            })
        })
        .collect::<StoreResult<Vec<_>>>()?;
    let leaves: Vec<Hash> = entries.iter().map(|e| leaf_hash(e)).collect();
    let grown = integrate(head.size, &right_edge, &leaves)
        .map_err(|e| StoreError::Corrupt(format!("transparency log tiles: {e}")))?;
    let mut levels: Vec<i16> = Vec::new();
    let mut idxs: Vec<i64> = Vec::new();
    let mut widths: Vec<i32> = Vec::new();
    let mut datas: Vec<&[u8]> = Vec::new();
    for (tile, data) in &grown.tiles {
        levels.push(i16::from(tile.level));
        idxs.push(i64_of(tile.index)?);
        widths.push(i32::from(tile.width));
        datas.push(data);
    }
    tx.execute(
        "INSERT INTO tlog_tiles (project_id, level, idx, width, data) \
         SELECT $1, * FROM unnest($2::int2[], $3::int8[], $4::int4[], $5::bytea[]) \
         ON CONFLICT (project_id, level, idx) \
         DO UPDATE SET width = excluded.width, data = excluded.data",
        &[&project, &levels, &idxs, &widths, &datas],
    )
    .await
    .map_err(db)?;
    let leaf_idx = (0..entries.len() as u64)
        .map(|i| i64_of(head.size + i))
        .collect::<StoreResult<Vec<i64>>>()?;
    tx.execute(
        "INSERT INTO tlog_leaves (project_id, idx, event_id, entry) \
         SELECT $1, * FROM unnest($2::int8[], $3::bytea[], $4::bytea[])",
        &[&project, &leaf_idx, &ids, &entries],
    )
    .await
    .map_err(db)?;
    tx.execute(
        "UPDATE tlog_state SET size = $2, root = $3, cursor_xid = $4, cursor_pos = $5 \
         WHERE project_id = $1",
        &[
            &project,
            &i64_of(grown.size)?,
            &grown.root.as_bytes().as_slice(),
            &last.0,
            &last.1,
        ],
    )
    .await
    .map_err(db)?;
    tx.commit().await.map_err(db)?;
    Ok(Integrated {
        head: LogHead {
            size: grown.size,
            root: grown.root,
        },
        added: entries.len() as u64,
    })
}

pub(crate) async fn read_tiles(
    client: &impl deadpool_postgres::GenericClient,
    project: i64,
    tiles: &[Tile],
) -> StoreResult<Vec<Option<Vec<u8>>>> {
    let mut levels: Vec<i16> = Vec::with_capacity(tiles.len());
    let mut idxs: Vec<i64> = Vec::with_capacity(tiles.len());
    for t in tiles {
        levels.push(i16::from(t.level));
        idxs.push(i64::try_from(t.index).unwrap_or(i64::MAX));
    }
    let rows = client
        .query(
            "SELECT level, idx, width, data FROM tlog_tiles WHERE project_id = $1 \
             AND (level, idx) IN (SELECT * FROM unnest($2::int2[], $3::int8[]))",
            &[&project, &levels, &idxs],
        )
        .await
        .map_err(db)?;
    let mut found = std::collections::HashMap::new();
    for r in rows {
        let level: i16 = r.try_get(0).map_err(db)?;
        let idx: i64 = r.try_get(1).map_err(db)?;
        let width: i32 = r.try_get(2).map_err(db)?;
        let data: Vec<u8> = r.try_get(3).map_err(db)?;
        found.insert((level, idx), (width, data));
    }
    Ok(tiles
        .iter()
        .zip(levels.iter().zip(&idxs))
        .map(|(tile, key)| {
            found
                .get(&(*key.0, *key.1))
                .and_then(|(width, data)| cut_tile(tile, u16::try_from(*width).ok()?, data.clone()))
        })
        .collect())
}

pub(crate) async fn entries(
    client: &tokio_postgres::Client,
    project: i64,
    first: u64,
    count: u16,
) -> StoreResult<Vec<Vec<u8>>> {
    let Ok(first) = i64::try_from(first) else {
        return Ok(Vec::new());
    };
    let end = first.saturating_add(i64::from(count));
    let rows = client
        .query(
            "SELECT entry FROM tlog_leaves WHERE project_id = $1 AND idx >= $2 AND idx < $3 \
             ORDER BY idx",
            &[&project, &first, &end],
        )
        .await
        .map_err(db)?;
    rows.iter()
        .map(|r| r.try_get::<_, Vec<u8>>(0).map_err(db))
        .collect()
}

pub(crate) async fn leaf_index(
    client: &tokio_postgres::Client,
    project: i64,
    event: &[u8],
) -> StoreResult<Option<u64>> {
    let row = client
        .query_opt(
            "SELECT idx FROM tlog_leaves WHERE project_id = $1 AND event_id = $2",
            &[&project, &event],
        )
        .await
        .map_err(db)?;
    row.map(|r| u64_of(r.try_get(0).map_err(db)?)).transpose()
}

pub(crate) async fn checkpoint(
    client: &tokio_postgres::Client,
    project: i64,
    size: Option<u64>,
) -> StoreResult<Option<LogCheckpoint>> {
    // A size past i64 names no stored checkpoint (sizes come from requests).
    let size = match size.map(i64::try_from).transpose() {
        Ok(size) => size,
        Err(_) => return Ok(None),
    };
    let row = client
        .query_opt(
            "SELECT size, root, note, created_at FROM tlog_checkpoints \
             WHERE project_id = $1 AND ($2::int8 IS NULL OR size = $2) \
             ORDER BY size DESC LIMIT 1",
            &[&project, &size],
        )
        .await
        .map_err(db)?;
    row.map(|r| {
        Ok(LogCheckpoint {
            size: u64_of(r.try_get(0).map_err(db)?)?,
            root: hash_of(r.try_get(1).map_err(db)?)?,
            note: r.try_get(2).map_err(db)?,
            created_at: Micros(r.try_get(3).map_err(db)?),
        })
    })
    .transpose()
}

pub(crate) async fn add_checkpoint(
    client: &tokio_postgres::Client,
    project: i64,
    cp: &LogCheckpoint,
) -> StoreResult<LogCheckpoint> {
    client
        .execute(
            "INSERT INTO tlog_checkpoints (project_id, size, root, note, created_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (project_id, size) DO NOTHING",
            &[
                &project,
                &i64_of(cp.size)?,
                &cp.root.as_bytes().as_slice(),
                &cp.note,
                &cp.created_at.0,
            ],
        )
        .await
        .map_err(db)?;
    checkpoint(client, project, Some(cp.size))
        .await?
        .ok_or_else(|| StoreError::Storage("a checkpoint just kept is not there".into()))
}

/// Keeps cosignatures (the first one kept per size and witness key stays).
pub(crate) async fn add_cosignatures(
    client: &tokio_postgres::Client,
    project: i64,
    cosignatures: &[LogCosignature],
) -> StoreResult<()> {
    let st = client
        .prepare(
            "INSERT INTO tlog_cosignatures (project_id, size, witness, key_id, line, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
        )
        .await
        .map_err(db)?;
    for c in cosignatures {
        client
            .execute(
                &st,
                &[
                    &project,
                    &i64_of(c.size)?,
                    &c.witness,
                    &i64::from(c.key_id),
                    &c.line,
                    &c.created_at.0,
                ],
            )
            .await
            .map_err(db)?;
    }
    Ok(())
}

/// The cosignatures of the `sizes` newest cosigned sizes up to `max_size`, newest first.
pub(crate) async fn cosignatures(
    client: &tokio_postgres::Client,
    project: i64,
    max_size: Option<u64>,
    sizes: u32,
) -> StoreResult<Vec<LogCosignature>> {
    let max = max_size.map_or(i64::MAX, |m| i64::try_from(m).unwrap_or(i64::MAX));
    let rows = client
        .query(
            "SELECT size, witness, key_id, line, created_at FROM tlog_cosignatures \
             WHERE project_id = $1 AND size IN (SELECT DISTINCT size FROM tlog_cosignatures \
               WHERE project_id = $1 AND size <= $2 ORDER BY size DESC LIMIT $3) \
             ORDER BY size DESC, witness, key_id",
            &[&project, &max, &i64::from(sizes)],
        )
        .await
        .map_err(db)?;
    rows.iter()
        .map(|r| {
            Ok(LogCosignature {
                size: u64_of(r.try_get(0).map_err(db)?)?,
                witness: r.try_get(1).map_err(db)?,
                key_id: u32::try_from(r.try_get::<_, i64>(2).map_err(db)?)
                    .map_err(|_| StoreError::Corrupt("a cosignature's key ID past u32".into()))?,
                line: r.try_get(3).map_err(db)?,
                created_at: Micros(r.try_get(4).map_err(db)?),
            })
        })
        .collect()
}
