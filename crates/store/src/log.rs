//! The transparency log's storage contract (issue 17, docs/transparency.md "The agentledger
//! log"): one append-only Merkle tree per project, kept as C2SP tiles beside the events.
//!
//! The tree math and every wire format live in `agentledger-tlog`; this module fixes the one
//! format that is ours, the **leaf** ([`leaf_entry`]), and turns the store's tile reads into
//! roots and proofs ([`root_at`], [`inclusion_proof`], [`consistency_proof`]) through the
//! crate's plan/assemble pairs, reading about 2·log2(n) hashes from a handful of tiles.
//!
//! What each backend guarantees (see `sqlite/tlog.rs` and `postgres/tlog.rs` for how):
//! - an event gets a leaf index once, in the transaction that writes the tiles and moves the
//!   project's integration cursor, so a crash before that COMMIT loses nothing (the event is
//!   integrated on the next pass) and a crash after it cannot integrate it again;
//! - the integration order is fixed by stored columns, so the tree is a function of the
//!   committed events and can be rebuilt from them;
//! - one checkpoint per (project, size): a second, different root for a stored size is refused.

use std::collections::HashMap;

use agentledger_core::Micros;
use agentledger_tlog::tile::{
    TILE_HEIGHT, TILE_WIDTH, Tile, hash_from_tile, tile_for_stored_index,
};
use agentledger_tlog::tree::{
    consistency_proof_assemble, consistency_proof_plan, inclusion_proof_assemble,
    inclusion_proof_plan, tree_hash_assemble, tree_hash_plan,
};
use agentledger_tlog::{EMPTY_ROOT, Hash};

use crate::{EventStore, ProjectRef, StoreError, StoreResult};

/// First byte of every leaf entry: the leaf format's version.
pub const LEAF_FORMAT_V1: u8 = 0x01;

/// Leaves a single [`EventStore::log_integrate`] call adds at most (one transaction).
pub const MAX_INTEGRATE: usize = 4_096;

/// The entry (leaf data) of one event, as docs/transparency.md "Leaves" specifies:
///
/// ```text
/// 0x01                                  leaf format version
/// u16 big-endian                        length of the session id in bytes (UTF-8)
/// session id bytes
/// u64 big-endian                        seq
/// 32 bytes                              the event's chain hash
/// ```
///
/// The payload is not in the leaf (its digest is inside the chain hash), so erasing a payload
/// leaves the log and every proof intact. The project is not in it either: each project has
/// its own log, named by the checkpoint's origin. Session ids are at most 256 characters, so
/// the length always fits (a longer one is refused rather than truncated).
pub fn leaf_entry(session_id: &str, seq: u64, hash: &[u8; 32]) -> StoreResult<Vec<u8>> {
    let len = u16::try_from(session_id.len())
        .map_err(|_| StoreError::Corrupt("a session id is too long for a log leaf".into()))?;
    let mut out = Vec::with_capacity(1 + 2 + session_id.len() + 8 + 32);
    out.push(LEAF_FORMAT_V1);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(session_id.as_bytes());
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(hash);
    Ok(out)
}

/// A project's integrated tree: its size and root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogHead {
    pub size: u64,
    pub root: Hash,
}

impl LogHead {
    pub const EMPTY: LogHead = LogHead {
        size: 0,
        root: EMPTY_ROOT,
    };
}

/// What one integration pass did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Integrated {
    /// The tree after the pass.
    pub head: LogHead,
    /// Leaves the pass added (0: nothing was waiting).
    pub added: u64,
}

/// A signed checkpoint as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogCheckpoint {
    pub size: u64,
    pub root: Hash,
    /// The signed note, byte for byte as served.
    pub note: Vec<u8>,
    pub created_at: Micros,
}

/// A witness's cosignature of one of the project's stored checkpoints (C2SP
/// tlog-cosignature), kept as the witness answered it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogCosignature {
    /// The cosigned checkpoint's tree size.
    pub size: u64,
    /// The witness's key name (the signature line's name).
    pub witness: String,
    /// The witness's key ID (the first four bytes of the line's signature).
    pub key_id: u32,
    /// The signature line, `— <name> <base64>\n`.
    pub line: String,
    pub created_at: Micros,
}

/// Longest cosignature line kept (an Ed25519 cosignature line is about 140 bytes, an ML-DSA-44
/// one about 3.3 KB).
pub const MAX_COSIGNATURE_LINE: usize = 4096;

/// A stored hash or tile the log should hold and does not: the tree is damaged.
fn missing(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("transparency log: {what}"))
}

/// Reads the stored hashes at `indexes` of `project`'s tree of `size` leaves from its tiles.
/// Like `tlog::TileHashReader`, each tile is read once, at the widest width the tree has.
pub async fn read_hashes(
    store: &dyn EventStore,
    project: &ProjectRef,
    size: u64,
    indexes: &[u64],
) -> StoreResult<Vec<Hash>> {
    let mut wanted: Vec<Tile> = Vec::new();
    let mut positions: HashMap<(u8, u64), usize> = HashMap::new();
    let mut which = Vec::with_capacity(indexes.len());
    for &index in indexes {
        let (mut tile, _) = tile_for_stored_index(index);
        let level_size = u128::from(size >> (u32::from(tile.level) * TILE_HEIGHT));
        let available = level_size.saturating_sub(u128::from(tile.index) << TILE_HEIGHT);
        if available < u128::from(tile.width) {
            return Err(missing(format_args!(
                "stored hash {index} is beyond a tree of {size}"
            )));
        }
        tile.width = available.min(u128::from(TILE_WIDTH)) as u16;
        let position = *positions
            .entry((tile.level, tile.index))
            .or_insert_with(|| {
                wanted.push(tile);
                wanted.len() - 1
            });
        which.push(position);
    }
    let data = store.log_tiles(project, &wanted).await?;
    if data.len() != wanted.len() {
        return Err(missing("the store answered a different number of tiles"));
    }
    indexes
        .iter()
        .zip(which)
        .map(|(&index, w)| {
            let bytes = data[w]
                .as_deref()
                .ok_or_else(|| missing(format_args!("tile {} is not stored", wanted[w].path())))?;
            hash_from_tile(&wanted[w], bytes, index).map_err(missing)
        })
        .collect()
}

/// The root of the first `size` leaves of `project`'s log, from its tiles.
pub async fn root_at(store: &dyn EventStore, project: &ProjectRef, size: u64) -> StoreResult<Hash> {
    let hashes = read_hashes(store, project, size, &tree_hash_plan(size)).await?;
    tree_hash_assemble(size, &hashes).map_err(missing)
}

/// RFC 6962 `PATH(index, D[size])` in `project`'s log.
pub async fn inclusion_proof(
    store: &dyn EventStore,
    project: &ProjectRef,
    index: u64,
    size: u64,
) -> StoreResult<Vec<Hash>> {
    let plan = inclusion_proof_plan(index, size).map_err(missing)?;
    let hashes = read_hashes(store, project, size, &plan).await?;
    inclusion_proof_assemble(index, size, &hashes).map_err(missing)
}

/// RFC 6962 `PROOF(old, D[new])` in `project`'s log.
pub async fn consistency_proof(
    store: &dyn EventStore,
    project: &ProjectRef,
    old: u64,
    new: u64,
) -> StoreResult<Vec<Hash>> {
    let plan = consistency_proof_plan(old, new).map_err(missing)?;
    let hashes = read_hashes(store, project, new, &plan).await?;
    consistency_proof_assemble(old, new, &hashes).map_err(missing)
}

/// Cuts a stored tile (its widest version) to the width asked for: a tile's first hashes never
/// change as it widens, so a partial tile of any smaller width is a prefix of the stored one.
pub(crate) fn cut_tile(tile: &Tile, stored_width: u16, data: Vec<u8>) -> Option<Vec<u8>> {
    let want = usize::from(tile.width) * agentledger_tlog::HASH_SIZE;
    (stored_width >= tile.width && data.len() >= want).then(|| {
        let mut data = data;
        data.truncate(want);
        data
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaf_entry_bytes_are_the_documented_ones() {
        // The worked example of docs/transparency.md "Leaves".
        let entry = leaf_entry("sess-1", 2, &[0xab; 32]).unwrap();
        let mut want = vec![0x01, 0x00, 0x06];
        want.extend_from_slice(b"sess-1");
        want.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 2]);
        want.extend_from_slice(&[0xab; 32]);
        assert_eq!(entry, want);
        assert_eq!(
            agentledger_tlog::leaf_hash(&entry).to_hex(),
            "190bb3f3230875f3026e353e759ab904fe5d640c42c37681a26dc942585adff9",
            "update the docs' worked example if this changes"
        );
    }
}
