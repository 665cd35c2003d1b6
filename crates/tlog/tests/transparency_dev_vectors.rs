//! transparency-dev/merkle's proof verification vectors (tests/testdata/transparency-dev-merkle,
//! see its README): happy paths plus every mutation its generator applies (flipped bits, wrong
//! index or size, garbage before or after, swapped roots…). Our verifiers must accept exactly
//! the ones that library accepts.
//!
//! One deliberate difference: that library refuses every consistency proof from size 0 ("the
//! empty tree is consistent with anything, so the check is meaningless"), while tlog-witness
//! requires accepting an empty proof from size 0. Those vectors are checked against our rule
//! instead: accept only an empty proof, with the empty root as old root. And a root here is
//! always 32 bytes, so vectors whose placeholder roots are not are skipped as unrepresentable.

use std::path::{Path, PathBuf};

use agentledger_tlog::{EMPTY_ROOT, Hash, verify_consistency, verify_inclusion};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::Value;

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            files(&path, out);
        } else if path.extension().is_some_and(|e| e == "json") {
            out.push(path);
        }
    }
}

fn vectors(kind: &str) -> Vec<(PathBuf, Value)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/testdata/transparency-dev-merkle")
        .join(kind);
    let mut paths = Vec::new();
    files(&dir, &mut paths);
    paths.sort();
    paths
        .into_iter()
        .map(|p| {
            let v = serde_json::from_slice(&std::fs::read(&p).expect("read")).expect("json");
            (p, v)
        })
        .collect()
}

/// A JSON base64 field as a hash, or None when it is not 32 bytes (such vectors want errors).
fn hash(v: &Value) -> Option<Hash> {
    let bytes = STANDARD.decode(v.as_str()?).ok()?;
    Hash::from_slice(&bytes).ok()
}

fn proof(v: &Value) -> Option<Vec<Hash>> {
    match v {
        Value::Null => Some(vec![]),
        Value::Array(items) => items.iter().map(hash).collect(),
        _ => None,
    }
}

#[test]
fn inclusion_vectors() {
    let all = vectors("inclusion");
    assert!(all.len() > 80, "found {} vectors", all.len());
    for (path, v) in all {
        let want_err = v["wantErr"].as_bool().expect("wantErr");
        let index = v["leafIdx"].as_u64().expect("leafIdx");
        let size = v["treeSize"].as_u64().expect("treeSize");
        let got = match (hash(&v["leafHash"]), hash(&v["root"]), proof(&v["proof"])) {
            (Some(leaf), Some(root), Some(p)) => verify_inclusion(&leaf, index, size, &p, &root),
            _ => {
                assert!(
                    want_err,
                    "{}: undecodable but should verify",
                    path.display()
                );
                continue;
            }
        };
        assert_eq!(got.is_err(), want_err, "{}: {got:?}", path.display());
    }
}

#[test]
fn consistency_vectors() {
    let all = vectors("consistency");
    assert!(all.len() > 80, "found {} vectors", all.len());
    let mut from_zero = 0;
    for (path, v) in all {
        let mut want_err = v["wantErr"].as_bool().expect("wantErr");
        let size1 = v["size1"].as_u64().expect("size1");
        let size2 = v["size2"].as_u64().expect("size2");
        let decoded = (hash(&v["root1"]), hash(&v["root2"]), proof(&v["proof"]));
        if size1 == 0 {
            from_zero += 1;
            let ok = matches!(&decoded, (Some(r1), Some(r2), Some(p))
                if p.is_empty() && *r1 == EMPTY_ROOT && (size2 > 0 || r2 == r1));
            want_err = !ok;
        }
        let got = match decoded {
            (Some(r1), Some(r2), Some(p)) => verify_consistency(size1, size2, &r1, &r2, &p),
            _ => {
                // Equal sizes with equal placeholder "roots" that are not 32 bytes: valid
                // there, unrepresentable here (a root is a `Hash`).
                let placeholder_roots = size1 == size2 && v["root1"] == v["root2"];
                assert!(
                    want_err || placeholder_roots,
                    "{}: undecodable but should verify",
                    path.display()
                );
                continue;
            }
        };
        assert_eq!(got.is_err(), want_err, "{}: {got:?}", path.display());
    }
    assert!(from_zero > 0);
}
