//! ML-DSA-44 cosignatures (C2SP tlog-cosignature, type 0x06) against a checkpoint cosigned by an
//! independent implementation: tests/data was written by Python's `cryptography` package
//! (OpenSSL's ML-DSA-44, key from the seed 00 01 .. 1f), the signed message built from the
//! spec's `cosigned_message` structure by hand, and the log's Ed25519 signature beside it.

use agentledger_tlog::Checkpoint;
use agentledger_tlog::cosignature::{CosignatureVerifier, subtree_message};
use agentledger_tlog::note::{
    ALG_COSIGNATURE_ML_DSA_44, Ed25519Verifier, KeyError, Note, NoteVerifier, VerifierKey, open,
};
use agentledger_tlog::policy::Policy;

const NOTE: &str = include_str!("data/ml-dsa-44-cosigned.note");
const VKEYS: &str = include_str!("data/ml-dsa-44.vkeys");
const MESSAGE_HEX: &str = include_str!("data/ml-dsa-44-message.hex");

fn keys() -> (Ed25519Verifier, CosignatureVerifier, String) {
    let mut lines = VKEYS.lines();
    let log = Ed25519Verifier::parse(lines.next().expect("log vkey")).expect("log key");
    let vkey = lines.next().expect("witness vkey").to_owned();
    let witness = CosignatureVerifier::parse(&vkey).expect("ML-DSA-44 vkey");
    (log, witness, vkey)
}

#[test]
fn an_ml_dsa_44_cosignature_made_elsewhere_verifies() {
    let (log, witness, vkey) = keys();
    assert_eq!(witness.alg(), ALG_COSIGNATURE_ML_DSA_44);
    assert_eq!(witness.public_key().len(), 1312);
    assert_eq!(witness.to_vkey(), vkey, "the vkey text round-trips");
    assert!(matches!(
        VerifierKey::parse(&vkey),
        Ok(VerifierKey::Cosignature(_))
    ));

    // The message this crate builds is the one the other implementation signed.
    let note = Note::parse(NOTE.as_bytes()).expect("note");
    let cp = Checkpoint::parse(&note.text).expect("checkpoint");
    let message = subtree_message(witness.name(), 1679315147, &cp.origin, cp.size, &cp.root)
        .expect("message");
    let hex: String = message.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(hex, MESSAGE_HEX.trim());

    let opened = open(NOTE.as_bytes(), &[&log as &dyn NoteVerifier, &witness]).expect("opens");
    assert_eq!(opened.verified.len(), 2);
    let cosig = &opened.verified[1];
    assert_eq!(cosig.name, "witness.example/pq");
    assert_eq!(
        witness.verify_timestamp(opened.text.as_bytes(), &cosig.signature),
        Some(1679315147)
    );

    // Any byte of the signature or the checkpoint changed: it no longer verifies.
    let mut bad = cosig.signature.clone();
    bad[100] ^= 1;
    assert_eq!(witness.verify_timestamp(opened.text.as_bytes(), &bad), None);
    let mut late = cosig.signature.clone();
    late[7] ^= 1;
    assert_eq!(
        witness.verify_timestamp(opened.text.as_bytes(), &late),
        None,
        "the timestamp is signed"
    );
    let other_root = opened.text.replacen("\n20852163\n", "\n20852164\n", 1);
    assert_eq!(
        witness.verify_timestamp(other_root.as_bytes(), &cosig.signature),
        None
    );
    assert_eq!(
        witness.verify_timestamp(opened.text.as_bytes(), &cosig.signature[..100]),
        None
    );
    let tampered = NOTE.replacen("\n20852163\n", "\n20852164\n", 1);
    assert!(open(tampered.as_bytes(), &[&log as &dyn NoteVerifier, &witness]).is_err());
}

#[test]
fn a_policy_may_name_an_ml_dsa_44_witness() {
    let (log, _, vkey) = keys();
    let policy =
        Policy::parse(format!("log {}\nwitness pq {vkey}\nquorum pq\n", log.to_vkey()).as_bytes())
            .expect("policy");
    let verified = policy.verify_checkpoint(NOTE.as_bytes()).expect("quorum");
    assert_eq!(verified.witnesses, ["pq"]);
    assert_eq!(verified.checkpoint.size, 20852163);

    // A type 0x06 key of the wrong length is refused, naming it.
    let (name, rest) = vkey.split_once('+').expect("vkey");
    let short = {
        use base64::Engine as _;
        let e = base64::engine::general_purpose::STANDARD;
        let material = e.decode(rest.split_once('+').expect("id").1).expect("b64");
        let cut = &material[..material.len() - 1];
        agentledger_tlog::note::format_vkey(name, cut[0], &cut[1..])
    };
    assert!(matches!(
        CosignatureVerifier::parse(&short),
        Err(KeyError::KeyLength(1311))
    ));
}

/// This crate's ML-DSA-44 cosigner, from the seed the other implementation used: the same
/// public key (FIPS 204 key generation agrees), and cosignatures the published key verifies.
#[test]
fn an_ml_dsa_44_cosigner_from_the_same_seed_has_the_same_key_and_is_verified() {
    use agentledger_tlog::cosignature::CosignatureSigner;
    let (log, witness, vkey) = keys();
    let seed: [u8; 32] = std::array::from_fn(|i| i as u8);
    let signer = CosignatureSigner::from_seed_ml_dsa_44("witness.example/pq", seed).expect("key");
    assert_eq!(signer.verifier().to_vkey(), vkey);
    assert_eq!(signer.key_id(), witness.key_id());

    // Its key text round-trips and is checked.
    let skey = signer.to_skey();
    assert!(
        skey.starts_with("PRIVATE+KEY+witness.example/pq+"),
        "{skey}"
    );
    let again = CosignatureSigner::parse(&skey).expect("skey");
    assert_eq!(again.verifier().to_vkey(), vkey);
    let wrong_id = skey.replacen(&format!("+{:08x}+", signer.key_id()), "+00000000+", 1);
    assert!(matches!(
        CosignatureSigner::parse(&wrong_id),
        Err(KeyError::KeyIdMismatch { .. })
    ));

    // A cosignature of the same checkpoint, at another time: the published key verifies it
    // (and the policy counts it), with its timestamp.
    let note = Note::parse(NOTE.as_bytes()).expect("note");
    let cosig = signer.cosign(&note.text, 1_700_000_000).expect("cosign");
    assert_eq!(cosig.signature.len(), 8 + 2420);
    assert_eq!(
        witness.verify_timestamp(note.text.as_bytes(), &cosig.signature),
        Some(1_700_000_000)
    );
    let mut ours = Note {
        text: note.text.clone(),
        signatures: vec![note.signatures[0].clone()],
    };
    ours.add_signature(cosig);
    let policy =
        Policy::parse(format!("log {}\nwitness pq {vkey}\nquorum pq\n", log.to_vkey()).as_bytes())
            .expect("policy");
    assert_eq!(
        policy
            .verify_checkpoint(&ours.to_bytes())
            .expect("quorum")
            .witnesses,
        ["pq"]
    );
    // It signs checkpoints only (its message is built from one).
    assert!(signer.cosign("not a checkpoint\n", 1).is_err());
}
