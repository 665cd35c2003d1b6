//! `agentledger witness` over HTTP (C2SP tlog-witness, docs/transparency.md "Running a
//! witness"): checkpoints are made here with a log key of the test's own, as a log at another
//! organisation would, and the cosignatures are checked with crates/tlog alone.

use std::path::{Path, PathBuf};

use reqwest::StatusCode;

use agentledger::conn::ConnLimits;
use agentledger::witness::{RunningWitness, WitnessConfig, start};
use agentledger_tlog::cosignature::CosignatureVerifier;
use agentledger_tlog::note::{Ed25519Signer, Note, NoteSignature, NoteVerifier, open, sign};
use agentledger_tlog::witness::AddCheckpointRequest;
use agentledger_tlog::{Checkpoint, Hash, MemoryTree, consistency_proof, leaf_hash, tree_hash};

use crate::helpers::bin;

const ORIGIN: &str = "ledger.example/log/project-1";

fn log_key() -> Ed25519Signer {
    Ed25519Signer::from_seed(ORIGIN, [7; 32]).expect("log key")
}

/// A tree of `n` leaves whose contents depend on `salt` (a different salt: a fork).
fn tree(n: u64, salt: &str) -> MemoryTree {
    let mut t = MemoryTree::new();
    for i in 0..n {
        t.append_leaf_hash(leaf_hash(format!("{salt} entry {i}").as_bytes()));
    }
    t
}

fn root(n: u64, salt: &str) -> Hash {
    tree_hash(n, &tree(n, salt)).expect("root")
}

fn signed(key: &Ed25519Signer, origin: &str, size: u64, root: Hash) -> Vec<u8> {
    let text = Checkpoint::new(origin, size, root)
        .expect("checkpoint")
        .to_text();
    sign(&text, &[key]).expect("sign")
}

fn request(old: u64, proof: Vec<Hash>, checkpoint: Vec<u8>) -> Vec<u8> {
    AddCheckpointRequest {
        old_size: old,
        consistency_proof: proof,
        checkpoint,
    }
    .to_bytes()
}

/// A request moving the witness from `old` to `new` leaves of the "main" tree.
fn grow(old: u64, new: u64) -> Vec<u8> {
    let t = tree(new, "main");
    let proof = if old == 0 {
        vec![]
    } else {
        consistency_proof(old, new, &t).expect("proof")
    };
    request(
        old,
        proof,
        signed(&log_key(), ORIGIN, new, root(new, "main")),
    )
}

struct Dir {
    _tmp: tempfile::TempDir,
    key: PathBuf,
    state: PathBuf,
}

fn dir() -> Dir {
    let tmp = tempfile::tempdir().expect("tempdir");
    Dir {
        key: tmp.path().join("witness.key"),
        state: tmp.path().join("witness.db"),
        _tmp: tmp,
    }
}

async fn spawn(d: &Dir) -> RunningWitness {
    spawn_for(d, vec![log_key().verifier().to_vkey()]).await
}

/// A witness of the logs `logs` names (`--log` arguments).
async fn spawn_for(d: &Dir, logs: Vec<String>) -> RunningWitness {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    start(
        WitnessConfig {
            key: d.key.clone(),
            name: "witness.example".into(),
            state: d.state.clone(),
            logs,
            limits: ConnLimits::default(),
            algorithm: Default::default(),
        },
        listener,
    )
    .await
    .expect("start witness")
}

async fn post(w: &RunningWitness, body: Vec<u8>) -> (StatusCode, Option<String>, String) {
    let resp = reqwest::Client::new()
        .post(format!("http://{}/add-checkpoint", w.addr))
        .body(body)
        .send()
        .await
        .expect("post");
    let status = resp.status();
    let ctype = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().expect("ascii").to_owned());
    (status, ctype, resp.text().await.expect("body"))
}

/// Posts and expects a cosignature; checks it with the witness's published key over the
/// checkpoint that was sent, and returns it.
async fn cosign(w: &RunningWitness, body: Vec<u8>) -> NoteSignature {
    let req = AddCheckpointRequest::parse(&body).expect("request");
    let (status, _, text) = post(w, body).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let sigs = NoteSignature::parse_lines(&text).expect("cosignature lines");
    assert_eq!(sigs.len(), 1, "{text}");
    // The checkpoint with the cosignature added opens with the witness's key alone.
    let vkey = w.verifier.to_vkey();
    let witness_key = CosignatureVerifier::parse(&vkey).expect("vkey");
    let mut note = Note::parse(&req.checkpoint).expect("note");
    note.add_signature(sigs[0].clone());
    let opened = open(&note.to_bytes(), &[&witness_key as &dyn NoteVerifier]).expect("verifies");
    assert_eq!(opened.verified.len(), 1);
    assert!(
        witness_key
            .verify_timestamp(opened.text.as_bytes(), &sigs[0].signature)
            .is_some_and(|t| t > 1_700_000_000),
        "the cosignature carries the time it was made"
    );
    sigs[0].clone()
}

#[tokio::test]
async fn witness_cosigns_consistent_checkpoints() {
    let d = dir();
    let w = spawn(&d).await;
    cosign(&w, grow(0, 5)).await;
    cosign(&w, grow(5, 300)).await;
    // The same checkpoint again (no proof from a size to itself) is cosigned again.
    cosign(&w, grow(300, 300)).await;
    // With 16 more signatures of post-quantum size by keys the witness does not know (signed-note:
    // a verifier "MUST accept at least up to 16 signatures", "up to nearly 5kB"): still taken.
    {
        use base64::Engine as _;
        let t = tree(310, "main");
        let mut note =
            String::from_utf8(signed(&log_key(), ORIGIN, 310, root(310, "main"))).expect("utf8");
        for i in 0..16 {
            let sig = base64::engine::general_purpose::STANDARD.encode(vec![i as u8; 4 + 4_900]);
            note.push_str(&format!("\u{2014} pq{i}.example {sig}\n"));
        }
        let body = request(
            300,
            consistency_proof(300, 310, &t).expect("proof"),
            note.into_bytes(),
        );
        assert!(body.len() > 64 * 1024, "{}", body.len());
        cosign(&w, body).await;
    }
    // The key file is private.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&d.key).expect("key").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    w.stop().await;
}

/// A log whose key is not named by its origin (sum.golang.org signs `go.sum database tree` with
/// the key `sum.golang.org`) is witnessed when `--log` names the origin before the key; by its
/// key alone it is unknown (404). A key listed twice counts once (not an ambiguous key: 403).
#[tokio::test]
async fn witness_takes_a_log_whose_key_is_named_otherwise() {
    let origin = "go.sum database tree";
    let key = Ed25519Signer::from_seed("sum.example", [8; 32]).expect("key");
    let vkey = key.verifier().to_vkey();
    let body = || request(0, vec![], signed(&key, origin, 3, root(3, "main")));

    let d = dir();
    let w = spawn_for(&d, vec![vkey.clone()]).await;
    let (status, _, text) = post(&w, body()).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{text}");
    w.stop().await;

    let d = dir();
    let w = spawn_for(
        &d,
        vec![
            format!("{origin} {vkey}"),
            format!("  {origin}\t{vkey} "),
            log_key().verifier().to_vkey(),
            log_key().verifier().to_vkey(),
        ],
    )
    .await;
    cosign(&w, body()).await;
    cosign(&w, grow(0, 5)).await;
    w.stop().await;

    let other = log_key().verifier().to_vkey();
    let secret = key.to_skey();
    for (bad, want) in [
        (format!("{vkey}\n{other}"), "several lines"),
        (format!("{vkey} {other}"), "two verifier keys"),
        (secret.clone(), "signer key"),
        (format!("{origin} not-a-key"), "is not a log verifier key"),
        (
            format!("tab\u{1}origin {vkey}"),
            "is not a checkpoint origin",
        ),
    ] {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let d = dir();
        let err = match start(
            WitnessConfig {
                key: d.key.clone(),
                name: "witness.example".into(),
                state: d.state.clone(),
                logs: vec![bad.clone()],
                limits: ConnLimits::default(),
                algorithm: Default::default(),
            },
            listener,
        )
        .await
        {
            Ok(_) => panic!("{bad:?} was taken"),
            Err(e) => e,
        };
        assert!(
            err.contains(want) && err.contains("--log"),
            "{bad:?}: {err}"
        );
        let seed = secret.rsplit('+').next().expect("seed");
        assert!(!err.contains(seed), "a signer key is not echoed: {err}");
    }
}

async fn get_checkpoint(w: &RunningWitness, origin_hash: &str) -> (StatusCode, Vec<u8>) {
    let resp = reqwest::get(format!("http://{}/{origin_hash}/checkpoint", w.addr))
        .await
        .expect("get");
    (resp.status(), resp.bytes().await.expect("body").to_vec())
}

fn origin_hash(origin: &str) -> String {
    hex::encode(agentledger_core::chain::sha256(origin.as_bytes()))
}

/// tlog-witness "Monitoring": `GET /<sha256(origin) hex>/checkpoint` is the latest checkpoint
/// the witness cosigned, with the log's signature and the cosignature it returned; 404 before
/// the first; kept across a restart; a state file from before the route gains it.
#[tokio::test]
async fn witness_serves_the_latest_checkpoint_it_cosigned() {
    let d = dir();
    let w = spawn(&d).await;
    let hash = origin_hash(ORIGIN);
    assert_eq!(get_checkpoint(&w, &hash).await.0, StatusCode::NOT_FOUND);
    cosign(&w, grow(0, 5)).await;
    // The checkpoint comes with a signature by a key the witness does not know: not passed on.
    let with_stranger = {
        let mut req = AddCheckpointRequest::parse(&grow(5, 300)).expect("request");
        let stranger = Ed25519Signer::from_seed("stranger.example", [5; 32]).expect("key");
        let mut note = Note::parse(&req.checkpoint).expect("note");
        note.add_signature(stranger.sign(&note.text).expect("sign"));
        req.checkpoint = note.to_bytes();
        req.to_bytes()
    };
    let cosigned = cosign(&w, with_stranger).await;
    let check = |body: &[u8], size: u64, w: &RunningWitness| {
        let witness_key = CosignatureVerifier::parse(&w.verifier.to_vkey()).expect("vkey");
        let log = log_key().verifier();
        let opened = open(body, &[&log as &dyn NoteVerifier, &witness_key]).expect("opens");
        assert_eq!(
            opened.verified.len(),
            2,
            "the log's signature and the cosignature"
        );
        assert!(opened.unverified.is_empty());
        assert_eq!(
            Checkpoint::parse(&opened.text).expect("checkpoint").size,
            size
        );
        opened
    };
    let (status, body) = get_checkpoint(&w, &hash).await;
    assert_eq!(status, StatusCode::OK);
    let opened = check(&body, 300, &w);
    assert!(
        opened.verified.contains(&cosigned),
        "the cosignature it returned"
    );
    // Unknown logs are 404; a hash not written as 64 lowercase hex digits is 400.
    let (status, _) = get_checkpoint(&w, &origin_hash("other.example/log")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = get_checkpoint(&w, &hash.to_uppercase()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    w.stop().await;

    let w = spawn(&d).await;
    check(&get_checkpoint(&w, &hash).await.1, 300, &w);
    w.stop().await;

    // A log with two keys: the same checkpoint sent again signed by the other key only keeps
    // the first key's signature in what is served.
    let second = Ed25519Signer::from_seed(ORIGIN, [6; 32]).expect("key");
    let two = dir();
    let w = spawn_for(
        &two,
        vec![log_key().verifier().to_vkey(), second.verifier().to_vkey()],
    )
    .await;
    cosign(&w, grow(0, 5)).await;
    cosign(
        &w,
        request(5, vec![], signed(&second, ORIGIN, 5, root(5, "main"))),
    )
    .await;
    let (_, body) = get_checkpoint(&w, &hash).await;
    let witness_key = CosignatureVerifier::parse(&w.verifier.to_vkey()).expect("vkey");
    let opened = open(
        &body,
        &[
            &log_key().verifier() as &dyn NoteVerifier,
            &second.verifier(),
            &witness_key,
        ],
    )
    .expect("opens");
    assert_eq!(
        opened.verified.len(),
        3,
        "both log keys and the cosignature"
    );
    w.stop().await;

    // A state file of the older schema (no checkpoint column): the witness opens it, knows the
    // log's size, and serves a checkpoint once it cosigns the next one.
    let old = dir();
    let conn = rusqlite::Connection::open(&old.state).expect("state");
    conn.execute_batch(
        "CREATE TABLE witness_log (origin TEXT PRIMARY KEY, size INTEGER NOT NULL,
             root BLOB NOT NULL, cosigned_at INTEGER NOT NULL) STRICT;",
    )
    .expect("old schema");
    conn.execute(
        "INSERT INTO witness_log VALUES (?1, 5, ?2, 1)",
        rusqlite::params![ORIGIN, root(5, "main").as_bytes().as_slice()],
    )
    .expect("row");
    drop(conn);
    let w = spawn(&old).await;
    assert_eq!(get_checkpoint(&w, &hash).await.0, StatusCode::NOT_FOUND);
    let (status, _, text) = post(&w, grow(0, 8)).await;
    assert_eq!(status, StatusCode::CONFLICT, "it knows size 5: {text}");
    cosign(&w, grow(5, 8)).await;
    check(&get_checkpoint(&w, &hash).await.1, 8, &w);
    w.stop().await;
}

#[tokio::test]
async fn witness_refuses_fork_rollback_and_bad_proofs() {
    let d = dir();
    let w = spawn(&d).await;
    cosign(&w, grow(0, 8)).await;

    // A fork: the same size with another root.
    let fork = request(8, vec![], signed(&log_key(), ORIGIN, 8, root(8, "fork")));
    let (status, _, text) = post(&w, fork).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{text}");
    assert!(text.contains("not consistent"), "{text}");

    // A fork further on: a bigger tree that does not extend the cosigned one, with the proof
    // of its own history.
    let forked = tree(12, "fork");
    let proof = consistency_proof(8, 12, &forked).expect("proof");
    let fork = request(8, proof, signed(&log_key(), ORIGIN, 12, root(12, "fork")));
    let (status, _, text) = post(&w, fork).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{text}");

    // A bad proof for the real tree: one hash changed.
    let mut proof = consistency_proof(8, 12, &tree(12, "main")).expect("proof");
    proof[0] = leaf_hash(b"not in the tree");
    let bad = request(8, proof, signed(&log_key(), ORIGIN, 12, root(12, "main")));
    let (status, _, text) = post(&w, bad).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{text}");

    // A wrong old size: 409 with the witness's size, in the spec's content type.
    let (status, ctype, text) = post(&w, grow(3, 12)).await;
    assert_eq!(status, StatusCode::CONFLICT, "{text}");
    assert_eq!(ctype.as_deref(), Some("text/x.tlog.size"));
    assert_eq!(text, "8\n");

    // A rollback: an older checkpoint, sent from the witness's size (400) or from its own
    // size (409), is never cosigned.
    let older = signed(&log_key(), ORIGIN, 5, root(5, "main"));
    let (status, _, text) = post(&w, request(8, vec![], older.clone())).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
    let (status, _, text) = post(&w, request(5, vec![], older)).await;
    assert_eq!(status, StatusCode::CONFLICT, "{text}");
    assert_eq!(text, "8\n");

    // None of that moved the witness: the real tree still grows from 8.
    cosign(&w, grow(8, 12)).await;
    w.stop().await;
}

#[tokio::test]
async fn witness_refuses_unknown_logs_bad_signatures_and_malformed_requests() {
    let d = dir();
    let w = spawn(&d).await;

    // A log the witness was not told about: 404, as tlog-witness requires for an unknown origin.
    let other = Ed25519Signer::from_seed("other.example/log", [9; 32]).expect("key");
    let body = request(
        0,
        vec![],
        signed(&other, "other.example/log", 3, root(3, "main")),
    );
    let (status, _, text) = post(&w, body).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{text}");
    assert!(text.contains("unknown log origin"), "{text}");

    // The right origin signed with another key: 403.
    let impostor = Ed25519Signer::from_seed(ORIGIN, [8; 32]).expect("key");
    let body = request(0, vec![], signed(&impostor, ORIGIN, 3, root(3, "main")));
    let (status, _, text) = post(&w, body).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{text}");

    // The right key, but the checkpoint altered after signing: 403.
    let good = String::from_utf8(signed(&log_key(), ORIGIN, 3, root(3, "main"))).expect("utf8");
    let altered = good.replacen("\n3\n", "\n4\n", 1);
    let (status, _, text) = post(&w, request(0, vec![], altered.into_bytes())).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{text}");

    // Malformed bodies: 400, naming what is wrong.
    let (status, _, text) = post(&w, b"new 0\n\nx".to_vec()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
    assert!(text.contains("old <size>"), "{text}");
    let (status, _, text) = post(&w, b"old 0\nnot base64!\n\n".to_vec()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
    assert!(text.contains("proof line"), "{text}");
    let many = format!(
        "old 0\n{}\n",
        format!("{}\n", leaf_hash(b"x").to_base64()).repeat(64)
    );
    let (status, _, text) = post(&w, many.into_bytes()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
    assert!(text.contains("more than 63"), "{text}");
    // A body larger than any request is refused before it is read whole.
    let (status, _, _) = post(&w, vec![b'a'; 1 << 20]).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);

    // Nothing was recorded: the first real checkpoint is cosigned from size 0.
    cosign(&w, grow(0, 3)).await;
    w.stop().await;
}

#[tokio::test]
async fn witness_keeps_its_state_and_key_across_restarts() {
    let d = dir();
    let w = spawn(&d).await;
    let first_key = w.verifier.to_vkey();
    cosign(&w, grow(0, 10)).await;
    w.stop().await;

    let w = spawn(&d).await;
    assert_eq!(w.verifier.to_vkey(), first_key, "the key file is reused");
    // It still knows size 10: a client starting from 0 is told so, and a fork of size 10 is
    // refused.
    let (status, _, text) = post(&w, grow(0, 10)).await;
    assert_eq!(status, StatusCode::CONFLICT, "{text}");
    assert_eq!(text, "10\n");
    let fork = request(10, vec![], signed(&log_key(), ORIGIN, 10, root(10, "fork")));
    let (status, _, _) = post(&w, fork).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    cosign(&w, grow(10, 11)).await;
    w.stop().await;
}

fn cli(args: &[&str]) -> std::process::Output {
    std::process::Command::new(bin())
        .args(args)
        .env_remove("AGENTLEDGER_WITNESS_KEY")
        .env_remove("AGENTLEDGER_WITNESS_NAME")
        .output()
        .expect("run cli")
}

fn stdout(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).expect("utf8")
}

fn key_arg(p: &Path) -> &str {
    p.to_str().expect("utf8 path")
}

#[tokio::test]
async fn witness_key_command_prints_the_key_the_witness_cosigns_with() {
    let d = dir();
    let printed = stdout(&cli(&[
        "witness-key",
        "--key",
        key_arg(&d.key),
        "--name",
        "auditor.example",
    ]));
    let vkey = printed.trim_end();
    let parsed = CosignatureVerifier::parse(vkey).expect("a cosignature vkey");
    assert_eq!(parsed.name(), "auditor.example");
    assert!(vkey.starts_with("auditor.example+"), "{vkey}");
    // Printed again, the same key (the file is kept, its name too).
    let again = stdout(&cli(&["witness-key", "--key", key_arg(&d.key)]));
    assert_eq!(again.trim_end(), vkey);
    // The running witness cosigns with it.
    let w = spawn(&d).await;
    assert_eq!(w.verifier.to_vkey(), vkey);
    cosign(&w, grow(0, 2)).await;
    w.stop().await;

    // A key file others can read is refused.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&d.key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let out = cli(&["witness-key", "--key", key_arg(&d.key)]);
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("chmod 600"));
    }
}

/// The log's side: the client sends a checkpoint, recovers from a 409 with a proof from the
/// witness's size, and keeps only cosignatures that verify with the witness's policy key.
#[tokio::test]
async fn witness_client_handles_conflicts_and_checks_cosignatures() {
    use agentledger::witness::client::{WitnessClient, WitnessClientError};

    let d = dir();
    let w = spawn(&d).await;
    let url = format!("http://{}", w.addr);
    let client = WitnessClient::new(std::time::Duration::from_secs(10)).expect("client");
    let prove = |new: u64| {
        move |old: u64| async move {
            consistency_proof(old, new, &tree(new, "main")).map_err(|e| e.to_string())
        }
    };
    let note = |n: u64| signed(&log_key(), ORIGIN, n, root(n, "main"));

    let sigs = client
        .add_checkpoint(&url, &w.verifier, &note(6), 0, prove(6))
        .await
        .expect("cosigned");
    assert_eq!(sigs.len(), 1);
    assert_eq!(sigs[0].name, "witness.example");

    // The caller believes the witness is at 0 (say, after losing its own records): the witness
    // answers 409 with 6, and the client proves 6 -> 20 and is cosigned.
    let sigs = client
        .add_checkpoint(&url, &w.verifier, &note(20), 0, prove(20))
        .await
        .expect("cosigned after a 409");
    let mut n = Note::parse(&note(20)).expect("note");
    n.add_signature(sigs[0].clone());
    open(&n.to_bytes(), &[&w.verifier as &dyn NoteVerifier]).expect("the cosignature verifies");

    // A policy listing another key for this witness: its cosignatures are not accepted.
    let other = CosignatureVerifier::parse(
        &agentledger_tlog::cosignature::CosignatureSigner::from_seed("witness.example", [3; 32])
            .expect("key")
            .verifier()
            .to_vkey(),
    )
    .expect("vkey");
    let err = client
        .add_checkpoint(&url, &other, &note(21), 20, prove(21))
        .await
        .expect_err("not the policy's witness key");
    assert!(matches!(err, WitnessClientError::BadCosignature), "{err}");

    // A fork is refused by the witness, and the refusal says why.
    let fork = signed(&log_key(), ORIGIN, 30, root(30, "fork"));
    let forked = |old: u64| async move {
        consistency_proof(old, 30, &tree(30, "fork")).map_err(|e| e.to_string())
    };
    let err = client
        .add_checkpoint(&url, &w.verifier, &fork, 21, forked)
        .await
        .expect_err("a fork");
    match err {
        WitnessClientError::Refused { status, message } => {
            assert_eq!(status, 422);
            assert!(message.contains("not consistent"), "{message}");
        }
        other => panic!("{other}"),
    }

    // A witness that is not there.
    w.stop().await;
    let err = client
        .add_checkpoint(&url, &other, &note(22), 21, prove(22))
        .await
        .expect_err("gone");
    assert!(matches!(err, WitnessClientError::Unreachable(_)), "{err}");

    // An older witness answers a conflicting checkpoint 409 with no size (omniwitness did,
    // before tlog-witness made it 422): a refusal that says so, not "malformed".
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = axum::Router::new().route(
        "/add-checkpoint",
        axum::routing::post(|| async { (StatusCode::CONFLICT, "") }),
    );
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let err = client
        .add_checkpoint(&format!("http://{addr}"), &other, &note(22), 21, prove(22))
        .await
        .expect_err("refused");
    match err {
        WitnessClientError::Refused { status, message } => {
            assert_eq!(status, 409);
            assert!(
                message.contains("conflicts with one they cosigned"),
                "{message}"
            );
        }
        other => panic!("{other}"),
    }
    server.abort();
}

/// An ML-DSA-44 witness (`--algorithm ml-dsa-44`): its cosignatures verify with its published
/// key; an origin longer than its message's length byte is a 400, not a failure of the witness;
/// a key file of the other type is refused rather than used with the wrong algorithm.
#[tokio::test]
async fn an_ml_dsa_44_witness_cosigns_and_names_what_it_cannot() {
    use agentledger::witness::{CosignAlgorithm, WitnessKey};
    let long_origin = format!("ledger.example/{}", "o".repeat(300));
    let long_key = Ed25519Signer::from_seed("long.example", [4; 32]).expect("key");
    let d = dir();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let w = start(
        WitnessConfig {
            key: d.key.clone(),
            name: "pq.example".into(),
            state: d.state.clone(),
            logs: vec![
                log_key().verifier().to_vkey(),
                format!("{long_origin} {}", long_key.verifier().to_vkey()),
            ],
            limits: ConnLimits::default(),
            algorithm: Some(CosignAlgorithm::MlDsa44),
        },
        listener,
    )
    .await
    .expect("start");
    assert_eq!(
        w.verifier.alg(),
        agentledger_tlog::note::ALG_COSIGNATURE_ML_DSA_44
    );
    let sig = cosign(&w, grow(0, 5)).await;
    assert_eq!(sig.signature.len(), 8 + 2420);
    let (status, _, text) = post(
        &w,
        request(
            0,
            vec![],
            signed(&long_key, &long_origin, 3, root(3, "main")),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
    assert!(text.contains("255"), "{text}");
    w.stop().await;

    // The file holds an ML-DSA-44 key now: asking for Ed25519 is refused, naming the file.
    let err = WitnessKey::load_or_create(&d.key, "pq.example", Some(CosignAlgorithm::Ed25519))
        .expect_err("another type");
    assert!(err.contains("--algorithm"), "{err}");
    assert!(WitnessKey::load_or_create(&d.key, "pq.example", None).is_ok());
}
