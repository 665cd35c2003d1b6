//! The transparency log over HTTP (issue 17, docs/transparency.md): what a client outside the
//! server can check with the public formats alone. The leaf bytes are rebuilt here from the
//! ingest acknowledgements, by the documented encoding, not by the server's code.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use agentledger_tlog::note::{Ed25519Verifier, open};
use agentledger_tlog::proof::TlogProof;
use agentledger_tlog::tile::{Tile, TileReader, parse_entry_bundle, tiles_for_size};
use agentledger_tlog::witness::AddCheckpointRequest;
use agentledger_tlog::{
    Checkpoint, HashReadError, MemoryTree, TileHashReader, leaf_hash, tree_hash, verify_consistency,
};

use crate::helpers::*;

/// docs/transparency.md "Leaves": 0x01, u16 BE session id length, session id, u64 BE seq,
/// the 32-byte chain hash.
pub fn leaf(session: &str, seq: u64, hash_hex: &str) -> Vec<u8> {
    let mut out = vec![0x01];
    out.extend_from_slice(&(session.len() as u16).to_be_bytes());
    out.extend_from_slice(session.as_bytes());
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(&hex::decode(hash_hex).expect("hex hash"));
    out
}

/// An acknowledged event: (id, leaf entry).
pub fn acked(ack: &Value) -> Vec<(String, Vec<u8>)> {
    ack["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| {
            (
                e["id"].as_str().expect("id").to_owned(),
                leaf(
                    e["session_id"].as_str().expect("session"),
                    e["seq"].as_u64().expect("seq"),
                    e["hash"].as_str().expect("hash"),
                ),
            )
        })
        .collect()
}

pub fn batch(session_prefix: &str, from: usize, n: usize) -> Value {
    Value::Array(
        (from..from + n)
            .map(|i| memory(&format!("{session_prefix}-{}", i % 3), i))
            .collect(),
    )
}

/// The verifier key `agentledger log-key` prints for a project of this test server.
pub fn vkey(app: &TestApp, project: &str) -> Ed25519Verifier {
    let key = app.db.with_file_name("log.key");
    let out = app.cli(&[
        "log-key",
        "--log-key",
        key.to_str().expect("utf8 path"),
        "--log-origin",
        "agentledger.test",
        "--project",
        project,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("utf8");
    assert!(
        text.starts_with(&format!("agentledger.test/{project}+")),
        "{text}"
    );
    Ed25519Verifier::parse(text.trim()).expect("a vkey")
}

/// Polls /log/checkpoint (generous bound; prints how long it took) until its size is `size`.
pub async fn checkpoint_of_size(
    app: &TestApp,
    key: &str,
    size: u64,
    vkey: &Ed25519Verifier,
) -> (Vec<u8>, Checkpoint) {
    let started = Instant::now();
    loop {
        let r = app.get_with("/log/checkpoint", key).await;
        if r.status() == StatusCode::OK {
            let note = r.bytes().await.expect("body").to_vec();
            let opened = open(&note, &[vkey]).expect("signed by the log's key");
            let cp = Checkpoint::parse(&opened.text).expect("a tlog-checkpoint");
            assert!(cp.size <= size, "checkpoint of {} > {size}", cp.size);
            if cp.size == size {
                eprintln!(
                    "checkpoint of {size} leaves after {} ms",
                    started.elapsed().as_millis()
                );
                return (note, cp);
            }
        } else {
            assert_eq!(r.status(), StatusCode::NOT_FOUND);
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no checkpoint of {size} leaves after 60 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Tiles fetched over HTTP, answering a TileHashReader (partial tiles cut from wider ones).
struct FetchedTiles(HashMap<(u8, u64), Vec<u8>>);

impl TileReader for FetchedTiles {
    fn read_tiles(&self, tiles: &[Tile]) -> Result<Vec<Vec<u8>>, HashReadError> {
        tiles
            .iter()
            .map(|t| {
                let data = self
                    .0
                    .get(&(t.level, t.index))
                    .ok_or(HashReadError::Missing(0))?;
                data.get(..usize::from(t.width) * 32)
                    .map(<[u8]>::to_vec)
                    .ok_or(HashReadError::Missing(0))
            })
            .collect()
    }
}

pub async fn get_bytes(app: &TestApp, path: &str) -> Vec<u8> {
    let r = app.get(path).await;
    assert_eq!(r.status(), StatusCode::OK, "GET {path}");
    r.bytes().await.expect("body").to_vec()
}

#[tokio::test]
async fn every_event_is_provably_in_a_signed_checkpoint_that_only_grows() {
    let app = spawn_app().await;
    let mut events = Vec::new();
    for b in 0..3 {
        events.extend(acked(&app.ingest(batch("s", b * 100, 100)).await));
    }
    let verifier = vkey(&app, "default");
    let (note, cp) = checkpoint_of_size(&app, &app.key, 300, &verifier).await;
    assert_eq!(cp.origin, "agentledger.test/default");

    // The tiles give the checkpoint's root, and the entry bundles hold every event's leaf.
    let mut fetched = HashMap::new();
    for tile in tiles_for_size(300) {
        let path = tile.path();
        let bytes = get_bytes(&app, &format!("/log/{path}")).await;
        assert_eq!(bytes.len(), usize::from(tile.width) * 32, "{path}");
        fetched.insert((tile.level, tile.index), bytes);
    }
    let reader = FetchedTiles(fetched);
    let from_tiles = tree_hash(
        300,
        &TileHashReader {
            size: 300,
            tiles: &reader,
        },
    )
    .expect("root from tiles");
    assert_eq!(from_tiles, cp.root);
    let mut entries = Vec::new();
    for (path, width) in [
        ("/log/tile/entries/000", 256),
        ("/log/tile/entries/001.p/44", 44),
    ] {
        let bundle = get_bytes(&app, path).await;
        entries.extend(
            parse_entry_bundle(&bundle, width)
                .expect("entry bundle")
                .into_iter()
                .map(<[u8]>::to_vec),
        );
    }
    assert_eq!(
        tree_hash(300, &MemoryTree::from_entries(&entries)).expect("root"),
        cp.root
    );
    let logged: HashSet<&Vec<u8>> = entries.iter().collect();
    assert!(events.iter().all(|(_, entry)| logged.contains(entry)));
    // Caching as tlog-tiles asks: tiles and bundles (partial ones too) long-lived, the
    // checkpoint not beyond a few seconds; for the caller's key only (every project's log is
    // at these paths).
    for (path, cache) in [
        ("/log/tile/0/000", "private, max-age=31536000, immutable"),
        (
            "/log/tile/0/001.p/44",
            "private, max-age=31536000, immutable",
        ),
        (
            "/log/tile/entries/000",
            "private, max-age=31536000, immutable",
        ),
        ("/log/checkpoint", "private, no-cache"),
    ] {
        let r = app.get(path).await;
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        let h = r.headers();
        assert_eq!(h["cache-control"], cache, "{path}");
        assert_eq!(h["vary"], "authorization, x-api-key", "{path}");
    }
    // Entry bundles are gzipped for a client that accepts it (tlog-tiles SHOULD), hash tiles not.
    for (path, gzipped) in [
        ("/log/tile/entries/000", true),
        ("/log/tile/entries/001.p/44", true),
        ("/log/tile/0/000", false),
    ] {
        let plain = get_bytes(&app, path).await;
        let r = app
            .client
            .get(app.url(path))
            .bearer_auth(&app.key)
            .header("accept-encoding", "gzip")
            .send()
            .await
            .expect("request");
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        let encoding = r
            .headers()
            .get("content-encoding")
            .map(|v| v.to_str().expect("ascii").to_owned());
        let r_vary: Vec<String> = r
            .headers()
            .get_all("vary")
            .iter()
            .map(|v| v.to_str().expect("ascii").to_owned())
            .collect();
        let body = r.bytes().await.expect("body");
        let vary: Vec<&str> = r_vary.iter().map(String::as_str).collect();
        assert_eq!(
            vary.contains(&"accept-encoding"),
            gzipped,
            "{path}: {vary:?}"
        );
        if gzipped {
            assert_eq!(encoding.as_deref(), Some("gzip"), "{path}");
            let mut unzipped = Vec::new();
            std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&body[..]), &mut unzipped)
                .expect("gzip");
            assert_eq!(unzipped, plain, "{path}");
            eprintln!("{path}: {} bytes, {} gzipped", plain.len(), body.len());
            assert!(body.len() < plain.len(), "{path}");
        } else {
            assert_eq!(encoding, None, "{path}");
            assert_eq!(&body[..], &plain[..], "{path}");
        }
    }
    // A client that refuses identity and takes no gzip still gets every tile as it is (not 406).
    for path in ["/log/tile/0/000", "/log/tile/entries/000"] {
        let r = app
            .client
            .get(app.url(path))
            .bearer_auth(&app.key)
            .header("accept-encoding", "identity;q=0, br")
            .send()
            .await
            .expect("request");
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        assert!(r.headers().get("content-encoding").is_none(), "{path}");
    }

    // An inclusion proof for every event, as a C2SP tlog-proof, checked like a client would.
    let mut indices = HashSet::new();
    for (id, entry) in &events {
        let r = app
            .get(&format!("/log/proof/inclusion/{id}?format=text"))
            .await;
        assert_eq!(r.status(), StatusCode::OK);
        let proof = TlogProof::parse(&r.bytes().await.expect("body")).expect("tlog-proof");
        let (proved, _) = proof
            .verify(&leaf_hash(entry), &[&verifier])
            .expect("inclusion verifies");
        assert_eq!(proved.size, 300);
        assert_eq!(proof.checkpoint, note);
        assert!(indices.insert(proof.index), "index {} twice", proof.index);
    }
    assert_eq!(indices.len(), 300);
    let metrics = app.metrics().await;
    assert!(
        metrics
            .lines()
            .any(|l| l == "agentledger_log_leaves_integrated_total 300"),
        "{metrics}"
    );
    assert!(
        !metrics.contains("agentledger_log_failures_total{"),
        "{metrics}"
    );
    let (id, entry) = &events[7];
    let j = app.get_json(&format!("/log/proof/inclusion/{id}")).await;
    assert_eq!(j["tree_size"], 300);
    assert_eq!(j["leaf_hash"], leaf_hash(entry).to_base64());
    assert_eq!(j["checkpoint"].as_str().map(str::as_bytes), Some(&note[..]));

    // More events: a new checkpoint, provably an extension of the first.
    app.ingest(batch("t", 0, 50)).await;
    let (note2, cp2) = checkpoint_of_size(&app, &app.key, 350, &verifier).await;
    let j = app.get_json("/log/proof/consistency/300").await;
    assert_eq!(
        (j["from"].as_u64(), j["to"].as_u64()),
        (Some(300), Some(350))
    );
    let proof: Vec<agentledger_tlog::Hash> = j["consistency_proof"]
        .as_array()
        .expect("proof")
        .iter()
        .map(|h| agentledger_tlog::Hash::parse_base64(h.as_str().expect("b64")).expect("hash"))
        .collect();
    verify_consistency(300, 350, &cp.root, &cp2.root, &proof).expect("consistent");
    assert!(
        verify_consistency(300, 350, &cp2.root, &cp2.root, &proof).is_err(),
        "the proof must not verify from another root"
    );
    let text = get_bytes(&app, "/log/proof/consistency/300?format=text").await;
    let req = AddCheckpointRequest::parse(&text).expect("tlog-witness body");
    assert_eq!((req.old_size, req.checkpoint), (300, note2));
    assert_eq!(req.consistency_proof, proof);
    // The first checkpoint stays served by size.
    let old = app
        .get_json(&format!("/log/proof/inclusion/{id}?size=300"))
        .await;
    assert_eq!(
        old["checkpoint"].as_str().map(str::as_bytes),
        Some(&note[..])
    );
}

#[tokio::test]
async fn a_project_reads_only_its_own_log() {
    let app = spawn_app().await;
    let mine = acked(&app.ingest(batch("s", 0, 3)).await);
    let verifier = vkey(&app, "default");
    checkpoint_of_size(&app, &app.key, 3, &verifier).await;
    let other = app.new_key("other").await;
    // Nothing of project default's log through project other's key.
    let r = app.get_with("/log/checkpoint", &other).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    for path in [
        format!("/log/proof/inclusion/{}", mine[0].0),
        "/log/tile/0/000.p/3".to_owned(),
        "/log/tile/entries/000.p/1".to_owned(),
        "/log/proof/consistency/1".to_owned(),
    ] {
        let r = app.get_with(&path, &other).await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{path}");
    }
    // Project other's own log: its own origin, its own leaves.
    let r = app
        .post_with(
            "/api/v1/events",
            &json!({"events": [memory("s-0", 0)]}),
            &other,
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let theirs = acked(&r.json().await.expect("json"));
    let other_verifier = vkey(&app, "other");
    let (_, cp) = checkpoint_of_size(&app, &other, 1, &other_verifier).await;
    assert_eq!(cp.origin, "agentledger.test/other");
    assert_eq!(cp.root, leaf_hash(&theirs[0].1));
    let r = app.get_with("/log/checkpoint", &other).await;
    let note = r.bytes().await.expect("body");
    assert!(
        open(&note, &[&verifier]).is_err(),
        "project default's verifier key does not accept project other's checkpoints"
    );
}

#[tokio::test]
async fn a_restart_keeps_the_tree_and_the_key_and_integrates_on() {
    let app = spawn_app().await;
    let mut events = acked(&app.ingest(batch("s", 0, 20)).await);
    let verifier = vkey(&app, "default");
    let (note, cp) = checkpoint_of_size(&app, &app.key, 20, &verifier).await;
    let app = app.restart().await;
    assert_eq!(get_bytes(&app, "/log/checkpoint").await, note, "kept");
    events.extend(acked(&app.ingest(batch("s", 20, 20)).await));
    let (_, cp2) = checkpoint_of_size(&app, &app.key, 40, &verifier).await;
    let j = app.get_json("/log/proof/consistency/20").await;
    let proof: Vec<agentledger_tlog::Hash> = j["consistency_proof"]
        .as_array()
        .expect("proof")
        .iter()
        .map(|h| agentledger_tlog::Hash::parse_base64(h.as_str().expect("b64")).expect("hash"))
        .collect();
    verify_consistency(20, 40, &cp.root, &cp2.root, &proof).expect("consistent across restart");
    let mut indices = HashSet::new();
    for (id, entry) in &events {
        let j = app.get_json(&format!("/log/proof/inclusion/{id}")).await;
        assert_eq!(j["leaf_hash"], leaf_hash(entry).to_base64());
        assert!(indices.insert(j["index"].as_u64().expect("index")));
    }
    assert_eq!(indices, (0..40).collect::<HashSet<u64>>());
}

#[tokio::test]
async fn bad_log_requests_are_400s_naming_what_is_wrong() {
    let app = spawn_app().await;
    let events = acked(&app.ingest(batch("s", 0, 2)).await);
    let verifier = vkey(&app, "default");
    checkpoint_of_size(&app, &app.key, 2, &verifier).await;
    let r = app
        .get(&format!(
            "/log/proof/inclusion/{}?size=18446744073709551615",
            events[0].0
        ))
        .await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    for (path, names) in [
        ("/log/tile/0/1234", "path"),
        ("/log/tile/0/000.p/256", "path"),
        ("/log/tile/x/000", "path"),
        ("/log/proof/consistency/abc", "from"),
        ("/log/proof/consistency/3", "from"),
        ("/log/proof/inclusion/not-an-id", "id"),
        ("/log/proof/consistency/1?format=xml", "query"),
    ] {
        let r = app.get(path).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{path}");
        let body: Value = r.json().await.expect("json");
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(names), "{path}: {body}");
    }
    for path in [
        "/log/tile/9/000",
        "/log/tile/1/000",
        "/log/tile/0/001",
        "/log/tile/entries/000.p/3",
        "/log/proof/consistency/1?to=7",
        "/log/proof/consistency/1?to=18446744073709551615",
        "/log/tile/0/x018/x446/x744/x073/x709/x551/615",
        "/log/tile/entries/x018/x446/x744/x073/x709/x551/615",
    ] {
        assert_eq!(
            app.get(path).await.status(),
            StatusCode::NOT_FOUND,
            "{path}"
        );
    }
}

/// The real binary, for SIGKILL. Killed when dropped.
struct Proc {
    base: String,
    child: std::process::Child,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_proc(db: &std::path::Path, key: &str, extra: &[&str]) -> Proc {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port");
    let child = std::process::Command::new(bin())
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--db")
        .arg(db)
        .args(["--log", "warn", "--log-origin", "crash.test"])
        .args(["--checkpoint-interval", "0.2"])
        .args(extra)
        .env("AGENTLEDGER_BOOTSTRAP_KEY", key)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn server");
    let p = Proc {
        base: format!("http://127.0.0.1:{port}"),
        child,
    };
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while client
        .get(format!("{}/healthz", p.base))
        .send()
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "server did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    p
}

/// SIGKILL after events committed and before the integrator took them: nothing is lost, and
/// after the restart every acknowledged event is provably in the log, each under one index.
/// Then SIGKILL at a random moment of a run of ingests with the integrator running (a pass may
/// be cut mid-transaction): the same holds.
#[tokio::test]
async fn sigkill_between_commit_and_integration_loses_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("ledger.db");
    let key = agentledger_core::keys::generate_key();
    let client = reqwest::Client::new();
    let ingest = {
        let (client, key) = (client.clone(), key.clone());
        move |base: String, events: Value| {
            let (client, key) = (client.clone(), key.clone());
            async move {
                let r = client
                    .post(format!("{base}/api/v1/events"))
                    .bearer_auth(&key)
                    .json(&json!({ "events": events }))
                    .send()
                    .await
                    .ok()?;
                if r.status() != StatusCode::CREATED {
                    return None;
                }
                Some(acked(&r.json::<Value>().await.ok()?))
            }
        }
    };

    // 1. The integrator's first pass runs at start; the next one in an hour.
    let mut server = start_proc(&db, &key, &["--integrate-interval", "3600"]).await;
    let mut events = Vec::new();
    for b in 0..3 {
        events.extend(
            ingest(server.base.clone(), batch("s", b * 100, 100))
                .await
                .expect("acknowledged"),
        );
    }
    server.child.kill().expect("SIGKILL");
    server.child.wait().expect("reaped");
    let conn = rusqlite::Connection::open(&db).expect("open db");
    let (stored, logged): (i64, i64) = conn
        .query_row(
            "SELECT (SELECT count(*) FROM events), (SELECT count(*) FROM tlog_leaves)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .expect("counts");
    drop(conn);
    // The integrator's pass at start may have caught the first events; the rest were
    // committed and not integrated when the process died.
    eprintln!("killed with {stored} events stored, {logged} in the log");
    assert_eq!(stored, 300);
    assert!(
        logged < stored,
        "the kill came after the commits and before integration"
    );

    // 2. Restart with the integrator running; kill it again at a random moment of more ingests.
    let server = start_proc(&db, &key, &[]).await;
    let base = server.base.clone();
    let load = tokio::spawn({
        let ingest = ingest.clone();
        async move {
            let mut acked = Vec::new();
            for b in 0..200 {
                match ingest(base.clone(), batch("t", b * 20, 20)).await {
                    Some(a) => acked.extend(a),
                    None => break,
                }
            }
            acked
        }
    });
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let after = Duration::from_millis(200 + u64::from(nanos % 800));
    eprintln!("second kill after {} ms of load", after.as_millis());
    tokio::time::sleep(after).await;
    let mut server = server;
    server.child.kill().expect("SIGKILL");
    server.child.wait().expect("reaped");
    events.extend(load.await.expect("load task"));
    drop(server);

    // 3. Restart: every acknowledged event is in a signed checkpoint, once.
    let server = start_proc(&db, &key, &[]).await;
    let conn = rusqlite::Connection::open(&db).expect("open db");
    let stored: i64 = conn
        .query_row("SELECT count(*) FROM events", [], |r| r.get(0))
        .expect("count");
    drop(conn);
    let stored = stored as u64;
    assert!(
        stored >= events.len() as u64,
        "an acknowledged event is missing"
    );
    let out = cli_on(
        &db,
        &[
            "log-key",
            "--log-origin",
            "crash.test",
            "--project",
            "default",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let verifier =
        Ed25519Verifier::parse(String::from_utf8_lossy(&out.stdout).trim()).expect("vkey");
    let started = Instant::now();
    let note = loop {
        let r = client
            .get(format!("{}/log/checkpoint", server.base))
            .bearer_auth(&key)
            .send()
            .await
            .expect("request");
        if r.status() == StatusCode::OK {
            let note = r.bytes().await.expect("body").to_vec();
            let opened = open(&note, &[&verifier]).expect("signed");
            if Checkpoint::parse(&opened.text).expect("checkpoint").size == stored {
                break note;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no checkpoint of all {stored} events"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    eprintln!(
        "{} acknowledged, {stored} stored, checkpoint after {} ms",
        events.len(),
        started.elapsed().as_millis()
    );
    let mut indices = HashSet::new();
    for (id, entry) in &events {
        let r = client
            .get(format!(
                "{}/log/proof/inclusion/{id}?format=text",
                server.base
            ))
            .bearer_auth(&key)
            .send()
            .await
            .expect("request");
        assert_eq!(r.status(), StatusCode::OK, "event {id}");
        let proof = TlogProof::parse(&r.bytes().await.expect("body")).expect("tlog-proof");
        proof
            .verify(&leaf_hash(entry), &[&verifier])
            .expect("inclusion verifies");
        assert_eq!(proof.checkpoint, note);
        assert!(indices.insert(proof.index), "index {} twice", proof.index);
    }
}

/// Offline: an export carries the proof of its session's newest event (its last line), and
/// verifies with the log's verifier key alone; for an export without it, a tlog-proof file of
/// the session's last event does. A proof of another session, another project's key, a
/// session cut short or missing from the log are named failures.
#[tokio::test]
async fn an_export_is_proved_in_the_log_offline() {
    let app = spawn_app().await;
    let events = acked(&app.ingest(batch("s", 0, 30)).await);
    let other_project = app.new_key("other").await;
    let r = app
        .post_with(
            "/api/v1/events",
            &json!({"events": [memory("x", 0)]}),
            &other_project,
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let verifier = vkey(&app, "default");
    let vkey_text = verifier.to_vkey();
    checkpoint_of_size(&app, &app.key, 30, &verifier).await;
    // Session s-0's events are 0, 3, ..., 27; its last is event 27, seq 10.
    let export =
        String::from_utf8(get_bytes(&app, "/api/v1/sessions/s-0/export").await).expect("utf8");
    let lines: Vec<&str> = export.lines().collect();
    assert_eq!(lines.len(), 11, "ten events and the log proof line");
    let proof_line: Value = serde_json::from_str(lines[10]).expect("json");
    assert_eq!(proof_line["log_proof"]["seq"], 10);
    assert_eq!(proof_line["log_proof"]["project"], "default");
    assert_eq!(proof_line["log_proof"]["session_id"], "s-0");
    assert_eq!(proof_line["log_proof"]["event_id"], events[27].0.as_str());
    let dir = tempfile::tempdir().expect("dir");
    let write = |name: &str, lines: &[&str]| {
        let path = dir.path().join(name);
        std::fs::write(&path, format!("{}\n", lines.join("\n"))).expect("write");
        path
    };
    let export_file = write("s-0.jsonl", &lines);
    let bare_file = write("bare.jsonl", &lines[..10]);
    let proof_of = |i: usize| {
        let (app, id) = (&app, events[i].0.clone());
        async move { get_bytes(app, &format!("/log/proof/inclusion/{id}?format=text")).await }
    };
    let proof_file = dir.path().join("last.tlog-proof");
    std::fs::write(&proof_file, proof_of(27).await).expect("write");
    let other_file = dir.path().join("other.tlog-proof");
    std::fs::write(&other_file, proof_of(28).await).expect("write");
    let verify = |file: &std::path::Path, key: &str, proof: Option<&std::path::Path>| {
        let mut args = vec![
            "verify",
            "--file",
            file.to_str().expect("utf8"),
            "--log-key",
            key,
        ];
        if let Some(p) = proof {
            args.extend(["--log-proof", p.to_str().expect("utf8")]);
        }
        let out = app.cli(&args);
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    // The export's own proof line.
    let (ok, text) = verify(&export_file, &vkey_text, None);
    assert!(ok, "{text}");
    assert!(
        text.contains("OK default/s-0: seq 10 of 10 is leaf")
            && text.contains("(line 11)")
            && text.contains("1 of 1 intact sessions proved"),
        "{text}"
    );
    // Without --log-key the proof line is not checked, and verify says so.
    let out = app.cli(&["verify", "--file", export_file.to_str().expect("utf8")]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("1 log proof lines not checked"), "{text}");
    // A proof file for an export without the line.
    let (ok, text) = verify(&bare_file, &vkey_text, Some(&proof_file));
    assert!(ok, "{text}");
    assert!(
        text.contains("OK default/s-0: seq 10 of 10 is leaf")
            && text.contains("1 of 1 intact sessions proved"),
        "{text}"
    );
    let (ok, text) = verify(&bare_file, &vkey_text, None);
    assert!(!ok);
    assert!(
        text.contains("FAIL default/s-0: no log proof for this session"),
        "{text}"
    );
    // The vkey may come from a file too.
    let vkey_file = dir.path().join("log.vkey");
    std::fs::write(&vkey_file, format!("{vkey_text}\n")).expect("write");
    assert!(verify(&export_file, vkey_file.to_str().expect("utf8"), None).0);
    // Another session's proof proves nothing about this one.
    let (ok, text) = verify(&bare_file, &vkey_text, Some(&other_file));
    assert!(!ok);
    assert!(text.contains("FAIL default/s-0: no log proof"), "{text}");
    // Another project's log key does not vouch for this project's log.
    let other_key = vkey(&app, "other").to_vkey();
    let (ok, text) = verify(&export_file, &other_key, None);
    assert!(!ok);
    assert!(text.contains("FAIL default/s-0"), "{text}");
    // The independent Python verifier (standard library; the signature where the
    // cryptography package is installed) agrees.
    let python = |file: &std::path::Path, key: &str, proof: Option<&std::path::Path>| {
        let mut cmd = std::process::Command::new("python3");
        cmd.arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../scripts/verify_export.py"
        ))
        .arg(file)
        .args(["--log-key", key]);
        if let Some(p) = proof {
            cmd.args(["--log-proof", p.to_str().expect("utf8")]);
        }
        let out = cmd.output().expect("python3 runs");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    };
    let (ok, text) = python(&export_file, &vkey_text, None);
    assert!(
        ok && text.contains("OK default/s-0: seq 10 of 10 is leaf"),
        "{text}"
    );
    let (ok, text) = python(&bare_file, &vkey_text, Some(&proof_file));
    assert!(
        ok && text.contains("OK default/s-0: seq 10 of 10 is leaf"),
        "{text}"
    );
    let (ok, text) = python(&bare_file, &vkey_text, Some(&other_file));
    assert!(
        !ok && text.contains("FAIL default/s-0: no log proof"),
        "{text}"
    );
    let signatures_checked = std::process::Command::new("python3")
        .args(["-c", "import cryptography"])
        .status()
        .is_ok_and(|s| s.success());
    if signatures_checked {
        let (ok, text) = python(&export_file, &other_key, None);
        assert!(
            !ok && text.contains("not signed by the given log key"),
            "{text}"
        );
    } else {
        eprintln!("python3 has no cryptography package: its signature check is not tested");
    }
    // A proof of another log holding the same leaf (the leaf does not name the project) does
    // not displace a valid one given after it: each candidate is held to this project's log and
    // the log's key before one is chosen, as `agentledger verify` does.
    use base64::Engine as _;
    let forged = |origin: &str, signature: &str| {
        let root = agentledger_tlog::leaf_hash(&events[27].1);
        let text = format!(
            "c2sp.org/tlog-proof@v1\nindex 0\n\n{origin}\n1\n{}\n\n\u{2014} {origin} {signature}\n",
            base64::engine::general_purpose::STANDARD.encode(root.as_bytes()),
        );
        let path = dir.path().join(format!(
            "forged-{}-{}.tlog-proof",
            origin.len(),
            signature.len()
        ));
        std::fs::write(&path, text).expect("write");
        path
    };
    let some_signature = base64::engine::general_purpose::STANDARD.encode([7u8; 68]);
    let mut forgeries = vec![forged("elsewhere.example/other", &some_signature)];
    if signatures_checked {
        forgeries.push(forged("elsewhere.example/default", &some_signature));
        // Signed, it says, under the log's own name, with a line that does not decode.
        forgeries.push(forged("agentledger.test/default", "not*base64"));
    }
    for bad in &forgeries {
        let out = std::process::Command::new("python3")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../scripts/verify_export.py"
            ))
            .arg(&bare_file)
            .args(["--log-key", &vkey_text])
            .args(["--log-proof", bad.to_str().expect("utf8")])
            .args(["--log-proof", proof_file.to_str().expect("utf8")])
            .output()
            .expect("python3 runs");
        let text = String::from_utf8_lossy(&out.stdout);
        let errors = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success()
                && text.contains("OK default/s-0: seq 10 of 10 is leaf")
                && errors.is_empty(),
            "{}: {text}{errors}",
            bad.display()
        );
        let (ok, text) = verify(&bare_file, &vkey_text, Some(bad));
        assert!(!ok, "{text}");
    }
    // A proof whose index is not canonical decimal is refused, not read as another number.
    let text = std::fs::read_to_string(&proof_file).expect("read");
    let sloppy = dir.path().join("sloppy.tlog-proof");
    std::fs::write(&sloppy, text.replacen("\nindex ", "\nindex 0", 1)).expect("write");
    let (ok, text) = python(&bare_file, &vkey_text, Some(&sloppy));
    assert!(
        !ok && text.contains("FAIL --log-proof")
            && text.contains("not a decimal number without leading zeros")
            && !text.contains("Traceback"),
        "{text}"
    );

    // An export cut short (its last event dropped) is not what the log holds: the proof of
    // seq 10 says nothing of a session ending at seq 9, and both verifiers say so.
    let mut cut: Vec<&str> = lines[..9].to_vec();
    cut.push(lines[10]);
    let cut_file = write("cut.jsonl", &cut);
    let (ok, text) = verify(&cut_file, &vkey_text, None);
    assert!(!ok, "{text}");
    assert!(
        text.contains("FAIL default/s-0: no log proof holds"),
        "{text}"
    );
    let (ok, text) = python(&cut_file, &vkey_text, None);
    assert!(
        !ok && text.contains("FAIL default/s-0: no log proof"),
        "{text}"
    );
    let cut_bare = write("cut-bare.jsonl", &lines[..9]);
    let (ok, text) = verify(&cut_bare, &vkey_text, Some(&proof_file));
    assert!(!ok, "{text}");
    assert!(text.contains("FAIL default/s-0: no log proof"), "{text}");
}

/// The gap the log closes: someone with the database rewrites a session's last event and
/// recomputes its hash by the public spec. The chain alone still verifies; the log does not
/// hold that hash, so `verify --log-key` names the session.
#[tokio::test]
async fn a_session_rewritten_in_the_database_is_caught_by_the_log() {
    let app = spawn_app().await;
    let events = acked(
        &app.ingest(Value::Array((0..5).map(|i| memory("r", i)).collect()))
            .await,
    );
    let verifier = vkey(&app, "default");
    checkpoint_of_size(&app, &app.key, 5, &verifier).await;
    let export =
        String::from_utf8(get_bytes(&app, "/api/v1/sessions/r/export").await).expect("utf8");
    let line = export.lines().nth(4).expect("seq 5");
    let mut ev = serde_json::from_str::<agentledger_core::ExportLine>(line)
        .expect("export line")
        .into_event()
        .expect("event");
    ev.agent_id = "mallory".into();
    let forged = hex::encode(ev.compute_hash());
    tamper(
        &app.db,
        &format!(
            "UPDATE events SET agent_id = 'mallory', hash = x'{forged}' \
             WHERE seq = 5 AND session_ref = (SELECT rowid FROM sessions WHERE id = 'r')"
        ),
    );
    tamper(
        &app.db,
        &format!("UPDATE sessions SET head_hash = x'{forged}' WHERE id = 'r'"),
    );
    let v = app.get_json("/api/v1/sessions/r/verify").await;
    assert_eq!(v["valid"], true, "the chain alone cannot tell: {v}");

    let dir = tempfile::tempdir().expect("dir");
    let export_file = dir.path().join("r.jsonl");
    std::fs::write(
        &export_file,
        get_bytes(&app, "/api/v1/sessions/r/export").await,
    )
    .expect("write");
    let proof_file = dir.path().join("r.tlog-proof");
    let proof = get_bytes(
        &app,
        &format!("/log/proof/inclusion/{}?format=text", events[4].0),
    )
    .await;
    std::fs::write(&proof_file, proof).expect("write");
    let out = app.cli(&[
        "verify",
        "--file",
        export_file.to_str().expect("utf8"),
        "--log-key",
        &verifier.to_vkey(),
        "--log-proof",
        proof_file.to_str().expect("utf8"),
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("0 of 1 intact sessions proved")
            && text.contains("FAIL default/r: no log proof holds")
            && text.contains("proof does not lead to the claimed root hash"),
        "{text}"
    );
}
