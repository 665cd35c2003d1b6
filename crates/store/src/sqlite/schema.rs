//! Versioned schema migrations, applied at start inside one transaction each.
//! `PRAGMA user_version` records how many have been applied.

use rusqlite::Connection;

/// Migration 9's recount of the rollups from the events: dimension codes
/// as `RollupDim::code` (decision 1, kind 2, agent 3, tool 4, detector 5),
/// kind tool_call = 5; the tool as core's `payload::tool_name` finds it.
macro_rules! rollup_backfill {
    () => {
        r#"
    INSERT INTO rollups (project_id, dim, hour, key, events, input_tokens, output_tokens, cost_usd)
    SELECT project_id, dim, hour, key, count(*), sum(i), sum(o), sum(c) FROM (
        SELECT project_id, 2 AS dim, ts - ((ts % 3600000000) + 3600000000) % 3600000000 AS hour,
               CAST(kind AS TEXT) AS key, coalesce(input_tokens, 0) AS i,
               coalesce(output_tokens, 0) AS o, coalesce(cost_usd, 0.0) AS c
        FROM events
        UNION ALL
        SELECT project_id, 3, ts - ((ts % 3600000000) + 3600000000) % 3600000000, agent_id,
               coalesce(input_tokens, 0), coalesce(output_tokens, 0), coalesce(cost_usd, 0.0)
        FROM events
        UNION ALL
        SELECT project_id, 1, ts - ((ts % 3600000000) + 3600000000) % 3600000000,
               CAST(decision AS TEXT),
               coalesce(input_tokens, 0), coalesce(output_tokens, 0), coalesce(cost_usd, 0.0)
        FROM events WHERE decision IS NOT NULL
        UNION ALL
        SELECT project_id, 4, hour, tool, i, o, c FROM (
            SELECT project_id, ts - ((ts % 3600000000) + 3600000000) % 3600000000 AS hour,
                   coalesce(
                     CASE WHEN json_type(payload, '$.toolName') = 'text' THEN json_extract(payload, '$.toolName') END,
                     CASE WHEN json_type(payload, '$.tool_name') = 'text' THEN json_extract(payload, '$.tool_name') END,
                     CASE WHEN json_type(payload, '$.tool') = 'text' THEN json_extract(payload, '$.tool') END,
                     CASE WHEN json_type(payload, '$.tool.name') = 'text' THEN json_extract(payload, '$.tool.name') END,
                     CASE WHEN json_type(payload, '$.name') = 'text' THEN json_extract(payload, '$.name') END
                   ) AS tool,
                   coalesce(input_tokens, 0) AS i, coalesce(output_tokens, 0) AS o,
                   coalesce(cost_usd, 0.0) AS c
            FROM events WHERE kind = 5
        ) WHERE tool IS NOT NULL
        UNION ALL
        SELECT e.project_id, 5, e.ts - ((e.ts % 3600000000) + 3600000000) % 3600000000,
               json_extract(f.value, '$.detector'), 0, 0, 0.0
        FROM events e, json_each(e.verdict, '$.findings') f
        WHERE e.verdict IS NOT NULL AND json_type(f.value, '$.detector') = 'text'
    ) GROUP BY project_id, dim, hour, key;
    "#
    };
}

/// Each entry is one migration; never edit a released one, append a new one.
const MIGRATIONS: &[&str] = &[
    // 1: projects, keys, sessions, events, full-text index.
    r#"
    CREATE TABLE projects (
        id          INTEGER PRIMARY KEY,
        name        TEXT NOT NULL UNIQUE,
        created_at  INTEGER NOT NULL
    );
    CREATE TABLE api_keys (
        id          TEXT PRIMARY KEY,
        project_id  INTEGER NOT NULL REFERENCES projects(id),
        name        TEXT NOT NULL,
        key_hash    BLOB NOT NULL UNIQUE,
        prefix      TEXT NOT NULL,
        admin       INTEGER NOT NULL,
        created_at  INTEGER NOT NULL,
        revoked_at  INTEGER
    );
    CREATE TABLE sessions (
        id              TEXT NOT NULL,
        project_id      INTEGER NOT NULL REFERENCES projects(id),
        agent_id        TEXT NOT NULL,
        system_prompt   TEXT,
        metadata        TEXT NOT NULL,
        created_at      INTEGER NOT NULL,
        status          INTEGER NOT NULL,
        head_seq        INTEGER NOT NULL,
        head_hash       BLOB,
        first_event_at  INTEGER,
        last_event_at   INTEGER
    );
    CREATE UNIQUE INDEX sessions_project_id ON sessions(project_id, id);
    CREATE INDEX sessions_project_created ON sessions(project_id, created_at);
    CREATE TABLE events (
        id              BLOB NOT NULL,
        project_id      INTEGER NOT NULL,
        session_ref     INTEGER NOT NULL,
        seq             INTEGER NOT NULL,
        agent_id        TEXT NOT NULL,
        kind            INTEGER NOT NULL,
        source_type     TEXT NOT NULL,
        dialect         INTEGER NOT NULL,
        severity        INTEGER NOT NULL,
        client_ts       INTEGER,
        server_ts       INTEGER NOT NULL,
        ts              INTEGER GENERATED ALWAYS AS (coalesce(client_ts, server_ts)) VIRTUAL,
        payload         TEXT NOT NULL,
        metadata        TEXT NOT NULL,
        payload_sha256  BLOB NOT NULL,
        prev_hash       BLOB,
        hash            BLOB NOT NULL
    );
    CREATE UNIQUE INDEX events_id ON events(id);
    CREATE UNIQUE INDEX events_session_seq ON events(session_ref, seq);
    CREATE INDEX events_project_ts ON events(project_id, ts);
    CREATE INDEX events_project_kind_ts ON events(project_id, kind, ts);
    CREATE INDEX events_project_agent_ts ON events(project_id, agent_id, ts);
    CREATE VIRTUAL TABLE events_fts USING fts5(
        payload, content='events', content_rowid='rowid', tokenize='unicode61'
    );
    "#,
    // 2: model usage read out of payloads, for filtering and sums.
    r#"
    ALTER TABLE events ADD COLUMN model TEXT;
    ALTER TABLE events ADD COLUMN input_tokens INTEGER;
    ALTER TABLE events ADD COLUMN output_tokens INTEGER;
    ALTER TABLE events ADD COLUMN cost_usd REAL;
    CREATE INDEX events_project_model_ts ON events(project_id, model, ts) WHERE model IS NOT NULL;
    "#,
    // 3: policy verdicts (hash envelope v2) and saved policy sets.
    r#"
    ALTER TABLE events ADD COLUMN envelope_version INTEGER NOT NULL DEFAULT 1;
    ALTER TABLE events ADD COLUMN verdict TEXT;
    ALTER TABLE events ADD COLUMN decision INTEGER;
    ALTER TABLE events ADD COLUMN original_payload_sha256 BLOB;
    ALTER TABLE events ADD COLUMN original_metadata_sha256 BLOB;
    CREATE INDEX events_project_decision_ts ON events(project_id, decision, ts) WHERE decision > 0;
    CREATE TABLE policy_sets (
        id          INTEGER PRIMARY KEY,
        sources     TEXT NOT NULL,
        created_at  INTEGER NOT NULL
    );
    "#,
    // 4: the full-text index moves to its own file, maintained off the
    // acknowledgement path (search.rs); it is rebuilt there from the events.
    r#"
    DROP TABLE events_fts;
    "#,
    // 5: policy sets belong to a project. Rows saved before this (one set for
    // the whole server, NULL here) are read as the operator's default.
    r#"
    ALTER TABLE policy_sets ADD COLUMN project_id INTEGER REFERENCES projects(id);
    CREATE INDEX policy_sets_project ON policy_sets(project_id, id);
    "#,
    // 6: salts of redaction commitments (envelope v3), kept apart from the
    // events so they can be destroyed without touching the chain.
    r#"
    CREATE TABLE redaction_salts (
        event_id    BLOB PRIMARY KEY,
        salt        BLOB NOT NULL,
        created_at  INTEGER NOT NULL
    ) WITHOUT ROWID;
    "#,
    // 7: session counters (AgentLens's session summary), kept by the writer
    // in the append's own transaction so reading a session never counts its
    // events; tags from its first `session_started` that carries a `tags`
    // array; an index for per-agent listings. Existing sessions are
    // backfilled from their events. Kind codes: session_started 0, llm_call
    // 3, tool_call 5, tool_error 7, error 12; severity error 3, critical 4
    // (pinned by `migration_7_codes_match_the_enums`).
    r#"
    ALTER TABLE sessions ADD COLUMN event_count INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE sessions ADD COLUMN tool_call_count INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE sessions ADD COLUMN error_count INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE sessions ADD COLUMN llm_call_count INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE sessions ADD COLUMN input_tokens INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE sessions ADD COLUMN output_tokens INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE sessions ADD COLUMN cost_usd REAL NOT NULL DEFAULT 0.0;
    ALTER TABLE sessions ADD COLUMN tags TEXT;
    UPDATE sessions SET
        (event_count, tool_call_count, error_count, llm_call_count,
         input_tokens, output_tokens, cost_usd) = (
        SELECT count(*),
               coalesce(sum(e.kind = 5), 0),
               coalesce(sum(e.kind IN (7, 12) OR e.severity >= 3), 0),
               coalesce(sum(e.kind = 3), 0),
               coalesce(sum(e.input_tokens), 0),
               coalesce(sum(e.output_tokens), 0),
               coalesce(sum(e.cost_usd), 0.0)
        FROM events e WHERE e.session_ref = sessions.rowid),
        tags = (
        SELECT json_extract(e.payload, '$.tags') FROM events e
        WHERE e.session_ref = sessions.rowid AND e.kind = 0
          AND json_valid(e.payload) AND json_type(e.payload, '$.tags') = 'array'
        ORDER BY e.seq LIMIT 1);
    CREATE INDEX sessions_project_agent ON sessions(project_id, agent_id, created_at);
    "#,
    // 8: replies kept under clients' idempotency keys, written in the
    // append's own transaction; expired ones are deleted by the writer.
    r#"
    CREATE TABLE idempotency_keys (
        project_id    INTEGER NOT NULL,
        key           TEXT NOT NULL,
        fingerprint   BLOB NOT NULL,
        status        INTEGER NOT NULL,
        content_type  TEXT NOT NULL,
        body          BLOB NOT NULL,
        created_at    INTEGER NOT NULL,
        PRIMARY KEY (project_id, key)
    ) WITHOUT ROWID;
    CREATE INDEX idempotency_keys_created ON idempotency_keys(created_at);
    "#,
    // 9: hourly rollups (store/src/rollup.rs), kept by the writer in the
    // append's own transaction; built here from the events of an older
    // ledger.
    concat!(
        r#"
    CREATE TABLE rollups (
        project_id    INTEGER NOT NULL,
        dim           INTEGER NOT NULL,
        hour          INTEGER NOT NULL,
        key           TEXT NOT NULL,
        events        INTEGER NOT NULL,
        input_tokens  INTEGER NOT NULL,
        output_tokens INTEGER NOT NULL,
        cost_usd      REAL NOT NULL,
        PRIMARY KEY (project_id, dim, hour, key)
    ) WITHOUT ROWID;
    "#,
        rollup_backfill!()
    ),
    // 10: alerting (store/src/alerts.rs): rules and destinations per
    // project, and the outbox the writer fills in the append's transaction.
    r#"
    CREATE TABLE alert_destinations (
        id          TEXT PRIMARY KEY,
        project_id  INTEGER NOT NULL REFERENCES projects(id),
        name        TEXT NOT NULL,
        kind        TEXT NOT NULL,
        url         TEXT NOT NULL,
        secret      TEXT,
        created_at  INTEGER NOT NULL
    );
    CREATE INDEX alert_destinations_project ON alert_destinations(project_id);
    CREATE TABLE alert_rules (
        id           TEXT PRIMARY KEY,
        project_id   INTEGER NOT NULL REFERENCES projects(id),
        name         TEXT NOT NULL,
        condition    TEXT NOT NULL,
        destinations TEXT NOT NULL,
        created_at   INTEGER NOT NULL
    );
    CREATE INDEX alert_rules_project ON alert_rules(project_id);
    CREATE TABLE alerts (
        id            TEXT PRIMARY KEY,
        project_id    INTEGER NOT NULL,
        rule_id       TEXT NOT NULL,
        rule_name     TEXT NOT NULL,
        condition     TEXT NOT NULL,
        session_id    TEXT NOT NULL,
        event_id      TEXT,
        subject       TEXT NOT NULL,
        value         REAL NOT NULL,
        threshold     REAL NOT NULL,
        message       TEXT NOT NULL,
        status        TEXT NOT NULL,
        created_at    INTEGER NOT NULL,
        resolved_at   INTEGER,
        triggered_seq INTEGER,
        resolved_seq  INTEGER
    );
    CREATE INDEX alerts_project ON alerts(project_id, created_at);
    CREATE UNIQUE INDEX alerts_open_threshold ON alerts(rule_id, subject)
        WHERE status = 'open' AND event_id IS NULL;
    CREATE INDEX alerts_unrecorded ON alerts(created_at)
        WHERE triggered_seq IS NULL OR (status = 'resolved' AND resolved_seq IS NULL);
    CREATE TABLE alert_deliveries (
        id              TEXT PRIMARY KEY,
        project_id      INTEGER NOT NULL,
        alert_id        TEXT NOT NULL,
        destination_id  TEXT NOT NULL,
        transition      TEXT NOT NULL,
        status          TEXT NOT NULL,
        attempts        INTEGER NOT NULL,
        next_attempt_at INTEGER NOT NULL,
        last_error      TEXT,
        last_status     INTEGER,
        created_at      INTEGER NOT NULL,
        delivered_at    INTEGER
    );
    CREATE INDEX alert_deliveries_due ON alert_deliveries(next_attempt_at)
        WHERE status = 'pending';
    CREATE INDEX alert_deliveries_project ON alert_deliveries(project_id, created_at);
    CREATE INDEX alert_deliveries_alert ON alert_deliveries(alert_id);
    "#,
    // 11: the transparency log (issue 17, store/src/log.rs, sqlite/tlog.rs):
    // per project, the integration cursor (rowid of the last integrated
    // event) with the tree's size and root, the tiles (each at its widest),
    // every leaf's entry by index and event, and the signed checkpoints (one
    // per size). Written only by the writer thread. events(project_id) holds
    // the rowid too: a pass seeks the project's events after its cursor.
    r#"
    CREATE INDEX events_project_rowid ON events(project_id);
    CREATE TABLE tlog_state (
        project_id  INTEGER PRIMARY KEY,
        size        INTEGER NOT NULL,
        root        BLOB NOT NULL,
        cursor      INTEGER NOT NULL
    );
    CREATE TABLE tlog_tiles (
        project_id  INTEGER NOT NULL,
        level       INTEGER NOT NULL,
        idx         INTEGER NOT NULL,
        width       INTEGER NOT NULL,
        data        BLOB NOT NULL,
        PRIMARY KEY (project_id, level, idx)
    ) WITHOUT ROWID;
    CREATE TABLE tlog_leaves (
        project_id  INTEGER NOT NULL,
        idx         INTEGER NOT NULL,
        event_id    BLOB NOT NULL,
        entry       BLOB NOT NULL,
        PRIMARY KEY (project_id, idx)
    ) WITHOUT ROWID;
    CREATE UNIQUE INDEX tlog_leaves_event ON tlog_leaves(project_id, event_id);
    CREATE TABLE tlog_checkpoints (
        project_id  INTEGER NOT NULL,
        size        INTEGER NOT NULL,
        root        BLOB NOT NULL,
        note        BLOB NOT NULL,
        created_at  INTEGER NOT NULL,
        PRIMARY KEY (project_id, size)
    ) WITHOUT ROWID;
    "#,
    // 12: witnesses' cosignatures of the log's checkpoints (issue 17,
    // `serve --witness-policy`): each line as the witness answered it, by
    // checkpoint size and witness key (name, key ID).
    r#"
    CREATE TABLE tlog_cosignatures (
        project_id  INTEGER NOT NULL,
        size        INTEGER NOT NULL,
        witness     TEXT NOT NULL,
        key_id      INTEGER NOT NULL,
        line        TEXT NOT NULL,
        created_at  INTEGER NOT NULL,
        PRIMARY KEY (project_id, size, witness, key_id)
    ) WITHOUT ROWID;
    "#,
    // 13: erasure that keeps the proof (core/src/erasure.rs): an erased
    // row's payload column is emptied ('' : the column is NOT NULL) and
    // these say who erased it, when, and the seq of the `event_erased`
    // record appended to its session in the same transaction.
    r#"
    ALTER TABLE events ADD COLUMN erased_at INTEGER;
    ALTER TABLE events ADD COLUMN erased_by TEXT;
    ALTER TABLE events ADD COLUMN erasure_seq INTEGER;
    "#,
];

/// Migration 9's recount, for tests that rebuild the rollups and compare.
#[cfg(test)]
pub const ROLLUP_BACKFILL: &str = rollup_backfill!();

pub const SCHEMA_VERSION: usize = MIGRATIONS.len();

/// Bring the database up to the current schema. Refuses a database written by a
/// newer version rather than guessing.
pub fn migrate(conn: &mut Connection) -> rusqlite::Result<usize> {
    let current: usize =
        conn.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0))? as usize;
    if current > MIGRATIONS.len() {
        return Err(rusqlite::Error::InvalidParameterName(format!(
            "database schema version {current} is newer than this binary supports ({})",
            MIGRATIONS.len()
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current) {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
    }
    Ok(MIGRATIONS.len() - current)
}

#[cfg(test)]
mod tests {
    use agentledger_core::{Kind, Severity};

    /// Migration 7's backfill names kinds and severities by their stored codes.
    #[test]
    fn migration_7_codes_match_the_enums() {
        assert_eq!(Kind::SessionStarted.code(), 0);
        assert_eq!(Kind::LlmCall.code(), 3);
        assert_eq!(Kind::ToolCall.code(), 5);
        assert_eq!(Kind::ToolError.code(), 7);
        assert_eq!(Kind::Error.code(), 12);
        assert_eq!(Severity::Error.code(), 3);
        assert_eq!(Severity::Critical.code(), 4);
    }

    /// The counters the writer keeps as events are appended are exactly what
    /// migration 7's backfill computes from the events of a database written
    /// before it; appends after the backfill continue from there.
    #[tokio::test]
    async fn migration_7_backfills_what_the_writer_keeps() {
        use crate::conformance::{event, project};
        use crate::sqlite::{SqliteOptions, SqliteStore};
        use crate::{EventStore, SessionListing};

        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("ledger.db");
        let store = SqliteStore::open(SqliteOptions::new(&path)).unwrap();
        let p = project(&store, "p").await;
        let mut failed = event("s1", Kind::Custom, r#"{"type":"x","data":1}"#);
        failed.severity = Severity::Critical;
        let batch = vec![
            event("s1", Kind::SessionStarted, r#"{"tags":["prod",1,"eu"]}"#),
            event("s1", Kind::SessionStarted, r#"{"tags":["later"]}"#),
            event("s1", Kind::LlmCall, r#"{"model":"m"}"#),
            event(
                "s1",
                Kind::LlmResponse,
                r#"{"model":"m","usage":{"inputTokens":12,"outputTokens":5},"costUsd":0.5}"#,
            ),
            event("s2", Kind::Memory, "{}"),
        ];
        store.append(&p, batch).await.unwrap();
        store
            .append(
                &p,
                vec![
                    event(
                        "s1",
                        Kind::ToolCall,
                        r#"{"toolName":"t","callId":"c","arguments":{}}"#,
                    ),
                    event("s1", Kind::ToolError, "{}"),
                    failed,
                    event("s1", Kind::SessionEnded, r#"{"reason":"done"}"#),
                ],
            )
            .await
            .unwrap();
        let kept = store.get_session(&p, "s1").await.unwrap().unwrap();
        let c = kept.counters;
        assert_eq!(
            (c.events, c.llm_calls, c.tool_calls, c.errors),
            (8, 1, 1, 2)
        );
        assert_eq!((c.input_tokens, c.output_tokens, c.cost_usd), (12, 5, 0.5));
        assert_eq!(kept.tags, ["prod", "eu"]);
        store.close().await;
        drop(store);

        // The same database as a binary before migration 7 would leave it.
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(
            "DROP TABLE alert_deliveries;
             DROP TABLE alerts;
             DROP TABLE alert_rules;
             DROP TABLE alert_destinations;
             ALTER TABLE events DROP COLUMN erased_at;
             ALTER TABLE events DROP COLUMN erased_by;
             ALTER TABLE events DROP COLUMN erasure_seq;
             DROP INDEX events_project_rowid;
             DROP TABLE tlog_state;
             DROP TABLE tlog_tiles;
             DROP TABLE tlog_leaves;
             DROP TABLE tlog_checkpoints;
             DROP TABLE tlog_cosignatures;
             DROP TABLE rollups;
             DROP TABLE idempotency_keys;
             DROP INDEX sessions_project_agent;
             ALTER TABLE sessions DROP COLUMN event_count;
             ALTER TABLE sessions DROP COLUMN tool_call_count;
             ALTER TABLE sessions DROP COLUMN error_count;
             ALTER TABLE sessions DROP COLUMN llm_call_count;
             ALTER TABLE sessions DROP COLUMN input_tokens;
             ALTER TABLE sessions DROP COLUMN output_tokens;
             ALTER TABLE sessions DROP COLUMN cost_usd;
             ALTER TABLE sessions DROP COLUMN tags;
             PRAGMA user_version = 6;",
        )
        .unwrap();
        drop(conn);

        let store = SqliteStore::open(SqliteOptions::new(&path)).unwrap();
        let back = store.get_session(&p, "s1").await.unwrap().unwrap();
        assert_eq!(back.counters, kept.counters);
        assert_eq!(back.tags, kept.tags);
        let s2 = store.get_session(&p, "s2").await.unwrap().unwrap();
        assert_eq!((s2.counters.events, s2.tags.len()), (1, 0));
        store
            .append(&p, vec![event("s1", Kind::LlmCall, "{}")])
            .await
            .unwrap();
        let after = store.get_session(&p, "s1").await.unwrap().unwrap();
        assert_eq!((after.counters.events, after.counters.llm_calls), (9, 2));

        // Tag filter and agents over the migrated rows.
        let tagged = store
            .list_sessions_at(
                &p,
                SessionListing {
                    query: crate::SessionQuery {
                        limit: 10,
                        ..Default::default()
                    },
                    offset: 0,
                    any_tags: vec!["eu".into()],
                },
            )
            .await
            .unwrap();
        assert_eq!(tagged.total, 1);
        assert_eq!(tagged.sessions[0].id, "s1");
        let agents = store.list_agents(&p, None, 10, 0).await.unwrap();
        assert_eq!(agents.total, 1);
        assert_eq!(agents.agents[0].id, "agent-1");
        assert_eq!(agents.agents[0].session_count, 2);
        store.close().await;
    }
}
