//! Moving a whole ledger from one store to another, whatever their backends
//! (`agentledger copy`): projects with their ids, keys with their hashes,
//! the policy-set history, every session and every event exactly as stored
//! (ids, seqs, times, payloads, verdicts, hashes, redaction salts). Events
//! are not chained again: the target holds the same chains, so every hash
//! already handed out (acknowledgements, exports, checkpoints) still
//! verifies against it.
//!
//! # Resumable, idempotent, refusing
//! Each session is copied in transactions of at most `batch` events, each
//! continuing the target's stored head ([`EventStore::import_session`]
//! checks seq and prev_hash). A copy that stopped half way is resumed by
//! running it again: it reads where every target session ends and goes on
//! from there; a finished copy run again copies nothing. Before writing
//! anything the target is checked against the source: every project, key,
//! policy set and session it holds must be the source's, and every stored
//! chain must be a prefix of the source's (its head hash equals the
//! source's event at that seq). Otherwise the copy is refused and nothing is
//! written. Idempotency keys (kept replies, expiring within a day) are not
//! copied. At the end every session of the target is verified.

use std::collections::{HashMap, HashSet};

use agentledger_core::{Event, Micros, ProjectId, Session};

use crate::{
    ApiKeyInfo, DerivedColumns, EventStore, ProjectRef, SessionListing, SessionQuery, StoreError,
    StoreResult,
};

/// A project as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectRecord {
    pub id: ProjectId,
    pub name: String,
    pub created_at: Micros,
}

/// A key as stored: what a listing shows and the SHA-256 it authenticates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRecord {
    pub info: ApiKeyInfo,
    pub key_hash: [u8; 32],
}

/// One saved policy set of the history (`sources` is `null` for a cleared set).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicySetRecord {
    pub project: Option<ProjectId>,
    pub sources: String,
    pub created_at: Micros,
}

/// Everything of a ledger besides sessions and events.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LedgerMeta {
    /// By id.
    pub projects: Vec<ProjectRecord>,
    /// By creation time, then id.
    pub keys: Vec<KeyRecord>,
    /// In the order they were saved.
    pub policy_sets: Vec<PolicySetRecord>,
}

/// One stored event with what a copy must keep beside it.
#[derive(Debug, Clone)]
pub struct ImportedEvent {
    pub event: Event,
    /// The stored derived columns (`project_id` is ignored: the target's
    /// project is the one imported into, with the same id).
    pub columns: DerivedColumns,
    pub redaction_salt: Option<[u8; 32]>,
}

/// How far a copy is, for a progress display.
#[derive(Debug, Clone, Default)]
pub struct CopyProgress {
    pub sessions_total: u64,
    pub sessions_done: u64,
    /// Events of the source (the sum of its sessions' heads).
    pub events_total: u64,
    /// Events now in the target (copied now or by an earlier run).
    pub events_done: u64,
}

/// What a copy did.
#[derive(Debug, Clone, Default)]
pub struct CopyReport {
    pub projects: usize,
    pub keys: usize,
    pub policy_sets: usize,
    pub sessions: u64,
    /// Events copied by this run.
    pub events_copied: u64,
    /// Events the target already held (an earlier, interrupted run).
    pub events_already: u64,
    /// Target sessions whose chain did not verify: (project, session, reason).
    pub broken: Vec<(String, String, String)>,
}

fn conflict(what: String) -> StoreError {
    StoreError::ImportConflict(what)
}

/// Every session of `project`, oldest first: the reverse of the listing
/// (newest first, ties by the order stored), so sessions created in that
/// order get the target's internal ids in the source's order, and every
/// listing (and export) of the copy comes out in the source's order.
async fn all_sessions(store: &dyn EventStore, project: &ProjectRef) -> StoreResult<Vec<Session>> {
    let mut out = Vec::new();
    let mut cursor = None;
    loop {
        let page = store
            .list_sessions_at(
                project,
                SessionListing {
                    query: SessionQuery {
                        limit: 500,
                        cursor,
                        ..SessionQuery::default()
                    },
                    offset: 0,
                    any_tags: Vec::new(),
                },
            )
            .await?;
        out.extend(page.sessions);
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => {
                out.reverse();
                return Ok(out);
            }
        }
    }
}

/// The source's event at `seq` of a session.
async fn event_at(
    store: &dyn EventStore,
    project: &ProjectRef,
    session: &str,
    seq: u64,
) -> StoreResult<Option<Event>> {
    Ok(store
        .session_events(project, session, seq.saturating_sub(1), 1)
        .await?
        .into_iter()
        .find(|e| e.seq == seq))
}

fn header_of(s: &Session) -> (&str, &Option<String>, &str, Micros) {
    (
        &s.agent_id,
        &s.system_prompt,
        s.metadata.get(),
        s.created_at,
    )
}

/// Copy everything of `from` into `to` (see the module doc), `batch` events
/// per transaction, calling `progress` as it goes; then verify every session
/// of `to`.
pub async fn copy_ledger(
    from: &dyn EventStore,
    to: &dyn EventStore,
    batch: u32,
    progress: &mut (dyn FnMut(&CopyProgress) + Send),
) -> StoreResult<CopyReport> {
    let batch = batch.max(1);
    let meta = from.ledger_meta().await?;
    let projects: Vec<ProjectRef> = meta
        .projects
        .iter()
        .map(|p| ProjectRef {
            id: p.id,
            name: p.name.clone(),
        })
        .collect();
    let mut sessions: Vec<(ProjectRef, Vec<Session>)> = Vec::new();
    let mut state = CopyProgress::default();
    for p in &projects {
        let list = all_sessions(from, p).await?;
        state.sessions_total += list.len() as u64;
        state.events_total += list.iter().map(|s| s.head_seq).sum::<u64>();
        sessions.push((p.clone(), list));
    }

    // Refuse a target holding anything the source does not, before writing.
    let target_meta = to.ledger_meta().await?;
    check_meta(&target_meta, &meta)?;
    let known: HashMap<(i64, &str), &Session> = sessions
        .iter()
        .flat_map(|(p, list)| list.iter().map(move |s| ((p.id.0, s.id.as_str()), s)))
        .collect();
    for p in &target_meta.projects {
        let tp = ProjectRef {
            id: p.id,
            name: p.name.clone(),
        };
        for t in all_sessions(to, &tp).await? {
            let Some(s) = known.get(&(p.id.0, t.id.as_str())) else {
                return Err(conflict(format!(
                    "session {:?} of project {:?} is not in the source",
                    t.id, p.name
                )));
            };
            if header_of(s) != header_of(&t) {
                return Err(conflict(format!(
                    "session {:?} of project {:?} has another header in the target",
                    t.id, p.name
                )));
            }
            if t.head_seq > s.head_seq {
                return Err(conflict(format!(
                    "session {:?} of project {:?} is longer in the target ({} events) than in the source ({})",
                    t.id, p.name, t.head_seq, s.head_seq
                )));
            }
            if t.head_seq > 0 {
                let same = event_at(from, &tp, &t.id, t.head_seq)
                    .await?
                    .is_some_and(|e| Some(e.hash) == t.head_hash);
                if !same {
                    return Err(conflict(format!(
                        "session {:?} of project {:?}: the target's event {} is not the source's",
                        t.id, p.name, t.head_seq
                    )));
                }
            }
        }
    }

    to.import_meta(&meta).await?;
    let mut report = CopyReport {
        projects: meta.projects.len(),
        keys: meta.keys.len(),
        policy_sets: meta.policy_sets.len(),
        ..CopyReport::default()
    };
    progress(&state);
    for (p, list) in &sessions {
        for s in list {
            let mut at = to.get_session(p, &s.id).await?.map_or(0, |t| t.head_seq);
            report.events_already += at;
            state.events_done += at;
            // A session without events (yet) is created by an empty import.
            if at == 0 && s.head_seq == 0 {
                to.import_session(p, s, Vec::new()).await?;
            }
            while at < s.head_seq {
                let rows = from
                    .session_events_with_columns(p, &s.id, at, batch)
                    .await?;
                if rows.is_empty() {
                    return Err(StoreError::Corrupt(format!(
                        "session {:?} of project {:?}: its head is at {} but no event follows {at}",
                        s.id, p.name, s.head_seq
                    )));
                }
                let mut events = Vec::with_capacity(rows.len());
                for (event, columns) in rows {
                    let redaction_salt = if event.original_payload_sha256.is_some()
                        || event.original_metadata_sha256.is_some()
                    {
                        from.redaction_salt(p, event.id).await?
                    } else {
                        None
                    };
                    events.push(ImportedEvent {
                        event,
                        columns,
                        redaction_salt,
                    });
                }
                let n = events.len() as u64;
                at = to.import_session(p, s, events).await?;
                report.events_copied += n;
                state.events_done += n;
                progress(&state);
            }
            state.sessions_done += 1;
            report.sessions += 1;
            progress(&state);
        }
    }

    for (p, list) in &sessions {
        for s in list {
            match crate::verify::verify_session(to, p, &s.id).await? {
                Some(r) if r.valid => {}
                Some(r) => report.broken.push((
                    p.name.clone(),
                    s.id.clone(),
                    r.reason.unwrap_or_else(|| "invalid".into()),
                )),
                None => report.broken.push((
                    p.name.clone(),
                    s.id.clone(),
                    "missing from the target".into(),
                )),
            }
        }
    }
    Ok(report)
}

/// The target's projects, keys and policy sets must be the source's (a key
/// revoked in the source since may still be active in the target; the
/// target's policy history must be the start of the source's).
fn check_meta(target: &LedgerMeta, source: &LedgerMeta) -> StoreResult<()> {
    let projects: HashSet<(i64, &str)> = source
        .projects
        .iter()
        .map(|p| (p.id.0, p.name.as_str()))
        .collect();
    for p in &target.projects {
        if !projects.contains(&(p.id.0, p.name.as_str())) {
            return Err(conflict(format!(
                "project {:?} (id {}) is not the source's",
                p.name, p.id.0
            )));
        }
    }
    let keys: HashMap<&str, &KeyRecord> = source
        .keys
        .iter()
        .map(|k| (k.info.id.as_str(), k))
        .collect();
    for k in &target.keys {
        if !keys.get(k.info.id.as_str()).is_some_and(|s| same_key(k, s)) {
            return Err(conflict(format!("key {:?} is not the source's", k.info.id)));
        }
    }
    if !source.policy_sets.starts_with(&target.policy_sets) {
        return Err(conflict(
            "the policy-set history is not the start of the source's".into(),
        ));
    }
    Ok(())
}

/// Equal but for a revocation the target has not seen yet.
pub fn same_key(target: &KeyRecord, source: &KeyRecord) -> bool {
    let mut t = target.clone();
    if t.info.revoked_at.is_none() {
        t.info.revoked_at = source.info.revoked_at;
    }
    t == *source
}
