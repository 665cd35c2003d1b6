//! `serve --witness-policy` end to end (issue 17, docs/transparency.md "Witnesses"): two real
//! `agentledger witness` servers, a quorum of both, and what a client sees at /log/. The
//! served checkpoint is checked with crates/tlog's C2SP tlog-policy verifier alone.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;

use agentledger::conn::ConnLimits;
use agentledger::witness::{CosignAlgorithm, RunningWitness, WitnessConfig, start};
use agentledger_tlog::note::{Ed25519Signer, sign};
use agentledger_tlog::policy::Policy;
use agentledger_tlog::proof::TlogProof;
use agentledger_tlog::witness::AddCheckpointRequest;
use agentledger_tlog::{Checkpoint, leaf_hash};

use crate::helpers::*;
use crate::log::{acked, batch};

const ORIGIN: &str = "agentledger.test/default";

/// A log key file made before the server starts (so the witnesses can be told its key), as
/// the server would make it: signer-key text, mode 0600.
fn write_log_key(path: &Path, seed: u8) -> Ed25519Signer {
    let signer = Ed25519Signer::from_seed("agentledger-log-root", [seed; 32]).expect("key");
    std::fs::write(path, format!("{}\n", signer.to_skey())).expect("write key");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    }
    log_signer(seed, ORIGIN)
}

/// The key the server signs `origin`'s log with, given its key file's seed: derived as
/// docs/transparency.md "Origin and key" specifies (written out here, not taken from the server).
fn log_signer(seed: u8, origin: &str) -> Ed25519Signer {
    Ed25519Signer::from_seed("agentledger-log-root", [seed; 32])
        .expect("key")
        .derive("agentledger log key v1\n", origin)
        .expect("derived")
}

struct Witness {
    running: Option<RunningWitness>,
    addr: SocketAddr,
    cfg: WitnessConfig,
}

impl Witness {
    async fn start(dir: &Path, name: &str, log_vkey: &str) -> Witness {
        Witness::start_with(dir, name, log_vkey, Default::default()).await
    }

    async fn start_with(
        dir: &Path,
        name: &str,
        log_vkey: &str,
        algorithm: CosignAlgorithm,
    ) -> Witness {
        let cfg = WitnessConfig {
            key: dir.join(format!("{name}.key")),
            name: format!("{name}.example"),
            state: dir.join(format!("{name}.db")),
            logs: vec![log_vkey.to_owned()],
            limits: ConnLimits::default(),
            algorithm: Some(algorithm),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let running = start(cfg.clone(), listener).await.expect("witness starts");
        Witness {
            running: Some(running),
            addr,
            cfg,
        }
    }

    fn vkey(&self) -> String {
        self.running.as_ref().expect("running").verifier.to_vkey()
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    async fn stop(&mut self) {
        if let Some(w) = self.running.take() {
            w.stop().await;
        }
    }

    /// Starts again on the same address, key and state.
    async fn restart(&mut self) {
        let listener = tokio::net::TcpListener::bind(self.addr)
            .await
            .expect("bind the same address");
        self.running = Some(start(self.cfg.clone(), listener).await.expect("restart"));
    }
}

struct Setup {
    dir: tempfile::TempDir,
    log_key_file: PathBuf,
    policy_file: PathBuf,
    policy: Policy,
    log: Ed25519Signer,
    witnesses: Vec<Witness>,
}

/// A log key, two witnesses that trust it, and a policy requiring both.
async fn setup() -> Setup {
    setup_with(42, "w2", CosignAlgorithm::Ed25519).await
}

/// [`setup`] with the log key drawn from `seed` and the second witness named
/// `second`, cosigning with `algorithm` (the first, `w1`, with Ed25519).
async fn setup_with(seed: u8, second: &str, algorithm: CosignAlgorithm) -> Setup {
    let dir = tempfile::tempdir().expect("tempdir");
    let log_key_file = dir.path().join("log.key");
    let log = write_log_key(&log_key_file, seed);
    let log_vkey = log.verifier().to_vkey();
    let w1 = Witness::start(dir.path(), "w1", &log_vkey).await;
    let w2 = Witness::start_with(dir.path(), second, &log_vkey, algorithm).await;
    let text = format!(
        "# the witnesses of agentledger.test's logs\n\
         log {log_vkey}\n\
         witness w1 {} {}\n\
         witness {second} {} {}\n\
         group both all w1 {second}\n\
         quorum both\n",
        w1.vkey(),
        w1.url(),
        w2.vkey(),
        w2.url()
    );
    let policy_file = dir.path().join("witnesses.policy");
    std::fs::write(&policy_file, &text).expect("write policy");
    let policy = Policy::parse(text.as_bytes()).expect("policy");
    Setup {
        dir,
        log_key_file,
        policy_file,
        policy,
        log,
        witnesses: vec![w1, w2],
    }
}

async fn serve(s: &Setup) -> TestApp {
    serve_on(s, None).await
}

/// With `db`, on that database (a PostgreSQL URL) instead of the test's SQLite file.
async fn serve_on(s: &Setup, db: Option<String>) -> TestApp {
    let (key, policy) = (s.log_key_file.clone(), s.policy_file.clone());
    spawn_app_with(move |cfg| {
        if let Some(db) = db {
            cfg.db = db;
        }
        cfg.log.key = key;
        cfg.log.witness_policy = Some(policy);
        cfg.log.witness_timeout = Duration::from_secs(2);
    })
    .await
}

/// Polls /log/checkpoint until it serves a checkpoint of `size` leaves; checks it with the
/// C2SP policy (the log's signature and both witnesses' cosignatures).
async fn witnessed_checkpoint(app: &TestApp, policy: &Policy, size: u64) -> Vec<u8> {
    let started = Instant::now();
    loop {
        let r = app.get("/log/checkpoint").await;
        if r.status() == StatusCode::OK {
            let note = r.bytes().await.expect("body").to_vec();
            let verified = policy
                .verify_checkpoint(&note)
                .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&note)));
            assert!(verified.checkpoint.size <= size);
            if verified.checkpoint.size == size {
                assert_eq!(verified.witnesses, ["w1", "w2"]);
                eprintln!(
                    "witnessed checkpoint of {size} after {} ms",
                    started.elapsed().as_millis()
                );
                return note;
            }
        } else {
            assert_eq!(r.status(), StatusCode::NOT_FOUND);
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no witnessed checkpoint of {size} leaves after 60 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn witness_states(app: &TestApp) -> Vec<Value> {
    let r = app.get("/log/witnesses").await;
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["policy"], true);
    assert_eq!(body["quorum"], "both");
    body["witnesses"].as_array().expect("witnesses").clone()
}

/// Waits until `check` holds for /log/witnesses' answer.
async fn until_witnesses(app: &TestApp, what: &str, check: impl Fn(&[Value]) -> bool) {
    let started = Instant::now();
    loop {
        let states = witness_states(app).await;
        if check(&states) {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{what}: not after 60 s: {states:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn two_witnesses_cosign_and_only_a_quorum_checkpoint_is_served() {
    let mut s = setup().await;
    let app = serve(&s).await;
    let events = acked(&app.ingest(batch("w", 0, 100)).await);
    let note = witnessed_checkpoint(&app, &s.policy, 100).await;

    // An inclusion proof leads to the same witnessed checkpoint: a client holding the policy
    // checks the event, the log's signature and the quorum.
    let (id, entry) = &events[57];
    let r = app
        .get(&format!("/log/proof/inclusion/{id}?format=text"))
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let proof = TlogProof::parse(&r.bytes().await.expect("body")).expect("tlog-proof");
    assert_eq!(proof.checkpoint, note);
    let verified = s
        .policy
        .verify_checkpoint(&proof.checkpoint)
        .expect("quorum");
    assert_eq!(verified.witnesses, ["w1", "w2"]);
    let (cp, _) = proof
        .verify(&leaf_hash(entry), &[&s.log.verifier()])
        .expect("included");
    assert_eq!(cp.size, 100);
    let states = witness_states(&app).await;
    assert_eq!(states.len(), 2);
    for w in &states {
        assert_eq!(w["cosigned_size"], 100, "{w}");
        assert_eq!(w["failures"], 0, "{w}");
    }

    // One witness down: the log goes on signing, w1 cosigns the bigger tree, but the served
    // checkpoint stays the last one both cosigned.
    s.witnesses[1].stop().await;
    app.ingest(batch("w", 100, 50)).await;
    until_witnesses(&app, "w1 cosigns 150 and w2 fails", |w| {
        w[0]["cosigned_size"] == 150 && w[1]["failures"].as_u64() >= Some(1)
    })
    .await;
    let states = witness_states(&app).await;
    assert_eq!(states[1]["cosigned_size"], 100);
    assert!(
        states[1]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("unreachable")),
        "{states:?}"
    );
    let r = app.get("/log/checkpoint").await;
    let served = r.bytes().await.expect("body");
    let verified = s.policy.verify_checkpoint(&served).expect("quorum");
    assert_eq!(verified.checkpoint.size, 100, "no quorum for 150 yet");

    // Back up (same key, same state): it gets the new checkpoint with a proof from 100.
    s.witnesses[1].restart().await;
    witnessed_checkpoint(&app, &s.policy, 150).await;
    until_witnesses(&app, "w2 recovered", |w| {
        w[1]["cosigned_size"] == 150 && w[1]["failures"] == 0
    })
    .await;

    // The export carries the witnessed checkpoint: verify checks the chain, the inclusion, the
    // log's signature and the quorum offline, and names what fails.
    let export = app.get("/api/v1/sessions/w-1/export").await;
    assert_eq!(export.status(), StatusCode::OK);
    let export_file = s.dir.path().join("w-1.jsonl");
    std::fs::write(&export_file, export.bytes().await.expect("body")).expect("write");
    let log_vkey = s.log.verifier().to_vkey();
    let verify = |policy: &Path| {
        let out = app.cli(&[
            "verify",
            "--file",
            export_file.to_str().expect("utf8"),
            "--log-key",
            &log_vkey,
            "--witness-policy",
            policy.to_str().expect("utf8"),
        ]);
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (ok, text) = verify(&s.policy_file);
    assert!(ok, "{text}");
    assert!(
        text.contains("OK default/w-1: seq 50 of 50 is leaf")
            && text.contains("cosigned by w1, w2"),
        "{text}"
    );
    // A policy that also wants a witness that never saw this log: the quorum is not met.
    let third = agentledger_tlog::cosignature::CosignatureSigner::from_seed("w3.example", [3; 32])
        .expect("key")
        .verifier()
        .to_vkey();
    let strict = s.dir.path().join("strict.policy");
    std::fs::write(
        &strict,
        format!(
            "witness w1 {}\nwitness w2 {}\nwitness w3 {third}\ngroup all3 all w1 w2 w3\nquorum all3\n",
            s.witnesses[0].vkey(),
            s.witnesses[1].vkey()
        ),
    )
    .expect("write");
    let (ok, text) = verify(&strict);
    assert!(!ok, "{text}");
    assert!(
        text.contains("FAIL default/w-1") && text.contains("do not meet the quorum"),
        "{text}"
    );
    python_checks_the_quorum(&export_file, &log_vkey, &s.policy_file, &strict);

    // A monitor holding the policy follows the witnessed log; then someone with the database
    // rewrites session w-1's last event and re-chains it by the public spec: the monitor and
    // the offline verifier of a fresh export both name the session.
    let state = s.dir.path().join("monitor.db");
    let monitor = |policy: PathBuf| {
        let (db, base, key, log_vkey, state) = (
            app.db.clone(),
            app.base.clone(),
            app.key.clone(),
            log_vkey.clone(),
            state.clone(),
        );
        tokio::task::spawn_blocking(move || {
            let out = cli_on(
                &db,
                &[
                    "log",
                    "monitor",
                    "--once",
                    "--url",
                    &base,
                    "--key",
                    &key,
                    "--log-key",
                    &log_vkey,
                    "--state",
                    state.to_str().expect("utf8"),
                    "--witness-policy",
                    policy.to_str().expect("utf8"),
                ],
            );
            (
                out.status.code(),
                format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ),
            )
        })
    };
    let (code, text) = monitor(s.policy_file.clone()).await.expect("monitor");
    assert_eq!(code, Some(0), "{text}");
    let exported = std::fs::read_to_string(&export_file).expect("read");
    let last = exported
        .lines()
        .find(|l| l.contains("\"seq\":50,"))
        .expect("seq 50");
    let mut ev = serde_json::from_str::<agentledger_core::ExportLine>(last)
        .expect("export line")
        .into_event()
        .expect("event");
    ev.agent_id = "mallory".into();
    let forged = hex::encode(ev.compute_hash());
    tamper(
        &app.db,
        &format!(
            "UPDATE events SET agent_id = 'mallory', hash = x'{forged}' \
             WHERE seq = 50 AND session_ref = (SELECT rowid FROM sessions WHERE id = 'w-1')"
        ),
    );
    tamper(
        &app.db,
        &format!("UPDATE sessions SET head_hash = x'{forged}' WHERE id = 'w-1'"),
    );
    let (code, text) = monitor(s.policy_file.clone()).await.expect("monitor");
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("FAIL") && text.contains("w-1"), "{text}");
    let export = app.get("/api/v1/sessions/w-1/export").await;
    std::fs::write(&export_file, export.bytes().await.expect("body")).expect("write");
    let (ok, text) = verify(&s.policy_file);
    assert!(!ok, "{text}");
    assert!(
        text.contains("FAIL default/w-1: no log proof holds"),
        "{text}"
    );
    for w in &mut s.witnesses {
        w.stop().await;
    }
    drop(s.dir);
}

#[tokio::test]
async fn witnesses_refuse_a_forked_log_and_its_checkpoints_are_not_served() {
    let mut s = setup().await;
    let app = serve(&s).await;
    app.ingest(batch("f", 0, 40)).await;
    witnessed_checkpoint(&app, &s.policy, 40).await;

    // Whoever holds the log's key signs another tree of the same size: both witnesses refuse.
    let fork = Checkpoint::new(ORIGIN, 40, leaf_hash(b"another history"))
        .expect("checkpoint")
        .to_text();
    let forked_note = sign(&fork, &[&s.log]).expect("sign");
    for w in &s.witnesses {
        let r = reqwest::Client::new()
            .post(format!("{}/add-checkpoint", w.url()))
            .body(
                AddCheckpointRequest {
                    old_size: 40,
                    consistency_proof: vec![],
                    checkpoint: forked_note.clone(),
                }
                .to_bytes(),
            )
            .send()
            .await
            .expect("post");
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    }

    // A second server with the same key and origin but another database (history rewritten
    // from scratch): the witnesses refuse its checkpoints, so it never serves one.
    let forked = serve(&s).await;
    forked.ingest(batch("g", 0, 60)).await;
    until_witnesses(&forked, "both witnesses refuse the fork", |w| {
        w.iter().all(|w| {
            w["failures"].as_u64() >= Some(1)
                && w["last_error"].as_str().is_some_and(|e| e.contains("422"))
        })
    })
    .await;
    let r = forked.get("/log/checkpoint").await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let body: Value = r.json().await.expect("json");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("quorum")),
        "{body}"
    );
    // The honest log goes on being witnessed.
    app.ingest(batch("f", 40, 10)).await;
    witnessed_checkpoint(&app, &s.policy, 50).await;
    for w in &mut s.witnesses {
        w.stop().await;
    }
}

#[tokio::test]
async fn a_witness_policy_that_cannot_be_honoured_stops_the_start() {
    let s = setup().await;
    let log_vkey = s.log.verifier().to_vkey();
    let w1 = s.witnesses[0].vkey();
    let cases = [
        (format!("witness w1 {w1}\nquorum w1\n"), "has no URL"),
        (
            format!("witness w1 {w1} ftp://witness.example\nquorum w1\n"),
            "not an http:// or https:// URL",
        ),
        (
            format!(
                "log {}\nwitness w1 {w1} http://127.0.0.1:1\nquorum w1\n",
                Ed25519Signer::from_seed(ORIGIN, [9; 32])
                    .expect("key")
                    .verifier()
                    .to_vkey()
            ),
            "does not carry this server's key",
        ),
        (format!("log {log_vkey}\nquorum w9\n"), "line 2"),
    ];
    for (i, (text, want)) in cases.iter().enumerate() {
        let path = s.dir.path().join(format!("bad-{i}.policy"));
        std::fs::write(&path, text).expect("write");
        let mut cfg = agentledger::ServeConfig::for_tests(s.dir.path().join(format!("bad-{i}.db")));
        cfg.log.key = s.log_key_file.clone();
        cfg.log.witness_policy = Some(path);
        let err = match agentledger::Application::build(cfg).await {
            Ok(_) => panic!("case {i} started"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains(want), "case {i}: {err}");
        assert!(err.contains("--witness-policy"), "case {i}: {err}");
    }
}

/// One policy names two projects' logs: each log has a key of its own (C2SP tlog-policy refuses
/// two log lines with one public key), so the server starts with it, and `log-key` prints the
/// key each log line carries. With a key file of the older kind (one key for every log), the
/// same policy cannot be written at all.
#[tokio::test]
async fn a_policy_may_name_several_projects_logs() {
    let s = setup().await;
    let other = log_signer(42, "agentledger.test/other");
    assert_ne!(other.verifier().public_key(), s.log.verifier().public_key());
    let w1 = s.witnesses[0].vkey();
    let text = format!(
        "log {}\nlog {}\nwitness w1 {w1} http://127.0.0.1:1\nquorum w1\n",
        s.log.verifier().to_vkey(),
        other.verifier().to_vkey()
    );
    Policy::parse(text.as_bytes()).expect("a valid tlog-policy");
    let path = s.dir.path().join("two-logs.policy");
    std::fs::write(&path, &text).expect("write");
    let db = s.dir.path().join("two-logs.db");
    let mut cfg = agentledger::ServeConfig::for_tests(db.clone());
    cfg.log.key = s.log_key_file.clone();
    cfg.log.witness_policy = Some(path);
    if let Err(e) = agentledger::Application::build(cfg).await {
        panic!("a policy naming two projects' logs was refused: {e}");
    }
    let out = cli_on(
        &db,
        &[
            "log-key",
            "--log-key",
            s.log_key_file.to_str().expect("utf8"),
            "--log-origin",
            "agentledger.test",
            "--project",
            "default",
            "--project",
            "other",
        ],
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8(out.stdout).expect("utf8"),
        format!(
            "{}\n{}\n",
            s.log.verifier().to_vkey(),
            other.verifier().to_vkey()
        )
    );

    // One key renamed per log, as older key files sign: not a policy anyone can write.
    let shared = Ed25519Signer::from_seed("agentledger-log", [42; 32]).expect("key");
    let text = format!(
        "log {}\nlog {}\nwitness w1 {w1} http://127.0.0.1:1\nquorum w1\n",
        shared
            .renamed(ORIGIN)
            .expect("renamed")
            .verifier()
            .to_vkey(),
        shared
            .renamed("agentledger.test/other")
            .expect("renamed")
            .verifier()
            .to_vkey()
    );
    assert!(Policy::parse(text.as_bytes()).is_err());
}

/// The same on PostgreSQL: cosignatures kept there, the quorum checkpoint served, and an
/// export's proof line verified with the policy.
#[tokio::test]
async fn witnessed_checkpoints_on_postgresql() {
    let Some(pg) = crate::postgres::PgDb::new() else {
        return;
    };
    let mut s = setup().await;
    let app = serve_on(&s, Some(pg.url.clone())).await;
    app.ingest(batch("p", 0, 30)).await;
    witnessed_checkpoint(&app, &s.policy, 30).await;
    let export = app.get("/api/v1/sessions/p-2/export").await;
    assert_eq!(export.status(), StatusCode::OK);
    let export_file = s.dir.path().join("p-2.jsonl");
    std::fs::write(&export_file, export.bytes().await.expect("body")).expect("write");
    let out = app.cli(&[
        "verify",
        "--file",
        export_file.to_str().expect("utf8"),
        "--log-key",
        &s.log.verifier().to_vkey(),
        "--witness-policy",
        s.policy_file.to_str().expect("utf8"),
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("OK default/p-2: seq 10 of 10") && text.contains("cosigned by w1, w2"),
        "{text}"
    );
    for w in &mut s.witnesses {
        w.stop().await;
    }
}

/// The independent Python verifier (scripts/verify_export.py) checks the same export against
/// the same policies: the quorum met by both witnesses, a stricter policy not met, and a
/// cosignature altered by one bit refused (a listed witness's cosignature must verify). It
/// needs the cryptography package for Ed25519; without it, it refuses the policy rather than
/// pass unchecked.
fn python_checks_the_quorum(export: &Path, log_vkey: &str, policy: &Path, strict: &Path) {
    let python = |file: &Path, policy: &Path| {
        let out = std::process::Command::new("python3")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../scripts/verify_export.py"
            ))
            .arg(file)
            .args(["--log-key", log_vkey, "--witness-policy"])
            .arg(policy)
            .output()
            .expect("python3 runs");
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    // A policy that does not parse, or one without the log key it applies to: refused, naming
    // what is wrong (exit 2), before any check.
    let bad = policy.with_extension("bad");
    std::fs::write(&bad, "witness w1 not-a-key\nquorum w1\n").expect("write");
    let (ok, text) = python(export, &bad);
    assert!(!ok && text.contains("line 1"), "{text}");
    let out = std::process::Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../scripts/verify_export.py"
        ))
        .arg(export)
        .arg("--witness-policy")
        .arg(policy)
        .output()
        .expect("python3 runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs --log-key"));
    let has_library = std::process::Command::new("python3")
        .args(["-c", "import cryptography"])
        .status()
        .is_ok_and(|s| s.success());
    let (ok, text) = python(export, policy);
    if !has_library {
        assert!(
            !ok && text.contains("the cryptography package is not installed"),
            "{text}"
        );
        eprintln!("python3 has no cryptography package: its quorum check is not tested");
        return;
    }
    assert!(
        ok && text.contains("OK default/w-1: seq 50 of 50 is leaf")
            && text.contains("cosigned by w1, w2"),
        "{text}"
    );
    let (ok, text) = python(export, strict);
    assert!(
        !ok && text.contains("FAIL default/w-1") && text.contains("do not meet the quorum"),
        "{text}"
    );
    // One bit of w2's cosignature flipped (its last signature line in the proof).
    let exported = std::fs::read_to_string(export).expect("read");
    let forged: Vec<String> = exported
        .lines()
        .map(|line| {
            if !line.starts_with(r#"{"log_proof""#) {
                return line.to_owned();
            }
            let mut v: serde_json::Value = serde_json::from_str(line).expect("proof line");
            let proof = v["log_proof"]["tlog_proof"]
                .as_str()
                .expect("text")
                .to_owned();
            let mut lines: Vec<String> = proof.split('\n').map(str::to_owned).collect();
            let at = lines
                .iter()
                .rposition(|l| l.starts_with("\u{2014} w2"))
                .expect("w2 cosigned");
            let (who, b64) = lines[at].rsplit_once(' ').expect("signature line");
            use base64::Engine as _;
            let engine = base64::engine::general_purpose::STANDARD;
            let mut raw = engine.decode(b64).expect("base64");
            let last = raw.len() - 1;
            raw[last] ^= 1;
            lines[at] = format!("{who} {}", engine.encode(raw));
            v["log_proof"]["tlog_proof"] = serde_json::Value::String(lines.join("\n"));
            v.to_string()
        })
        .collect();
    let forged_file = export.with_extension("forged.jsonl");
    std::fs::write(&forged_file, forged.join("\n") + "\n").expect("write");
    let (ok, text) = python(&forged_file, policy);
    assert!(
        !ok && text.contains("the cosignature of witness w2 does not verify"),
        "{text}"
    );
}

/// scripts/verify_export.py checks an ML-DSA-44 witness's cosignature (tlog-cosignature type
/// 0x06) as crates/tlog does, on the checkpoint cosigned by an independent implementation
/// (crates/tlog/tests/data), where its `cryptography` package has ML-DSA.
#[test]
fn verify_export_py_checks_an_ml_dsa_44_cosignature() {
    let has_ml_dsa = std::process::Command::new("python3")
        .args([
            "-c",
            "from cryptography.hazmat.primitives.asymmetric.mldsa import MLDSA44PublicKey",
        ])
        .status()
        .is_ok_and(|s| s.success());
    if !has_ml_dsa {
        eprintln!("python3's cryptography package has no ML-DSA: not tested");
        return;
    }
    let script = r#"
import sys
sys.path.insert(0, sys.argv[1])
import verify_export as v
data = sys.argv[2]
vkeys = open(data + "/ml-dsa-44.vkeys").read().split("\n")
policy = v.parse_witness_policy(("log %s\nwitness pq %s\nquorum pq\n" % (vkeys[0], vkeys[1])).encode())
note = open(data + "/ml-dsa-44-cosigned.note", "rb").read()
cut = note.rfind(b"\n\n")
text, sigs = note[: cut + 1], [s for s in note[cut + 2 :].decode().split("\n") if s]
print("cosigned by", v.check_quorum(policy, text, sigs))
try:
    v.check_quorum(policy, text.replace(b"\n20852163\n", b"\n20852164\n"), sigs)
    print("tampered: accepted")
except ValueError as e:
    print("tampered:", e)
"#;
    let out = std::process::Command::new("python3")
        .args(["-c", script])
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts"))
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/../tlog/tests/data"))
        .output()
        .expect("python3 runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("cosigned by ['pq']"), "{text}");
    assert!(
        text.contains("tampered: the cosignature of witness pq does not verify"),
        "{text}"
    );
}

/// A quorum of an Ed25519 witness and an ML-DSA-44 one (`agentledger witness --algorithm
/// ml-dsa-44`, tlog-cosignature type 0x06): the server counts both cosignatures, an export's
/// proof line is checked offline with the policy by `agentledger verify` and (where its
/// `cryptography` package has ML-DSA) by scripts/verify_export.py, and the ML-DSA witness's
/// monitoring route serves its cosigned checkpoint.
#[tokio::test]
async fn a_quorum_with_an_ml_dsa_44_witness() {
    let s = setup_with(43, "pq", CosignAlgorithm::MlDsa44).await;
    let (dir, log, policy, policy_file) = (&s.dir, &s.log, &s.policy, &s.policy_file);
    let (log_vkey, pq) = (log.verifier().to_vkey(), &s.witnesses[1]);
    assert!(pq.vkey().starts_with("pq.example+"));
    assert_eq!(
        agentledger_tlog::cosignature::CosignatureVerifier::parse(&pq.vkey())
            .expect("vkey")
            .alg(),
        agentledger_tlog::note::ALG_COSIGNATURE_ML_DSA_44
    );
    let app = serve(&s).await;
    app.ingest(batch("q", 0, 30)).await;
    let started = Instant::now();
    let served = loop {
        let r = app.get("/log/checkpoint").await;
        if r.status() == StatusCode::OK {
            let note = r.bytes().await.expect("body").to_vec();
            let verified = policy.verify_checkpoint(&note).expect("quorum");
            if verified.checkpoint.size == 30 {
                assert_eq!(verified.witnesses, ["w1", "pq"]);
                break note;
            }
        }
        if started.elapsed() > Duration::from_secs(60) {
            let states = app.get("/log/witnesses").await.text().await.expect("body");
            panic!("no checkpoint of 30 cosigned by both: {states}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(String::from_utf8_lossy(&served).contains("\u{2014} pq.example "));

    // Offline: the export's proof line, the log's key and the quorum.
    let export = app.get("/api/v1/sessions/q-1/export").await;
    assert_eq!(export.status(), StatusCode::OK);
    let export_file = dir.path().join("q-1.jsonl");
    std::fs::write(&export_file, export.bytes().await.expect("body")).expect("write");
    let out = app.cli(&[
        "verify",
        "--file",
        export_file.to_str().expect("utf8"),
        "--log-key",
        &log_vkey,
        "--witness-policy",
        policy_file.to_str().expect("utf8"),
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("cosigned by w1, pq"), "{text}");
    let has_ml_dsa = std::process::Command::new("python3")
        .args([
            "-c",
            "from cryptography.hazmat.primitives.asymmetric.mldsa import MLDSA44PublicKey",
        ])
        .status()
        .is_ok_and(|s| s.success());
    if has_ml_dsa {
        let out = std::process::Command::new("python3")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../scripts/verify_export.py"
            ))
            .arg(&export_file)
            .args(["--log-key", &log_vkey])
            .args(["--witness-policy", policy_file.to_str().expect("utf8")])
            .output()
            .expect("python3 runs");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && text.contains("cosigned by w1, pq"),
            "{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    } else {
        eprintln!("python3's cryptography package has no ML-DSA: the Python check is not tested");
    }

    // The ML-DSA witness's monitoring route: the checkpoint it cosigned, its cosignature in it.
    let hash = hex::encode(agentledger_core::chain::sha256(b"agentledger.test/default"));
    let r = reqwest::get(format!("{}/{hash}/checkpoint", pq.url()))
        .await
        .expect("get");
    assert_eq!(r.status(), StatusCode::OK);
    let note = r.bytes().await.expect("body");
    let pq_key =
        agentledger_tlog::cosignature::CosignatureVerifier::parse(&pq.vkey()).expect("vkey");
    let opened = agentledger_tlog::note::open(
        &note,
        &[
            &log.verifier() as &dyn agentledger_tlog::note::NoteVerifier,
            &pq_key,
        ],
    )
    .expect("opens");
    assert_eq!(opened.verified.len(), 2);
}
