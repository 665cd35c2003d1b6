//! Versioned schema migrations, applied at start inside one transaction each.
//! `PRAGMA user_version` records how many have been applied.

use rusqlite::Connection;

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
];

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
