//! The log proof a session export ends with (issue 17, docs/transparency.md "Exports carry
//! their proof"): after a session's event lines, one line
//!
//! ```text
//! {"log_proof":{"project":"…","session_id":"…","seq":N,"event_id":"…","tlog_proof":"c2sp.org/tlog-proof@v1\n…"}}
//! ```
//!
//! holding a C2SP tlog-proof of the newest exported event that is in the checkpoint served
//! for the project (with its witnesses' cosignatures). The chain links every earlier event
//! into that event's hash, so the proof covers the session up to seq N; events after N were
//! not in a signed checkpoint yet when the export was made.

use bytes::Bytes;
use serde::Serialize;

use agentledger_store::log::{self, LogCheckpoint};
use agentledger_store::{EventStore, ProjectRef, StoreResult};
use agentledger_tlog::note::{Note, NoteSignature};
use agentledger_tlog::proof::TlogProof;

use crate::cosign::Witnessing;

/// Cosigned sizes the CLI's export looks at for the best-witnessed checkpoint.
const SIZES_LOOKED_AT: u32 = 64;

#[derive(Serialize)]
struct ProofLine<'a> {
    log_proof: ProofBody<'a>,
}

#[derive(Serialize)]
struct ProofBody<'a> {
    project: &'a str,
    session_id: &'a str,
    seq: u64,
    event_id: String,
    tlog_proof: String,
}

/// The checkpoint a server's export proves against: the one `/log/checkpoint` serves.
pub async fn served(
    store: &dyn EventStore,
    witnessing: Option<&Witnessing>,
    project: &ProjectRef,
) -> StoreResult<Option<LogCheckpoint>> {
    crate::cosign::served_checkpoint(store, witnessing, project, None).await
}

/// The checkpoint `agentledger export` (on the database, without the server's witness
/// policy) proves against: among the newest cosigned checkpoints, the one cosigned by the
/// most witnesses (the newest of those), with every cosignature kept for it; the newest
/// checkpoint when none was cosigned. The cosigner keeps only cosignatures that verified.
pub async fn best_witnessed(
    store: &dyn EventStore,
    project: &ProjectRef,
) -> StoreResult<Option<LogCheckpoint>> {
    let cosigs = store
        .log_cosignatures(project, None, SIZES_LOOKED_AT)
        .await?;
    let mut best: Option<(usize, u64)> = None;
    let mut i = 0;
    while i < cosigs.len() {
        let size = cosigs[i].size;
        let n = cosigs[i..].iter().take_while(|c| c.size == size).count();
        if best.is_none_or(|(count, _)| n > count) {
            best = Some((n, size));
        }
        i += n;
    }
    let Some((_, size)) = best else {
        return store.log_checkpoint(project, None).await;
    };
    let Some(mut cp) = store.log_checkpoint(project, Some(size)).await? else {
        return store.log_checkpoint(project, None).await;
    };
    if let Ok(mut note) = Note::parse(&cp.note) {
        for c in cosigs.iter().filter(|c| c.size == size) {
            if let Ok(sig) = NoteSignature::parse_line(c.line.trim_end_matches('\n')) {
                note.add_signature(sig);
            }
        }
        cp.note = note.to_bytes();
    }
    Ok(Some(cp))
}

/// The proof line for `session_id` (exported up to event `last`: its seq and id) under `cp`:
/// for the newest event at or below it whose leaf is in `cp` (normally `last` itself; else a
/// binary search over seq, since a session's leaves are in seq order). `None` if no event of
/// the session is in `cp` yet.
pub async fn proof_line(
    store: &dyn EventStore,
    cp: &LogCheckpoint,
    project: &ProjectRef,
    session_id: &str,
    last: (u64, agentledger_core::EventId),
) -> StoreResult<Option<Bytes>> {
    let (last_seq, last_id) = last;
    // The event at `seq` and its leaf index, if integrated.
    let leaf_of = |seq: u64| async move {
        let Some(ev) = store
            .session_events(project, session_id, seq.saturating_sub(1), 1)
            .await?
            .pop()
            .filter(|e| e.seq == seq)
        else {
            return StoreResult::Ok(None);
        };
        let index = store.log_leaf_index(project, ev.id).await?;
        Ok(index.map(|i| (ev.id, i)))
    };
    let in_cp =
        |found: &Option<(agentledger_core::EventId, u64)>| found.is_some_and(|(_, i)| i < cp.size);
    let mut best = store
        .log_leaf_index(project, last_id)
        .await?
        .map(|i| (last_id, i));
    let mut best_seq = last_seq;
    if !in_cp(&best) {
        // The largest seq in 1..last_seq whose leaf is in the checkpoint.
        let (mut lo, mut hi) = (1u64, last_seq);
        best = None;
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let found = leaf_of(mid).await?;
            if in_cp(&found) {
                best = found;
                best_seq = mid;
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
    }
    let Some((event_id, index)) = best.filter(|(_, i)| *i < cp.size) else {
        return Ok(None);
    };
    let proof = log::inclusion_proof(store, project, index, cp.size).await?;
    let text = TlogProof {
        extra: None,
        index,
        inclusion_proof: proof,
        checkpoint: cp.note.clone(),
    }
    .to_bytes();
    let line = ProofLine {
        log_proof: ProofBody {
            project: &project.name,
            session_id,
            seq: best_seq,
            event_id: event_id.to_string(),
            tlog_proof: String::from_utf8_lossy(&text).into_owned(),
        },
    };
    let mut out = serde_json::to_vec(&line)
        .map_err(|e| agentledger_store::StoreError::Storage(e.to_string()))?;
    out.push(b'\n');
    Ok(Some(Bytes::from(out)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A session whose newest events are not in the checkpoint yet proves its newest event
    /// that is (found by the binary search), and the line verifies for that event.
    #[tokio::test]
    async fn the_proof_line_is_for_the_newest_event_in_the_checkpoint() {
        use agentledger_core::Kind;
        use agentledger_store::conformance::{event, integrate_exactly, project};
        use agentledger_store::sqlite::{SqliteOptions, SqliteStore};

        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(SqliteOptions::new(dir.path().join("l.db"))).unwrap();
        let key = crate::transparency::LogKey::load_or_create(&dir.path().join("log.key")).unwrap();
        let p = project(&store, "p").await;
        // Session "s" interleaved with "o", so its leaves are not consecutive.
        let mut acked = Vec::new();
        for i in 0..15 {
            let evs = vec![
                event("s", Kind::Memory, "{}"),
                event("o", Kind::Memory, &format!("{{\"i\":{i}}}")),
            ];
            acked.extend(store.append(&p, evs).await.unwrap());
            if i == 9 {
                integrate_exactly(&store, &p, 20, 100).await;
                crate::transparency::publish(&store, &key, "o", &p)
                    .await
                    .unwrap()
                    .unwrap();
            }
        }
        integrate_exactly(&store, &p, 10, 100).await;
        let cp = store.log_checkpoint(&p, None).await.unwrap().unwrap();
        assert_eq!(cp.size, 20, "the last ten leaves are not signed");
        let s: Vec<_> = acked.iter().filter(|e| e.session_id == "s").collect();
        let last = s.last().unwrap();
        assert_eq!(last.seq, 15);
        let line = proof_line(&store, &cp, &p, "s", (last.seq, last.id))
            .await
            .unwrap()
            .expect("a line");
        let v: serde_json::Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(v["log_proof"]["seq"], 10);
        assert_eq!(v["log_proof"]["event_id"], s[9].id.to_string());
        let proof =
            TlogProof::parse(v["log_proof"]["tlog_proof"].as_str().unwrap().as_bytes()).unwrap();
        let entry = log::leaf_entry("s", 10, &s[9].hash).unwrap();
        let (verified, _) = proof
            .verify(
                &agentledger_tlog::leaf_hash(&entry),
                &[&key.verifier("o/p").unwrap()],
            )
            .unwrap();
        assert_eq!(verified.size, 20);

        // The checkpoint holds the whole session: the line is for its last event.
        crate::transparency::publish(&store, &key, "o", &p)
            .await
            .unwrap()
            .unwrap();
        let cp = store.log_checkpoint(&p, None).await.unwrap().unwrap();
        let line = proof_line(&store, &cp, &p, "s", (last.seq, last.id))
            .await
            .unwrap()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(v["log_proof"]["seq"], 15);
        // A session with nothing in the checkpoint has no line.
        let first = store.log_checkpoint(&p, Some(20)).await.unwrap().unwrap();
        let late = store
            .append(&p, vec![event("late", Kind::Memory, "{}")])
            .await
            .unwrap();
        integrate_exactly(&store, &p, 1, 100).await;
        assert!(
            proof_line(&store, &first, &p, "late", (1, late[0].id))
                .await
                .unwrap()
                .is_none()
        );
        store.close().await;
    }
}
