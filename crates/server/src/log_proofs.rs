//! `agentledger verify --file --log-key [--witness-policy] [--log-proof]`: checks, offline,
//! that the sessions of an export are in their projects' transparency logs
//! (docs/transparency.md, "Offline verification"). Needs only the export (whose log proof
//! lines carry the checkpoints and proofs), the log's verifier key and, for witnesses, the
//! C2SP tlog-policy.

use std::collections::HashMap;
use std::path::PathBuf;

use agentledger_tlog::note::{Ed25519Verifier, NoteVerifier};
use agentledger_tlog::policy::{Policy, PolicyLog};
use agentledger_tlog::proof::TlogProof;

/// What `verify --file --log-key` checks the sessions against.
pub struct LogProofs {
    verifier: Ed25519Verifier,
    /// `--witness-policy`: each checkpoint must meet its quorum.
    policy: Option<Policy>,
    /// `--log-proof` files: each proves some session's last event.
    files: Vec<(PathBuf, TlogProof)>,
}

/// An export's log proof line (docs/transparency.md "Exports carry their proof").
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ProofLine {
    log_proof: ProofBody,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ProofBody {
    project: String,
    session_id: String,
    seq: u64,
    event_id: String,
    tlog_proof: String,
}

/// A log proof line of an export, parsed.
pub struct EmbeddedProof {
    pub line: usize,
    pub project: String,
    pub session_id: String,
    pub seq: u64,
    pub event_id: String,
    pub proof: TlogProof,
}

/// True if the line is a log proof line rather than an event line (its only member is
/// `log_proof`).
pub fn is_proof_line(line: &str) -> bool {
    line.trim_start().starts_with("{\"log_proof\"")
}

/// Parses a log proof line (line number `line`, for messages).
pub fn read_proof_line(line_no: usize, line: &str) -> Result<EmbeddedProof, String> {
    agentledger_core::ijson::check(line).map_err(|e| e.0)?;
    let parsed: ProofLine = serde_json::from_str(line).map_err(|e| e.to_string())?;
    let b = parsed.log_proof;
    let proof = TlogProof::parse(b.tlog_proof.as_bytes())
        .map_err(|e| format!("log_proof.tlog_proof is not a tlog-proof: {e}"))?;
    Ok(EmbeddedProof {
        line: line_no,
        project: b.project,
        session_id: b.session_id,
        seq: b.seq,
        event_id: b.event_id,
        proof,
    })
}

/// A `--log-key` argument: a log's verifier key, or a file holding one.
pub fn read_log_key(key: &str) -> Result<Ed25519Verifier, String> {
    match Ed25519Verifier::parse(key.trim()) {
        Ok(v) => Ok(v),
        Err(_) => {
            let text = std::fs::read_to_string(key).map_err(|e| {
                format!("--log-key is neither a verifier key nor a readable file: {e}")
            })?;
            Ed25519Verifier::parse(text.trim())
                .map_err(|e| format!("--log-key file {key}: not a verifier key: {e}"))
        }
    }
}

pub fn read_log_proofs(
    key: &str,
    policy: Option<&PathBuf>,
    files: &[PathBuf],
) -> Result<LogProofs, String> {
    let verifier = read_log_key(key)?;
    let policy = policy
        .map(|path| {
            let data = std::fs::read(path)
                .map_err(|e| format!("--witness-policy {}: {e}", path.display()))?;
            let mut policy = Policy::parse(&data)
                .map_err(|e| format!("--witness-policy {}: {e}", path.display()))?;
            // The log is the one --log-key names, whatever log lines the policy has.
            policy.logs = vec![PolicyLog {
                key: verifier.clone(),
                url: None,
            }];
            Ok::<_, String>(policy)
        })
        .transpose()?;
    let files = files
        .iter()
        .map(|f| {
            let bytes =
                std::fs::read(f).map_err(|e| format!("cannot read {}: {e}", f.display()))?;
            TlogProof::parse(&bytes)
                .map(|p| (f.clone(), p))
                .map_err(|e| format!("{}: not a tlog-proof: {e}", f.display()))
        })
        .collect::<Result<_, String>>()?;
    Ok(LogProofs {
        verifier,
        policy,
        files,
    })
}

/// The best proof of a session found: its seq, leaf index, checkpoint, the witnesses that
/// cosigned it (with a policy) and where it came from.
type Proved = (
    u64,
    u64,
    agentledger_tlog::Checkpoint,
    Option<Vec<String>>,
    String,
);

/// A session of the export: its events' hashes in seq order (seq 1 first).
pub type SessionHashes = HashMap<(String, String), Vec<[u8; 32]>>;

/// Checks that each intact session is in its project's log: a proof (the export's log proof
/// line for it, or a `--log-proof` file for its last event) must prove one of its events'
/// leaves (docs/transparency.md "Leaves") under a checkpoint signed by the key, for the log of
/// the session's project, and, with a witness policy, cosigned by a quorum. The chain links
/// every earlier event into that event's hash, so the session up to it is in the log. Returns
/// the number of failures printed.
pub fn check_log_proofs(
    log: &LogProofs,
    hashes: &SessionHashes,
    intact: &[(String, String)],
    embedded: &[EmbeddedProof],
) -> usize {
    let mut failures = 0;
    for key @ (project, session) in intact {
        let Some(chain) = hashes.get(key) else {
            continue;
        };
        let n = chain.len() as u64;
        // Candidates: (what, seq, proof).
        let mut candidates: Vec<(String, u64, &TlogProof)> = embedded
            .iter()
            .filter(|e| &e.project == project && &e.session_id == session)
            .map(|e| (format!("line {}", e.line), e.seq, &e.proof))
            .collect();
        candidates.extend(
            log.files
                .iter()
                .map(|(f, p)| (f.display().to_string(), n, p)),
        );
        let project_suffix = crate::transparency::origin("", project);
        let mut why_not = Vec::new();
        let mut proved: Option<Proved> = None;
        for (what, seq, proof) in candidates {
            let Some(hash) = seq.checked_sub(1).and_then(|i| chain.get(i as usize)) else {
                why_not.push(format!("{what}: the session has no seq {seq}"));
                continue;
            };
            let Ok(entry) = agentledger_store::log::leaf_entry(session, seq, hash) else {
                why_not.push("the session id cannot be a log leaf".into());
                continue;
            };
            let leaf = agentledger_tlog::leaf_hash(&entry);
            let cp = match proof.verify(&leaf, &[&log.verifier]) {
                Ok((cp, _)) => cp,
                Err(e) => {
                    why_not.push(format!("{what}: {e}"));
                    continue;
                }
            };
            if !cp.origin.ends_with(&project_suffix) {
                why_not.push(format!(
                    "{what}: the proof is of log {}, not of project {project:?}'s",
                    cp.origin
                ));
                continue;
            }
            let witnesses = match &log.policy {
                None => None,
                Some(policy) => match policy.verify_checkpoint(&proof.checkpoint) {
                    Ok(v) => Some(v.witnesses),
                    Err(e) => {
                        why_not.push(format!("{what}: witness policy: {e}"));
                        continue;
                    }
                },
            };
            if proved.as_ref().is_none_or(|p| seq > p.0) {
                proved = Some((seq, proof.index, cp, witnesses, what));
            }
        }
        match proved {
            Some((seq, index, cp, witnesses, what)) => {
                let cosigned = witnesses
                    .map(|w| format!(", cosigned by {}", w.join(", ")))
                    .unwrap_or_default();
                let rest = if seq < n {
                    format!(" (seqs {}..{n} are not in that checkpoint)", seq + 1)
                } else {
                    String::new()
                };
                println!(
                    "OK {project}/{session}: seq {seq} of {n} is leaf {index} of {} at size {}{cosigned} ({what}){rest}",
                    cp.origin, cp.size
                );
            }
            None => {
                failures += 1;
                if why_not.is_empty() {
                    println!(
                        "FAIL {project}/{session}: no log proof for this session (the export has no log proof line for it and no --log-proof proves its last event, seq {n}) under a checkpoint signed by {}",
                        log.verifier.name()
                    );
                } else {
                    println!(
                        "FAIL {project}/{session}: no log proof holds: {}",
                        why_not.join("; ")
                    );
                }
            }
        }
    }
    failures
}
