//! `agentledger log monitor`: follows one project's transparency log over HTTP and checks it
//! against what the server's API says (issue 17, docs/transparency.md "Monitoring a log").
//!
//! A round:
//! 1. fetches `/log/checkpoint` and accepts it only if it is signed by the log key (and, with
//!    a witness policy, cosigned by a quorum); a checkpoint smaller than the trusted one
//!    (rollback), of the same size with another root (fork), or whose consistency proof from
//!    the trusted size does not verify (RFC 9162) is refused;
//! 2. downloads the entry bundles of the new leaves and recomputes the root from them,
//!    extending the trusted tree's right edge (kept in the state file): the entries must hash
//!    to the checkpoint's root, so the monitor holds its own copy of every session's last
//!    leaf, and each session's leaves must have the seqs 1, 2, 3… in order;
//! 3. only then trusts the checkpoint (state file, one transaction);
//! 4. checks the native API against its copy: every session with leaves must still be listed,
//!    with at least that many events, and its event at the last logged seq must have the
//!    logged chain hash. A session rewritten and re-chained in the database fails here.
//!
//! Each failure is one `FAIL …` line naming what is wrong; a round that could not finish (the
//! server unreachable, an unexpected status) prints `ERROR …` and concludes nothing.

mod http;
mod state;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use agentledger_tlog::integrate::{integrate, right_edge_tiles};
use agentledger_tlog::note::{Ed25519Verifier, NoteVerifier, open};
use agentledger_tlog::policy::Policy;
use agentledger_tlog::tile::{TILE_WIDTH, parse_entry_bundle};
use agentledger_tlog::{Checkpoint, Hash, Tile, leaf_hash, verify_consistency};

use http::{FetchError, LogClient};
use state::{SessionLeaf, State, StateError, Trusted};

/// Largest checkpoint note read: as a witness takes (crate::witness::MAX_BODY), room for 16
/// cosignatures of post-quantum size, which signed-note asks a verifier to accept.
const MAX_CHECKPOINT: usize = 128 * 1024;
/// Largest entry bundle: 256 entries of at most 65,535 bytes, each with its length.
const MAX_BUNDLE: usize = 256 * (2 + 65_535);
/// Largest JSON answer read (a consistency proof, a page of sessions).
const MAX_JSON: usize = 64 * 1024 * 1024;
/// Longest export line read while looking for one event.
const MAX_LINE: usize = 64 * 1024 * 1024;
/// Sessions asked for per page (the API's maximum).
const SESSIONS_PAGE: u32 = 500;

pub struct MonitorConfig {
    pub url: String,
    pub key: String,
    pub log_key: Ed25519Verifier,
    pub state: PathBuf,
    pub policy: Option<Policy>,
    pub once: bool,
    pub interval: Duration,
    pub timeout: Duration,
}

/// Why a round could not finish.
#[derive(Debug, thiserror::Error)]
enum RoundError {
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("{0}")]
    Answer(String),
}

/// Runs rounds: with `once`, one; otherwise until a round finds a failure. Exit status: 0
/// nothing wrong, 1 a failure was found, 2 the (single) round could not finish.
pub async fn run(cfg: MonitorConfig) -> u8 {
    let client = match LogClient::new(&cfg.url, &cfg.key, cfg.timeout) {
        Ok(c) => c,
        Err(e) => {
            println!("ERROR {e}");
            return 2;
        }
    };
    let mut state = match State::open(&cfg.state) {
        Ok(s) => s,
        Err(e) => {
            println!("ERROR {e}");
            return 2;
        }
    };
    loop {
        match round(&client, &cfg, &mut state).await {
            Ok(report) => {
                for line in &report.failures {
                    println!("FAIL {line}");
                }
                if let Some(ok) = &report.ok {
                    println!("OK {ok}");
                }
                if !report.failures.is_empty() {
                    return 1;
                }
                if cfg.once {
                    return 0;
                }
            }
            Err(e) => {
                println!("ERROR {e}");
                if cfg.once {
                    return 2;
                }
            }
        }
        tokio::time::sleep(cfg.interval).await;
    }
}

#[derive(Default)]
struct Report {
    failures: Vec<String>,
    ok: Option<String>,
}

/// The leaf entry of docs/transparency.md "Leaves", parsed.
fn parse_leaf(entry: &[u8]) -> Option<(String, u64, [u8; 32])> {
    let (&version, rest) = entry.split_first()?;
    if version != agentledger_store::log::LEAF_FORMAT_V1 || rest.len() < 2 {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
    let rest = &rest[2..];
    if rest.len() != len + 8 + 32 {
        return None;
    }
    let session = std::str::from_utf8(&rest[..len]).ok()?.to_owned();
    let seq = u64::from_be_bytes(rest[len..len + 8].try_into().ok()?);
    let hash: [u8; 32] = rest[len + 8..].try_into().ok()?;
    Some((session, seq, hash))
}

/// A path segment with every byte other than `A–Z a–z 0–9 - . _ ~` percent-encoded.
fn encode(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[derive(Deserialize)]
struct ConsistencyAnswer {
    consistency_proof: Vec<String>,
}

#[derive(Deserialize)]
struct SessionsPage {
    sessions: Vec<SessionHead>,
    next_cursor: Option<String>,
}

#[derive(Deserialize)]
struct SessionHead {
    id: String,
    head_seq: u64,
    head_hash: Option<String>,
}

#[derive(Deserialize)]
struct ExportedEvent {
    seq: Option<u64>,
    hash: Option<String>,
}

async fn round(
    client: &LogClient,
    cfg: &MonitorConfig,
    state: &mut State,
) -> Result<Report, RoundError> {
    let mut report = Report::default();
    let origin = cfg.log_key.name().to_owned();
    let trusted = state.trusted()?;
    if let Some(t) = &trusted
        && t.origin != origin
    {
        report.failures.push(format!(
            "state: the state file follows the log {:?}, the log key names {origin:?}",
            t.origin
        ));
        return Ok(report);
    }
    let note = match client.get("/log/checkpoint", MAX_CHECKPOINT).await {
        Ok(note) => note,
        Err(e) if e.status() == Some(404) => {
            match &trusted {
                None => report.ok = Some(format!("{origin}: no checkpoint published yet")),
                Some(t) => report.failures.push(format!(
                    "rollback: the log serves no checkpoint; the trusted one has size {}",
                    t.size
                )),
            }
            return Ok(report);
        }
        Err(e) => return Err(e.into()),
    };
    match check_checkpoint(client, cfg, state, trusted.as_ref(), &note).await? {
        Ok(done) => {
            let sessions = state.sessions()?;
            let checked = check_sessions(client, &sessions, &mut report.failures).await?;
            if report.failures.is_empty() {
                report.ok = Some(format!(
                    "{origin}: size {}, root {}{}; {checked} sessions match the log",
                    done.size,
                    done.root.to_base64(),
                    if done.grew { "" } else { " (unchanged)" },
                ));
            }
        }
        Err(failure) => {
            report.failures.push(failure);
            // The log is not trusted further, but the trusted copy still judges the API.
            let sessions = state.sessions()?;
            check_sessions(client, &sessions, &mut report.failures).await?;
        }
    }
    Ok(report)
}

struct Accepted {
    size: u64,
    root: Hash,
    grew: bool,
}

/// Steps 1–3: `Ok(Err(failure))` when the checkpoint is refused.
async fn check_checkpoint(
    client: &LogClient,
    cfg: &MonitorConfig,
    state: &mut State,
    trusted: Option<&Trusted>,
    note: &[u8],
) -> Result<Result<Accepted, String>, RoundError> {
    let origin = cfg.log_key.name();
    let opened = match open(note, &[&cfg.log_key as &dyn NoteVerifier]) {
        Ok(o) => o,
        Err(e) => {
            return Ok(Err(format!(
                "checkpoint: not signed by the log key {origin}: {e}"
            )));
        }
    };
    let cp = match Checkpoint::from_opened(&opened) {
        Ok(cp) => cp,
        Err(e) => return Ok(Err(format!("checkpoint: malformed: {e}"))),
    };
    if cp.origin != origin {
        return Ok(Err(format!(
            "checkpoint: origin {:?} is not the log key's {origin:?}",
            cp.origin
        )));
    }
    if let Some(policy) = &cfg.policy
        && let Err(e) = policy.verify_checkpoint(note)
    {
        return Ok(Err(format!(
            "witness policy: checkpoint of size {}: {e}",
            cp.size
        )));
    }
    let (old_size, old_root) =
        trusted.map_or((0, agentledger_tlog::EMPTY_ROOT), |t| (t.size, t.root));
    if cp.size < old_size {
        return Ok(Err(format!(
            "rollback: checkpoint size {} is smaller than the trusted size {old_size}",
            cp.size
        )));
    }
    if cp.size == old_size {
        if cp.root != old_root {
            return Ok(Err(format!(
                "fork: checkpoint of size {} has root {}, the trusted one {}",
                cp.size,
                cp.root.to_base64(),
                old_root.to_base64()
            )));
        }
        return Ok(Ok(Accepted {
            size: cp.size,
            root: cp.root,
            grew: false,
        }));
    }
    if old_size > 0 {
        let path = format!("/log/proof/consistency/{old_size}?to={}", cp.size);
        let body = client.get(&path, MAX_JSON).await?;
        let answer: ConsistencyAnswer = serde_json::from_slice(&body)
            .map_err(|e| RoundError::Answer(format!("GET {path}: {e}")))?;
        let proof: Result<Vec<Hash>, _> = answer
            .consistency_proof
            .iter()
            .map(|h| Hash::parse_base64(h))
            .collect();
        let verified = proof.map_err(|e| e.to_string()).and_then(|p| {
            verify_consistency(old_size, cp.size, &old_root, &cp.root, &p)
                .map_err(|e| e.to_string())
        });
        if let Err(e) = verified {
            return Ok(Err(format!(
                "inconsistent: checkpoint of size {} is not consistent with the trusted size {old_size}: {e}",
                cp.size
            )));
        }
    }

    // The new leaves, from the entry bundles; their hashes extend the trusted tree.
    let mut entries: Vec<Vec<u8>> = Vec::new();
    let first_bundle = old_size / u64::from(TILE_WIDTH);
    let last_bundle = (cp.size - 1) / u64::from(TILE_WIDTH);
    for n in first_bundle..=last_bundle {
        let start = n * u64::from(TILE_WIDTH);
        let width =
            u16::try_from((cp.size - start).min(u64::from(TILE_WIDTH))).unwrap_or(TILE_WIDTH);
        let tile = Tile {
            level: 0,
            index: n,
            width,
        };
        let Some(path) = tile.entries_path() else {
            continue;
        };
        let data = client.get(&format!("/log/{path}"), MAX_BUNDLE).await?;
        let bundle = match parse_entry_bundle(&data, width) {
            Ok(b) => b,
            Err(e) => return Ok(Err(format!("entries: /log/{path}: {e}"))),
        };
        let skip = usize::try_from(old_size.saturating_sub(start)).unwrap_or(usize::MAX);
        entries.extend(bundle.into_iter().skip(skip).map(<[u8]>::to_vec));
    }
    let right_edge = state.right_edge()?;
    let hashes: Vec<Hash> = entries.iter().map(|e| leaf_hash(e)).collect();
    let grown = match integrate(old_size, &right_edge, &hashes) {
        Ok(g) => g,
        Err(e) => {
            return Err(RoundError::Answer(format!(
                "the state's right edge does not extend the tree: {e}"
            )));
        }
    };
    if grown.root != cp.root {
        return Ok(Err(format!(
            "entries: the entries of leaves {old_size}..{} hash to root {}, the checkpoint says {}",
            cp.size,
            grown.root.to_base64(),
            cp.root.to_base64()
        )));
    }

    // Each session's leaves carry its seqs in order, one leaf per event.
    let mut last: HashMap<String, SessionLeaf> = state.sessions()?.into_iter().collect();
    let mut changed: std::collections::HashSet<String> = std::collections::HashSet::new();
    for (i, entry) in entries.iter().enumerate() {
        let index = old_size + i as u64;
        let Some((session, seq, hash)) = parse_leaf(entry) else {
            return Ok(Err(format!(
                "entries: leaf {index} is not a version 1 leaf"
            )));
        };
        let expected = last.get(&session).map_or(1, |l| l.seq + 1);
        if seq != expected {
            return Ok(Err(format!(
                "session {session}: leaf {index} has seq {seq}, expected {expected}"
            )));
        }
        changed.insert(session.clone());
        last.insert(session, SessionLeaf { seq, hash, index });
    }
    let leaves: Vec<(String, SessionLeaf)> = changed
        .into_iter()
        .filter_map(|s| last.remove(&s).map(|l| (s, l)))
        .collect();

    // The new right edge: the trusted one, updated with the tiles this growth wrote.
    let mut tiles: HashMap<(u8, u64), (Tile, Vec<u8>)> = right_edge
        .into_iter()
        .map(|(t, d)| ((t.level, t.index), (t, d)))
        .collect();
    for (t, d) in grown.tiles {
        tiles.insert((t.level, t.index), (t, d));
    }
    let mut edge = Vec::new();
    for t in right_edge_tiles(cp.size) {
        match tiles.remove(&(t.level, t.index)) {
            Some((have, data)) if have.width == t.width => edge.push((have, data)),
            _ => {
                return Err(RoundError::Answer(format!(
                    "tile {} of the right edge was not computed",
                    t.path()
                )));
            }
        }
    }
    state.advance(
        &Trusted {
            origin: origin.to_owned(),
            size: cp.size,
            root: cp.root,
            note: note.to_vec(),
        },
        &edge,
        &leaves,
    )?;
    Ok(Ok(Accepted {
        size: cp.size,
        root: cp.root,
        grew: true,
    }))
}

/// Step 4: every session with leaves against the native API. Returns the sessions checked.
async fn check_sessions(
    client: &LogClient,
    logged: &[(String, SessionLeaf)],
    failures: &mut Vec<String>,
) -> Result<usize, RoundError> {
    let mut served: HashMap<String, (u64, Option<String>)> = HashMap::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = format!("/api/v1/sessions?limit={SESSIONS_PAGE}");
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={}", encode(c)));
        }
        let body = client.get(&path, MAX_JSON).await?;
        let page: SessionsPage = serde_json::from_slice(&body)
            .map_err(|e| RoundError::Answer(format!("GET {path}: {e}")))?;
        for s in page.sessions {
            served.insert(s.id, (s.head_seq, s.head_hash));
        }
        match page.next_cursor {
            Some(c) if Some(&c) != cursor.as_ref() => cursor = Some(c),
            _ => break,
        }
    }
    for (session, leaf) in logged {
        let logged_hash = hex::encode(leaf.hash);
        let Some((head_seq, head_hash)) = served.get(session) else {
            failures.push(format!(
                "session {session}: vanished from the API; the log holds seq {} (leaf {})",
                leaf.seq, leaf.index
            ));
            continue;
        };
        if *head_seq < leaf.seq {
            failures.push(format!(
                "session {session}: the API serves {head_seq} events, the log holds seq {} (leaf {})",
                leaf.seq, leaf.index
            ));
            continue;
        }
        let served_hash = if *head_seq == leaf.seq {
            head_hash.clone()
        } else {
            event_hash(client, session, leaf.seq).await?
        };
        match served_hash {
            Some(h) if h.eq_ignore_ascii_case(&logged_hash) => {}
            Some(h) => failures.push(format!(
                "session {session}: seq {} has hash {h} in the API, {logged_hash} in the log (leaf {})",
                leaf.seq, leaf.index
            )),
            None => failures.push(format!(
                "session {session}: the API has no hash for seq {}; the log holds {logged_hash} (leaf {})",
                leaf.seq, leaf.index
            )),
        }
    }
    Ok(logged.len())
}

/// The hash the API's export of `session` gives its event `seq` (read up to that line).
async fn event_hash(
    client: &LogClient,
    session: &str,
    seq: u64,
) -> Result<Option<String>, RoundError> {
    let path = format!("/api/v1/sessions/{}/export", encode(session));
    let mut found: Option<String> = None;
    client
        .each_line(&path, MAX_LINE, |line| {
            match serde_json::from_slice::<ExportedEvent>(line) {
                Ok(ExportedEvent {
                    seq: Some(s),
                    hash: Some(h),
                }) if s == seq => {
                    found = Some(h);
                    false
                }
                Ok(ExportedEvent { seq: Some(s), .. }) => s < seq,
                _ => true,
            }
        })
        .await?;
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaves_parse_as_documented() {
        let entry = agentledger_store::log::leaf_entry("sess-1", 2, &[0xab; 32]).expect("entry");
        assert_eq!(parse_leaf(&entry), Some(("sess-1".into(), 2, [0xab; 32])));
        let mut longer = entry.clone();
        longer.push(0);
        assert_eq!(parse_leaf(&longer), None);
        let mut v2 = entry;
        v2[0] = 2;
        assert_eq!(parse_leaf(&v2), None);
        assert_eq!(parse_leaf(&[]), None);
    }

    #[test]
    fn path_segments_are_percent_encoded() {
        assert_eq!(encode("a b/c"), "a%20b%2Fc");
        assert_eq!(encode("s-1.x_~"), "s-1.x_~");
    }
}
