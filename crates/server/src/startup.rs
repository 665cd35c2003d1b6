//! Building and running the server. Tests build an [`Application`] on port 0
//! with a temporary database and talk HTTP to it.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use tokio::net::TcpListener;

use agentledger_core::keys;
use agentledger_store::Backend;
use agentledger_store::EventStore;

use agentledger_dialects::fabraix::SchemaCache;

use crate::error::ApiError;

/// Bytes (estimated, regex caches included) of compiled Fabraix schemas kept
/// in memory; see docs/dialects.md.
const SCHEMA_CACHE_BYTES: usize = 64 * 1024 * 1024;
/// Trace ids whose session an OTLP span named, remembered for later requests.
const TRACE_SESSION_ENTRIES: usize = 100_000;
use crate::metrics::{CommitObserver, Metrics};
use crate::routes;
use agentledger_policy::{Engine, Redact, Source};

use crate::ingest::traces::TraceSessions;
use crate::state::AppState;

/// Everything `serve` needs (each field is a CLI flag and an AGENTLEDGER_* variable).
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub listen: String,
    /// `--db`: `sqlite:PATH` or a path (the embedded default), or a
    /// `postgres://` URL.
    pub db: String,
    pub bootstrap_key: Option<String>,
    pub read_connections: u32,
    /// `--read-mmap`: MiB each SQLite read connection memory-maps (0: none).
    pub read_mmap_mib: u64,
    pub max_pending_events: usize,
    pub policy: PolicyConfig,
    /// Requests per second per API key; `None` for no limit.
    pub rate_limit: Option<crate::ratelimit::RateLimit>,
    /// How long a client may take to send a request body before 408.
    pub body_timeout: Duration,
    /// Storage faults to inject at the store boundary (tests; no flag).
    pub faults: Option<Arc<agentledger_store::sqlite::Faults>>,
    /// Bounds on connections: header deadline, open connections in all and
    /// per client address.
    pub connections: crate::conn::ConnLimits,
    /// Reads (GET requests) one API key may have in flight; more wait
    /// briefly, then get 429.
    pub reads_per_key: usize,
    /// Longest a listing, count or search may run before it is stopped (503).
    pub query_budget: Duration,
    /// How long an answer stays kept under its `Idempotency-Key`.
    pub idempotency_ttl: Duration,
    /// The operator's credential for server-wide routes (`/metrics`): no
    /// project's key, not even an admin's, sees other projects' figures.
    pub operator_token: Option<String>,
    /// `--secure-cookies`: the console's session cookie is marked `Secure`.
    pub secure_cookies: bool,
    pub alerts: crate::alerts::AlertConfig,
    /// The transparency log: key file, origin, intervals.
    pub log: crate::transparency::LogConfig,
}

/// The policy checkpoint's settings.
#[derive(Debug, Clone)]
pub struct PolicyConfig {
    /// Off: events are stored without verdicts.
    pub enabled: bool,
    /// A .cedar file or a directory of them; otherwise the saved set, else the defaults.
    pub policies: Option<PathBuf>,
    pub redact: Redact,
    /// Detector and policy time per event.
    pub budget: Duration,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            enabled: true,
            policies: None,
            redact: Redact::default(),
            budget: Duration::from_millis(50),
        }
    }
}

impl ServeConfig {
    /// Defaults for tests on a SQLite file (set `db` to a URL for another backend).
    pub fn for_tests(db: impl AsRef<std::path::Path>) -> Self {
        ServeConfig {
            listen: "127.0.0.1:0".into(),
            db: db.as_ref().to_string_lossy().into_owned(),
            bootstrap_key: None,
            read_connections: 4,
            read_mmap_mib: 0,
            max_pending_events: 100_000,
            // Wall-clock, the 50 ms budget flags an event whose judging
            // thread was merely descheduled, and the test machines are
            // shared (a console test saw a stray `evaluation_budget_exceeded`
            // flag under load). The budget's own behaviour is tested in the
            // policy crate.
            policy: PolicyConfig {
                budget: Duration::from_secs(5),
                ..PolicyConfig::default()
            },
            rate_limit: None,
            body_timeout: crate::body::DEFAULT_BODY_TIMEOUT,
            faults: None,
            connections: crate::conn::ConnLimits::default(),
            reads_per_key: 2,
            query_budget: Duration::from_secs(2),
            idempotency_ttl: Duration::from_secs(24 * 3600),
            operator_token: None,
            secure_cookies: false,
            alerts: crate::alerts::AlertConfig {
                poll: Duration::from_millis(100),
                retry_base: Duration::from_millis(200),
                threshold_every: Duration::from_millis(300),
                timeout: Duration::from_secs(2),
                ..crate::alerts::AlertConfig::default()
            },
            // The key beside the test's database; checkpoints often, so tests wait little.
            log: crate::transparency::LogConfig {
                key: test_key_path(db.as_ref()),
                origin: "agentledger.test".into(),
                checkpoint_interval: Duration::from_millis(300),
                integrate_interval: Duration::from_millis(100),
                witness_policy: None,
                witness_timeout: Duration::from_secs(2),
            },
        }
    }
}

/// Tests' log key: beside a SQLite file, or (a database URL) in the temporary directory under
/// a name derived from the URL, so a restart on the same database finds the same key.
fn test_key_path(db: &std::path::Path) -> PathBuf {
    let text = db.to_string_lossy();
    if text.contains("://") {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(text.as_bytes());
        std::env::temp_dir().join(format!(
            "agentledger-test-{}.log-key",
            hex::encode(&digest[..8])
        ))
    } else {
        db.with_file_name("log.key")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("cannot open the ledger database: {0}")]
    Store(#[from] agentledger_store::StoreError),
    #[error("policies: {0}")]
    Policy(String),
    #[error("{0}")]
    Config(String),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
}

pub struct Application {
    listener: TcpListener,
    router: Router,
    connections: crate::conn::ConnLimits,
    store: Arc<dyn EventStore>,
    addr: SocketAddr,
    live: Arc<crate::live::Live>,
    alerts: Arc<crate::alerts::Alerting>,
    log_tasks: crate::transparency::LogTasks,
}

impl Application {
    pub async fn build(cfg: ServeConfig) -> Result<Self, StartupError> {
        let started = Instant::now();
        let operator = cfg
            .operator_token
            .as_deref()
            .map(|t| keys::check_strength(t).map(|()| keys::hash_key(t)))
            .transpose()
            .map_err(|e| StartupError::Config(format!("--operator-token: {e}")))?;
        let metrics = Arc::new(Metrics::new());
        // The one composition root: --db picks the backend.
        let mut backend = Backend::parse(&cfg.db)?
            .observer(Arc::new(CommitObserver(metrics.clone())))
            .query_budget(cfg.query_budget)
            .idempotency_ttl(cfg.idempotency_ttl);
        backend = match backend {
            Backend::Sqlite(mut o) => {
                o.read_connections = cfg.read_connections;
                o.max_pending_events = cfg.max_pending_events;
                o.faults = cfg.faults.clone();
                o.read_mmap = read_mmap_bytes(cfg.read_mmap_mib)?;
                if o.read_mmap > 0 {
                    tracing::warn!(
                        mib = cfg.read_mmap_mib,
                        connections = cfg.read_connections,
                        "memory-mapped reads are on (--read-mmap): the pages each read connection \
                         touches count in this process's RSS, once per connection, and a read \
                         error of the disk ends the process (SIGBUS) instead of failing the request"
                    );
                }
                Backend::Sqlite(o)
            }
            Backend::Postgres(mut o) => {
                if cfg.faults.is_some() {
                    return Err(StartupError::Config(
                        "storage fault injection is for the SQLite backend only".into(),
                    ));
                }
                if cfg.read_mmap_mib > 0 {
                    return Err(StartupError::Config(
                        "--read-mmap maps the embedded SQLite database; with PostgreSQL it cannot apply (PostgreSQL manages its own memory)".into(),
                    ));
                }
                o.max_pending_events = cfg.max_pending_events;
                o.read_connections = cfg.read_connections as usize;
                Backend::Postgres(o)
            }
        };
        let backend_name = backend.name();
        crate::transparency::check_origin_prefix(&cfg.log.origin).map_err(StartupError::Config)?;
        // Before the database: a key file others can read stops the start, loudly.
        let log_key = crate::transparency::LogKey::load_or_create(&cfg.log.key)
            .map_err(|e| StartupError::Config(e.to_string()))?;
        if log_key.is_shared() {
            tracing::warn!(
                path = %cfg.log.key.display(),
                "the log key file is an older one (its key is named {:?}, not {:?}): every \
                 project's log is signed with its one key, so a C2SP tlog-policy can name only \
                 one of these logs (it refuses two log lines with one public key). Key files \
                 written now derive a key per log; replacing this one re-keys every log, which \
                 every verifier and witness that holds a log's key must then be given \
                 (docs/transparency.md \"Origin and key\")",
                log_key.file_key_name(),
                crate::transparency::KEY_FILE_NAME
            );
        }
        let witnessing = match &cfg.log.witness_policy {
            Some(path) => {
                let policy = crate::cosign::WitnessPolicy::load(path, &cfg.log.origin, &log_key)
                    .map_err(StartupError::Config)?;
                Some(Arc::new(
                    crate::cosign::Witnessing::new(policy, cfg.log.witness_timeout)
                        .map_err(StartupError::Config)?,
                ))
            }
            None => None,
        };
        let store = backend.open().await?;
        // The store logged each at open; /metrics shows the count.
        metrics.durability_warnings(store.durability_warnings().len());
        bootstrap_key(store.as_ref(), cfg.bootstrap_key.as_deref()).await?;
        let policy = policy_engine(store.as_ref(), &cfg.policy).await?;
        let alerts = Arc::new(crate::alerts::Alerting::new(cfg.alerts.clone()));
        alerts.reload(store.as_ref()).await?;

        let listener =
            TcpListener::bind(&cfg.listen)
                .await
                .map_err(|source| StartupError::Listen {
                    addr: cfg.listen.clone(),
                    source,
                })?;
        let addr = listener
            .local_addr()
            .map_err(|source| StartupError::Listen {
                addr: cfg.listen.clone(),
                source,
            })?;
        let state = AppState {
            store: store.clone(),
            metrics,
            schemas: Arc::new(SchemaCache::new(SCHEMA_CACHE_BYTES)),
            traces: Arc::new(TraceSessions::new(TRACE_SESSION_ENTRIES)),
            policy,
            auth: Arc::default(),
            operator,
            readers: Arc::new(crate::auth::ReadGate::new(cfg.reads_per_key)),
            limiter: cfg
                .rate_limit
                .map(|l| Arc::new(crate::ratelimit::RateLimiter::new(l))),
            live: Arc::default(),
            console: Arc::new(crate::console::ConsoleState::new(cfg.secure_cookies)),
            alerts: alerts.clone(),
            witnessing: witnessing.clone(),
        };
        alerts.spawn_workers(store.clone());
        let live = state.live.clone();
        let log_tasks = crate::transparency::spawn(
            store.clone(),
            Arc::new(log_key),
            &cfg.log,
            witnessing,
            state.metrics.clone(),
        );
        let router = routes::router()
            .merge(crate::console::router())
            .merge(crate::mcp::router())
            .route_layer(middleware::from_fn(refuse_nul_in_url))
            .route_layer(middleware::from_fn_with_state(state.clone(), observe))
            .fallback(|| async { ApiError::NotFound("no such route").into_response() })
            .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed.into_response() })
            .layer(axum::Extension(crate::body::BodyTimeout(cfg.body_timeout)))
            .with_state(state);
        tracing::info!(%addr, backend = backend_name, ms = started.elapsed().as_millis() as u64, "agentledger ready");
        Ok(Application {
            listener,
            router,
            connections: cfg.connections,
            store,
            addr,
            live,
            alerts,
            log_tasks,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serve until `shutdown` resolves; then stop accepting, let in-flight
    /// requests finish, commit what the writer holds, and return.
    pub async fn run_until_stopped(
        mut self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        // Live streams never end by themselves: end them when the stop
        // comes, so the graceful shutdown does not wait on them.
        let live = self.live.clone();
        let shutdown = async move {
            shutdown.await;
            live.close();
        };
        let result =
            crate::conn::serve(self.listener, self.router, self.connections, shutdown).await;
        self.alerts.shutdown();
        // A pass cut short commits nothing; the next start integrates it again.
        self.log_tasks.stop();
        self.store.close().await;
        tracing::info!("agentledger stopped");
        result
    }
}

/// On an empty database, create the admin key of project `default`: the
/// configured value (refused if guessable by its shape), or a generated one
/// printed once on standard output, apart from the log on standard error.
async fn bootstrap_key(
    store: &dyn EventStore,
    configured: Option<&str>,
) -> Result<(), StartupError> {
    if store.count_keys().await? > 0 {
        return Ok(());
    }
    let key = match configured.map(str::trim).filter(|k| !k.is_empty()) {
        Some(k) => {
            keys::check_strength(k)
                .map_err(|e| StartupError::Config(format!("--bootstrap-key: {e}")))?;
            k.to_owned()
        }
        None => {
            let k = keys::generate_key();
            // Deliberately not through tracing: this is the one time the
            // secret is shown, and only stdout carries it.
            tracing::warn!(
                "created the admin key of project \"default\"; it is printed once, on standard output"
            );
            println!("{k}");
            k
        }
    };
    store
        .create_key(
            "default",
            "bootstrap",
            keys::hash_key(&key),
            &keys::display_prefix(&key),
            true,
        )
        .await?;
    Ok(())
}

/// No id, filter or search term of the ledger holds NUL, and PostgreSQL text
/// cannot (a NUL bound to a query is an error there, where SQLite matched
/// nothing): a URL holding one (`%00`, the only way a URL can) is refused
/// with 400 on every route and either backend, before any handler reads it.
async fn refuse_nul_in_url(req: Request, next: Next) -> Response {
    if req
        .uri()
        .path_and_query()
        .is_some_and(|pq| pq.as_str().contains("%00"))
    {
        return ApiError::Input(agentledger_dialects::InputError::invalid(
            "url",
            "the URL holds a NUL character (%00), which no id, filter or search term may hold",
        ))
        .into_response();
    }
    next.run(req).await
}

/// Latency histogram and an access log line per request (no headers, no query
/// string: keys and search terms stay out of the logs).
async fn observe(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().clone();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".into());
    let resp = next.run(req).await;
    let elapsed = started.elapsed();
    let status = resp.status().as_u16();
    // A refused write, counted the same way for every dialect whatever
    // refused it (an extractor or the pipeline).
    if method == axum::http::Method::POST
        && let (Some(dialect), Some(refusal)) = (
            resp.extensions().get::<agentledger_core::Dialect>(),
            resp.extensions().get::<crate::ingest::Refusal>(),
        )
    {
        st.metrics.rejected(dialect.as_str(), refusal.0);
    }
    st.metrics.request(method.as_str(), &route, status, elapsed);
    tracing::debug!(%method, %route, status, us = elapsed.as_micros() as u64, "request");
    resp
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown requested; finishing in-flight requests");
}

/// Read a policy file, or every `.cedar` file of a directory (sorted by name).
fn read_policies(path: &std::path::Path) -> Result<Vec<Source>, StartupError> {
    let io = |e: std::io::Error| StartupError::Policy(format!("{}: {e}", path.display()));
    let files: Vec<PathBuf> = if path.is_dir() {
        let mut v: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(io)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "cedar"))
            .collect();
        v.sort();
        v
    } else {
        vec![path.to_path_buf()]
    };
    if files.is_empty() {
        return Err(StartupError::Policy(format!(
            "{}: no .cedar files",
            path.display()
        )));
    }
    files
        .into_iter()
        .map(|f| {
            Ok(Source {
                name: f.display().to_string(),
                text: std::fs::read_to_string(&f)
                    .map_err(|e| StartupError::Policy(format!("{}: {e}", f.display())))?,
            })
        })
        .collect()
}

/// The policy engine. The operator's default set: `--policies` files, else a
/// server-wide set saved by an earlier version (with a warning), else the
/// built-in defaults. Then every project's own saved set. A set that does not
/// validate stops the start with its file (or project), line and reason.
async fn policy_engine(
    store: &dyn EventStore,
    cfg: &PolicyConfig,
) -> Result<Option<Arc<Engine>>, StartupError> {
    if !cfg.enabled {
        tracing::warn!("policy checkpoint off: events are stored without verdicts");
        return Ok(None);
    }
    let engine = Engine::with_defaults(cfg.budget, cfg.redact)
        .map_err(|e| StartupError::Policy(e.to_string()))?;
    let saved = store.load_policy_sets().await?;
    let legacy = saved
        .iter()
        .find(|s| s.project.is_none())
        .and_then(|s| crate::routes::policy::deserialise(&s.sources));
    let default = match (&cfg.policies, legacy) {
        (Some(p), _) => Some(read_policies(p)?),
        (None, Some(sources)) => {
            tracing::warn!(
                "a policy set saved through the API before sets belonged to projects is the \
                 default for every project; save each project's own set (PUT /api/v1/policies) \
                 or start with --policies to replace it"
            );
            Some(
                sources
                    .into_iter()
                    .map(|s| Source {
                        name: format!("saved:{}", s.name),
                        text: s.text,
                    })
                    .collect(),
            )
        }
        (None, None) => None,
    };
    if let Some(sources) = default {
        engine
            .replace(sources)
            .map_err(|e| StartupError::Policy(e.to_string()))?;
    }
    let mut projects = 0;
    for set in &saved {
        let Some(project) = set.project else { continue };
        // One project's set that no longer compiles (a Cedar or schema
        // upgrade) must not stop the server for every project: that project
        // is judged by the default set, and the log says so loudly.
        let compiled = crate::routes::policy::deserialise(&set.sources)
            .ok_or_else(|| "the saved set is unreadable".to_owned())
            .and_then(|sources| {
                engine
                    .replace_for(project.0, sources)
                    .map_err(|e| e.to_string())
            });
        match compiled {
            Ok(_) => projects += 1,
            Err(e) => tracing::error!(
                project = project.0,
                error = %e,
                "a project's saved policy set does not compile; the default set judges it until its admin saves a valid one"
            ),
        }
    }
    tracing::info!(
        policies = engine.current().info.len(),
        projects_with_own_set = projects,
        redact_secrets = cfg.redact.secrets,
        redact_pii = cfg.redact.pii,
        "policy checkpoint on"
    );
    Ok(Some(Arc::new(engine)))
}

/// The largest `--read-mmap` (MiB): SQLite's compile-time cap
/// (`SQLITE_MAX_MMAP_SIZE` in .cargo/config.toml), 1 TiB.
pub const MAX_READ_MMAP_MIB: u64 = 1 << 20;

/// `--read-mmap` in bytes, refused past [`MAX_READ_MMAP_MIB`].
fn read_mmap_bytes(mib: u64) -> Result<u64, StartupError> {
    if mib > MAX_READ_MMAP_MIB {
        return Err(StartupError::Config(format!(
            "--read-mmap {mib} is more than SQLite maps ({MAX_READ_MMAP_MIB} MiB, 1 TiB)"
        )));
    }
    Ok(mib << 20)
}
