//! `agentledger verify --file --log-key --log-proof`: checks, offline, that the sessions of an
//! export are in their projects' transparency logs (docs/transparency.md, "Offline
//! verification"). Needs only the export, the tlog-proofs and the log's verifier key.

use std::collections::HashMap;
use std::path::PathBuf;

/// What `verify --file --log-key` checks the sessions against.
pub struct LogProofs {
    verifier: agentledger_tlog::note::Ed25519Verifier,
    /// Each proof with the file it came from.
    proofs: Vec<(PathBuf, agentledger_tlog::proof::TlogProof)>,
}

/// A `--log-key` argument: a log's verifier key, or a file holding one.
pub fn read_log_key(key: &str) -> Result<agentledger_tlog::note::Ed25519Verifier, String> {
    use agentledger_tlog::note::Ed25519Verifier;
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

pub fn read_log_proofs(key: &str, files: &[PathBuf]) -> Result<LogProofs, String> {
    let verifier = read_log_key(key)?;
    let proofs = files
        .iter()
        .map(|f| {
            let bytes =
                std::fs::read(f).map_err(|e| format!("cannot read {}: {e}", f.display()))?;
            agentledger_tlog::proof::TlogProof::parse(&bytes)
                .map(|p| (f.clone(), p))
                .map_err(|e| format!("{}: not a tlog-proof: {e}", f.display()))
        })
        .collect::<Result<_, String>>()?;
    Ok(LogProofs { verifier, proofs })
}

/// Checks that each intact session's last event is in its project's log: some proof must
/// prove that event's leaf (docs/transparency.md "Leaves") under a checkpoint signed by the
/// key, for the log of the session's project. The chain links every earlier event into that
/// last hash, so the whole session is in the log. Returns the failures printed.
pub fn check_log_proofs(
    log: &LogProofs,
    last: &HashMap<(String, String), (u64, [u8; 32])>,
    intact: &[(String, String)],
) -> usize {
    let mut failures = 0;
    for key @ (project, session) in intact {
        let Some((seq, hash)) = last.get(key) else {
            continue;
        };
        let Ok(entry) = agentledger_store::log::leaf_entry(session, *seq, hash) else {
            println!("FAIL {project}/{session}: the session id cannot be a log leaf");
            failures += 1;
            continue;
        };
        let leaf = agentledger_tlog::leaf_hash(&entry);
        let project_suffix = crate::transparency::origin("", project);
        let found = log.proofs.iter().find_map(|(file, proof)| {
            proof
                .verify(&leaf, &[&log.verifier])
                .ok()
                .map(|(cp, _)| (file, proof.index, cp))
        });
        match found {
            Some((file, index, cp)) if cp.origin.ends_with(&project_suffix) => println!(
                "OK {project}/{session}: seq {seq} is leaf {index} of {} at size {} ({})",
                cp.origin,
                cp.size,
                file.display()
            ),
            Some((_, _, cp)) => {
                failures += 1;
                println!(
                    "FAIL {project}/{session}: the proof is of log {}, not of project {project:?}'s",
                    cp.origin
                );
            }
            None => {
                failures += 1;
                println!(
                    "FAIL {project}/{session}: no log proof given proves its last event (seq {seq}) under a checkpoint signed by {}",
                    agentledger_tlog::note::NoteVerifier::name(&log.verifier)
                );
            }
        }
    }
    failures
}
