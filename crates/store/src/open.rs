//! The one place a `--db` value becomes a store: `sqlite:PATH` or a bare
//! path (the embedded backend), or a `postgres://` / `postgresql://` URL.
//! Nothing above this crate names a backend; the server parses `--db` into a
//! [`Backend`], sets the knobs it has (the shared ones through the setters
//! here, a backend's own by matching on it), and opens it.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::postgres::{PostgresOptions, PostgresStore};
use crate::sqlite::{SqliteOptions, SqliteStore};
use crate::{EventStore, StoreError, StoreResult, WriterObserver};

/// A backend chosen by `--db`, with its options.
#[derive(Clone)]
pub enum Backend {
    Sqlite(SqliteOptions),
    Postgres(PostgresOptions),
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Backend::Sqlite(o) => write!(f, "Sqlite({})", o.path.display()),
            Backend::Postgres(o) => {
                write!(f, "Postgres({})", crate::postgres::redacted(&o.url))
            }
        }
    }
}

impl Backend {
    /// Read a `--db` value, with each backend's default options.
    pub fn parse(db: &str) -> StoreResult<Backend> {
        let refuse = |why: &str| {
            StoreError::Storage(format!(
                "--db {:?} {why}: expected sqlite:PATH, a file path, or a postgres:// URL",
                crate::postgres::redacted(db)
            ))
        };
        if db.trim().is_empty() {
            return Err(refuse("is empty"));
        }
        if db.starts_with("postgres://") || db.starts_with("postgresql://") {
            return Ok(Backend::Postgres(PostgresOptions::new(db)));
        }
        if let Some(rest) = db.strip_prefix("sqlite:") {
            // sqlite:PATH, also written sqlite://PATH.
            let path = rest.strip_prefix("//").unwrap_or(rest);
            if path.is_empty() {
                return Err(refuse("names no file"));
            }
            return Ok(Backend::Sqlite(SqliteOptions::new(PathBuf::from(path))));
        }
        if let Some((scheme, _)) = db.split_once("://")
            && !scheme.is_empty()
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        {
            return Err(refuse(&format!(
                "is a {scheme}:// URL, which agentledger cannot store in"
            )));
        }
        Ok(Backend::Sqlite(SqliteOptions::new(PathBuf::from(db))))
    }

    pub fn name(&self) -> &'static str {
        match self {
            Backend::Sqlite(_) => "sqlite",
            Backend::Postgres(_) => "postgres",
        }
    }

    pub fn observer(mut self, observer: Arc<dyn WriterObserver>) -> Self {
        match &mut self {
            Backend::Sqlite(o) => o.observer = Some(observer),
            Backend::Postgres(o) => o.observer = Some(observer),
        }
        self
    }

    /// Longest a listing, count or search may run before it is stopped.
    pub fn query_budget(mut self, budget: Duration) -> Self {
        match &mut self {
            Backend::Sqlite(o) => o.query_budget = budget,
            Backend::Postgres(o) => o.query_budget = budget,
        }
        self
    }

    /// Longest a read waits for a free connection before it is refused as busy.
    pub fn read_wait(mut self, wait: Duration) -> Self {
        match &mut self {
            Backend::Sqlite(o) => o.read_wait = wait,
            Backend::Postgres(o) => o.read_wait = wait,
        }
        self
    }

    /// Events and requests that may wait for the writer before appends are refused.
    pub fn max_pending(mut self, events: usize, requests: usize) -> Self {
        match &mut self {
            Backend::Sqlite(o) => {
                (o.max_pending_events, o.max_pending_requests) = (events, requests)
            }
            Backend::Postgres(o) => {
                (o.max_pending_events, o.max_pending_requests) = (events, requests)
            }
        }
        self
    }

    /// How long a reply stays kept under its idempotency key.
    pub fn idempotency_ttl(mut self, ttl: Duration) -> Self {
        match &mut self {
            Backend::Sqlite(o) => o.idempotency_ttl = ttl,
            Backend::Postgres(o) => o.idempotency_ttl = ttl,
        }
        self
    }

    /// Open (creating and migrating as needed) and start the writer.
    pub async fn open(self) -> StoreResult<Arc<dyn EventStore>> {
        Ok(match self {
            Backend::Sqlite(o) => {
                let store = tokio::task::spawn_blocking(move || SqliteStore::open(o))
                    .await
                    .map_err(|e| StoreError::Storage(format!("opening SQLite: {e}")))??;
                Arc::new(store)
            }
            Backend::Postgres(o) => Arc::new(PostgresStore::open(o).await?),
        })
    }
}

/// Open the store a `--db` value names, with each backend's default options.
pub async fn open(db: &str) -> StoreResult<Arc<dyn EventStore>> {
    Backend::parse(db)?.open().await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sqlite_path(db: &str) -> PathBuf {
        match Backend::parse(db) {
            Ok(Backend::Sqlite(o)) => o.path,
            other => panic!("{db}: {other:?}"),
        }
    }

    #[test]
    fn paths_and_sqlite_urls_are_sqlite() {
        assert_eq!(
            sqlite_path("./agentledger.db"),
            PathBuf::from("./agentledger.db")
        );
        assert_eq!(
            sqlite_path("/var/lib/al.db"),
            PathBuf::from("/var/lib/al.db")
        );
        assert_eq!(
            sqlite_path("sqlite:data/al.db"),
            PathBuf::from("data/al.db")
        );
        assert_eq!(
            sqlite_path("sqlite:///abs/al.db"),
            PathBuf::from("/abs/al.db")
        );
        assert_eq!(sqlite_path("weird:name.db"), PathBuf::from("weird:name.db"));
    }

    #[test]
    fn postgres_urls_are_postgres() {
        for url in [
            "postgres://postgres@127.0.0.1:5432/ledger",
            "postgresql://u:secret@h1:5432,h2:5433/ledger?target_session_attrs=read-write",
        ] {
            match Backend::parse(url) {
                Ok(Backend::Postgres(o)) => assert_eq!(o.url, url),
                other => panic!("{url}: {other:?}"),
            }
        }
        let shown = format!("{:?}", Backend::parse("postgres://u:secret@h/db").unwrap());
        assert!(!shown.contains("secret"), "{shown}");
    }

    #[test]
    fn anything_else_is_refused_by_name() {
        for (db, names) in [
            ("mysql://root:pw@localhost/x", "mysql"),
            ("", "empty"),
            ("sqlite:", "names no file"),
            ("http://example.com/db", "http"),
        ] {
            let err = Backend::parse(db).expect_err("refused").to_string();
            assert!(err.contains(names), "{db}: {err}");
            assert!(!err.contains("pw@"), "{err}");
        }
    }

    #[test]
    fn shared_knobs_reach_either_backend() {
        let b = Backend::parse("postgres://h/db")
            .unwrap()
            .query_budget(Duration::from_millis(700))
            .max_pending(5, 6)
            .idempotency_ttl(Duration::from_secs(9))
            .read_wait(Duration::from_millis(3));
        match b {
            Backend::Postgres(o) => {
                assert_eq!(o.query_budget, Duration::from_millis(700));
                assert_eq!((o.max_pending_events, o.max_pending_requests), (5, 6));
                assert_eq!(o.idempotency_ttl, Duration::from_secs(9));
                assert_eq!(o.read_wait, Duration::from_millis(3));
            }
            other => panic!("{other:?}"),
        }
        match Backend::parse("x.db")
            .unwrap()
            .query_budget(Duration::from_secs(1))
        {
            Backend::Sqlite(o) => assert_eq!(o.query_budget, Duration::from_secs(1)),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn opens_the_store_it_names() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("ledger.db");
        let store = open(&format!("sqlite:{}", path.display())).await.unwrap();
        let p = crate::conformance::project(store.as_ref(), "p").await;
        assert_eq!(store.list_projects().await.unwrap(), vec![p]);
        store.close().await;
        assert!(path.exists());
        let err = open("mysql://x/y").await.err().expect("refused");
        assert!(err.to_string().contains("mysql"), "{err}");
    }
}
