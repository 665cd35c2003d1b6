//! Imports (`agentledger copy`), carried out by the writer thread like any
//! write: each in one transaction, and the head cache forgets the sessions
//! it touches so the next append reads their rows again.

use std::collections::HashMap;

use rusqlite::{OptionalExtension, params};

use agentledger_core::chain::SessionHead;
use agentledger_core::{Session, SessionStatus};

use super::{Head, HeadKey, INSERT_EVENT_SQL, Writer, storage};
use crate::import::{ImportedEvent, LedgerMeta, same_key};
use crate::{ProjectRef, StoreError, StoreResult};

fn conflict(what: String) -> StoreError {
    StoreError::ImportConflict(what)
}

impl Writer {
    pub(super) fn import_meta(&mut self, meta: &LedgerMeta) -> StoreResult<()> {
        self.in_txn(|w| {
            for p in &meta.projects {
                let stored: Option<(i64, String, i64)> = w
                    .conn
                    .query_row(
                        "SELECT id, name, created_at FROM projects WHERE id = ?1 OR name = ?2",
                        params![p.id.0, p.name],
                        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                    )
                    .optional()
                    .map_err(storage)?;
                match stored {
                    None => {
                        w.conn
                            .execute(
                                "INSERT INTO projects (id, name, created_at) VALUES (?1, ?2, ?3)",
                                params![p.id.0, p.name, p.created_at.0],
                            )
                            .map_err(storage)?;
                    }
                    Some(s) if s == (p.id.0, p.name.clone(), p.created_at.0) => {}
                    Some((id, name, _)) => {
                        return Err(conflict(format!(
                            "project {name:?} (id {id}) is not the source's {:?} (id {})",
                            p.name, p.id.0
                        )));
                    }
                }
            }
            let stored = w.key_records()?;
            let by_id: HashMap<&str, &crate::KeyRecord> =
                stored.iter().map(|k| (k.info.id.as_str(), k)).collect();
            for k in &meta.keys {
                match by_id.get(k.info.id.as_str()) {
                    None => {
                        w.conn
                            .execute(
                                "INSERT INTO api_keys (id, project_id, name, key_hash, prefix, \
                                 admin, created_at, revoked_at) \
                                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                                params![
                                    k.info.id,
                                    k.info.project.id.0,
                                    k.info.name,
                                    &k.key_hash[..],
                                    k.info.prefix,
                                    k.info.admin as i64,
                                    k.info.created_at.0,
                                    k.info.revoked_at.map(|t| t.0),
                                ],
                            )
                            .map_err(storage)?;
                    }
                    Some(s) if **s == *k => {}
                    Some(s) if same_key(s, k) => {
                        w.conn
                            .execute(
                                "UPDATE api_keys SET revoked_at = ?1 WHERE id = ?2",
                                params![k.info.revoked_at.map(|t| t.0), k.info.id],
                            )
                            .map_err(storage)?;
                    }
                    Some(_) => {
                        return Err(conflict(format!("key {:?} is not the source's", k.info.id)));
                    }
                }
            }
            let history = w.policy_records()?;
            if !meta.policy_sets.starts_with(&history) {
                return Err(conflict(
                    "the policy-set history is not the start of the source's".into(),
                ));
            }
            for p in &meta.policy_sets[history.len()..] {
                w.conn
                    .execute(
                        "INSERT INTO policy_sets (project_id, sources, created_at) \
                         VALUES (?1, ?2, ?3)",
                        params![p.project.map(|p| p.0), p.sources, p.created_at.0],
                    )
                    .map_err(storage)?;
            }
            Ok(())
        })
    }

    fn key_records(&self) -> StoreResult<Vec<crate::KeyRecord>> {
        super::super::read_key_records(&self.conn).map_err(storage)
    }

    fn policy_records(&self) -> StoreResult<Vec<crate::PolicySetRecord>> {
        super::super::read_policy_records(&self.conn).map_err(storage)
    }

    pub(super) fn import_session(
        &mut self,
        project: &ProjectRef,
        session: &Session,
        events: &[ImportedEvent],
    ) -> StoreResult<u64> {
        let key: HeadKey = (project.id.0, session.id.clone());
        // The cache must not outlive rows written here (nor a rollback).
        self.heads.pop(&key);
        let r = self.in_txn(|w| w.import_in_txn(project, session, events));
        self.heads.pop(&key);
        r
    }

    fn import_in_txn(
        &mut self,
        project: &ProjectRef,
        session: &Session,
        events: &[ImportedEvent],
    ) -> StoreResult<u64> {
        let stored: Option<(i64, String, Option<String>, String, i64)> = self
            .conn
            .query_row(
                "SELECT rowid, agent_id, system_prompt, metadata, created_at FROM sessions \
                 WHERE project_id = ?1 AND id = ?2",
                params![project.id.0, session.id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )
            .optional()
            .map_err(storage)?;
        let mut head = match stored {
            None => {
                self.conn
                    .execute(
                        "INSERT INTO sessions (id, project_id, agent_id, system_prompt, metadata, \
                         created_at, status, head_seq, head_hash) \
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, 0, 0, NULL)",
                        params![
                            session.id,
                            project.id.0,
                            session.agent_id,
                            session.system_prompt,
                            session.metadata.get(),
                            session.created_at.0
                        ],
                    )
                    .map_err(storage)?;
                Head {
                    session_rowid: self.conn.last_insert_rowid(),
                    chain: SessionHead::default(),
                }
            }
            Some((_, agent, prompt, metadata, created)) => {
                if (agent.as_str(), &prompt, metadata.as_str(), created)
                    != (
                        session.agent_id.as_str(),
                        &session.system_prompt,
                        session.metadata.get(),
                        session.created_at.0,
                    )
                {
                    return Err(conflict(format!(
                        "session {:?} has another header in the target",
                        session.id
                    )));
                }
                let empty = HashMap::new();
                self.head(&empty, &empty, &(project.id.0, session.id.clone()))?
                    .ok_or_else(|| StoreError::Storage("the session row vanished".into()))?
            }
        };
        for ie in events {
            let ev = &ie.event;
            if ev.session_id != session.id
                || ev.seq != head.chain.seq + 1
                || ev.prev_hash != head.chain.hash
            {
                return Err(conflict(format!(
                    "session {:?}: event {} (seq {}) does not continue the stored head at seq {}",
                    session.id, ev.id, ev.seq, head.chain.seq
                )));
            }
            let cols = &ie.columns;
            self.conn
                .prepare_cached(INSERT_EVENT_SQL)
                .and_then(|mut st| {
                    st.execute(params![
                        &ev.id.to_bytes()[..],
                        project.id.0,
                        head.session_rowid,
                        ev.seq as i64,
                        ev.agent_id,
                        ev.kind.code(),
                        ev.source_type,
                        ev.dialect.code(),
                        ev.severity.code(),
                        ev.client_ts.map(|t| t.0),
                        ev.server_ts.0,
                        ev.payload.get(),
                        ev.metadata.get(),
                        &ev.payload_sha256[..],
                        ev.prev_hash.as_ref().map(|h| &h[..]),
                        &ev.hash[..],
                        cols.usage.model,
                        cols.usage.input_tokens,
                        cols.usage.output_tokens,
                        cols.usage.cost_usd,
                        ev.envelope_version,
                        ev.verdict.as_ref().map(|v| v.get()),
                        cols.decision.map(|d| d.code()),
                        ev.original_payload_sha256.as_ref().map(|h| &h[..]),
                        ev.original_metadata_sha256.as_ref().map(|h| &h[..]),
                    ])
                })
                .map_err(|e| match storage(e) {
                    StoreError::Storage(m) if m.contains("UNIQUE") => conflict(format!(
                        "event {} is already stored in another place: {m}",
                        ev.id
                    )),
                    e => e,
                })?;
            self.txn_rowid = self.txn_rowid.max(self.conn.last_insert_rowid());
            if let Some(x) = ev.erased.as_deref() {
                // An erased event keeps its erasure (and no payload text).
                self.conn
                    .execute(
                        "UPDATE events SET payload = '', erased_at = ?1, erased_by = ?2, \
                         erasure_seq = ?3 WHERE rowid = ?4",
                        params![
                            x.at.0,
                            x.by,
                            x.record_seq as i64,
                            self.conn.last_insert_rowid()
                        ],
                    )
                    .map_err(storage)?;
            }
            self.rollups
                .count(project.id.0, &crate::rollup::EventFacts::stored(ev, cols));
            if let Some(salt) = &ie.redaction_salt {
                self.conn
                    .execute(
                        "INSERT INTO redaction_salts (event_id, salt, created_at) \
                         VALUES (?1, ?2, ?3)",
                        params![&ev.id.to_bytes()[..], &salt[..], ev.server_ts.0],
                    )
                    .map_err(storage)?;
            }
            head.chain.seq = ev.seq;
            head.chain.hash = Some(ev.hash);
            head.chain.advance(
                ev.kind,
                ev.severity,
                ev.time(),
                ev.payload.get(),
                &cols.usage,
            );
        }
        let status = if head.chain.ended {
            SessionStatus::Ended
        } else {
            SessionStatus::Active
        };
        let c = &head.chain.counters;
        self.conn
            .execute(
                "UPDATE sessions SET head_seq = ?1, head_hash = ?2, status = ?3,
                    first_event_at = ?4, last_event_at = ?5, event_count = ?7,
                    tool_call_count = ?8, error_count = ?9, llm_call_count = ?10,
                    input_tokens = ?11, output_tokens = ?12, cost_usd = ?13, tags = ?14
                 WHERE rowid = ?6",
                params![
                    head.chain.seq as i64,
                    head.chain.hash.as_ref().map(|h| &h[..]),
                    (status == SessionStatus::Ended) as i64,
                    head.chain.first_at,
                    head.chain.last_at,
                    head.session_rowid,
                    c.events as i64,
                    c.tool_calls as i64,
                    c.errors as i64,
                    c.llm_calls as i64,
                    c.input_tokens,
                    c.output_tokens,
                    c.cost_usd,
                    head.chain.tags,
                ],
            )
            .map_err(storage)?;
        Ok(head.chain.seq)
    }
}
