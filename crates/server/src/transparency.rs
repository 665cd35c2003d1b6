//! The transparency log's server side (issue 17, docs/transparency.md "The agentledger log"):
//! the signing key, each project's origin, and the two background tasks.
//!
//! - The **integrator** adds committed events to each project's tree (`EventStore::
//!   log_integrate`), every `integrate_interval`. It runs beside ingest, never on its path: an
//!   acknowledgement never waits for it, and the store makes each pass crash-safe.
//! - The **publisher** signs a checkpoint of each project's tree when it grew, every
//!   `checkpoint_interval`. Before it signs, it recomputes the root from the stored tiles and
//!   checks the tree is consistent with the last checkpoint it published (RFC 6962 proof,
//!   verified with the RFC 9162 algorithm); it never signs a second root for a size (the store
//!   keeps one checkpoint per size, and the publisher refuses when the stored one differs).
//!
//! The key lives in a file outside the database, created at first start with mode 0600; a
//! key file that others can read is refused. The key is never logged.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use agentledger_core::Micros;
use agentledger_store::log::{self, LogCheckpoint, MAX_INTEGRATE};
use agentledger_store::{EventStore, ProjectRef, StoreError};
use agentledger_tlog::note::{Ed25519Signer, Ed25519Verifier, sign};
use agentledger_tlog::{Checkpoint, verify_consistency};

use crate::metrics::Metrics;

/// The name a key file is written under: each log signs with a key of its own, derived from
/// the file's seed for the log's origin (see [`LogKey::signer`]).
pub const KEY_FILE_NAME: &str = "agentledger-log-root";
/// The name of key files written before per-log keys: that key signs every log itself, renamed
/// to each origin. Still honoured (re-keying a log would strand every verifier that pinned its
/// key), with a warning at start, as is a key file of any name but [`KEY_FILE_NAME`] (one an
/// operator made themselves, before per-log keys, signed every log too).
pub const SHARED_KEY_FILE_NAME: &str = "agentledger-log";
/// HKDF's `info` before the origin, in a log key's derivation ([`Ed25519Signer::derive`]).
pub const LOG_KEY_CONTEXT: &str = "agentledger log key v1\n";
/// `serve`'s default seconds between signed checkpoints (`--checkpoint-interval`).
pub const CHECKPOINT_EVERY_SECS: f64 = 5.0;
/// `serve`'s default seconds between integration passes (`--integrate-interval`).
pub const INTEGRATE_EVERY_SECS: f64 = 0.25;

/// The log's settings (`--log-key`, `--log-origin`, `--checkpoint-interval`).
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// The signing key's file (created at first start).
    pub key: PathBuf,
    /// The origin prefix; each project's log is `<prefix>/<project>`.
    pub origin: String,
    /// How often a grown tree gets a new signed checkpoint.
    pub checkpoint_interval: Duration,
    /// How often committed events are integrated.
    pub integrate_interval: Duration,
    /// `--witness-policy`: the C2SP tlog-policy file naming the witnesses each checkpoint is
    /// sent to and the quorum a served checkpoint meets (docs/transparency.md "Witnesses").
    pub witness_policy: Option<PathBuf>,
    /// How long one exchange with a witness may take.
    pub witness_timeout: Duration,
}

/// Why the key file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error(
        "log key file {path} is readable or writable by others (mode {mode:o}); \
         it holds the log's signing key: chmod 600 it"
    )]
    Permissions { path: String, mode: u32 },
    #[error("log key file {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("log key file {path} does not hold a signer key (PRIVATE+KEY+...): {reason}")]
    Malformed { path: String, reason: String },
    #[error("no log key file at {0}: the server creates it at its first start")]
    Missing(String),
}

/// The log's Ed25519 key.
pub struct LogKey {
    signer: Ed25519Signer,
    /// An older key file ([`SHARED_KEY_FILE_NAME`]): every log signs with this key.
    shared: bool,
}

impl std::fmt::Debug for LogKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LogKey(..)")
    }
}

impl LogKey {
    /// Reads the key file, or creates it (mode 0600, a fresh key from the OS) if there is none.
    pub fn load_or_create(path: &Path) -> Result<LogKey, KeyFileError> {
        match LogKey::load(path) {
            Err(KeyFileError::Missing(_)) => LogKey::create(path),
            other => other,
        }
    }

    /// Reads an existing key file, refusing one that others may read or write.
    pub fn load(path: &Path) -> Result<LogKey, KeyFileError> {
        let shown = path.display().to_string();
        let text = match crate::keyfile::read_private(path) {
            Ok(Some(text)) => text,
            Ok(None) => return Err(KeyFileError::Missing(shown)),
            Err(crate::keyfile::ReadError::Permissions(mode)) => {
                return Err(KeyFileError::Permissions { path: shown, mode });
            }
            Err(crate::keyfile::ReadError::Io(source)) => {
                return Err(KeyFileError::Io {
                    path: shown,
                    source,
                });
            }
        };
        let signer =
            Ed25519Signer::parse(text.trim_end()).map_err(|e| KeyFileError::Malformed {
                path: shown,
                reason: e.to_string(),
            })?;
        // Only a file this server wrote for per-log keys derives them.
        let shared = signer.name() != KEY_FILE_NAME;
        Ok(LogKey { signer, shared })
    }

    fn create(path: &Path) -> Result<LogKey, KeyFileError> {
        let shown = path.display().to_string();
        let io = |source| KeyFileError::Io {
            path: shown.clone(),
            source,
        };
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| io(std::io::Error::other(e.to_string())))?;
        let signer =
            Ed25519Signer::from_seed(KEY_FILE_NAME, seed).map_err(|e| KeyFileError::Malformed {
                path: shown.clone(),
                reason: e.to_string(),
            })?;
        // A server starting at the same moment on the same database uses the
        // key the other one made.
        let contents = format!("{}\n", signer.to_skey());
        if !crate::keyfile::create_private(path, &contents).map_err(io)? {
            return LogKey::load(path);
        }
        tracing::info!(path = %shown, "created the transparency log's signing key");
        Ok(LogKey {
            signer,
            shared: false,
        })
    }

    /// The signer of the log named `origin`, named by the origin (as C2SP tlog-checkpoint
    /// recommends and tlog-policy requires). Its key is the log's own, derived from the file's
    /// seed for that origin (HKDF-SHA256, docs/transparency.md "Origin and key"): C2SP
    /// tlog-policy refuses two `log` lines with one public key, so one policy can name several
    /// projects' logs. A key file written before per-log keys signs every log with its one key.
    pub fn signer(&self, origin: &str) -> Result<Ed25519Signer, String> {
        if self.shared {
            self.signer.renamed(origin)
        } else {
            self.signer.derive(LOG_KEY_CONTEXT, origin)
        }
        .map_err(|e| e.to_string())
    }

    /// Whether this is an older key file whose one key signs every project's log (see
    /// [`SHARED_KEY_FILE_NAME`]).
    pub fn is_shared(&self) -> bool {
        self.shared
    }

    /// The key name the file holds (not secret).
    pub fn file_key_name(&self) -> &str {
        self.signer.name()
    }

    /// The verifier key of the log named `origin`, in note format.
    pub fn verifier(&self, origin: &str) -> Result<Ed25519Verifier, String> {
        self.signer(origin).map(|s| s.verifier())
    }
}

/// The origin of a project's log: `<prefix>/<project name>`, the name with every byte other
/// than `A-Z a-z 0-9 - . _ ~` written `%XX` (so an origin is always a valid note key name: no
/// space, no `+`).
pub fn origin(prefix: &str, project: &str) -> String {
    let mut out = format!("{prefix}/");
    for b in project.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Checks an origin prefix: what it makes must be a valid checkpoint origin and key name.
pub fn check_origin_prefix(prefix: &str) -> Result<(), String> {
    let sample = origin(prefix, "project");
    if prefix.is_empty()
        // Stricter than a checkpoint's origin (which may hold DEL and C1 controls): a
        // tlog-policy file may not, and nobody can see them.
        || prefix.chars().any(char::is_control)
        || !agentledger_tlog::note::is_valid_key_name(&sample)
        || Checkpoint::new(&sample, 0, agentledger_tlog::EMPTY_ROOT).is_err()
    {
        return Err(format!(
            "--log-origin {prefix:?} must be non-empty, without spaces, control characters or '+' \
             (e.g. ledger.example.com)"
        ));
    }
    Ok(())
}

/// The default origin prefix: this machine's host name. Set `--log-origin` explicitly in
/// production: the origin is the log's identity, and a renamed host would start new logs.
pub fn default_origin_prefix() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| check_origin_prefix(h).is_ok())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// The background tasks; stopped by [`LogTasks::stop`] (or when dropped).
pub struct LogTasks {
    handles: Vec<tokio::task::JoinHandle<()>>,
}

impl LogTasks {
    pub fn stop(&mut self) {
        for h in self.handles.drain(..) {
            h.abort();
        }
    }
}

impl Drop for LogTasks {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Starts the integrator, the publisher and (with a witness policy) the cosigner.
pub fn spawn(
    store: Arc<dyn EventStore>,
    key: Arc<LogKey>,
    cfg: &LogConfig,
    witnessing: Option<Arc<crate::cosign::Witnessing>>,
    metrics: Arc<Metrics>,
) -> LogTasks {
    let integrator = tokio::spawn(integrate_forever(
        store.clone(),
        cfg.integrate_interval,
        metrics.clone(),
    ));
    let publisher = tokio::spawn(publish_forever(
        store.clone(),
        key,
        cfg.origin.clone(),
        cfg.checkpoint_interval,
        metrics.clone(),
    ));
    let mut handles = vec![integrator, publisher];
    if let Some(w) = witnessing {
        // Its own task: a slow witness never delays signing.
        handles.push(tokio::spawn(crate::cosign::cosign_forever(
            store,
            w,
            cfg.checkpoint_interval,
            metrics,
        )));
    }
    LogTasks { handles }
}

async fn integrate_forever(store: Arc<dyn EventStore>, every: Duration, metrics: Arc<Metrics>) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let projects = match store.list_projects().await {
            Ok(p) => p,
            Err(StoreError::ShuttingDown) => return,
            Err(e) => {
                tracing::warn!(error = %e, "transparency log: cannot list projects; retrying");
                continue;
            }
        };
        for p in projects {
            // Passes until the project's backlog is gone (a pass is one bounded transaction).
            loop {
                match store.log_integrate(&p, MAX_INTEGRATE).await {
                    Ok(pass) => {
                        metrics.log_integrated(pass.added);
                        if (pass.added as usize) < MAX_INTEGRATE {
                            break;
                        }
                    }
                    Err(StoreError::ShuttingDown) => return,
                    Err(e) => {
                        metrics.log_failure("integrate");
                        tracing::error!(project = %p.name, error = %e, "transparency log: integration failed; retrying");
                        break;
                    }
                }
            }
        }
    }
}

async fn publish_forever(
    store: Arc<dyn EventStore>,
    key: Arc<LogKey>,
    prefix: String,
    every: Duration,
    metrics: Arc<Metrics>,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let projects = match store.list_projects().await {
            Ok(p) => p,
            Err(StoreError::ShuttingDown) => return,
            Err(e) => {
                tracing::warn!(error = %e, "transparency log: cannot list projects; retrying");
                continue;
            }
        };
        for p in projects {
            match publish(store.as_ref(), &key, &prefix, &p).await {
                Ok(Some(cp)) => {
                    metrics.log_checkpoint_signed();
                    tracing::debug!(project = %p.name, size = cp.size, "checkpoint signed")
                }
                Ok(None) => {}
                Err(PublishError::Store(StoreError::ShuttingDown)) => return,
                Err(e) => {
                    metrics.log_failure("publish");
                    tracing::error!(project = %p.name, error = %e, "transparency log: no checkpoint signed")
                }
            }
        }
    }
}

/// Why a checkpoint was not signed.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "the tree of {size} leaves has root {stored} in the store but its tiles give {computed}"
    )]
    RootMismatch {
        size: u64,
        stored: String,
        computed: String,
    },
    #[error("the tree ({size} leaves) is smaller than the last checkpoint ({last})")]
    Shrunk { size: u64, last: u64 },
    #[error("a checkpoint with another root is already signed for size {0}; refusing to sign")]
    Fork(u64),
    #[error("the tree of {new} leaves is not consistent with the checkpoint of {old}: {reason}")]
    Inconsistent { old: u64, new: u64, reason: String },
    #[error("signing: {0}")]
    Sign(String),
}

/// Signs and keeps a checkpoint of `project`'s tree if it grew since the last one. Returns
/// the new checkpoint, or `None` when there was nothing to sign.
pub async fn publish(
    store: &dyn EventStore,
    key: &LogKey,
    prefix: &str,
    project: &ProjectRef,
) -> Result<Option<LogCheckpoint>, PublishError> {
    let head = store.log_head(project).await?;
    if head.size == 0 {
        return Ok(None);
    }
    let last = store.log_checkpoint(project, None).await?;
    if let Some(last) = &last {
        if last.size == head.size {
            return if last.root == head.root {
                Ok(None)
            } else {
                Err(PublishError::Fork(head.size))
            };
        }
        if last.size > head.size {
            return Err(PublishError::Shrunk {
                size: head.size,
                last: last.size,
            });
        }
    }
    // The root the store recorded must be the root of the tiles it serves.
    let computed = log::root_at(store, project, head.size).await?;
    if computed != head.root {
        return Err(PublishError::RootMismatch {
            size: head.size,
            stored: head.root.to_base64(),
            computed: computed.to_base64(),
        });
    }
    if let Some(last) = &last {
        let proof = log::consistency_proof(store, project, last.size, head.size).await?;
        verify_consistency(last.size, head.size, &last.root, &head.root, &proof).map_err(|e| {
            PublishError::Inconsistent {
                old: last.size,
                new: head.size,
                reason: e.to_string(),
            }
        })?;
    }
    let origin = origin(prefix, &project.name);
    let signer = key.signer(&origin).map_err(PublishError::Sign)?;
    let checkpoint = Checkpoint::new(&origin, head.size, head.root)
        .map_err(|e| PublishError::Sign(e.to_string()))?;
    let note =
        sign(&checkpoint.to_text(), &[&signer]).map_err(|e| PublishError::Sign(e.to_string()))?;
    let stored = store
        .log_add_checkpoint(
            project,
            LogCheckpoint {
                size: head.size,
                root: head.root,
                note,
                created_at: Micros::now(),
            },
        )
        .await?;
    if stored.root != head.root {
        return Err(PublishError::Fork(head.size));
    }
    Ok(Some(stored))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_valid_key_names_for_any_project_name() {
        assert_eq!(origin("log.example", "default"), "log.example/default");
        assert_eq!(
            origin("log.example", "team a+b/é"),
            "log.example/team%20a%2Bb%2F%C3%A9"
        );
        assert!(agentledger_tlog::note::is_valid_key_name(&origin(
            "x", " \t+\n"
        )));
        assert!(check_origin_prefix("ledger.example.com").is_ok());
        assert!(check_origin_prefix("bad origin").is_err());
        assert!(check_origin_prefix("a+b").is_err());
        assert!(check_origin_prefix("").is_err());
    }

    /// The publisher signs only a tree that its tiles and its last checkpoint vouch for: a
    /// tile rewritten in the database stops the signing, and so does another root already
    /// signed for the size.
    #[tokio::test]
    async fn the_publisher_refuses_a_tree_inconsistent_with_its_last_checkpoint() {
        use agentledger_core::Kind;
        use agentledger_store::conformance::{event, integrate_exactly, project};
        use agentledger_store::sqlite::{SqliteOptions, SqliteStore};

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.db");
        let store = SqliteStore::open(SqliteOptions::new(&path)).unwrap();
        let key = LogKey::load_or_create(&dir.path().join("log.key")).unwrap();
        let p = project(&store, "p").await;
        let three = (0..3).map(|_| event("s", Kind::Memory, "{}")).collect();
        store.append(&p, three).await.unwrap();
        integrate_exactly(&store, &p, 3, 100).await;
        let first = publish(&store, &key, "o", &p)
            .await
            .unwrap()
            .expect("signed");
        assert_eq!(first.size, 3);
        assert!(
            publish(&store, &key, "o", &p).await.unwrap().is_none(),
            "no growth, no checkpoint"
        );
        let opened = agentledger_tlog::note::open(&first.note, &[&key.verifier("o/p").unwrap()]);
        assert!(opened.is_ok(), "signed under the log's origin");

        // Someone with the database rewrites the leaves' tile; the next leaf builds on it.
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute(
            "UPDATE tlog_tiles SET data = zeroblob(length(data)) WHERE level = 0",
            [],
        )
        .unwrap();
        drop(conn);
        store
            .append(&p, vec![event("s", Kind::Memory, "{}")])
            .await
            .unwrap();
        integrate_exactly(&store, &p, 1, 100).await;
        let refused = publish(&store, &key, "o", &p).await;
        assert!(
            matches!(
                refused,
                Err(PublishError::Inconsistent { old: 3, new: 4, .. })
            ),
            "{refused:?}"
        );
        let latest = store.log_checkpoint(&p, None).await.unwrap().unwrap();
        assert_eq!(latest.size, 3, "nothing signed");

        // Another root already kept for size 4: never a second one.
        let head = store.log_head(&p).await.unwrap();
        store
            .log_add_checkpoint(
                &p,
                LogCheckpoint {
                    size: 4,
                    root: first.root,
                    note: b"someone else's\n".to_vec(),
                    created_at: Micros(1),
                },
            )
            .await
            .unwrap();
        assert_ne!(head.root, first.root);
        let refused = publish(&store, &key, "o", &p).await;
        assert!(matches!(refused, Err(PublishError::Fork(4))), "{refused:?}");
        store.close().await;
    }

    #[test]
    fn key_file_is_created_private_and_others_readable_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/log.key");
        let key = LogKey::load_or_create(&path).unwrap();
        let again = LogKey::load_or_create(&path).unwrap();
        assert_eq!(
            key.verifier("o/p").unwrap().to_vkey(),
            again.verifier("o/p").unwrap().to_vkey(),
            "the second start reads the same key"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
            let err = LogKey::load_or_create(&path).unwrap_err();
            assert!(err.to_string().contains("chmod 600"), "{err}");
        }
        assert!(matches!(
            LogKey::load(&dir.path().join("none")),
            Err(KeyFileError::Missing(_))
        ));
    }

    /// A new key file gives each log a public key of its own (derived for its origin), named by
    /// the origin; a key file of the older name keeps signing every log with its one key.
    #[test]
    fn each_log_has_its_own_key_and_an_older_key_file_keeps_its_shared_one() {
        use agentledger_tlog::note::NoteVerifier as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.key");
        let key = LogKey::load_or_create(&path).unwrap();
        assert!(!key.is_shared());
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.starts_with(&format!("PRIVATE+KEY+{KEY_FILE_NAME}+")),
            "{text}"
        );
        let file = Ed25519Signer::parse(text.trim_end()).unwrap();
        let (a, b) = (key.verifier("o/a").unwrap(), key.verifier("o/b").unwrap());
        assert_eq!(a.name(), "o/a");
        assert_ne!(a.public_key(), b.public_key(), "one key per log");
        assert_ne!(a.public_key(), file.verifier().public_key());
        assert_eq!(
            a.to_vkey(),
            file.derive(LOG_KEY_CONTEXT, "o/a")
                .unwrap()
                .verifier()
                .to_vkey()
        );
        // What it signs opens with that log's key only.
        let note = sign("o/a\n0\nroot\n", &[&key.signer("o/a").unwrap()]).unwrap();
        assert!(agentledger_tlog::note::open(&note, &[&a]).is_ok());
        assert!(agentledger_tlog::note::open(&note, &[&b]).is_err());

        // A key file written before per-log keys: the same key for every log, renamed.
        let old = dir.path().join("old.key");
        let shared = file.derive("test\n", SHARED_KEY_FILE_NAME).unwrap();
        std::fs::write(&old, format!("{}\n", shared.to_skey())).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        let key = LogKey::load(&old).unwrap();
        assert!(key.is_shared());
        assert_eq!(key.file_key_name(), SHARED_KEY_FILE_NAME);
        let (a, b) = (key.verifier("o/a").unwrap(), key.verifier("o/b").unwrap());
        assert_eq!(a.public_key(), shared.verifier().public_key());
        assert_eq!(b.public_key(), shared.verifier().public_key());
        assert_ne!(a.key_id(), b.key_id());

        // A key file an operator made under a name of their own signed every log too before
        // per-log keys: it keeps doing so (deriving would re-key their logs).
        let own = dir.path().join("own.key");
        let theirs = file.derive("test\n", "ops-made-key").unwrap();
        std::fs::write(&own, format!("{}\n", theirs.to_skey())).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&own, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        let key = LogKey::load(&own).unwrap();
        assert!(key.is_shared());
        assert_eq!(
            key.verifier("o/a").unwrap().public_key(),
            theirs.verifier().public_key()
        );
    }

    #[test]
    fn an_origin_prefix_with_a_control_character_is_refused() {
        assert!(check_origin_prefix("ledger.example.com").is_ok());
        for bad in ["", "a b", "a+b", "a\u{7f}b", "a\u{85}b", "a\tb"] {
            assert!(check_origin_prefix(bad).is_err(), "{bad:?}");
        }
    }
}
