//! Known-answer tests: the RFC 6962 test vectors used by Certificate Transparency's Go and C++
//! code, as published in transparency-dev/merkle (`testonly/constants.go` for the leaves, node
//! and root hashes; `cmd/proofgen/main.go` for the inclusion and consistency proofs, whose leaf
//! indices there are 1-based).

use agentledger_tlog::tree::{inclusion_proof_len, root_from_leaf_hashes};
use agentledger_tlog::{
    EMPTY_ROOT, Hash, MemoryTree, ProofError, consistency_proof, inclusion_proof, leaf_hash,
    tree_hash, verify_consistency, verify_inclusion,
};

fn hd(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

fn h(s: &str) -> Hash {
    Hash::from_slice(&hd(s)).expect("32 bytes")
}

fn leaves() -> Vec<Vec<u8>> {
    [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ]
    .iter()
    .map(|s| hd(s))
    .collect()
}

const LEAF_HASHES: [&str; 8] = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
    "0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7",
    "07506a85fd9dd2f120eb694f86011e5bb4662e5c415a62917033d4a9624487e7",
    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
    "4271a26be0d8a84f0bd54c8c302e7cb3a3b5d1fa6780a40bcce2873477dab658",
    "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
    "46f6ffadd3d06a09ff3c5860d2755c8b9819db7df44251788c7d8e3180de8eb1",
];

/// Roots of the trees of the first 1..=8 leaves.
const ROOTS: [&str; 8] = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
];

/// (leaf index, tree size, proof), index 0-based.
fn inclusion_vectors() -> Vec<(u64, u64, Vec<Hash>)> {
    vec![
        (0, 1, vec![]),
        (
            0,
            8,
            vec![
                h("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"),
                h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
                h("6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"),
            ],
        ),
        (
            5,
            8,
            vec![
                h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
                h("ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"),
                h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
            ],
        ),
        (
            2,
            3,
            vec![h(
                "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
            )],
        ),
        (
            1,
            5,
            vec![
                h("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"),
                h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
                h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
            ],
        ),
    ]
}

/// (old size, new size, proof).
fn consistency_vectors() -> Vec<(u64, u64, Vec<Hash>)> {
    vec![
        (1, 1, vec![]),
        (
            1,
            8,
            vec![
                h("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"),
                h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
                h("6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"),
            ],
        ),
        (
            6,
            8,
            vec![
                h("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a"),
                h("ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"),
                h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
            ],
        ),
        (
            2,
            5,
            vec![
                h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
                h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
            ],
        ),
        (
            6,
            7,
            vec![
                h("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a"),
                h("b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f"),
                h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
            ],
        ),
    ]
}

fn tree() -> MemoryTree {
    MemoryTree::from_entries(leaves())
}

fn root(size: u64) -> Hash {
    h(ROOTS[(size - 1) as usize])
}

#[test]
fn leaf_hashes_match() {
    for (leaf, want) in leaves().iter().zip(LEAF_HASHES) {
        assert_eq!(leaf_hash(leaf), h(want));
    }
}

#[test]
fn roots_match_for_every_size() {
    let tree = tree();
    assert_eq!(tree_hash(0, &tree).expect("root"), EMPTY_ROOT);
    let leaf_hashes: Vec<Hash> = leaves().iter().map(|l| leaf_hash(l)).collect();
    for size in 1..=8u64 {
        assert_eq!(
            tree_hash(size, &tree).expect("root"),
            root(size),
            "size {size}"
        );
        assert_eq!(
            root_from_leaf_hashes(&leaf_hashes[..size as usize]),
            root(size)
        );
    }
}

#[test]
fn inclusion_proofs_match_and_verify() {
    let tree = tree();
    for (index, size, want) in inclusion_vectors() {
        let got = inclusion_proof(index, size, &tree).expect("proof");
        assert_eq!(got, want, "inclusion of {index} in {size}");
        let leaf = leaf_hash(&leaves()[index as usize]);
        verify_inclusion(&leaf, index, size, &want, &root(size)).expect("verifies");
    }
}

#[test]
fn consistency_proofs_match_and_verify() {
    let tree = tree();
    for (old, new, want) in consistency_vectors() {
        let got = consistency_proof(old, new, &tree).expect("proof");
        assert_eq!(got, want, "consistency {old} -> {new}");
        verify_consistency(old, new, &root(old), &root(new), &want).expect("verifies");
    }
}

#[test]
fn every_proof_in_the_eight_leaf_tree_verifies() {
    let tree = tree();
    for size in 1..=8u64 {
        for index in 0..size {
            let proof = inclusion_proof(index, size, &tree).expect("proof");
            assert_eq!(proof.len(), inclusion_proof_len(index, size));
            let leaf = leaf_hash(&leaves()[index as usize]);
            verify_inclusion(&leaf, index, size, &proof, &root(size)).expect("verifies");
        }
        for old in 0..=size {
            let proof = consistency_proof(old, size, &tree).expect("proof");
            let old_root = if old == 0 { EMPTY_ROOT } else { root(old) };
            verify_consistency(old, size, &old_root, &root(size), &proof).expect("verifies");
        }
    }
}

#[test]
fn tampered_inclusion_proofs_fail() {
    let (index, size, proof) = inclusion_vectors().remove(2);
    let leaf = leaf_hash(&leaves()[index as usize]);
    let good_root = root(size);
    // Wrong index, same proof.
    assert_eq!(
        verify_inclusion(&leaf, index - 1, size, &proof, &good_root),
        Err(ProofError::RootMismatch)
    );
    // Wrong size: the proof shape or the root no longer fits.
    assert!(verify_inclusion(&leaf, index, size - 1, &proof, &root(size - 1)).is_err());
    // Index beyond the tree.
    assert_eq!(
        verify_inclusion(&leaf, size, size, &proof, &good_root),
        Err(ProofError::IndexOutOfRange { index: size, size })
    );
    // Wrong leaf.
    assert_eq!(
        verify_inclusion(&leaf_hash(b"forged"), index, size, &proof, &good_root),
        Err(ProofError::RootMismatch)
    );
    // Each proof hash flipped, truncated, extended.
    for i in 0..proof.len() {
        let mut bad = proof.clone();
        bad[i].0[7] ^= 1;
        assert_eq!(
            verify_inclusion(&leaf, index, size, &bad, &good_root),
            Err(ProofError::RootMismatch)
        );
    }
    assert_eq!(
        verify_inclusion(&leaf, index, size, &proof[..2], &good_root),
        Err(ProofError::WrongLength { got: 2, want: 3 })
    );
    let mut longer = proof.clone();
    longer.push(good_root);
    assert_eq!(
        verify_inclusion(&leaf, index, size, &longer, &good_root),
        Err(ProofError::WrongLength { got: 4, want: 3 })
    );
}

#[test]
fn tampered_consistency_proofs_fail() {
    let (old, new, proof) = consistency_vectors().remove(2);
    let (old_root, new_root) = (root(old), root(new));
    assert_eq!(
        verify_consistency(old, new, &old_root, &root(7), &proof),
        Err(ProofError::RootMismatch)
    );
    assert_eq!(
        verify_consistency(old, new, &root(5), &new_root, &proof),
        Err(ProofError::OldRootMismatch)
    );
    assert!(verify_consistency(old - 1, new, &root(old - 1), &new_root, &proof).is_err());
    assert_eq!(
        verify_consistency(new, old, &new_root, &old_root, &proof),
        Err(ProofError::OldSizeLarger { old: new, new: old })
    );
    for i in 0..proof.len() {
        let mut bad = proof.clone();
        bad[i].0[0] ^= 0x80;
        assert!(verify_consistency(old, new, &old_root, &new_root, &bad).is_err());
    }
    // Equal sizes need equal roots and an empty proof; size 0 needs the empty root.
    assert_eq!(
        verify_consistency(8, 8, &root(7), &root(8), &[]),
        Err(ProofError::RootMismatch)
    );
    assert_eq!(
        verify_consistency(0, 8, &root(1), &root(8), &[]),
        Err(ProofError::OldRootMismatch)
    );
    assert_eq!(
        verify_consistency(0, 8, &EMPTY_ROOT, &root(8), &proof),
        Err(ProofError::WrongLength { got: 3, want: 0 })
    );
}
