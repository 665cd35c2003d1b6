//! The node's group-commit writer, and how it stays correct when several
//! nodes write to one database.
//!
//! # Group commit
//! One task per node owns the write connection. Appends arrive on a bounded
//! queue (full: `Overloaded`, a 503); every pass drains what is waiting into
//! one transaction, writes each table with one multi-row `INSERT ... SELECT
//! FROM unnest(...)`, and answers each request only after COMMIT returned on
//! a session with `synchronous_commit` at least `on` (set on the writer's
//! connections at start). Throughput comes from sharing the COMMIT, never
//! from weakening it.
//!
//! # Several nodes, one chain
//! A session's next seq and prev_hash come from its row, read under lock
//! inside the transaction that appends: no node trusts a head it cached. A
//! transaction first takes a transaction-scoped advisory lock for every
//! session and idempotency key it touches, all in one statement, in one
//! global order (sorted by the lock's 64-bit key). Advisory locks also cover
//! sessions that do not exist yet, so two nodes creating the same session are
//! serialised like two nodes appending to it; then `SELECT ... FOR UPDATE`
//! (sorted by project and session id) locks and reads the rows that exist.
//! Because every writer acquires its locks in one ordered step before it
//! writes anything, writers cannot deadlock one another; deadlocks and
//! serialization failures caused by anything else are retried here (a new
//! transaction, fresh heads), never returned.
//!
//! # The policy checkpoint, under the same locks
//! A request's [`Judge`](crate::Judge) runs in step 4 below, after its
//! sessions' rows are locked and read: against the node's kept state of each
//! session, moved on by the events any node appended since (read here, in
//! the transaction), or folded from the session's events if the node keeps
//! none and the session is short (else the request goes back for a seed, see
//! `AppendOutcome::NeedsState`). So requests to one session are judged in
//! exactly their commit order, whichever node takes them, and no node ever
//! retries a request because another appended. States are kept only after
//! COMMIT; a retried transaction judges its requests again from the kept ones.
//!
//! # What a retry may redo
//! Everything a request needs is decided in memory first (replays, conflicts,
//! `SessionExists`, seqs and hashes through core's `chain::link`), then the
//! rows are written, then the replies of keyed requests are rendered (the
//! server's closure, called once: it is `FnOnce`), then kept, then COMMIT. A
//! failure before rendering retries the whole group; after it, the rendered
//! requests are answered `Overloaded` (the client retries with its key) and the
//! rest are retried. A statement refused for what a request holds (not for
//! contention) is found by running the group's requests one per transaction.
//!
//! # An unknown COMMIT outcome
//! If the connection drops after COMMIT was sent, the transaction may or may
//! not have committed. The writer never guesses: each transaction holds an
//! advisory lock on a random token, so on a fresh connection the writer waits
//! for that lock (the old transaction has then ended, one way or the other),
//! and looks for a row only that transaction wrote (its first event id, which
//! was generated before the transaction; else its session or kept reply,
//! with the creation time it wrote). Found: the requests are answered as
//! committed. Not found: nothing was stored and they are retried with the same
//! event ids, so even a wrong answer could only fail on the unique
//! (project_id, id) index, never append an event twice. If the database stays
//! unreachable, the requests are answered `Storage` ("outcome unknown") after a
//! bounded wait: the server never re-sends them itself.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use deadpool_postgres::{Object, Pool};
use lru::LruCache;
use tokio::sync::{OwnedSemaphorePermit, mpsc, oneshot};

use agentledger_core::chain::{LinkFacts, SessionHead, SessionHeader, link, sha256, tag_list};
use agentledger_core::verdict::Verdict;
use agentledger_core::{EventId, Micros, NewEvent, Session, SessionStatus};

use super::errors::{Class, classify, describe, pool_error};
use super::rows::{EVENT_COLS, EVENT_FROM, counters_from_row, event_from_row, get};
use crate::{
    AppendOutcome, AppendRequest, AppendedEvent, Committed, IdempotencyKey, Judge, NewSession,
    ProjectRef, Render, SessionStates, StoreError, StoreResult, StoredReply, WriterObserver,
};

/// Upper bound of events in one group-commit transaction.
const MAX_EVENTS_PER_TXN: usize = 10_000;
/// Upper bound of payload bytes in one group-commit transaction.
const MAX_BYTES_PER_TXN: usize = 64 << 20;
/// Attempts at a group before its remaining requests are answered `Overloaded`.
const MAX_ATTEMPTS: u32 = 6;
/// How long an unknown COMMIT outcome is chased before it is reported.
const RESOLVE_FOR: Duration = Duration::from_secs(30);

pub(crate) type Reply<T> = oneshot::Sender<StoreResult<T>>;

pub(crate) enum Cmd {
    Append(Box<Append>),
    Shutdown,
}

pub(crate) struct Append {
    pub(crate) project: ProjectRef,
    pub(crate) req: AppendRequest,
    pub(crate) reply: Reply<AppendOutcome>,
    /// Released just before the reply is sent.
    pub(crate) permit: OwnedSemaphorePermit,
}

type State = crate::kept::KeptState;

pub(crate) struct Writer {
    pub(crate) pool: Pool,
    /// Committed policy states (see the module doc).
    pub(crate) states: LruCache<HeadKey, State>,
    /// The states the open transaction moved, kept if it commits.
    pub(crate) pending_states: HashMap<HeadKey, State>,
    /// For resolving an unknown COMMIT outcome on another connection.
    pub(crate) check_pool: Pool,
    pub(crate) observer: Option<Arc<dyn WriterObserver>>,
    pub(crate) depth: Arc<AtomicUsize>,
    pub(crate) idempotency_ttl: Duration,
    pub(crate) last_purge: Option<Instant>,
}

/// One request as the writer holds it across attempts. Its event ids and
/// time are fixed when it is first taken, so every attempt writes the same
/// rows (a duplicate can then only hit the unique index).
struct Job {
    project: ProjectRef,
    session: Option<NewSession>,
    events: Vec<NewEvent>,
    key: Option<IdempotencyKey>,
    render: Option<Render>,
    /// Judges the events in the transaction; then `submitted` holds them as
    /// sent (each attempt judges them again) and `events` as judged.
    judge: Option<Box<dyn Judge>>,
    /// The project's event alert rules (the outbox is written with the events).
    alerts: Option<Arc<crate::alerts::RuleSet>>,
    /// The event this job's record erases (see `AppendRequest::erase`).
    erase: Option<Box<crate::EraseTarget>>,
    submitted: Vec<NewEvent>,
    verdicts: Vec<Verdict>,
    ids: Vec<EventId>,
    now: Micros,
    reply: Option<Reply<AppendOutcome>>,
    permit: Option<OwnedSemaphorePermit>,
    outcome: Option<StoreResult<AppendOutcome>>,
}

impl Job {
    fn new(
        project: ProjectRef,
        req: AppendRequest,
        reply: Reply<AppendOutcome>,
        permit: OwnedSemaphorePermit,
    ) -> Job {
        let now = Micros::now();
        let ids = req.events.iter().map(|_| EventId::generate(now)).collect();
        let (key, render) = match req.idempotency {
            Some((k, r)) => (Some(k), Some(r)),
            None => (None, None),
        };
        let (events, submitted) = match req.judge {
            Some(_) => (Vec::new(), req.events),
            None => (req.events, Vec::new()),
        };
        Job {
            project,
            session: req.session,
            events,
            key,
            render,
            judge: req.judge,
            alerts: req.alerts,
            erase: req.erase,
            submitted,
            verdicts: Vec::new(),
            ids,
            now,
            reply: Some(reply),
            permit: Some(permit),
            outcome: None,
        }
    }

    /// The events as the request sent them.
    fn sent(&self) -> &[NewEvent] {
        if self.judge.is_some() {
            &self.submitted
        } else {
            &self.events
        }
    }

    /// Hand the request back unjudged, to be queued again with seeds.
    fn needs_state(&mut self, sessions: Vec<String>) {
        let request = AppendRequest {
            session: self.session.take(),
            events: std::mem::take(&mut self.submitted),
            idempotency: self.key.take().zip(self.render.take()),
            judge: self.judge.take(),
            alerts: self.alerts.clone(),
            erase: self.erase.clone(),
        };
        self.outcome = Some(Ok(AppendOutcome::NeedsState {
            request: Box::new(request),
            sessions,
        }));
    }

    fn answer(&mut self) {
        drop(self.permit.take());
        if let (Some(reply), Some(outcome)) = (self.reply.take(), self.outcome.take()) {
            let _ = reply.send(outcome);
        }
    }
}

type HeadKey = (i64, String);

/// A session's header as its row holds it.
#[derive(Debug, Clone)]
struct Header {
    agent_id: String,
    system_prompt: Option<String>,
    metadata: String,
    created_at: Micros,
}

/// Where a session row is: already stored, or created by this attempt (the
/// index into its list of new rows; the row's `ref` is known after INSERT).
#[derive(Debug, Clone, Copy)]
enum Slot {
    Stored(i64),
    New(usize),
}

#[derive(Debug, Clone)]
struct Head {
    slot: Slot,
    header: Header,
    chain: SessionHead,
    moved: bool,
}

struct NewRow {
    project_id: i64,
    id: String,
    header: Header,
}

/// One event row to insert (borrowing the job's strings).
struct EventRow<'a> {
    ev: &'a NewEvent,
    project_id: i64,
    slot: Slot,
    linked: agentledger_core::chain::Linked,
}

/// What the in-memory pass decided for one job.
enum Decided {
    /// A reply kept under the job's key: replayed, or a conflict. No rows.
    Kept(StoreResult<AppendOutcome>),
    /// An earlier job of this group committed the same key and fingerprint:
    /// replay its reply once rendered.
    ReplayOf(usize),
    Append {
        appended: Vec<Appended>,
        /// The session this job created explicitly, after its events.
        session: Option<Box<(HeadKey, Head)>>,
    },
}

/// How an attempt ended.
enum Failure {
    /// Nothing of it committed and it may succeed again.
    Retry(StoreError),
    /// No connection could be had: the database is away. Tried once more,
    /// then answered (503), rather than holding the queue for many
    /// connection timeouts.
    Down(StoreError),
    /// A statement was refused for what some request holds.
    Data(StoreError),
}

pub(super) fn lock_key(kind: u8, project: i64, name: &str) -> i64 {
    let mut b = Vec::with_capacity(9 + name.len());
    b.push(kind);
    b.extend_from_slice(&project.to_be_bytes());
    b.extend_from_slice(name.as_bytes());
    let h = sha256(&b);
    let mut k = [0u8; 8];
    k.copy_from_slice(&h[..8]);
    i64::from_be_bytes(k)
}

/// PostgreSQL text cannot hold NUL; refused before anything is written.
fn check_text(what: &str, s: &str) -> StoreResult<()> {
    if s.contains('\0') {
        return Err(StoreError::Storage(format!(
            "{what} contains a NUL character, which PostgreSQL text cannot store"
        )));
    }
    Ok(())
}

fn check_job(job: &Job) -> StoreResult<()> {
    if let Some(s) = &job.session {
        check_text(
            "the session's system prompt",
            s.system_prompt.as_deref().unwrap_or(""),
        )?;
    }
    if let Some(k) = &job.key {
        check_text("the idempotency key", &k.key)?;
    }
    for ev in job.sent() {
        check_text("the event's source type", &ev.source_type)?;
        check_text("the session id", ev.session_id.as_str())?;
        check_text("the agent id", ev.agent_id.as_str())?;
    }
    Ok(())
}

fn failure(e: tokio_postgres::Error) -> Failure {
    match classify(&e) {
        Class::Transient | Class::Unavailable => Failure::Retry(StoreError::Overloaded),
        Class::Budget => Failure::Retry(StoreError::Overloaded),
        Class::Full => Failure::Data(StoreError::Full(describe(&e))),
        Class::Limit => Failure::Data(StoreError::TooLarge(describe(&e))),
        Class::Other => Failure::Data(StoreError::Storage(describe(&e))),
    }
}

impl Writer {
    /// Run until the queue closes or a Shutdown command arrives; everything
    /// queued before it is committed and answered first.
    pub(crate) async fn run(mut self, mut rx: mpsc::Receiver<Cmd>) {
        while let Some(first) = rx.recv().await {
            let mut jobs = Vec::new();
            let mut stop = false;
            let (mut n, mut bytes) = (0usize, 0usize);
            let mut next = Some(first);
            while let Some(cmd) = next.take() {
                self.depth.fetch_sub(1, Ordering::Relaxed);
                match cmd {
                    Cmd::Shutdown => {
                        stop = true;
                        break;
                    }
                    Cmd::Append(a) => {
                        let Append {
                            project,
                            req,
                            reply,
                            permit,
                        } = *a;
                        n += req.events.len().max(1);
                        bytes += req
                            .events
                            .iter()
                            .map(|e| e.payload.get().len())
                            .sum::<usize>();
                        jobs.push(Job::new(project, req, reply, permit));
                    }
                }
                if n < MAX_EVENTS_PER_TXN && bytes < MAX_BYTES_PER_TXN {
                    next = rx.try_recv().ok();
                }
            }
            self.commit_group(jobs).await;
            if stop {
                break;
            }
        }
    }

    async fn commit_group(&mut self, mut jobs: Vec<Job>) {
        if jobs.is_empty() {
            return;
        }
        for job in &mut jobs {
            if let Err(e) = check_job(job) {
                job.outcome = Some(Err(e));
            }
        }
        let started = Instant::now();
        let mut attempts = 0;
        let mut one_by_one = false;
        let mut last_error = StoreError::Overloaded;
        loop {
            let open: Vec<usize> = (0..jobs.len())
                .filter(|&i| jobs[i].outcome.is_none())
                .collect();
            if open.is_empty() {
                break;
            }
            if attempts >= MAX_ATTEMPTS {
                for &i in &open {
                    jobs[i].outcome = Some(Err(last_error.clone()));
                }
                break;
            }
            attempts += 1;
            let batch: Vec<usize> = if one_by_one { open[..1].to_vec() } else { open };
            match self.attempt(&mut jobs, &batch).await {
                Ok(()) => {
                    if one_by_one {
                        // Each request alone until the group is done.
                        attempts = 0;
                    }
                }
                Err(Failure::Down(e)) => {
                    last_error = e;
                    attempts = attempts.max(MAX_ATTEMPTS - 1);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(Failure::Retry(e)) => {
                    last_error = e;
                    // Contention resolves at once; a lost connection needs
                    // the pool to reconnect (or the database to come back).
                    let backoff = Duration::from_millis(20 * u64::from(attempts * attempts));
                    tokio::time::sleep(backoff).await;
                }
                Err(Failure::Data(e)) => {
                    if batch.len() == 1 {
                        jobs[batch[0]].outcome = Some(Err(e));
                        attempts = 0;
                    } else {
                        one_by_one = true;
                        attempts = 0;
                    }
                }
            }
        }
        let (mut events, mut requests) = (0, 0);
        for job in &jobs {
            if let Some(Ok(AppendOutcome::Committed { appended, .. })) = &job.outcome {
                events += appended.len();
                requests += 1;
            }
        }
        for job in &mut jobs {
            job.answer();
        }
        if requests > 0
            && let Some(obs) = &self.observer
        {
            obs.committed(events, requests, started.elapsed().as_secs_f64());
        }
    }

    async fn connection(&self) -> Result<Object, Failure> {
        self.pool
            .get()
            .await
            .map_err(|e| Failure::Down(pool_error(e)))
    }

    /// One transaction over the jobs `batch` (indexes into `jobs`). Sets the
    /// outcome of every job it settles.
    async fn attempt(&mut self, jobs: &mut [Job], batch: &[usize]) -> Result<(), Failure> {
        let mut conn = self.connection().await?;
        let r = self.attempt_on(&mut conn, jobs, batch).await;
        if let Err(Failure::Retry(_)) = &r
            && conn.is_closed()
        {
            // Never hand a dead or demoted connection back to the pool.
            drop(Object::take(conn));
        }
        r
    }

    async fn attempt_on(
        &mut self,
        conn: &mut Object,
        jobs: &mut [Job],
        batch: &[usize],
    ) -> Result<(), Failure> {
        let token: i64 = i64::from_be_bytes(random8());
        let client: &tokio_postgres::Client = conn;
        client.batch_execute("BEGIN").await.map_err(failure)?;
        let r = self.in_transaction(client, jobs, batch, token).await;
        match r {
            Ok(Some(witness)) => self.commit(client, jobs, batch, token, witness).await,
            Ok(None) => {
                // Nothing to write: every job was settled in memory.
                let _ = client.batch_execute("ROLLBACK").await;
                Ok(())
            }
            Err(f) => {
                let _ = client.batch_execute("ROLLBACK").await;
                Err(f)
            }
        }
    }

    /// COMMIT, and settle the jobs the transaction carried.
    async fn commit(
        &mut self,
        client: &tokio_postgres::Client,
        jobs: &mut [Job],
        batch: &[usize],
        token: i64,
        witness: Witness,
    ) -> Result<(), Failure> {
        let committed = match client.batch_execute("COMMIT").await {
            Ok(()) => true,
            Err(e) if e.as_db_error().is_some() => {
                // The server answered: the transaction did not commit.
                tracing::warn!(error = %describe(&e), "COMMIT refused; nothing of this group was stored");
                false
            }
            Err(e) => {
                tracing::error!(error = %describe(&e), "connection lost during COMMIT; resolving its outcome");
                match self.resolve(token, &witness).await {
                    Some(c) => c,
                    None => {
                        for &i in batch {
                            if matches!(jobs[i].outcome, Some(Ok(_))) {
                                jobs[i].outcome = Some(Err(StoreError::Storage(
                                    "the database connection was lost during COMMIT and whether it committed could not be determined; the request may or may not be stored".into(),
                                )));
                            }
                        }
                        return Ok(());
                    }
                }
            }
        };
        let states = std::mem::take(&mut self.pending_states);
        if committed {
            for (key, state) in states {
                self.states.put(key, state);
            }
            for &i in batch {
                let job = &mut jobs[i];
                if let Some(Ok(AppendOutcome::Committed {
                    events, verdicts, ..
                })) = &mut job.outcome
                {
                    *events = std::mem::take(&mut job.events);
                    *verdicts = std::mem::take(&mut job.verdicts);
                }
            }
            return Ok(());
        }
        // Not stored: jobs whose reply was rendered cannot be redone (the
        // renderer runs once); they are refused and the client retries with
        // its key. The others are attempted again.
        for &i in batch {
            let job = &mut jobs[i];
            if matches!(job.outcome, Some(Ok(_))) {
                job.outcome = (job.key.is_some() && job.render.is_none())
                    .then_some(Err(StoreError::Overloaded));
            }
        }
        Err(Failure::Retry(StoreError::Overloaded))
    }

    /// After a lost COMMIT: wait for the transaction holding `token` to end,
    /// then look for its witness row. `None`: the database could not be
    /// asked within [`RESOLVE_FOR`].
    async fn resolve(&self, token: i64, witness: &Witness) -> Option<bool> {
        let deadline = Instant::now() + RESOLVE_FOR;
        while Instant::now() < deadline {
            match self.check_once(token, witness).await {
                Ok(found) => {
                    tracing::warn!(
                        committed = found,
                        "resolved the outcome of a COMMIT whose connection was lost"
                    );
                    return Some(found);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot resolve a COMMIT outcome yet; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
        tracing::error!("gave up resolving a COMMIT outcome");
        None
    }

    async fn check_once(&self, token: i64, witness: &Witness) -> Result<bool, String> {
        let mut conn = self.check_pool.get().await.map_err(|e| e.to_string())?;
        let tx = conn.transaction().await.map_err(|e| describe(&e))?;
        tx.batch_execute("SET LOCAL lock_timeout = '20s'")
            .await
            .map_err(|e| describe(&e))?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&token])
            .await
            .map_err(|e| describe(&e))?;
        let n: i64 = match witness {
            Witness::Event { project, id } => tx
                .query_one(
                    "SELECT count(*) FROM events WHERE project_id = $1 AND id = $2",
                    &[project, id],
                )
                .await,
            Witness::Session {
                project,
                id,
                created_at,
            } => tx
                .query_one(
                    "SELECT count(*) FROM sessions WHERE project_id = $1 AND id = $2 AND created_at = $3",
                    &[project, id, created_at],
                )
                .await,
            Witness::Reply {
                project,
                key,
                created_at,
            } => tx
                .query_one(
                    "SELECT count(*) FROM idempotency_keys WHERE project_id = $1 AND key = $2 AND created_at = $3",
                    &[project, key, created_at],
                )
                .await,
        }
        .and_then(|r| r.try_get(0))
        .map_err(|e| describe(&e))?;
        let _ = tx.rollback().await;
        Ok(n > 0)
    }

    /// Everything between BEGIN and COMMIT. Returns the witness of what it
    /// wrote, or `None` when it wrote nothing.
    async fn in_transaction(
        &mut self,
        client: &tokio_postgres::Client,
        jobs: &mut [Job],
        batch: &[usize],
        token: i64,
    ) -> Result<Option<Witness>, Failure> {
        // States of an attempt that never reached COMMIT are not kept.
        self.pending_states.clear();
        // 1. Locks, in one global order.
        let mut session_keys: Vec<HeadKey> = Vec::new();
        let mut idem_keys: Vec<(i64, String)> = Vec::new();
        for &i in batch {
            let job = &jobs[i];
            let p = job.project.id.0;
            if let Some(s) = &job.session {
                session_keys.push((p, s.id.as_str().to_owned()));
            }
            for ev in job.sent() {
                session_keys.push((p, ev.session_id.as_str().to_owned()));
            }
            if let Some(k) = &job.key {
                idem_keys.push((p, k.key.clone()));
            }
        }
        session_keys.sort();
        session_keys.dedup();
        idem_keys.sort();
        idem_keys.dedup();
        let mut locks: Vec<i64> = session_keys
            .iter()
            .map(|(p, s)| lock_key(b's', *p, s))
            .chain(idem_keys.iter().map(|(p, k)| lock_key(b'k', *p, k)))
            .chain(std::iter::once(token))
            .collect();
        locks.sort_unstable();
        locks.dedup();
        client
            .execute(
                "SELECT count(pg_advisory_xact_lock(k)) FROM unnest($1::int8[]) AS k",
                &[&locks],
            )
            .await
            .map_err(failure)?;

        // 2. The heads, locked and read (never from a cache).
        let mut heads: HashMap<HeadKey, Head> = HashMap::new();
        if !session_keys.is_empty() {
            let (ps, ids): (Vec<i64>, Vec<&str>) =
                session_keys.iter().map(|(p, s)| (*p, s.as_str())).unzip();
            let rows = client
                .query(
                    "SELECT project_id, ref, id, agent_id, system_prompt, metadata, created_at, ended,
                        head_seq, head_hash, first_event_at, last_event_at, event_count,
                        tool_call_count, error_count, llm_call_count, input_tokens, output_tokens,
                        cost_usd, tags
                     FROM sessions WHERE (project_id, id) IN (SELECT * FROM unnest($1::int8[], $2::text[]))
                     ORDER BY project_id, id FOR UPDATE",
                    &[&ps, &ids],
                )
                .await
                .map_err(failure)?;
            for r in &rows {
                let head = head_from_row(r).map_err(Failure::Data)?;
                heads.insert(
                    (
                        get(r, "project_id").map_err(Failure::Data)?,
                        get(r, "id").map_err(Failure::Data)?,
                    ),
                    head,
                );
            }
        }

        // 3. Live kept replies.
        let mut kept: HashMap<(i64, String), ([u8; 32], StoredReply)> = HashMap::new();
        if !idem_keys.is_empty() {
            let (ps, ks): (Vec<i64>, Vec<&str>) =
                idem_keys.iter().map(|(p, k)| (*p, k.as_str())).unzip();
            let rows = client
                .query(
                    "SELECT project_id, key, fingerprint, status, content_type, body FROM idempotency_keys
                     WHERE (project_id, key) IN (SELECT * FROM unnest($1::int8[], $2::text[]))
                       AND created_at >= $3",
                    &[&ps, &ks, &self.oldest_kept()],
                )
                .await
                .map_err(failure)?;
            for r in &rows {
                let (k, v) = kept_from_row(r).map_err(Failure::Data)?;
                kept.insert(k, v);
            }
        }
        self.purge(client).await;

        // 4. Judge (see the module doc) and decide every job in memory.
        check_erasures(client, jobs, batch).await?;
        let mut states = self.states_at(client, jobs, batch, &heads).await?;
        let mut new_rows: Vec<NewRow> = Vec::new();
        let mut decided: Vec<(usize, Decided)> = Vec::new();
        let mut keyed_here: HashMap<(i64, String), (usize, [u8; 32])> = HashMap::new();
        for &i in batch {
            if jobs[i].outcome.is_some() {
                // Handed back for a seed.
                continue;
            }
            let judged = match judge_job(&mut jobs[i], &states) {
                Ok(j) => j,
                Err(e) => {
                    jobs[i].outcome = Some(Err(e));
                    continue;
                }
            };
            let result = decide(&jobs[i], &mut heads, &mut new_rows, &kept, &keyed_here);
            if let (Ok(Decided::Append { appended, .. }), true) =
                (&result, judged.is_none() && !states.is_empty())
            {
                // Appended without a judge (an erasure's record, an alert's
                // event) to a session a judged job of this batch holds the
                // state of (`states_at` read them at the batch's heads):
                // folded in, so a judged job after it is judged after it,
                // as the chain has them.
                let p = jobs[i].project.id.0;
                for (ev, a) in jobs[i].events.iter().zip(appended) {
                    if let Some(st) = states.get_mut(&(p, ev.session_id.as_str().to_owned())) {
                        st.fold
                            .apply_stored(&ev.stored(&jobs[i].project.name, &a.linked));
                        st.seq = a.linked.seq;
                    }
                }
            }
            if let (Ok(Decided::Append { .. }), Some(judged)) = (&result, judged) {
                let p = jobs[i].project.id.0;
                for (id, fold) in judged {
                    let key = (p, id);
                    let seq = heads.get(&key).map_or(0, |h| h.chain.seq);
                    states.insert(key, State { seq, fold });
                }
            }
            match result {
                Ok(Decided::Kept(outcome)) => jobs[i].outcome = Some(outcome),
                Ok(d) => {
                    if let (Some(k), Decided::Append { .. }) = (&jobs[i].key, &d) {
                        keyed_here
                            .insert((jobs[i].project.id.0, k.key.clone()), (i, k.fingerprint));
                    }
                    decided.push((i, d));
                }
                Err(e) => jobs[i].outcome = Some(Err(e)),
            }
        }
        let appends = decided
            .iter()
            .filter(|(_, d)| matches!(d, Decided::Append { .. }))
            .count();
        if appends == 0 {
            // Only replays within the group could remain; they have nothing
            // to replay from. (Unreachable: a ReplayOf needs an Append.)
            for (i, _) in &decided {
                jobs[*i].outcome = Some(Err(StoreError::Storage("nothing to replay".into())));
            }
            return Ok(None);
        }

        // 5. Write: new sessions, events, salts, heads.
        let refs = insert_sessions(client, &new_rows).await?;
        let first_event = {
            let mut rows: Vec<EventRow<'_>> = Vec::new();
            for (i, d) in &decided {
                let Decided::Append { appended, .. } = d else {
                    continue;
                };
                let job = &jobs[*i];
                for (ev, a) in job.events.iter().zip(appended) {
                    let key = (job.project.id.0, ev.session_id.as_str().to_owned());
                    let slot = heads.get(&key).map(|h| h.slot).ok_or_else(|| {
                        Failure::Data(StoreError::Storage(
                            "a linked event lost its session".into(),
                        ))
                    })?;
                    rows.push(EventRow {
                        ev,
                        project_id: job.project.id.0,
                        slot,
                        linked: a.linked.clone(),
                    });
                }
            }
            insert_events(client, &rows, &refs).await?;
            let erasures: Vec<Erasing> = decided
                .iter()
                .filter_map(|(i, d)| {
                    let (Decided::Append { appended, .. }, Some(t)) = (d, jobs[*i].erase.as_ref())
                    else {
                        return None;
                    };
                    let at = appended.first()?;
                    Some(Erasing {
                        project: jobs[*i].project.id.0,
                        event_id: t.event_id,
                        by: t.by.clone(),
                        at: at.out.server_ts.0,
                        record_seq: at.out.seq as i64,
                    })
                })
                .collect();
            erase_rows(client, &erasures).await?;
            write_rollups(client, &rows, token).await?;
            // The outbox, in the events' transaction (see `crate::alerts`).
            let mut outbox = Vec::new();
            for (i, d) in &decided {
                let Decided::Append { appended, .. } = d else {
                    continue;
                };
                let job = &jobs[*i];
                let Some(rules) = job.alerts.as_deref().filter(|r| !r.rules.is_empty()) else {
                    continue;
                };
                for (ev, a) in job.events.iter().zip(appended) {
                    for alert in crate::alerts::outbox_for(rules, ev, &a.out.id.to_string()) {
                        outbox.push((job.project.id.0, alert, job.now));
                    }
                }
            }
            for (project, alert, now) in &outbox {
                super::alerts::insert_alert(client, *project, alert, *now)
                    .await
                    .map_err(failure)?;
            }
            rows.first().map(|r| (r.project_id, r.linked.id))
        };
        update_heads(client, &heads, &refs).await?;

        // 6. Render and keep replies (the renderers run once, from here on
        // a failure cannot redo these jobs).
        let mut replies: HashMap<usize, StoredReply> = HashMap::new();
        let mut kept_rows: Vec<(i64, String, [u8; 32], StoredReply, i64)> = Vec::new();
        let mut outcomes: Vec<(usize, AppendOutcome)> = Vec::new();
        let mut render_failed = false;
        for (i, d) in &decided {
            let Decided::Append { appended, session } = d else {
                continue;
            };
            let job = &mut jobs[*i];
            let session = session
                .as_ref()
                .map(|b| Box::new(session_of(&job.project, &b.0, &b.1)));
            let plain: Vec<AppendedEvent> = appended.iter().map(|a| a.out.clone()).collect();
            let reply = match (job.key.as_ref(), job.render.take()) {
                (Some(key), Some(render)) => {
                    let committed = Committed {
                        events: &job.events,
                        appended: &plain,
                        session: session.as_deref(),
                        verdicts: &job.verdicts,
                    };
                    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        render(&committed)
                    })) {
                        Ok(r) if !r.content_type.contains('\0') => {
                            kept_rows.push((
                                job.project.id.0,
                                key.key.clone(),
                                key.fingerprint,
                                r.clone(),
                                job.now.0,
                            ));
                            replies.insert(*i, r.clone());
                            Some(r)
                        }
                        _ => {
                            render_failed = true;
                            job.outcome = Some(Err(StoreError::Storage(
                                "rendering the reply failed".into(),
                            )));
                            None
                        }
                    }
                }
                _ => None,
            };
            outcomes.push((
                *i,
                AppendOutcome::Committed {
                    session,
                    appended: plain,
                    events: Vec::new(),
                    reply,
                    verdicts: Vec::new(),
                },
            ));
        }
        if render_failed {
            // The failed job's events are in this transaction: roll it back;
            // rendered jobs are refused, the rest retried.
            for (i, _) in &outcomes {
                if jobs[*i].outcome.is_none() && jobs[*i].key.is_some() {
                    jobs[*i].outcome = Some(Err(StoreError::Overloaded));
                }
            }
            return Err(Failure::Retry(StoreError::Storage(
                "rendering a reply failed".into(),
            )));
        }
        if let Err(f) = insert_replies(client, &kept_rows).await {
            for (i, _) in &outcomes {
                if jobs[*i].key.is_some() {
                    jobs[*i].outcome = Some(Err(StoreError::Overloaded));
                }
            }
            return Err(match f {
                Failure::Data(e) => Failure::Retry(e),
                r => r,
            });
        }
        // Outcomes are set now (their events are handed back only after
        // COMMIT); `commit` takes them back if COMMIT fails.
        for (i, o) in outcomes {
            jobs[i].outcome = Some(Ok(o));
        }
        for (i, d) in &decided {
            if let Decided::ReplayOf(j) = d {
                jobs[*i].outcome = Some(match replies.get(j) {
                    Some(r) => Ok(AppendOutcome::Replayed(r.clone())),
                    None => Err(StoreError::Storage(
                        "the replayed request kept no reply".into(),
                    )),
                });
            }
        }
        self.pending_states = states;
        Ok(Some(witness_of(first_event, &new_rows, &kept_rows)))
    }

    /// The policy states of the judged jobs' sessions at their locked heads:
    /// kept ones moved on by what was appended since, seeds, or folds of
    /// short sessions (read in this transaction). A job with a session that
    /// has none of these is handed back for a seed.
    async fn states_at(
        &mut self,
        client: &tokio_postgres::Client,
        jobs: &mut [Job],
        batch: &[usize],
        heads: &HashMap<HeadKey, Head>,
    ) -> Result<HashMap<HeadKey, State>, Failure> {
        let mut states: HashMap<HeadKey, State> = HashMap::new();
        // (session, folded up to, head, project name): events to fold in.
        let mut behind: Vec<(HeadKey, u64, u64, String)> = Vec::new();
        for &i in batch {
            let job = &mut jobs[i];
            if job.judge.is_none() || job.outcome.is_some() {
                continue;
            }
            let p = job.project.id.0;
            let mut missing = Vec::new();
            let mut ids: Vec<String> = job
                .submitted
                .iter()
                .map(|e| e.session_id.as_str().to_owned())
                .collect();
            ids.sort();
            ids.dedup();
            for id in ids {
                let key = (p, id);
                if states.contains_key(&key) {
                    continue;
                }
                let at = heads.get(&key).map_or(0, |h| h.chain.seq);
                let kept = self.states.get(&key).cloned();
                let judge = job.judge.as_mut().ok_or_else(|| {
                    Failure::Data(StoreError::Judge("the judge went missing".into()))
                })?;
                let Some((from, fold)) = crate::kept::fold_from(kept, at, &key.1, judge.as_mut())
                else {
                    missing.push(key.1);
                    continue;
                };
                if from < at {
                    behind.push((key.clone(), from, at, job.project.name.clone()));
                }
                states.insert(key, State { seq: at, fold });
            }
            if !missing.is_empty() {
                job.needs_state(missing);
            }
        }
        // What was appended since the kept states (another node, mostly):
        // one read per project, under the rows' locks.
        behind.sort_by(|a, b| a.0.cmp(&b.0));
        for chunk in behind.chunk_by(|a, b| a.0.0 == b.0.0) {
            let project = chunk[0].0.0;
            let name = &chunk[0].3;
            let ids: Vec<&str> = chunk.iter().map(|b| b.0.1.as_str()).collect();
            let lo: Vec<i64> = chunk.iter().map(|b| b.1 as i64).collect();
            let hi: Vec<i64> = chunk.iter().map(|b| b.2 as i64).collect();
            let rows = client
                .query(
                    &format!(
                        "SELECT {EVENT_COLS} FROM {EVENT_FROM}
                         JOIN unnest($2::text[], $3::int8[], $4::int8[]) AS w(id, lo, hi)
                           ON s.id = w.id
                         WHERE s.project_id = $1 AND e.project_id = $1
                           AND e.seq > w.lo AND e.seq <= w.hi
                         ORDER BY s.id, e.seq"
                    ),
                    &[&project, &ids, &lo, &hi],
                )
                .await
                .map_err(failure)?;
            for r in &rows {
                let ev = event_from_row(r, name).map_err(Failure::Data)?;
                let key = (project, ev.session_id.as_str().to_owned());
                if let Some(st) = states.get_mut(&key) {
                    st.fold.apply_stored(&ev);
                }
            }
        }
        Ok(states)
    }

    fn oldest_kept(&self) -> i64 {
        let ttl = i64::try_from(self.idempotency_ttl.as_micros()).unwrap_or(i64::MAX);
        Micros::now().0.saturating_sub(ttl)
    }

    /// Delete expired idempotency keys, at most once a minute, in the
    /// group's open transaction.
    async fn purge(&mut self, client: &tokio_postgres::Client) {
        if self
            .last_purge
            .is_some_and(|t| t.elapsed() < Duration::from_secs(60))
        {
            return;
        }
        self.last_purge = Some(Instant::now());
        let oldest = self.oldest_kept();
        if let Err(e) = client
            .execute(
                "DELETE FROM idempotency_keys WHERE created_at < $1",
                &[&oldest],
            )
            .await
        {
            tracing::warn!(error = %describe(&e), "could not delete expired idempotency keys");
        }
    }
}

/// A row only the transaction wrote, to find after a lost COMMIT.
enum Witness {
    Event {
        project: i64,
        id: Vec<u8>,
    },
    Session {
        project: i64,
        id: String,
        created_at: i64,
    },
    Reply {
        project: i64,
        key: String,
        created_at: i64,
    },
}

fn witness_of(
    first_event: Option<(i64, EventId)>,
    new_rows: &[NewRow],
    kept: &[(i64, String, [u8; 32], StoredReply, i64)],
) -> Witness {
    if let Some((project, id)) = first_event {
        return Witness::Event {
            project,
            id: id.to_bytes().to_vec(),
        };
    }
    if let Some(s) = new_rows.first() {
        return Witness::Session {
            project: s.project_id,
            id: s.id.clone(),
            created_at: s.header.created_at.0,
        };
    }
    match kept.first() {
        Some((p, k, _, _, at)) => Witness::Reply {
            project: *p,
            key: k.clone(),
            created_at: *at,
        },
        // Unreachable: an attempt with an Append wrote one of the three.
        None => Witness::Event {
            project: 0,
            id: Vec::new(),
        },
    }
}

/// An appended event with what its row needs.
#[derive(Debug, Clone)]
struct Appended {
    out: AppendedEvent,
    linked: agentledger_core::chain::Linked,
}

/// Refuse the erasures of the batch that cannot be carried out: the event
/// is not the one the record names, is already erased, or is erased by an
/// earlier job of the group. The record's session is locked (step 1), and
/// an erasure's record names the erased event's session, so no other
/// writer erases the row until this transaction ends.
async fn check_erasures(
    client: &tokio_postgres::Client,
    jobs: &mut [Job],
    batch: &[usize],
) -> Result<(), Failure> {
    let mut erasing: std::collections::HashSet<(i64, EventId)> = Default::default();
    // What each erasing job says, collected first: a `Job` is not `Sync`,
    // so none is held across the reads below.
    let wanted: Vec<WantedErasure> = batch
        .iter()
        .filter_map(|&i| {
            let job = &jobs[i];
            let t = job.erase.clone().filter(|_| job.outcome.is_none())?;
            let sent = job.sent();
            let shaped = sent.len() == 1 && sent[0].kind == agentledger_core::Kind::EventErased;
            Some((
                i,
                job.project.id.0,
                job.project.name.clone(),
                t,
                sent.first().map(|e| e.session_id.as_str().to_owned()),
                shaped,
            ))
        })
        .collect();
    for (i, p, project_name, t, record_session, shaped) in wanted {
        let row = client
            .query_opt(
                "SELECT e.erased_at, s.id AS session_id, e.seq, e.payload_sha256
                 FROM events e JOIN sessions s ON s.project_id = e.project_id AND s.ref = e.session_ref
                 WHERE e.project_id = $1 AND e.id = $2",
                &[&p, &&t.event_id.to_bytes()[..]],
            )
            .await
            .map_err(failure)?;
        let refusal = match row {
            None => Some(StoreError::Storage(format!(
                "event {} to erase is not in project {project_name}",
                t.event_id
            ))),
            Some(r) => {
                let erased: Option<i64> = get(&r, "erased_at").map_err(Failure::Data)?;
                let session: String = get(&r, "session_id").map_err(Failure::Data)?;
                let seq: i64 = get(&r, "seq").map_err(Failure::Data)?;
                let sha: Vec<u8> = get(&r, "payload_sha256").map_err(Failure::Data)?;
                if erased.is_some() || erasing.contains(&(p, t.event_id)) {
                    Some(StoreError::AlreadyErased(t.event_id.to_string()))
                } else if record_session.as_deref() != Some(session.as_str())
                    || seq != t.seq as i64
                    || sha[..] != t.payload_sha256[..]
                    || !shaped
                {
                    Some(StoreError::Storage(format!(
                        "event {} is not the event the erasure record names",
                        t.event_id
                    )))
                } else {
                    None
                }
            }
        };
        match refusal {
            Some(e) => jobs[i].outcome = Some(Err(e)),
            None => {
                erasing.insert((p, t.event_id));
            }
        }
    }
    Ok(())
}

/// Erase the payloads of the decided erasure jobs, in the transaction that
/// appends their records: the row keeps its digest; its payload is emptied
/// (and with it the generated search vector).
async fn erase_rows(client: &tokio_postgres::Client, erasures: &[Erasing]) -> Result<(), Failure> {
    for e in erasures {
        // The payload as it was, to find the kept replies that echo it.
        let before: Option<String> = client
            .query_opt(
                "SELECT payload FROM events
                 WHERE project_id = $1 AND id = $2 AND erased_at IS NULL FOR UPDATE",
                &[&e.project, &&e.event_id.to_bytes()[..]],
            )
            .await
            .map_err(failure)?
            .map(|r| get(&r, "payload"))
            .transpose()
            .map_err(Failure::Data)?;
        let n = client
            .execute(
                "UPDATE events SET payload = '', erased_at = $3, erased_by = $4, erasure_seq = $5
                 WHERE project_id = $1 AND id = $2 AND erased_at IS NULL",
                &[
                    &e.project,
                    &&e.event_id.to_bytes()[..],
                    &e.at,
                    &e.by,
                    &e.record_seq,
                ],
            )
            .await
            .map_err(failure)?;
        let (1, Some(payload)) = (n, before) else {
            return Err(Failure::Data(StoreError::AlreadyErased(
                e.event_id.to_string(),
            )));
        };
        scrub_kept_replies(client, e.project, &e.event_id.to_string(), &payload).await?;
    }
    Ok(())
}

/// Rewrite the project's kept replies that echo an erased event's payload
/// (`crate::replies`), in the erasing transaction.
async fn scrub_kept_replies(
    client: &tokio_postgres::Client,
    project: i64,
    event_id: &str,
    payload: &str,
) -> Result<(), Failure> {
    // Erasures are rare and the table holds one TTL of replies: a scan of the
    // project's, narrowed by both byte strings, is enough.
    let rows = client
        .query(
            "SELECT key, status, content_type, body FROM idempotency_keys
             WHERE project_id = $1
               AND (position($2::bytea in body) > 0 OR position($4::bytea in body) > 0)
               AND position($3::bytea in body) > 0",
            &[
                &project,
                &event_id.to_ascii_uppercase().as_bytes(),
                &payload.as_bytes(),
                &event_id.to_ascii_lowercase().as_bytes(),
            ],
        )
        .await
        .map_err(failure)?;
    for r in rows {
        let key: String = get(&r, "key").map_err(Failure::Data)?;
        let status: i32 = get(&r, "status").map_err(Failure::Data)?;
        let content_type: String = get(&r, "content_type").map_err(Failure::Data)?;
        let body: Vec<u8> = get(&r, "body").map_err(Failure::Data)?;
        let status = u16::try_from(status)
            .map_err(|_| Failure::Data(StoreError::Corrupt("a kept reply's status".into())))?;
        let Some(s) = crate::replies::scrub(status, &content_type, &body, event_id, payload) else {
            continue;
        };
        client
            .execute(
                "UPDATE idempotency_keys SET status = $3, content_type = $4, body = $5
                 WHERE project_id = $1 AND key = $2",
                &[
                    &project,
                    &key,
                    &i32::from(s.status),
                    &s.content_type,
                    &s.body,
                ],
            )
            .await
            .map_err(failure)?;
    }
    Ok(())
}

/// An erasing job, as [`check_erasures`] reads it: its index, project id
/// and name, target, the record's session, and whether the job is shaped
/// as an erasure (its one event is an `event_erased` record).
type WantedErasure = (
    usize,
    i64,
    String,
    Box<crate::EraseTarget>,
    Option<String>,
    bool,
);

/// One erasure to write (see [`erase_rows`]).
struct Erasing {
    project: i64,
    event_id: EventId,
    by: String,
    at: i64,
    record_seq: i64,
}

/// Decide one job against the group's heads, linking its events with
/// core's `chain::link`. On error nothing of the job is left in `heads` or `new_rows`.
fn decide(
    job: &Job,
    heads: &mut HashMap<HeadKey, Head>,
    new_rows: &mut Vec<NewRow>,
    kept: &HashMap<(i64, String), ([u8; 32], StoredReply)>,
    keyed_here: &HashMap<(i64, String), (usize, [u8; 32])>,
) -> StoreResult<Decided> {
    let p = job.project.id.0;
    if let Some(k) = &job.key {
        let at = (p, k.key.clone());
        if let Some((fp, reply)) = kept.get(&at) {
            return Ok(Decided::Kept(if *fp == k.fingerprint {
                Ok(AppendOutcome::Replayed(reply.clone()))
            } else {
                Err(StoreError::IdempotencyConflict(k.key.clone()))
            }));
        }
        if let Some((j, fp)) = keyed_here.get(&at) {
            return if *fp == k.fingerprint {
                Ok(Decided::ReplayOf(*j))
            } else {
                Err(StoreError::IdempotencyConflict(k.key.clone()))
            };
        }
    }
    let mut local: HashMap<HeadKey, Head> = HashMap::new();
    let mut created: Vec<NewRow> = Vec::new();
    let base = new_rows.len();
    let explicit = match &job.session {
        Some(s) => {
            if job.events.iter().any(|e| e.session_id != s.id) {
                return Err(StoreError::Storage(
                    "opening events must name the new session".into(),
                ));
            }
            let key = (p, s.id.as_str().to_owned());
            if heads.contains_key(&key) {
                return Err(StoreError::SessionExists(s.id.to_string()));
            }
            let header = Header {
                agent_id: s.agent_id.as_str().to_owned(),
                system_prompt: s.system_prompt.clone(),
                metadata: s.metadata.get().to_owned(),
                created_at: job.now,
            };
            local.insert(
                key.clone(),
                Head {
                    slot: Slot::New(base + created.len()),
                    header: header.clone(),
                    chain: SessionHead::default(),
                    moved: true,
                },
            );
            created.push(NewRow {
                project_id: p,
                id: key.1.clone(),
                header,
            });
            Some(key)
        }
        None => None,
    };
    let mut appended = Vec::with_capacity(job.events.len());
    for (ev, id) in job.events.iter().zip(&job.ids) {
        let key = (p, ev.session_id.as_str().to_owned());
        if !local.contains_key(&key) {
            let head = match heads.get(&key) {
                Some(h) => h.clone(),
                None => {
                    let header = Header {
                        agent_id: ev.agent_id.as_str().to_owned(),
                        system_prompt: None,
                        metadata: "{}".to_owned(),
                        created_at: job.now,
                    };
                    let slot = Slot::New(base + created.len());
                    created.push(NewRow {
                        project_id: p,
                        id: key.1.clone(),
                        header: header.clone(),
                    });
                    Head {
                        slot,
                        header,
                        chain: SessionHead::default(),
                        moved: true,
                    }
                }
            };
            local.insert(key.clone(), head);
        }
        let head = local
            .get_mut(&key)
            .ok_or_else(|| StoreError::Storage("a session head went missing".into()))?;
        let header = (head.chain.seq == 0).then(|| SessionHeader {
            session_id: &key.1,
            agent_id: &head.header.agent_id,
            system_prompt: head.header.system_prompt.as_deref(),
            metadata: head.header.metadata.as_bytes(),
            created_at: head.header.created_at,
        });
        let linked = link(
            &mut head.chain,
            ev,
            LinkFacts {
                project: &job.project.name,
                id: *id,
                server_ts: job.now,
                header,
            },
        )
        .map_err(|e| StoreError::Storage(e.to_string()))?;
        head.moved = true;
        appended.push(Appended {
            out: AppendedEvent {
                id: *id,
                session_id: key.1.clone(),
                seq: linked.seq,
                hash: linked.hash,
                server_ts: job.now,
            },
            linked,
        });
    }
    let session = explicit.and_then(|k| local.get(&k).cloned().map(|h| Box::new((k, h))));
    heads.extend(local);
    new_rows.extend(created);
    Ok(Decided::Append { appended, session })
}

/// Judge a job's events against the states of its sessions (cloned: they
/// move on only if the job is decided); its judged states by session.
fn judge_job(
    job: &mut Job,
    states: &HashMap<HeadKey, State>,
) -> StoreResult<Option<SessionStates>> {
    let Some(judge) = job.judge.as_mut() else {
        return Ok(None);
    };
    let p = job.project.id.0;
    let mut mine = SessionStates::new();
    for ev in &job.submitted {
        let id = ev.session_id.as_str();
        if !mine.contains_key(id) {
            let state = states
                .get(&(p, id.to_owned()))
                .ok_or_else(|| StoreError::Judge(format!("no state for session {id:?}")))?;
            mine.insert(id.to_owned(), state.fold.clone_box());
        }
    }
    // The judge is the server's code; a panic in it must not take the
    // node's writer down with it.
    let (events, verdicts) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        judge.judge(job.submitted.clone(), &mut mine)
    }))
    .map_err(|_| StoreError::Judge("the policy checkpoint panicked".into()))??;
    if events.len() != job.ids.len() || verdicts.len() != events.len() {
        return Err(StoreError::Judge(
            "a judged request must keep one event and one verdict per event sent".into(),
        ));
    }
    job.events = events;
    job.verdicts = verdicts;
    Ok(Some(mine))
}

fn random8() -> [u8; 8] {
    let mut b = [0u8; 8];
    if getrandom::fill(&mut b).is_err() {
        // A token only has to differ from other live transactions' tokens.
        let t = Micros::now().0.to_be_bytes();
        b.copy_from_slice(&t);
    }
    b
}

fn head_from_row(r: &tokio_postgres::Row) -> StoreResult<Head> {
    let hash = get::<Option<Vec<u8>>>(r, "head_hash")?
        .map(|v| {
            <[u8; 32]>::try_from(v)
                .map_err(|_| StoreError::Corrupt("a session's head hash is not 32 bytes".into()))
        })
        .transpose()?;
    let seq: i64 = get(r, "head_seq")?;
    Ok(Head {
        slot: Slot::Stored(get(r, "ref")?),
        header: Header {
            agent_id: get(r, "agent_id")?,
            system_prompt: get(r, "system_prompt")?,
            metadata: get(r, "metadata")?,
            created_at: Micros(get(r, "created_at")?),
        },
        chain: SessionHead {
            seq: u64::try_from(seq)
                .map_err(|_| StoreError::Corrupt("a session's head seq is negative".into()))?,
            hash,
            ended: get(r, "ended")?,
            first_at: get(r, "first_event_at")?,
            last_at: get(r, "last_event_at")?,
            counters: counters_from_row(r)?,
            tags: get(r, "tags")?,
        },
        moved: false,
    })
}

type KeptRow = ((i64, String), ([u8; 32], StoredReply));

fn kept_from_row(r: &tokio_postgres::Row) -> StoreResult<KeptRow> {
    let fp: Vec<u8> = get(r, "fingerprint")?;
    let fp: [u8; 32] = fp
        .try_into()
        .map_err(|_| StoreError::Corrupt("a kept fingerprint is not 32 bytes".into()))?;
    let status: i32 = get(r, "status")?;
    Ok((
        (get(r, "project_id")?, get(r, "key")?),
        (
            fp,
            StoredReply {
                status: u16::try_from(status)
                    .map_err(|_| StoreError::Corrupt("a kept status is out of range".into()))?,
                content_type: get(r, "content_type")?,
                body: get(r, "body")?,
            },
        ),
    ))
}

/// The session a job created, as its row stands after the job's events.
fn session_of(project: &ProjectRef, key: &HeadKey, h: &Head) -> Session {
    Session {
        id: key.1.clone(),
        project: project.name.clone(),
        agent_id: h.header.agent_id.clone(),
        system_prompt: h.header.system_prompt.clone(),
        metadata: serde_json::value::RawValue::from_string(h.header.metadata.clone())
            .unwrap_or_else(|_| agentledger_core::event::empty_object()),
        created_at: h.header.created_at,
        status: if h.chain.ended {
            SessionStatus::Ended
        } else {
            SessionStatus::Active
        },
        head_seq: h.chain.seq,
        head_hash: h.chain.hash,
        first_event_at: h.chain.first_at.map(Micros),
        last_event_at: h.chain.last_at.map(Micros),
        counters: h.chain.counters,
        tags: tag_list(h.chain.tags.as_deref()),
    }
}

/// Insert the attempt's new sessions; their `ref`s, in order.
async fn insert_sessions(
    client: &tokio_postgres::Client,
    rows: &[NewRow],
) -> Result<Vec<i64>, Failure> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let ps: Vec<i64> = rows.iter().map(|r| r.project_id).collect();
    let ids: Vec<&str> = rows.iter().map(|r| r.id.as_str()).collect();
    let agents: Vec<&str> = rows.iter().map(|r| r.header.agent_id.as_str()).collect();
    let prompts: Vec<Option<&str>> = rows
        .iter()
        .map(|r| r.header.system_prompt.as_deref())
        .collect();
    let metas: Vec<&str> = rows.iter().map(|r| r.header.metadata.as_str()).collect();
    let created: Vec<i64> = rows.iter().map(|r| r.header.created_at.0).collect();
    let out = client
        .query(
            "INSERT INTO sessions (project_id, id, agent_id, system_prompt, metadata, created_at)
             SELECT * FROM unnest($1::int8[], $2::text[], $3::text[], $4::text[], $5::text[], $6::int8[])
             ON CONFLICT (project_id, id) DO NOTHING
             RETURNING project_id, id, ref",
            &[&ps, &ids, &agents, &prompts, &metas, &created],
        )
        .await
        .map_err(failure)?;
    let mut by_key: HashMap<(i64, String), i64> = HashMap::new();
    for r in &out {
        by_key.insert(
            (
                get(r, "project_id").map_err(Failure::Data)?,
                get(r, "id").map_err(Failure::Data)?,
            ),
            get(r, "ref").map_err(Failure::Data)?,
        );
    }
    // Every new session is under this transaction's advisory lock, so none
    // can exist already; one that does was created by a writer that does not
    // take the lock: start again with fresh heads.
    rows.iter()
        .map(|r| {
            by_key
                .get(&(r.project_id, r.id.clone()))
                .copied()
                .ok_or(Failure::Retry(StoreError::Overloaded))
        })
        .collect()
}

fn slot_ref(slot: Slot, refs: &[i64]) -> Result<i64, Failure> {
    match slot {
        Slot::Stored(r) => Ok(r),
        Slot::New(i) => refs
            .get(i)
            .copied()
            .ok_or_else(|| Failure::Data(StoreError::Storage("a new session has no row".into()))),
    }
}

/// Redaction salts of a group's events, by column.
#[derive(Default)]
struct Salts {
    projects: Vec<i64>,
    events: Vec<Vec<u8>>,
    salts: Vec<Vec<u8>>,
    at: Vec<i64>,
}

async fn insert_events(
    client: &tokio_postgres::Client,
    rows: &[EventRow<'_>],
    refs: &[i64],
) -> Result<(), Failure> {
    if rows.is_empty() {
        return Ok(());
    }
    let n = rows.len();
    let mut ids = Vec::with_capacity(n);
    let mut ps = Vec::with_capacity(n);
    let mut srefs = Vec::with_capacity(n);
    let mut seqs = Vec::with_capacity(n);
    let mut agents = Vec::with_capacity(n);
    let mut kinds = Vec::with_capacity(n);
    let mut sources = Vec::with_capacity(n);
    let mut dialects = Vec::with_capacity(n);
    let mut severities = Vec::with_capacity(n);
    let mut client_ts = Vec::with_capacity(n);
    let mut server_ts = Vec::with_capacity(n);
    let mut payloads = Vec::with_capacity(n);
    let mut metas = Vec::with_capacity(n);
    let mut payload_sha = Vec::with_capacity(n);
    let mut prevs = Vec::with_capacity(n);
    let mut hashes = Vec::with_capacity(n);
    let mut models = Vec::with_capacity(n);
    let mut ins = Vec::with_capacity(n);
    let mut outs = Vec::with_capacity(n);
    let mut costs = Vec::with_capacity(n);
    let mut versions = Vec::with_capacity(n);
    let mut verdicts = Vec::with_capacity(n);
    let mut decisions = Vec::with_capacity(n);
    let mut orig_p = Vec::with_capacity(n);
    let mut orig_m = Vec::with_capacity(n);
    let mut salts = Salts::default();
    // Each session's events side by side in the table (`crate::session_order`).
    let order = crate::session_order(rows.iter().map(|r| {
        let slot = match r.slot {
            Slot::Stored(id) => (false, id),
            Slot::New(i) => (true, i as i64),
        };
        (r.project_id, slot)
    }));
    for r in order.into_iter().map(|i| &rows[i]) {
        let l = &r.linked;
        let j = r.ev.judgement.as_ref();
        ids.push(l.id.to_bytes().to_vec());
        ps.push(r.project_id);
        srefs.push(slot_ref(r.slot, refs)?);
        seqs.push(
            i64::try_from(l.seq)
                .map_err(|_| Failure::Data(StoreError::Storage("seq out of range".into())))?,
        );
        agents.push(r.ev.agent_id.as_str());
        kinds.push(i16::from(r.ev.kind.code()));
        sources.push(r.ev.source_type.as_str());
        dialects.push(i16::from(r.ev.dialect.code()));
        severities.push(i16::from(r.ev.severity.code()));
        client_ts.push(r.ev.client_ts.map(|t| t.0));
        server_ts.push(l.server_ts.0);
        payloads.push(r.ev.payload.get());
        metas.push(r.ev.metadata.get());
        payload_sha.push(l.payload_sha256.to_vec());
        prevs.push(l.prev_hash.map(|h| h.to_vec()));
        hashes.push(l.hash.to_vec());
        models.push(l.usage.model.as_deref());
        ins.push(l.usage.input_tokens);
        outs.push(l.usage.output_tokens);
        costs.push(l.usage.cost_usd);
        versions.push(i32::try_from(l.envelope_version).unwrap_or(i32::MAX));
        verdicts.push(j.map(|j| j.verdict.get()));
        decisions.push(j.map(|j| i16::from(j.decision.code())));
        orig_p.push(j.and_then(|j| j.original_payload_sha256.map(|h| h.to_vec())));
        orig_m.push(j.and_then(|j| j.original_metadata_sha256.map(|h| h.to_vec())));
        if let Some(salt) = j.and_then(|j| j.redaction_salt.as_ref()) {
            // Kept apart from the event (its own table, never exported) so
            // it can be destroyed: `agentledger salts destroy`.
            salts.projects.push(r.project_id);
            salts.events.push(l.id.to_bytes().to_vec());
            salts.salts.push(salt.to_vec());
            salts.at.push(l.server_ts.0);
        }
    }
    client
        .execute(
            INSERT_EVENTS_SQL,
            &[
                &ids,
                &ps,
                &srefs,
                &seqs,
                &agents,
                &kinds,
                &sources,
                &dialects,
                &severities,
                &client_ts,
                &server_ts,
                &payloads,
                &metas,
                &payload_sha,
                &prevs,
                &hashes,
                &models,
                &ins,
                &outs,
                &costs,
                &versions,
                &verdicts,
                &decisions,
                &orig_p,
                &orig_m,
            ],
        )
        .await
        .map_err(failure)?;
    if !salts.projects.is_empty() {
        client
            .execute(
                "INSERT INTO redaction_salts (project_id, event_id, salt, created_at)
                 SELECT * FROM unnest($1::int8[], $2::bytea[], $3::bytea[], $4::int8[])",
                &[&salts.projects, &salts.events, &salts.salts, &salts.at],
            )
            .await
            .map_err(failure)?;
    }
    Ok(())
}

/// The group's hourly rollups, summed in memory, then one UPSERT (see
/// `super::rollups`): in the events' transaction, so both commit or neither.
async fn write_rollups(
    client: &tokio_postgres::Client,
    rows: &[EventRow<'_>],
    token: i64,
) -> Result<(), Failure> {
    let mut r = crate::rollup::Rollups::default();
    for row in rows {
        r.add_new(
            row.project_id,
            row.ev,
            &row.linked.usage,
            row.linked.server_ts,
        );
    }
    super::rollups::write(client, &r, super::rollups::shard_of(token))
        .await
        .map_err(failure)
}

/// The statement that stores a group's events (shared with the benchmark's ceiling).
pub const INSERT_EVENTS_SQL: &str = "INSERT INTO events (id, project_id, session_ref, seq, \
    agent_id, kind, source_type, dialect, severity, client_ts, server_ts, payload, metadata, \
    payload_sha256, prev_hash, hash, model, input_tokens, output_tokens, cost_usd, \
    envelope_version, verdict, decision, original_payload_sha256, original_metadata_sha256) \
    SELECT * FROM unnest($1::bytea[], $2::int8[], $3::int8[], $4::int8[], $5::text[], \
    $6::int2[], $7::text[], $8::int2[], $9::int2[], $10::int8[], $11::int8[], $12::text[], \
    $13::text[], $14::bytea[], $15::bytea[], $16::bytea[], $17::text[], $18::int8[], \
    $19::int8[], $20::float8[], $21::int4[], $22::text[], $23::int2[], $24::bytea[], \
    $25::bytea[])";

async fn update_heads(
    client: &tokio_postgres::Client,
    heads: &HashMap<HeadKey, Head>,
    refs: &[i64],
) -> Result<(), Failure> {
    let moved: Vec<(&HeadKey, &Head)> = heads.iter().filter(|(_, h)| h.moved).collect();
    if moved.is_empty() {
        return Ok(());
    }
    let mut ps = Vec::new();
    let mut rs = Vec::new();
    let mut seqs = Vec::new();
    let mut hashes = Vec::new();
    let mut ended = Vec::new();
    let mut first = Vec::new();
    let mut last = Vec::new();
    let mut counts: [Vec<i64>; 6] = Default::default();
    let mut costs = Vec::new();
    let mut tags = Vec::new();
    for ((p, _), h) in moved {
        let c = &h.chain;
        ps.push(*p);
        rs.push(slot_ref(h.slot, refs)?);
        seqs.push(i64::try_from(c.seq).unwrap_or(i64::MAX));
        hashes.push(c.hash.map(|h| h.to_vec()));
        ended.push(c.ended);
        first.push(c.first_at);
        last.push(c.last_at);
        let k = &c.counters;
        for (v, n) in counts.iter_mut().zip([
            k.events as i64,
            k.tool_calls as i64,
            k.errors as i64,
            k.llm_calls as i64,
            k.input_tokens,
            k.output_tokens,
        ]) {
            v.push(n);
        }
        costs.push(k.cost_usd);
        tags.push(c.tags.as_deref());
    }
    client
        .execute(
            "UPDATE sessions s SET head_seq = u.seq, head_hash = u.hash, ended = u.ended,
                first_event_at = u.first_at, last_event_at = u.last_at, event_count = u.events,
                tool_call_count = u.tools, error_count = u.errors, llm_call_count = u.llms,
                input_tokens = u.inp, output_tokens = u.outp, cost_usd = u.cost, tags = u.tags
             FROM unnest($1::int8[], $2::int8[], $3::int8[], $4::bytea[], $5::bool[], $6::int8[],
                         $7::int8[], $8::int8[], $9::int8[], $10::int8[], $11::int8[], $12::int8[],
                         $13::int8[], $14::float8[], $15::text[])
                AS u(project_id, ref, seq, hash, ended, first_at, last_at, events, tools, errors,
                     llms, inp, outp, cost, tags)
             WHERE s.project_id = u.project_id AND s.ref = u.ref",
            &[
                &ps, &rs, &seqs, &hashes, &ended, &first, &last, &counts[0], &counts[1],
                &counts[2], &counts[3], &counts[4], &counts[5], &costs, &tags,
            ],
        )
        .await
        .map_err(failure)?;
    Ok(())
}

async fn insert_replies(
    client: &tokio_postgres::Client,
    kept: &[(i64, String, [u8; 32], StoredReply, i64)],
) -> Result<(), Failure> {
    if kept.is_empty() {
        return Ok(());
    }
    let ps: Vec<i64> = kept.iter().map(|k| k.0).collect();
    let keys: Vec<&str> = kept.iter().map(|k| k.1.as_str()).collect();
    let fps: Vec<Vec<u8>> = kept.iter().map(|k| k.2.to_vec()).collect();
    let statuses: Vec<i32> = kept.iter().map(|k| i32::from(k.3.status)).collect();
    let types: Vec<&str> = kept.iter().map(|k| k.3.content_type.as_str()).collect();
    let bodies: Vec<&[u8]> = kept.iter().map(|k| k.3.body.as_slice()).collect();
    let at: Vec<i64> = kept.iter().map(|k| k.4).collect();
    // An expired row under the same key is replaced.
    client
        .execute(
            "INSERT INTO idempotency_keys (project_id, key, fingerprint, status, content_type, body, created_at)
             SELECT * FROM unnest($1::int8[], $2::text[], $3::bytea[], $4::int4[], $5::text[], $6::bytea[], $7::int8[])
             ON CONFLICT (project_id, key) DO UPDATE SET fingerprint = excluded.fingerprint,
                status = excluded.status, content_type = excluded.content_type,
                body = excluded.body, created_at = excluded.created_at",
            &[&ps, &keys, &fps, &statuses, &types, &bodies, &at],
        )
        .await
        .map_err(failure)?;
    Ok(())
}
