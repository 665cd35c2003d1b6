//! C2SP tlog-tiles (<https://c2sp.org/tlog-tiles>): the tree served as tiles of 256 hashes.
//!
//! A tile at level `L`, index `N` holds the hashes at stored level `8·L` for leaves
//! `[N·256^(L+1), (N+1)·256^(L+1))`: level 0 tiles hold leaf hashes, a level 1 hash is the root
//! of a full level 0 tile, and so on. The rightmost tiles of a tree are *partial* (width 1..=255)
//! and are served at `.p/<W>`. Paths spell the index in 3-digit groups, all but the last
//! prefixed with `x` (`1234067` → `x001/x234/067`), so a tile never collides with a directory.
//!
//! The same tile geometry as Go's `sumdb/tlog` at height 8, with C2SP's paths (which omit the
//! height). Tiles are derived data: [`tile_data`] cuts one from stored hashes, and a
//! [`TileHashReader`] answers [`HashReader`] queries from tiles, so a store that keeps only tiles
//! can still produce proofs. Entry bundles (`tile/entries/...`) carry the entries themselves,
//! each prefixed by its big-endian u16 length.

use crate::hash::{HASH_SIZE, Hash, node_hash};
use crate::stored::{
    HashReadError, HashReader, read_exact, split_stored_hash_index, stored_hash_index,
};

/// Tile height fixed by tlog-tiles: a full tile spans 2^8 = 256 hashes.
pub const TILE_HEIGHT: u32 = 8;
/// Hashes in a full tile.
pub const TILE_WIDTH: u16 = 1 << TILE_HEIGHT;
/// Highest tile level allowed in a path (tlog-tiles: 0..=63).
pub const MAX_TILE_LEVEL: u8 = 63;
/// Largest entry an entry bundle can carry (u16 length prefix).
pub const MAX_ENTRY_SIZE: usize = u16::MAX as usize;

/// One tile: `level` (0 = leaf hashes), `index` within the level, `width` 1..=256 hashes
/// (256 = full, fewer = partial).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tile {
    pub level: u8,
    pub index: u64,
    pub width: u16,
}

/// What a tile path names: hashes, or an entry bundle (`tile/entries/...`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TilePath {
    Hashes(Tile),
    /// The entries of the level 0 tile with this index and width.
    Entries {
        index: u64,
        width: u16,
    },
}

/// A tile path that is not exactly one this module would print.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TilePathError {
    #[error("tile path {0:?} does not start with \"tile/\"")]
    Prefix(String),
    #[error("tile path {0:?} has a bad level (decimal 0..=63, no leading zeroes)")]
    Level(String),
    #[error("tile path {0:?} has a bad index (3-digit groups, all but the last prefixed with x)")]
    Index(String),
    #[error("tile path {0:?} has a bad partial width (.p/1 to .p/255)")]
    Width(String),
}

/// An entry bundle that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryBundleError {
    #[error("entry {index} is {len} bytes; an entry bundle allows at most {MAX_ENTRY_SIZE}")]
    EntryTooLarge { index: usize, len: usize },
    #[error("entry bundle is truncated at byte {offset}")]
    Truncated { offset: usize },
    #[error("entry bundle holds {got} entries, want {want}")]
    WrongCount { got: usize, want: usize },
}

impl Tile {
    /// True if the tile holds all 256 hashes.
    pub fn is_full(&self) -> bool {
        self.width == TILE_WIDTH
    }

    /// The tile's path under the log prefix, e.g. `tile/0/x001/x234/067` or `tile/1/000.p/17`.
    pub fn path(&self) -> String {
        format!(
            "tile/{}/{}",
            self.level,
            index_and_width(self.index, self.width)
        )
    }

    /// The entry bundle path for this level 0 tile, e.g. `tile/entries/000.p/5`
    /// (`None` above level 0: only leaves have entries).
    pub fn entries_path(&self) -> Option<String> {
        (self.level == 0)
            .then(|| format!("tile/entries/{}", index_and_width(self.index, self.width)))
    }

    /// Position (at stored level `8·level`) of the tile's first hash.
    fn first_hash(&self) -> u64 {
        self.index << TILE_HEIGHT
    }
}

fn index_and_width(index: u64, width: u16) -> String {
    let mut n = index;
    let mut s = format!("{:03}", n % 1000);
    while n >= 1000 {
        n /= 1000;
        s = format!("x{:03}/{s}", n % 1000);
    }
    if width != TILE_WIDTH {
        s.push_str(&format!(".p/{width}"));
    }
    s
}

fn parse_decimal(s: &str) -> Option<u64> {
    let canonical =
        !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && (s == "0" || !s.starts_with('0'));
    if canonical { s.parse().ok() } else { None }
}

/// Parses `tile/<L>/<N>[.p/<W>]` or `tile/entries/<N>[.p/<W>]` strictly: it must be exactly
/// the path [`Tile::path`] / [`Tile::entries_path`] prints.
pub fn parse_tile_path(path: &str) -> Result<TilePath, TilePathError> {
    let rest = path
        .strip_prefix("tile/")
        .ok_or_else(|| TilePathError::Prefix(path.to_owned()))?;
    let (level, rest) = rest
        .split_once('/')
        .ok_or_else(|| TilePathError::Level(path.to_owned()))?;
    let (index_part, width) = match rest.split_once(".p/") {
        Some((index_part, w)) => {
            let w = parse_decimal(w)
                .filter(|w| (1..u64::from(TILE_WIDTH)).contains(w))
                .ok_or_else(|| TilePathError::Width(path.to_owned()))?;
            (index_part, w as u16)
        }
        None => (rest, TILE_WIDTH),
    };
    let bad_index = || TilePathError::Index(path.to_owned());
    let groups: Vec<&str> = index_part.split('/').collect();
    let mut index: u64 = 0;
    for (i, group) in groups.iter().enumerate() {
        let digits = if i + 1 < groups.len() {
            group.strip_prefix('x').ok_or_else(bad_index)?
        } else {
            group
        };
        if digits.len() != 3 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad_index());
        }
        let value: u64 = digits.parse().map_err(|_| bad_index())?;
        index = index
            .checked_mul(1000)
            .and_then(|n| n.checked_add(value))
            .ok_or_else(bad_index)?;
    }
    let parsed = if level == "entries" {
        TilePath::Entries { index, width }
    } else {
        let level = parse_decimal(level)
            .filter(|l| *l <= u64::from(MAX_TILE_LEVEL))
            .ok_or_else(|| TilePathError::Level(path.to_owned()))?;
        TilePath::Hashes(Tile {
            level: level as u8,
            index,
            width,
        })
    };
    // Leading zero groups ("x000/001") would name the same tile twice; only one spelling is valid.
    if index_and_width(index, width) != rest {
        return Err(bad_index());
    }
    Ok(parsed)
}

/// The tile (at the width needed to contain it) holding stored hash `stored_index`, and the
/// byte range within the tile's data from which that hash is computed.
///
/// A stored hash whose level is not a multiple of 8 is not in any tile directly: it is the hash
/// of 2^k consecutive hashes of one tile, which is what the byte range covers.
pub fn tile_for_stored_index(stored_index: u64) -> (Tile, std::ops::Range<usize>) {
    let (level, n) = split_stored_hash_index(stored_index);
    let tile_level = level / TILE_HEIGHT;
    let sub = level - tile_level * TILE_HEIGHT; // level within the tile
    let tile_index = (n << sub) >> TILE_HEIGHT;
    let n_in_tile = n - ((tile_index << TILE_HEIGHT) >> sub);
    let width = ((n_in_tile + 1) << sub) as u16;
    let start = ((n_in_tile << sub) as usize) * HASH_SIZE;
    let end = (((n_in_tile + 1) << sub) as usize) * HASH_SIZE;
    (
        Tile {
            level: tile_level as u8,
            index: tile_index,
            width,
        },
        start..end,
    )
}

/// The merkle hash of a run of 2^k hashes laid out in a tile.
fn hash_of_run(data: &[u8]) -> Hash {
    if data.len() <= HASH_SIZE {
        let mut h = [0u8; HASH_SIZE];
        h[..data.len()].copy_from_slice(data);
        return Hash(h);
    }
    let mid = data.len() / 2;
    node_hash(&hash_of_run(&data[..mid]), &hash_of_run(&data[mid..]))
}

/// Reads stored hash `stored_index` out of `data`, the bytes of `tile`.
pub fn hash_from_tile(tile: &Tile, data: &[u8], stored_index: u64) -> Result<Hash, HashReadError> {
    let want = usize::from(tile.width) * HASH_SIZE;
    if data.len() != want {
        return Err(HashReadError::BadTile {
            path: tile.path(),
            got: data.len(),
            want,
        });
    }
    let (needed, range) = tile_for_stored_index(stored_index);
    if needed.level != tile.level || needed.index != tile.index || needed.width > tile.width {
        return Err(HashReadError::Missing(stored_index));
    }
    Ok(hash_of_run(&data[range]))
}

/// The tiles that exist for a tree of `size` leaves (full ones, then the partial one per level).
pub fn tiles_for_size(size: u64) -> Vec<Tile> {
    new_tiles(0, size)
}

/// The tiles that a tree growing from `old` to `new` leaves creates or widens: what an
/// integrator writes after appending (Go's `tlog.NewTiles`).
pub fn new_tiles(old: u64, new: u64) -> Vec<Tile> {
    let h = TILE_HEIGHT;
    let mut tiles = Vec::new();
    // 256^8 = 2^64: levels 0..8 cover every u64 tree size.
    for level in 0..8u32 {
        let (old_n, new_n) = (old >> (h * level), new >> (h * level));
        if new_n == 0 {
            break;
        }
        if old_n == new_n {
            continue;
        }
        for n in (old_n >> h)..(new_n >> h) {
            tiles.push(Tile {
                level: level as u8,
                index: n,
                width: TILE_WIDTH,
            });
        }
        let n = new_n >> h;
        let w = new_n - (n << h);
        if w > 0 {
            tiles.push(Tile {
                level: level as u8,
                index: n,
                width: w as u16,
            });
        }
    }
    tiles
}

/// Stored indices whose hashes make up `tile`, in order.
pub fn tile_data_plan(tile: &Tile) -> Vec<u64> {
    let level = u32::from(tile.level) * TILE_HEIGHT;
    let start = tile.first_hash();
    (0..u64::from(tile.width))
        .map(|i| stored_hash_index(level, start + i))
        .collect()
}

/// The bytes of `tile` (its hashes concatenated), read from stored hashes.
pub fn tile_data(
    tile: &Tile,
    reader: &(impl HashReader + ?Sized),
) -> Result<Vec<u8>, HashReadError> {
    let hashes = read_exact(reader, &tile_data_plan(tile))?;
    Ok(hashes.iter().flat_map(|h| h.0).collect())
}

/// Access to tiles by coordinates: what a store that keeps tiles (not single hashes) implements.
pub trait TileReader {
    /// Returns the data of each tile, in order; each exactly `width · 32` bytes. A reader may
    /// answer a partial tile from a wider (or full) tile of the same level and index by
    /// truncating it: the first hashes of a tile never change.
    fn read_tiles(&self, tiles: &[Tile]) -> Result<Vec<Vec<u8>>, HashReadError>;
}

/// A [`HashReader`] over a [`TileReader`] for a tree of `size` leaves.
///
/// It trusts the tiles (they come from our own store); it does not re-check them against a
/// signed root. That is safe for producing proofs: a proof built from a bad tile fails
/// verification against the checkpoint at the client. A client reading *someone else's* tiles
/// must verify what it derives from them against a checkpoint it trusts.
pub struct TileHashReader<'a, R: TileReader + ?Sized> {
    pub size: u64,
    pub tiles: &'a R,
}

impl<R: TileReader + ?Sized> HashReader for TileHashReader<'_, R> {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, HashReadError> {
        let mut wanted: Vec<Tile> = Vec::new();
        let mut which = Vec::with_capacity(indexes.len());
        for &index in indexes {
            let (mut tile, _) = tile_for_stored_index(index);
            // Ask for the widest tile that exists at this tree size, so one read serves many.
            let level_size = u128::from(self.size >> (u32::from(tile.level) * TILE_HEIGHT));
            let available = level_size.saturating_sub(u128::from(tile.first_hash()));
            if available < u128::from(tile.width) {
                return Err(HashReadError::Missing(index));
            }
            tile.width = available.min(u128::from(TILE_WIDTH)) as u16;
            let position = match wanted.iter().position(|t| *t == tile) {
                Some(p) => p,
                None => {
                    wanted.push(tile);
                    wanted.len() - 1
                }
            };
            which.push(position);
        }
        let data = self.tiles.read_tiles(&wanted)?;
        if data.len() != wanted.len() {
            return Err(HashReadError::WrongCount {
                got: data.len(),
                want: wanted.len(),
            });
        }
        indexes
            .iter()
            .zip(which)
            .map(|(&index, w)| hash_from_tile(&wanted[w], &data[w], index))
            .collect()
    }
}

/// Encodes entries as an entry bundle: each entry as big-endian u16 length then its bytes.
pub fn encode_entry_bundle<T: AsRef<[u8]>>(entries: &[T]) -> Result<Vec<u8>, EntryBundleError> {
    let mut out = Vec::new();
    for (index, entry) in entries.iter().enumerate() {
        let entry = entry.as_ref();
        let len = u16::try_from(entry.len()).map_err(|_| EntryBundleError::EntryTooLarge {
            index,
            len: entry.len(),
        })?;
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(entry);
    }
    Ok(out)
}

/// Splits an entry bundle into its entries; `width` is the number the tile path promises.
pub fn parse_entry_bundle(data: &[u8], width: u16) -> Result<Vec<&[u8]>, EntryBundleError> {
    let mut entries = Vec::new();
    let mut offset = 0usize;
    while offset < data.len() {
        let Some(len_bytes) = data.get(offset..offset + 2) else {
            return Err(EntryBundleError::Truncated { offset });
        };
        let len = usize::from(u16::from_be_bytes([len_bytes[0], len_bytes[1]]));
        let Some(entry) = data.get(offset + 2..offset + 2 + len) else {
            return Err(EntryBundleError::Truncated { offset });
        };
        entries.push(entry);
        offset += 2 + len;
    }
    if entries.len() != usize::from(width) {
        return Err(EntryBundleError::WrongCount {
            got: entries.len(),
            want: usize::from(width),
        });
    }
    Ok(entries)
}
