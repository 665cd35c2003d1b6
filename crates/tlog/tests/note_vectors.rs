//! Known-answer tests for signed notes: Go's `golang.org/x/mod/sumdb/note` examples
//! (example_test.go, note_test.go) and the C2SP signed-note example, byte for byte.

use agentledger_tlog::note::{
    Ed25519Signer, Ed25519Verifier, KeyError, Note, NoteError, NoteVerifier, VerifierKey, open,
    sign,
};

const PETER_SKEY: &str =
    "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
const PETER_VKEY: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
const TEXT: &str = "If you think cryptography is the answer to your problem,\n\
                    then you don't know what your problem is.\n";
const PETER_SIG: &str = "\u{2014} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";
const ENOCH_SIG: &str = "\u{2014} EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1RvMc+QQ=\n";

fn signed() -> String {
    format!("{TEXT}\n{PETER_SIG}")
}

#[test]
fn go_example_sign_is_reproduced_byte_for_byte() {
    let signer = Ed25519Signer::parse(PETER_SKEY).expect("skey");
    assert_eq!(signer.to_skey(), PETER_SKEY);
    assert_eq!(signer.verifier().to_vkey(), PETER_VKEY);
    assert_eq!(signer.key_id(), 0xc74f20a3);
    let msg = sign(TEXT, &[&signer]).expect("sign");
    assert_eq!(String::from_utf8(msg).expect("utf8"), signed());
}

/// [`Ed25519Signer::derive`] against an independent computation (Python's `hmac` for
/// HKDF-SHA256, the `cryptography` package for the Ed25519 public key): a change of the
/// derivation would re-key every log a server signs, so it is pinned byte for byte.
#[test]
fn derived_keys_match_an_independent_hkdf() {
    let master = Ed25519Signer::parse(PETER_SKEY).expect("skey");
    let ctx = "agentledger log key v1\n";
    let payments = master
        .derive(ctx, "ledger.example.com/payments")
        .expect("derive");
    assert_eq!(
        payments.to_skey(),
        "PRIVATE+KEY+ledger.example.com/payments+933e05c0+Ae4sTd8HgnfhHe7M6MN4O9JrFbMO6d3A3bFaGoZLXdgg"
    );
    assert_eq!(
        payments.verifier().to_vkey(),
        "ledger.example.com/payments+933e05c0+AcMvPm3M0+2s9GIOZQ4JMSxaiFHG+/Nx/n8HvWkETEmB"
    );
    let team = master
        .derive(ctx, "ledger.example.com/team%20a")
        .expect("derive");
    assert!(
        team.to_skey()
            .ends_with("+ARfclnlQZdSuc0b7onvKz41ivJzcaBSEy89rdJo2WDES"),
        "{team:?}"
    );
    // Deterministic, and another context gives another key.
    let again = master
        .derive(ctx, "ledger.example.com/payments")
        .expect("derive");
    assert_eq!(again.to_skey(), payments.to_skey());
    let other = master
        .derive("another use\n", "ledger.example.com/payments")
        .expect("derive");
    assert_ne!(
        other.verifier().public_key(),
        payments.verifier().public_key()
    );
    assert!(matches!(
        master.derive(ctx, "a name"),
        Err(KeyError::BadName(_))
    ));
}

#[test]
fn go_example_open() {
    let verifier = Ed25519Verifier::parse(PETER_VKEY).expect("vkey");
    let opened = open(signed().as_bytes(), &[&verifier]).expect("opens");
    assert_eq!(opened.text, TEXT);
    assert_eq!(opened.verified.len(), 1);
    assert_eq!(opened.verified[0].name, "PeterNeumann");
    assert_eq!(opened.verified[0].key_id, 0xc74f20a3);
    assert!(opened.unverified.is_empty());
}

#[test]
fn go_example_add_signatures_with_zero_seed_key() {
    // Go's ExampleSign_add_signatures draws EnochRoot's seed from a reader of zero bytes.
    let verifier = Ed25519Verifier::parse(PETER_VKEY).expect("vkey");
    let opened = open(signed().as_bytes(), &[&verifier]).expect("opens");
    let enoch = Ed25519Signer::from_seed("EnochRoot", [0u8; 32]).expect("key");
    let mut note = opened.to_note();
    note.add_signature(enoch.sign(&note.text).expect("sign"));
    assert_eq!(note.to_string(), format!("{TEXT}\n{PETER_SIG}{ENOCH_SIG}"));
}

#[test]
fn c2sp_signed_note_example_verifies() {
    let vkey = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k";
    let msg = "This is an example message.\n\n\u{2014} example.com/foo Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3mFXmRKuwHjG1Yu72IneyaQM=\n";
    let verifier = Ed25519Verifier::parse(vkey).expect("vkey");
    assert_eq!(verifier.to_vkey(), vkey);
    let opened = open(msg.as_bytes(), &[&verifier]).expect("opens");
    assert_eq!(opened.text, "This is an example message.\n");
}

#[test]
fn mangled_keys_are_refused() {
    // Go's TestNewVerifier: every proper substring and every single-byte change fails.
    let b = PETER_VKEY.as_bytes();
    for i in 0..=b.len() {
        for j in i + 1..=b.len() {
            if i == 0 && j == b.len() {
                continue;
            }
            let Ok(s) = std::str::from_utf8(&b[i..j]) else {
                continue;
            };
            assert!(Ed25519Verifier::parse(s).is_err(), "{s:?} accepted");
        }
    }
    for i in 0..b.len() {
        let mut m = b.to_vec();
        m[i] = m[i].wrapping_add(1);
        if let Ok(s) = std::str::from_utf8(&m) {
            assert!(Ed25519Verifier::parse(s).is_err(), "{s:?} accepted");
        }
    }
    // Go's two crafted keys: wrong length and unknown algorithm, each with a matching key ID.
    // (The first is refused earlier than in Go: its base64 has non-zero trailing bits, which
    // we reject as non-canonical.)
    assert!(
        Ed25519Verifier::parse(
            "PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY=="
        )
        .is_err()
    );
    assert_eq!(
        VerifierKey::parse("PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"),
        Err(KeyError::UnknownAlgorithm(0x65))
    );
    let s = PETER_SKEY.as_bytes();
    for i in 0..s.len() {
        let mut m = s.to_vec();
        m[i] = m[i].wrapping_add(1);
        if let Ok(t) = std::str::from_utf8(&m) {
            assert!(Ed25519Signer::parse(t).is_err(), "{t:?} accepted");
        }
    }
}

#[test]
fn open_rules() {
    let peter = Ed25519Verifier::parse(PETER_VKEY).expect("vkey");
    let both = format!("{TEXT}\n{PETER_SIG}{ENOCH_SIG}");

    // Unknown keys are kept but not trusted.
    let opened = open(both.as_bytes(), &[&peter]).expect("opens");
    assert_eq!(opened.unverified.len(), 1);
    assert_eq!(opened.unverified[0].name, "EnochRoot");

    // No known key at all.
    let other = Ed25519Signer::from_seed("Other", [7u8; 32])
        .expect("key")
        .verifier();
    assert_eq!(
        open(both.as_bytes(), &[&other]),
        Err(NoteError::NoVerifiedSignature)
    );

    // A known key whose signature does not verify rejects the note.
    let tampered = both.replace("your problem,", "your problem;");
    assert_eq!(
        open(tampered.as_bytes(), &[&peter]),
        Err(NoteError::InvalidSignature {
            name: "PeterNeumann".into(),
            key_id: 0xc74f20a3
        })
    );

    // Same name, different key: ignored as unknown, not a failure.
    let impostor = Ed25519Signer::from_seed("PeterNeumann", [9u8; 32]).expect("key");
    assert_ne!(impostor.key_id(), peter.key_id());
    let opened = open(both.as_bytes(), &[&peter, &impostor.verifier()]).expect("opens");
    assert_eq!(opened.verified.len(), 1);

    let verifiers: [&dyn NoteVerifier; 2] = [&peter, &peter];
    assert!(matches!(
        open(both.as_bytes(), &verifiers),
        Err(NoteError::AmbiguousKey { .. })
    ));
}

#[test]
fn malformed_notes_are_named() {
    let peter = Ed25519Verifier::parse(PETER_VKEY).expect("vkey");
    let cases: Vec<(String, NoteError)> = vec![
        (TEXT.to_owned(), NoteError::NoSignatureBlock),
        (
            format!("{TEXT}\n{}", PETER_SIG.trim_end()),
            NoteError::UnterminatedSignatures,
        ),
        (
            format!("{TEXT}\n- PeterNeumann x08go/ZJ=\n"),
            NoteError::BadSignatureLine("- PeterNeumann x08go/ZJ=".into()),
        ),
        (
            format!("tab\there\n\n{PETER_SIG}"),
            NoteError::ControlCharacter { byte: 9, offset: 3 },
        ),
    ];
    for (msg, want) in cases {
        assert_eq!(open(msg.as_bytes(), &[&peter]), Err(want), "{msg:?}");
    }
    assert_eq!(open(b"\xff\n\n", &[&peter]), Err(NoteError::NotUtf8));
    let signer = Ed25519Signer::parse(PETER_SKEY).expect("skey");
    assert_eq!(
        signer.sign("no newline"),
        Err(NoteError::TextWithoutNewline)
    );
    // Text may contain blank lines: the last blank line separates the signatures.
    let text = "a\n\nb\n";
    let msg = sign(text, &[&signer]).expect("sign");
    assert_eq!(Note::parse(&msg).expect("parse").text, text);
    assert_eq!(open(&msg, &[&peter]).expect("opens").text, text);
}
