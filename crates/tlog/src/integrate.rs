//! Appending leaves to a log that is stored *only as tiles*: what the integrator runs.
//!
//! Issue 17 stores the tree as C2SP tiles. Appending needs a few old hashes (the left siblings
//! the new leaves complete) and the new root needs the tree's right edge; all of them lie in the
//! old tree's *partial* tiles, one per level at most ([`right_edge_tiles`]): every full tile is
//! final and never read again. So an integrator reads those few tiles, calls [`integrate`] with
//! the new leaf hashes, and writes back the returned tiles (new full tiles, the widened partial
//! ones) and the new root in one transaction.
//!
//! Why this holds: a hash that a new leaf completes, or that the new root folds in, covers
//! leaves in the same 2^(8(L+1))-leaf span as the tree's end at its tile level L, so it sits in
//! the tile holding the end of the tree at that level, which in the old tree is the partial one.
//! A hash that is needed but missing is reported as [`HashReadError::Missing`], never invented.

use crate::hash::Hash;
use crate::stored::{HashReadError, HashReader, stored_hash_count, stored_hashes_for_leaf};
use crate::tile::{TILE_HEIGHT, Tile, hash_from_tile, new_tiles, tile_data, tile_for_stored_index};
use crate::tree::tree_hash;

/// The tiles [`integrate`] needs from a tree of `size` leaves: its partial tile at each level
/// that has one. A level whose hash count is a multiple of 256 has none (so a tree of 65,536
/// leaves needs only `tile/2/000.p/1`), and the empty tree needs nothing.
pub fn right_edge_tiles(size: u64) -> Vec<Tile> {
    (0..8u32)
        .map_while(|level| {
            let n = size >> (TILE_HEIGHT * level);
            (n > 0).then_some((level, n))
        })
        .filter_map(|(level, n)| {
            let width = (n % 256) as u16;
            (width > 0).then_some(Tile {
                level: level as u8,
                index: n >> TILE_HEIGHT,
                width,
            })
        })
        .collect()
}

/// The result of appending: the new size and root, and the tiles to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Integration {
    pub size: u64,
    pub root: Hash,
    /// Every tile created or widened, with its bytes (`tile::new_tiles(old, new)` order).
    pub tiles: Vec<(Tile, Vec<u8>)>,
}

/// Old hashes from the right-edge tiles, new hashes from memory.
struct Overlay<'a> {
    old_count: u64,
    right_edge: &'a [(Tile, Vec<u8>)],
    new: Vec<Hash>,
}

impl HashReader for Overlay<'_> {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, HashReadError> {
        indexes
            .iter()
            .map(|&index| {
                if index >= self.old_count {
                    let offset = usize::try_from(index - self.old_count)
                        .map_err(|_| HashReadError::Missing(index))?;
                    return self
                        .new
                        .get(offset)
                        .copied()
                        .ok_or(HashReadError::Missing(index));
                }
                let (needed, _) = tile_for_stored_index(index);
                let (tile, data) = self
                    .right_edge
                    .iter()
                    .find(|(t, _)| {
                        t.level == needed.level
                            && t.index == needed.index
                            && t.width >= needed.width
                    })
                    .ok_or(HashReadError::Missing(index))?;
                hash_from_tile(tile, data, index)
            })
            .collect()
    }
}

/// Appends `leaves` (leaf hashes, in order) to a tree of `old_size` leaves whose right-edge
/// tiles are `right_edge` (as [`right_edge_tiles`] lists them, with their bytes).
pub fn integrate(
    old_size: u64,
    right_edge: &[(Tile, Vec<u8>)],
    leaves: &[Hash],
) -> Result<Integration, HashReadError> {
    let mut overlay = Overlay {
        old_count: stored_hash_count(old_size),
        right_edge,
        new: Vec::new(),
    };
    let mut n = old_size;
    for leaf in leaves {
        let hashes = stored_hashes_for_leaf(n, *leaf, &overlay)?;
        overlay.new.extend(hashes);
        n += 1;
    }
    let root = tree_hash(n, &overlay).map_err(|e| match e {
        crate::tree::TreeError::Read(e) => e,
        // tree_hash only fails by reading.
        other => HashReadError::Backend(Box::new(other)),
    })?;
    let tiles = new_tiles(old_size, n)
        .into_iter()
        .map(|tile| tile_data(&tile, &overlay).map(|data| (tile, data)))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Integration {
        size: n,
        root,
        tiles,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn right_edge_is_the_partial_tiles() {
        assert_eq!(right_edge_tiles(0), vec![]);
        assert_eq!(
            right_edge_tiles(65_536),
            vec![Tile {
                level: 2,
                index: 0,
                width: 1
            }]
        );
        let paths: Vec<String> = right_edge_tiles(70_000).iter().map(Tile::path).collect();
        assert_eq!(
            paths,
            ["tile/0/273.p/112", "tile/1/001.p/17", "tile/2/000.p/1"]
        );
    }
}
