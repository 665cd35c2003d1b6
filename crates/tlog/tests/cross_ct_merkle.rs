//! An independent check: `ct-merkle` (a separate RFC 6962 implementation) agrees with our roots,
//! inclusion proofs and consistency proofs on random trees, and each side's proofs verify with
//! the other side's verifier.

use agentledger_tlog::{
    Hash, MemoryTree, consistency_proof, inclusion_proof, leaf_hash, tree_hash, verify_consistency,
    verify_inclusion,
};
use ct_merkle::mem_backed_tree::MemoryBackedTree;
use ct_merkle::{ConsistencyProof, InclusionProof, RootHash};
use proptest::prelude::*;
use sha2::Sha256;

fn to_bytes(proof: &[Hash]) -> Vec<u8> {
    proof.iter().flat_map(|h| h.0).collect()
}

fn from_bytes(bytes: &[u8]) -> Vec<Hash> {
    bytes
        .chunks(32)
        .map(|c| Hash::from_slice(c).expect("32-byte chunk"))
        .collect()
}

fn build(entries: &[Vec<u8>], upto: usize) -> (MemoryTree, MemoryBackedTree<Sha256, Vec<u8>>) {
    let mut ours = MemoryTree::new();
    let mut theirs = MemoryBackedTree::<Sha256, Vec<u8>>::new();
    for e in &entries[..upto] {
        ours.append(e);
        theirs.push(e.clone());
    }
    (ours, theirs)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn agrees_with_ct_merkle(
        entries in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..40), 1..300),
        pick in any::<u64>(),
        pick_old in any::<u64>(),
    ) {
        let n = entries.len();
        let (ours, theirs) = build(&entries, n);
        let size = n as u64;
        let root = tree_hash(size, &ours).expect("root");
        prop_assert_eq!(root.0.to_vec(), theirs.root().as_bytes().to_vec());

        // Inclusion: same bytes, and cross-verified.
        let index = pick % size;
        let our_proof = inclusion_proof(index, size, &ours).expect("proof");
        let their_proof = theirs.prove_inclusion(index as usize);
        prop_assert_eq!(to_bytes(&our_proof), their_proof.as_bytes().to_vec());
        let leaf = leaf_hash(&entries[index as usize]);
        prop_assert!(verify_inclusion(&leaf, index, size, &from_bytes(their_proof.as_bytes()), &root).is_ok());
        let parsed = InclusionProof::<Sha256>::try_from_bytes(to_bytes(&our_proof)).expect("bytes");
        prop_assert!(theirs.root().verify_inclusion(&entries[index as usize], index, &parsed).is_ok());

        // Consistency from a random older size (ct-merkle needs old >= 1).
        let old = 1 + pick_old % size;
        let (old_ours, old_theirs) = build(&entries, old as usize);
        let old_root = tree_hash(old, &old_ours).expect("old root");
        prop_assert_eq!(old_root.0.to_vec(), old_theirs.root().as_bytes().to_vec());
        let ours_c = consistency_proof(old, size, &ours).expect("proof");
        if old < size {
            let theirs_c = theirs.prove_consistency((size - old) as usize);
            prop_assert_eq!(to_bytes(&ours_c), theirs_c.as_bytes().to_vec());
        }
        prop_assert!(verify_consistency(old, size, &old_root, &root, &ours_c).is_ok());
        let parsed = ConsistencyProof::<Sha256>::try_from_bytes(to_bytes(&ours_c)).expect("bytes");
        let their_old: RootHash<Sha256> = old_theirs.root();
        prop_assert!(theirs.root().verify_consistency(&their_old, &parsed).is_ok());

        // Tampering: the proof for another index or size does not verify.
        // Unless that index holds the same entry: then the proof is true
        // there too (a proof at index i verifies at j exactly when every
        // subtree it swaps equals its sibling, so entry j equals entry i).
        // The generator draws equal entries now and then (two empty ones
        // side by side: the saved regression case).
        let other = (index + 1) % size;
        if size > 1 && entries[other as usize] != entries[index as usize] {
            prop_assert!(verify_inclusion(&leaf, other, size, &our_proof, &root).is_err());
        }
        if old < size && old > 1 {
            prop_assert!(verify_consistency(old - 1, size, &old_root, &root, &ours_c).is_err());
        }
    }
}
