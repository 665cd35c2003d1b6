//! Crash safety: many clients ingest through several dialects while the real
//! binary is killed (SIGKILL) at random moments, round after round; or is
//! stopped with SIGTERM under the same load. The clients keep a ledger of
//! every acknowledged event; after each stop the database must hold every one
//! of them, unchanged, in gap-free chains that verify, and take new appends
//! on the stored heads.
//!
//! CI runs a small scale. The large run is one command (see docs/reliability.md):
//! `AGENTLEDGER_CRASH_ROUNDS=50 AGENTLEDGER_CRASH_CLIENTS=32 cargo test --release
//! -p agentledger --test api crash::sigkill -- --nocapture`

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::{bin, cli_on};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A small deterministic generator (the seed is printed, so a failing round
/// can be replayed with AGENTLEDGER_CRASH_SEED).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn seed() -> u64 {
    std::env::var("AGENTLEDGER_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        })
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

struct Server {
    child: Child,
    base: String,
}

async fn start(db: &Path, key: &str) -> Server {
    start_with(db, key, &[]).await
}

async fn start_with(db: &Path, key: &str, extra: &[&str]) -> Server {
    let port = free_port();
    let child = Command::new(bin())
        .arg("serve")
        .args(extra)
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--db",
            db.to_str().expect("utf-8 path"),
            "--log",
            "warn",
        ])
        .env("AGENTLEDGER_BOOTSTRAP_KEY", key)
        // The same secret is the operator token, for /metrics.
        .env("AGENTLEDGER_OPERATOR_TOKEN", key)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn server");
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if client.get(format!("{base}/healthz")).send().await.is_ok() {
            break;
        }
        assert!(Instant::now() < deadline, "server did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Server { child, base }
}

/// One event as the client sent it: where it went and the marker in its payload.
#[derive(Clone, Debug)]
struct Sent {
    session: String,
    marker: String,
    /// Native events only: the exact payload bytes' SHA-256, and the ack's id and hash.
    native: Option<NativeAck>,
}

#[derive(Clone, Debug)]
struct NativeAck {
    payload_sha256: String,
    id: String,
    hash: String,
}

/// The clients' ledger.
#[derive(Default, Clone)]
struct Ledger {
    /// Acknowledged (2xx) events: they must all survive.
    acked: Vec<Sent>,
    /// Requests answered with an error status: none of their events may be stored.
    refused: Vec<Vec<Sent>>,
    /// Requests with no answer (the server died): all of their events or none.
    unknown: Vec<Vec<Sent>>,
    statuses: BTreeMap<u16, u64>,
    /// Acknowledged requests per dialect.
    dialects: BTreeMap<&'static str, u64>,
}

const DIALECTS: [&str; 4] = ["native", "agentlens", "realm", "secureagentics"];

/// Build one request of `n` events for `dialect`; returns (path, body, events).
fn request(
    dialect: &str,
    client: usize,
    counter: &mut u64,
    rng: &mut Rng,
    sessions: u64,
) -> (String, String, Vec<Sent>) {
    let session = format!("crash-{}", rng.below(sessions));
    let mut mark = || {
        *counter += 1;
        format!("c{client}-{counter}")
    };
    match dialect {
        "native" => {
            let n = 1 + rng.below(20) as usize;
            let mut sent = Vec::new();
            let mut items = Vec::new();
            for _ in 0..n {
                let s = format!("crash-{}", rng.below(sessions));
                let m = mark();
                let payload = format!(
                    r#"{{"toolName":"search","callId":"{m}","marker":"{m}","arguments":{{"q":"crash test {m}"}}}}"#
                );
                items.push(format!(
                    r#"{{"session_id":"{s}","agent_id":"crash-agent","kind":"tool_call","payload":{payload}}}"#
                ));
                sent.push(Sent {
                    session: s,
                    marker: m,
                    native: Some(NativeAck {
                        payload_sha256: hex::encode(agentledger_core::chain::sha256(
                            payload.as_bytes(),
                        )),
                        id: String::new(),
                        hash: String::new(),
                    }),
                });
            }
            let body = format!(r#"{{"events":[{}]}}"#, items.join(","));
            ("/api/v1/events".into(), body, sent)
        }
        "agentlens" => {
            let n = 1 + rng.below(10) as usize;
            let mut sent = Vec::new();
            let mut items = Vec::new();
            for _ in 0..n {
                let m = mark();
                items.push(json!({"sessionId": session, "agentId": "crash-agent",
                    "eventType": "custom", "payload": {"type": "note", "data": {"marker": m}}}));
                sent.push(Sent {
                    session: session.clone(),
                    marker: m,
                    native: None,
                });
            }
            (
                "/api/events".into(),
                json!({ "events": items }).to_string(),
                sent,
            )
        }
        "realm" => {
            let m = mark();
            let body = json!({"type": "tool_call", "data": {"tool_name": "lookup",
                "tool_input": {"marker": m}, "status": "success"}});
            (
                format!("/v1/sessions/{session}/events"),
                body.to_string(),
                vec![Sent {
                    session,
                    marker: m,
                    native: None,
                }],
            )
        }
        _ => {
            let m = mark();
            let body = json!({"type": "prompt", "payload": {"input": format!("summarise {m}"),
                "marker": m}, "trace_id": session});
            (
                "/v1/agents/agt_crash/events".into(),
                body.to_string(),
                vec![Sent {
                    session,
                    marker: m,
                    native: None,
                }],
            )
        }
    }
}

/// Ingest until the server stops answering; every outcome goes to the ledger.
async fn client_loop(
    base: String,
    key: String,
    client: usize,
    seed: u64,
    sessions: u64,
    ledger: Arc<Mutex<Ledger>>,
    counter_start: u64,
) -> u64 {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");
    let mut rng = Rng(seed);
    let mut counter = counter_start;
    loop {
        let dialect = DIALECTS[rng.below(DIALECTS.len() as u64) as usize];
        let (path, body, sent) = request(dialect, client, &mut counter, &mut rng, sessions);
        let r = http
            .post(format!("{base}{path}"))
            .bearer_auth(&key)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await;
        let r = match r {
            Ok(r) => r,
            Err(_) => {
                ledger.lock().expect("ledger").unknown.push(sent);
                return counter;
            }
        };
        let status = r.status();
        let retry_after = r.headers().contains_key("retry-after");
        let body = r.bytes().await;
        let backoff = {
            let mut l = ledger.lock().expect("ledger");
            *l.statuses.entry(status.as_u16()).or_default() += 1;
            match body {
                Err(_) => {
                    l.unknown.push(sent);
                    return counter;
                }
                Ok(_) if !status.is_success() => {
                    assert!(
                        status == reqwest::StatusCode::SERVICE_UNAVAILABLE
                            || status == reqwest::StatusCode::TOO_MANY_REQUESTS,
                        "{dialect} {path}: unexpected {status}"
                    );
                    assert!(retry_after, "{status} without Retry-After");
                    l.refused.push(sent);
                    // Shutting down or back-pressure: either way, slow down.
                    true
                }
                Ok(bytes) => {
                    let mut sent = sent;
                    if dialect == "native" {
                        let v: Value = serde_json::from_slice(&bytes).expect("ack is JSON");
                        let evs = v["events"].as_array().expect("ack lists events");
                        assert_eq!(evs.len(), sent.len(), "ack covers every event");
                        for (s, e) in sent.iter_mut().zip(evs) {
                            let n = s.native.as_mut().expect("native");
                            n.id = e["id"].as_str().expect("id").to_owned();
                            n.hash = e["hash"].as_str().expect("hash").to_owned();
                        }
                    }
                    l.acked.extend(sent);
                    *l.dialects.entry(dialect).or_default() += 1;
                    false
                }
            }
        };
        if backoff {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// What the checks need of one exported event (kept small: a large run
/// holds millions).
#[derive(Debug)]
struct Line {
    seq: u64,
    marker: Option<String>,
    id: String,
    hash: String,
    payload_sha256: String,
}

impl Line {
    fn of(v: &Value) -> Line {
        let text = |k: &str| v[k].as_str().unwrap_or_default().to_owned();
        Line {
            seq: v["seq"].as_u64().unwrap_or(0),
            marker: marker_of(v),
            id: text("id"),
            hash: text("hash"),
            payload_sha256: text("payload_sha256"),
        }
    }
}

/// Every session's export, by session id, after checking seqs are 1..=n.
async fn exports(base: &str, key: &str, sessions: u64) -> HashMap<String, Vec<Line>> {
    let http = reqwest::Client::new();
    let mut out = HashMap::new();
    for k in 0..sessions {
        let s = format!("crash-{k}");
        let r = http
            .get(format!("{base}/api/v1/sessions/{s}/export"))
            .bearer_auth(key)
            .send()
            .await
            .expect("export");
        if r.status() == reqwest::StatusCode::NOT_FOUND {
            continue;
        }
        assert!(r.status().is_success(), "export {s}: {}", r.status());
        let text = r.text().await.expect("export body");
        let lines: Vec<Line> = text
            .lines()
            .filter(|l| !l.starts_with("{\"log_proof\""))
            .map(|l| Line::of(&serde_json::from_str(l).expect("export line is JSON")))
            .collect();
        drop(text);
        for (i, l) in lines.iter().enumerate() {
            assert_eq!(l.seq, i as u64 + 1, "{s}: seq gap");
        }
        let v: Value = http
            .get(format!("{base}/api/v1/sessions/{s}/verify"))
            .bearer_auth(key)
            .send()
            .await
            .expect("verify")
            .json()
            .await
            .expect("verify json");
        assert_eq!(v["valid"], true, "{s}: {v}");
        out.insert(s, lines);
    }
    out
}

/// The marker an export line carries, whatever the dialect put it under.
fn marker_of(line: &Value) -> Option<String> {
    let p = &line["payload"];
    [
        &p["marker"],
        &p["data"]["marker"],
        &p["tool_input"]["marker"],
        &p["arguments"]["marker"],
        &p["input"]["marker"],
    ]
    .into_iter()
    .find_map(|v| v.as_str().map(str::to_owned))
    .or_else(|| {
        // Fall back to a search of the payload text for dialects that nest it.
        let text = p.to_string();
        let at = text.find("\"marker\":\"")? + 10;
        let end = text[at..].find('"')?;
        Some(text[at..at + end].to_owned())
    })
}

/// Check the ledger against the database as the server now serves it.
async fn check(base: &str, key: &str, sessions: u64, ledger: &Ledger) -> usize {
    let exports = exports(base, key, sessions).await;
    let mut found: HashMap<&str, (&str, &Line)> = HashMap::new();
    for (s, lines) in &exports {
        for l in lines {
            if let Some(m) = &l.marker {
                let dup = found.insert(m, (s, l));
                assert!(dup.is_none(), "marker {m} stored twice");
            }
        }
    }
    for a in &ledger.acked {
        let (s, line) = found
            .get(a.marker.as_str())
            .unwrap_or_else(|| panic!("acknowledged event {} was lost", a.marker));
        assert_eq!(*s, a.session, "{} moved session", a.marker);
        if let Some(n) = &a.native {
            assert_eq!(line.payload_sha256, n.payload_sha256, "{}", a.marker);
            assert_eq!(line.id, n.id, "{}", a.marker);
            assert_eq!(line.hash, n.hash, "{}", a.marker);
        }
    }
    for r in &ledger.refused {
        for e in r {
            assert!(
                !found.contains_key(e.marker.as_str()),
                "a refused request stored {}",
                e.marker
            );
        }
    }
    for u in &ledger.unknown {
        let present = u
            .iter()
            .filter(|e| found.contains_key(e.marker.as_str()))
            .count();
        assert!(
            present == 0 || present == u.len(),
            "a request was stored in part: {present} of {}",
            u.len()
        );
    }
    found.len()
}

fn integrity_ok(db: &Path) {
    let conn = rusqlite::Connection::open(db).expect("open db");
    let r: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("integrity_check");
    assert_eq!(r, "ok");
}

/// Append one native event to every session and check it lands on the head.
async fn appends_continue(base: &str, key: &str, exports: &HashMap<String, Vec<Line>>) {
    let http = reqwest::Client::new();
    for (s, lines) in exports {
        let last = lines.last().expect("non-empty session");
        let r = http
            .post(format!("{base}/api/v1/events"))
            .bearer_auth(key)
            .json(
                &json!({"events": [{"session_id": s, "agent_id": "crash-agent",
                "kind": "memory", "payload": {"after": "restart"}}]}),
            )
            .send()
            .await
            .expect("append");
        assert_eq!(r.status(), reqwest::StatusCode::CREATED);
        let v: Value = r.json().await.expect("ack");
        assert_eq!(
            v["events"][0]["seq"].as_u64(),
            Some(last.seq + 1),
            "{s}: append after restart continues the stored chain"
        );
        let ev: Value = http
            .get(format!(
                "{base}/api/v1/events/{}",
                v["events"][0]["id"].as_str().expect("id")
            ))
            .bearer_auth(key)
            .send()
            .await
            .expect("get")
            .json()
            .await
            .expect("event");
        assert_eq!(
            ev["prev_hash"].as_str(),
            Some(last.hash.as_str()),
            "{s}: linked to the stored head"
        );
    }
}

fn spawn_clients(
    base: &str,
    key: &str,
    clients: usize,
    rng: &mut Rng,
    sessions: u64,
    ledger: &Arc<Mutex<Ledger>>,
    counters: &[u64],
) -> Vec<tokio::task::JoinHandle<u64>> {
    (0..clients)
        .map(|c| {
            tokio::spawn(client_loop(
                base.to_owned(),
                key.to_owned(),
                c,
                rng.next(),
                sessions,
                ledger.clone(),
                counters[c],
            ))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_at_random_moments_loses_no_acknowledged_event() {
    let rounds = env_or("AGENTLEDGER_CRASH_ROUNDS", 4);
    let clients = env_or("AGENTLEDGER_CRASH_CLIENTS", 8) as usize;
    let sessions = env_or("AGENTLEDGER_CRASH_SESSIONS", 12);
    let seed = seed();
    println!("crash test: seed {seed}, {rounds} rounds, {clients} clients, {sessions} sessions");
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("crash.db");
    let key = agentledger_core::keys::generate_key();
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let mut counters = vec![0u64; clients];

    for round in 0..rounds {
        let mut server = start(&db, &key).await;
        if round > 0 {
            // The previous round's kill: everything acknowledged is there.
            let l = ledger.lock().expect("ledger").clone();
            check(&server.base, &key, sessions, &l).await;
        }
        let tasks = spawn_clients(
            &server.base,
            &key,
            clients,
            &mut rng,
            sessions,
            &ledger,
            &counters,
        );
        let wait = 300 + rng.below(1200);
        tokio::time::sleep(Duration::from_millis(wait)).await;
        server.child.kill().expect("SIGKILL");
        let _ = server.child.wait();
        for (c, t) in tasks.into_iter().enumerate() {
            counters[c] = t.await.expect("client");
        }
        integrity_ok(&db);
        let l = ledger.lock().expect("ledger");
        println!(
            "round {round}: killed after {wait} ms; {} acknowledged so far, statuses {:?}, requests {:?}",
            l.acked.len(),
            l.statuses,
            l.dialects
        );
    }

    let server = start(&db, &key).await;
    let stored = {
        let l = ledger.lock().expect("ledger").clone();
        assert!(
            l.acked.len() as u64 >= rounds,
            "the load acknowledged almost nothing"
        );
        assert_eq!(l.dialects.len(), DIALECTS.len(), "{:?}", l.dialects);
        check(&server.base, &key, sessions, &l).await
    };
    let exports = exports(&server.base, &key, sessions).await;
    appends_continue(&server.base, &key, &exports).await;
    drop(server);
    let out = cli_on(&db, &["verify"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    println!(
        "crash test: {stored} events stored, {} acknowledged, all present",
        ledger.lock().expect("ledger").acked.len()
    );
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_under_load_exits_zero_and_loses_nothing_acknowledged() {
    let sessions = 8;
    let mut rng = Rng(seed());
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("term.db");
    let key = agentledger_core::keys::generate_key();
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let mut server = start(&db, &key).await;
    let tasks = spawn_clients(&server.base, &key, 8, &mut rng, sessions, &ledger, &[0; 8]);
    tokio::time::sleep(Duration::from_millis(800)).await;
    let st = Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .expect("kill");
    assert!(st.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = server.child.try_wait().expect("wait") {
            break s;
        }
        assert!(Instant::now() < deadline, "no exit 30 s after SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(status.code(), Some(0), "SIGTERM exits 0");
    for t in tasks {
        t.await.expect("client");
    }
    let server = start(&db, &key).await;
    let l = ledger.lock().expect("ledger").clone();
    assert!(!l.acked.is_empty());
    let statuses: HashSet<u16> = l.statuses.keys().copied().collect();
    assert!(
        statuses.iter().all(|s| [200, 201, 202, 503].contains(s)),
        "{statuses:?}"
    );
    let stored = check(&server.base, &key, sessions, &l).await;
    assert!(stored >= l.acked.len());
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

async fn gauge(base: &str, key: &str, name: &str) -> f64 {
    let text = reqwest::Client::new()
        .get(format!("{base}/metrics"))
        .bearer_auth(key)
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0.0)
}

/// Mixed dialects from many clients for a bounded time against a writer
/// whose queue is small enough to fill: memory stays flat, the queue stays
/// within its bound, saturation answers 503 with Retry-After, and after a
/// SIGTERM and a restart every acknowledged event is there.
/// CI: 20 s. By hand: `AGENTLEDGER_SOAK_SECS=600 cargo test --release -p agentledger
/// --test api crash::soak -- --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn soak_mixed_dialects_memory_and_queue_stay_bounded_and_nothing_acked_is_lost() {
    let secs = env_or("AGENTLEDGER_SOAK_SECS", 20);
    let clients = env_or("AGENTLEDGER_SOAK_CLIENTS", 16) as usize;
    let max_pending = 2_000u64;
    let sessions = 40;
    let mut rng = Rng(seed());
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("soak.db");
    let key = agentledger_core::keys::generate_key();
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let bound = max_pending.to_string();
    let mut server = start_with(&db, &key, &["--max-pending-events", &bound]).await;
    let pid = server.child.id();
    let started = Instant::now();
    let tasks = spawn_clients(
        &server.base,
        &key,
        clients,
        &mut rng,
        sessions,
        &ledger,
        &vec![0; clients],
    );
    let mut rss = Vec::new();
    let mut pending_max = 0.0f64;
    while started.elapsed() < Duration::from_secs(secs) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        rss.push(rss_kib(pid));
        let pending = gauge(&server.base, &key, "agentledger_writer_pending_events").await;
        pending_max = pending_max.max(pending);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let st = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(st.success());
    let status = server.child.wait().expect("wait");
    assert_eq!(status.code(), Some(0), "SIGTERM exits 0");
    for t in tasks {
        t.await.expect("client");
    }
    let l = ledger.lock().expect("ledger").clone();
    let server = start(&db, &key).await;
    let stored = check(&server.base, &key, sessions, &l).await;
    let half = rss.len() / 2;
    let first = rss[..half].iter().copied().max().unwrap_or(0);
    let second = rss[half..].iter().copied().max().unwrap_or(0);
    println!(
        "soak: {elapsed:.0} s, {clients} clients, {} events acknowledged ({:.0}/s), {stored} stored, \
         statuses {:?}, requests {:?}, RSS peak first half {} MiB, second half {} MiB, \
         writer pending max {pending_max} (bound {max_pending})",
        l.acked.len(),
        l.acked.len() as f64 / elapsed,
        l.statuses,
        l.dialects,
        first / 1024,
        second / 1024,
    );
    assert!(!l.acked.is_empty());
    assert!(
        l.statuses.keys().all(|s| [200, 201, 503].contains(s)),
        "{:?}",
        l.statuses
    );
    assert!(
        pending_max <= max_pending as f64,
        "queue over its bound: {pending_max}"
    );
    assert!(
        second <= first + first / 2 + 32 * 1024,
        "memory grew: {first} KiB -> {second} KiB"
    );
}
