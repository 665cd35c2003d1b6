//! C2SP tlog-tiles: path encoding known answers from the spec, tile geometry, and proofs served
//! through tiles agreeing with proofs from stored hashes.

use std::collections::HashMap;

use agentledger_tlog::stored::{HashReadError, stored_hash_count};
use agentledger_tlog::tile::{
    EntryBundleError, TilePath, TilePathError, encode_entry_bundle, new_tiles, parse_entry_bundle,
    parse_tile_path, tile_data, tiles_for_size,
};
use agentledger_tlog::{
    MemoryTree, Tile, TileHashReader, TileReader, consistency_proof, inclusion_proof, tree_hash,
};

fn t(level: u8, index: u64, width: u16) -> Tile {
    Tile {
        level,
        index,
        width,
    }
}

#[test]
fn paths_from_the_spec() {
    assert_eq!(t(0, 1234067, 256).path(), "tile/0/x001/x234/067");
    assert_eq!(t(1, 0, 17).path(), "tile/1/000.p/17");
    assert_eq!(t(0, 273, 112).path(), "tile/0/273.p/112");
    assert_eq!(t(2, 1000, 256).path(), "tile/2/x001/000");
    assert_eq!(
        t(0, 1234067, 5).entries_path().as_deref(),
        Some("tile/entries/x001/x234/067.p/5")
    );
    assert_eq!(t(1, 0, 256).entries_path(), None);
    for tile in [
        t(0, 1234067, 256),
        t(1, 0, 17),
        t(63, u64::MAX, 1),
        t(0, 999, 255),
    ] {
        assert_eq!(parse_tile_path(&tile.path()), Ok(TilePath::Hashes(tile)));
    }
    assert_eq!(
        parse_tile_path("tile/entries/x001/x234/067.p/5"),
        Ok(TilePath::Entries {
            index: 1234067,
            width: 5
        })
    );
}

#[test]
fn non_canonical_paths_are_refused() {
    let cases = [
        ("tiles/0/000", TilePathError::Prefix("tiles/0/000".into())),
        ("tile/00/000", TilePathError::Level("tile/00/000".into())),
        ("tile/64/000", TilePathError::Level("tile/64/000".into())),
        ("tile/0/1234", TilePathError::Index("tile/0/1234".into())),
        (
            "tile/0/x000/001",
            TilePathError::Index("tile/0/x000/001".into()),
        ),
        (
            "tile/0/001/234",
            TilePathError::Index("tile/0/001/234".into()),
        ),
        (
            "tile/0/000.p/256",
            TilePathError::Width("tile/0/000.p/256".into()),
        ),
        (
            "tile/0/000.p/0",
            TilePathError::Width("tile/0/000.p/0".into()),
        ),
        (
            "tile/0/000.p/05",
            TilePathError::Width("tile/0/000.p/05".into()),
        ),
    ];
    for (path, want) in cases {
        assert_eq!(parse_tile_path(path), Err(want), "{path}");
    }
}

#[test]
fn tile_set_for_size_70000_matches_the_spec() {
    // "273 full level 0 tiles, one partial level 0 tile of width 112, one full level 1 tile,
    // one partial level 1 tile of width 17, and one partial level 2 tile of width 1."
    let tiles = tiles_for_size(70_000);
    let level0: Vec<&Tile> = tiles.iter().filter(|t| t.level == 0).collect();
    assert_eq!(level0.iter().filter(|t| t.is_full()).count(), 273);
    assert!(level0.contains(&&t(0, 273, 112)));
    assert!(tiles.contains(&t(1, 0, 256)));
    assert!(tiles.contains(&t(1, 1, 17)));
    assert!(tiles.contains(&t(2, 0, 1)));
    assert_eq!(tiles.len(), 273 + 1 + 1 + 1 + 1);
    // "a tree of size 256 will be represented by a full level 0 tile and a partial level 1
    // tile of width 1."
    assert_eq!(tiles_for_size(256), vec![t(0, 0, 256), t(1, 0, 1)]);
    assert_eq!(new_tiles(256, 256), vec![]);
    assert_eq!(
        new_tiles(255, 257),
        vec![t(0, 0, 256), t(0, 1, 1), t(1, 0, 1)]
    );
}

/// Tiles kept in a map, as a store would keep them; partial reads truncate wider tiles.
struct MapTiles(HashMap<(u8, u64), Vec<u8>>);

impl TileReader for MapTiles {
    fn read_tiles(&self, tiles: &[Tile]) -> Result<Vec<Vec<u8>>, HashReadError> {
        tiles
            .iter()
            .map(|t| {
                let data = self
                    .0
                    .get(&(t.level, t.index))
                    .ok_or(HashReadError::Missing(t.index))?;
                Ok(data[..usize::from(t.width) * 32].to_vec())
            })
            .collect()
    }
}

#[test]
fn proofs_through_tiles_equal_proofs_from_stored_hashes() {
    let size = 70_000u64;
    let tree = MemoryTree::from_entries((0..size).map(|i| i.to_be_bytes()));
    assert_eq!(tree.stored_hashes().len() as u64, stored_hash_count(size));
    let mut map = HashMap::new();
    for tile in tiles_for_size(size) {
        map.insert(
            (tile.level, tile.index),
            tile_data(&tile, &tree).expect("tile"),
        );
    }
    let tiles = MapTiles(map);
    let reader = TileHashReader {
        size,
        tiles: &tiles,
    };
    for s in [1, 2, 255, 256, 257, 65_535, 65_536, 65_537, 69_999, 70_000] {
        assert_eq!(
            tree_hash(s, &reader).expect("root"),
            tree_hash(s, &tree).expect("root")
        );
    }
    for (index, s) in [(0, 70_000), (69_999, 70_000), (12_345, 65_536), (256, 257)] {
        assert_eq!(
            inclusion_proof(index, s, &reader).expect("proof"),
            inclusion_proof(index, s, &tree).expect("proof")
        );
    }
    for (old, new) in [
        (1, 70_000),
        (256, 70_000),
        (65_537, 69_999),
        (70_000, 70_000),
    ] {
        assert_eq!(
            consistency_proof(old, new, &reader).expect("proof"),
            consistency_proof(old, new, &tree).expect("proof")
        );
    }
    // A hash beyond the tree the reader was opened at is missing, not invented.
    let small = TileHashReader {
        size: 1000,
        tiles: &tiles,
    };
    assert!(tree_hash(1001, &small).is_err());
    assert!(
        inclusion_proof(1000, 1001, &small).is_ok(),
        "needs only leaves below 1000"
    );
}

#[test]
fn entry_bundles_round_trip_and_fail_precisely() {
    let entries: Vec<Vec<u8>> = vec![b"".to_vec(), b"abc".to_vec(), vec![7u8; 300]];
    let data = encode_entry_bundle(&entries).expect("encode");
    assert_eq!(&data[..5], &[0, 0, 0, 3, b'a']);
    let parsed = parse_entry_bundle(&data, 3).expect("parse");
    assert_eq!(
        parsed,
        entries.iter().map(Vec::as_slice).collect::<Vec<_>>()
    );
    assert_eq!(
        parse_entry_bundle(&data[..data.len() - 1], 3),
        Err(EntryBundleError::Truncated { offset: 7 })
    );
    assert_eq!(
        parse_entry_bundle(&data, 4),
        Err(EntryBundleError::WrongCount { got: 3, want: 4 })
    );
    assert_eq!(
        encode_entry_bundle(&[vec![0u8; 70_000]]),
        Err(EntryBundleError::EntryTooLarge {
            index: 0,
            len: 70_000
        })
    );
}

/// The integrator's path: a tree kept only as tiles, grown batch by batch from its right edge,
/// ends with exactly the tiles and root of the same tree built in memory.
#[test]
fn integrating_from_tiles_matches_the_tree_in_memory() {
    use agentledger_tlog::integrate::{integrate, right_edge_tiles};
    use agentledger_tlog::leaf_hash;

    let total = 70_100u64;
    let leaves: Vec<_> = (0..total).map(|i| leaf_hash(&i.to_be_bytes())).collect();
    // The reference: the whole tree in memory (its first hashes are those of every smaller tree).
    let memory = MemoryTree::from_entries((0..total).map(|i| i.to_be_bytes()));
    let mut stored: HashMap<(u8, u64), Vec<u8>> = HashMap::new();
    let mut size = 0u64;
    // Batches that cross tile and level boundaries: 1, 255, 256, 65535, 65536, ...
    for next in [
        1, 2, 255, 256, 257, 1000, 65_535, 65_536, 65_537, 70_000, 70_100,
    ] {
        let edge: Vec<(Tile, Vec<u8>)> = right_edge_tiles(size)
            .into_iter()
            .map(|t| {
                let data = stored[&(t.level, t.index)][..usize::from(t.width) * 32].to_vec();
                (t, data)
            })
            .collect();
        let out = integrate(size, &edge, &leaves[size as usize..next as usize]).expect("append");
        assert_eq!(out.size, next);
        for (tile, data) in out.tiles {
            stored.insert((tile.level, tile.index), data);
        }
        assert_eq!(
            out.root,
            tree_hash(next, &memory).expect("root"),
            "size {next}"
        );
        for tile in tiles_for_size(next) {
            assert_eq!(
                stored[&(tile.level, tile.index)][..usize::from(tile.width) * 32],
                tile_data(&tile, &memory).expect("tile")[..],
                "{} at size {next}",
                tile.path()
            );
        }
        size = next;
    }
    // Without its right edge, appending is refused rather than guessed.
    assert!(integrate(size, &[], &leaves[..1]).is_err());
}
