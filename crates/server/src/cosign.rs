//! `serve --witness-policy` (issue 17, docs/transparency.md "Witnesses"): the log's side of
//! C2SP tlog-witness.
//!
//! - The **cosigner** task sends each project's newest signed checkpoint to every witness of
//!   the policy that has not cosigned it (an add-checkpoint request from the size the witness
//!   last cosigned, with the consistency proof; a `409` is answered once from the size the
//!   witness reports), and keeps the cosignatures that verify with the policy's key for that
//!   witness. A witness that fails is retried with exponential backoff (up to
//!   [`MAX_BACKOFF`]); its state is in `GET /log/witnesses`.
//! - The **served checkpoint** ([`Witnessing::served`]) is the newest stored checkpoint whose
//!   kept cosignatures meet the policy's quorum, with those cosignatures appended to the
//!   log's signature. Before the first such checkpoint, there is none to serve.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use utoipa::ToSchema;

use agentledger_core::Micros;
use agentledger_store::log::{self, LogCheckpoint, LogCosignature, MAX_COSIGNATURE_LINE};
use agentledger_store::{EventStore, ProjectRef, StoreError, StoreResult};
use agentledger_tlog::note::{Note, NoteSignature, NoteVerifier};
use agentledger_tlog::policy::{Policy, Quorum};

use crate::metrics::Metrics;
use crate::transparency::LogKey;
use crate::witness::client::{WitnessClient, WitnessClientError};

/// Longest wait between two attempts to a failing witness.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// Cosigned sizes looked at, newest first, for one that meets the quorum.
const SIZES_LOOKED_AT: u32 = 64;
/// Longest policy file read.
const MAX_POLICY_BYTES: u64 = 64 * 1024;

/// A witness the server sends checkpoints to.
#[derive(Debug, Clone)]
struct Witness {
    /// Its name in the policy.
    name: String,
    url: String,
    key: agentledger_tlog::cosignature::CosignatureVerifier,
}

/// A `--witness-policy` file, checked against this server's logs.
#[derive(Debug, Clone)]
pub struct WitnessPolicy {
    policy: Policy,
    witnesses: Vec<Witness>,
}

impl WitnessPolicy {
    /// Reads and checks a C2SP tlog-policy file. Refused (the setting could not be honoured):
    /// a file that does not parse, a witness without an `http(s)://` URL (the server could not
    /// send it checkpoints), and a `log` line for one of this server's origins whose key is not
    /// the server's (verifiers holding the policy would refuse every checkpoint).
    pub fn load(path: &Path, prefix: &str, key: &LogKey) -> Result<WitnessPolicy, String> {
        use std::io::Read;
        let shown = path.display();
        let file = std::fs::File::open(path)
            .map_err(|e| format!("--witness-policy {shown}: cannot read it: {e}"))?;
        let mut data = Vec::new();
        file.take(MAX_POLICY_BYTES + 1)
            .read_to_end(&mut data)
            .map_err(|e| format!("--witness-policy {shown}: cannot read it: {e}"))?;
        if data.len() as u64 > MAX_POLICY_BYTES {
            return Err(format!(
                "--witness-policy {shown}: larger than {MAX_POLICY_BYTES} bytes"
            ));
        }
        let policy = Policy::parse(&data).map_err(|e| format!("--witness-policy {shown}: {e}"))?;
        WitnessPolicy::check(policy, prefix, key)
            .map_err(|e| format!("--witness-policy {shown}: {e}"))
    }

    fn check(policy: Policy, prefix: &str, key: &LogKey) -> Result<WitnessPolicy, String> {
        let ours = format!("{prefix}/");
        for log in &policy.logs {
            let name = log.key.name();
            if let Some(project) = name.strip_prefix(&ours) {
                let expected = key.verifier(name)?;
                if expected.to_vkey() != log.key.to_vkey() {
                    return Err(format!(
                        "the log line for {name} does not carry this server's key for that \
                         log (`agentledger log-key --project {project}` prints it); \
                         verifiers holding this policy would refuse its checkpoints"
                    ));
                }
            }
        }
        let mut witnesses = Vec::new();
        for w in &policy.witnesses {
            let url = w.url.clone().ok_or_else(|| {
                format!(
                    "witness {:?} has no URL: the server sends each checkpoint to every \
                     witness of the policy (`witness <name> <vkey> <url>`)",
                    w.name
                )
            })?;
            let uri: axum::http::Uri = url
                .parse()
                .map_err(|_| format!("witness {:?}: {url:?} is not a URL", w.name))?;
            if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
                return Err(format!(
                    "witness {:?}: {url:?} is not an http:// or https:// URL",
                    w.name
                ));
            }
            witnesses.push(Witness {
                name: w.name.clone(),
                url,
                key: w.key.clone(),
            });
        }
        if policy.quorum == Quorum::None {
            tracing::warn!(
                "--witness-policy: quorum none; checkpoints are served as soon as the log signs \
                 them, with whatever cosignatures have arrived"
            );
        }
        Ok(WitnessPolicy { policy, witnesses })
    }

    /// The policy names of the witnesses whose cosignature lines verify over `text`.
    fn cosigners(&self, text: &str, lines: &[&LogCosignature]) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = Vec::new();
        for c in lines {
            let Ok(sig) = NoteSignature::parse_line(c.line.trim_end_matches('\n')) else {
                continue;
            };
            for w in &self.witnesses {
                if w.key.name() == sig.name
                    && w.key.key_id() == sig.key_id
                    && w.key.verify(text.as_bytes(), &sig.signature)
                    && !out.iter().any(|(n, _)| n == &w.name)
                {
                    out.push((w.name.clone(), sig.to_line()));
                }
            }
        }
        out
    }
}

/// One witness's state for one project's log, as `GET /log/witnesses` shows it.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct WitnessState {
    /// The witness's name in the policy.
    pub name: String,
    pub url: String,
    /// The largest tree size it cosigned for this log since this node started (0: none yet).
    pub cosigned_size: u64,
    /// When it last cosigned (RFC 3339).
    pub cosigned_at: Option<String>,
    /// Failed exchanges in a row.
    pub failures: u32,
    /// Why the last exchange failed, if it did.
    pub last_error: Option<String>,
    #[serde(skip)]
    #[schema(ignore)]
    next_attempt: Option<Instant>,
}

/// The witness policy in force and each witness's state.
pub struct Witnessing {
    policy: WitnessPolicy,
    client: WitnessClient,
    /// By (project id, witness index).
    states: Mutex<HashMap<(i64, usize), WitnessState>>,
}

impl Witnessing {
    pub fn new(policy: WitnessPolicy, timeout: Duration) -> Result<Witnessing, String> {
        Ok(Witnessing {
            policy,
            client: WitnessClient::new(timeout)?,
            states: Mutex::default(),
        })
    }

    fn state(&self, project: i64, i: usize) -> WitnessState {
        let states = self.states.lock().unwrap_or_else(|e| e.into_inner());
        states.get(&(project, i)).cloned().unwrap_or_else(|| {
            let w = &self.policy.witnesses[i];
            WitnessState {
                name: w.name.clone(),
                url: w.url.clone(),
                ..WitnessState::default()
            }
        })
    }

    fn set_state(&self, project: i64, i: usize, state: WitnessState) {
        let mut states = self.states.lock().unwrap_or_else(|e| e.into_inner());
        states.insert((project, i), state);
    }

    /// Each witness's state for `project`'s log, in policy order.
    pub fn states(&self, project: &ProjectRef) -> Vec<WitnessState> {
        (0..self.policy.witnesses.len())
            .map(|i| self.state(project.id.0, i))
            .collect()
    }

    /// The quorum line, as the policy writes it.
    pub fn quorum(&self) -> String {
        match self.policy.policy.quorum {
            Quorum::None => "none".into(),
            Quorum::Member(agentledger_tlog::policy::Member::Witness(i)) => self
                .policy
                .policy
                .witnesses
                .get(i)
                .map_or_else(String::new, |w| w.name.clone()),
            Quorum::Member(agentledger_tlog::policy::Member::Group(g)) => self
                .policy
                .policy
                .groups
                .get(g)
                .map_or_else(String::new, |g| g.name.clone()),
        }
    }

    /// Sends `project`'s newest checkpoint to every witness that has not cosigned it and whose
    /// backoff has passed, all at once; keeps the cosignatures. Returns how many witnesses
    /// cosigned.
    pub async fn cosign(
        &self,
        store: &dyn EventStore,
        project: &ProjectRef,
        metrics: &Metrics,
    ) -> StoreResult<usize> {
        let Some(latest) = store.log_checkpoint(project, None).await? else {
            return Ok(0);
        };
        let now = Instant::now();
        let due: Vec<(usize, WitnessState)> = (0..self.policy.witnesses.len())
            .map(|i| (i, self.state(project.id.0, i)))
            .filter(|(_, s)| {
                s.cosigned_size < latest.size && s.next_attempt.is_none_or(|t| t <= now)
            })
            .collect();
        if due.is_empty() {
            return Ok(0);
        }
        let exchanges = due.into_iter().map(|(i, state)| {
            let latest = &latest;
            async move {
                let w = &self.policy.witnesses[i];
                let size = latest.size;
                let prove = |old: u64| async move {
                    log::consistency_proof(store, project, old, size)
                        .await
                        .map_err(|e| e.to_string())
                };
                let answer = self
                    .client
                    .add_checkpoint(&w.url, &w.key, &latest.note, state.cosigned_size, prove)
                    .await;
                (i, state, answer)
            }
        });
        let answers = futures_util::future::join_all(exchanges).await;
        let mut kept = Vec::new();
        // Witnesses that cosigned: their state moves once the cosignatures are kept.
        let mut cosigned = Vec::new();
        for (i, mut state, answer) in answers {
            let w = &self.policy.witnesses[i];
            match answer {
                Ok(sigs) => {
                    let lines: Vec<LogCosignature> = sigs
                        .iter()
                        .map(|s| LogCosignature {
                            size: latest.size,
                            witness: s.name.clone(),
                            key_id: s.key_id,
                            line: s.to_line(),
                            created_at: Micros::now(),
                        })
                        .filter(|c| c.line.len() <= MAX_COSIGNATURE_LINE)
                        .collect();
                    if lines.is_empty() {
                        continue;
                    }
                    kept.extend(lines);
                    if state.failures > 0 {
                        tracing::info!(project = %project.name, witness = %w.name, size = latest.size, "witness cosigns again");
                    }
                    state.cosigned_size = latest.size;
                    state.cosigned_at = Some(Micros::now().to_rfc3339());
                    state.failures = 0;
                    state.last_error = None;
                    state.next_attempt = None;
                    cosigned.push((i, state));
                    continue;
                }
                Err(e) => {
                    metrics.log_failure("cosign");
                    state.failures = state.failures.saturating_add(1);
                    let backoff = Duration::from_secs(1)
                        .saturating_mul(1u32 << state.failures.min(9))
                        .min(MAX_BACKOFF);
                    state.next_attempt = Some(now + backoff);
                    // A witness ahead of the log saw a bigger tree under this origin: someone
                    // else signs with this log's key, or this database was rolled back.
                    let ahead = matches!(e, WitnessClientError::Conflict(s) if s > latest.size);
                    let message = e.to_string();
                    if ahead {
                        tracing::error!(project = %project.name, witness = %w.name, size = latest.size, error = %message,
                            "a witness has cosigned a larger tree of this log than the server has: \
                             the database was rolled back or another server signs with this log's key");
                    } else {
                        tracing::warn!(project = %project.name, witness = %w.name, url = %w.url, size = latest.size,
                            failures = state.failures, retry_in_s = backoff.as_secs(), error = %message,
                            "witness did not cosign");
                    }
                    state.last_error = Some(message);
                }
            }
            self.set_state(project.id.0, i, state);
        }
        let n = kept.len();
        store.log_add_cosignatures(project, kept).await?;
        metrics.log_cosigned(n);
        let witnesses = cosigned.len();
        for (i, state) in cosigned {
            self.set_state(project.id.0, i, state);
        }
        Ok(witnesses)
    }

    /// The checkpoint to serve: with `size`, the one of that size with its kept cosignatures
    /// (whether or not they meet the quorum; the reader checks); otherwise the newest one whose
    /// cosignatures meet the quorum (with `quorum none`, the newest one). `None`: no such
    /// checkpoint yet.
    pub async fn served(
        &self,
        store: &dyn EventStore,
        project: &ProjectRef,
        size: Option<u64>,
    ) -> StoreResult<Option<LogCheckpoint>> {
        if let Some(size) = size {
            let Some(cp) = store.log_checkpoint(project, Some(size)).await? else {
                return Ok(None);
            };
            let cosigs = store.log_cosignatures(project, Some(size), 1).await?;
            return Ok(Some(self.with_cosignatures(cp, &cosigs).0));
        }
        let cosigs = store
            .log_cosignatures(project, None, SIZES_LOOKED_AT)
            .await?;
        let mut sizes: Vec<u64> = cosigs.iter().map(|c| c.size).collect();
        sizes.dedup();
        for size in sizes {
            let Some(cp) = store.log_checkpoint(project, Some(size)).await? else {
                continue;
            };
            let (cp, names) = self.with_cosignatures(cp, &cosigs);
            if self.policy.policy.quorum_met(&names) {
                return Ok(Some(cp));
            }
        }
        if self.policy.policy.quorum == Quorum::None {
            return store.log_checkpoint(project, None).await;
        }
        Ok(None)
    }

    /// `cp` with the cosignatures (of its size) that verify with the policy's witnesses'
    /// keys appended, and those witnesses' policy names.
    fn with_cosignatures(
        &self,
        mut cp: LogCheckpoint,
        cosigs: &[LogCosignature],
    ) -> (LogCheckpoint, Vec<String>) {
        let Ok(mut note) = Note::parse(&cp.note) else {
            return (cp, Vec::new());
        };
        let of_size: Vec<&LogCosignature> = cosigs.iter().filter(|c| c.size == cp.size).collect();
        let mut names = Vec::new();
        for (name, line) in self.policy.cosigners(&note.text, &of_size) {
            if let Ok(sig) = NoteSignature::parse_line(line.trim_end_matches('\n')) {
                note.add_signature(sig);
                names.push(name);
            }
        }
        cp.note = note.to_bytes();
        (cp, names)
    }
}

/// The checkpoint to serve for `project`: the witnessed one when a policy is in force,
/// otherwise the stored one (`size`, or the newest).
pub async fn served_checkpoint(
    store: &dyn EventStore,
    witnessing: Option<&Witnessing>,
    project: &ProjectRef,
    size: Option<u64>,
) -> StoreResult<Option<LogCheckpoint>> {
    match witnessing {
        Some(w) => w.served(store, project, size).await,
        None => store.log_checkpoint(project, size).await,
    }
}

/// The cosigner task: every `every`, each project's newest checkpoint to its witnesses.
pub async fn cosign_forever(
    store: Arc<dyn EventStore>,
    witnessing: Arc<Witnessing>,
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
                tracing::warn!(error = %e, "witnesses: cannot list projects; retrying");
                continue;
            }
        };
        for p in projects {
            match witnessing.cosign(store.as_ref(), &p, &metrics).await {
                Ok(_) => {}
                Err(StoreError::ShuttingDown) => return,
                Err(e) => {
                    metrics.log_failure("cosign");
                    tracing::error!(project = %p.name, error = %e, "witnesses: cannot keep cosignatures");
                }
            }
        }
    }
}
