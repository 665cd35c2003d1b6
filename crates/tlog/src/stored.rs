//! The stored-hash layout: how a log persists its tree so that appending a leaf writes a few
//! hashes and a proof reads O(log n) of them, never recomputing the tree.
//!
//! This is the layout of Go's `golang.org/x/mod/sumdb/tlog` (`StoredHashIndex`), kept so that
//! anyone who knows that package can read our store. Every complete subtree hash is stored once,
//! in the order it becomes known while leaves are appended: leaf 0, leaf 1, node(0..2), leaf 2,
//! leaf 3, node(2..4), node(0..4), leaf 4, ... The hash at `level` L covering leaves
//! `[n·2^L, (n+1)·2^L)` lives at [`stored_hash_index`]`(L, n)`. After `n` leaves exactly
//! [`stored_hash_count`]`(n)` hashes exist, and appending leaf `n` adds the hashes returned by
//! [`stored_hashes_for_leaf`] at indices `stored_hash_count(n)..stored_hash_count(n+1)`.
//!
//! Readers are synchronous ([`HashReader`]). A caller whose storage is async uses the
//! "plan, then assemble" pairs instead: e.g. [`stored_hashes_plan`] lists the indices to read,
//! the caller reads them however it likes, and [`stored_hashes_assemble`] finishes the job.
//! The proof and tree-hash functions in [`crate::tree`] follow the same pattern.

use crate::hash::{Hash, leaf_hash, node_hash};

/// A failure to read stored hashes, reported by a [`HashReader`] or a tile reader.
#[derive(Debug, thiserror::Error)]
pub enum HashReadError {
    /// The reader does not hold the hash at this stored index (not yet integrated, or beyond
    /// the tree size the reader was opened at).
    #[error("stored hash index {0} is not available")]
    Missing(u64),
    /// The reader returned a different number of hashes than indices asked for.
    #[error("reader returned {got} hashes for {want} indices")]
    WrongCount { got: usize, want: usize },
    /// A tile was malformed (wrong length for its width).
    #[error("tile {path} has {got} bytes, want {want}")]
    BadTile {
        path: String,
        got: usize,
        want: usize,
    },
    /// The backing store failed; the source says how.
    #[error("reading stored hashes failed")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Random access to stored hashes by [`stored_hash_index`].
///
/// Implemented by [`MemoryTree`] for tests and small tools, and by
/// [`crate::tile::TileHashReader`] over any [`crate::tile::TileReader`]; the store can
/// implement it directly over its own table.
pub trait HashReader {
    /// Returns the hashes at `indexes`, in the same order.
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, HashReadError>;
}

/// Reads and checks that the reader answered one hash per index.
pub(crate) fn read_exact(
    reader: &(impl HashReader + ?Sized),
    indexes: &[u64],
) -> Result<Vec<Hash>, HashReadError> {
    if indexes.is_empty() {
        return Ok(Vec::new());
    }
    let hashes = reader.read_hashes(indexes)?;
    if hashes.len() != indexes.len() {
        return Err(HashReadError::WrongCount {
            got: hashes.len(),
            want: indexes.len(),
        });
    }
    Ok(hashes)
}

/// The stored index of the hash at `level` covering leaves `[n·2^level, (n+1)·2^level)`.
///
/// Same numbering as Go's `tlog.StoredHashIndex`.
pub fn stored_hash_index(level: u32, n: u64) -> u64 {
    // The hash is stored right after the last leaf it covers, plus one slot per level above 0.
    let mut n = n;
    for _ in 0..level {
        n = 2 * n + 1;
    }
    let mut i = 0u64;
    let mut m = n;
    while m > 0 {
        i += m;
        m >>= 1;
    }
    i + u64::from(level)
}

/// The inverse of [`stored_hash_index`]: `(level, n)`.
pub fn split_stored_hash_index(index: u64) -> (u32, u64) {
    // Leaf n lives at 2n - popcount(n); start from an under-estimate and walk forward.
    let mut n = index / 2;
    let mut index_n = stored_hash_index(0, n);
    while index_n > index && n > 0 {
        n -= 1;
        index_n = stored_hash_index(0, n);
    }
    loop {
        let next = index_n + 1 + u64::from((n + 1).trailing_zeros());
        if next > index {
            break;
        }
        n += 1;
        index_n = next;
    }
    // index_n is the position of leaf n; the hashes after it are the nodes it completes.
    let level = (index - index_n) as u32;
    (level, n >> level)
}

/// How many hashes are stored for a tree of `n` leaves.
pub fn stored_hash_count(n: u64) -> u64 {
    if n == 0 {
        return 0;
    }
    let mut count = stored_hash_index(0, n - 1) + 1;
    let mut i = n - 1;
    while i & 1 != 0 {
        count += 1;
        i >>= 1;
    }
    count
}

/// Indices the integrator must read to append leaf `n` (the left siblings it completes).
pub fn stored_hashes_plan(n: u64) -> Vec<u64> {
    let m = (n + 1).trailing_zeros();
    // Highest level first, like Go, so that a reader sees ascending indices.
    (0..m)
        .rev()
        .map(|i| stored_hash_index(i, (n >> i) - 1))
        .collect()
}

/// The hashes to store when appending leaf `n` with hash `leaf`, given the hashes read at
/// [`stored_hashes_plan`]`(n)` (same order). They go at stored indices
/// `stored_hash_count(n)..stored_hash_count(n + 1)`.
pub fn stored_hashes_assemble(
    n: u64,
    leaf: Hash,
    siblings: &[Hash],
) -> Result<Vec<Hash>, HashReadError> {
    let m = (n + 1).trailing_zeros() as usize;
    if siblings.len() != m {
        return Err(HashReadError::WrongCount {
            got: siblings.len(),
            want: m,
        });
    }
    let mut hashes = Vec::with_capacity(m + 1);
    let mut h = leaf;
    hashes.push(h);
    for sibling in siblings.iter().rev() {
        h = node_hash(sibling, &h);
        hashes.push(h);
    }
    Ok(hashes)
}

/// The hashes to store when appending leaf number `n` (0-based) whose leaf hash is `leaf`,
/// reading the earlier hashes it needs from `reader`. Go's `tlog.StoredHashesForRecordHash`.
pub fn stored_hashes_for_leaf(
    n: u64,
    leaf: Hash,
    reader: &(impl HashReader + ?Sized),
) -> Result<Vec<Hash>, HashReadError> {
    let siblings = read_exact(reader, &stored_hashes_plan(n))?;
    stored_hashes_assemble(n, leaf, &siblings)
}

/// A whole tree's stored hashes in memory: the reference [`HashReader`], used by tests, the
/// witness and offline tools that hold small trees. Not meant for a million-leaf server log
/// (that is the store's job, with the same layout).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemoryTree {
    size: u64,
    hashes: Vec<Hash>,
}

impl MemoryTree {
    /// An empty tree.
    pub fn new() -> MemoryTree {
        MemoryTree::default()
    }

    /// A tree of these entries (hashed as leaves).
    pub fn from_entries<T: AsRef<[u8]>>(entries: impl IntoIterator<Item = T>) -> MemoryTree {
        let mut tree = MemoryTree::new();
        for entry in entries {
            tree.append_leaf_hash(leaf_hash(entry.as_ref()));
        }
        tree
    }

    /// Number of leaves.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// All stored hashes, in stored-index order.
    pub fn stored_hashes(&self) -> &[Hash] {
        &self.hashes
    }

    /// Appends an entry; returns its index.
    pub fn append(&mut self, entry: &[u8]) -> u64 {
        self.append_leaf_hash(leaf_hash(entry))
    }

    /// Appends a leaf by its leaf hash; returns its index.
    pub fn append_leaf_hash(&mut self, leaf: Hash) -> u64 {
        let n = self.size;
        // Every planned index is below stored_hash_count(n) == self.hashes.len(): the siblings
        // are already in memory, so this cannot fail (the indexing states that invariant).
        let siblings: Vec<Hash> = stored_hashes_plan(n)
            .into_iter()
            .map(|i| self.hashes[i as usize])
            .collect();
        let mut h = leaf;
        self.hashes.push(h);
        for sibling in siblings.iter().rev() {
            h = node_hash(sibling, &h);
            self.hashes.push(h);
        }
        self.size += 1;
        n
    }
}

impl HashReader for MemoryTree {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, HashReadError> {
        indexes
            .iter()
            .map(|&i| {
                usize::try_from(i)
                    .ok()
                    .and_then(|u| self.hashes.get(u))
                    .copied()
                    .ok_or(HashReadError::Missing(i))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_layout_matches_go() {
        // Go's tlog_test.go: the first stored hashes in order.
        let want = [
            (0, 0),
            (0, 1),
            (1, 0),
            (0, 2),
            (0, 3),
            (1, 1),
            (2, 0),
            (0, 4),
        ];
        for (i, &(level, n)) in want.iter().enumerate() {
            assert_eq!(stored_hash_index(level, n), i as u64);
            assert_eq!(split_stored_hash_index(i as u64), (level, n));
        }
    }

    #[test]
    fn split_inverts_index_everywhere() {
        for index in 0..5000u64 {
            let (level, n) = split_stored_hash_index(index);
            assert_eq!(stored_hash_index(level, n), index, "index {index}");
        }
    }

    #[test]
    fn counts_follow_appends() {
        let mut tree = MemoryTree::new();
        for n in 0..300u64 {
            assert_eq!(stored_hash_count(n), tree.stored_hashes().len() as u64);
            tree.append(&n.to_be_bytes());
        }
    }
}
