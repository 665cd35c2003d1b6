//! The PostgreSQL backend: many agentledger nodes on one database, with the
//! same promises as SQLite.
//!
//! Why tokio-postgres with deadpool-postgres (not sqlx): the driver is async
//! end to end (no blocking thread per query), speaks the binary protocol,
//! binds arrays so a whole group commit is one `INSERT ... SELECT FROM
//! unnest(...)` per table, and its connection config takes multi-host URLs
//! with `target_session_attrs=read-write`, which is how nodes follow a
//! failover. sqlx's compile-time checked queries would need a database (or
//! checked-in metadata) to build, and every listing here builds its SQL at
//! run time anyway. deadpool drops broken connections and opens new ones on
//! demand, so the store reconnects by itself when the database comes back.
//!
//! * Writes: `writer.rs` (group commit, multi-node locking, retries, an
//!   unknown COMMIT outcome).
//! * Reads: `reads.rs` (listings, search, sums); each budgeted read runs in
//!   one read-only REPEATABLE READ transaction with `statement_timeout` set
//!   to the query budget, so its count and page see one snapshot and an
//!   expensive request is stopped rather than holding a connection.
//! * Schema: `schema.rs` (versioned migrations under an advisory lock).
//! * Durability: at open the database's `fsync`, `full_page_writes` and
//!   `synchronous_commit` are read; the writer's connections run with
//!   `synchronous_commit` at least `on` whatever the default, and anything
//!   that still weakens durability is logged loudly and reported by
//!   [`EventStore::durability_warnings`].
//! * TLS is not supported yet: connect over a trusted network or a local socket.

mod alerts;
mod errors;
mod import;
mod reads;
mod rollups;
mod rows;
mod schema;
mod tlog;
mod writer;

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use subtle::ConstantTimeEq;
use tokio::sync::{Mutex, Semaphore, mpsc, oneshot};
use tokio_postgres::NoTls;

use agentledger_core::{Event, EventId, Micros, ProjectId, Session};

use crate::{
    AgentPage, ApiKeyInfo, AppendOutcome, AppendRequest, DerivedColumns, EventPage, EventQuery,
    EventStore, LlmGroup, LlmUsageRow, ProjectRef, Queued, SavedPolicySet, SessionListing,
    SessionPage, StoreError, StoreResult, StoredReply, UsageGroup, UsageRow, WriterObserver,
};
use errors::{describe, pool_error, store_error};
use rows::{DERIVED_COLS, EVENT_COLS, EVENT_FROM, SESSION_COLS, event_from_row, get};
use writer::{Cmd, Writer};

pub use schema::{MigrateError, SCHEMA_VERSION};
pub use writer::INSERT_EVENTS_SQL;

/// How to open a PostgreSQL ledger.
#[derive(Clone)]
pub struct PostgresOptions {
    /// `postgres://user@host:port/db`, or several hosts
    /// (`postgres://h1,h2/db?target_session_attrs=read-write`).
    pub url: String,
    /// Connections for reads and administrative writes.
    pub read_connections: usize,
    /// Events that may wait for the writer before appends are refused (503).
    pub max_pending_events: usize,
    /// Requests that may wait for the writer before appends are refused (503).
    pub max_pending_requests: usize,
    pub observer: Option<Arc<dyn WriterObserver>>,
    /// Longest a listing, count or search may run before it is stopped.
    pub query_budget: Duration,
    /// Longest a read waits for a free connection before it is refused as busy.
    pub read_wait: Duration,
    /// Longest a new connection may take (a database that is down is
    /// reported as busy after this, not waited for).
    pub connect_timeout: Duration,
    /// How long a reply stays kept under its idempotency key.
    pub idempotency_ttl: Duration,
}

impl PostgresOptions {
    pub fn new(url: impl Into<String>) -> Self {
        PostgresOptions {
            url: url.into(),
            read_connections: 8,
            max_pending_events: 100_000,
            max_pending_requests: 8_192,
            observer: None,
            query_budget: Duration::from_secs(2),
            read_wait: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(3),
            idempotency_ttl: Duration::from_secs(24 * 3600),
        }
    }
}

pub struct PostgresStore {
    tx: mpsc::Sender<Cmd>,
    pool: Pool,
    permits: Arc<Semaphore>,
    max_pending_events: usize,
    depth: Arc<AtomicUsize>,
    writer: Mutex<Option<tokio::task::JoinHandle<()>>>,
    query_budget: Duration,
    idempotency_ttl: Duration,
    warnings: Vec<String>,
}

fn storage(e: impl std::fmt::Display) -> StoreError {
    StoreError::Storage(e.to_string())
}

/// `synchronous_commit` values from weakest to strongest.
const SYNC_LEVELS: &[&str] = &["off", "local", "remote_write", "on", "remote_apply"];

fn pool_of(cfg: tokio_postgres::Config, size: usize, opts: &PostgresOptions) -> StoreResult<Pool> {
    let manager = Manager::from_config(
        cfg,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(size.max(1))
        .wait_timeout(Some(opts.read_wait.max(Duration::from_millis(10))))
        .create_timeout(Some(opts.connect_timeout))
        .recycle_timeout(Some(opts.connect_timeout))
        .runtime(Runtime::Tokio1)
        .build()
        .map_err(storage)
}

/// The URL without its password, for messages.
pub(crate) fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let cred = &url[s + 3..at];
            match cred.find(':') {
                Some(c) => format!("{}{}:***{}", &url[..s + 3], &cred[..c], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

impl PostgresStore {
    /// A session's event rows with seq > `after_seq`, at most `limit`, in
    /// seq order, with the derived columns ([`EVENT_COLS`], [`DERIVED_COLS`]).
    async fn session_rows(
        &self,
        project: &ProjectRef,
        session_id: &str,
        after_seq: u64,
        limit: u32,
    ) -> StoreResult<Vec<tokio_postgres::Row>> {
        let conn = self.conn().await?;
        let after = i64::try_from(after_seq).unwrap_or(i64::MAX);
        conn.query(
            &format!(
                "SELECT {EVENT_COLS}, {DERIVED_COLS} FROM {EVENT_FROM}
                 WHERE e.project_id = $1
                   AND e.session_ref = (SELECT ref FROM sessions WHERE project_id = $1 AND id = $2)
                   AND e.seq > $3 ORDER BY e.seq LIMIT $4"
            ),
            &[&project.id.0, &session_id, &after, &i64::from(limit)],
        )
        .await
        .map_err(|e| self.err(e))
    }

    /// Connect, check the server's durability settings, migrate, start the writer.
    pub async fn open(opts: PostgresOptions) -> StoreResult<Self> {
        let mut cfg = tokio_postgres::Config::from_str(&opts.url).map_err(|e| {
            StoreError::Storage(format!(
                "not a PostgreSQL URL ({}): {e}",
                redacted(&opts.url)
            ))
        })?;
        if cfg.get_connect_timeout().is_none() {
            cfg.connect_timeout(opts.connect_timeout);
        }
        if cfg.get_application_name().is_none() {
            cfg.application_name("agentledger");
        }
        // A connection whose peer vanished (a failover, a cable) is noticed
        // in seconds, not the kernel's two hours.
        cfg.keepalives_idle(Duration::from_secs(10));

        let (mut client, conn) = cfg.connect(NoTls).await.map_err(|e| {
            StoreError::Storage(format!(
                "cannot connect to PostgreSQL at {}: {}",
                redacted(&opts.url),
                describe(&e)
            ))
        })?;
        let driver = tokio::spawn(async move {
            let _ = conn.await;
        });
        let setup = Self::setup(&mut client).await;
        drop(client);
        let _ = driver.await;
        let (warnings, sync_default) = setup?;

        // The writer's sessions commit with synchronous_commit at least `on`.
        let mut wcfg = cfg.clone();
        let strong = SYNC_LEVELS
            .iter()
            .position(|l| *l == sync_default)
            .is_some_and(|i| i >= 3);
        let mut options = cfg.get_options().unwrap_or_default().to_owned();
        if !strong {
            options.push_str(" -c synchronous_commit=on");
        }
        // A writer cut off mid-transaction must not hold its locks for long.
        options.push_str(" -c idle_in_transaction_session_timeout=15000");
        wcfg.options(options.trim());

        let pool = pool_of(cfg, opts.read_connections, &opts)?;
        let write_pool = pool_of(wcfg, 1, &opts)?;
        let (tx, rx) = mpsc::channel(opts.max_pending_requests.max(16));
        let depth = Arc::new(AtomicUsize::new(0));
        let writer = Writer {
            pool: write_pool,
            states: lru::LruCache::new(
                std::num::NonZeroUsize::new(crate::kept::STATE_CACHE)
                    .unwrap_or(std::num::NonZeroUsize::MIN),
            ),
            pending_states: std::collections::HashMap::new(),
            check_pool: pool.clone(),
            observer: opts.observer.clone(),
            depth: depth.clone(),
            idempotency_ttl: opts.idempotency_ttl,
            last_purge: None,
        };
        let handle = tokio::spawn(writer.run(rx));
        let max_pending_events = opts
            .max_pending_events
            .max(agentledger_core::limits::MAX_BATCH_EVENTS);
        Ok(PostgresStore {
            tx,
            pool,
            permits: Arc::new(Semaphore::new(max_pending_events)),
            max_pending_events,
            depth,
            writer: Mutex::new(Some(handle)),
            query_budget: opts.query_budget,
            idempotency_ttl: opts.idempotency_ttl,
            warnings,
        })
    }

    /// Migrate and read the settings that decide durability. Returns the
    /// warnings and the database's default `synchronous_commit`.
    async fn setup(client: &mut tokio_postgres::Client) -> StoreResult<(Vec<String>, String)> {
        let show = |name: &'static str| {
            let client = &*client;
            async move {
                client
                    .query_one(&format!("SHOW {name}"), &[])
                    .await
                    .and_then(|r| r.try_get::<_, String>(0))
                    .map_err(|e| StoreError::Storage(format!("SHOW {name}: {}", describe(&e))))
            }
        };
        let encoding = show("server_encoding").await?;
        if !encoding.eq_ignore_ascii_case("UTF8") {
            return Err(StoreError::Storage(format!(
                "the database's encoding is {encoding}; agentledger needs UTF8 (events are stored as received)"
            )));
        }
        let fsync = show("fsync").await?;
        let full_page_writes = show("full_page_writes").await?;
        let sync = show("synchronous_commit").await?;
        let mut warnings = Vec::new();
        if fsync != "on" {
            warnings.push(
                "PostgreSQL runs with fsync=off: an acknowledged event can be lost if the database host crashes".to_owned(),
            );
        }
        if full_page_writes != "on" {
            warnings.push(
                "PostgreSQL runs with full_page_writes=off: a crash can corrupt pages holding acknowledged events".to_owned(),
            );
        }
        if !SYNC_LEVELS.iter().skip(3).any(|l| *l == sync) {
            warnings.push(format!(
                "PostgreSQL's default synchronous_commit is {sync}; agentledger's writer sets it to on for its own transactions"
            ));
        }
        for w in &warnings {
            tracing::warn!("DURABILITY: {w}");
        }
        schema::migrate(client).await.map_err(|e| match e {
            MigrateError::Db(d) => StoreError::Storage(format!("migrating: {}", describe(&d))),
            newer => StoreError::Storage(newer.to_string()),
        })?;
        Ok((warnings, sync))
    }

    async fn conn(&self) -> StoreResult<Object> {
        self.pool.get().await.map_err(pool_error)
    }

    fn err(&self, e: tokio_postgres::Error) -> StoreError {
        store_error(e, self.query_budget)
    }

    fn budget(&self, e: StoreError) -> StoreError {
        match e {
            StoreError::QueryBudget(_) => StoreError::QueryBudget(self.query_budget),
            e => e,
        }
    }

    /// Begin a read that may cost as much as the data asks (listings,
    /// counts, searches, sums): one read-only snapshot, stopped by the
    /// server once it has run for the query budget.
    async fn begin_budgeted<'c>(
        &self,
        conn: &'c mut Object,
    ) -> StoreResult<deadpool_postgres::Transaction<'c>> {
        let tx = conn
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(|e| self.err(e))?;
        let ms = self.query_budget.as_millis().max(1);
        tx.batch_execute(&format!("SET LOCAL statement_timeout = {ms}"))
            .await
            .map_err(|e| self.err(e))?;
        Ok(tx)
    }

    async fn end_budgeted<T>(
        &self,
        tx: deadpool_postgres::Transaction<'_>,
        r: StoreResult<T>,
    ) -> StoreResult<T> {
        let r = r.map_err(|e| self.budget(e))?;
        tx.commit().await.map_err(|e| self.err(e))?;
        Ok(r)
    }
}

fn key_from_row(r: &tokio_postgres::Row) -> StoreResult<ApiKeyInfo> {
    Ok(ApiKeyInfo {
        id: get(r, "id")?,
        name: get(r, "name")?,
        prefix: get(r, "prefix")?,
        admin: get(r, "admin")?,
        created_at: Micros(get(r, "created_at")?),
        revoked_at: get::<Option<i64>>(r, "revoked_at")?.map(Micros),
        project: ProjectRef {
            id: ProjectId(get(r, "project_id")?),
            name: get(r, "project_name")?,
        },
    })
}

const KEY_SELECT: &str = "SELECT k.id, k.name, k.prefix, k.admin, k.created_at, k.revoked_at, \
    p.id AS project_id, p.name AS project_name, k.key_hash FROM api_keys k \
    JOIN projects p ON p.id = k.project_id";

#[async_trait]
impl EventStore for PostgresStore {
    fn enqueue(&self, project: &ProjectRef, req: AppendRequest) -> StoreResult<Queued> {
        if req.events.is_empty() && req.session.is_none() && req.idempotency.is_none() {
            return Ok(Box::pin(std::future::ready(Ok(AppendOutcome::Committed {
                session: None,
                appended: Vec::new(),
                events: Vec::new(),
                reply: None,
                verdicts: Vec::new(),
            }))));
        }
        let n = u32::try_from(req.events.len().max(1)).map_err(|_| StoreError::Overloaded)?;
        let permit = self
            .permits
            .clone()
            .try_acquire_many_owned(n)
            .map_err(|_| StoreError::Overloaded)?;
        let (reply, rx) = oneshot::channel();
        self.depth.fetch_add(1, Ordering::Relaxed);
        let cmd = Cmd::Append(Box::new(writer::Append {
            project: project.clone(),
            req,
            reply,
            permit,
        }));
        if let Err(e) = self.tx.try_send(cmd) {
            self.depth.fetch_sub(1, Ordering::Relaxed);
            return Err(match e {
                mpsc::error::TrySendError::Full(_) => StoreError::Overloaded,
                mpsc::error::TrySendError::Closed(_) => StoreError::ShuttingDown,
            });
        }
        Ok(Box::pin(async move {
            rx.await.map_err(|_| StoreError::ShuttingDown)?
        }))
    }

    async fn idempotent_reply(
        &self,
        project: &ProjectRef,
        key: &str,
    ) -> StoreResult<Option<([u8; 32], StoredReply)>> {
        let ttl = i64::try_from(self.idempotency_ttl.as_micros()).unwrap_or(i64::MAX);
        let oldest = Micros::now().0.saturating_sub(ttl);
        let conn = self.conn().await?;
        let row = conn
            .query_opt(
                "SELECT fingerprint, status, content_type, body FROM idempotency_keys
                 WHERE project_id = $1 AND key = $2 AND created_at >= $3",
                &[&project.id.0, &key, &oldest],
            )
            .await
            .map_err(|e| self.err(e))?;
        let Some(r) = row else { return Ok(None) };
        let fp: Vec<u8> = get(&r, "fingerprint")?;
        let fp: [u8; 32] = fp
            .try_into()
            .map_err(|_| StoreError::Corrupt("a kept fingerprint is not 32 bytes".into()))?;
        let status: i32 = get(&r, "status")?;
        Ok(Some((
            fp,
            StoredReply {
                status: u16::try_from(status)
                    .map_err(|_| StoreError::Corrupt("a kept status is out of range".into()))?,
                content_type: get(&r, "content_type")?,
                body: get(&r, "body")?,
            },
        )))
    }

    async fn get_session(&self, project: &ProjectRef, id: &str) -> StoreResult<Option<Session>> {
        let conn = self.conn().await?;
        let row = conn
            .query_opt(
                &format!(
                    "SELECT {SESSION_COLS} FROM sessions s WHERE s.project_id = $1 AND s.id = $2"
                ),
                &[&project.id.0, &id],
            )
            .await
            .map_err(|e| self.err(e))?;
        row.map(|r| rows::session_from_row(&r, &project.name))
            .transpose()
    }

    async fn list_sessions_at(
        &self,
        project: &ProjectRef,
        l: SessionListing,
    ) -> StoreResult<SessionPage> {
        let mut conn = self.conn().await?;
        let tx = self.begin_budgeted(&mut conn).await?;
        let r = reads::list_sessions(&*tx, project, &l.query, l.offset, &l.any_tags).await;
        self.end_budgeted(tx, r).await
    }

    async fn list_agents(
        &self,
        project: &ProjectRef,
        only: Option<String>,
        limit: u32,
        offset: u64,
    ) -> StoreResult<AgentPage> {
        let mut conn = self.conn().await?;
        let tx = self.begin_budgeted(&mut conn).await?;
        let r = reads::list_agents(&*tx, project, only, limit, offset).await;
        self.end_budgeted(tx, r).await
    }

    async fn query_events(&self, project: &ProjectRef, q: EventQuery) -> StoreResult<EventPage> {
        let mut conn = self.conn().await?;
        let tx = self.begin_budgeted(&mut conn).await?;
        let r = reads::query_events(&*tx, project, &q).await;
        self.end_budgeted(tx, r).await
    }

    async fn usage(
        &self,
        project: &ProjectRef,
        q: EventQuery,
        group: Option<UsageGroup>,
    ) -> StoreResult<Vec<UsageRow>> {
        let mut conn = self.conn().await?;
        let tx = self.begin_budgeted(&mut conn).await?;
        let r = reads::usage(&*tx, project, &q, group).await;
        self.end_budgeted(tx, r).await
    }

    async fn llm_usage(
        &self,
        project: &ProjectRef,
        q: EventQuery,
        provider: Option<String>,
        group: LlmGroup,
    ) -> StoreResult<Vec<LlmUsageRow>> {
        let mut conn = self.conn().await?;
        let tx = self.begin_budgeted(&mut conn).await?;
        let r = reads::llm_usage(&*tx, project, &q, provider, group).await;
        self.end_budgeted(tx, r).await
    }

    async fn rollups(
        &self,
        project: &ProjectRef,
        q: crate::rollup::RollupQuery,
    ) -> StoreResult<Vec<crate::rollup::RollupRow>> {
        let conn = self.conn().await?;
        rollups::read(&**conn, project, &q)
            .await
            .map_err(|e| self.err(e))
    }

    async fn get_event(&self, project: &ProjectRef, id: EventId) -> StoreResult<Option<Event>> {
        let conn = self.conn().await?;
        let row = conn
            .query_opt(
                &format!(
                    "SELECT {EVENT_COLS} FROM {EVENT_FROM} WHERE e.project_id = $1 AND e.id = $2"
                ),
                &[&project.id.0, &&id.to_bytes()[..]],
            )
            .await
            .map_err(|e| self.err(e))?;
        row.map(|r| event_from_row(&r, &project.name)).transpose()
    }

    async fn session_events_with_columns(
        &self,
        project: &ProjectRef,
        session_id: &str,
        after_seq: u64,
        limit: u32,
    ) -> StoreResult<Vec<(Event, DerivedColumns)>> {
        let rows = self
            .session_rows(project, session_id, after_seq, limit)
            .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    event_from_row(r, &project.name)?,
                    rows::derived_from_row(r)?,
                ))
            })
            .collect()
    }

    async fn session_verify_rows(
        &self,
        project: &ProjectRef,
        session_id: &str,
        after_seq: u64,
        limit: u32,
    ) -> StoreResult<Vec<crate::verify::VerifyRow>> {
        let rows = self
            .session_rows(project, session_id, after_seq, limit)
            .await?;
        let name = project.name.clone();
        // Each row is hashed from the row itself (no Event, no copy of its
        // payload, no second parse of its JSON), off the async workers.
        crate::blocking("verification", move || {
            rows.iter()
                .map(|r| {
                    Ok(crate::verify::VerifyRow::new(
                        &rows::event_view(r, &name)?,
                        rows::derived_from_row(r)?,
                    ))
                })
                .collect()
        })
        .await?
    }

    async fn session_export_lines(
        &self,
        project: &ProjectRef,
        session_id: &str,
        after_seq: u64,
        limit: u32,
        until: u64,
    ) -> StoreResult<crate::ExportLines> {
        let rows = self
            .session_rows(project, session_id, after_seq, limit)
            .await?;
        let name = project.name.clone();
        // Each line is written from the row, its payload and metadata copied
        // as stored, off the async workers.
        crate::blocking("export", move || {
            let mut out = crate::ExportLines::new(rows.len(), rows.len() * 1_536);
            for r in &rows {
                out.push(&rows::event_view(r, &name)?, until);
            }
            Ok(out)
        })
        .await?
    }

    async fn redaction_salt(
        &self,
        project: &ProjectRef,
        event: EventId,
    ) -> StoreResult<Option<[u8; 32]>> {
        let conn = self.conn().await?;
        let row = conn
            .query_opt(
                "SELECT salt FROM redaction_salts WHERE project_id = $1 AND event_id = $2",
                &[&project.id.0, &&event.to_bytes()[..]],
            )
            .await
            .map_err(|e| self.err(e))?;
        row.map(|r| {
            let v: Vec<u8> = get(&r, "salt")?;
            v.try_into()
                .map_err(|_| StoreError::Corrupt("a redaction salt is not 32 bytes".into()))
        })
        .transpose()
    }

    async fn destroy_redaction_salts(&self, before: Option<Micros>) -> StoreResult<u64> {
        let conn = self.conn().await?;
        let before = before.map(|m| m.0);
        let n = conn
            .execute(
                "DELETE FROM redaction_salts WHERE $1::int8 IS NULL OR created_at < $1",
                &[&before],
            )
            .await
            .map_err(|e| self.err(e))?;
        // Destroyed means gone from the table's files: VACUUM FULL rewrites
        // the (small) table without the deleted rows. WAL segments, archives
        // and backups are the operator's to destroy.
        conn.batch_execute("VACUUM FULL redaction_salts")
            .await
            .map_err(|e| {
                StoreError::Storage(format!(
                    "{n} salts deleted, but the table could not be rewritten ({}); run the command again",
                    describe(&e)
                ))
            })?;
        Ok(n)
    }

    async fn authenticate(&self, key_hash: [u8; 32]) -> StoreResult<Option<ApiKeyInfo>> {
        // The index narrows by the first 8 bytes of the key's SHA-256 only;
        // the full digest is then compared in constant time (as SQLite does).
        let mut lo = [0u8; 32];
        lo[..8].copy_from_slice(&key_hash[..8]);
        let mut hi = [0xffu8; 32];
        hi[..8].copy_from_slice(&key_hash[..8]);
        let conn = self.conn().await?;
        let rows = conn
            .query(
                &format!("{KEY_SELECT} WHERE k.key_hash BETWEEN $1 AND $2"),
                &[&&lo[..], &&hi[..]],
            )
            .await
            .map_err(|e| self.err(e))?;
        for r in &rows {
            let stored: Vec<u8> = get(r, "key_hash")?;
            if bool::from(stored.as_slice().ct_eq(&key_hash[..])) {
                let k = key_from_row(r)?;
                return Ok(k.revoked_at.is_none().then_some(k));
            }
        }
        Ok(None)
    }

    async fn create_key(
        &self,
        project: &str,
        name: &str,
        key_hash: [u8; 32],
        prefix: &str,
        admin: bool,
    ) -> StoreResult<ApiKeyInfo> {
        let id = agentledger_core::keys::generate_key_id();
        let now = Micros::now();
        let mut conn = self.conn().await?;
        let tx = conn.transaction().await.map_err(|e| self.err(e))?;
        tx.execute(
            "INSERT INTO projects (name, created_at) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
            &[&project, &now.0],
        )
        .await
        .map_err(|e| self.err(e))?;
        let project_id: i64 = get(
            &tx.query_one("SELECT id FROM projects WHERE name = $1", &[&project])
                .await
                .map_err(|e| self.err(e))?,
            "id",
        )?;
        tx.execute(
            "INSERT INTO api_keys (id, project_id, name, key_hash, prefix, admin, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[
                &id,
                &project_id,
                &name,
                &&key_hash[..],
                &prefix,
                &admin,
                &now.0,
            ],
        )
        .await
        .map_err(|e| self.err(e))?;
        tx.commit().await.map_err(|e| self.err(e))?;
        Ok(ApiKeyInfo {
            id,
            project: ProjectRef {
                id: ProjectId(project_id),
                name: project.to_owned(),
            },
            name: name.to_owned(),
            prefix: prefix.to_owned(),
            admin,
            created_at: now,
            revoked_at: None,
        })
    }

    async fn list_keys(&self) -> StoreResult<Vec<ApiKeyInfo>> {
        let conn = self.conn().await?;
        let rows = conn
            .query(&format!("{KEY_SELECT} ORDER BY k.created_at, k.id"), &[])
            .await
            .map_err(|e| self.err(e))?;
        rows.iter().map(key_from_row).collect()
    }

    async fn revoke_key(&self, id: &str) -> StoreResult<bool> {
        let conn = self.conn().await?;
        let n = conn
            .execute(
                "UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL",
                &[&Micros::now().0, &id],
            )
            .await
            .map_err(|e| self.err(e))?;
        Ok(n > 0)
    }

    async fn ledger_meta(&self) -> StoreResult<crate::LedgerMeta> {
        let conn = self.conn().await?;
        Ok(crate::LedgerMeta {
            projects: import::project_records(&**conn).await?,
            keys: import::key_records(&**conn).await?,
            policy_sets: import::policy_records(&**conn).await?,
        })
    }

    async fn import_meta(&self, meta: &crate::LedgerMeta) -> StoreResult<()> {
        self.import_meta_pg(meta).await
    }

    async fn import_session(
        &self,
        project: &ProjectRef,
        session: &Session,
        events: Vec<crate::ImportedEvent>,
    ) -> StoreResult<u64> {
        self.import_session_pg(project, session, &events).await
    }

    async fn count_keys(&self) -> StoreResult<u64> {
        let conn = self.conn().await?;
        let row = conn
            .query_one("SELECT count(*) FROM api_keys", &[])
            .await
            .map_err(|e| self.err(e))?;
        Ok(get::<i64>(&row, "count")? as u64)
    }

    async fn save_policy_set(
        &self,
        project: &ProjectRef,
        sources: Option<String>,
    ) -> StoreResult<()> {
        // A cleared set is a row holding JSON null: the history stays.
        let sources = sources.unwrap_or_else(|| "null".into());
        let conn = self.conn().await?;
        conn.execute(
            "INSERT INTO policy_sets (project_id, sources, created_at) VALUES ($1, $2, $3)",
            &[&project.id.0, &sources, &Micros::now().0],
        )
        .await
        .map_err(|e| self.err(e))?;
        Ok(())
    }

    async fn load_policy_sets(&self) -> StoreResult<Vec<SavedPolicySet>> {
        let conn = self.conn().await?;
        // The newest row per project (NULL: the server-wide legacy set); a
        // cleared set (JSON null) is no set.
        let rows = conn
            .query(
                "SELECT project_id, sources FROM (
                     SELECT DISTINCT ON (project_id) project_id, sources FROM policy_sets
                     ORDER BY project_id NULLS FIRST, id DESC) latest
                 WHERE sources <> 'null' ORDER BY project_id NULLS FIRST",
                &[],
            )
            .await
            .map_err(|e| self.err(e))?;
        rows.iter()
            .map(|r| {
                Ok(SavedPolicySet {
                    project: get::<Option<i64>>(r, "project_id")?.map(ProjectId),
                    sources: get(r, "sources")?,
                })
            })
            .collect()
    }

    async fn list_projects(&self) -> StoreResult<Vec<ProjectRef>> {
        let conn = self.conn().await?;
        let rows = conn
            .query("SELECT id, name FROM projects ORDER BY id", &[])
            .await
            .map_err(|e| self.err(e))?;
        rows.iter()
            .map(|r| {
                Ok(ProjectRef {
                    id: ProjectId(get(r, "id")?),
                    name: get(r, "name")?,
                })
            })
            .collect()
    }

    async fn project_by_name(&self, name: &str) -> StoreResult<Option<ProjectRef>> {
        let conn = self.conn().await?;
        let row = conn
            .query_opt("SELECT id, name FROM projects WHERE name = $1", &[&name])
            .await
            .map_err(|e| self.err(e))?;
        row.map(|r| {
            Ok(ProjectRef {
                id: ProjectId(get(&r, "id")?),
                name: get(&r, "name")?,
            })
        })
        .transpose()
    }

    async fn log_integrate(
        &self,
        project: &ProjectRef,
        max: usize,
    ) -> StoreResult<crate::log::Integrated> {
        let mut conn = self.conn().await?;
        tlog::integrate_pass(&mut conn, project.id.0, max).await
    }

    async fn log_head(&self, project: &ProjectRef) -> StoreResult<crate::log::LogHead> {
        tlog::head(&*self.conn().await?, project.id.0).await
    }

    async fn log_tiles(
        &self,
        project: &ProjectRef,
        tiles: &[agentledger_tlog::Tile],
    ) -> StoreResult<Vec<Option<Vec<u8>>>> {
        let conn = self.conn().await?;
        tlog::read_tiles(&conn, project.id.0, tiles).await
    }

    async fn log_entries(
        &self,
        project: &ProjectRef,
        first: u64,
        count: u16,
    ) -> StoreResult<Vec<Vec<u8>>> {
        tlog::entries(&*self.conn().await?, project.id.0, first, count).await
    }

    async fn log_leaf_index(
        &self,
        project: &ProjectRef,
        event: EventId,
    ) -> StoreResult<Option<u64>> {
        tlog::leaf_index(&*self.conn().await?, project.id.0, &event.to_bytes()).await
    }

    async fn log_checkpoint(
        &self,
        project: &ProjectRef,
        size: Option<u64>,
    ) -> StoreResult<Option<crate::log::LogCheckpoint>> {
        tlog::checkpoint(&*self.conn().await?, project.id.0, size).await
    }

    async fn log_add_checkpoint(
        &self,
        project: &ProjectRef,
        checkpoint: crate::log::LogCheckpoint,
    ) -> StoreResult<crate::log::LogCheckpoint> {
        tlog::add_checkpoint(&*self.conn().await?, project.id.0, &checkpoint).await
    }

    async fn log_add_cosignatures(
        &self,
        project: &ProjectRef,
        cosignatures: Vec<crate::log::LogCosignature>,
    ) -> StoreResult<()> {
        if cosignatures.is_empty() {
            return Ok(());
        }
        tlog::add_cosignatures(&*self.conn().await?, project.id.0, &cosignatures).await
    }

    async fn log_cosignatures(
        &self,
        project: &ProjectRef,
        max_size: Option<u64>,
        sizes: u32,
    ) -> StoreResult<Vec<crate::log::LogCosignature>> {
        tlog::cosignatures(&*self.conn().await?, project.id.0, max_size, sizes).await
    }

    fn queue_depth(&self) -> usize {
        self.depth.load(Ordering::Relaxed)
    }

    fn pending_events(&self) -> usize {
        self.max_pending_events
            .saturating_sub(self.permits.available_permits())
    }

    fn durability_warnings(&self) -> Vec<String> {
        self.warnings.clone()
    }

    async fn close(&self) {
        let handle = self.writer.lock().await.take();
        let Some(handle) = handle else { return };
        self.depth.fetch_add(1, Ordering::Relaxed);
        if self.tx.send(Cmd::Shutdown).await.is_err() {
            self.depth.fetch_sub(1, Ordering::Relaxed);
        }
        let _ = handle.await;
        self.pool.close();
    }
}

#[cfg(test)]
mod tests;
