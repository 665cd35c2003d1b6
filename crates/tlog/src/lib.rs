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
//! | [`integrate`] | appending leaves to a tree kept only as tiles (reads the right edge) |
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
//!
//! # How the server pieces use it
//!
//! ```
//! use agentledger_tlog::stored::{stored_hash_count, stored_hashes_for_leaf};
//! use agentledger_tlog::tile::{new_tiles, tile_data};
//! use agentledger_tlog::{Checkpoint, MemoryTree, inclusion_proof, leaf_hash, tree_hash};
//! use agentledger_tlog::note::{Ed25519Signer, open, sign};
//! use agentledger_tlog::proof::TlogProof;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // Integrator: append leaves. `MemoryTree` stands in for the store's hash table; a store
//! // computes the same hashes with `stored_hashes_for_leaf` (or the plan/assemble pair) and
//! // writes them at `stored_hash_count(n)..`.
//! let mut tree = MemoryTree::new();
//! for n in 0..300u64 {
//!     let leaf = leaf_hash(format!("entry {n}").as_bytes());
//!     let to_store = stored_hashes_for_leaf(n, leaf, &tree)?;
//!     assert_eq!(tree.stored_hashes().len() as u64, stored_hash_count(n));
//!     tree.append_leaf_hash(leaf);
//!     assert_eq!(&tree.stored_hashes()[stored_hash_count(n) as usize..], &to_store[..]);
//! }
//! // Tiles to (re)write after growing from 0 to 300 leaves.
//! for tile in new_tiles(0, 300) {
//!     let _bytes = tile_data(&tile, &tree)?; // store at tile.path()
//! }
//! // Publisher: sign a checkpoint (the seed comes from the key file, not from this crate).
//! let log_key = Ed25519Signer::from_seed("log.example/project-1", [7; 32])?;
//! let checkpoint = Checkpoint::new("log.example/project-1", 300, tree_hash(300, &tree)?)?;
//! let note = sign(&checkpoint.to_text(), &[&log_key])?;
//! // Read side: an inclusion proof as a C2SP tlog-proof, checked like a client would.
//! let proof = TlogProof {
//!     extra: None,
//!     index: 42,
//!     inclusion_proof: inclusion_proof(42, 300, &tree)?,
//!     checkpoint: note.clone(),
//! };
//! let verifier = log_key.verifier();
//! proof.verify(&leaf_hash(b"entry 42"), &[&verifier])?;
//! assert_eq!(open(&note, &[&verifier])?.text, checkpoint.to_text());
//! # Ok(())
//! # }
//! ```

pub mod checkpoint;
pub mod cosignature;
pub mod hash;
pub mod integrate;
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
