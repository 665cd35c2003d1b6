//! Imports (`agentledger copy`) on PostgreSQL: each in one transaction on a
//! pool connection, holding the same advisory lock on the session as the
//! writer of every node does, so an import and an append cannot interleave.

use std::collections::HashMap;

use agentledger_core::chain::SessionHead;
use agentledger_core::{Micros, ProjectId, Session};

use super::PostgresStore;
use super::rows::{counters_from_row, get};
use super::writer::{INSERT_EVENTS_SQL, lock_key};
use crate::import::{ImportedEvent, LedgerMeta, same_key};
use crate::{KeyRecord, PolicySetRecord, ProjectRecord, ProjectRef, StoreError, StoreResult};

fn conflict(what: String) -> StoreError {
    StoreError::ImportConflict(what)
}

fn hash32(v: Vec<u8>, what: &str) -> StoreResult<[u8; 32]> {
    v.try_into()
        .map_err(|_| StoreError::Corrupt(format!("{what} is not 32 bytes")))
}

type Client = tokio_postgres::Client;

pub(super) async fn key_records(
    c: &impl tokio_postgres::GenericClient,
) -> StoreResult<Vec<KeyRecord>> {
    let rows = c
        .query(
            &format!("{} ORDER BY k.created_at, k.id", super::KEY_SELECT),
            &[],
        )
        .await
        .map_err(|e| super::errors::store_error(e, std::time::Duration::from_secs(60)))?;
    rows.iter()
        .map(|r| {
            Ok(KeyRecord {
                info: super::key_from_row(r)?,
                key_hash: hash32(get(r, "key_hash")?, "a key hash")?,
            })
        })
        .collect()
}

pub(super) async fn policy_records(
    c: &impl tokio_postgres::GenericClient,
) -> StoreResult<Vec<PolicySetRecord>> {
    let rows = c
        .query(
            "SELECT project_id, sources, created_at FROM policy_sets ORDER BY id",
            &[],
        )
        .await
        .map_err(|e| super::errors::store_error(e, std::time::Duration::from_secs(60)))?;
    rows.iter()
        .map(|r| {
            Ok(PolicySetRecord {
                project: get::<Option<i64>>(r, "project_id")?.map(ProjectId),
                sources: get(r, "sources")?,
                created_at: Micros(get(r, "created_at")?),
            })
        })
        .collect()
}

pub(super) async fn project_records(
    c: &impl tokio_postgres::GenericClient,
) -> StoreResult<Vec<ProjectRecord>> {
    let rows = c
        .query("SELECT id, name, created_at FROM projects ORDER BY id", &[])
        .await
        .map_err(|e| super::errors::store_error(e, std::time::Duration::from_secs(60)))?;
    rows.iter()
        .map(|r| {
            Ok(ProjectRecord {
                id: ProjectId(get(r, "id")?),
                name: get(r, "name")?,
                created_at: Micros(get(r, "created_at")?),
            })
        })
        .collect()
}

impl PostgresStore {
    pub(super) async fn import_meta_pg(&self, meta: &LedgerMeta) -> StoreResult<()> {
        let mut conn = self.conn().await?;
        let client: &mut Client = &mut conn;
        let tx = client.transaction().await.map_err(|e| self.err(e))?;
        // One import of metadata at a time, against every node's key creation.
        tx.execute(
            "LOCK TABLE projects, api_keys, policy_sets IN EXCLUSIVE MODE",
            &[],
        )
        .await
        .map_err(|e| self.err(e))?;
        let stored: HashMap<i64, ProjectRecord> = project_records(&tx)
            .await?
            .into_iter()
            .map(|p| (p.id.0, p))
            .collect();
        for p in &meta.projects {
            match stored.get(&p.id.0) {
                Some(s) if s == p => {}
                Some(s) => {
                    return Err(conflict(format!(
                        "project {:?} (id {}) is not the source's {:?}",
                        s.name, s.id.0, p.name
                    )));
                }
                None => {
                    if stored.values().any(|s| s.name == p.name) {
                        return Err(conflict(format!(
                            "project {:?} has another id in the target",
                            p.name
                        )));
                    }
                    tx.execute(
                        "INSERT INTO projects (id, name, created_at) VALUES ($1, $2, $3)",
                        &[&p.id.0, &p.name, &p.created_at.0],
                    )
                    .await
                    .map_err(|e| self.err(e))?;
                }
            }
        }
        // Projects created later by a node must not collide with copied ids.
        tx.execute(
            "SELECT setval(pg_get_serial_sequence('projects', 'id'), \
             greatest((SELECT max(id) FROM projects), 1))",
            &[],
        )
        .await
        .map_err(|e| self.err(e))?;
        let keys = key_records(&tx).await?;
        let by_id: HashMap<&str, &KeyRecord> =
            keys.iter().map(|k| (k.info.id.as_str(), k)).collect();
        for k in &meta.keys {
            match by_id.get(k.info.id.as_str()) {
                None => {
                    tx.execute(
                        "INSERT INTO api_keys (id, project_id, name, key_hash, prefix, admin, \
                         created_at, revoked_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                        &[
                            &k.info.id,
                            &k.info.project.id.0,
                            &k.info.name,
                            &&k.key_hash[..],
                            &k.info.prefix,
                            &k.info.admin,
                            &k.info.created_at.0,
                            &k.info.revoked_at.map(|t| t.0),
                        ],
                    )
                    .await
                    .map_err(|e| self.err(e))?;
                }
                Some(s) if **s == *k => {}
                Some(s) if same_key(s, k) => {
                    tx.execute(
                        "UPDATE api_keys SET revoked_at = $1 WHERE id = $2",
                        &[&k.info.revoked_at.map(|t| t.0), &k.info.id],
                    )
                    .await
                    .map_err(|e| self.err(e))?;
                }
                Some(_) => {
                    return Err(conflict(format!("key {:?} is not the source's", k.info.id)));
                }
            }
        }
        let history = policy_records(&tx).await?;
        if !meta.policy_sets.starts_with(&history) {
            return Err(conflict(
                "the policy-set history is not the start of the source's".into(),
            ));
        }
        for p in &meta.policy_sets[history.len()..] {
            tx.execute(
                "INSERT INTO policy_sets (project_id, sources, created_at) VALUES ($1, $2, $3)",
                &[&p.project.map(|p| p.0), &p.sources, &p.created_at.0],
            )
            .await
            .map_err(|e| self.err(e))?;
        }
        tx.commit().await.map_err(|e| self.err(e))
    }

    pub(super) async fn import_session_pg(
        &self,
        project: &ProjectRef,
        session: &Session,
        events: &[ImportedEvent],
    ) -> StoreResult<u64> {
        let mut conn = self.conn().await?;
        let client: &mut Client = &mut conn;
        let tx = client.transaction().await.map_err(|e| self.err(e))?;
        // The writer's lock on this session (see writer.rs), then the row.
        tx.execute(
            "SELECT pg_advisory_xact_lock($1)",
            &[&lock_key(b's', project.id.0, &session.id)],
        )
        .await
        .map_err(|e| self.err(e))?;
        let row = tx
            .query_opt(
                "SELECT ref, agent_id, system_prompt, metadata, created_at, ended, head_seq, \
                 head_hash, first_event_at, last_event_at, event_count, tool_call_count, \
                 error_count, llm_call_count, input_tokens, output_tokens, cost_usd, tags \
                 FROM sessions WHERE project_id = $1 AND id = $2 FOR UPDATE",
                &[&project.id.0, &session.id],
            )
            .await
            .map_err(|e| self.err(e))?;
        let (session_ref, mut head) = match row {
            None => {
                let r = tx
                    .query_one(
                        "INSERT INTO sessions (project_id, id, agent_id, system_prompt, metadata, \
                         created_at) VALUES ($1, $2, $3, $4, $5, $6) RETURNING ref",
                        &[
                            &project.id.0,
                            &session.id,
                            &session.agent_id,
                            &session.system_prompt,
                            &session.metadata.get(),
                            &session.created_at.0,
                        ],
                    )
                    .await
                    .map_err(|e| self.err(e))?;
                (get::<i64>(&r, "ref")?, SessionHead::default())
            }
            Some(r) => {
                let header = (
                    get::<String>(&r, "agent_id")?,
                    get::<Option<String>>(&r, "system_prompt")?,
                    get::<String>(&r, "metadata")?,
                    get::<i64>(&r, "created_at")?,
                );
                if header
                    != (
                        session.agent_id.clone(),
                        session.system_prompt.clone(),
                        session.metadata.get().to_owned(),
                        session.created_at.0,
                    )
                {
                    return Err(conflict(format!(
                        "session {:?} has another header in the target",
                        session.id
                    )));
                }
                let head = SessionHead {
                    seq: get::<i64>(&r, "head_seq")? as u64,
                    hash: get::<Option<Vec<u8>>>(&r, "head_hash")?
                        .map(|h| hash32(h, "a head hash"))
                        .transpose()?,
                    ended: get(&r, "ended")?,
                    first_at: get(&r, "first_event_at")?,
                    last_at: get(&r, "last_event_at")?,
                    counters: counters_from_row(&r)?,
                    tags: get(&r, "tags")?,
                };
                (get::<i64>(&r, "ref")?, head)
            }
        };
        let mut cols = Columns::default();
        for ie in events {
            let ev = &ie.event;
            if ev.session_id != session.id || ev.seq != head.seq + 1 || ev.prev_hash != head.hash {
                return Err(conflict(format!(
                    "session {:?}: event {} (seq {}) does not continue the stored head at seq {}",
                    session.id, ev.id, ev.seq, head.seq
                )));
            }
            cols.push(project.id.0, session_ref, ie);
            head.seq = ev.seq;
            head.hash = Some(ev.hash);
            head.advance(
                ev.kind,
                ev.severity,
                ev.time(),
                ev.payload.get(),
                &ie.columns.usage,
            );
        }
        if !events.is_empty() {
            let c = &cols;
            tx.execute(
                INSERT_EVENTS_SQL,
                &[
                    &c.ids,
                    &c.projects,
                    &c.refs,
                    &c.seqs,
                    &c.agents,
                    &c.kinds,
                    &c.source_types,
                    &c.dialects,
                    &c.severities,
                    &c.client_ts,
                    &c.server_ts,
                    &c.payloads,
                    &c.metadata,
                    &c.payload_sha256,
                    &c.prev_hashes,
                    &c.hashes,
                    &c.models,
                    &c.input_tokens,
                    &c.output_tokens,
                    &c.costs,
                    &c.envelopes,
                    &c.verdicts,
                    &c.decisions,
                    &c.orig_payload,
                    &c.orig_metadata,
                ],
            )
            .await
            .map_err(|e| match self.err(e) {
                StoreError::Storage(m) if m.contains("duplicate key") => {
                    conflict(format!("an event is already stored in another place: {m}"))
                }
                e => e,
            })?;
            tx.execute(
                "INSERT INTO redaction_salts (project_id, event_id, salt, created_at) \
                 SELECT $1, * FROM unnest($2::bytea[], $3::bytea[], $4::int8[])",
                &[&project.id.0, &c.salt_ids, &c.salts, &c.salt_times],
            )
            .await
            .map_err(|e| self.err(e))?;
            // Erased events keep their erasure (the column was written empty).
            for ie in events {
                let Some(x) = ie.event.erased.as_deref() else {
                    continue;
                };
                tx.execute(
                    "UPDATE events SET payload = '', erased_at = $3, erased_by = $4, \
                     erasure_seq = $5 WHERE project_id = $1 AND id = $2",
                    &[
                        &project.id.0,
                        &&ie.event.id.to_bytes()[..],
                        &x.at.0,
                        &x.by,
                        &(x.record_seq as i64),
                    ],
                )
                .await
                .map_err(|e| self.err(e))?;
            }
        }
        let k = &head.counters;
        tx.execute(
            "UPDATE sessions SET head_seq = $3, head_hash = $4, ended = $5, first_event_at = $6, \
             last_event_at = $7, event_count = $8, tool_call_count = $9, error_count = $10, \
             llm_call_count = $11, input_tokens = $12, output_tokens = $13, cost_usd = $14, \
             tags = $15 WHERE project_id = $1 AND ref = $2",
            &[
                &project.id.0,
                &session_ref,
                &(head.seq as i64),
                &head.hash.map(|h| h.to_vec()),
                &head.ended,
                &head.first_at,
                &head.last_at,
                &(k.events as i64),
                &(k.tool_calls as i64),
                &(k.errors as i64),
                &(k.llm_calls as i64),
                &k.input_tokens,
                &k.output_tokens,
                &k.cost_usd,
                &head.tags,
            ],
        )
        .await
        .map_err(|e| self.err(e))?;
        // The imported events' hourly rollups, in the same transaction.
        let mut rollups = crate::rollup::Rollups::default();
        for ie in events {
            rollups.add(
                project.id.0,
                &crate::rollup::EventFacts::stored(&ie.event, &ie.columns),
            );
        }
        super::rollups::write(&tx, &rollups, 0)
            .await
            .map_err(|e| self.err(e))?;
        tx.commit().await.map_err(|e| self.err(e))?;
        Ok(head.seq)
    }
}

/// The events' columns, as arrays for one `INSERT ... SELECT FROM unnest`.
#[derive(Default)]
struct Columns {
    ids: Vec<Vec<u8>>,
    projects: Vec<i64>,
    refs: Vec<i64>,
    seqs: Vec<i64>,
    agents: Vec<String>,
    kinds: Vec<i16>,
    source_types: Vec<String>,
    dialects: Vec<i16>,
    severities: Vec<i16>,
    client_ts: Vec<Option<i64>>,
    server_ts: Vec<i64>,
    payloads: Vec<String>,
    metadata: Vec<String>,
    payload_sha256: Vec<Vec<u8>>,
    prev_hashes: Vec<Option<Vec<u8>>>,
    hashes: Vec<Vec<u8>>,
    models: Vec<Option<String>>,
    input_tokens: Vec<Option<i64>>,
    output_tokens: Vec<Option<i64>>,
    costs: Vec<Option<f64>>,
    envelopes: Vec<i32>,
    verdicts: Vec<Option<String>>,
    decisions: Vec<Option<i16>>,
    orig_payload: Vec<Option<Vec<u8>>>,
    orig_metadata: Vec<Option<Vec<u8>>>,
    salt_ids: Vec<Vec<u8>>,
    salts: Vec<Vec<u8>>,
    salt_times: Vec<i64>,
}

impl Columns {
    fn push(&mut self, project: i64, session_ref: i64, ie: &ImportedEvent) {
        let ev = &ie.event;
        let u = &ie.columns.usage;
        self.ids.push(ev.id.to_bytes().to_vec());
        self.projects.push(project);
        self.refs.push(session_ref);
        self.seqs.push(ev.seq as i64);
        self.agents.push(ev.agent_id.clone());
        self.kinds.push(i16::from(ev.kind.code()));
        self.source_types.push(ev.source_type.clone());
        self.dialects.push(i16::from(ev.dialect.code()));
        self.severities.push(i16::from(ev.severity.code()));
        self.client_ts.push(ev.client_ts.map(|t| t.0));
        self.server_ts.push(ev.server_ts.0);
        self.payloads.push(match ev.erased {
            Some(_) => String::new(),
            None => ev.payload.get().to_owned(),
        });
        self.metadata.push(ev.metadata.get().to_owned());
        self.payload_sha256.push(ev.payload_sha256.to_vec());
        self.prev_hashes.push(ev.prev_hash.map(|h| h.to_vec()));
        self.hashes.push(ev.hash.to_vec());
        self.models.push(u.model.clone());
        self.input_tokens.push(u.input_tokens);
        self.output_tokens.push(u.output_tokens);
        self.costs.push(u.cost_usd);
        self.envelopes.push(ev.envelope_version as i32);
        self.verdicts
            .push(ev.verdict.as_ref().map(|v| v.get().to_owned()));
        self.decisions
            .push(ie.columns.decision.map(|d| i16::from(d.code())));
        self.orig_payload
            .push(ev.original_payload_sha256.map(|h| h.to_vec()));
        self.orig_metadata
            .push(ev.original_metadata_sha256.map(|h| h.to_vec()));
        if let Some(salt) = &ie.redaction_salt {
            self.salt_ids.push(ev.id.to_bytes().to_vec());
            self.salts.push(salt.to_vec());
            self.salt_times.push(ev.server_ts.0);
        }
    }
}
