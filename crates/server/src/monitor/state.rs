//! What the monitor trusts, kept between rounds in a SQLite file of its own: the last
//! checkpoint it accepted (origin, size, root, the signed note), the right edge of that tree
//! (the partial tiles it computed from the entries, enough to extend the tree with the next
//! entries and so recompute the next root), and per session the last leaf the log holds
//! (seq, chain hash, index). Each round's update is one transaction with synchronous writes,
//! so a crash leaves the previous round's state or the new one, never a mix.

use std::path::Path;

use rusqlite::{Connection, OptionalExtension, params};

use agentledger_tlog::{Hash, Tile};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trusted {
    pub origin: String,
    pub size: u64,
    pub root: Hash,
    pub note: Vec<u8>,
}

/// The last leaf of one session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionLeaf {
    pub seq: u64,
    pub hash: [u8; 32],
    pub index: u64,
}

#[derive(Debug, thiserror::Error)]
#[error("monitor state {path}: {reason}")]
pub struct StateError {
    path: String,
    reason: String,
}

pub struct State {
    conn: Connection,
    path: String,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS trusted (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    origin TEXT NOT NULL,
    size INTEGER NOT NULL,
    root BLOB NOT NULL,
    note BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS right_edge (
    level INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    width INTEGER NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (level, idx)
);
CREATE TABLE IF NOT EXISTS sessions (
    session TEXT PRIMARY KEY,
    seq INTEGER NOT NULL,
    hash BLOB NOT NULL,
    idx INTEGER NOT NULL
);
";

fn i64_of(v: u64) -> rusqlite::Result<i64> {
    i64::try_from(v).map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))
}

impl State {
    pub fn open(path: &Path) -> Result<State, StateError> {
        let shown = path.display().to_string();
        let err = |e: rusqlite::Error| StateError {
            path: shown.clone(),
            reason: e.to_string(),
        };
        let conn = Connection::open(path).map_err(err)?;
        conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;")
            .map_err(err)?;
        conn.execute_batch(SCHEMA).map_err(err)?;
        Ok(State { conn, path: shown })
    }

    fn err(&self, e: impl std::fmt::Display) -> StateError {
        StateError {
            path: self.path.clone(),
            reason: e.to_string(),
        }
    }

    pub fn trusted(&self) -> Result<Option<Trusted>, StateError> {
        let row: Option<(String, i64, Vec<u8>, Vec<u8>)> = self
            .conn
            .query_row(
                "SELECT origin, size, root, note FROM trusted WHERE id = 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .optional()
            .map_err(|e| self.err(e))?;
        row.map(|(origin, size, root, note)| {
            Ok(Trusted {
                origin,
                size: u64::try_from(size).map_err(|e| self.err(e))?,
                root: Hash::from_slice(&root).map_err(|e| self.err(e))?,
                note,
            })
        })
        .transpose()
    }

    /// The partial tiles of the trusted tree (at most one per level), as stored.
    pub fn right_edge(&self) -> Result<Vec<(Tile, Vec<u8>)>, StateError> {
        let mut st = self
            .conn
            .prepare("SELECT level, idx, width, data FROM right_edge ORDER BY level")
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map([], |r| {
                Ok((
                    r.get::<_, u8>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, u16>(2)?,
                    r.get::<_, Vec<u8>>(3)?,
                ))
            })
            .map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for row in rows {
            let (level, index, width, data) = row.map_err(|e| self.err(e))?;
            let index = u64::try_from(index).map_err(|e| self.err(e))?;
            out.push((
                Tile {
                    level,
                    index,
                    width,
                },
                data,
            ));
        }
        Ok(out)
    }

    pub fn sessions(&self) -> Result<Vec<(String, SessionLeaf)>, StateError> {
        let mut st = self
            .conn
            .prepare("SELECT session, seq, hash, idx FROM sessions ORDER BY session")
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, Vec<u8>>(2)?,
                    r.get::<_, i64>(3)?,
                ))
            })
            .map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for row in rows {
            let (session, seq, hash, index) = row.map_err(|e| self.err(e))?;
            out.push((
                session,
                SessionLeaf {
                    seq: u64::try_from(seq).map_err(|e| self.err(e))?,
                    hash: hash
                        .try_into()
                        .map_err(|_| self.err("a stored hash is not 32 bytes"))?,
                    index: u64::try_from(index).map_err(|e| self.err(e))?,
                },
            ));
        }
        Ok(out)
    }

    /// Replaces the trusted checkpoint and right edge, and records the newest leaf of each
    /// session in `leaves`, in one transaction.
    pub fn advance(
        &mut self,
        trusted: &Trusted,
        right_edge: &[(Tile, Vec<u8>)],
        leaves: &[(String, SessionLeaf)],
    ) -> Result<(), StateError> {
        let path = self.path.clone();
        let err = |e: rusqlite::Error| StateError {
            path: path.clone(),
            reason: e.to_string(),
        };
        let tx = self.conn.transaction().map_err(err)?;
        tx.execute(
            "INSERT INTO trusted (id, origin, size, root, note) VALUES (1, ?1, ?2, ?3, ?4) \
             ON CONFLICT (id) DO UPDATE SET origin = excluded.origin, size = excluded.size, \
             root = excluded.root, note = excluded.note",
            params![
                trusted.origin,
                i64_of(trusted.size).map_err(err)?,
                trusted.root.as_bytes().as_slice(),
                trusted.note
            ],
        )
        .map_err(err)?;
        tx.execute("DELETE FROM right_edge", []).map_err(err)?;
        for (tile, data) in right_edge {
            tx.execute(
                "INSERT INTO right_edge (level, idx, width, data) VALUES (?1, ?2, ?3, ?4)",
                params![
                    tile.level,
                    i64_of(tile.index).map_err(err)?,
                    tile.width,
                    data
                ],
            )
            .map_err(err)?;
        }
        for (session, leaf) in leaves {
            tx.execute(
                "INSERT INTO sessions (session, seq, hash, idx) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT (session) DO UPDATE SET seq = excluded.seq, hash = excluded.hash, \
                 idx = excluded.idx WHERE excluded.idx > sessions.idx",
                params![
                    session,
                    i64_of(leaf.seq).map_err(err)?,
                    leaf.hash.as_slice(),
                    i64_of(leaf.index).map_err(err)?
                ],
            )
            .map_err(err)?;
        }
        tx.commit().map_err(err)
    }
}
