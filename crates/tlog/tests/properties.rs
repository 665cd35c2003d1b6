//! Properties over large inputs the example tests do not reach: the stored-hash numbering
//! inverts everywhere, and tile paths round-trip for every coordinate.

use agentledger_tlog::Tile;
use agentledger_tlog::stored::{split_stored_hash_index, stored_hash_index};
use agentledger_tlog::tile::{TilePath, parse_tile_path};
use proptest::prelude::*;

proptest! {
    #[test]
    fn stored_index_inverts(level in 0u32..40, n in 0u64..(1 << 22)) {
        let index = stored_hash_index(level, n);
        prop_assert_eq!(split_stored_hash_index(index), (level, n));
    }

    #[test]
    fn tile_paths_round_trip(level in 0u8..=63, index in any::<u64>(), width in 1u16..=256) {
        let tile = Tile { level, index, width };
        prop_assert_eq!(parse_tile_path(&tile.path()), Ok(TilePath::Hashes(tile)));
        if let Some(entries) = tile.entries_path() {
            prop_assert_eq!(parse_tile_path(&entries), Ok(TilePath::Entries { index, width }));
        }
    }
}
