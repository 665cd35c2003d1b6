//! Storage for the ledger: the backend-neutral [`EventStore`] trait and its
//! two implementations, SQLite (embedded, one node) and PostgreSQL (many
//! nodes on one database); nothing here leaks either's types to callers.

pub mod alerts;
pub mod conformance;
pub mod import;
mod kept;
pub mod log;
mod open;
pub mod postgres;
mod replies;
pub mod rollup;
pub mod sqlite;
pub mod verify;

pub use import::{ImportedEvent, KeyRecord, LedgerMeta, PolicySetRecord, ProjectRecord};
pub use open::{Backend, open};

use async_trait::async_trait;
use serde_json::value::RawValue;

use agentledger_core::verdict::Verdict;
use agentledger_core::{AgentId, Event, EventId, Micros, NewEvent, ProjectId, Session, SessionId};

pub use agentledger_core::query::{
    Cursor, EventPage, EventQuery, Order, SessionPage, SessionQuery, UsageGroup, UsageRow,
};

/// A project as seen by callers: its internal id and its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectRef {
    pub id: ProjectId,
    pub name: String,
}

/// What an API key resolves to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyInfo {
    pub id: String,
    pub project: ProjectRef,
    pub name: String,
    /// The first characters of the key, for recognising it in listings.
    pub prefix: String,
    pub admin: bool,
    pub created_at: Micros,
    pub revoked_at: Option<Micros>,
}

/// A saved policy set: the project it judges (`None`: a server-wide set
/// saved before sets belonged to projects) and its serialised sources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedPolicySet {
    pub project: Option<ProjectId>,
    pub sources: String,
}

/// An event's stored columns that are derived from hashed fields, as stored.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DerivedColumns {
    /// The project the row says the event belongs to (listings filter on it).
    pub project_id: i64,
    /// The decision column (from the hashed verdict).
    pub decision: Option<agentledger_core::verdict::Decision>,
    /// The usage columns (from the hashed payload).
    pub usage: agentledger_core::usage::Usage,
}

/// The order in which a group of new events is written: each session's
/// events together, sessions in the order they first appear, each session's
/// events in the order given (so its seqs still follow that order). A table
/// ordered by commit then holds a session's events of one request side by
/// side, several to a page, where the order given could scatter them one to a
/// page among other sessions' events; reading a session back (verify, export,
/// its console page) then touches that many fewer pages. Commit order between
/// sessions within one commit carries no meaning (they commit together), so
/// this changes nothing that a reader can rely on (docs/api.md, "Order").
pub(crate) fn session_order<K: Eq + std::hash::Hash>(keys: impl Iterator<Item = K>) -> Vec<usize> {
    let keys: Vec<K> = keys.collect();
    // One session (a single event, or one agent's batch: the usual request):
    // the order given, with nothing hashed.
    if keys.windows(2).all(|w| w[0] == w[1]) {
        return (0..keys.len()).collect();
    }
    let mut first: std::collections::HashMap<&K, usize> = std::collections::HashMap::new();
    // (the group of the event's session, the event's place in the request)
    let mut order: Vec<(usize, usize)> = Vec::with_capacity(keys.len());
    for (i, k) in keys.iter().enumerate() {
        let next = first.len();
        order.push((*first.entry(k).or_insert(next), i));
    }
    order.sort_unstable();
    order.into_iter().map(|(_, i)| i).collect()
}

/// CPU-bound work of a request (hashing or rendering thousands of events)
/// on a blocking thread, off the async workers; `what` names it if the
/// thread fails.
pub(crate) async fn blocking<T: Send + 'static>(
    what: &str,
    work: impl FnOnce() -> T + Send + 'static,
) -> StoreResult<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| StoreError::Storage(format!("{what} task failed: {e}")))
}

/// A piece of a session's export: [`EventStore::session_export_lines`].
#[derive(Debug, Default)]
pub struct ExportLines {
    /// The lines, each ending in a newline.
    pub lines: Vec<u8>,
    /// Events read.
    pub read: usize,
    /// The last event written (seq, id).
    pub last: Option<(u64, EventId)>,
    /// The events up to `until` ([`ExportLines::push`]): the length of
    /// their lines and the last of them.
    until: (usize, Option<(u64, EventId)>),
}

impl ExportLines {
    /// Room for `events` lines whose payloads total `payload_bytes`.
    pub fn new(events: usize, payload_bytes: usize) -> Self {
        ExportLines {
            lines: Vec::with_capacity(payload_bytes + events * 640),
            ..Default::default()
        }
    }

    /// Write an event's line (events come in seq order), noting where the
    /// events with seq <= `until` end.
    pub fn push(&mut self, ev: &agentledger_core::event::EventView<'_>, until: u64) {
        self.read += 1;
        ev.write_export_line(&mut self.lines);
        self.lines.push(b'\n');
        self.last = Some((ev.seq, ev.id));
        if ev.seq <= until {
            self.until = (self.lines.len(), self.last);
        }
    }

    /// Keep only the lines of events with seq <= `until`.
    pub fn keep_until(&mut self) {
        self.lines.truncate(self.until.0);
        self.last = self.until.1;
    }
}

/// The ledger's answer for one appended event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendedEvent {
    pub id: EventId,
    pub session_id: String,
    pub seq: u64,
    pub hash: [u8; 32],
    pub server_ts: Micros,
}

/// A session to create explicitly (sessions are otherwise created by their first event).
#[derive(Debug, Clone)]
pub struct NewSession {
    pub id: SessionId,
    pub agent_id: AgentId,
    pub system_prompt: Option<String>,
    pub metadata: Box<RawValue>,
}

/// What a committed request leaves for its renderer: the events as stored
/// (judged, redacted where configured), their places in the chain, and the
/// session it created, if it created one.
pub struct Committed<'a> {
    pub events: &'a [NewEvent],
    pub appended: &'a [AppendedEvent],
    pub session: Option<&'a Session>,
    /// The request's verdicts, one per event (none without a judge).
    pub verdicts: &'a [Verdict],
}

/// An ingest request's answer as sent: kept with its idempotency key and
/// replayed byte for byte when the request is retried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredReply {
    pub status: u16,
    pub content_type: String,
    pub body: Vec<u8>,
}

/// Renders a committed request's answer. Called by the store inside the
/// append's transaction (before COMMIT), so the answer is kept atomically
/// with the events: it must be quick and must not block.
pub type Render = Box<dyn FnOnce(&Committed<'_>) -> StoredReply + Send>;

/// A client's `Idempotency-Key` for one request: the key (unique per
/// project) and a fingerprint of what the request asked (route and body).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey {
    pub key: String,
    pub fingerprint: [u8; 32],
}

/// One ingest request for the store: optionally create a session, append
/// events, and keep the answer under an idempotency key, all in one
/// transaction (or nothing of it).
#[derive(Default)]
pub struct AppendRequest {
    /// Create this session first (`SessionExists` if the id is taken); every
    /// event must then name it.
    pub session: Option<NewSession>,
    pub events: Vec<NewEvent>,
    /// If a live reply is already kept under this key in the project, the
    /// request appends nothing: the same fingerprint replays it, another is
    /// `IdempotencyConflict`. Otherwise the reply is rendered and kept.
    pub idempotency: Option<(IdempotencyKey, Render)>,
    /// Judges the events inside the append's transaction, against the
    /// state of each session's committed events up to the head they are
    /// chained onto (see [`Judge`]). Without one, events are stored as given.
    pub judge: Option<Box<dyn Judge>>,
    /// The project's event alert rules: the writer matches each stored
    /// event and writes the alerts it fires into the outbox, in this
    /// transaction (see [`alerts`]). Without one, no alert is written.
    pub alerts: Option<std::sync::Arc<alerts::RuleSet>>,
    /// Erase this event's payload in the same transaction: the request's
    /// one event is then its `event_erased` record (core's `erasure`), which
    /// must name the same session. `AlreadyErased` if it was erased before;
    /// nothing is stored unless both happen.
    pub erase: Option<Box<EraseTarget>>,
}

/// The event an [`AppendRequest`] erases, as the caller read it (the
/// store refuses the erasure if the row no longer matches).
#[derive(Debug, Clone)]
pub struct EraseTarget {
    pub event_id: EventId,
    pub seq: u64,
    pub payload_sha256: [u8; 32],
    /// Who erased it (the record's `erasedBy`).
    pub by: String,
}

/// A session's policy state as the store keeps it beside the chain head.
/// The store does not look inside: the policy checkpoint owns the type; the
/// store folds stored events into it, clones it into a transaction and
/// keeps it only once that transaction committed.
pub trait SessionFold: Send + Sync + std::any::Any {
    /// Fold one stored event in (the state of a session the store had not
    /// kept is rebuilt from its events, in seq order).
    fn apply_stored(&mut self, ev: &Event);
    fn clone_box(&self) -> Box<dyn SessionFold>;
    fn as_any_mut(&mut self) -> &mut dyn std::any::Any;
}

/// The states of one request's sessions, by session id.
pub type SessionStates = std::collections::HashMap<String, Box<dyn SessionFold>>;

/// The policy checkpoint, called by the store's writer for a request inside
/// the transaction that appends it, after the sessions' heads are locked:
/// so requests to one session are judged in exactly their commit order, and
/// against the fold of exactly the events before them in the chain, whichever
/// node appended those. What a failed transaction judged is forgotten with it.
///
/// Keep it quick: it runs on the writer's path. The costly, session-free part
/// (detectors) belongs before the request is queued.
pub trait Judge: Send {
    /// The state of a session without events.
    fn empty(&self) -> Box<dyn SessionFold>;
    /// A state the caller rebuilt from the ledger for a session the store
    /// keeps none of: the seq it was folded up to, and the state. The store
    /// folds what was appended since; without a seed it rebuilds the state
    /// itself if the session is short, and otherwise hands the request back
    /// ([`AppendOutcome::NeedsState`]).
    fn seed(&mut self, session: &str) -> Option<(u64, Box<dyn SessionFold>)>;
    /// Judge the request's events as submitted, in order, against `states`
    /// (every session the events name is there), folding each in: the events
    /// to store (verdicts attached, redacted where configured) and one
    /// verdict per stored event. May be called again for the same request if
    /// its transaction is retried, always with the events as submitted and
    /// the states before it.
    fn judge(
        &mut self,
        events: Vec<NewEvent>,
        states: &mut SessionStates,
    ) -> StoreResult<(Vec<NewEvent>, Vec<Verdict>)>;
}

/// Events the writer folds into a session's state itself, inside the
/// transaction, when it keeps no state of the session or another node
/// appended to it; past this it asks for a seed rather than hold the
/// writer (and every other request) while it reads a long session.
pub const FOLD_IN_WRITER: u64 = 2000;

/// A queued [`AppendRequest`]'s outcome, to be awaited.
pub type Queued =
    std::pin::Pin<Box<dyn std::future::Future<Output = StoreResult<AppendOutcome>> + Send>>;

/// What an [`AppendRequest`] did.
pub enum AppendOutcome {
    Committed {
        session: Option<Box<Session>>,
        appended: Vec<AppendedEvent>,
        /// The request's events, handed back for rendering.
        events: Vec<NewEvent>,
        /// The rendered reply, when the request had an idempotency key.
        reply: Option<StoredReply>,
        /// One per stored event, from the request's judge (none without one).
        verdicts: Vec<Verdict>,
    },
    /// Not judged, nothing stored: the store keeps no state of these
    /// sessions and each is longer than [`FOLD_IN_WRITER`] events. The
    /// request comes back to be queued again once its judge can
    /// [`Judge::seed`] them.
    NeedsState {
        request: Box<AppendRequest>,
        sessions: Vec<String>,
    },
    /// An earlier request with this key and fingerprint committed; nothing
    /// was appended now.
    Replayed(StoredReply),
}

/// One agent as its sessions describe it (agents have no record of their
/// own: an agent is the `agent_id` its sessions name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentSummary {
    pub id: String,
    /// Earliest first-event time (a session's creation time until it has events).
    pub first_seen_at: Micros,
    /// Latest last-event time (likewise).
    pub last_seen_at: Micros,
    pub session_count: u64,
}

/// A page of agents, by id; `total` counts every agent of the project.
#[derive(Debug, Clone)]
pub struct AgentPage {
    pub agents: Vec<AgentSummary>,
    pub total: u64,
}

/// Offset paging and a tags filter over a session listing (AgentLens's
/// listing pages by offset; the native one by cursor).
#[derive(Debug, Clone, Default)]
pub struct SessionListing {
    /// Filters, page size and cursor (a cursor with an offset skips after it).
    pub query: SessionQuery,
    pub offset: u64,
    /// Sessions carrying any of these tags (none: no tag filter).
    pub any_tags: Vec<String>,
}

/// How [`EventStore::llm_usage`] groups LLM responses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LlmGroup {
    /// By the provider and model the payload names.
    Model,
    /// By time bucket of this many microseconds (an hour, a day; a week's
    /// buckets start on Mondays, UTC).
    Time(i64),
}

/// LLM calls (events of kind `llm_response`) of one group: their count,
/// the usage columns' sums, and the `latencyMs` their payloads carry.
#[derive(Debug, Clone, PartialEq)]
pub struct LlmUsageRow {
    /// The payload's `provider` (grouped by model; else `None`).
    pub provider: Option<String>,
    /// The usage column's model (grouped by model; else `None`).
    pub model: Option<String>,
    /// The bucket's start (grouped by time; else `None`).
    pub bucket: Option<Micros>,
    pub calls: u64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cost_usd: f64,
    /// Sum and count of the numeric `latencyMs` members (calls without one
    /// are not averaged in).
    pub latency_ms_sum: f64,
    pub latency_count: u64,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("session {0:?} already exists")]
    SessionExists(String),
    #[error("project {0:?} does not exist")]
    NoSuchProject(String),
    /// Back-pressure: too much is already waiting for the writer, or no
    /// read connection came free in time.
    #[error("the writer queue is full")]
    Overloaded,
    /// A cursor names no row of the caller's listing (another project's, or
    /// another listing's).
    #[error("cursor does not belong to this listing")]
    BadCursor,
    /// A listing ran past its time budget and was stopped.
    #[error("the query ran past its time budget of {0:?} and was stopped")]
    QueryBudget(std::time::Duration),
    /// A value of the request is past a limit of the database itself (on
    /// PostgreSQL: a payload whose full-text vector is over 1 MB). Nothing
    /// was stored.
    #[error("the database refused a value of the request as too large: {0}")]
    TooLarge(String),
    /// The policy checkpoint refused to judge a request (it gives the reason).
    #[error("the policy checkpoint could not judge the request: {0}")]
    Judge(String),
    /// An idempotency key kept for a request with another fingerprint.
    #[error("idempotency key {0:?} was used for a different request")]
    IdempotencyConflict(String),
    #[error("the store is shutting down")]
    ShuttingDown,
    #[error("storage failure: {0}")]
    Storage(String),
    /// The disk (or the database's size limit) is full: nothing was stored.
    #[error("storage is full: {0}")]
    Full(String),
    #[error("stored data is not readable: {0}")]
    Corrupt(String),
    /// The event to erase is already erased: nothing was stored.
    #[error("event {0} is already erased")]
    AlreadyErased(String),
    /// An import would change or contradict what the store already holds
    /// (another event at a seq, another key under an id): nothing of it
    /// was stored.
    #[error("the target holds different data: {0}")]
    ImportConflict(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Observes the writer, for metrics. Implemented by the server.
pub trait WriterObserver: Send + Sync {
    /// One transaction committed `events` events from `requests` requests.
    fn committed(&self, events: usize, requests: usize, seconds: f64);
}

/// The ledger's storage. Every method that touches events or sessions takes the
/// caller's project: nothing is reachable across projects.
#[async_trait]
pub trait EventStore: alerts::AlertStore + Send + Sync + 'static {
    /// The one write path of ingest: create the session if asked, append the
    /// events (seqs and hashes from core's `chain::link`), and keep the
    /// rendered reply under the idempotency key if one is given, committed
    /// durably in one transaction before this returns, or nothing stored.
    async fn append_request(
        &self,
        project: &ProjectRef,
        req: AppendRequest,
    ) -> StoreResult<AppendOutcome> {
        self.enqueue(project, req)?.await
    }

    /// Queue a request for [`EventStore::append_request`] without waiting:
    /// refused at once when the store is over its bounds (`Overloaded`);
    /// otherwise the returned future resolves once it is committed (or
    /// failed). Requests queued one after another by a caller are carried
    /// out in that order, so a caller that queues under a lock and then
    /// releases it keeps its order without waiting for the commit.
    fn enqueue(&self, project: &ProjectRef, req: AppendRequest) -> StoreResult<Queued>;

    /// The reply kept under an idempotency key of the project, with its
    /// fingerprint, if one is kept and has not expired.
    async fn idempotent_reply(
        &self,
        project: &ProjectRef,
        key: &str,
    ) -> StoreResult<Option<([u8; 32], StoredReply)>>;

    /// Append a batch atomically: all events get seqs and hashes and are
    /// committed durably before this returns, or none is stored.
    async fn append(
        &self,
        project: &ProjectRef,
        events: Vec<NewEvent>,
    ) -> StoreResult<Vec<AppendedEvent>> {
        let req = AppendRequest {
            events,
            ..AppendRequest::default()
        };
        match self.append_request(project, req).await? {
            AppendOutcome::Committed { appended, .. } => Ok(appended),
            AppendOutcome::Replayed(_) => Err(StoreError::Storage(
                "a request without an idempotency key was replayed".into(),
            )),
            AppendOutcome::NeedsState { .. } => Err(StoreError::Storage(
                "a request without a judge was handed back to be judged".into(),
            )),
        }
    }

    /// Create a session (`SessionExists` if the id is taken) and append
    /// `events` to it, all in one transaction. Every event must name this session.
    async fn create_session(
        &self,
        project: &ProjectRef,
        session: NewSession,
        events: Vec<NewEvent>,
    ) -> StoreResult<(Session, Vec<AppendedEvent>)> {
        let req = AppendRequest {
            session: Some(session),
            events,
            ..AppendRequest::default()
        };
        match self.append_request(project, req).await? {
            AppendOutcome::Committed {
                session: Some(s),
                appended,
                ..
            } => Ok((*s, appended)),
            _ => Err(StoreError::Storage(
                "creating a session returned no session".into(),
            )),
        }
    }
    async fn get_session(&self, project: &ProjectRef, id: &str) -> StoreResult<Option<Session>>;
    /// Sessions newest first, keyset-paged by `q.cursor`.
    async fn list_sessions(
        &self,
        project: &ProjectRef,
        q: SessionQuery,
    ) -> StoreResult<SessionPage> {
        let listing = SessionListing {
            query: q,
            offset: 0,
            any_tags: Vec::new(),
        };
        self.list_sessions_at(project, listing).await
    }
    /// Sessions newest first, skipping `offset` (bounded by the caller), with
    /// the same filters as [`EventStore::list_sessions`] plus tags.
    async fn list_sessions_at(
        &self,
        project: &ProjectRef,
        listing: SessionListing,
    ) -> StoreResult<SessionPage>;
    /// The project's agents ordered by id (`only`: that one agent), from their
    /// sessions; a page of at most `limit` after `offset`.
    async fn list_agents(
        &self,
        project: &ProjectRef,
        only: Option<String>,
        limit: u32,
        offset: u64,
    ) -> StoreResult<AgentPage>;

    async fn query_events(&self, project: &ProjectRef, q: EventQuery) -> StoreResult<EventPage>;
    /// Token and cost sums over the events matching `q` (its paging fields are
    /// ignored), optionally grouped; at most 1,000 groups, largest cost first.
    async fn usage(
        &self,
        project: &ProjectRef,
        q: EventQuery,
        group: Option<UsageGroup>,
    ) -> StoreResult<Vec<UsageRow>>;
    /// LLM responses matching `q` (its kinds and paging fields are ignored;
    /// `provider`: only responses whose payload names it), grouped; at most
    /// 1,001 groups, so a caller can tell "more than 1,000" (by model:
    /// largest cost first; by time: in time order).
    async fn llm_usage(
        &self,
        project: &ProjectRef,
        q: EventQuery,
        provider: Option<String>,
        group: LlmGroup,
    ) -> StoreResult<Vec<LlmUsageRow>>;
    /// The project's hourly rollups of one dimension over whole hours
    /// (see [`rollup`]): by hour and key in hour order, or per key over the
    /// range, largest count first; at most `q.limit` rows (capped at
    /// [`rollup::MAX_ROLLUP_ROWS`]).
    async fn rollups(
        &self,
        project: &ProjectRef,
        q: rollup::RollupQuery,
    ) -> StoreResult<Vec<rollup::RollupRow>>;
    async fn get_event(&self, project: &ProjectRef, id: EventId) -> StoreResult<Option<Event>>;
    /// Events of one session with seq > `after_seq`, in seq order.
    async fn session_events(
        &self,
        project: &ProjectRef,
        session_id: &str,
        after_seq: u64,
        limit: u32,
    ) -> StoreResult<Vec<Event>> {
        Ok(self
            .session_events_with_columns(project, session_id, after_seq, limit)
            .await?
            .into_iter()
            .map(|(e, _)| e)
            .collect())
    }

    /// Like [`EventStore::session_events`], with the stored columns that
    /// queries filter on but the hash does not cover directly (they are
    /// derived from covered fields): verification re-derives and compares them.
    async fn session_events_with_columns(
        &self,
        project: &ProjectRef,
        session_id: &str,
        after_seq: u64,
        limit: u32,
    ) -> StoreResult<Vec<(Event, DerivedColumns)>>;

    /// What verifying the events of one session with seq > `after_seq` needs
    /// (at most `limit`, in seq order), computed from each row as it is read
    /// ([`verify::VerifyRow`], from the row as an
    /// [`EventView`](agentledger_core::event::EventView): no [`Event`] each).
    async fn session_verify_rows(
        &self,
        project: &ProjectRef,
        session_id: &str,
        after_seq: u64,
        limit: u32,
    ) -> StoreResult<Vec<verify::VerifyRow>>;

    /// The export lines ([`EventView::write_export_line`](agentledger_core::event::EventView::write_export_line),
    /// each ending in a newline) of one session's events with seq >
    /// `after_seq`, at most `limit`, in seq order, noting where those with
    /// seq <= `until` end ([`ExportLines::keep_until`]).
    async fn session_export_lines(
        &self,
        project: &ProjectRef,
        session_id: &str,
        after_seq: u64,
        limit: u32,
        until: u64,
    ) -> StoreResult<ExportLines>;

    /// The salt of an event's redaction commitment (envelope v3), if it was
    /// redacted and the salt not destroyed. With it and the original bytes,
    /// anyone can check the commitment; without it, the commitment reveals
    /// nothing about them.
    async fn redaction_salt(
        &self,
        project: &ProjectRef,
        event: EventId,
    ) -> StoreResult<Option<[u8; 32]>>;
    /// Destroy the salts of events stored before `before` (all when `None`):
    /// their redacted originals can then never be confirmed by anyone. The
    /// chain is unaffected. Returns how many were destroyed.
    async fn destroy_redaction_salts(&self, before: Option<Micros>) -> StoreResult<u64>;

    /// Resolve the SHA-256 of a presented key. Revoked keys resolve to `None`.
    async fn authenticate(&self, key_hash: [u8; 32]) -> StoreResult<Option<ApiKeyInfo>>;
    /// Create a key (and its project if new).
    async fn create_key(
        &self,
        project: &str,
        name: &str,
        key_hash: [u8; 32],
        prefix: &str,
        admin: bool,
    ) -> StoreResult<ApiKeyInfo>;
    async fn list_keys(&self) -> StoreResult<Vec<ApiKeyInfo>>;
    /// Returns false when no active key has that id.
    async fn revoke_key(&self, id: &str) -> StoreResult<bool>;
    async fn count_keys(&self) -> StoreResult<u64>;
    /// Keep a project's policy set (the server's serialised sources) as its
    /// latest; `None` clears it, so the operator's default applies again.
    async fn save_policy_set(
        &self,
        project: &ProjectRef,
        sources: Option<String>,
    ) -> StoreResult<()>;
    /// The latest saved set of every project that has one. A set saved before
    /// sets belonged to projects (one for the whole server) comes back with
    /// `project: None`.
    async fn load_policy_sets(&self) -> StoreResult<Vec<SavedPolicySet>>;

    async fn list_projects(&self) -> StoreResult<Vec<ProjectRef>>;
    async fn project_by_name(&self, name: &str) -> StoreResult<Option<ProjectRef>>;

    /// Everything of the ledger that is not a session or an event, as stored:
    /// projects with their ids, keys with their hashes, every policy set
    /// ever saved (in order). For copying a ledger ([`import::copy_ledger`]).
    async fn ledger_meta(&self) -> StoreResult<LedgerMeta>;
    /// Make this store hold `meta`'s projects, keys and policy-set history,
    /// in one transaction: what is missing is added (ids kept), what is
    /// already there must be equal (a key may have been revoked since: the
    /// revocation is copied), and the stored policy-set history must be the
    /// start of `meta`'s. Anything else is `ImportConflict`, nothing stored.
    async fn import_meta(&self, meta: &LedgerMeta) -> StoreResult<()>;
    /// Store `events` of `session` exactly as given (ids, seqs, times,
    /// payloads, verdicts, hashes: not chained again), in one transaction,
    /// creating the session with `session`'s header if it is new. The events
    /// must continue the stored head (the first one's seq is the head's + 1
    /// and its prev_hash the head's hash; each links to the one before), and
    /// an existing session's header must equal `session`'s; otherwise
    /// `ImportConflict` and nothing is stored. The row's running facts
    /// (times, counters, ended, tags) are folded from the events by core's
    /// `SessionHead::advance`, as an append does. Returns the new head seq.
    async fn import_session(
        &self,
        project: &ProjectRef,
        session: &Session,
        events: Vec<ImportedEvent>,
    ) -> StoreResult<u64>;

    /// Transparency log (issue 17, [`log`]): add up to `max` committed events of the project
    /// that are not in its tree yet, in the backend's integration order, assigning leaf indices,
    /// writing the tiles and moving the integration cursor in one transaction. Nothing waiting:
    /// `added` is 0 and nothing is written.
    async fn log_integrate(&self, project: &ProjectRef, max: usize)
    -> StoreResult<log::Integrated>;
    /// The project's integrated tree (empty before the first integration).
    async fn log_head(&self, project: &ProjectRef) -> StoreResult<log::LogHead>;
    /// The project's tiles, one answer per tile asked: its bytes at exactly the width asked
    /// (a partial tile is cut from the wider one stored), or `None` if the tree has no such tile.
    async fn log_tiles(
        &self,
        project: &ProjectRef,
        tiles: &[agentledger_tlog::Tile],
    ) -> StoreResult<Vec<Option<Vec<u8>>>>;
    /// The leaf entries at indices `first..first + count` (fewer if the tree ends sooner).
    async fn log_entries(
        &self,
        project: &ProjectRef,
        first: u64,
        count: u16,
    ) -> StoreResult<Vec<Vec<u8>>>;
    /// The leaf index of an event of the project, once it is integrated.
    async fn log_leaf_index(
        &self,
        project: &ProjectRef,
        event: EventId,
    ) -> StoreResult<Option<u64>>;
    /// The stored checkpoint of the project at `size`, or its latest when `None`.
    async fn log_checkpoint(
        &self,
        project: &ProjectRef,
        size: Option<u64>,
    ) -> StoreResult<Option<log::LogCheckpoint>>;
    /// Keep a signed checkpoint unless one is already stored at its size; returns the one
    /// stored at that size afterwards (the caller compares roots: one size, one root).
    async fn log_add_checkpoint(
        &self,
        project: &ProjectRef,
        checkpoint: log::LogCheckpoint,
    ) -> StoreResult<log::LogCheckpoint>;

    /// Keep witnesses' cosignatures of the project's checkpoints (`log_checkpoint` must hold
    /// each one's size). A cosignature already kept for (size, witness, key ID) stays as it is.
    async fn log_add_cosignatures(
        &self,
        project: &ProjectRef,
        cosignatures: Vec<log::LogCosignature>,
    ) -> StoreResult<()>;
    /// The cosignatures of the project's `sizes` newest cosigned checkpoints of at most
    /// `max_size` leaves (any size when `None`), newest size first.
    async fn log_cosignatures(
        &self,
        project: &ProjectRef,
        max_size: Option<u64>,
        sizes: u32,
    ) -> StoreResult<Vec<log::LogCosignature>>;

    /// Requests waiting for the writer (for metrics and back-pressure).
    fn queue_depth(&self) -> usize;
    /// Events accepted for appending and not yet answered.
    fn pending_events(&self) -> usize;
    /// Committed events not yet visible to full-text search (0 for stores
    /// that index inside the append).
    fn search_backlog(&self) -> u64 {
        0
    }
    /// Settings of the storage underneath that weaken durability (a
    /// PostgreSQL with `fsync=off`, say), for the log and /metrics; empty
    /// when an acknowledgement is as durable as the backend promises.
    fn durability_warnings(&self) -> Vec<String> {
        Vec::new()
    }
    /// Finish what is queued, commit it, and stop the writer.
    async fn close(&self);
}

#[cfg(test)]
mod tests {
    #[test]
    fn session_order_groups_each_session_in_its_order() {
        let order = super::session_order(["a", "b", "a", "c", "b", "a"].into_iter());
        assert_eq!(order, [0, 2, 5, 1, 4, 3]);
        // One session (the common request): the order given.
        assert_eq!(super::session_order(["a"; 4].into_iter()), [0, 1, 2, 3]);
        assert_eq!(super::session_order(["a", "b"].into_iter()), [0, 1]);
        assert_eq!(super::session_order(["b", "a", "b"].into_iter()), [0, 2, 1]);
        assert!(super::session_order(std::iter::empty::<&str>()).is_empty());
    }
}
