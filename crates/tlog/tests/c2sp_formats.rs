//! The C2SP text formats: checkpoint, cosignature, tlog-witness, tlog-policy and tlog-proof,
//! with the spec examples where the spec gives them, and the refusals named precisely.

use agentledger_tlog::checkpoint::CheckpointError;
use agentledger_tlog::cosignature::{CosignatureSigner, CosignatureVerifier, cosigned_message};
use agentledger_tlog::note::{
    ALG_COSIGNATURE_V1, ALG_ED25519, Ed25519Signer, Note, NoteError, NoteSignature, NoteVerifier,
    key_id, open,
};
use agentledger_tlog::policy::{Policy, PolicyCheckError, PolicyError};
use agentledger_tlog::proof::{TlogProof, TlogProofError};
use agentledger_tlog::witness::{
    AddCheckpointRequest, WitnessFormatError, WitnessRefusal, format_size_response,
    parse_size_response, verify_add_checkpoint,
};
use agentledger_tlog::{
    Checkpoint, EMPTY_ROOT, Hash, MemoryTree, consistency_proof, inclusion_proof, leaf_hash,
    tree_hash,
};

const SOFA: &str =
    "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n";

#[test]
fn checkpoint_spec_example_round_trips() {
    let cp = Checkpoint::parse(SOFA).expect("parses");
    assert_eq!(cp.origin, "example.com/behind-the-sofa");
    assert_eq!(cp.size, 20852163);
    assert_eq!(cp.to_text(), SOFA);
    let with_ext = format!("{SOFA}ext one\n");
    assert_eq!(
        Checkpoint::parse(&with_ext).expect("parses").extensions,
        vec!["ext one"]
    );
    assert_eq!(
        Checkpoint::parse(&with_ext).expect("parses").to_text(),
        with_ext
    );
}

#[test]
fn checkpoint_refusals_are_named() {
    let root = "CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=";
    let cases = [
        (format!("o\n1\n{root}"), CheckpointError::NoFinalNewline),
        ("o\n1\n".to_owned(), CheckpointError::TooFewLines(2)),
        (format!("\n1\n{root}\n"), CheckpointError::EmptyOrigin),
        (
            format!("o\n01\n{root}\n"),
            CheckpointError::BadSize("01".into()),
        ),
        (
            format!("o\n+1\n{root}\n"),
            CheckpointError::BadSize("+1".into()),
        ),
        (
            format!("o\n1\n{root}\n\n"),
            CheckpointError::EmptyExtension { line: 4 },
        ),
        (
            format!("o\r\n1\n{root}\n"),
            CheckpointError::ControlCharacter { line: 1 },
        ),
    ];
    for (text, want) in cases {
        assert_eq!(Checkpoint::parse(&text), Err(want), "{text:?}");
    }
    // signed-note forbids only controls below U+0020 (besides newline): DEL and C1 are text.
    let odd = format!("o\u{7f}\u{85}\n1\n{root}\n");
    assert_eq!(
        Checkpoint::parse(&odd)
            .expect("DEL and C1 are allowed")
            .origin,
        "o\u{7f}\u{85}"
    );
    assert!(Checkpoint::new("o\u{7f}", 1, EMPTY_ROOT).is_ok());
    assert_eq!(
        Checkpoint::parse(&format!("o\t\n1\n{root}\n")),
        Err(CheckpointError::ControlCharacter { line: 1 })
    );
    assert_eq!(
        Checkpoint::new("o\n2", 1, EMPTY_ROOT),
        Err(CheckpointError::BadOrigin("o\n2".into()))
    );
    assert_eq!(
        Checkpoint::new("", 1, EMPTY_ROOT),
        Err(CheckpointError::EmptyOrigin)
    );
    assert!(matches!(
        Checkpoint::parse("o\n1\nnot-base64\n"),
        Err(CheckpointError::BadRoot(_))
    ));
}

fn log_signer() -> Ed25519Signer {
    Ed25519Signer::from_seed("example.com/log", [1u8; 32]).expect("key")
}

fn witness(n: u8) -> CosignatureSigner {
    CosignatureSigner::from_seed(&format!("witness{n}.example"), [n + 10; 32]).expect("key")
}

fn checkpoint_of(tree: &MemoryTree, size: u64) -> Checkpoint {
    Checkpoint {
        origin: "example.com/log".into(),
        size,
        root: tree_hash(size, tree).expect("root"),
        extensions: vec![],
    }
}

fn signed(cp: &Checkpoint) -> Vec<u8> {
    agentledger_tlog::note::sign(&cp.to_text(), &[&log_signer()]).expect("sign")
}

#[test]
fn cosignature_signs_the_spec_message() {
    assert_eq!(
        cosigned_message(SOFA, 1679315147),
        format!("cosignature/v1\ntime 1679315147\n{SOFA}").into_bytes()
    );
    let w = witness(1);
    let v = w.verifier();
    // The key ID is computed with type 0x04, so it differs from the same key as a note key.
    assert_eq!(
        w.key_id(),
        key_id(w.name(), ALG_COSIGNATURE_V1, &v.public_key())
    );
    assert_ne!(w.key_id(), key_id(w.name(), ALG_ED25519, &v.public_key()));
    assert_eq!(CosignatureVerifier::parse(&v.to_vkey()), Ok(v.clone()));
    assert_eq!(
        CosignatureSigner::parse(&w.to_skey())
            .expect("skey")
            .key_id(),
        w.key_id()
    );

    let sig = w.cosign(SOFA, 1679315147).expect("cosign");
    assert_eq!(sig.signature.len(), 8 + 64);
    assert_eq!(&sig.signature[..8], &1679315147u64.to_be_bytes());
    assert_eq!(
        v.verify_timestamp(SOFA.as_bytes(), &sig.signature),
        Some(1679315147)
    );
    // Another time, another text, another key: no.
    let mut later = sig.signature.clone();
    later[7] ^= 1;
    assert!(!v.verify(SOFA.as_bytes(), &later));
    assert!(!v.verify(
        SOFA.replace("20852163", "20852164").as_bytes(),
        &sig.signature
    ));
    assert!(
        !witness(2)
            .verifier()
            .verify(SOFA.as_bytes(), &sig.signature)
    );
    assert_eq!(w.cosign(SOFA, 0), Err(NoteError::TimestampOutOfRange(0)));
    assert_eq!(
        w.cosign(SOFA, 1 << 63),
        Err(NoteError::TimestampOutOfRange(1 << 63))
    );
}

#[test]
fn plain_note_keys_are_accepted_as_cosigner_keys_like_transparency_dev() {
    let plain = Ed25519Signer::from_seed("witness.example", [5u8; 32]).expect("key");
    let cosigner = CosignatureSigner::parse(&plain.to_skey()).expect("type 0x01 skey");
    let verifier = CosignatureVerifier::parse(&plain.verifier().to_vkey()).expect("0x01 vkey");
    assert_eq!(cosigner.key_id(), verifier.key_id());
    assert_ne!(cosigner.key_id(), plain.key_id());
}

#[test]
fn cosigned_checkpoint_opens_with_log_and_witness_keys() {
    let tree = MemoryTree::from_entries((0u32..10).map(|i| i.to_be_bytes()));
    let cp = checkpoint_of(&tree, 10);
    let mut note = Note::parse(&signed(&cp)).expect("parse");
    note.add_signature(
        witness(1)
            .cosign(&note.text, 1_700_000_000)
            .expect("cosign"),
    );
    let bytes = note.to_bytes();
    let log = log_signer().verifier();
    let w1 = witness(1).verifier();
    let opened = open(&bytes, &[&log, &w1]).expect("opens");
    assert_eq!(opened.verified.len(), 2);
    // The witness's response body is just its signature lines, parsed with the same code.
    let response = agentledger_tlog::witness::format_cosignature_response(&note.signatures[1..]);
    assert_eq!(
        NoteSignature::parse_lines(&response).expect("lines"),
        note.signatures[1..].to_vec()
    );
}

#[test]
fn witness_spec_example_request_round_trips() {
    let body = "old 20852014\n\
PlRNCrwHpqhGrupue0L7gxbjbMiKA9temvuZZDDpkaw=\n\
jrJZDmY8Y7SyJE0MWLpLozkIVMSMZcD5kvuKxPC3swk=\n\
5+pKlUdi2LeF/BcMHBn+Ku6yhPGNCswZZD1X/6QgPd8=\n\
/6WVhPs2CwSsb5rYBH5cjHV/wSmA79abXAwhXw3Kj/0=\n\
\n\
example.com/behind-the-sofa\n\
20852163\n\
CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n\
\n\
\u{2014} example.com/behind-the-sofa Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5/Zhcyv2q1gGzGku9nTo+zyWE+xeMcTOAYQ8=\n\
\u{2014} example.com/behind-the-sofa opLqBQsREYCgu6xQkYQwJr9fo45a62DN9EdmHXnZdXNqlcVGlCum2Wks+49/V6267UEjw6QUXTS5Rovnzv++qbSzm9Q=\n";
    let req = AddCheckpointRequest::parse(body.as_bytes()).expect("parses");
    assert_eq!(req.old_size, 20852014);
    assert_eq!(req.consistency_proof.len(), 4);
    assert!(req.checkpoint.starts_with(SOFA.as_bytes()));
    assert_eq!(req.to_bytes(), body.as_bytes());
    assert_eq!(
        parse_size_response(format_size_response(42).as_bytes()),
        Ok(42)
    );
    assert_eq!(
        parse_size_response(b"042\n"),
        Err(WitnessFormatError::BadSizeResponse)
    );
    assert_eq!(
        AddCheckpointRequest::parse(b"old 1\n\nx"),
        Ok(AddCheckpointRequest {
            old_size: 1,
            consistency_proof: vec![],
            checkpoint: b"x".to_vec()
        })
    );
    assert_eq!(
        AddCheckpointRequest::parse(b"old 01\n\n"),
        Err(WitnessFormatError::BadOldLine)
    );
    assert_eq!(
        AddCheckpointRequest::parse(b"old 1\nAAAA\n\n"),
        Err(WitnessFormatError::BadProofLine {
            line: 2,
            source: agentledger_tlog::hash::HashParseError::Length(3)
        })
    );
    let too_many = format!("old 1\n{}\n", format!("{}\n", EMPTY_ROOT).repeat(64));
    assert_eq!(
        AddCheckpointRequest::parse(too_many.as_bytes()),
        Err(WitnessFormatError::TooManyProofLines)
    );
}

#[test]
fn witness_decisions_follow_the_spec() {
    let tree = MemoryTree::from_entries((0u32..20).map(|i| i.to_be_bytes()));
    let log = log_signer().verifier();
    let keys: [&dyn NoteVerifier; 1] = [&log];
    let request = |old: u64, new: u64| AddCheckpointRequest {
        old_size: old,
        consistency_proof: consistency_proof(old, new, &tree).expect("proof"),
        checkpoint: signed(&checkpoint_of(&tree, new)),
    };
    let at = |size: u64| Some((size, tree_hash(size, &tree).expect("root")));

    // First contact, then growth with a proof.
    let (cp, _) = verify_add_checkpoint(&request(0, 7), &keys, None).expect("cosign");
    assert_eq!(cp.size, 7);
    verify_add_checkpoint(&request(7, 20), &keys, at(7)).expect("cosign");
    verify_add_checkpoint(&request(20, 20), &keys, at(20)).expect("same size, same root");

    let status = |r: Result<_, WitnessRefusal>| r.map(|_| ()).map_err(|e| e.status());
    assert_eq!(
        status(verify_add_checkpoint(&request(0, 7), &[], None)),
        Err(404)
    );
    let stranger = Ed25519Signer::from_seed("example.com/log", [2u8; 32]).expect("key");
    let stranger = stranger.verifier();
    assert_eq!(
        status(verify_add_checkpoint(&request(0, 7), &[&stranger], None)),
        Err(403)
    );
    assert_eq!(
        verify_add_checkpoint(&request(7, 20), &keys, at(10)).map(|_| ()),
        Err(WitnessRefusal::Conflict { latest: 10 })
    );
    let mut backwards = request(7, 20);
    backwards.old_size = 21;
    assert_eq!(
        status(verify_add_checkpoint(
            &backwards,
            &keys,
            Some((21, EMPTY_ROOT))
        )),
        Err(400)
    );
    // A fork: a checkpoint for size 20 over different leaves.
    let fork = MemoryTree::from_entries((100u32..120).map(|i| i.to_be_bytes()));
    let forked = AddCheckpointRequest {
        old_size: 7,
        consistency_proof: consistency_proof(7, 20, &fork).expect("proof"),
        checkpoint: signed(&checkpoint_of(&fork, 20)),
    };
    assert_eq!(
        status(verify_add_checkpoint(&forked, &keys, at(7))),
        Err(422)
    );
    // Same size, different root.
    let same_size = AddCheckpointRequest {
        old_size: 20,
        consistency_proof: vec![],
        checkpoint: signed(&checkpoint_of(&fork, 20)),
    };
    assert_eq!(
        status(verify_add_checkpoint(&same_size, &keys, at(20))),
        Err(422)
    );
    // Not a note at all is a bad request, not a signature failure.
    let mut garbage = request(0, 7);
    garbage.checkpoint = b"example.com/log\n7\n".to_vec();
    assert_eq!(
        status(verify_add_checkpoint(&garbage, &keys, None)),
        Err(400)
    );
    // A proof from old size 0 must be empty.
    let mut padded = request(0, 7);
    padded.consistency_proof.push(EMPTY_ROOT);
    assert_eq!(
        status(verify_add_checkpoint(&padded, &keys, None)),
        Err(422)
    );
}

#[test]
fn tlog_proof_spec_example_parses() {
    // The spec's example; its signature lines are elided ("[...]"), so only our side is parsed.
    let text = "c2sp.org/tlog-proof@v1\n\
extra YWdlLXYxLjIuMS1kYXJ3aW4tYXJtNjQudGFyLmd6kYXJ3aW4tYXJ\n\
index 73894\n\
gSKyXoYZUgZ6jduWYrkDOARinOMGJveXjgMkBTcdPlQ=\n\
B95lDa8R83lS8n0eG+o0buTxRKQTYFi//1U8anccXmA=\n\
EKNzoDWG8LGC0Yp9o+sv3qllpMP9uHQ9B20KNL+Q1zs=\n\
RoopEkOdqkYqMB4MJXrbt/hMjOxsVn0IrWjpz1ZMMes=\n\
AHCioX9nLjsrse6YhjRRmk1WUEirVOLLRoOQ6vfO5vk=\n\
\n\
example.com/fancylog\n\
109482\n\
sFodV/vSp5O8n9a8QpW6PRY97tfOSW5bsc2Xl/EQi08=\n\
\n\
\u{2014} example.com/fancylog hI2DJw[...]1roloI=\n";
    let proof = TlogProof::parse(text.as_bytes()).expect("parses");
    assert_eq!(proof.index, 73894);
    assert_eq!(proof.inclusion_proof.len(), 5);
    assert_eq!(proof.extra.as_ref().map(Vec::len), Some(39));
    assert!(
        proof
            .checkpoint
            .starts_with(b"example.com/fancylog\n109482\n")
    );
    assert_eq!(proof.to_bytes(), text.as_bytes());
}

#[test]
fn tlog_proof_builds_and_verifies() {
    let entries: Vec<[u8; 4]> = (0u32..1000).map(|i| i.to_be_bytes()).collect();
    let tree = MemoryTree::from_entries(&entries);
    let cp = checkpoint_of(&tree, 1000);
    let proof = TlogProof {
        extra: Some(b"session 7".to_vec()),
        index: 321,
        inclusion_proof: inclusion_proof(321, 1000, &tree).expect("proof"),
        checkpoint: signed(&cp),
    };
    let parsed = TlogProof::parse(&proof.to_bytes()).expect("parses");
    assert_eq!(parsed, proof);
    let log = log_signer().verifier();
    let (got, _) = parsed
        .verify(&leaf_hash(&entries[321]), &[&log])
        .expect("verifies");
    assert_eq!(got, cp);
    assert!(matches!(
        parsed.verify(&leaf_hash(&entries[322]), &[&log]),
        Err(TlogProofError::Proof(_))
    ));
    let mut wrong_index = parsed.clone();
    wrong_index.index = 320;
    assert!(
        wrong_index
            .verify(&leaf_hash(&entries[321]), &[&log])
            .is_err()
    );
    assert_eq!(
        TlogProof::parse(b"c2sp.org/tlog-proof@v2\nindex 1\n\n"),
        Err(TlogProofError::BadHeader)
    );
    assert_eq!(
        TlogProof::parse(b"c2sp.org/tlog-proof@v1\nindex 01\n\n"),
        Err(TlogProofError::BadIndex)
    );
}

fn policy_text() -> String {
    let log = log_signer().verifier().to_vkey();
    let w = |n: u8| witness(n).verifier().to_vkey();
    format!(
        "# example policy, with the spec's shape\n\
log {log} https://example.com/log/\n\
\n\
witness X1 {}\n\
witness X2 {}\n\
witness X3 {}\n\
group X-witnesses 2 X1 X2 X3\n\
\twitness Y1 {}   https://y1.example/\n\
witness Y2 {}\n\
group Y-witnesses any Y1 Y2\n\
group X-and-Y all X-witnesses Y-witnesses\n\
quorum X-and-Y\n",
        w(1),
        w(2),
        w(3),
        w(4),
        w(5)
    )
}

#[test]
fn policy_quorum_is_evaluated_like_the_spec_example() {
    let policy = Policy::parse(policy_text().as_bytes()).expect("parses");
    assert_eq!(policy.logs.len(), 1);
    assert_eq!(policy.witnesses.len(), 5);
    assert_eq!(
        policy.witnesses[3].url.as_deref(),
        Some("https://y1.example/")
    );
    assert!(policy.quorum_met(&["X1", "X3", "Y2"]));
    assert!(!policy.quorum_met(&["X1", "Y1", "Y2"]), "one X is not two");
    assert!(!policy.quorum_met(&["X1", "X2", "X3"]), "no Y");
    assert!(!policy.quorum_met::<&str>(&[]));
}

#[test]
fn policy_verifies_cosigned_checkpoints() {
    let policy = Policy::parse(policy_text().as_bytes()).expect("parses");
    let tree = MemoryTree::from_entries((0u32..5).map(|i| i.to_be_bytes()));
    let cp = checkpoint_of(&tree, 5);
    let mut note = Note::parse(&signed(&cp)).expect("note");
    for n in [1, 3] {
        note.add_signature(
            witness(n)
                .cosign(&note.text, 1_700_000_000)
                .expect("cosign"),
        );
    }
    assert_eq!(
        policy.verify_checkpoint(&note.to_bytes()),
        Err(PolicyCheckError::QuorumNotMet {
            have: vec!["X1".into(), "X3".into()]
        })
    );
    note.add_signature(
        witness(5)
            .cosign(&note.text, 1_700_000_001)
            .expect("cosign"),
    );
    let ok = policy
        .verify_checkpoint(&note.to_bytes())
        .expect("meets quorum");
    assert_eq!(ok.checkpoint, cp);
    assert_eq!(ok.witnesses, vec!["X1", "X3", "Y2"]);
    // A cosignature that does not verify by a listed witness rejects the note.
    let mut bad = note.clone();
    bad.signatures[1].signature[20] ^= 1;
    assert!(matches!(
        policy.verify_checkpoint(&bad.to_bytes()),
        Err(PolicyCheckError::Note(NoteError::InvalidSignature { .. }))
    ));
    // Cosignatures without the log's signature are not enough.
    let mut unsigned = note.clone();
    unsigned.signatures.remove(0);
    assert_eq!(
        policy.verify_checkpoint(&unsigned.to_bytes()),
        Err(PolicyCheckError::NoLogSignature)
    );
    let other = Checkpoint {
        origin: "other.example/log".into(),
        ..cp
    };
    let other_signer = Ed25519Signer::from_seed("other.example/log", [3; 32]).expect("key");
    let other_note = agentledger_tlog::note::sign(&other.to_text(), &[&other_signer]).expect("s");
    assert_eq!(
        policy.verify_checkpoint(&other_note),
        Err(PolicyCheckError::UnknownLog("other.example/log".into()))
    );
}

#[test]
fn policy_refusals_are_named() {
    let w1 = witness(1).verifier().to_vkey();
    let w2 = witness(2).verifier().to_vkey();
    let log = log_signer().verifier().to_vkey();
    let cases: Vec<(String, PolicyError)> = vec![
        ("".into(), PolicyError::NoQuorum),
        (
            "quorum none\nquorum none\n".into(),
            PolicyError::SecondQuorum { line: 2 },
        ),
        (
            "quorum W\n".into(),
            PolicyError::UndefinedName {
                line: 1,
                name: "W".into(),
            },
        ),
        (
            format!("witness A {w1}\nwitness A {w2}\nquorum A\n"),
            PolicyError::DuplicateName {
                line: 2,
                name: "A".into(),
            },
        ),
        (
            format!("witness A {w1}\nwitness B {w1}\nquorum A\n"),
            PolicyError::DuplicateKey { line: 2 },
        ),
        (
            format!(
                "log {log}\nlog {}\nquorum none\n",
                log_signer()
                    .renamed("other.example/log")
                    .expect("renamed")
                    .verifier()
                    .to_vkey()
            ),
            PolicyError::DuplicateKey { line: 2 },
        ),
        (
            format!("witness A {w1}\nwitness B {w2}\ngroup G 3 A B\nquorum G\n"),
            PolicyError::BadThreshold { line: 3 },
        ),
        (
            format!("witness A {w1}\ngroup G any A A\nquorum G\n"),
            PolicyError::DuplicateMember {
                line: 2,
                name: "A".into(),
            },
        ),
        (
            format!("witness A {w1}\ngroup G any A\ngroup H any A\nquorum G\n"),
            PolicyError::DuplicateMember {
                line: 3,
                name: "A".into(),
            },
        ),
        (
            format!("witness A {w1}\ngroup G any A none\nquorum G\n"),
            PolicyError::ReservedName { line: 2 },
        ),
        (
            format!("witness none {w1}\nquorum none\n"),
            PolicyError::ReservedName { line: 1 },
        ),
        (
            format!("log {w1}\nquorum none\n"),
            PolicyError::WrongKeyType {
                line: 1,
                role: "log",
                want: "0x01",
            },
        ),
        (
            "logs x\nquorum none\n".into(),
            PolicyError::UnknownKeyword {
                line: 1,
                word: "logs".into(),
            },
        ),
        (
            format!("log {log} url extra\nquorum none\n"),
            PolicyError::WrongArity {
                line: 1,
                keyword: "log",
            },
        ),
        (
            "quorum none\r\n".into(),
            PolicyError::ControlCharacter { line: 1 },
        ),
    ];
    for (text, want) in cases {
        assert_eq!(Policy::parse(text.as_bytes()), Err(want), "{text}");
    }
    // Duplicates are counted among logs and among witnesses, not across the two.
    let same = CosignatureSigner::from_seed("example.com/log", [1u8; 32])
        .expect("key")
        .verifier();
    assert_eq!(same.public_key(), log_signer().verifier().public_key());
    let same = same.to_vkey();
    Policy::parse(format!("log {log}\nwitness W {same}\nquorum W\n").as_bytes())
        .expect("a log's key may also be a witness's");
    let none = Policy::parse(format!("log {log}\nquorum none").as_bytes()).expect("parses");
    assert!(none.quorum_met::<&str>(&[]));
    let _: Hash = EMPTY_ROOT;
}
