//! `agentledger witness`: a C2SP tlog-witness (<https://c2sp.org/tlog-witness>) that another
//! organisation can run against our logs (issue 17, docs/transparency.md "Running a witness").
//!
//! It serves `POST /add-checkpoint`, and `GET /<origin hash>/checkpoint`: the latest checkpoint
//! it cosigned of a log, with the log's signature and its own cosignature (the tlog-witness
//! monitoring route). For each log it is told about (`--log VKEY`, the vkey's name being the
//! log's origin, or `--log "<origin> <vkey>"`) it keeps the size, root and note of the latest
//! checkpoint it cosigned, in a SQLite file. A request is checked by [`verify_add_checkpoint`]
//! against that state inside one `BEGIN IMMEDIATE` transaction, and the new size and root are committed
//! before the cosignature is returned, so the witness only ever moves forward along one tree:
//! it never cosigns a rolled-back checkpoint, a checkpoint not proven consistent with the last
//! one, or a second root for a size it cosigned. State is kept per origin (not per key), so
//! listing a new key for a log does not reset what the witness has seen of it.
//!
//! The cosigning key lives in a file outside the state database, created at first start with
//! mode 0600 (a file others can read is refused), like the log's key. It is never logged.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path as PathParam, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use rusqlite::{OptionalExtension, TransactionBehavior};
use tokio::net::TcpListener;

use agentledger_tlog::Hash;
use agentledger_tlog::cosignature::{CosignatureSigner, CosignatureVerifier};
use agentledger_tlog::note::{Ed25519Verifier, Note, NoteVerifier};
use agentledger_tlog::witness::{
    AddCheckpointRequest, SIZE_CONTENT_TYPE, WitnessRefusal, format_cosignature_response,
    format_size_response, request_origin, verify_add_checkpoint,
};

use crate::conn::ConnLimits;

/// Largest request body: `old` line, 63 proof lines (45 bytes each) and a checkpoint note with
/// 16 signatures even of post-quantum size (signed-note: verifiers "MUST accept at least up to
/// 16 signatures"; an ML-DSA-44 signature line is about 3.3 KB, 5 KB signatures about 6.7 KB).
pub const MAX_BODY: usize = 128 * 1024;

/// The witness's settings.
#[derive(Debug, Clone)]
pub struct WitnessConfig {
    /// The cosigning key's file (created at first start).
    pub key: PathBuf,
    /// The key's name when the file is created (ignored for an existing file).
    pub name: String,
    /// The SQLite file holding each log's latest cosigned size and root (created if absent).
    pub state: PathBuf,
    /// The logs: each a verifier key (C2SP signed-note vkey, type 0x01) named by the log's
    /// origin, or `<origin> <vkey>`.
    pub logs: Vec<String>,
    pub limits: ConnLimits,
    /// The key's type when the file is created (default Ed25519); an existing file of another
    /// type is refused rather than used silently.
    pub algorithm: Option<CosignAlgorithm>,
}

/// A cosigning key's type (C2SP tlog-cosignature).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum CosignAlgorithm {
    /// Ed25519 `cosignature/v1` (type 0x04): what most witnesses and clients take today.
    #[default]
    Ed25519,
    /// ML-DSA-44 `subtree/v1` (type 0x06): post-quantum, what tlog-witness says witnesses
    /// SHOULD use; its cosignatures are 2.4 KB and need clients that verify them.
    #[value(name = "ml-dsa-44")]
    MlDsa44,
}

/// The witness's cosigning key, in its file.
pub struct WitnessKey {
    signer: CosignatureSigner,
}

impl std::fmt::Debug for WitnessKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WitnessKey(..)")
    }
}

impl WitnessKey {
    /// Reads the key file, or creates it (mode 0600, a fresh key from the OS, named `name`).
    pub fn load_or_create(
        path: &Path,
        name: &str,
        algorithm: Option<CosignAlgorithm>,
    ) -> Result<WitnessKey, String> {
        match WitnessKey::load(path)? {
            Some(key) => {
                let held = match key.verifier().alg() {
                    agentledger_tlog::note::ALG_COSIGNATURE_ML_DSA_44 => CosignAlgorithm::MlDsa44,
                    _ => CosignAlgorithm::Ed25519,
                };
                match algorithm {
                    Some(wanted) if wanted != held => Err(format!(
                        "witness key file {} holds an {held:?} key, not {wanted:?}: --algorithm \
                         chooses the type of a new key file (give another --key for a new one)",
                        path.display()
                    )),
                    _ => Ok(key),
                }
            }
            None => WitnessKey::create(path, name, algorithm.unwrap_or_default()),
        }
    }

    /// Reads an existing key file (`None` if there is none), refusing one others may read.
    pub fn load(path: &Path) -> Result<Option<WitnessKey>, String> {
        let shown = path.display();
        let text = match crate::keyfile::read_private(path) {
            Ok(Some(text)) => text,
            Ok(None) => return Ok(None),
            Err(crate::keyfile::ReadError::Permissions(mode)) => {
                return Err(format!(
                    "witness key file {shown} is readable or writable by others (mode {mode:o}); \
                     it holds the witness's signing key: chmod 600 it"
                ));
            }
            Err(crate::keyfile::ReadError::Io(e)) => {
                return Err(format!("witness key file {shown}: {e}"));
            }
        };
        let signer = CosignatureSigner::parse(text.trim_end()).map_err(|e| {
            format!("witness key file {shown} does not hold a signer key (PRIVATE+KEY+...): {e}")
        })?;
        Ok(Some(WitnessKey { signer }))
    }

    fn create(path: &Path, name: &str, algorithm: CosignAlgorithm) -> Result<WitnessKey, String> {
        let shown = path.display();
        let io = |e: std::io::Error| format!("witness key file {shown}: {e}");
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| io(std::io::Error::other(e.to_string())))?;
        let signer = match algorithm {
            CosignAlgorithm::Ed25519 => CosignatureSigner::from_seed(name, seed),
            CosignAlgorithm::MlDsa44 => CosignatureSigner::from_seed_ml_dsa_44(name, seed),
        }
        .map_err(|e| {
            format!("witness name {name:?}: {e} (no spaces, '+' or control characters)")
        })?;
        // A concurrent creator uses the first one's key.
        let contents = format!("{}\n", signer.to_skey());
        if !crate::keyfile::create_private(path, &contents).map_err(io)? {
            return WitnessKey::load(path)?
                .ok_or_else(|| format!("witness key file {shown} vanished"));
        }
        tracing::info!(path = %shown, "created the witness's cosigning key");
        Ok(WitnessKey { signer })
    }

    /// The witness's verifier key (type 0x04, or 0x06 for ML-DSA-44), what a log's witness
    /// policy lists.
    pub fn verifier(&self) -> CosignatureVerifier {
        self.signer.verifier()
    }
}

/// Each configured log's keys, by origin. A `--log` is a log's verifier key, whose key name is
/// the log's origin (as tlog-checkpoint recommends, and as agentledger's logs do), or
/// `<origin> <vkey>` for a log whose key is named otherwise (sum.golang.org's origin is
/// `go.sum database tree`): an origin may hold spaces, a vkey none, so the vkey is the last
/// word. A key listed twice for one origin counts once.
fn parse_logs(logs: &[String]) -> Result<HashMap<String, Vec<Ed25519Verifier>>, String> {
    if logs.is_empty() {
        return Err("give at least one --log VKEY (the verifier key of a log to witness)".into());
    }
    let mut by_origin: HashMap<String, Vec<Ed25519Verifier>> = HashMap::new();
    for arg in logs {
        let arg = arg.trim();
        // A signer key is the log's secret: refused without being echoed.
        if arg.contains("PRIVATE+KEY") {
            return Err(
                "a --log argument holds a signer key (PRIVATE+KEY+...), the log's \
                 secret: give its verifier key (`agentledger log-key` prints it)"
                    .into(),
            );
        }
        // `--log "$(agentledger log-key --project a --project b)"` is two keys in one argument.
        if arg.contains('\n') {
            return Err(format!(
                "--log {arg:?} holds several lines: give one log per --log (repeat it)"
            ));
        }
        let (origin, vkey) = match arg.rsplit_once(char::is_whitespace) {
            Some((origin, vkey)) => (Some(origin.trim_end()), vkey),
            None => (None, arg),
        };
        let key = Ed25519Verifier::parse(vkey).map_err(|e| {
            format!("--log {arg:?}: {vkey:?} is not a log verifier key (type 0x01): {e}")
        })?;
        let origin = match origin {
            None => key.name().to_owned(),
            Some(origin) if Ed25519Verifier::parse(origin).is_ok() => {
                return Err(format!(
                    "--log {arg:?} holds two verifier keys: give one log per --log (repeat it)"
                ));
            }
            Some(origin) => {
                agentledger_tlog::Checkpoint::new(origin, 0, agentledger_tlog::EMPTY_ROOT)
                    .map_err(|e| {
                        format!("--log {arg:?}: {origin:?} is not a checkpoint origin: {e}")
                    })?;
                origin.to_owned()
            }
        };
        let keys = by_origin.entry(origin).or_default();
        if !keys.iter().any(|k| k.to_vkey() == key.to_vkey()) {
            keys.push(key);
        }
    }
    Ok(by_origin)
}

/// Opens (creating if needed) the state database.
fn open_state(path: &Path) -> Result<rusqlite::Connection, String> {
    let err = |e: rusqlite::Error| format!("witness state {}: {e}", path.display());
    let conn = rusqlite::Connection::open(path).map_err(err)?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(err)?;
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(err)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .map_err(err)?;
    // `checkpoint`: the cosigned note the monitoring route serves (NULL in a state file from
    // before that route, until the log's next cosignature).
    conn.execute_batch(
        "BEGIN IMMEDIATE;
         CREATE TABLE IF NOT EXISTS witness_log (
             origin TEXT PRIMARY KEY,
             size INTEGER NOT NULL,
             root BLOB NOT NULL,
             cosigned_at INTEGER NOT NULL,
             checkpoint BLOB
         ) STRICT;",
    )
    .map_err(err)?;
    let has_checkpoint: bool = conn
        .query_row(
            "SELECT count(*) FROM pragma_table_info('witness_log') WHERE name = 'checkpoint'",
            [],
            |r| r.get::<_, i64>(0),
        )
        .map_err(err)?
        > 0;
    if !has_checkpoint {
        conn.execute_batch("ALTER TABLE witness_log ADD COLUMN checkpoint BLOB")
            .map_err(err)?;
    }
    conn.execute_batch("COMMIT").map_err(err)?;
    Ok(conn)
}

/// The note each known log's monitoring route serves, from the state: a stored note only if it
/// is of the size and root the row records (an older binary's cosignature moves the row and
/// leaves the note behind; such a log is served again from its next cosignature).
fn served_notes(
    conn: &rusqlite::Connection,
    logs: &HashMap<String, Vec<Ed25519Verifier>>,
) -> Result<HashMap<String, Arc<[u8]>>, String> {
    let err = |e: rusqlite::Error| format!("witness state: {e}");
    let mut stmt = conn
        .prepare(
            "SELECT origin, size, root, checkpoint FROM witness_log WHERE checkpoint IS NOT NULL",
        )
        .map_err(err)?;
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, Vec<u8>>(2)?,
                r.get::<_, Vec<u8>>(3)?,
            ))
        })
        .map_err(err)?;
    let mut out = HashMap::new();
    for row in rows {
        let (origin, size, root, note) = row.map_err(err)?;
        if !logs.contains_key(&origin) {
            continue;
        }
        let current = Note::parse(&note)
            .ok()
            .and_then(|n| agentledger_tlog::Checkpoint::parse(&n.text).ok())
            .is_some_and(|c| {
                i64::try_from(c.size).ok() == Some(size) && c.root.as_bytes()[..] == root[..]
            });
        if current {
            out.insert(origin, Arc::from(note));
        }
    }
    Ok(out)
}

/// Why a request was not cosigned.
#[derive(Debug)]
enum Refusal {
    Witness(WitnessRefusal),
    Internal(String),
}

impl From<WitnessRefusal> for Refusal {
    fn from(r: WitnessRefusal) -> Refusal {
        Refusal::Witness(r)
    }
}

/// The witness: its key, the logs it knows, its state.
pub struct Witness {
    key: WitnessKey,
    logs: HashMap<String, Vec<Ed25519Verifier>>,
    /// Each known origin by the lowercase hex SHA-256 the monitoring route names it by.
    by_hash: HashMap<String, String>,
    state: Mutex<rusqlite::Connection>,
    /// What the monitoring route serves, by origin: the stored note of the latest checkpoint
    /// cosigned, kept in memory (loaded at start, replaced after each commit) so that reads,
    /// which anyone may make, never wait on the state's writer.
    served: std::sync::RwLock<HashMap<String, Arc<[u8]>>>,
}

impl Witness {
    pub fn open(cfg: &WitnessConfig) -> Result<Witness, String> {
        let logs = parse_logs(&cfg.logs)?;
        let by_hash = logs
            .keys()
            .map(|origin| {
                (
                    hex::encode(agentledger_core::chain::sha256(origin.as_bytes())),
                    origin.clone(),
                )
            })
            .collect();
        let key = WitnessKey::load_or_create(&cfg.key, &cfg.name, cfg.algorithm)?;
        let conn = open_state(&cfg.state)?;
        let served = std::sync::RwLock::new(served_notes(&conn, &logs)?);
        Ok(Witness {
            key,
            logs,
            by_hash,
            state: Mutex::new(conn),
            served,
        })
    }

    /// The latest checkpoint cosigned of the log whose origin hashes to `origin_hash`: its text,
    /// the log's signatures the witness verified, and its cosignature. `None` for a log it does
    /// not know or never cosigned.
    fn checkpoint(&self, origin_hash: &str) -> Option<Arc<[u8]>> {
        self.checkpoint_of(self.by_hash.get(origin_hash)?)
    }

    /// The note served for `origin` now.
    fn checkpoint_of(&self, origin: &str) -> Option<Arc<[u8]>> {
        // A poisoned lock still holds whole notes: each is replaced in one assignment.
        self.served
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(origin)
            .cloned()
    }

    pub fn verifier(&self) -> CosignatureVerifier {
        self.key.verifier()
    }

    /// Checks a request against the stored state, advances it, and returns the cosignature
    /// line; the state is committed before the line is returned.
    fn add_checkpoint(&self, body: &[u8]) -> Result<String, Refusal> {
        let request = AddCheckpointRequest::parse(body)
            .map_err(|e| WitnessRefusal::BadRequest(e.to_string()))?;
        let origin = request_origin(&request)
            .ok_or_else(|| WitnessRefusal::BadRequest("checkpoint is not UTF-8".into()))?;
        let keys: Vec<&dyn NoteVerifier> = self
            .logs
            .get(&origin)
            .map(|ks| ks.iter().map(|k| k as &dyn NoteVerifier).collect())
            .unwrap_or_default();
        let internal = |e: rusqlite::Error| Refusal::Internal(format!("witness state: {e}"));
        let mut conn = self
            .state
            .lock()
            .map_err(|_| Refusal::Internal("witness state lock poisoned".into()))?;
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(internal)?;
        let latest: Option<(i64, Vec<u8>)> = tx
            .query_row(
                "SELECT size, root FROM witness_log WHERE origin = ?1",
                [&origin],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()
            .map_err(internal)?;
        let latest = match latest {
            None => None,
            Some((size, root)) => Some((
                u64::try_from(size)
                    .map_err(|_| Refusal::Internal(format!("stored size {size} of {origin}")))?,
                Hash::from_slice(&root)
                    .map_err(|e| Refusal::Internal(format!("stored root of {origin}: {e}")))?,
            )),
        };
        let (checkpoint, opened) = verify_add_checkpoint(&request, &keys, latest)?;
        let size = i64::try_from(checkpoint.size).map_err(|_| {
            WitnessRefusal::BadRequest(format!(
                "checkpoint size {} is larger than this witness stores",
                checkpoint.size
            ))
        })?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_err(|e| Refusal::Internal(format!("clock before 1970: {e}")))?
            .as_secs();
        let cosignature = self
            .key
            .signer
            .cosign(&opened.text, now)
            .map_err(|e| match e {
                // An ML-DSA-44 cosignature names the origin in one length byte.
                agentledger_tlog::note::NoteError::NotACheckpoint(why) => {
                    Refusal::Witness(WitnessRefusal::BadRequest(why))
                }
                e => Refusal::Internal(format!("cosigning: {e}")),
            })?;
        // What the monitoring route serves: the log's signatures this witness verified, then
        // its own cosignature (signatures by keys it does not know are not passed on). The same
        // checkpoint sent again keeps the log signatures served before: a resend signed by one
        // of a log's keys does not drop another's.
        let mut served = self
            .checkpoint_of(&origin)
            .and_then(|before| Note::parse(&before).ok())
            .filter(|before| before.text == opened.text)
            .unwrap_or_else(|| Note {
                text: opened.text.clone(),
                signatures: Vec::new(),
            });
        // A key's newer signature replaces its older one (this witness's cosignature too).
        for sig in opened.verified.iter().chain([&cosignature]) {
            served.add_signature(sig.clone());
        }
        let served: Arc<[u8]> = served.to_bytes().into();
        tx.execute(
            "INSERT INTO witness_log (origin, size, root, cosigned_at, checkpoint)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (origin) DO UPDATE
             SET size = excluded.size, root = excluded.root, cosigned_at = excluded.cosigned_at,
                 checkpoint = excluded.checkpoint",
            rusqlite::params![
                origin,
                size,
                checkpoint.root.as_bytes().as_slice(),
                i64::try_from(now).unwrap_or(i64::MAX),
                &served[..]
            ],
        )
        .map_err(internal)?;
        tx.commit().map_err(internal)?;
        self.served
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(origin.clone(), served);
        tracing::info!(origin = %origin, size = checkpoint.size, "cosigned a checkpoint");
        Ok(format_cosignature_response(&[cosignature]))
    }
}

fn text(status: StatusCode, body: String) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        )],
        body,
    )
        .into_response()
}

async fn add_checkpoint(State(witness): State<Arc<Witness>>, body: Bytes) -> Response {
    let result = tokio::task::spawn_blocking(move || witness.add_checkpoint(&body)).await;
    match result {
        Ok(Ok(lines)) => text(StatusCode::OK, lines),
        Ok(Err(Refusal::Witness(WitnessRefusal::Conflict { latest }))) => (
            StatusCode::CONFLICT,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(SIZE_CONTENT_TYPE),
            )],
            format_size_response(latest),
        )
            .into_response(),
        Ok(Err(Refusal::Witness(refusal))) => {
            tracing::info!(%refusal, "refused a checkpoint");
            let status = StatusCode::from_u16(refusal.status()).unwrap_or(StatusCode::BAD_REQUEST);
            text(status, format!("{refusal}\n"))
        }
        Ok(Err(Refusal::Internal(e))) => {
            tracing::error!(error = %e, "witness failed");
            text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the witness could not record the checkpoint; nothing was cosigned\n".into(),
            )
        }
        Err(e) => {
            tracing::error!(error = %e, "witness task failed");
            text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the witness failed; nothing was cosigned\n".into(),
            )
        }
    }
}

/// `GET /<origin hash>/checkpoint` (tlog-witness, "Monitoring"): the latest checkpoint this
/// witness cosigned of that log, with the log's signature and the cosignature it returned; 404
/// if it never cosigned one (or does not know the log).
async fn latest_checkpoint(
    State(witness): State<Arc<Witness>>,
    PathParam(origin_hash): PathParam<String>,
) -> Response {
    if origin_hash.len() != 64
        || !origin_hash
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return text(
            StatusCode::BAD_REQUEST,
            "the origin hash is the log origin's SHA-256 as 64 lowercase hex digits\n".into(),
        );
    }
    match witness.checkpoint(&origin_hash) {
        Some(note) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            )],
            note.to_vec(),
        )
            .into_response(),
        None => text(
            StatusCode::NOT_FOUND,
            "this witness has cosigned no checkpoint of that log\n".into(),
        ),
    }
}

/// The witness's routes: `POST /add-checkpoint` and `GET /<origin hash>/checkpoint`.
pub fn router(witness: Arc<Witness>) -> Router {
    Router::new()
        .route("/add-checkpoint", post(add_checkpoint))
        .route("/{origin_hash}/checkpoint", get(latest_checkpoint))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(witness)
}

/// A witness serving on a listener; stopped by [`RunningWitness::stop`] (or when dropped).
pub struct RunningWitness {
    pub addr: SocketAddr,
    pub verifier: CosignatureVerifier,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl RunningWitness {
    /// Stops accepting, lets in-flight requests finish, and waits.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for RunningWitness {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// Opens the key and state and serves the witness on `listener`.
pub async fn start(cfg: WitnessConfig, listener: TcpListener) -> Result<RunningWitness, String> {
    let opened = {
        let cfg = cfg.clone();
        tokio::task::spawn_blocking(move || Witness::open(&cfg))
            .await
            .map_err(|e| format!("opening the witness: {e}"))??
    };
    let witness = Arc::new(opened);
    let addr = listener
        .local_addr()
        .map_err(|e| format!("witness listener: {e}"))?;
    let verifier = witness.verifier();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(crate::conn::serve(
        listener,
        router(witness),
        cfg.limits,
        async move {
            let _ = rx.await;
        },
    ));
    Ok(RunningWitness {
        addr,
        verifier,
        stop: Some(tx),
        task: Some(task),
    })
}

/// The log's side of tlog-witness: sending a checkpoint to a witness and checking what it
/// answers. The building block of `serve --witness-policy` (not wired into the publisher yet).
pub mod client {
    use std::future::Future;
    use std::time::Duration;

    use http_body_util::{BodyExt, Full, Limited};

    use agentledger_tlog::cosignature::CosignatureVerifier;
    use agentledger_tlog::note::{Note, NoteSignature, NoteVerifier};
    use agentledger_tlog::witness::{AddCheckpointRequest, parse_size_response};
    use agentledger_tlog::{Checkpoint, Hash};

    /// Largest witness answer read (a few cosignature lines, or a size).
    const MAX_ANSWER: usize = 16 * 1024;

    use crate::alerts::deliver::Client;

    /// Why a witness did not cosign.
    #[derive(Debug, thiserror::Error)]
    pub enum WitnessClientError {
        #[error("witness unreachable: {0}")]
        Unreachable(String),
        #[error("witness answered HTTP {status}: {message}")]
        Refused { status: u16, message: String },
        #[error("witness answered 409 twice (its size is {0})")]
        Conflict(u64),
        #[error("witness answer is malformed: {0}")]
        Malformed(String),
        #[error("no cosignature in the witness's answer verifies with its policy key")]
        BadCosignature,
        #[error("no consistency proof from size {old}: {reason}")]
        NoProof { old: u64, reason: String },
    }

    /// An HTTP(S) client for witnesses: like the alert deliverer's (webpki roots, rustls with
    /// ring, no redirects, no proxies), one timeout per exchange.
    pub struct WitnessClient {
        client: Client,
        timeout: Duration,
    }

    impl WitnessClient {
        pub fn new(timeout: Duration) -> Result<WitnessClient, String> {
            let client = crate::alerts::deliver::outbound_client(timeout)?;
            Ok(WitnessClient { client, timeout })
        }

        /// One add-checkpoint exchange: `Ok(Ok(cosignatures))` on 200 (only lines by
        /// `witness` that verify over `text`), `Ok(Err(size))` on 409.
        async fn post(
            &self,
            url: &str,
            witness: &CosignatureVerifier,
            text: &str,
            request: &AddCheckpointRequest,
        ) -> Result<Result<Vec<NoteSignature>, u64>, WitnessClientError> {
            let endpoint = format!("{}/add-checkpoint", url.trim_end_matches('/'));
            let req = axum::http::Request::post(endpoint.as_str())
                .header(
                    "user-agent",
                    concat!("agentledger/", env!("CARGO_PKG_VERSION")),
                )
                .body(Full::new(bytes::Bytes::from(request.to_bytes())))
                .map_err(|_| {
                    WitnessClientError::Unreachable("the witness URL is not usable".into())
                })?;
            let exchange = async {
                let resp = self
                    .client
                    .request(req)
                    .await
                    .map_err(|e| WitnessClientError::Unreachable(e.to_string()))?;
                let status = resp.status().as_u16();
                let body = Limited::new(resp.into_body(), MAX_ANSWER)
                    .collect()
                    .await
                    .map_err(|e| WitnessClientError::Malformed(e.to_string()))?
                    .to_bytes();
                Ok::<_, WitnessClientError>((status, body))
            };
            let (status, body) = tokio::time::timeout(self.timeout, exchange)
                .await
                .map_err(|_| {
                    WitnessClientError::Unreachable(format!("timed out after {:?}", self.timeout))
                })??;
            match status {
                200 => {
                    let lines = std::str::from_utf8(&body)
                        .map_err(|_| WitnessClientError::Malformed("not UTF-8".into()))?;
                    let sigs = NoteSignature::parse_lines(lines)
                        .map_err(|e| WitnessClientError::Malformed(e.to_string()))?;
                    let good: Vec<NoteSignature> = sigs
                        .into_iter()
                        .filter(|s| {
                            s.name == witness.name()
                                && s.key_id == witness.key_id()
                                // tlog-witness: a witness's timestamp "MUST NOT be zero".
                                && witness
                                    .verify_timestamp(text.as_bytes(), &s.signature)
                                    .is_some_and(|t| t > 0)
                        })
                        .collect();
                    if good.is_empty() {
                        return Err(WitnessClientError::BadCosignature);
                    }
                    Ok(Ok(good))
                }
                // A 409 without a size: witnesses built before tlog-witness answered 422 to a
                // second root for a size they cosigned (omniwitness still does) answer so to a
                // fork, so it is a refusal, not a garbled answer.
                409 => match parse_size_response(&body) {
                    Ok(size) => Ok(Err(size)),
                    Err(e) => Err(WitnessClientError::Refused {
                        status,
                        message: format!(
                            "conflict without the witness's size ({e}); older witnesses answer \
                             so to a checkpoint that conflicts with one they cosigned"
                        ),
                    }),
                },
                _ => {
                    let message = String::from_utf8_lossy(&body);
                    let message: String = message.trim().chars().take(200).collect();
                    Err(WitnessClientError::Refused { status, message })
                }
            }
        }

        /// Sends the signed checkpoint `note` to the witness at `url`, starting from `old_hint` (the size it last cosigned, as far as
        /// the caller knows). On 409 it asks `prove` for a consistency proof from the
        /// witness's size and sends once more. Returns the witness's verified cosignatures.
        pub async fn add_checkpoint<F, Fut>(
            &self,
            url: &str,
            witness: &CosignatureVerifier,
            note: &[u8],
            old_hint: u64,
            prove: F,
        ) -> Result<Vec<NoteSignature>, WitnessClientError>
        where
            F: Fn(u64) -> Fut,
            Fut: Future<Output = Result<Vec<Hash>, String>>,
        {
            let text = Note::parse(note)
                .map_err(|e| WitnessClientError::Malformed(format!("the checkpoint: {e}")))?
                .text;
            let size = Checkpoint::parse(&text)
                .map_err(|e| WitnessClientError::Malformed(format!("the checkpoint: {e}")))?
                .size;
            let text = text.as_str();
            let mut old = old_hint.min(size);
            for _ in 0..2 {
                let consistency_proof = if old == 0 || old == size {
                    Vec::new()
                } else {
                    prove(old)
                        .await
                        .map_err(|reason| WitnessClientError::NoProof { old, reason })?
                };
                let request = AddCheckpointRequest {
                    old_size: old,
                    consistency_proof,
                    checkpoint: note.to_vec(),
                };
                match self.post(url, witness, text, &request).await? {
                    Ok(sigs) => return Ok(sigs),
                    Err(latest) if latest > size => {
                        return Err(WitnessClientError::Conflict(latest));
                    }
                    Err(latest) => old = latest,
                }
            }
            Err(WitnessClientError::Conflict(old))
        }
    }
}
