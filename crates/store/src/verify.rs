//! Verification of stored chains, shared by the HTTP API and the CLI.

use agentledger_core::{ChainVerifier, VerifyReport};

use crate::{EventStore, ProjectRef, StoreResult};

/// Events read per round trip while verifying.
const CHUNK: u32 = 5_000;

/// Verify one session's chain as stored, including its recorded head.
/// Returns `None` if the session does not exist in `project`.
pub async fn verify_session(
    store: &dyn EventStore,
    project: &ProjectRef,
    session_id: &str,
) -> StoreResult<Option<VerifyReport>> {
    let Some(session) = store.get_session(project, session_id).await? else {
        return Ok(None);
    };
    let mut verifier = ChainVerifier::new();
    let mut after = 0;
    loop {
        let events = store
            .session_events(project, session_id, after, CHUNK)
            .await?;
        let Some(last) = events.last() else { break };
        after = last.seq;
        for ev in &events {
            if !verifier.push(ev) {
                break;
            }
        }
        if verifier.failed() || events.len() < CHUNK as usize {
            break;
        }
    }
    Ok(Some(
        verifier.finish(Some((session.head_seq, session.head_hash))),
    ))
}
