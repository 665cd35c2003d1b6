//! The transparency log's pure parts: tree math, tiles, checkpoints, signed notes,
//! cosignatures, witness requests, policies and proofs. No I/O, no clock, no randomness.
//!
//! Issue 17 puts every committed event into an append-only Merkle tree per project, publishes
//! signed checkpoints, and has independent witnesses co-sign them. Everything that has to be
//! *byte-exact* for outside tools to check our log lives here, in the public formats:
//!
//! | module | format |
//! |---|---|
//! | [`hash`], [`tree`] | RFC 6962 / RFC 9162 hashing, roots, inclusion and consistency proofs |
//! | [`stored`] | the stored-hash layout of Go's `sumdb/tlog` (what the store persists) |
//! | [`tile`] | C2SP `tlog-tiles` (tile coordinates, paths, entry bundles) |
//! | [`checkpoint`] | C2SP `tlog-checkpoint` |
//! | [`note`] | C2SP `signed-note` with Ed25519 keys (vkey/skey text encodings) |
//! | [`cosignature`] | C2SP `tlog-cosignature` (timestamped Ed25519, type 0x04) |
//! | [`witness`] | C2SP `tlog-witness` add-checkpoint request and responses |
//! | [`policy`] | C2SP `tlog-policy` files and quorum evaluation |
//! | [`proof`] | C2SP `tlog-proof` (inclusion) and our consistency proof text |
//!
//! The store, the integrator, the HTTP endpoints and the witness command are built on top of
//! this crate elsewhere; docs/transparency.md specifies every byte and says what is served.
//! Storage is reached only through the synchronous [`stored::HashReader`] and
//! [`tile::TileReader`] traits, or, for async storage, through the `*_plan` / `*_assemble`
//! function pairs that split "which hashes do I need" from "compute with them".

pub mod checkpoint;
pub mod cosignature;
pub mod hash;
pub mod note;
pub mod policy;
pub mod proof;
pub mod stored;
pub mod tile;
pub mod tree;
pub mod witness;

pub use checkpoint::Checkpoint;
pub use hash::{EMPTY_ROOT, HASH_SIZE, Hash, leaf_hash, node_hash};
pub use stored::{HashReadError, HashReader, MemoryTree};
pub use tile::{Tile, TileHashReader, TileReader};
pub use tree::{
    ProofError, TreeError, consistency_proof, inclusion_proof, tree_hash, verify_consistency,
    verify_inclusion,
};
