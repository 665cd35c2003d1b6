//! The embedded SQLite backend: WAL, `synchronous=FULL`, one group-commit
//! writer thread, a pool of read-only connections that never block it.

mod agents;
mod alerts;
mod checkpoint;
mod faults;
mod llm;
mod rollups;
mod rows;
mod schema;
mod search;
mod tlog;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use r2d2_sqlite::SqliteConnectionManager;
use rusqlite::types::Value;
use rusqlite::{Connection, OpenFlags, OptionalExtension, params_from_iter};
use subtle::ConstantTimeEq;
use tokio::sync::{Semaphore, mpsc, oneshot};

use agentledger_core::verdict::Decision;
use agentledger_core::{Event, EventId, Kind, Micros, ProjectId, Session};

use crate::{AgentPage, LlmGroup, LlmUsageRow, SessionListing};
use crate::{
    ApiKeyInfo, AppendOutcome, AppendRequest, DerivedColumns, EventStore, ProjectRef, Queued,
    SavedPolicySet, StoreError, StoreResult, StoredReply, WriterObserver,
};
use crate::{
    Cursor, EventPage, EventQuery, Order, SessionPage, SessionQuery, UsageGroup, UsageRow,
};
use rows::{EVENT_COLS, EVENT_FROM, SESSION_COLS, event_from_row, session_from_row};
use writer::{Cmd, Writer};

pub use faults::Faults;
pub use schema::SCHEMA_VERSION;
pub use search::index_path;
pub use writer::INSERT_EVENT_SQL;

/// How to open a SQLite ledger.
#[derive(Clone)]
pub struct SqliteOptions {
    pub path: PathBuf,
    /// Read-only connections in the pool.
    pub read_connections: u32,
    /// Events that may wait for the writer before appends are refused (503).
    pub max_pending_events: usize,
    /// Requests that may wait for the writer before appends are refused (503).
    pub max_pending_requests: usize,
    pub observer: Option<Arc<dyn WriterObserver>>,
    /// Injected storage faults (tests).
    pub faults: Option<Arc<Faults>>,
    /// Longest a listing, count or search may run before it is stopped.
    pub query_budget: Duration,
    /// Longest a read waits for a free connection before it is refused as busy.
    pub read_wait: Duration,
    /// How long a reply stays kept under its idempotency key.
    pub idempotency_ttl: Duration,
    /// Bytes of the database (and of its search index) each read connection
    /// memory-maps (SQLite's `mmap_size`); 0, the default, maps nothing.
    /// See docs/configuration.md (`--read-mmap`) for what it trades.
    pub read_mmap: u64,
}

impl SqliteOptions {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        SqliteOptions {
            path: path.into(),
            read_connections: 4,
            max_pending_events: 100_000,
            max_pending_requests: 8_192,
            observer: None,
            faults: None,
            query_budget: Duration::from_secs(2),
            read_wait: Duration::from_secs(1),
            idempotency_ttl: Duration::from_secs(24 * 3600),
            read_mmap: 0,
        }
    }
}

pub struct SqliteStore {
    tx: mpsc::Sender<Cmd>,
    pool: r2d2::Pool<SqliteConnectionManager>,
    permits: Arc<Semaphore>,
    max_pending_events: usize,
    depth: Arc<AtomicUsize>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// The full-text indexer and the WAL checkpointer (stopped in that order).
    background: Mutex<Option<Background>>,
    search: Arc<search::Progress>,
    /// Scratch full-text tables for matching the not-yet-indexed tail.
    scratch: Arc<search::Scratch>,
    checkpoints: Arc<checkpoint::Stop>,
    path: PathBuf,
    query_budget: Duration,
    idempotency_ttl: Duration,
}

struct Background {
    indexer: std::thread::JoinHandle<()>,
    checkpointer: std::thread::JoinHandle<()>,
}

fn storage(e: impl std::fmt::Display) -> StoreError {
    StoreError::Storage(e.to_string())
}

/// A SQLite error as a store error: a full disk is told apart, because the
/// operator's remedy (space) differs from that of other I/O failures.
pub(crate) fn classify(e: &rusqlite::Error) -> StoreError {
    match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::DiskFull) => StoreError::Full(e.to_string()),
        _ => StoreError::Storage(e.to_string()),
    }
}

/// Open a write connection exactly as the ledger's writer does: same pragmas
/// (durability first: an acknowledgement is a promise), schema migrated.
/// Public for tools that must measure or repair the same database (the
/// benchmark's raw-insert ceiling); the server never uses a second writer.
pub fn open_writer(path: &Path) -> rusqlite::Result<Connection> {
    let mut conn = Connection::open(path)?;
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = FULL;
         PRAGMA busy_timeout = 5000;
         PRAGMA cache_size = -32768;
         PRAGMA temp_store = MEMORY;",
    )?;
    let mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0))?;
    // The checkpointer thread owns checkpoints (see checkpoint.rs).
    conn.execute_batch("PRAGMA wal_autocheckpoint = 0;")?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(rusqlite::Error::InvalidParameterName(format!(
            "could not switch the database to WAL mode (it is {mode})"
        )));
    }
    schema::migrate(&mut conn)?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

/// The options this build of SQLite was compiled with.
fn compile_options(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    conn.prepare("PRAGMA compile_options")?
        .query_map([], |r| r.get(0))?
        .collect()
}

/// What a build of SQLite made outside this workspace's settings costs, said
/// at start. `.cargo/config.toml` builds it without memory management, but
/// its `[env]` does not override a `LIBSQLITE3_FLAGS` already set in the
/// environment, and such a build works, only slower.
fn build_warnings(options: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    if options.iter().any(|o| o == "ENABLE_MEMORY_MANAGEMENT") {
        out.push(
            "this build of SQLite has SQLITE_ENABLE_MEMORY_MANAGEMENT: every connection's page \
             cache takes one global mutex, and verify and export of a large session take about a \
             quarter longer (docs/benchmarks.md, fifth round). Build with the workspace's \
             .cargo/config.toml and LIBSQLITE3_FLAGS unset in the environment"
                .to_owned(),
        );
    }
    out
}

impl SqliteStore {
    /// A session's rows with their derived columns ([`session_rows`] with
    /// [`DERIVED_COLS`]), each mapped by `map`.
    async fn rows_with_columns<T: Send + 'static>(
        &self,
        project: &ProjectRef,
        session_id: &str,
        range: (u64, u32),
        map: fn(&rusqlite::Row<'_>, &str, DerivedColumns) -> rusqlite::Result<T>,
    ) -> StoreResult<Vec<T>> {
        let (project, session_id) = (project.clone(), session_id.to_owned());
        self.read(move |c| {
            session_rows(
                c,
                &project,
                &session_id,
                range,
                DERIVED_COLS,
                |r, project| {
                    map(
                        r,
                        project,
                        rows::derived_from_row(r, rows::EVENT_COL_COUNT)?,
                    )
                },
            )
        })
        .await
    }

    /// Open (creating if needed) and migrate the database, start the writer.
    pub fn open(opts: SqliteOptions) -> StoreResult<Self> {
        if let Some(dir) = opts.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(storage)?;
        }
        let conn = open_writer(&opts.path).map_err(storage)?;
        // Only ever a warning: a build that cannot list its options still opens.
        for warning in compile_options(&conn)
            .map(|o| build_warnings(&o))
            .unwrap_or_default()
        {
            tracing::warn!("{warning}");
        }
        let progress = Arc::new(search::Progress::default());
        let indexer = search::Indexer::open(&opts.path, progress.clone()).map_err(storage)?;
        let checkpoints = Arc::new(checkpoint::Stop::default());
        let checkpointer =
            checkpoint::Checkpointer::open(&opts.path, checkpoints.clone()).map_err(storage)?;
        let index_file = search::index_path(&opts.path);
        let read_mmap = opts.read_mmap;
        let manager = SqliteConnectionManager::file(&opts.path)
            .with_flags(
                OpenFlags::SQLITE_OPEN_READ_ONLY
                    | OpenFlags::SQLITE_OPEN_NO_MUTEX
                    | OpenFlags::SQLITE_OPEN_URI,
            )
            .with_init(move |c| {
                c.execute_batch("PRAGMA busy_timeout = 5000; PRAGMA query_only = 1;")?;
                // Memory mapping only when asked (`read_mmap`): verify and
                // export are faster with it, but every page a connection
                // touches then counts in the process's RSS, once per
                // connection (docs/benchmarks.md). Set before the ATTACH,
                // so that the search index is mapped too.
                if read_mmap > 0 {
                    c.execute_batch(&format!("PRAGMA mmap_size = {read_mmap};"))?;
                }
                c.execute(
                    "ATTACH DATABASE ?1 AS search",
                    [index_file.to_string_lossy().as_ref()],
                )?;
                c.set_prepared_statement_cache_capacity(64);
                Ok(())
            });
        let pool = r2d2::Pool::builder()
            .max_size(opts.read_connections.max(1))
            .connection_timeout(opts.read_wait.max(Duration::from_millis(10)))
            .min_idle(Some(1))
            .build(manager)
            .map_err(storage)?;
        if read_mmap > 0 {
            // SQLite lowers a size past its compile-time cap without a word.
            // A build without memory mapping answers no row at all.
            let mapped: Option<i64> = pool
                .get()
                .map_err(storage)?
                .query_row("PRAGMA mmap_size", [], |r| r.get(0))
                .optional()
                .map_err(storage)?;
            if mapped.and_then(|m| u64::try_from(m).ok()) != Some(read_mmap) {
                return Err(StoreError::Storage(format!(
                    "memory-mapped reads of {read_mmap} bytes were asked, but this build of SQLite maps {}",
                    mapped.map_or("nothing".to_owned(), |m| format!("at most {m} bytes"))
                )));
            }
        }
        let (tx, rx) = mpsc::channel(opts.max_pending_requests.max(16));
        let depth = Arc::new(AtomicUsize::new(0));
        let writer = Writer::new(
            conn,
            opts.observer.clone(),
            depth.clone(),
            progress.clone(),
            opts.faults.clone(),
            opts.idempotency_ttl,
        );
        let handle = std::thread::Builder::new()
            .name("ledger-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(storage)?;
        let background = Background {
            indexer: std::thread::Builder::new()
                .name("ledger-indexer".into())
                .spawn(move || indexer.run())
                .map_err(storage)?,
            checkpointer: std::thread::Builder::new()
                .name("ledger-checkpoint".into())
                .spawn(move || checkpointer.run())
                .map_err(storage)?,
        };
        let max_pending_events = opts
            .max_pending_events
            .max(agentledger_core::limits::MAX_BATCH_EVENTS);
        Ok(SqliteStore {
            tx,
            pool,
            permits: Arc::new(Semaphore::new(max_pending_events)),
            max_pending_events,
            depth,
            writer: Mutex::new(Some(handle)),
            background: Mutex::new(Some(background)),
            search: progress,
            scratch: Arc::new(search::Scratch::default()),
            checkpoints,
            path: opts.path,
            query_budget: opts.query_budget,
            idempotency_ttl: opts.idempotency_ttl,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    async fn read<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let pool = self.pool.clone();
        let budget = self.query_budget;
        tokio::task::spawn_blocking(move || {
            // Every connection busy past the wait: refuse (503), don't queue.
            let conn = pool.get().map_err(|_| StoreError::Overloaded)?;
            f(&conn).map_err(|e| match e {
                rusqlite::Error::ToSqlConversionFailure(b) if b.is::<BadCursor>() => {
                    StoreError::BadCursor
                }
                rusqlite::Error::ToSqlConversionFailure(b) if b.is::<search::TailTooLong>() => {
                    StoreError::Overloaded
                }
                rusqlite::Error::FromSqlConversionFailure(..) => StoreError::Corrupt(e.to_string()),
                e if e.sqlite_error_code() == Some(rusqlite::ErrorCode::OperationInterrupted) => {
                    StoreError::QueryBudget(budget)
                }
                other => storage(other),
            })
        })
        .await
        .map_err(storage)?
    }

    /// A read that may cost as much as the data asks (listings, counts,
    /// searches, sums): stopped by SQLite's progress handler once it has run
    /// for the query budget, so one expensive request cannot hold a
    /// connection (and a core) for seconds.
    async fn read_budgeted<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let budget = self.query_budget;
        self.read(move |c| {
            let deadline = Instant::now() + budget;
            // Checked every 4,000 virtual machine steps (tens of microseconds).
            c.progress_handler(4_000, Some(move || Instant::now() >= deadline))?;
            let r = f(c);
            c.progress_handler(0, None::<fn() -> bool>)?;
            r
        })
        .await
    }

    /// Queue an administrative command and wait for its answer.
    async fn admin<T>(&self, make: impl FnOnce(writer::Reply<T>) -> Cmd) -> StoreResult<T> {
        let (reply, rx) = oneshot::channel();
        self.depth.fetch_add(1, Ordering::Relaxed);
        if self.tx.send(make(reply)).await.is_err() {
            self.depth.fetch_sub(1, Ordering::Relaxed);
            return Err(StoreError::ShuttingDown);
        }
        rx.await.map_err(|_| StoreError::ShuttingDown)?
    }
}

/// The full-text expression for `text` in `project`'s events: every
/// whitespace-separated term quoted as an FTS5 phrase (user text can never be
/// read as FTS5 syntax), each term once, all required, in the payload column;
/// and the project's own token in the project column, so every count, plan
/// and cap is decided over the caller's project alone.
fn fts_query(project: ProjectId, text: &str) -> Option<String> {
    let mut seen = std::collections::HashSet::new();
    let terms: Vec<String> = text
        .split_whitespace()
        .filter(|t| seen.insert(*t))
        .map(|t| format!("\"{}\"", t.replace('"', "\"\"")))
        .collect();
    (!terms.is_empty()).then(|| {
        format!(
            "project : \"{}\" AND payload : ( {} )",
            search::project_token(project),
            terms.join(" ")
        )
    })
}

/// How a full-text term joins the other filters.
#[derive(Clone, Copy, PartialEq, Eq)]
enum TextPlan {
    /// `rowid IN (matches)`, leaving the plan to SQLite.
    In,
    /// Few matches: look each one up by rowid and sort them (the project's
    /// indexes are kept out of the plan so SQLite cannot prefer scanning them).
    Lookup,
    /// Many matches: walk the listing's index in order and probe the
    /// full-text index for each candidate row, stopping at the page's end.
    Probe,
    /// Leave the term out (the caller joins the full-text index itself).
    Omit,
}

/// Full-text matches above which `TextPlan::Probe` is used.
const LOOKUP_MATCHES: i64 = 5_000;

/// Integration passes of one `log_integrate` call that may lose the compare-and-set to
/// another pass of the same project before the call gives up (`Overloaded`: the log is being
/// integrated by someone else, and the next call carries on).
const MAX_STALE_PASSES: usize = 8;

/// WHERE clause and parameters shared by an event listing and its count.
fn event_filters(project: ProjectId, q: &EventQuery) -> (String, Vec<Value>) {
    event_filters_with(project, q, TextPlan::In, None)
}

/// The tail's matches as a JSON array of rowids, or `None` when it has none
/// (then the SQL is exactly that of a search without a tail).
fn tail_json(tail: &[i64]) -> Option<String> {
    (!tail.is_empty()).then(|| {
        let ids: Vec<String> = tail.iter().map(i64::to_string).collect();
        format!("[{}]", ids.join(","))
    })
}

/// `tail`: the full-text matches among events the index has not reached yet
/// (`tail_json`), added to the index's own matches (the two are disjoint).
fn event_filters_with(
    project: ProjectId,
    q: &EventQuery,
    plan: TextPlan,
    tail: Option<&str>,
) -> (String, Vec<Value>) {
    // With a session, the project scope is the session lookup itself (a
    // session row belongs to one project), so the (session_ref, seq) index
    // answers alone, counts included, without reading event rows. Otherwise
    // `+` keeps the project's indexes out of the plan when the full-text
    // matches are the better way in.
    let mut sql = String::from(match (&q.session_id, plan) {
        (Some(_), _) => {
            "e.session_ref = (SELECT rowid FROM sessions WHERE project_id = ? AND id = ?)"
        }
        (None, TextPlan::Lookup | TextPlan::Omit) => "+e.project_id = ?",
        (None, _) => "e.project_id = ?",
    });
    let mut p: Vec<Value> = vec![Value::Integer(project.0)];
    if let Some(s) = &q.session_id {
        p.push(Value::Text(s.clone()));
    }
    fn list(sql: &mut String, p: &mut Vec<Value>, col: &str, vals: Vec<Value>) {
        if vals.is_empty() {
            return;
        }
        let marks = vec!["?"; vals.len()].join(",");
        sql.push_str(&format!(" AND {col} IN ({marks})"));
        p.extend(vals);
    }
    if let Some(a) = &q.agent_id {
        sql.push_str(" AND e.agent_id = ?");
        p.push(Value::Text(a.clone()));
    }
    list(
        &mut sql,
        &mut p,
        "e.kind",
        q.kinds
            .iter()
            .map(|k| Value::Integer(k.code() as i64))
            .collect(),
    );
    list(
        &mut sql,
        &mut p,
        "e.severity",
        q.severities
            .iter()
            .map(|s| Value::Integer(s.code() as i64))
            .collect(),
    );
    list(
        &mut sql,
        &mut p,
        "e.source_type",
        q.source_types
            .iter()
            .map(|s| Value::Text(s.clone()))
            .collect(),
    );
    if let Some(d) = q.dialect {
        sql.push_str(" AND e.dialect = ?");
        p.push(Value::Integer(d.code() as i64));
    }
    if !q.decisions.is_empty() && !q.decisions.contains(&Decision::Allow) {
        // Lets SQLite use the partial index over flagged and denied events.
        sql.push_str(" AND e.decision > 0");
    }
    list(
        &mut sql,
        &mut p,
        "e.decision",
        q.decisions
            .iter()
            .map(|d| Value::Integer(d.code() as i64))
            .collect(),
    );
    if let Some(m) = &q.model {
        sql.push_str(" AND e.model = ?");
        p.push(Value::Text(m.clone()));
    }
    if let Some(f) = q.from {
        sql.push_str(" AND e.ts >= ?");
        p.push(Value::Integer(f.0));
    }
    if let Some(t) = q.to {
        sql.push_str(" AND e.ts <= ?");
        p.push(Value::Integer(t.0));
    }
    if let Some(m) = q
        .text
        .as_deref()
        .and_then(|t| fts_query(project, t))
        .filter(|_| plan != TextPlan::Omit)
    {
        sql.push_str(match (plan, tail.is_some()) {
            (TextPlan::In | TextPlan::Lookup | TextPlan::Omit, false) => {
                " AND e.rowid IN (SELECT rowid FROM search.events_fts WHERE events_fts MATCH ?)"
            }
            (TextPlan::In | TextPlan::Lookup | TextPlan::Omit, true) => {
                " AND e.rowid IN (SELECT rowid FROM search.events_fts WHERE events_fts MATCH ? \
                 UNION ALL SELECT value FROM json_each(?))"
            }
            (TextPlan::Probe, false) => {
                " AND EXISTS (SELECT 1 FROM search.events_fts \
                 WHERE events_fts MATCH ? AND rowid = e.rowid)"
            }
            (TextPlan::Probe, true) => {
                " AND (EXISTS (SELECT 1 FROM search.events_fts \
                 WHERE events_fts MATCH ? AND rowid = e.rowid) \
                 OR e.rowid IN (SELECT value FROM json_each(?)))"
            }
        });
        p.push(Value::Text(m));
        if let Some(t) = tail {
            p.push(Value::Text(t.to_owned()));
        }
    }
    (sql, p)
}

/// Choose the plan for a full-text term by counting its matches in the
/// caller's project (never another's), up to `LOOKUP_MATCHES`, the tail's
/// (`tail` of them) included.
fn text_plan(
    conn: &Connection,
    project: ProjectId,
    q: &EventQuery,
    tail: usize,
) -> rusqlite::Result<TextPlan> {
    let Some(m) = q.text.as_deref().and_then(|t| fts_query(project, t)) else {
        return Ok(TextPlan::In);
    };
    let n: i64 = conn.query_row(
        "SELECT count(*) FROM (SELECT 1 FROM search.events_fts WHERE events_fts MATCH ?1 LIMIT ?2)",
        rusqlite::params![m, LOOKUP_MATCHES + 1],
        |r| r.get(0),
    )?;
    let n = n.saturating_add(i64::try_from(tail).unwrap_or(i64::MAX));
    Ok(if n > LOOKUP_MATCHES {
        TextPlan::Probe
    } else {
        TextPlan::Lookup
    })
}

/// Sums of tokens and cost over the events matching `q` that carry usage.
fn usage_sync(
    conn: &Connection,
    project: &ProjectRef,
    q: &EventQuery,
    group: Option<UsageGroup>,
) -> rusqlite::Result<Vec<UsageRow>> {
    let (filters, params) = event_filters(project.id, q);
    let key = match group {
        None => "NULL",
        Some(UsageGroup::Model) => "e.model",
        Some(UsageGroup::Agent) => "e.agent_id",
        Some(UsageGroup::Session) => "s.id",
        Some(UsageGroup::Kind) => "e.kind",
    };
    let sql = format!(
        "SELECT {key}, count(*), coalesce(sum(e.input_tokens), 0), \
         coalesce(sum(e.output_tokens), 0), coalesce(sum(e.cost_usd), 0.0) \
         FROM {EVENT_FROM} WHERE {filters} AND (e.model IS NOT NULL OR e.input_tokens IS NOT NULL \
         OR e.output_tokens IS NOT NULL OR e.cost_usd IS NOT NULL) \
         GROUP BY 1 ORDER BY 5 DESC, 3 DESC LIMIT 1000"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(params_from_iter(params.iter()), |r| {
        let group = match group {
            Some(UsageGroup::Kind) => r
                .get::<_, Option<i64>>(0)?
                .and_then(|c| u8::try_from(c).ok())
                .and_then(Kind::from_code)
                .map(|k| k.as_str().to_owned()),
            None => None,
            Some(_) => r.get::<_, Option<String>>(0)?,
        };
        Ok(UsageRow {
            group,
            events: r.get::<_, i64>(1)? as u64,
            input_tokens: r.get(2)?,
            output_tokens: r.get(3)?,
            cost_usd: r.get(4)?,
        })
    })?;
    rows.collect()
}

fn query_events_sync(
    conn: &Connection,
    scratch: &search::Scratch,
    project: &ProjectRef,
    q: &EventQuery,
) -> rusqlite::Result<EventPage> {
    let Some(m) = q.text.as_deref().and_then(|t| fts_query(project.id, t)) else {
        return query_events_in(conn, project, q, &[]);
    };
    // A search is one read transaction, so its plan, count and page see one
    // snapshot of each file; the watermark is read first, pinning the index's
    // snapshot before the ledger's (search.rs: "Search finds what was
    // acknowledged"). A connection left inside a transaction by a failed
    // rollback is brought back out first.
    if !conn.is_autocommit() {
        conn.execute_batch("ROLLBACK")?;
    }
    let tx = conn.unchecked_transaction()?;
    let watermark = search::watermark(&tx)?;
    let (rest, p) = event_filters_with(project.id, q, TextPlan::Omit, None);
    let tail = search::tail_matches(&tx, scratch, watermark, &rest, &p, project.id, &m)?;
    let page = query_events_in(&tx, project, q, &tail)?;
    tx.commit()?;
    Ok(page)
}

/// A listing whose full-text term (if any) also matches the rowids `tail`.
fn query_events_in(
    conn: &Connection,
    project: &ProjectRef,
    q: &EventQuery,
    tail: &[i64],
) -> rusqlite::Result<EventPage> {
    let tail_ids = tail_json(tail);
    let plan = text_plan(conn, project.id, q, tail.len())?;
    let (filters, params) = event_filters_with(project.id, q, plan, tail_ids.as_deref());
    let (total, total_capped) = if q.skip_total {
        (None, false)
    } else {
        let cap = if plan == TextPlan::Probe {
            agentledger_core::query::TEXT_COUNT_LIMIT
        } else {
            agentledger_core::query::COUNT_LIMIT
        };
        let n = if plan == TextPlan::Probe {
            // Counted from the full-text side: its matches in index order,
            // each looked up and filtered, until the cap; plus the tail's,
            // which passed the same filters when they were scanned.
            let (rest, mut p) = event_filters_with(project.id, q, TextPlan::Omit, None);
            let m = q
                .text
                .as_deref()
                .and_then(|t| fts_query(project.id, t))
                .unwrap_or_default();
            p.insert(0, Value::Text(m));
            let sql = format!(
                "SELECT count(*) FROM (SELECT 1 FROM search.events_fts f \
                 CROSS JOIN events e ON e.rowid = f.rowid \
                 WHERE f.events_fts MATCH ? AND {rest} LIMIT {cap} + 1)"
            );
            conn.query_row(&sql, params_from_iter(p.iter()), |r| r.get::<_, i64>(0))?
                .saturating_add(i64::try_from(tail.len()).unwrap_or(i64::MAX))
        } else {
            let sql = format!(
                "SELECT count(*) FROM (SELECT 1 FROM events e WHERE {filters} LIMIT {cap} + 1)"
            );
            conn.query_row(&sql, params_from_iter(params.iter()), |r| {
                r.get::<_, i64>(0)
            })?
        } as u64;
        (Some(n.min(cap)), n > cap)
    };
    // One session reads in chain order (seq); everything else in time order.
    let by_seq = q.session_id.is_some();
    let (dir, cmp) = match q.order {
        Order::Asc => ("ASC", ">"),
        Order::Desc => ("DESC", "<"),
    };
    let mut sql = format!("SELECT {EVENT_COLS} FROM {EVENT_FROM} WHERE {filters}");
    let mut params = params;
    if let Some(c) = &q.cursor {
        // The cursor names the last event of the previous page; it must be
        // one of this project's (and this session's, when paging by seq).
        let (ts, rowid, seq): (i64, i64, i64) = conn
            .prepare_cached(
                "SELECT e.ts, e.rowid, e.seq FROM events e WHERE e.id = ?1 AND e.project_id = ?2 \
                 AND (?3 IS NULL OR e.session_ref = \
                      (SELECT rowid FROM sessions WHERE project_id = ?2 AND id = ?3))",
            )?
            .query_row(
                rusqlite::params![c.after, project.id.0, q.session_id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?
            .ok_or_else(bad_cursor)?;
        if by_seq {
            sql.push_str(&format!(" AND e.seq {cmp} ?"));
            params.push(Value::Integer(seq));
        } else {
            sql.push_str(&format!(" AND (e.ts, e.rowid) {cmp} (?, ?)"));
            params.push(Value::Integer(ts));
            params.push(Value::Integer(rowid));
        }
    }
    if by_seq {
        sql.push_str(&format!(" ORDER BY e.seq {dir}"));
    } else {
        sql.push_str(&format!(" ORDER BY e.ts {dir}, e.rowid {dir}"));
    }
    let limit = q.limit.max(1) as i64;
    sql.push_str(" LIMIT ? OFFSET ?");
    params.push(Value::Integer(limit + 1));
    params.push(Value::Integer(if q.cursor.is_some() {
        0
    } else {
        q.offset.min(i64::MAX as u64) as i64
    }));
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut rows = stmt.query(params_from_iter(params.iter()))?;
    let mut events = Vec::new();
    let mut last = None;
    let mut more = false;
    while let Some(r) = rows.next()? {
        if events.len() as i64 == limit {
            more = true;
            break;
        }
        let (ev, _, _) = event_from_row(r, &project.name)?;
        last = Some(Cursor::after(ev.id.to_bytes().to_vec()));
        events.push(ev);
    }
    Ok(EventPage {
        events,
        total,
        total_capped,
        next_cursor: if more { last } else { None },
    })
}

/// A cursor that names no row of this listing's project.
#[derive(Debug)]
struct BadCursor;

impl std::fmt::Display for BadCursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("cursor does not belong to this listing")
    }
}

impl std::error::Error for BadCursor {}

fn bad_cursor() -> rusqlite::Error {
    rusqlite::Error::ToSqlConversionFailure(Box::new(BadCursor))
}

fn list_sessions_sync(
    conn: &Connection,
    project: &ProjectRef,
    q: &SessionQuery,
    offset: u64,
    any_tags: &[String],
) -> rusqlite::Result<SessionPage> {
    let mut filters = String::from("s.project_id = ?");
    let mut params: Vec<Value> = vec![Value::Integer(project.id.0)];
    if let Some(a) = &q.agent_id {
        filters.push_str(" AND s.agent_id = ?");
        params.push(Value::Text(a.clone()));
    }
    if let Some(st) = q.status {
        filters.push_str(" AND s.status = ?");
        params.push(Value::Integer(
            matches!(st, agentledger_core::SessionStatus::Ended) as i64,
        ));
    }
    if let Some(f) = q.from {
        filters.push_str(" AND s.created_at >= ?");
        params.push(Value::Integer(f.0));
    }
    if let Some(t) = q.to {
        filters.push_str(" AND s.created_at <= ?");
        params.push(Value::Integer(t.0));
    }
    if !any_tags.is_empty() {
        // Tags are stored as the JSON array the client sent (writer.rs).
        filters.push_str(" AND EXISTS (SELECT 1 FROM json_each(s.tags) t WHERE t.value IN (");
        for (i, t) in any_tags.iter().enumerate() {
            filters.push_str(if i == 0 { "?" } else { ", ?" });
            params.push(Value::Text(t.clone()));
        }
        filters.push_str("))");
    }
    let total: i64 = conn.query_row(
        &format!("SELECT count(*) FROM sessions s WHERE {filters}"),
        params_from_iter(params.iter()),
        |r| r.get(0),
    )?;
    let mut sql = format!("SELECT {SESSION_COLS} FROM sessions s WHERE {filters}");
    if let Some(c) = &q.cursor {
        // The cursor names the last session of the previous page, in this project.
        let id = String::from_utf8(c.after.clone()).map_err(|_| bad_cursor())?;
        let (created, rowid): (i64, i64) = conn
            .prepare_cached(
                "SELECT created_at, rowid FROM sessions WHERE project_id = ?1 AND id = ?2",
            )?
            .query_row(rusqlite::params![project.id.0, id], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()?
            .ok_or_else(bad_cursor)?;
        sql.push_str(" AND (s.created_at, s.rowid) < (?, ?)");
        params.push(Value::Integer(created));
        params.push(Value::Integer(rowid));
    }
    let limit = q.limit.max(1) as i64;
    sql.push_str(" ORDER BY s.created_at DESC, s.rowid DESC LIMIT ? OFFSET ?");
    params.push(Value::Integer(limit + 1));
    params.push(Value::Integer(i64::try_from(offset).unwrap_or(i64::MAX)));
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut rows = stmt.query(params_from_iter(params.iter()))?;
    let mut sessions = Vec::new();
    let mut last = None;
    let mut more = false;
    while let Some(r) = rows.next()? {
        if sessions.len() as i64 == limit {
            more = true;
            break;
        }
        let s = session_from_row(r, &project.name)?;
        last = Some(Cursor::after(s.id.as_bytes().to_vec()));
        sessions.push(s);
    }
    Ok(SessionPage {
        sessions,
        total: total as u64,
        next_cursor: if more { last } else { None },
    })
}

fn key_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ApiKeyInfo> {
    Ok(ApiKeyInfo {
        id: r.get(0)?,
        name: r.get(1)?,
        prefix: r.get(2)?,
        admin: r.get::<_, i64>(3)? != 0,
        created_at: Micros(r.get(4)?),
        revoked_at: r.get::<_, Option<i64>>(5)?.map(Micros),
        project: ProjectRef {
            id: ProjectId(r.get(6)?),
            name: r.get(7)?,
        },
    })
}

const KEY_SELECT: &str = "SELECT k.id, k.name, k.prefix, k.admin, k.created_at, k.revoked_at, \
    p.id, p.name FROM api_keys k JOIN projects p ON p.id = k.project_id";

/// Every key with its hash, by creation time then id (for copying a ledger).
pub(crate) fn read_key_records(c: &Connection) -> rusqlite::Result<Vec<crate::KeyRecord>> {
    let mut st = c.prepare(
        "SELECT k.id, k.name, k.prefix, k.admin, k.created_at, k.revoked_at, p.id, p.name, \
         k.key_hash FROM api_keys k JOIN projects p ON p.id = k.project_id \
         ORDER BY k.created_at, k.id",
    )?;
    let rows = st.query_map([], |r| {
        let hash: Vec<u8> = r.get(8)?;
        let key_hash = hash.try_into().map_err(|_| {
            rusqlite::Error::FromSqlConversionFailure(
                8,
                rusqlite::types::Type::Blob,
                "a key hash is not 32 bytes".into(),
            )
        })?;
        Ok(crate::KeyRecord {
            info: key_from_row(r)?,
            key_hash,
        })
    })?;
    rows.collect()
}

/// The whole policy-set history, in the order it was saved.
pub(crate) fn read_policy_records(c: &Connection) -> rusqlite::Result<Vec<crate::PolicySetRecord>> {
    let mut st =
        c.prepare("SELECT project_id, sources, created_at FROM policy_sets ORDER BY id")?;
    let rows = st.query_map([], |r| {
        Ok(crate::PolicySetRecord {
            project: r.get::<_, Option<i64>>(0)?.map(ProjectId),
            sources: r.get(1)?,
            created_at: Micros(r.get(2)?),
        })
    })?;
    rows.collect()
}

#[async_trait]
impl EventStore for SqliteStore {
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
        let cmd = Cmd::Append {
            project: project.clone(),
            req,
            reply,
            _permit: permit,
        };
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
        let (project, key) = (project.id.0, key.to_owned());
        let ttl = i64::try_from(self.idempotency_ttl.as_micros()).unwrap_or(i64::MAX);
        self.read(move |c| {
            writer::kept_reply(c, project, &key, Micros::now().0.saturating_sub(ttl))
        })
        .await
    }

    async fn get_session(&self, project: &ProjectRef, id: &str) -> StoreResult<Option<Session>> {
        let (project, id) = (project.clone(), id.to_owned());
        self.read(move |c| {
            c.prepare_cached(&format!(
                "SELECT {SESSION_COLS} FROM sessions s WHERE s.project_id = ?1 AND s.id = ?2"
            ))?
            .query_row(rusqlite::params![project.id.0, id], |r| {
                session_from_row(r, &project.name)
            })
            .optional()
        })
        .await
    }

    async fn list_sessions_at(
        &self,
        project: &ProjectRef,
        l: SessionListing,
    ) -> StoreResult<SessionPage> {
        let project = project.clone();
        self.read_budgeted(move |c| {
            list_sessions_sync(c, &project, &l.query, l.offset, &l.any_tags)
        })
        .await
    }

    async fn list_agents(
        &self,
        project: &ProjectRef,
        only: Option<String>,
        limit: u32,
        offset: u64,
    ) -> StoreResult<AgentPage> {
        let project = project.clone();
        self.read_budgeted(move |c| agents::list_agents_sync(c, &project, only, limit, offset))
            .await
    }

    async fn query_events(&self, project: &ProjectRef, q: EventQuery) -> StoreResult<EventPage> {
        let (project, scratch) = (project.clone(), self.scratch.clone());
        self.read_budgeted(move |c| query_events_sync(c, &scratch, &project, &q))
            .await
    }

    async fn usage(
        &self,
        project: &ProjectRef,
        q: EventQuery,
        group: Option<UsageGroup>,
    ) -> StoreResult<Vec<UsageRow>> {
        let project = project.clone();
        self.read_budgeted(move |c| usage_sync(c, &project, &q, group))
            .await
    }

    async fn llm_usage(
        &self,
        project: &ProjectRef,
        q: EventQuery,
        provider: Option<String>,
        group: LlmGroup,
    ) -> StoreResult<Vec<LlmUsageRow>> {
        let project = project.clone();
        self.read_budgeted(move |c| llm::llm_usage_sync(c, &project, &q, provider, group))
            .await
    }

    async fn rollups(
        &self,
        project: &ProjectRef,
        q: crate::rollup::RollupQuery,
    ) -> StoreResult<Vec<crate::rollup::RollupRow>> {
        let project = project.clone();
        self.read(move |c| rollups::read(c, &project, &q)).await
    }

    async fn get_event(&self, project: &ProjectRef, id: EventId) -> StoreResult<Option<Event>> {
        let project = project.clone();
        self.read(move |c| {
            c.prepare_cached(&format!(
                "SELECT {EVENT_COLS} FROM {EVENT_FROM} WHERE e.id = ?1 AND e.project_id = ?2"
            ))?
            .query_row(rusqlite::params![&id.to_bytes()[..], project.id.0], |r| {
                event_from_row(r, &project.name).map(|t| t.0)
            })
            .optional()
        })
        .await
    }

    async fn session_events_with_columns(
        &self,
        project: &ProjectRef,
        session_id: &str,
        after_seq: u64,
        limit: u32,
    ) -> StoreResult<Vec<(Event, DerivedColumns)>> {
        self.rows_with_columns(
            project,
            session_id,
            (after_seq, limit),
            |r, project, cols| Ok((event_from_row(r, project)?.0, cols)),
        )
        .await
    }

    async fn session_verify_rows(
        &self,
        project: &ProjectRef,
        session_id: &str,
        after_seq: u64,
        limit: u32,
    ) -> StoreResult<Vec<crate::verify::VerifyRow>> {
        // Each row is hashed as it is read, from the row itself: no Event,
        // no copy of its payload, no second parse of its JSON.
        self.rows_with_columns(
            project,
            session_id,
            (after_seq, limit),
            |r, project, cols| {
                Ok(crate::verify::VerifyRow::new(
                    &rows::event_view(r, project)?,
                    cols,
                ))
            },
        )
        .await
    }

    async fn session_export_lines(
        &self,
        project: &ProjectRef,
        session_id: &str,
        after_seq: u64,
        limit: u32,
        until: u64,
    ) -> StoreResult<crate::ExportLines> {
        let (project, session_id) = (project.clone(), session_id.to_owned());
        // Each line is written as the row is read, its payload and metadata
        // copied from the row as stored.
        self.read(move |c| {
            let mut out = crate::ExportLines::new(
                limit.min(4_096) as usize,
                limit.min(4_096) as usize * 1_536,
            );
            each_session_row(
                c,
                &project,
                &session_id,
                (after_seq, limit),
                "",
                |r, project| {
                    out.push(&rows::event_view(r, project)?, until);
                    Ok(())
                },
            )?;
            Ok(out)
        })
        .await
    }

    async fn session_events(
        &self,
        project: &ProjectRef,
        session_id: &str,
        after_seq: u64,
        limit: u32,
    ) -> StoreResult<Vec<Event>> {
        let (project, session_id) = (project.clone(), session_id.to_owned());
        self.read(move |c| {
            session_rows(
                c,
                &project,
                &session_id,
                (after_seq, limit),
                "",
                |r, project| Ok(event_from_row(r, project)?.0),
            )
        })
        .await
    }

    async fn redaction_salt(
        &self,
        project: &ProjectRef,
        event: EventId,
    ) -> StoreResult<Option<[u8; 32]>> {
        let project = project.id.0;
        self.read(move |c| {
            c.prepare_cached(
                "SELECT r.salt FROM redaction_salts r JOIN events e ON e.id = r.event_id \
                 WHERE r.event_id = ?1 AND e.project_id = ?2",
            )?
            .query_row(rusqlite::params![&event.to_bytes()[..], project], |r| {
                r.get::<_, Vec<u8>>(0)
            })
            .optional()
        })
        .await?
        .map(|v| {
            v.try_into()
                .map_err(|_| StoreError::Corrupt("a redaction salt is not 32 bytes".into()))
        })
        .transpose()
    }

    async fn destroy_redaction_salts(&self, before: Option<Micros>) -> StoreResult<u64> {
        let before = before.map(|m| m.0);
        self.admin(|reply| Cmd::DestroySalts { before, reply })
            .await
    }

    async fn authenticate(&self, key_hash: [u8; 32]) -> StoreResult<Option<ApiKeyInfo>> {
        // The index narrows by the first 8 bytes of the key's SHA-256 only
        // (a range over the unique key_hash index: almost always 0 or 1 row);
        // the full digest is then compared in constant time. No comparison
        // whose duration depends on how much of a guess matches ever runs
        // past those 8 bytes of a digest, and never on the key itself.
        let mut lo = [0u8; 32];
        lo[..8].copy_from_slice(&key_hash[..8]);
        let mut hi = [0xffu8; 32];
        hi[..8].copy_from_slice(&key_hash[..8]);
        let candidates = self
            .read(move |c| {
                c.prepare_cached(
                    "SELECT k.id, k.name, k.prefix, k.admin, k.created_at, k.revoked_at, \
                     p.id, p.name, k.key_hash FROM api_keys k \
                     JOIN projects p ON p.id = k.project_id \
                     WHERE k.key_hash BETWEEN ?1 AND ?2",
                )?
                .query_map([&lo[..], &hi[..]], |r| {
                    Ok((key_from_row(r)?, r.get::<_, Vec<u8>>(8)?))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()
            })
            .await?;
        Ok(candidates
            .into_iter()
            .find(|(_, stored)| bool::from(stored.as_slice().ct_eq(&key_hash[..])))
            .map(|(k, _)| k)
            .filter(|k| k.revoked_at.is_none()))
    }

    async fn create_key(
        &self,
        project: &str,
        name: &str,
        key_hash: [u8; 32],
        prefix: &str,
        admin: bool,
    ) -> StoreResult<ApiKeyInfo> {
        let (project, name, prefix) = (project.to_owned(), name.to_owned(), prefix.to_owned());
        let id = agentledger_core::keys::generate_key_id();
        self.admin(|reply| Cmd::CreateKey {
            id,
            project,
            name,
            key_hash,
            prefix,
            admin,
            reply,
        })
        .await
    }

    async fn list_keys(&self) -> StoreResult<Vec<ApiKeyInfo>> {
        self.read(|c| {
            let mut st = c.prepare(&format!("{KEY_SELECT} ORDER BY k.created_at"))?;
            let rows = st.query_map([], key_from_row)?;
            rows.collect()
        })
        .await
    }

    async fn revoke_key(&self, id: &str) -> StoreResult<bool> {
        let id = id.to_owned();
        self.admin(|reply| Cmd::RevokeKey { id, reply }).await
    }

    async fn save_policy_set(
        &self,
        project: &ProjectRef,
        sources: Option<String>,
    ) -> StoreResult<()> {
        let project = project.id.0;
        self.admin(|reply| Cmd::SavePolicies {
            project,
            sources,
            reply,
        })
        .await
    }

    async fn load_policy_sets(&self) -> StoreResult<Vec<SavedPolicySet>> {
        self.read(|c| {
            // The newest row per project (NULL: the server-wide legacy set);
            // a cleared set (JSON null) is no set.
            let mut st = c.prepare(
                "SELECT p.project_id, p.sources FROM policy_sets p \
                 WHERE p.id = (SELECT max(id) FROM policy_sets q \
                               WHERE q.project_id IS p.project_id) \
                 AND p.sources != 'null' ORDER BY p.project_id",
            )?;
            let rows = st.query_map([], |r| {
                Ok(SavedPolicySet {
                    project: r.get::<_, Option<i64>>(0)?.map(ProjectId),
                    sources: r.get(1)?,
                })
            })?;
            rows.collect()
        })
        .await
    }

    async fn ledger_meta(&self) -> StoreResult<crate::LedgerMeta> {
        self.read(|c| {
            let mut st = c.prepare("SELECT id, name, created_at FROM projects ORDER BY id")?;
            let projects = st
                .query_map([], |r| {
                    Ok(crate::ProjectRecord {
                        id: ProjectId(r.get(0)?),
                        name: r.get(1)?,
                        created_at: Micros(r.get(2)?),
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(crate::LedgerMeta {
                projects,
                keys: read_key_records(c)?,
                policy_sets: read_policy_records(c)?,
            })
        })
        .await
    }

    async fn import_meta(&self, meta: &crate::LedgerMeta) -> StoreResult<()> {
        let meta = Box::new(meta.clone());
        self.admin(|reply| Cmd::ImportMeta { meta, reply }).await
    }

    async fn import_session(
        &self,
        project: &ProjectRef,
        session: &Session,
        events: Vec<crate::ImportedEvent>,
    ) -> StoreResult<u64> {
        let (project, session) = (project.clone(), Box::new(session.clone()));
        self.admin(|reply| Cmd::ImportSession {
            project,
            session,
            events,
            reply,
        })
        .await
    }

    async fn count_keys(&self) -> StoreResult<u64> {
        self.read(|c| c.query_row("SELECT count(*) FROM api_keys", [], |r| r.get::<_, i64>(0)))
            .await
            .map(|n| n as u64)
    }

    async fn list_projects(&self) -> StoreResult<Vec<ProjectRef>> {
        self.read(|c| {
            let mut st = c.prepare("SELECT id, name FROM projects ORDER BY id")?;
            let rows = st.query_map([], |r| {
                Ok(ProjectRef {
                    id: ProjectId(r.get(0)?),
                    name: r.get(1)?,
                })
            })?;
            rows.collect()
        })
        .await
    }

    async fn project_by_name(&self, name: &str) -> StoreResult<Option<ProjectRef>> {
        let name = name.to_owned();
        self.read(move |c| {
            c.query_row(
                "SELECT id, name FROM projects WHERE name = ?1",
                [name],
                |r| {
                    Ok(ProjectRef {
                        id: ProjectId(r.get(0)?),
                        name: r.get(1)?,
                    })
                },
            )
            .optional()
        })
        .await
    }

    async fn log_integrate(
        &self,
        project: &ProjectRef,
        max: usize,
    ) -> StoreResult<crate::log::Integrated> {
        let project = project.id.0;
        // Reading and hashing happen on a read connection; the writer gets only the write,
        // which it applies if the cursor is still where the read began. A pass loses that
        // race only to another pass of the same project, which made progress: prepare again.
        for _ in 0..MAX_STALE_PASSES {
            let Some(pass) = self
                .read(move |c| Ok(tlog::prepare_pass(c, project, max)))
                .await??
            else {
                let head = self.read(move |c| Ok(tlog::head(c, project))).await??;
                return Ok(crate::log::Integrated { head, added: 0 });
            };
            let pass = Box::new(pass);
            match self
                .admin(|reply| Cmd::LogIntegrate { pass, reply })
                .await?
            {
                tlog::PassOutcome::Applied(done) => return Ok(done),
                tlog::PassOutcome::Stale => continue,
            }
        }
        Err(StoreError::Overloaded)
    }

    async fn log_head(&self, project: &ProjectRef) -> StoreResult<crate::log::LogHead> {
        let p = project.id.0;
        self.read(move |c| Ok(tlog::head(c, p))).await?
    }

    async fn log_tiles(
        &self,
        project: &ProjectRef,
        tiles: &[agentledger_tlog::Tile],
    ) -> StoreResult<Vec<Option<Vec<u8>>>> {
        let (p, tiles) = (project.id.0, tiles.to_vec());
        self.read(move |c| Ok(tlog::read_tiles(c, p, &tiles)))
            .await?
    }

    async fn log_entries(
        &self,
        project: &ProjectRef,
        first: u64,
        count: u16,
    ) -> StoreResult<Vec<Vec<u8>>> {
        let p = project.id.0;
        self.read(move |c| Ok(tlog::entries(c, p, first, count)))
            .await?
    }

    async fn log_leaf_index(
        &self,
        project: &ProjectRef,
        event: EventId,
    ) -> StoreResult<Option<u64>> {
        let p = project.id.0;
        self.read(move |c| Ok(tlog::leaf_index(c, p, &event.to_bytes())))
            .await?
    }

    async fn log_checkpoint(
        &self,
        project: &ProjectRef,
        size: Option<u64>,
    ) -> StoreResult<Option<crate::log::LogCheckpoint>> {
        let p = project.id.0;
        self.read(move |c| Ok(tlog::checkpoint(c, p, size))).await?
    }

    async fn log_add_checkpoint(
        &self,
        project: &ProjectRef,
        checkpoint: crate::log::LogCheckpoint,
    ) -> StoreResult<crate::log::LogCheckpoint> {
        let project = project.id.0;
        self.admin(|reply| Cmd::LogCheckpoint {
            project,
            checkpoint: Box::new(checkpoint),
            reply,
        })
        .await
    }

    async fn log_add_cosignatures(
        &self,
        project: &ProjectRef,
        cosignatures: Vec<crate::log::LogCosignature>,
    ) -> StoreResult<()> {
        if cosignatures.is_empty() {
            return Ok(());
        }
        let p = project.id.0;
        self.exec(move |c| tlog::add_cosignatures(c, p, &cosignatures))
            .await
    }

    async fn log_cosignatures(
        &self,
        project: &ProjectRef,
        max_size: Option<u64>,
        sizes: u32,
    ) -> StoreResult<Vec<crate::log::LogCosignature>> {
        let p = project.id.0;
        self.read(move |c| Ok(tlog::cosignatures(c, p, max_size, sizes)))
            .await?
    }

    fn queue_depth(&self) -> usize {
        self.depth.load(Ordering::Relaxed)
    }

    fn pending_events(&self) -> usize {
        self.max_pending_events
            .saturating_sub(self.permits.available_permits())
    }

    fn search_backlog(&self) -> u64 {
        self.search.backlog()
    }

    async fn close(&self) {
        let handle = self.writer.lock().ok().and_then(|mut h| h.take());
        let Some(handle) = handle else { return };
        let _ = self.tx.send(Cmd::Shutdown).await;
        let _ = tokio::task::spawn_blocking(move || handle.join()).await;
        // The writer has stopped. The index catches up on the next start if
        // this one stops before it does; the checkpointer stops last and
        // folds the WAL back into the database.
        self.search.stop();
        let background = self.background.lock().ok().and_then(|mut b| b.take());
        let Some(background) = background else { return };
        let checkpoints = self.checkpoints.clone();
        let _ = tokio::task::spawn_blocking(move || {
            let _ = background.indexer.join();
            checkpoints.stop();
            let _ = background.checkpointer.join();
        })
        .await;
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        // Without close(): let the background threads end on their own.
        self.search.stop();
        self.checkpoints.stop();
    }
}

#[cfg(test)]
mod tests;

/// A session's events with seq > `after`, at most `limit`, in seq order,
/// with `extra` columns after [`rows::EVENT_COL_COUNT`], each row given to
/// `each` (with the project's name). Rows of the session whatever their
/// project_id says: an edited project_id is then caught by verification,
/// not hidden from it.
fn each_session_row(
    c: &Connection,
    project: &ProjectRef,
    session_id: &str,
    (after, limit): (u64, u32),
    extra: &str,
    mut each: impl FnMut(&rusqlite::Row<'_>, &str) -> rusqlite::Result<()>,
) -> rusqlite::Result<()> {
    let mut st = c.prepare_cached(&format!(
        "SELECT {EVENT_COLS}{extra} FROM {EVENT_FROM}
         WHERE e.session_ref = (SELECT rowid FROM sessions WHERE project_id = ?1 AND id = ?2)
           AND e.seq > ?3 ORDER BY e.seq LIMIT ?4"
    ))?;
    let mut rows = st.query(rusqlite::params![
        project.id.0,
        session_id,
        // A seq past i64 (from a client's `after`) is past every seq: nothing, as on
        // PostgreSQL, not a negative bound that reads from the first event.
        i64::try_from(after).unwrap_or(i64::MAX),
        limit as i64
    ])?;
    while let Some(r) = rows.next()? {
        each(r, &project.name)?;
    }
    Ok(())
}

/// The derived columns ([`rows::derived_from_row`]) after [`EVENT_COLS`].
const DERIVED_COLS: &str =
    ", e.project_id, e.decision, e.model, e.input_tokens, e.output_tokens, e.cost_usd";

/// [`each_session_row`], each row mapped by `map` and collected.
fn session_rows<T>(
    c: &Connection,
    project: &ProjectRef,
    session_id: &str,
    range: (u64, u32),
    extra: &str,
    map: impl Fn(&rusqlite::Row<'_>, &str) -> rusqlite::Result<T>,
) -> rusqlite::Result<Vec<T>> {
    let mut out = Vec::with_capacity(range.1.min(10_000) as usize);
    each_session_row(c, project, session_id, range, extra, |r, project| {
        out.push(map(r, project)?);
        Ok(())
    })?;
    Ok(out)
}
