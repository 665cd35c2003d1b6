//! The single writer. One OS thread owns the only write connection; requests
//! arrive on a bounded queue, and every pass drains all that is waiting into a
//! single transaction (group commit). Each request is answered only after
//! COMMIT returned, with `synchronous=FULL`, so an acknowledgement is durable.
//!
//! Because one thread assigns every seq, appends to a session are serialised
//! and a chain cannot fork. Chain heads live in an LRU cache that is updated
//! only after a successful COMMIT, so a failed transaction never moves a head.
//!
//! The policy checkpoint's session states live beside the heads, kept the
//! same way: a request's [`Judge`](crate::Judge) runs here, in the
//! transaction, against the state of exactly the committed events before it
//! (cloned into the transaction, kept only after COMMIT), so requests to one
//! session are judged in commit order and a failed one never counts. A state
//! the writer does not hold is folded from the session's events here if the
//! session is short, or seeded by the caller (see `AppendOutcome::NeedsState`).

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use lru::LruCache;
use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::{OwnedSemaphorePermit, mpsc, oneshot};

use agentledger_core::chain::{LinkFacts, SessionHead, SessionHeader, link};
use agentledger_core::event::SessionCounters;
use agentledger_core::{EventId, Micros, NewEvent};

mod import;

use super::faults::Faults;
use super::rollups::Pending as PendingRollups;
use super::rows::{EVENT_COLS, EVENT_FROM, SESSION_COLS, event_from_row, session_from_row};
use super::search::{Erased, Progress};
use crate::{
    ApiKeyInfo, AppendOutcome, AppendRequest, AppendedEvent, Committed, IdempotencyKey, Judge,
    NewSession, ProjectRef, SessionFold, SessionStates, StoreError, StoreResult, StoredReply,
    WriterObserver,
};

/// Upper bound of events in one group-commit transaction.
const MAX_EVENTS_PER_TXN: usize = 20_000;
/// Chain heads kept in memory.
const HEAD_CACHE: usize = 100_000;

/// The statement that stores one event (shared with the benchmark's ceiling).
pub const INSERT_EVENT_SQL: &str = "INSERT INTO events (id, project_id, session_ref, seq, \
    agent_id, kind, source_type, dialect, severity, client_ts, server_ts, payload, metadata, \
    payload_sha256, prev_hash, hash, model, input_tokens, output_tokens, cost_usd, \
    envelope_version, verdict, decision, original_payload_sha256, original_metadata_sha256) \
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, \
    ?19, ?20, ?21, ?22, ?23, ?24, ?25)";

pub(crate) type Reply<T> = oneshot::Sender<StoreResult<T>>;

/// What a `Cmd::Exec` answers (its caller knows the type).
pub(crate) type ExecAnswer = Box<dyn std::any::Any + Send>;
/// A `Cmd::Exec`'s work, run on the writer's connection.
pub(crate) type ExecFn = Box<dyn FnOnce(&Connection) -> StoreResult<ExecAnswer> + Send>;

pub(crate) enum Cmd {
    Append {
        project: ProjectRef,
        req: AppendRequest,
        reply: Reply<AppendOutcome>,
        /// Released just before the reply is sent.
        _permit: OwnedSemaphorePermit,
    },
    CreateKey {
        id: String,
        project: String,
        name: String,
        key_hash: [u8; 32],
        prefix: String,
        admin: bool,
        reply: Reply<ApiKeyInfo>,
    },
    RevokeKey {
        id: String,
        reply: Reply<bool>,
    },
    SavePolicies {
        project: i64,
        sources: Option<String>,
        reply: Reply<()>,
    },
    DestroySalts {
        before: Option<i64>,
        reply: Reply<u64>,
    },
    ImportMeta {
        meta: Box<crate::LedgerMeta>,
        reply: Reply<()>,
    },
    ImportSession {
        project: ProjectRef,
        session: Box<agentledger_core::Session>,
        events: Vec<crate::ImportedEvent>,
        reply: Reply<u64>,
    },
    /// Alerting's writes (rules, destinations, outbox updates: see
    /// `super::alerts`), each run in a transaction of its own.
    Exec {
        run: ExecFn,
        reply: Reply<ExecAnswer>,
    },
    /// The write of one transparency-log integration pass, prepared on a read connection
    /// and applied only if the cursor has not moved (see `super::tlog`).
    LogIntegrate {
        pass: Box<super::tlog::PreparedPass>,
        reply: Reply<super::tlog::PassOutcome>,
    },
    LogCheckpoint {
        project: i64,
        checkpoint: Box<crate::log::LogCheckpoint>,
        reply: Reply<crate::log::LogCheckpoint>,
    },
    Shutdown,
}

impl Cmd {
    fn event_count(&self) -> usize {
        match self {
            Cmd::Append { req, .. } => req.events.len().max(1),
            Cmd::ImportSession { events, .. } => events.len().max(1),
            _ => 1,
        }
    }
}

type HeadKey = (i64, String);

#[derive(Debug, Clone)]
struct Head {
    session_rowid: i64,
    /// Where the chain ends and the row's running facts (core's `link`
    /// moves it), written back with the events in the append's transaction.
    chain: SessionHead,
}

type State = crate::kept::KeptState;

pub(crate) struct Writer {
    conn: Connection,
    heads: LruCache<HeadKey, Head>,
    /// Committed policy states (see the module doc).
    states: LruCache<HeadKey, State>,
    observer: Option<Arc<dyn WriterObserver>>,
    depth: Arc<AtomicUsize>,
    /// Tells the full-text indexer what was committed.
    search: Arc<Progress>,
    /// Highest event rowid inserted by the open transaction.
    txn_rowid: i64,
    faults: Option<Arc<Faults>>,
    /// How long a reply stays kept under its idempotency key.
    idempotency_ttl: std::time::Duration,
    last_purge: Instant,
    /// Hourly rollup deltas of the open transaction (see `crate::rollup`).
    rollups: PendingRollups,
    /// Payloads the open transaction erased, to take out of the full-text
    /// index once it committed.
    txn_erased: Vec<Erased>,
    /// `secure_delete` was turned on in the open transaction.
    secure_delete: bool,
}

/// The sessions `events` name, each once, in order of first appearance.
fn session_ids(events: &[NewEvent]) -> Vec<&str> {
    let mut seen = std::collections::HashSet::new();
    events
        .iter()
        .map(|e| e.session_id.as_str())
        .filter(|s| seen.insert(*s))
        .collect()
}

fn storage(e: rusqlite::Error) -> StoreError {
    crate::sqlite::classify(&e)
}

impl Writer {
    pub(crate) fn new(
        conn: Connection,
        observer: Option<Arc<dyn WriterObserver>>,
        depth: Arc<AtomicUsize>,
        search: Arc<Progress>,
        faults: Option<Arc<Faults>>,
        idempotency_ttl: std::time::Duration,
    ) -> Self {
        let cap = NonZeroUsize::new(HEAD_CACHE).unwrap_or(NonZeroUsize::MIN);
        let state_cap = NonZeroUsize::new(crate::kept::STATE_CACHE).unwrap_or(NonZeroUsize::MIN);
        Writer {
            conn,
            heads: LruCache::new(cap),
            states: LruCache::new(state_cap),
            observer,
            depth,
            search,
            txn_rowid: 0,
            faults,
            idempotency_ttl,
            last_purge: Instant::now() - std::time::Duration::from_secs(3600),
            rollups: PendingRollups::default(),
            txn_erased: Vec::new(),
            secure_delete: false,
        }
    }

    /// Run until the queue closes or a Shutdown command arrives; everything
    /// queued before it is committed and answered first.
    pub(crate) fn run(mut self, mut rx: mpsc::Receiver<Cmd>) {
        while let Some(first) = rx.blocking_recv() {
            let mut batch = vec![first];
            let mut n = batch[0].event_count();
            while n < MAX_EVENTS_PER_TXN {
                match rx.try_recv() {
                    Ok(cmd) => {
                        n += cmd.event_count();
                        batch.push(cmd);
                    }
                    Err(_) => break,
                }
            }
            self.depth.fetch_sub(batch.len(), Ordering::Relaxed);
            if !self.process(batch) {
                break;
            }
        }
    }

    /// Returns false when a Shutdown command was seen.
    fn process(&mut self, batch: Vec<Cmd>) -> bool {
        let mut appends = Vec::new();
        let mut keep_running = true;
        for cmd in batch {
            match cmd {
                Cmd::Append { .. } => appends.push(cmd),
                Cmd::Shutdown => {
                    keep_running = false;
                }
                other => {
                    // Keep order: what was queued before this command commits first.
                    self.commit_appends(std::mem::take(&mut appends));
                    self.run_admin(other);
                }
            }
        }
        self.commit_appends(appends);
        keep_running
    }

    fn commit_appends(&mut self, cmds: Vec<Cmd>) {
        if cmds.is_empty() {
            return;
        }
        let started = Instant::now();
        if let Err(e) = self.conn.execute_batch("BEGIN IMMEDIATE") {
            for cmd in cmds {
                if let Cmd::Append { reply, .. } = cmd {
                    let _ = reply.send(Err(crate::sqlite::classify(&e)));
                }
            }
            return;
        }
        let mut txn_heads: HashMap<HeadKey, Head> = HashMap::new();
        let mut txn_states: HashMap<HeadKey, State> = HashMap::new();
        let mut results = Vec::with_capacity(cmds.len());
        self.purge_idempotency_keys();
        let mut events_in_txn = 0;
        for cmd in cmds {
            let Cmd::Append {
                project,
                req,
                reply,
                _permit,
            } = cmd
            else {
                continue;
            };
            let outcome = self.append_one(&mut txn_heads, &mut txn_states, &project, req);
            if let Ok(AppendOutcome::Committed { appended, .. }) = &outcome {
                events_in_txn += appended.len();
            }
            results.push((reply, outcome, _permit));
        }
        let requests = results.len();
        // An erasure commits with the indexer paused, so its payload's
        // terms are either in the index already or never will be.
        let search = self.search.clone();
        let paused = (!self.txn_erased.is_empty()).then(|| search.pause());
        let committed = if self.faults.as_ref().is_some_and(|f| f.commit_fails()) {
            Err(StoreError::Storage(
                "disk I/O error (injected: the COMMIT's fsync failed)".into(),
            ))
        } else {
            // The rollups are written in the events' transaction: both or neither.
            self.rollups
                .write(&self.conn)
                .and_then(|()| self.conn.execute_batch("COMMIT"))
                .map_err(storage)
        };
        match committed {
            Ok(()) => {
                let erased = std::mem::take(&mut self.txn_erased);
                if let Some((_, indexed)) = &paused
                    && let Err(e) = search.forget(*indexed, &erased)
                {
                    // Searches skip erased rows regardless; the terms stay
                    // in the index file until it is rebuilt.
                    tracing::error!(error = %e, "an erased payload could not be taken out of the full-text index");
                }
                drop(paused);
                if !erased.is_empty() {
                    self.after_erasure();
                } else if std::mem::take(&mut self.secure_delete) {
                    let _ = self.conn.execute_batch("PRAGMA secure_delete = OFF;");
                }
                self.search.committed(std::mem::take(&mut self.txn_rowid));
                for (key, head) in txn_heads {
                    self.heads.put(key, head);
                }
                for (key, state) in txn_states {
                    self.states.put(key, state);
                }
                for (reply, outcome, permit) in results {
                    // Released before the answer, so a client that reads the
                    // writer's gauges after its ack sees its events settled.
                    drop(permit);
                    let _ = reply.send(outcome);
                }
                if let Some(obs) = &self.observer {
                    obs.committed(events_in_txn, requests, started.elapsed().as_secs_f64());
                }
            }
            Err(e) => {
                let _ = self.conn.execute_batch("ROLLBACK");
                drop(paused);
                self.txn_erased.clear();
                if std::mem::take(&mut self.secure_delete) {
                    let _ = self.conn.execute_batch("PRAGMA secure_delete = OFF;");
                }
                self.txn_rowid = 0;
                self.rollups.discard();
                tracing::error!(error = %e, "commit failed; no event of this group was stored");
                for (reply, _, permit) in results {
                    drop(permit);
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }

    /// Carry out one request inside a savepoint, so a failure leaves the
    /// rest of the group intact and stores nothing of this request.
    fn append_one(
        &mut self,
        txn_heads: &mut HashMap<HeadKey, Head>,
        txn_states: &mut HashMap<HeadKey, State>,
        project: &ProjectRef,
        req: AppendRequest,
    ) -> StoreResult<AppendOutcome> {
        self.conn.execute_batch("SAVEPOINT req").map_err(storage)?;
        let mut local: HashMap<HeadKey, Head> = HashMap::new();
        let mut local_states: HashMap<HeadKey, State> = HashMap::new();
        let rowid_before = self.txn_rowid;
        let erased_before = self.txn_erased.len();
        let result = self.run_request(
            txn_heads,
            &mut local,
            (txn_states, &mut local_states),
            project,
            req,
        );
        if result.is_err() {
            self.txn_rowid = rowid_before;
            self.txn_erased.truncate(erased_before);
        }
        self.rollups.request_done(result.is_ok());
        let end = match &result {
            Ok(_) => "RELEASE req",
            Err(_) => "ROLLBACK TO req; RELEASE req",
        };
        self.conn.execute_batch(end).map_err(storage)?;
        if result.is_ok() {
            txn_heads.extend(local);
            txn_states.extend(local_states);
        }
        result
    }

    fn run_request(
        &mut self,
        txn_heads: &HashMap<HeadKey, Head>,
        local: &mut HashMap<HeadKey, Head>,
        (txn_states, local_states): (&HashMap<HeadKey, State>, &mut HashMap<HeadKey, State>),
        project: &ProjectRef,
        req: AppendRequest,
    ) -> StoreResult<AppendOutcome> {
        let AppendRequest {
            session,
            events,
            idempotency,
            judge,
            alerts,
            erase,
        } = req;
        if let Some((key, _)) = &idempotency
            && let Some((fingerprint, reply)) = self.kept_reply(project, &key.key)?
        {
            return if fingerprint == key.fingerprint {
                Ok(AppendOutcome::Replayed(reply))
            } else {
                Err(StoreError::IdempotencyConflict(key.key.clone()))
            };
        }
        // Judge against the sessions' states at their heads (locked: this
        // thread is the only writer).
        let (events, verdicts, judged) = match judge {
            None => (events, Vec::new(), None),
            Some(mut judge) => {
                let mut states = SessionStates::new();
                let mut missing = Vec::new();
                for id in session_ids(&events) {
                    let key: HeadKey = (project.id.0, id.to_owned());
                    let at = self
                        .head(txn_heads, local, &key)?
                        .map_or(0, |h| h.chain.seq);
                    let kept = txn_states
                        .get(&key)
                        .cloned()
                        .or_else(|| self.states.get(&key).cloned());
                    match self.state_at(project, &key, at, kept, judge.as_mut())? {
                        Some(fold) => {
                            states.insert(key.1, fold);
                        }
                        None => missing.push(key.1),
                    }
                }
                if !missing.is_empty() {
                    return Ok(AppendOutcome::NeedsState {
                        request: Box::new(AppendRequest {
                            session,
                            events,
                            idempotency,
                            judge: Some(judge),
                            alerts,
                            erase,
                        }),
                        sessions: missing,
                    });
                }
                // The judge is the server's code; a panic in it must not
                // take the only writer thread down with it.
                let (judged, verdicts) =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        judge.judge(events, &mut states)
                    }))
                    .map_err(|_| StoreError::Judge("the policy checkpoint panicked".into()))??;
                if judged.len() != verdicts.len() {
                    return Err(StoreError::Judge("a verdict per event".into()));
                }
                (judged, verdicts, Some(states))
            }
        };
        let created = match &session {
            Some(s) => {
                if events.iter().any(|e| e.session_id != s.id) {
                    return Err(StoreError::Storage(
                        "opening events must name the new session".into(),
                    ));
                }
                let head = self.create_session_row(project, s)?;
                let rowid = head.session_rowid;
                local.insert((project.id.0, s.id.as_str().to_owned()), head);
                Some(rowid)
            }
            None => None,
        };
        let appended = self.insert_events(txn_heads, local, project, &events)?;
        if let Some(target) = &erase {
            self.erase_row(project, &events, &appended, target)?;
        }
        if let Some(rules) = alerts.as_deref().filter(|r| !r.rules.is_empty()) {
            // The outbox, in the events' transaction (see `crate::alerts`).
            for (ev, a) in events.iter().zip(&appended) {
                for alert in crate::alerts::outbox_for(rules, ev, &a.id.to_string()) {
                    super::alerts::insert_alert(&self.conn, project.id.0, &alert, a.server_ts)
                        .map_err(storage)?;
                }
            }
        }
        for (id, fold) in judged.into_iter().flatten() {
            let key: HeadKey = (project.id.0, id);
            let seq = local.get(&key).map_or(0, |h| h.chain.seq);
            local_states.insert(key, State { seq, fold });
        }
        let session = match created {
            Some(rowid) => Some(
                self.conn
                    .query_row(
                        &format!("SELECT {SESSION_COLS} FROM sessions s WHERE s.rowid = ?1"),
                        params![rowid],
                        |r| session_from_row(r, &project.name),
                    )
                    .map(Box::new)
                    .map_err(storage)?,
            ),
            None => None,
        };
        let reply = match idempotency {
            Some((key, render)) => {
                let committed = Committed {
                    events: &events,
                    appended: &appended,
                    session: session.as_deref(),
                    verdicts: &verdicts,
                };
                // The renderer is the server's code; a panic in it must not
                // take the only writer thread down with it.
                let reply =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| render(&committed)))
                        .map_err(|_| StoreError::Storage("rendering the reply failed".into()))?;
                self.keep_reply(project, &key, &reply)?;
                Some(reply)
            }
            None => None,
        };
        Ok(AppendOutcome::Committed {
            session,
            appended,
            events,
            reply,
            verdicts,
        })
    }

    /// A session's policy state at seq `at` (its head), folded from where
    /// `kept::fold_from` says (the events appended since read here).
    /// `None`: ask for a seed.
    fn state_at(
        &mut self,
        project: &ProjectRef,
        key: &HeadKey,
        at: u64,
        kept: Option<State>,
        judge: &mut dyn Judge,
    ) -> StoreResult<Option<Box<dyn SessionFold>>> {
        let Some((from, mut fold)) = crate::kept::fold_from(kept, at, &key.1, judge) else {
            return Ok(None);
        };
        if from < at {
            let mut st = self
                .conn
                .prepare_cached(&format!(
                    "SELECT {EVENT_COLS} FROM {EVENT_FROM}
                     WHERE s.project_id = ?1 AND s.id = ?2 AND e.seq > ?3 AND e.seq <= ?4
                     ORDER BY e.seq"
                ))
                .map_err(storage)?;
            let mut rows = st
                .query(params![key.0, key.1, from as i64, at as i64])
                .map_err(storage)?;
            while let Some(r) = rows.next().map_err(storage)? {
                let (ev, _, _) = event_from_row(r, &project.name).map_err(storage)?;
                fold.apply_stored(&ev);
            }
        }
        Ok(Some(fold))
    }

    /// The live reply kept under `key` (this transaction's included).
    fn kept_reply(
        &mut self,
        project: &ProjectRef,
        key: &str,
    ) -> StoreResult<Option<([u8; 32], StoredReply)>> {
        let oldest = Micros::now()
            .0
            .saturating_sub(self.idempotency_ttl_micros());
        kept_reply(&self.conn, project.id.0, key, oldest).map_err(storage)
    }

    fn keep_reply(
        &mut self,
        project: &ProjectRef,
        key: &IdempotencyKey,
        reply: &StoredReply,
    ) -> StoreResult<()> {
        // An expired row under the same key is replaced.
        self.conn
            .prepare_cached(
                "INSERT OR REPLACE INTO idempotency_keys
                    (project_id, key, fingerprint, status, content_type, body, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )
            .and_then(|mut st| {
                st.execute(params![
                    project.id.0,
                    &key.key,
                    &key.fingerprint[..],
                    reply.status,
                    &reply.content_type,
                    &reply.body,
                    Micros::now().0,
                ])
            })
            .map_err(storage)?;
        Ok(())
    }

    fn idempotency_ttl_micros(&self) -> i64 {
        i64::try_from(self.idempotency_ttl.as_micros()).unwrap_or(i64::MAX)
    }

    /// Delete expired idempotency keys, at most once a minute, in the
    /// group's open transaction.
    fn purge_idempotency_keys(&mut self) {
        if self.last_purge.elapsed() < std::time::Duration::from_secs(60) {
            return;
        }
        self.last_purge = Instant::now();
        let oldest = Micros::now()
            .0
            .saturating_sub(self.idempotency_ttl_micros());
        if let Err(e) = self.conn.execute(
            "DELETE FROM idempotency_keys WHERE created_at < ?1",
            params![oldest],
        ) {
            tracing::warn!(error = %e, "could not delete expired idempotency keys");
        }
    }

    fn head(
        &mut self,
        txn_heads: &HashMap<HeadKey, Head>,
        local: &HashMap<HeadKey, Head>,
        key: &HeadKey,
    ) -> StoreResult<Option<Head>> {
        if let Some(h) = local.get(key).or_else(|| txn_heads.get(key)) {
            return Ok(Some(h.clone()));
        }
        if let Some(h) = self.heads.get(key) {
            return Ok(Some(h.clone()));
        }
        let row = self
            .conn
            .prepare_cached(
                "SELECT rowid, head_seq, head_hash, status, first_event_at, last_event_at,
                    event_count, tool_call_count, error_count, llm_call_count,
                    input_tokens, output_tokens, cost_usd, tags
                 FROM sessions WHERE project_id = ?1 AND id = ?2",
            )
            .and_then(|mut st| {
                st.query_row(params![key.0, key.1], |r| {
                    Ok(Head {
                        session_rowid: r.get(0)?,
                        chain: SessionHead {
                            seq: r.get::<_, i64>(1)? as u64,
                            hash: r
                                .get::<_, Option<Vec<u8>>>(2)?
                                .and_then(|v| v.try_into().ok()),
                            ended: r.get::<_, i64>(3)? == 1,
                            first_at: r.get(4)?,
                            last_at: r.get(5)?,
                            counters: SessionCounters {
                                events: r.get::<_, i64>(6)? as u64,
                                tool_calls: r.get::<_, i64>(7)? as u64,
                                errors: r.get::<_, i64>(8)? as u64,
                                llm_calls: r.get::<_, i64>(9)? as u64,
                                input_tokens: r.get(10)?,
                                output_tokens: r.get(11)?,
                                cost_usd: r.get(12)?,
                            },
                            tags: r.get(13)?,
                        },
                    })
                })
                .optional()
            })
            .map_err(storage)?;
        Ok(row)
    }

    fn insert_events(
        &mut self,
        txn_heads: &HashMap<HeadKey, Head>,
        local: &mut HashMap<HeadKey, Head>,
        project: &ProjectRef,
        events: &[NewEvent],
    ) -> StoreResult<Vec<AppendedEvent>> {
        let now = Micros::now();
        let mut out: Vec<Option<AppendedEvent>> = vec![None; events.len()];
        // Rowids are handed out in this order: each session's events side by side.
        for i in crate::session_order(events.iter().map(|e| e.session_id.as_str())) {
            let ev = &events[i];
            if self.faults.as_ref().is_some_and(|f| f.write_fails()) {
                return Err(StoreError::Storage(
                    "disk I/O error (injected: a write failed)".into(),
                ));
            }
            let key: HeadKey = (project.id.0, ev.session_id.as_str().to_owned());
            let mut head = match self.head(txn_heads, local, &key)? {
                Some(h) => h,
                None => self.insert_session_row(
                    project,
                    &ev.session_id.to_string(),
                    ev.agent_id.as_str(),
                    None,
                    "{}",
                    now,
                )?,
            };
            let id = EventId::generate(now);
            // The first event of a session covers the session's header.
            let header = if head.chain.seq == 0 {
                Some(self.session_header(head.session_rowid)?)
            } else {
                None
            };
            let prev_hash = head.chain.hash;
            let linked = link(
                &mut head.chain,
                ev,
                LinkFacts {
                    project: &project.name,
                    id,
                    server_ts: now,
                    header: header.as_ref().map(OwnedHeader::borrow),
                },
            )
            .map_err(|e| StoreError::Storage(e.to_string()))?;
            let (seq, hash, usage) = (linked.seq, linked.hash, linked.usage);
            let payload = ev.payload.get();
            let metadata = ev.metadata.get();
            let j = ev.judgement.as_ref();
            self.conn
                .prepare_cached(INSERT_EVENT_SQL)
                .and_then(|mut st| {
                    st.execute(params![
                        &id.to_bytes()[..],
                        project.id.0,
                        head.session_rowid,
                        seq as i64,
                        ev.agent_id.as_str(),
                        ev.kind.code(),
                        &ev.source_type,
                        ev.dialect.code(),
                        ev.severity.code(),
                        ev.client_ts.map(|t| t.0),
                        now.0,
                        payload,
                        metadata,
                        &linked.payload_sha256[..],
                        prev_hash.as_ref().map(|h| &h[..]),
                        &hash[..],
                        usage.model,
                        usage.input_tokens,
                        usage.output_tokens,
                        usage.cost_usd,
                        linked.envelope_version,
                        j.map(|j| j.verdict.get()),
                        j.map(|j| j.decision.code()),
                        j.and_then(|j| j.original_payload_sha256.as_ref().map(|h| &h[..])),
                        j.and_then(|j| j.original_metadata_sha256.as_ref().map(|h| &h[..])),
                    ])
                })
                .map_err(storage)?;
            self.txn_rowid = self.txn_rowid.max(self.conn.last_insert_rowid());
            self.rollups.count_new(project.id.0, ev, &usage, now);
            if let Some(salt) = j.and_then(|j| j.redaction_salt.as_ref()) {
                // Kept apart from the event (its own table, never exported)
                // so it can be destroyed: `agentledger salts destroy`.
                self.conn
                    .prepare_cached(
                        "INSERT INTO redaction_salts (event_id, salt, created_at) VALUES (?1, ?2, ?3)",
                    )
                    .and_then(|mut st| st.execute(params![&id.to_bytes()[..], &salt[..], now.0]))
                    .map_err(storage)?;
            }

            local.insert(key, head);
            out[i] = Some(AppendedEvent {
                id,
                session_id: ev.session_id.as_str().to_owned(),
                seq,
                hash,
                server_ts: now,
            });
        }
        // Answered in the order given.
        let out: Vec<AppendedEvent> = out.into_iter().flatten().collect();
        for head in local.values() {
            self.conn
                .prepare_cached(
                    "UPDATE sessions SET head_seq = ?1, head_hash = ?2, status = ?3,
                        first_event_at = ?4, last_event_at = ?5, event_count = ?7,
                        tool_call_count = ?8, error_count = ?9, llm_call_count = ?10,
                        input_tokens = ?11, output_tokens = ?12, cost_usd = ?13, tags = ?14
                     WHERE rowid = ?6",
                )
                .and_then(|mut st| {
                    st.execute(params![
                        head.chain.seq as i64,
                        head.chain.hash.as_ref().map(|h| &h[..]),
                        head.chain.ended as i64,
                        head.chain.first_at,
                        head.chain.last_at,
                        head.session_rowid,
                        head.chain.counters.events as i64,
                        head.chain.counters.tool_calls as i64,
                        head.chain.counters.errors as i64,
                        head.chain.counters.llm_calls as i64,
                        head.chain.counters.input_tokens,
                        head.chain.counters.output_tokens,
                        head.chain.counters.cost_usd,
                        head.chain.tags,
                    ])
                })
                .map_err(storage)?;
        }
        Ok(out)
    }

    /// After an erasure committed: secure_delete off again, and the WAL
    /// checkpointed and truncated once, so the pages holding the erased
    /// payload's old bytes are overwritten in the database and gone from the
    /// WAL (a reader mid-statement may hold the truncation off: the next
    /// checkpoints then overwrite them; backups are the operator's).
    fn after_erasure(&mut self) {
        self.secure_delete = false;
        let _ = self.conn.execute_batch("PRAGMA secure_delete = OFF;");
        match self
            .conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
                r.get::<_, i64>(0)
            }) {
            Ok(0) => {}
            Ok(_) => {
                tracing::info!("erasure: the WAL is in use; it is truncated at a later checkpoint")
            }
            Err(e) => tracing::warn!(error = %e, "erasure: checkpointing the WAL failed"),
        }
    }

    /// Erase a payload in the transaction that appended its record (core's
    /// `erasure`): the row keeps its digest; its payload column is emptied.
    fn erase_row(
        &mut self,
        project: &ProjectRef,
        events: &[NewEvent],
        appended: &[AppendedEvent],
        t: &crate::EraseTarget,
    ) -> StoreResult<()> {
        let (Some(record), Some(at), 1) = (events.first(), appended.first(), events.len()) else {
            return Err(StoreError::Storage(
                "an erasure appends exactly its record".into(),
            ));
        };
        if record.kind != agentledger_core::Kind::EventErased {
            return Err(StoreError::Storage(
                "an erasure's event is an event_erased record".into(),
            ));
        }
        let row = self
            .conn
            .query_row(
                "SELECT e.rowid, e.payload, e.erased_at, s.id, e.seq, e.payload_sha256
                 FROM events e JOIN sessions s ON s.rowid = e.session_ref
                 WHERE e.id = ?1 AND e.project_id = ?2",
                params![&t.event_id.to_bytes()[..], project.id.0],
                |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, Option<i64>>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, i64>(4)?,
                        r.get::<_, Vec<u8>>(5)?,
                    ))
                },
            )
            .optional()
            .map_err(storage)?;
        let Some((rowid, payload, erased_at, session, seq, sha)) = row else {
            return Err(StoreError::Storage(format!(
                "event {} to erase is not in project {}",
                t.event_id, project.name
            )));
        };
        if erased_at.is_some() {
            return Err(StoreError::AlreadyErased(t.event_id.to_string()));
        }
        if session != record.session_id.as_str()
            || seq != t.seq as i64
            || sha[..] != t.payload_sha256[..]
        {
            return Err(StoreError::Storage(format!(
                "event {} is not the event the erasure record names",
                t.event_id
            )));
        }
        // Zero the freed bytes of the old payload (set back after COMMIT).
        self.conn
            .execute_batch("PRAGMA secure_delete = ON;")
            .map_err(storage)?;
        self.secure_delete = true;
        self.conn
            .prepare_cached(
                "UPDATE events SET payload = '', erased_at = ?1, erased_by = ?2, erasure_seq = ?3
                 WHERE rowid = ?4",
            )
            .and_then(|mut st| st.execute(params![at.server_ts.0, &t.by, at.seq as i64, rowid]))
            .map_err(storage)?;
        scrub_kept_replies(&self.conn, project.id.0, &t.event_id.to_string(), &payload)
            .map_err(storage)?;
        self.txn_erased.push(Erased {
            rowid,
            payload,
            project: project.id.0,
        });
        Ok(())
    }

    /// A session's header as its row holds it (this transaction's own rows
    /// included).
    fn session_header(&mut self, session_rowid: i64) -> StoreResult<OwnedHeader> {
        self.conn
            .prepare_cached(
                "SELECT id, agent_id, system_prompt, metadata, created_at FROM sessions WHERE rowid = ?1",
            )
            .and_then(|mut st| {
                st.query_row(params![session_rowid], |r| {
                    Ok(OwnedHeader {
                        session_id: r.get(0)?,
                        agent_id: r.get(1)?,
                        system_prompt: r.get(2)?,
                        metadata: r.get(3)?,
                        created_at: Micros(r.get(4)?),
                    })
                })
            })
            .map_err(storage)
    }

    fn insert_session_row(
        &mut self,
        project: &ProjectRef,
        id: &str,
        agent_id: &str,
        system_prompt: Option<&str>,
        metadata: &str,
        now: Micros,
    ) -> StoreResult<Head> {
        self.conn
            .prepare_cached(
                "INSERT INTO sessions (id, project_id, agent_id, system_prompt, metadata,
                    created_at, status, head_seq, head_hash)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, 0, 0, NULL)",
            )
            .and_then(|mut st| {
                st.execute(params![
                    id,
                    project.id.0,
                    agent_id,
                    system_prompt,
                    metadata,
                    now.0
                ])
            })
            .map_err(storage)?;
        Ok(Head {
            session_rowid: self.conn.last_insert_rowid(),
            chain: SessionHead::default(),
        })
    }

    /// Administrative writes: each in its own transaction, answered after COMMIT.
    fn run_admin(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::CreateKey {
                id,
                project,
                name,
                key_hash,
                prefix,
                admin,
                reply,
            } => {
                let r =
                    self.in_txn(|w| w.create_key(&id, &project, &name, &key_hash, &prefix, admin));
                let _ = reply.send(r);
            }
            Cmd::RevokeKey { id, reply } => {
                let r = self.in_txn(|w| {
                    w.conn
                        .execute(
                            "UPDATE api_keys SET revoked_at = ?1 WHERE id = ?2 AND revoked_at IS NULL",
                            params![Micros::now().0, id],
                        )
                        .map(|n| n > 0)
                        .map_err(storage)
                });
                let _ = reply.send(r);
            }
            Cmd::SavePolicies {
                project,
                sources,
                reply,
            } => {
                // A cleared set is a row holding JSON null: the history stays.
                let sources = sources.unwrap_or_else(|| "null".into());
                let r = self.in_txn(|w| {
                    w.conn
                        .execute(
                            "INSERT INTO policy_sets (project_id, sources, created_at) \
                             VALUES (?1, ?2, ?3)",
                            params![project, sources, Micros::now().0],
                        )
                        .map(|_| ())
                        .map_err(storage)
                });
                let _ = reply.send(r);
            }
            Cmd::DestroySalts { before, reply } => {
                // Destroyed means gone from the file: secure_delete zeroes the
                // freed bytes, and a TRUNCATE checkpoint writes the zeroed
                // pages into the database and empties the WAL. (Backups and
                // the filesystem's own copies are the operator's to destroy.)
                let _ = self.conn.execute_batch("PRAGMA secure_delete = ON;");
                let r = self.in_txn(|w| {
                    w.conn
                        .execute(
                            "DELETE FROM redaction_salts WHERE ?1 IS NULL OR created_at < ?1",
                            params![before],
                        )
                        .map(|n| n as u64)
                        .map_err(storage)
                });
                let _ = self.conn.execute_batch("PRAGMA secure_delete = OFF;");
                let r = r.and_then(|n| {
                    // A reader mid-statement blocks TRUNCATE: retry briefly.
                    let mut busy = 1;
                    for _ in 0..40 {
                        busy = self
                            .conn
                            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| {
                                row.get::<_, i64>(0)
                            })
                            .map_err(storage)?;
                        if busy == 0 {
                            break;
                        }
                        std::thread::sleep(std::time::Duration::from_millis(50));
                    }
                    if busy != 0 {
                        return Err(StoreError::Storage(
                            "salts deleted, but the WAL could not be checkpointed while readers were active; run the command again".into(),
                        ));
                    }
                    Ok(n)
                });
                let _ = reply.send(r);
            }
            Cmd::ImportMeta { meta, reply } => {
                let _ = reply.send(self.import_meta(&meta));
            }
            Cmd::Exec { run, reply } => {
                let _ = reply.send(self.in_txn(|w| run(&w.conn)));
            }
            Cmd::ImportSession {
                project,
                session,
                events,
                reply,
            } => {
                let _ = reply.send(self.import_session(&project, &session, &events));
            }
            Cmd::LogIntegrate { pass, reply } => {
                let r = self.in_txn(|w| super::tlog::apply_pass(&w.conn, &pass));
                let _ = reply.send(r);
            }
            Cmd::LogCheckpoint {
                project,
                checkpoint,
                reply,
            } => {
                let r = self.in_txn(|w| super::tlog::add_checkpoint(&w.conn, project, &checkpoint));
                let _ = reply.send(r);
            }
            Cmd::Append { .. } | Cmd::Shutdown => {}
        }
    }

    fn in_txn<T>(&mut self, f: impl FnOnce(&mut Self) -> StoreResult<T>) -> StoreResult<T> {
        self.conn
            .execute_batch("BEGIN IMMEDIATE")
            .map_err(storage)?;
        let r = match f(self) {
            Ok(v) => match self
                .rollups
                .write(&self.conn)
                .and_then(|()| self.conn.execute_batch("COMMIT"))
            {
                Ok(()) => {
                    self.search.committed(self.txn_rowid);
                    Ok(v)
                }
                Err(e) => {
                    let _ = self.conn.execute_batch("ROLLBACK");
                    Err(storage(e))
                }
            },
            Err(e) => {
                let _ = self.conn.execute_batch("ROLLBACK");
                Err(e)
            }
        };
        if r.is_err() {
            self.rollups.discard();
        }
        self.txn_rowid = 0;
        r
    }

    /// Insert a new session's row (`SessionExists` if the id is taken).
    fn create_session_row(&mut self, project: &ProjectRef, s: &NewSession) -> StoreResult<Head> {
        let exists: Option<i64> = self
            .conn
            .prepare_cached("SELECT rowid FROM sessions WHERE project_id = ?1 AND id = ?2")
            .and_then(|mut st| {
                st.query_row(params![project.id.0, s.id.as_str()], |r| r.get(0))
                    .optional()
            })
            .map_err(storage)?;
        if exists.is_some() {
            return Err(StoreError::SessionExists(s.id.to_string()));
        }
        self.insert_session_row(
            project,
            s.id.as_str(),
            s.agent_id.as_str(),
            s.system_prompt.as_deref(),
            s.metadata.get(),
            Micros::now(),
        )
    }

    fn create_key(
        &mut self,
        id: &str,
        project: &str,
        name: &str,
        key_hash: &[u8; 32],
        prefix: &str,
        admin: bool,
    ) -> StoreResult<ApiKeyInfo> {
        let now = Micros::now();
        self.conn
            .execute(
                "INSERT INTO projects (name, created_at) VALUES (?1, ?2) ON CONFLICT(name) DO NOTHING",
                params![project, now.0],
            )
            .map_err(storage)?;
        let project_id: i64 = self
            .conn
            .query_row(
                "SELECT id FROM projects WHERE name = ?1",
                params![project],
                |r| r.get(0),
            )
            .map_err(storage)?;
        self.conn
            .execute(
                "INSERT INTO api_keys (id, project_id, name, key_hash, prefix, admin, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    id,
                    project_id,
                    name,
                    &key_hash[..],
                    prefix,
                    admin as i64,
                    now.0
                ],
            )
            .map_err(storage)?;
        Ok(ApiKeyInfo {
            id: id.to_owned(),
            project: ProjectRef {
                id: agentledger_core::ProjectId(project_id),
                name: project.to_owned(),
            },
            name: name.to_owned(),
            prefix: prefix.to_owned(),
            admin,
            created_at: now,
            revoked_at: None,
        })
    }
}

/// Rewrite the project's kept replies that echo an erased event's payload
/// (`crate::replies`), in the erasing transaction.
fn scrub_kept_replies(
    conn: &Connection,
    project: i64,
    event_id: &str,
    payload: &str,
) -> rusqlite::Result<()> {
    let mut found: Vec<(String, crate::replies::Scrubbed)> = Vec::new();
    {
        // Erasures are rare and the table holds one TTL of replies: a scan of
        // the project's, narrowed by both byte strings, is enough.
        let mut st = conn.prepare_cached(
            "SELECT key, status, content_type, body FROM idempotency_keys
             WHERE project_id = ?1 AND (instr(body, ?2) > 0 OR instr(body, ?4) > 0)
               AND instr(body, ?3) > 0",
        )?;
        let mut rows = st.query(params![
            project,
            event_id.to_ascii_uppercase().as_bytes(),
            payload.as_bytes(),
            event_id.to_ascii_lowercase().as_bytes()
        ])?;
        while let Some(r) = rows.next()? {
            let status: u16 = r.get(1)?;
            let content_type: String = r.get(2)?;
            let body: Vec<u8> = r.get(3)?;
            if let Some(s) = crate::replies::scrub(status, &content_type, &body, event_id, payload)
            {
                found.push((r.get(0)?, s));
            }
        }
    }
    for (key, s) in found {
        conn.prepare_cached(
            "UPDATE idempotency_keys SET status = ?3, content_type = ?4, body = ?5
             WHERE project_id = ?1 AND key = ?2",
        )?
        .execute(params![project, key, s.status, s.content_type, s.body])?;
    }
    Ok(())
}

/// The reply kept under an idempotency key of a project, if it was kept
/// at or after `oldest` (µs).
pub(crate) fn kept_reply(
    conn: &Connection,
    project: i64,
    key: &str,
    oldest: i64,
) -> rusqlite::Result<Option<([u8; 32], StoredReply)>> {
    conn.prepare_cached(
        "SELECT fingerprint, status, content_type, body FROM idempotency_keys
         WHERE project_id = ?1 AND key = ?2 AND created_at >= ?3",
    )?
    .query_row(params![project, key, oldest], |r| {
        Ok((
            r.get::<_, [u8; 32]>(0)?,
            StoredReply {
                status: r.get(1)?,
                content_type: r.get(2)?,
                body: r.get(3)?,
            },
        ))
    })
    .optional()
}

/// A session row's header, owned (core's `SessionHeader` borrows it).
struct OwnedHeader {
    session_id: String,
    agent_id: String,
    system_prompt: Option<String>,
    metadata: String,
    created_at: Micros,
}

impl OwnedHeader {
    fn borrow(&self) -> SessionHeader<'_> {
        SessionHeader {
            session_id: &self.session_id,
            agent_id: &self.agent_id,
            system_prompt: self.system_prompt.as_deref(),
            metadata: self.metadata.as_bytes(),
            created_at: self.created_at,
        }
    }
}
