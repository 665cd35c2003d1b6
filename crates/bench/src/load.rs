//! HTTP load against a real server running as a separate process.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use reqwest::Client;

use agentledger::{Application, ServeConfig};

use bytes::Bytes;

use crate::events::{
    agentlens_batch_body, batch_body, fabraix_event_body, otlp_traces_body, standard_event,
};
use crate::report::Row;

pub const SESSIONS: u64 = 100;

/// The server side: run in a child process of the harness.
/// `db` is a `--db` value: a SQLite path or a `postgres://` URL.
pub fn serve_child(db: String) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(_) => return ExitCode::FAILURE,
    };
    rt.block_on(async move {
        let mut cfg = ServeConfig::for_tests(db);
        cfg.bootstrap_key = std::env::var("AGENTLEDGER_BOOTSTRAP_KEY").ok();
        // The harness reads /metrics (search backlog) with the same key.
        cfg.operator_token = cfg.bootstrap_key.clone();
        cfg.max_pending_events = 500_000;
        // Every client of the harness comes from 127.0.0.1, as through a
        // proxy: the per-address bound (256 by default) would refuse the
        // sweep's 256 clients plus the harness's own probes.
        cfg.connections.max_per_address = 4096;
        cfg.policy.enabled = std::env::var_os("AGENTLEDGER_NO_POLICY").is_none();
        // `serve --read-mmap`, to measure it (off unless set).
        if let Ok(v) = std::env::var("AGENTLEDGER_READ_MMAP") {
            match v.parse() {
                Ok(mib) => cfg.read_mmap_mib = mib,
                Err(_) => {
                    eprintln!("AGENTLEDGER_READ_MMAP={v:?} is not a number of MiB");
                    return ExitCode::FAILURE;
                }
            }
        }
        // The log and the alert workers at `serve`'s defaults, not the
        // tests' quick ones (integrating every 0.1 s cost the writer more).
        cfg.log.integrate_interval =
            std::time::Duration::from_secs_f64(agentledger::transparency::INTEGRATE_EVERY_SECS);
        cfg.log.checkpoint_interval =
            std::time::Duration::from_secs_f64(agentledger::transparency::CHECKPOINT_EVERY_SECS);
        cfg.alerts = agentledger::alerts::AlertConfig::default();
        let app = match Application::build(cfg).await {
            Ok(app) => app,
            Err(e) => {
                eprintln!("server failed to start: {e}");
                return ExitCode::FAILURE;
            }
        };
        println!("LISTENING {}", app.local_addr());
        match app
            .run_until_stopped(agentledger::startup::shutdown_signal())
            .await
        {
            Ok(()) => ExitCode::SUCCESS,
            Err(_) => ExitCode::FAILURE,
        }
    })
}

pub struct Server {
    /// None when the harness targets a server it did not start (`--url`).
    child: Option<Child>,
    pub base: String,
    pub key: String,
    /// The `--db` value: a SQLite path or a `postgres://` URL.
    db: String,
    started: Duration,
    policy: bool,
}

/// A server given with `--url`/`--key`: every scenario runs against it
/// instead of a fresh one (no cold start, RSS or disk figures then).
static EXTERNAL: std::sync::OnceLock<(String, String)> = std::sync::OnceLock::new();

pub fn use_external(url: String, key: String) {
    let _ = EXTERNAL.set((url.trim_end_matches('/').to_owned(), key));
}

/// Whether the scenarios drive a server given with `--url`.
pub fn is_external() -> bool {
    EXTERNAL.get().is_some()
}

pub struct Stopped {
    pub peak_rss_mb: Option<f64>,
    pub db_bytes: u64,
}

impl Server {
    pub fn spawn(dir: &Path, name: &str) -> Result<Server, String> {
        Server::spawn_with(dir, name, true)
    }

    /// Spawn with the policy checkpoint on (the default set) or off.
    pub fn spawn_with(dir: &Path, name: &str, policy: bool) -> Result<Server, String> {
        Server::start(
            dir.join(format!("{name}.db"))
                .to_string_lossy()
                .into_owned(),
            agentledger_core::keys::generate_key(),
            policy,
        )
    }

    /// Spawn on the database `db` (a `--db` value, e.g. a `postgres://`
    /// URL) with the admin key `key` (created if the database has none).
    pub fn spawn_db(db: String, key: String, policy: bool) -> Result<Server, String> {
        Server::start(db, key, policy)
    }

    /// The SQLite database this harness started the server on (`None` on
    /// PostgreSQL or a server given with `--url`): the verify ceiling reads it.
    pub fn sqlite_path(&self) -> Option<PathBuf> {
        (self.child.is_some() && !self.db.contains("://")).then(|| PathBuf::from(&self.db))
    }

    /// Stop and start again on the same database (cold start on a full ledger).
    pub fn restart(self) -> Result<(Server, Stopped), String> {
        let (db, key, policy) = (self.db.clone(), self.key.clone(), self.policy);
        let external = self.child.is_none();
        let stopped = self.stop()?;
        if external {
            return Err("cannot restart a server given with --url".into());
        }
        Ok((Server::start(db, key, policy)?, stopped))
    }

    fn start(db: String, key: String, policy: bool) -> Result<Server, String> {
        if let Some((url, key)) = EXTERNAL.get() {
            return Ok(Server {
                child: None,
                base: url.clone(),
                key: key.clone(),
                db,
                started: Duration::ZERO,
                policy,
            });
        }
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let t0 = Instant::now();
        let mut cmd = Command::new(exe);
        cmd.args(["serve-child", "--db"])
            .arg(&db)
            .env("AGENTLEDGER_BOOTSTRAP_KEY", &key);
        if !policy {
            cmd.env("AGENTLEDGER_NO_POLICY", "1");
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start server: {e}"))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .map_err(|e| e.to_string())?;
        let addr = line
            .trim()
            .strip_prefix("LISTENING ")
            .ok_or_else(|| format!("server said {line:?}"))?;
        Ok(Server {
            child: Some(child),
            base: format!("http://{addr}"),
            key,
            db,
            started: t0.elapsed(),
            policy,
        })
    }

    /// Cold start: process spawn to listening, including opening the database.
    pub fn start_time(&self) -> Duration {
        self.started
    }

    /// SIGTERM, wait, and report peak RSS and the database's size.
    pub fn stop(self) -> Result<Stopped, String> {
        let Some(mut child) = self.child else {
            return Ok(Stopped {
                peak_rss_mb: None,
                db_bytes: 0,
            });
        };
        let peak_rss_mb = std::fs::read_to_string(format!("/proc/{}/status", child.id()))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmHWM:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|kb| kb.parse::<f64>().ok())
            })
            .map(|kb| kb / 1024.0);
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let status = child.wait().map_err(|e| e.to_string())?;
        if !status.success() {
            return Err(format!("server exited with {status}"));
        }
        // Everything the ledger keeps: the database, its WAL and the
        // full-text index file with its WAL.
        // (A database URL has no files here: 0.)
        let size = |suffix: &str| {
            if self.db.contains("://") {
                return 0;
            }
            std::fs::metadata(PathBuf::from(format!("{}{suffix}", self.db)))
                .map(|m| m.len())
                .unwrap_or(0)
        };
        Ok(Stopped {
            peak_rss_mb,
            db_bytes: ["", "-wal", "-fts", "-fts-wal"]
                .iter()
                .map(|s| size(s))
                .sum(),
        })
    }
}

/// Where a scenario posts and what a success looks like.
pub struct Target {
    pub path: &'static str,
    pub ok: u16,
    pub content_type: &'static str,
}

pub const NATIVE: Target = Target {
    path: "/api/v1/events",
    ok: 201,
    content_type: "application/json",
};
const AGENTLENS: Target = Target {
    path: "/api/events",
    ok: 201,
    content_type: "application/json",
};
const OTLP: Target = Target {
    path: "/v1/traces",
    ok: 200,
    content_type: "application/x-protobuf",
};
const FABRAIX: Target = Target {
    path: "/v1/event",
    ok: 200,
    content_type: "application/json",
};

/// Post `bodies` round-robin from `clients` tasks until `requests` are done.
/// Every response must be the target's success status; anything else fails
/// the scenario loudly.
pub async fn drive(
    server: &Server,
    target: Target,
    bodies: Arc<Vec<Bytes>>,
    requests: u64,
    clients: usize,
) -> Result<(Duration, Vec<Duration>), String> {
    drive_many(&[server], target, bodies, requests, clients).await
}

/// As [`drive`], the clients split evenly across `servers` (client `k`
/// posts to server `k % servers.len()`, all with the first server's key).
pub async fn drive_many(
    servers: &[&Server],
    target: Target,
    bodies: Arc<Vec<Bytes>>,
    requests: u64,
    clients: usize,
) -> Result<(Duration, Vec<Duration>), String> {
    let Some(first) = servers.first() else {
        return Err("no server to drive".into());
    };
    let content_type = target.content_type;
    let client = Client::builder()
        .pool_max_idle_per_host(clients)
        .build()
        .map_err(|e| e.to_string())?;
    let next = Arc::new(AtomicU64::new(0));
    let urls: Vec<String> = servers
        .iter()
        .map(|s| format!("{}{}", s.base, target.path))
        .collect();
    let ok = target.ok;
    let started = Instant::now();
    let mut tasks: Vec<tokio::task::JoinHandle<Result<Vec<Duration>, String>>> = Vec::new();
    for k in 0..clients {
        let (client, next, url, key, bodies) = (
            client.clone(),
            next.clone(),
            urls[k % urls.len()].clone(),
            first.key.clone(),
            bodies.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= requests {
                    return Ok(lat);
                }
                let body = bodies[(i % bodies.len() as u64) as usize].clone();
                let t = Instant::now();
                let what = format!("request {i}");
                post(&client, &url, &key, content_type, body, ok, &what).await?;
                lat.push(t.elapsed());
            }
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.map_err(|e| e.to_string())??);
    }
    Ok((started.elapsed(), all))
}

/// POST a JSON body with the key; any status but `ok` is an error naming `what`.
pub async fn post_json(
    client: &Client,
    url: &str,
    key: &str,
    body: impl Into<reqwest::Body>,
    ok: u16,
    what: &str,
) -> Result<(), String> {
    post(client, url, key, "application/json", body, ok, what).await
}

/// POST `body` as `content_type` with the key, read the answer; any status
/// but `ok` is an error naming `what`.
pub async fn post(
    client: &Client,
    url: &str,
    key: &str,
    content_type: &str,
    body: impl Into<reqwest::Body>,
    ok: u16,
    what: &str,
) -> Result<(), String> {
    let r = client
        .post(url)
        .header("authorization", format!("Bearer {key}"))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = r.status();
    let _ = r.bytes().await;
    if status.as_u16() != ok {
        return Err(format!("{what} answered {status}"));
    }
    Ok(())
}

pub async fn native_batches(
    dir: &Path,
    events: u64,
    batch: u64,
    clients: usize,
) -> Result<Vec<Row>, String> {
    native_batches_with(dir, events, batch, clients, true).await
}

/// Native batches with the policy checkpoint on (default set) or off.
pub async fn native_batches_with(
    dir: &Path,
    events: u64,
    batch: u64,
    clients: usize,
    policy: bool,
) -> Result<Vec<Row>, String> {
    let name = if policy { "batch" } else { "batch-nopolicy" };
    let server = Server::spawn_with(dir, name, policy)?;
    let start_ms = server.start_time().as_secs_f64() * 1000.0;
    let requests = events.div_ceil(batch);
    let bodies: Vec<String> = (0..requests.min(16))
        .map(|k| batch_body(k * batch, batch, SESSIONS))
        .collect();
    let bytes = bodies[0].len() as u64 * requests;
    // Search freshness is probed under this load (the index trails commits).
    let stop_probe = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let probe = tokio::spawn(crate::scenarios::probe_freshness(
        server.base.clone(),
        server.key.clone(),
        stop_probe.clone(),
    ));
    let driven = drive(
        &server,
        NATIVE,
        Arc::new(bodies.into_iter().map(Bytes::from).collect()),
        requests,
        clients,
    )
    .await;
    stop_probe.store(true, Ordering::Relaxed);
    let (lags, probed) = probe.await.map_err(|e| e.to_string())??;
    let (elapsed, lat) = driven?;
    let stopped = server.stop()?;
    let n = requests * batch;
    let freshness = Row::throughput(
        &format!(
            "search freshness under {}",
            if policy {
                "batch load"
            } else {
                "batch load, policy off"
            }
        ),
        lags.len() as u64,
        elapsed.as_secs_f64(),
        None,
    )
    .unit("probes/s")
    .latencies(lags)
    .note(&format!(
        "ack of an event -> first search that finds it; missed by the first search: {} (must be 0); first search refused, then retried: {}{}",
        probed.missed,
        probed.refused,
        probed.refusal.map(|r| format!(" ({r})")).unwrap_or_default()
    ));
    let mut row = Row::throughput(
        &if policy {
            format!("native batches of {batch}, {clients} clients")
        } else {
            format!("native batches of {batch}, {clients} clients, policy off")
        },
        n,
        elapsed.as_secs_f64(),
        Some(bytes),
    )
    .latencies(lat)
    .note(&format!(
        "latency is per 1000-event request; cold start {start_ms:.0} ms"
    ));
    row.peak_rss_mb = stopped.peak_rss_mb;
    row.disk_bytes_per_event = Some(stopped.db_bytes as f64 / n as f64);
    Ok(vec![row, freshness])
}

pub async fn native_singles(dir: &Path, events: u64, clients: usize) -> Result<Row, String> {
    let server = Server::spawn(dir, "single")?;
    let bodies: Vec<String> = (0..1024)
        .map(|i| format!(r#"{{"events":[{}]}}"#, standard_event(i, SESSIONS)))
        .collect();
    let bytes = bodies[0].len() as u64 * events;
    let (elapsed, lat) = drive(
        &server,
        NATIVE,
        Arc::new(bodies.into_iter().map(Bytes::from).collect()),
        events,
        clients,
    )
    .await?;
    let stopped = server.stop()?;
    let mut row = Row::throughput(
        &format!("native single events, {clients} clients"),
        events,
        elapsed.as_secs_f64(),
        Some(bytes),
    )
    .latencies(lat)
    .note("every ack durable (group commit)");
    row.peak_rss_mb = stopped.peak_rss_mb;
    Ok(row)
}

pub async fn agentlens_batches(
    dir: &Path,
    events: u64,
    batch: u64,
    clients: usize,
) -> Result<Row, String> {
    let server = Server::spawn(dir, "agentlens")?;
    let requests = events.div_ceil(batch);
    let bodies: Vec<String> = (0..requests.min(16))
        .map(|k| agentlens_batch_body(k * batch, batch, SESSIONS))
        .collect();
    let bytes = bodies[0].len() as u64 * requests;
    let (elapsed, lat) = drive(
        &server,
        AGENTLENS,
        Arc::new(bodies.into_iter().map(Bytes::from).collect()),
        requests,
        clients,
    )
    .await?;
    server.stop()?;
    Ok(Row::throughput(
        &format!("AgentLens batches of {batch}, {clients} clients"),
        requests * batch,
        elapsed.as_secs_f64(),
        Some(bytes),
    )
    .latencies(lat)
    .note("typed-payload validation as native"))
}

/// Register `runs` Fabraix runs; their trace ids.
async fn register_runs(server: &Server, runs: u64) -> Result<Vec<String>, String> {
    let client = Client::new();
    let mut traces = Vec::new();
    for r in 0..runs {
        let body = serde_json::json!({"agent_id": format!("bench-agent-{r}"), "timestamp": "2026-01-01T00:00:00.000Z",
            "system_prompt": "You are a benchmark agent."});
        let resp = client
            .post(format!("{}/v1/register-agent-run", server.base))
            .header("x-api-key", &server.key)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let text = resp.text().await.map_err(|e| e.to_string())?;
        let v: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| format!("{e}: {text}"))?;
        traces.push(
            v["trace_id"]
                .as_str()
                .ok_or_else(|| format!("register answered {v}"))?
                .to_owned(),
        );
    }
    Ok(traces)
}

pub async fn fabraix_singles(dir: &Path, events: u64, clients: usize) -> Result<Row, String> {
    let server = Server::spawn(dir, "fabraix")?;
    let traces = register_runs(&server, SESSIONS).await?;
    let bodies: Vec<String> = (0..1024)
        .map(|i| fabraix_event_body(i, &traces[(i % SESSIONS) as usize]))
        .collect();
    let bytes = bodies[0].len() as u64 * events;
    let (elapsed, lat) = drive(
        &server,
        FABRAIX,
        Arc::new(bodies.into_iter().map(Bytes::from).collect()),
        events,
        clients,
    )
    .await?;
    server.stop()?;
    Ok(Row::throughput(
        &format!("Fabraix single events, {clients} clients"),
        events,
        elapsed.as_secs_f64(),
        Some(bytes),
    )
    .latencies(lat)
    .note("JSON Schema validation per event (cached validator), run lookup per event"))
}

pub async fn otlp_batches(
    dir: &Path,
    spans: u64,
    batch: u64,
    clients: usize,
) -> Result<Row, String> {
    let server = Server::spawn(dir, "otlp")?;
    let requests = spans.div_ceil(batch);
    let bodies: Vec<Vec<u8>> = (0..requests.min(16))
        .map(|k| otlp_traces_body(k * batch, batch, SESSIONS))
        .collect();
    let bytes = bodies[0].len() as u64 * requests;
    let (elapsed, lat) = drive(
        &server,
        OTLP,
        Arc::new(bodies.into_iter().map(Bytes::from).collect()),
        requests,
        clients,
    )
    .await?;
    let stopped = server.stop()?;
    let mut row = Row::throughput(
        &format!("OTLP protobuf, {batch} spans per request, {clients} clients"),
        requests * batch,
        elapsed.as_secs_f64(),
        Some(bytes),
    )
    .latencies(lat)
    .note("GenAI tool spans; rate is spans/s");
    row.peak_rss_mb = stopped.peak_rss_mb;
    Ok(row)
}

/// Action checks sent open-loop at `rate` per second (each on its own
/// connection slot, not waiting for the previous one), over 100 sessions.
pub async fn action_checks(dir: &Path, checks: u64, rate: u64) -> Result<Row, String> {
    let server = Server::spawn(dir, "checks")?;
    let client = Client::builder()
        .pool_max_idle_per_host(256)
        .build()
        .map_err(|e| e.to_string())?;
    let url = format!("{}/api/v1/check", server.base);
    // One unmeasured check per session first: a session's first check after
    // a start rebuilds its state from the ledger (reported separately).
    let mut first = Vec::new();
    for sess in 0..SESSIONS {
        let t = Instant::now();
        let r = client
            .post(&url)
            .header("content-type", "application/json")
            .header("authorization", format!("Bearer {}", server.key))
            .body(format!(
                r#"{{"session_id":"chk-{sess}","agent_id":"bench-agent","tool":"warm_up","arguments":{{}}}}"#
            ))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let _ = r.bytes().await;
        first.push(t.elapsed());
    }
    first.sort_unstable();
    let first_p50 = first[first.len() / 2].as_secs_f64() * 1000.0;
    let period = Duration::from_secs_f64(1.0 / rate.max(1) as f64);
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(checks as usize);
    for i in 0..checks {
        tick.tick().await;
        let body = format!(
            r#"{{"session_id":"chk-{s}","agent_id":"bench-agent","tool":"send_email","arguments":{{"to":"ops@example.org","subject":"report {i}","body":"{b}"}}}}"#,
            s = i % SESSIONS,
            b = "quarterly numbers attached; see the dashboard for details",
        );
        let (client, url, key) = (client.clone(), url.clone(), server.key.clone());
        tasks.push(tokio::spawn(async move {
            let t = Instant::now();
            post_json(&client, &url, &key, body, 200, &format!("check {i}")).await?;
            Ok::<Duration, String>(t.elapsed())
        }));
    }
    let mut lat = Vec::with_capacity(tasks.len());
    for t in tasks {
        lat.push(t.await.map_err(|e| e.to_string())??);
    }
    let elapsed = started.elapsed();
    server.stop()?;
    Ok(Row::throughput(
        &format!("action checks, open loop at {rate}/s"),
        checks,
        elapsed.as_secs_f64(),
        None,
    )
    .unit("checks/s")
    .latencies(lat)
    .note(&format!(
        "default policy set; each check judged and chained (durable) before the answer; \
         a session's first check (state rebuilt from the ledger) p50 {first_p50:.2} ms, not in the figures"
    )))
}
