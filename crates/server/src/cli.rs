//! The `agentledger` command line. Every flag can also be set through its
//! `AGENTLEDGER_*` environment variable (docs/configuration.md lists them).

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};

use agentledger_core::{ChainVerifier, ExportLine, keys};
use agentledger_store::Backend;
use agentledger_store::verify::verify_session;
use agentledger_store::{EventStore, ProjectRef, SessionQuery};

use crate::log_proofs::{
    EmbeddedProof, LogProofs, SessionHashes, check_log_proofs, is_proof_line, read_log_proofs,
    read_proof_line,
};
use crate::startup::{Application, PolicyConfig, ServeConfig, shutdown_signal};

#[derive(Parser)]
#[command(
    name = "agentledger",
    version,
    about = "Tamper-evident audit trail and policy checkpoint for AI agents"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Serve(Box<ServeArgs>),
    /// Manage API keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Verify hash chains in the database, or an export file offline.
    Verify(VerifyArgs),
    /// Write events as JSON Lines to stdout.
    Export(Scope),
    /// Erase an event's payload (personal data, a leaked secret) and keep its
    /// sha256: the chain, the transparency log and every proof still verify.
    /// Appends an `event_erased` record (who: `cli:<OS user>`, why) to the
    /// event's session in the same transaction.
    Erase(EraseArgs),
    /// The salts of redaction commitments (envelope v3): show one so an
    /// auditor holding an original can check it, or destroy them so nobody
    /// ever can.
    Salts {
        #[command(subcommand)]
        command: SaltsCommand,
    },
    /// Copy a whole ledger to another database (SQLite to PostgreSQL or
    /// back): projects, keys, policy sets and every event as stored, hashes
    /// unchanged. Run it again to resume an interrupted copy; a target
    /// holding other data is refused. Every chain is verified at the end.
    Copy(CopyArgs),
    /// Print the verifier key (C2SP signed-note vkey) of projects' transparency logs: what
    /// a client checks checkpoints and proofs with. The key file is the server's.
    LogKey(LogKeyArgs),
    /// Run a witness (C2SP tlog-witness) for other organisations' logs: cosigns a log's
    /// checkpoint only if it is consistent with the last one it cosigned for that log.
    Witness(WitnessArgs),
    /// Print a witness's verifier key (type 0x04, or 0x06 for ML-DSA-44: what a witness policy
    /// lists), creating the key file if there is none.
    WitnessKey(WitnessKeyArgs),
    /// Follow a project's transparency log from outside the server.
    Log {
        #[command(subcommand)]
        command: LogCommand,
    },
}

#[derive(Subcommand)]
enum LogCommand {
    /// Follow one project's log over HTTP: keep the last checkpoint trusted, refuse any later
    /// one not signed by the log key, smaller, or not consistent with it, recompute the tree
    /// from the entry bundles, and check every session the log holds against the API. Prints
    /// one FAIL line per problem; exit status 1 when there is one, 2 when a round could not
    /// finish (with --once).
    Monitor(MonitorArgs),
}

#[derive(Args)]
struct MonitorArgs {
    /// The server's base URL, e.g. https://ledger.example.com.
    #[arg(long, env = "AGENTLEDGER_URL")]
    url: String,
    /// An API key of the project whose log is followed.
    #[arg(long, env = "AGENTLEDGER_API_KEY", hide_env_values = true)]
    key: String,
    /// The log's verifier key (what `agentledger log-key --project P` prints), or a file
    /// holding it; its name is the log's origin.
    #[arg(long)]
    log_key: String,
    /// SQLite file keeping the last trusted checkpoint and the monitor's copy of the log's
    /// leaves (created if absent; one per log followed).
    #[arg(long, default_value = "agentledger-monitor.db")]
    state: PathBuf,
    /// Run one round and exit (for tests and cron).
    #[arg(long)]
    once: bool,
    /// Seconds between rounds.
    #[arg(long, default_value_t = 60)]
    interval: u64,
    /// A C2SP tlog-policy file: every checkpoint must also be cosigned by a quorum of its
    /// witnesses (and signed by a log it lists).
    #[arg(long)]
    witness_policy: Option<PathBuf>,
    /// Seconds each HTTP request may take.
    #[arg(long, default_value_t = 30)]
    timeout: u64,
}

#[derive(Args)]
struct WitnessKeyFile {
    /// The witness's cosigning key file: created (mode 0600) if absent, refused if others
    /// can read it; back it up.
    #[arg(long, env = "AGENTLEDGER_WITNESS_KEY")]
    key: PathBuf,
    /// The witness's name (its key's name, in every cosignature) when the key file is
    /// created; an existing file keeps its own. Default: this machine's host name.
    #[arg(long, env = "AGENTLEDGER_WITNESS_NAME")]
    name: Option<String>,
    /// The key's type when the key file is created: ed25519
    /// (C2SP cosignature/v1, type 0x04) or ml-dsa-44 (post-quantum subtree/v1, type 0x06, which
    /// tlog-witness recommends; its clients must verify ML-DSA-44).
    /// Default: ed25519; given with an existing key file of another type, refused.
    #[arg(long, value_enum)]
    algorithm: Option<crate::witness::CosignAlgorithm>,
}

impl WitnessKeyFile {
    fn name(&self) -> String {
        self.name
            .clone()
            .unwrap_or_else(crate::transparency::default_origin_prefix)
    }
}

#[derive(Args)]
struct WitnessArgs {
    #[command(flatten)]
    key: WitnessKeyFile,
    /// Address to serve POST /add-checkpoint on.
    #[arg(
        long,
        env = "AGENTLEDGER_WITNESS_LISTEN",
        default_value = "127.0.0.1:7381"
    )]
    listen: String,
    /// SQLite file keeping each log's latest cosigned size and root (created if absent).
    #[arg(long, env = "AGENTLEDGER_WITNESS_STATE")]
    state: PathBuf,
    /// A log's verifier key (`agentledger log-key` prints it), whose key name is the log's
    /// origin; or "<origin> <vkey>" for a log whose key is named otherwise. Repeat for each log
    /// (or each of a log's keys).
    #[arg(long = "log", required = true)]
    logs: Vec<String>,
}

#[derive(Args)]
struct WitnessKeyArgs {
    #[command(flatten)]
    key: WitnessKeyFile,
}

#[derive(Args)]
struct LogOriginArgs {
    /// The transparency log's signing key file: created (mode 0600) at the first start,
    /// refused if others can read it; back it up. Default: beside a SQLite database, its
    /// name plus `.log-key`; with PostgreSQL, ./agentledger-log.key.
    #[arg(long, env = "AGENTLEDGER_LOG_KEY")]
    log_key: Option<PathBuf>,
    /// The origin prefix of the logs: project P's log is "<prefix>/P" (its checkpoints'
    /// first line and its key name). Default: this machine's host name; set it explicitly,
    /// since the origin is the log's identity.
    #[arg(long, env = "AGENTLEDGER_LOG_ORIGIN")]
    log_origin: Option<String>,
}

impl LogOriginArgs {
    fn key_path(&self, db: &str) -> Result<PathBuf, String> {
        if let Some(p) = &self.log_key {
            return Ok(p.clone());
        }
        Ok(match Backend::parse(db).map_err(|e| e.to_string())? {
            Backend::Sqlite(o) => {
                let mut name = o.path.file_name().unwrap_or_default().to_os_string();
                name.push(".log-key");
                o.path.with_file_name(name)
            }
            Backend::Postgres(_) => PathBuf::from("./agentledger-log.key"),
        })
    }

    fn prefix(&self) -> Result<String, String> {
        let prefix = self
            .log_origin
            .clone()
            .unwrap_or_else(crate::transparency::default_origin_prefix);
        crate::transparency::check_origin_prefix(&prefix)?;
        Ok(prefix)
    }
}

#[derive(Args)]
struct LogKeyArgs {
    #[command(flatten)]
    db: DbArg,
    #[command(flatten)]
    log: LogOriginArgs,
    /// The projects whose logs' verifier keys to print, one line each.
    #[arg(
        long = "project",
        env = "AGENTLEDGER_PROJECT",
        default_value = "default"
    )]
    projects: Vec<String>,
}

#[derive(Args)]
struct CopyArgs {
    /// The ledger to copy: sqlite:PATH, a path, or a postgres:// URL.
    #[arg(long)]
    from: String,
    /// Where to copy it (created if new; the same forms).
    #[arg(long)]
    to: String,
    /// Events per transaction in the target.
    #[arg(long, default_value_t = 2_000)]
    batch: u32,
}

#[derive(Subcommand)]
enum SaltsCommand {
    /// Print the salt (hex) of a redacted event's commitments.
    Show {
        #[command(flatten)]
        db: DbArg,
        /// The event's project.
        #[arg(long, env = "AGENTLEDGER_PROJECT", default_value = "default")]
        project: String,
        /// The event id (any rendering).
        #[arg(long)]
        event: String,
    },
    /// Destroy salts: of events stored before a time, or all of them.
    Destroy {
        #[command(flatten)]
        db: DbArg,
        /// RFC 3339 time: destroy the salts of events stored before it.
        #[arg(long, conflicts_with = "all", required_unless_present = "all")]
        before: Option<String>,
        /// Destroy every salt.
        #[arg(long)]
        all: bool,
    },
}

#[derive(Args)]
struct EraseArgs {
    #[command(flatten)]
    db: DbArg,
    /// The event's project.
    #[arg(long, env = "AGENTLEDGER_PROJECT", default_value = "default")]
    project: String,
    /// The event id (any rendering).
    #[arg(long)]
    event: String,
    /// Why (kept in the chained record; 1 to 1000 characters).
    #[arg(long)]
    reason: String,
}

#[derive(Args)]
struct DbArg {
    /// The ledger: a SQLite file (`sqlite:PATH`, or a bare path), or a
    /// PostgreSQL URL (`postgres://user@host:5432/db`, several hosts and
    /// `target_session_attrs=read-write` for failover).
    #[arg(long, env = "AGENTLEDGER_DB", default_value = "./agentledger.db")]
    db: String,
}

#[derive(Args)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "AGENTLEDGER_LISTEN", default_value = "127.0.0.1:3400")]
    listen: String,
    #[command(flatten)]
    db: DbArg,
    /// Admin key of project "default", used only when the database has no key
    /// yet (at least 32 printable characters, 12 of them distinct). Without
    /// it, a key is generated and printed once on standard output.
    #[arg(long, env = "AGENTLEDGER_BOOTSTRAP_KEY", hide_env_values = true)]
    bootstrap_key: Option<String>,
    /// The operator's token for server-wide routes (/metrics), sent as
    /// `Authorization: Bearer`; same strength rules as a chosen key. Without
    /// it, /metrics answers 403.
    #[arg(long, env = "AGENTLEDGER_OPERATOR_TOKEN", hide_env_values = true)]
    operator_token: Option<String>,
    /// Mark the web console's session cookie `Secure` (sent over HTTPS
    /// only). Set it when a TLS-terminating proxy serves the console: the
    /// server speaks plain HTTP itself and does not trust a client's
    /// `X-Forwarded-Proto` to decide (docs/console.md).
    #[arg(long, env = "AGENTLEDGER_SECURE_COOKIES")]
    secure_cookies: bool,
    /// Read-only database connections.
    #[arg(long, env = "AGENTLEDGER_READ_CONNECTIONS", default_value_t = 4)]
    read_connections: u32,
    /// MiB of the SQLite database each read connection memory-maps (0: none).
    /// Faster verify and export; mapped pages count in RSS, per connection,
    /// and a read error of the disk ends the process (docs/configuration.md).
    #[arg(long, env = "AGENTLEDGER_READ_MMAP", default_value_t = 0)]
    read_mmap: u64,
    /// Events that may wait for the writer before ingest answers 503.
    #[arg(
        long,
        env = "AGENTLEDGER_MAX_PENDING_EVENTS",
        default_value_t = 100_000
    )]
    max_pending_events: usize,
    /// Cedar policies: a .cedar file or a directory of them: the operator's
    /// default set, judging every project that has not saved its own through
    /// the API. Without it, the built-in defaults.
    #[arg(long, env = "AGENTLEDGER_POLICIES")]
    policies: Option<PathBuf>,
    /// Store events without running detectors or policies.
    #[arg(long, env = "AGENTLEDGER_NO_POLICY")]
    no_policy: bool,
    /// Replace detector matches in stored payloads: off, secrets, or secrets,pii.
    #[arg(long, env = "AGENTLEDGER_REDACT", default_value = "off")]
    redact: String,
    /// Detector and policy time budget per event, in milliseconds.
    #[arg(long, env = "AGENTLEDGER_POLICY_BUDGET_MS", default_value_t = 50)]
    policy_budget_ms: u64,
    /// Requests per second allowed per API key (0: no limit); beyond it, 429
    /// with Retry-After.
    #[arg(long, env = "AGENTLEDGER_RATE_LIMIT", default_value_t = 0.0)]
    rate_limit: f64,
    /// Requests a key may send at once on top of the rate (default: one
    /// second's worth, at least 1).
    #[arg(long, env = "AGENTLEDGER_RATE_BURST")]
    rate_burst: Option<f64>,
    /// Seconds a client may take to send a request body; a slower one gets 408.
    #[arg(long, env = "AGENTLEDGER_BODY_TIMEOUT", default_value_t = 30.0)]
    body_timeout: f64,
    /// Seconds a client may take to send a request's headers (and an idle
    /// keep-alive connection may wait for its next request) before it is closed.
    #[arg(long, env = "AGENTLEDGER_HEADER_TIMEOUT", default_value_t = 10.0)]
    header_timeout: f64,
    /// Open connections in all; more are answered 503 and closed.
    #[arg(long, env = "AGENTLEDGER_MAX_CONNECTIONS", default_value_t = 4096)]
    max_connections: usize,
    /// Open connections from one client address (an IPv6 /64 counts as one);
    /// more are answered 503 and closed. Raise it behind a proxy that funnels
    /// every client through one address.
    #[arg(
        long,
        env = "AGENTLEDGER_MAX_CONNECTIONS_PER_ADDRESS",
        default_value_t = 256
    )]
    max_connections_per_address: usize,
    /// Reads (GET requests) one API key may have in flight at once; more wait
    /// up to 0.5 s, then get 429. Keeps one key's expensive searches from
    /// taking every read connection.
    #[arg(long, env = "AGENTLEDGER_READS_PER_KEY", default_value_t = 2)]
    reads_per_key: usize,
    /// Seconds a listing, count or search may run before it is stopped with 503.
    #[arg(long, env = "AGENTLEDGER_QUERY_BUDGET", default_value_t = 2.0)]
    query_budget: f64,
    /// Hours an answer stays kept under its Idempotency-Key: a retry with the
    /// same key within this time gets the same answer and appends nothing.
    #[arg(long, env = "AGENTLEDGER_IDEMPOTENCY_TTL", default_value_t = 24.0)]
    idempotency_ttl: f64,
    /// Attempts per alert delivery before it is given up (dead-lettered as
    /// `failed`; docs/alerts.md).
    #[arg(long, env = "AGENTLEDGER_ALERT_MAX_ATTEMPTS", default_value_t = 12)]
    alert_max_attempts: u32,
    /// Seconds one alert delivery attempt may take (connect, send, answer).
    #[arg(long, env = "AGENTLEDGER_ALERT_TIMEOUT", default_value_t = 10.0)]
    alert_timeout: f64,
    /// Alert delivery attempts in flight per destination.
    #[arg(long, env = "AGENTLEDGER_ALERT_PER_DESTINATION", default_value_t = 4)]
    alert_per_destination: usize,
    /// Seconds before the first retry of a failed delivery (doubled per
    /// attempt, with jitter, up to 10 minutes).
    #[arg(long, env = "AGENTLEDGER_ALERT_RETRY_BASE", default_value_t = 1.0)]
    alert_retry_base: f64,
    /// Seconds between evaluations of threshold alert rules.
    #[arg(
        long,
        env = "AGENTLEDGER_ALERT_THRESHOLD_EVERY",
        default_value_t = 15.0
    )]
    alert_threshold_every: f64,
    /// Log filter (tracing EnvFilter syntax), e.g. info or agentledger=debug.
    #[arg(long, env = "AGENTLEDGER_LOG", default_value = "info")]
    log: String,
    #[command(flatten)]
    transparency: LogOriginArgs,
    /// Seconds between signed checkpoints of a project's log (only when it grew).
    #[arg(long, env = "AGENTLEDGER_CHECKPOINT_INTERVAL", default_value_t = crate::transparency::CHECKPOINT_EVERY_SECS)]
    checkpoint_interval: f64,
    /// Seconds between passes of the log's integrator (each pass takes every committed
    /// event not yet in its project's log).
    #[arg(long, env = "AGENTLEDGER_INTEGRATE_INTERVAL", default_value_t = crate::transparency::INTEGRATE_EVERY_SECS)]
    integrate_interval: f64,
    /// A C2SP tlog-policy file: each signed checkpoint is sent to its witnesses (each needs a
    /// URL), their cosignatures are kept, and /log/checkpoint serves the newest checkpoint
    /// meeting its quorum (docs/transparency.md "Witnesses").
    #[arg(long, env = "AGENTLEDGER_WITNESS_POLICY")]
    witness_policy: Option<PathBuf>,
    /// Seconds one exchange with a witness may take (connect, send, answer).
    #[arg(long, env = "AGENTLEDGER_WITNESS_TIMEOUT", default_value_t = 10.0)]
    witness_timeout: f64,
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Create a key; prints only the key on stdout.
    Create {
        #[command(flatten)]
        db: DbArg,
        /// Project the key belongs to (created if new).
        #[arg(long, env = "AGENTLEDGER_PROJECT", default_value = "default")]
        project: String,
        /// Label shown in listings.
        #[arg(long, default_value = "cli")]
        name: String,
        /// Allow administrative routes (metrics, policy management).
        #[arg(long)]
        admin: bool,
    },
    /// List keys (never the keys themselves).
    List {
        #[command(flatten)]
        db: DbArg,
    },
    /// Revoke a key by id.
    Revoke {
        #[command(flatten)]
        db: DbArg,
        id: String,
    },
}

/// Which sessions a command covers.
#[derive(Args)]
struct Scope {
    #[command(flatten)]
    db: DbArg,
    /// Only this project (default: all).
    #[arg(long, env = "AGENTLEDGER_PROJECT")]
    project: Option<String>,
    /// Only this session.
    #[arg(long)]
    session: Option<String>,
}

#[derive(Args)]
struct VerifyArgs {
    #[command(flatten)]
    scope: Scope,
    /// Verify an export file instead of the database ("-" for stdin).
    #[arg(long, conflicts_with_all = ["project", "session"])]
    file: Option<PathBuf>,
    /// With --file: also check each session is in its project's transparency log, by the
    /// log proof line the export ends each session with (or --log-proof files). The log's
    /// verifier key (what `agentledger log-key` prints), or a file holding it.
    #[arg(long, requires = "file")]
    log_key: Option<String>,
    /// With --log-key: a C2SP tlog-policy file; each checkpoint must also be cosigned by
    /// witnesses meeting its quorum (its log lines are ignored: the log is --log-key's).
    #[arg(long, requires = "log_key")]
    witness_policy: Option<PathBuf>,
    /// With --log-key: a C2SP tlog-proof of a session's last event (from
    /// GET /log/proof/inclusion/{id}?format=text), for exports without proof lines.
    #[arg(long, requires = "log_key")]
    log_proof: Vec<PathBuf>,
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let log = match &cli.command {
        Command::Serve(a) => a.log.clone(),
        Command::Witness(_) => "info".into(),
        _ => "warn".into(),
    };
    let filter = tracing_subscriber::EnvFilter::try_new(&log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("agentledger: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli.command)) {
        Ok(code) => code,
        Err(msg) => {
            eprintln!("agentledger: {msg}");
            ExitCode::FAILURE
        }
    }
}

async fn open(db: &DbArg) -> Result<Arc<dyn EventStore>, String> {
    let mut backend = Backend::parse(&db.db).map_err(|e| e.to_string())?;
    if let Backend::Sqlite(o) = &mut backend {
        o.read_connections = 2;
    }
    backend
        .open()
        .await
        .map_err(|e| format!("cannot open the ledger: {e}"))
}

fn rate_limit(
    per_second: f64,
    burst: Option<f64>,
) -> Result<Option<crate::ratelimit::RateLimit>, String> {
    if !per_second.is_finite() || per_second < 0.0 {
        return Err(format!(
            "--rate-limit must be 0 or a positive number, not {per_second}"
        ));
    }
    if per_second == 0.0 {
        return Ok(None);
    }
    let burst = burst.unwrap_or(per_second).max(1.0);
    if !burst.is_finite() {
        return Err("--rate-burst must be a number".into());
    }
    Ok(Some(crate::ratelimit::RateLimit { per_second, burst }))
}

async fn run(cmd: Command) -> Result<ExitCode, String> {
    match cmd {
        Command::Serve(a) => {
            let log_key = a.transparency.key_path(&a.db.db)?;
            let cfg = ServeConfig {
                listen: a.listen,
                db: a.db.db,
                bootstrap_key: a.bootstrap_key,
                read_connections: a.read_connections,
                read_mmap_mib: a.read_mmap,
                max_pending_events: a.max_pending_events,
                policy: PolicyConfig {
                    enabled: !a.no_policy,
                    policies: a.policies,
                    redact: a.redact.parse()?,
                    budget: std::time::Duration::from_millis(a.policy_budget_ms),
                },
                rate_limit: rate_limit(a.rate_limit, a.rate_burst)?,
                body_timeout: std::time::Duration::try_from_secs_f64(a.body_timeout)
                    .ok()
                    .filter(|d| !d.is_zero())
                    .ok_or("--body-timeout must be a positive number of seconds")?,
                faults: None,
                connections: crate::conn::ConnLimits {
                    header_timeout: std::time::Duration::try_from_secs_f64(a.header_timeout)
                        .ok()
                        .filter(|d| !d.is_zero())
                        .ok_or("--header-timeout must be a positive number of seconds")?,
                    max_connections: a.max_connections.max(1),
                    max_per_address: a.max_connections_per_address.max(1),
                },
                reads_per_key: a.reads_per_key.max(1),
                query_budget: std::time::Duration::try_from_secs_f64(a.query_budget)
                    .ok()
                    .filter(|d| !d.is_zero())
                    .ok_or("--query-budget must be a positive number of seconds")?,
                idempotency_ttl: std::time::Duration::try_from_secs_f64(a.idempotency_ttl * 3600.0)
                    .ok()
                    .filter(|d| !d.is_zero())
                    .ok_or("--idempotency-ttl must be a positive number of hours")?,
                operator_token: a.operator_token,
                secure_cookies: a.secure_cookies,
                alerts: crate::alerts::AlertConfig {
                    max_attempts: a.alert_max_attempts.max(1),
                    timeout: positive(a.alert_timeout, "--alert-timeout")?,
                    per_destination: a.alert_per_destination.max(1),
                    retry_base: positive(a.alert_retry_base, "--alert-retry-base")?,
                    threshold_every: positive(a.alert_threshold_every, "--alert-threshold-every")?,
                    ..crate::alerts::AlertConfig::default()
                },
                log: crate::transparency::LogConfig {
                    origin: a.transparency.prefix()?,
                    key: log_key,
                    checkpoint_interval: std::time::Duration::try_from_secs_f64(
                        a.checkpoint_interval,
                    )
                    .ok()
                    .filter(|d| *d >= std::time::Duration::from_millis(100))
                    .ok_or("--checkpoint-interval must be at least 0.1 seconds")?,
                    integrate_interval: std::time::Duration::try_from_secs_f64(
                        a.integrate_interval,
                    )
                    .ok()
                    .filter(|d| *d >= std::time::Duration::from_millis(10))
                    .ok_or("--integrate-interval must be at least 0.01 seconds")?,
                    witness_policy: a.witness_policy,
                    witness_timeout: positive(a.witness_timeout, "--witness-timeout")?,
                },
            };
            let app = Application::build(cfg).await.map_err(|e| e.to_string())?;
            app.run_until_stopped(shutdown_signal())
                .await
                .map_err(|e| e.to_string())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Keys { command } => keys_cmd(command).await,
        Command::Verify(a) => match &a.file {
            Some(f) => {
                let log = a
                    .log_key
                    .as_deref()
                    .map(|k| read_log_proofs(k, a.witness_policy.as_ref(), &a.log_proof))
                    .transpose()?;
                verify_file(f, log.as_ref())
            }
            None => verify_db(&a.scope).await,
        },
        Command::Export(a) => export(&a).await,
        Command::Erase(a) => erase_cmd(&a).await,
        Command::Salts { command } => salts_cmd(command).await,
        Command::Copy(a) => copy(&a).await,
        Command::LogKey(a) => log_key(&a),
        Command::Witness(a) => witness(a).await,
        Command::Log {
            command: LogCommand::Monitor(a),
        } => monitor(a).await,
        Command::WitnessKey(a) => {
            let key = crate::witness::WitnessKey::load_or_create(
                &a.key.key,
                &a.key.name(),
                a.key.algorithm,
            )?;
            println!("{}", key.verifier().to_vkey());
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn witness(a: WitnessArgs) -> Result<ExitCode, String> {
    let listener = tokio::net::TcpListener::bind(&a.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", a.listen))?;
    let cfg = crate::witness::WitnessConfig {
        name: a.key.name(),
        key: a.key.key,
        state: a.state,
        logs: a.logs,
        limits: crate::conn::ConnLimits::default(),
        algorithm: a.key.algorithm,
    };
    let running = crate::witness::start(cfg, listener).await?;
    tracing::info!(
        addr = %running.addr,
        vkey = %running.verifier.to_vkey(),
        "witness listening (POST /add-checkpoint)"
    );
    shutdown_signal().await;
    running.stop().await;
    Ok(ExitCode::SUCCESS)
}

async fn monitor(a: MonitorArgs) -> Result<ExitCode, String> {
    let log_key = crate::log_proofs::read_log_key(&a.log_key)?;
    let policy = match &a.witness_policy {
        None => None,
        Some(path) => {
            let bytes =
                std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            Some(
                agentledger_tlog::policy::Policy::parse(&bytes)
                    .map_err(|e| format!("{}: not a tlog-policy: {e}", path.display()))?,
            )
        }
    };
    if a.interval == 0 || a.timeout == 0 {
        return Err("--interval and --timeout must be at least 1 second".into());
    }
    let code = crate::monitor::run(crate::monitor::MonitorConfig {
        url: a.url,
        key: a.key,
        log_key,
        state: a.state,
        policy,
        once: a.once,
        interval: std::time::Duration::from_secs(a.interval),
        timeout: std::time::Duration::from_secs(a.timeout),
    })
    .await;
    Ok(ExitCode::from(code))
}

fn log_key(a: &LogKeyArgs) -> Result<ExitCode, String> {
    let prefix = a.log.prefix()?;
    let key =
        crate::transparency::LogKey::load(&a.log.key_path(&a.db.db)?).map_err(|e| e.to_string())?;
    for project in &a.projects {
        let origin = crate::transparency::origin(&prefix, project);
        println!("{}", key.verifier(&origin)?.to_vkey());
    }
    Ok(ExitCode::SUCCESS)
}

async fn copy(a: &CopyArgs) -> Result<ExitCode, String> {
    // Opening a SQLite path creates it: a mistyped source must not become
    // an empty ledger copied over the target.
    if let Backend::Sqlite(o) = Backend::parse(&a.from).map_err(|e| e.to_string())?
        && !o.path.exists()
    {
        return Err(format!("--from: no ledger at {}", o.path.display()));
    }
    let from = open(&DbArg { db: a.from.clone() }).await?;
    let to = open(&DbArg { db: a.to.clone() }).await?;
    let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let mut shown = std::time::Instant::now();
    let mut progress = |p: &agentledger_store::import::CopyProgress| {
        if tty && (shown.elapsed().as_millis() >= 100 || p.sessions_done == p.sessions_total) {
            shown = std::time::Instant::now();
            let pct = (p.events_done * 100)
                .checked_div(p.events_total)
                .unwrap_or(100);
            let width = 30;
            let filled = (pct as usize * width / 100).min(width);
            eprint!(
                "\r[{}{}] {pct:>3}%  {}/{} events, {}/{} sessions ",
                "#".repeat(filled),
                " ".repeat(width - filled),
                p.events_done,
                p.events_total,
                p.sessions_done,
                p.sessions_total
            );
        }
    };
    let r =
        agentledger_store::import::copy_ledger(from.as_ref(), to.as_ref(), a.batch, &mut progress)
            .await;
    if tty {
        eprintln!();
    }
    from.close().await;
    to.close().await;
    let r = r.map_err(|e| format!("copy failed: {e}"))?;
    println!(
        "copied {} events ({} were already there) in {} sessions; {} projects, {} keys, {} policy sets",
        r.events_copied, r.events_already, r.sessions, r.projects, r.keys, r.policy_sets
    );
    if r.broken.is_empty() {
        println!("verified: every chain of the target is intact");
        Ok(ExitCode::SUCCESS)
    } else {
        for (p, s, why) in &r.broken {
            println!("FAIL project {p} session {s}: {why}");
        }
        Ok(ExitCode::FAILURE)
    }
}

async fn erase_cmd(a: &EraseArgs) -> Result<ExitCode, String> {
    use crate::erase::{EraseError, erase};
    let id = agentledger_core::EventId::parse_any(&a.event)
        .map_err(|_| format!("--event: {:?} is not an event id", a.event))?;
    // Who ran it, as the OS says; the record keeps it.
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "unknown".into());
    let store = open(&a.db).await?;
    let result = match store
        .project_by_name(&a.project)
        .await
        .map_err(|e| e.to_string())?
    {
        None => Err(format!("no project {:?}", a.project)),
        Some(p) => erase(store.as_ref(), &p, id, &format!("cli:{user}"), &a.reason)
            .await
            .map_err(|e| match e {
                EraseError::NotFound => format!("no event {id} in project {:?}", a.project),
                EraseError::AlreadyErased(f) => format!(
                    "event {id} is already erased (by {} at {}; its record is seq {})",
                    f.by,
                    f.at.to_rfc3339(),
                    f.record_seq
                ),
                EraseError::Invalid { field, message } => {
                    format!("--{field}: {message}")
                }
                EraseError::Store(e) => e.to_string(),
            }),
    };
    store.close().await;
    let e = result?;
    println!(
        "erased event {} (session {}, seq {}); record event_erased at seq {}",
        e.event_id, e.session_id, e.seq, e.record_seq
    );
    Ok(ExitCode::SUCCESS)
}

async fn salts_cmd(cmd: SaltsCommand) -> Result<ExitCode, String> {
    match cmd {
        SaltsCommand::Show { db, project, event } => {
            let id = agentledger_core::EventId::parse_any(&event)
                .map_err(|_| format!("--event: {event:?} is not an event id"))?;
            let store = open(&db).await?;
            let p = store
                .project_by_name(&project)
                .await
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("no project {project:?}"))?;
            let salt = store
                .redaction_salt(&p, id)
                .await
                .map_err(|e| e.to_string())?;
            store.close().await;
            match salt {
                Some(s) => {
                    println!("{}", hex::encode(s));
                    Ok(ExitCode::SUCCESS)
                }
                None => Err(
                    "no salt: the event was not redacted, its salt was destroyed, or it is not in that project"
                        .into(),
                ),
            }
        }
        SaltsCommand::Destroy { db, before, all } => {
            let before = match (before, all) {
                (_, true) => None,
                (Some(t), false) => Some(
                    agentledger_core::Micros::parse_rfc3339(&t)
                        .map_err(|_| format!("--before: {t:?} is not an RFC 3339 time"))?,
                ),
                (None, false) => return Err("give --before TIME or --all".into()),
            };
            let store = open(&db).await?;
            let n = store
                .destroy_redaction_salts(before)
                .await
                .map_err(|e| e.to_string())?;
            store.close().await;
            eprintln!("destroyed {n} redaction salts");
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn keys_cmd(cmd: KeysCommand) -> Result<ExitCode, String> {
    match cmd {
        KeysCommand::Create {
            db,
            project,
            name,
            admin,
        } => {
            let store = open(&db).await?;
            let key = keys::generate_key();
            store
                .create_key(
                    &project,
                    &name,
                    keys::hash_key(&key),
                    &keys::display_prefix(&key),
                    admin,
                )
                .await
                .map_err(|e| e.to_string())?;
            store.close().await;
            println!("{key}");
            Ok(ExitCode::SUCCESS)
        }
        KeysCommand::List { db } => {
            let store = open(&db).await?;
            let list = store.list_keys().await.map_err(|e| e.to_string())?;
            println!(
                "{:<21} {:<16} {:<12} {:<8} {:<5} {:<28} revoked",
                "id", "project", "name", "prefix", "admin", "created"
            );
            for k in list {
                println!(
                    "{:<21} {:<16} {:<12} {:<8} {:<5} {:<28} {}",
                    k.id,
                    k.project.name,
                    k.name,
                    k.prefix,
                    k.admin,
                    k.created_at,
                    k.revoked_at
                        .map(|t| t.to_string())
                        .unwrap_or_else(|| "-".into())
                );
            }
            store.close().await;
            Ok(ExitCode::SUCCESS)
        }
        KeysCommand::Revoke { db, id } => {
            let store = open(&db).await?;
            let done = store.revoke_key(&id).await.map_err(|e| e.to_string())?;
            store.close().await;
            if done {
                println!("revoked {id}");
                Ok(ExitCode::SUCCESS)
            } else {
                eprintln!("agentledger: no active key with id {id}");
                Ok(ExitCode::FAILURE)
            }
        }
    }
}

/// The projects a command covers.
async fn projects(store: &dyn EventStore, only: Option<&str>) -> Result<Vec<ProjectRef>, String> {
    match only {
        Some(name) => match store
            .project_by_name(name)
            .await
            .map_err(|e| e.to_string())?
        {
            Some(p) => Ok(vec![p]),
            None => Err(format!("no project named {name:?}")),
        },
        None => store.list_projects().await.map_err(|e| e.to_string()),
    }
}

/// Every session id of a project, oldest first.
async fn session_ids(store: &dyn EventStore, p: &ProjectRef) -> Result<Vec<String>, String> {
    let mut ids = Vec::new();
    let mut cursor = None;
    loop {
        let page = store
            .list_sessions(
                p,
                SessionQuery {
                    limit: 500,
                    cursor,
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| e.to_string())?;
        ids.extend(page.sessions.into_iter().map(|s| s.id));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    ids.reverse();
    Ok(ids)
}

/// The (project, session) pairs a command covers, oldest sessions first.
async fn scoped_sessions(
    store: &dyn EventStore,
    scope: &Scope,
) -> Result<Vec<(ProjectRef, String)>, String> {
    let mut out = Vec::new();
    for p in projects(store, scope.project.as_deref()).await? {
        let ids = match &scope.session {
            Some(s) => vec![s.clone()],
            None => session_ids(store, &p).await?,
        };
        out.extend(ids.into_iter().map(|id| (p.clone(), id)));
    }
    Ok(out)
}

async fn verify_db(scope: &Scope) -> Result<ExitCode, String> {
    let store = open(&scope.db).await?;
    let mut failures = 0;
    let mut checked = 0;
    let mut events = 0;
    for (p, id) in scoped_sessions(store.as_ref(), scope).await? {
        let report = verify_session(store.as_ref(), &p, &id)
            .await
            .map_err(|e| e.to_string())?;
        match report {
            None => {
                failures += 1;
                println!("FAIL {}/{id}: no such session", p.name);
            }
            Some(r) if r.valid => {
                checked += 1;
                events += r.events;
            }
            Some(r) => {
                failures += 1;
                println!(
                    "FAIL {}/{id}: broken at seq {}: {}",
                    p.name,
                    r.first_invalid_seq.unwrap_or(0),
                    r.reason.unwrap_or_default()
                );
            }
        }
    }
    store.close().await;
    println!("{checked} sessions verified ({events} events), {failures} failed");
    Ok(if failures == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Verify a JSON Lines export without the database. Each session's lines must
/// start at seq 1 and appear in seq order (as `export` writes them).
fn verify_file(path: &PathBuf, log: Option<&LogProofs>) -> Result<ExitCode, String> {
    let reader: Box<dyn BufRead> = if path.as_os_str() == "-" {
        Box::new(std::io::BufReader::new(std::io::stdin()))
    } else {
        Box::new(std::io::BufReader::new(
            std::fs::File::open(path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?,
        ))
    };
    let mut chains: Vec<((String, String), ChainVerifier)> = Vec::new();
    let mut index: HashMap<(String, String), usize> = HashMap::new();
    let mut bad_lines = 0;
    let mut hashes: SessionHashes = HashMap::new();
    let mut embedded: Vec<EmbeddedProof> = Vec::new();
    for (n, line) in reader.lines().enumerate() {
        let line = line.map_err(|e| format!("cannot read line {}: {e}", n + 1))?;
        if line.trim().is_empty() {
            continue;
        }
        if is_proof_line(&line) {
            match read_proof_line(n + 1, &line) {
                Ok(p) => embedded.push(p),
                Err(e) => {
                    bad_lines += 1;
                    println!("FAIL line {} (log proof): {e}", n + 1);
                }
            }
            continue;
        }
        let ev = match read_export_line(&line) {
            Ok(ev) => ev,
            Err(e) => {
                bad_lines += 1;
                match lenient_seq(&line) {
                    Some(seq) => println!("FAIL line {} (seq {seq}): {e}", n + 1),
                    None => println!("FAIL line {}: {e}", n + 1),
                }
                continue;
            }
        };
        let key = (ev.project.clone(), ev.session_id.clone());
        // Each session's hashes by seq (the chain check below refuses any other order).
        let chain = hashes.entry(key.clone()).or_default();
        if ev.seq == chain.len() as u64 + 1 {
            chain.push(ev.hash);
        }
        let i = *index.entry(key.clone()).or_insert_with(|| {
            chains.push((key, ChainVerifier::new()));
            chains.len() - 1
        });
        chains[i].1.push(&ev);
    }
    let mut broken = 0;
    let mut verified_events = 0;
    let total = chains.len();
    let mut intact = Vec::new();
    for ((project, session), v) in chains {
        let r = v.finish(None);
        if r.valid {
            verified_events += r.events;
            intact.push((project, session));
        } else {
            broken += 1;
            println!(
                "FAIL {project}/{session}: broken at seq {}: {}",
                r.first_invalid_seq.unwrap_or(0),
                r.reason.unwrap_or_default()
            );
        }
    }
    println!(
        "{} of {total} sessions verified ({verified_events} events), {broken} broken, {bad_lines} unreadable lines",
        total - broken
    );
    let not_logged = log.map_or(0, |log| check_log_proofs(log, &hashes, &intact, &embedded));
    if log.is_some() {
        println!(
            "{} of {} intact sessions proved in the transparency log",
            intact.len() - not_logged,
            intact.len()
        );
    } else if !embedded.is_empty() {
        println!(
            "{} log proof lines not checked: pass --log-key (and --witness-policy) to check \
             the sessions are in the transparency log",
            embedded.len()
        );
    }
    let failures = broken + bad_lines + not_logged;
    Ok(if failures == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The top-level members an export line may have (docs/hash-chain.md,
/// "Export format"). Anything else is refused: the hash does not cover it, so
/// it could say anything, and whoever reads the line could not tell.
const EXPORT_MEMBERS: &[&str] = &[
    "v",
    "project",
    "session_id",
    "seq",
    "id",
    "agent_id",
    "kind",
    "source_type",
    "dialect",
    "severity",
    "client_ts",
    "server_ts",
    "payload",
    "metadata",
    "payload_sha256",
    "prev_hash",
    "hash",
    // An erased event (payload null): who erased it, when, and its record's
    // seq, each checked against the chained event_erased record.
    "erased",
];

/// Members that only some envelope versions hash, with those versions: on a
/// line of another version they would be shown but not covered by the hash.
const VERSIONED_MEMBERS: &[(&str, &[u32])] = &[
    ("verdict", &[2, 3]),
    ("original_payload_sha256", &[2]),
    ("original_metadata_sha256", &[2]),
    ("original_payload_hmac", &[3]),
    ("original_metadata_hmac", &[3]),
    // The session header, on a session's first line (its hash is in that
    // event's v3 envelope).
    ("session_agent_id", &[3]),
    ("session_system_prompt", &[3]),
    ("session_metadata", &[3]),
    ("session_created_at", &[3]),
];

/// The envelope versions whose members are known here; lines of other versions
/// are refused by `into_event` with the version named.
const KNOWN_VERSIONS: std::ops::RangeInclusive<u32> = 1..=3;

/// One export line as an event, refusing any line that could be read two ways
/// (issue 13, finding 9): a member name repeated in any object at any depth
/// (other readers take the first value where serde takes the last, so a forged
/// `verdict` placed first would be what they show), a number beyond a double,
/// a top-level member not in the export format, or one the line's envelope
/// version does not hash.
fn read_export_line(line: &str) -> Result<agentledger_core::Event, String> {
    agentledger_core::ijson::check(line).map_err(|e| within_line(&e.0))?;
    let members: std::collections::BTreeMap<String, serde::de::IgnoredAny> =
        serde_json::from_str(line).map_err(|e| within_line(&e.to_string()))?;
    let versioned = |name: &str| VERSIONED_MEMBERS.iter().find(|(n, _)| *n == name);
    if let Some(name) = members
        .keys()
        .find(|n| !EXPORT_MEMBERS.contains(&n.as_str()) && versioned(n).is_none())
    {
        return Err(format!("unknown member {name:?}"));
    }
    let ev: ExportLine = serde_json::from_str(line).map_err(|e| within_line(&e.to_string()))?;
    // The hash covers the timestamp's text, and the server writes one form;
    // another spelling of the same instant is refused by name here rather
    // than surfacing later as an unexplained hash mismatch.
    for (name, ts) in [
        ("client_ts", ev.client_ts.as_deref()),
        ("server_ts", Some(&ev.server_ts)),
        ("session_created_at", ev.session_created_at.as_deref()),
        ("erased.at", ev.erased.as_ref().map(|e| e.at.as_str())),
    ] {
        if let Some(ts) = ts
            && agentledger_core::Micros::parse_rfc3339(ts).map(|t| t.to_rfc3339())
                != Ok(ts.to_owned())
        {
            return Err(format!(
                "member {name:?} is not a canonical timestamp (YYYY-MM-DDTHH:MM:SS.ffffffZ, UTC, years 0001 to 9999)"
            ));
        }
    }
    // Likewise hex digests and the id: the envelope holds the text as the
    // server wrote it (lowercase hex, canonical ULID); another spelling would
    // be re-encoded here and shown as it is to a reader.
    let lower_hex = |s: &str| s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    for (name, hex) in [
        ("payload_sha256", Some(ev.payload_sha256.as_str())),
        ("prev_hash", ev.prev_hash.as_deref()),
        ("hash", Some(ev.hash.as_str())),
        (
            "original_payload_sha256",
            ev.original_payload_sha256.as_deref(),
        ),
        (
            "original_metadata_sha256",
            ev.original_metadata_sha256.as_deref(),
        ),
        ("original_payload_hmac", ev.original_payload_hmac.as_deref()),
        (
            "original_metadata_hmac",
            ev.original_metadata_hmac.as_deref(),
        ),
    ] {
        if let Some(h) = hex
            && !lower_hex(h)
        {
            return Err(format!("member {name:?} is not lowercase hex"));
        }
    }
    if ev
        .id
        .parse::<agentledger_core::EventId>()
        .map(|id| id.to_string())
        != Ok(ev.id.clone())
    {
        return Err("member \"id\" is not a canonical event id (26-character ULID)".into());
    }
    if KNOWN_VERSIONS.contains(&ev.v) {
        for name in members.keys() {
            if let Some((_, versions)) = versioned(name)
                && !versions.contains(&ev.v)
            {
                return Err(format!(
                    "member {name:?} is not part of envelope version {}",
                    ev.v
                ));
            }
        }
    }
    ev.into_event()
}

/// serde_json ends its messages with "at line 1 column N": for a verifier
/// that reports file lines, say only the column.
fn within_line(message: &str) -> String {
    match message.rsplit_once(" at line 1 column ") {
        Some((what, column)) => format!("{what} (column {column})"),
        None => message.to_owned(),
    }
}

/// The `seq` a refused line claims, to say where it is; nothing else is
/// taken from a line that failed.
fn lenient_seq(line: &str) -> Option<u64> {
    serde_json::from_str::<serde_json::Value>(line)
        .ok()?
        .get("seq")?
        .as_u64()
}

async fn export(scope: &Scope) -> Result<ExitCode, String> {
    let store = open(&scope.db).await?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    // Each project's checkpoint, read once: every session of a project proves against it.
    let mut checkpoints: HashMap<String, Option<agentledger_store::log::LogCheckpoint>> =
        HashMap::new();
    for (p, id) in scoped_sessions(store.as_ref(), scope).await? {
        let mut after = 0;
        let mut last_event = None;
        loop {
            let piece = store
                .session_export_lines(&p, &id, after, 5_000, u64::MAX)
                .await
                .map_err(|e| e.to_string())?;
            let Some(last) = piece.last else { break };
            after = last.0;
            last_event = Some(last);
            out.write_all(&piece.lines).map_err(|e| e.to_string())?;
            if piece.read < 5_000 {
                break;
            }
        }
        let Some(last_event) = last_event else {
            continue;
        };
        if !checkpoints.contains_key(&p.name) {
            let cp = crate::export_proof::best_witnessed(store.as_ref(), &p)
                .await
                .map_err(|e| e.to_string())?;
            checkpoints.insert(p.name.clone(), cp);
        }
        if let Some(Some(cp)) = checkpoints.get(&p.name) {
            let line = crate::export_proof::proof_line(store.as_ref(), cp, &p, &id, last_event)
                .await
                .map_err(|e| e.to_string())?;
            if let Some(line) = line {
                out.write_all(&line).map_err(|e| e.to_string())?;
            }
        }
    }
    out.flush().map_err(|e| e.to_string())?;
    drop(out);
    store.close().await;
    Ok(ExitCode::SUCCESS)
}

/// A positive number of seconds, or the flag's error.
fn positive(secs: f64, flag: &str) -> Result<std::time::Duration, String> {
    std::time::Duration::try_from_secs_f64(secs)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("{flag} must be a positive number of seconds"))
}
