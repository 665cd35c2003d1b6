//! Clients that post native events to a few shared sessions through any of
//! the nodes, keeping a ledger of every answer; and the check of that ledger
//! against what the nodes serve afterwards.
//!
//! Clients never resend a request, so an event found twice could only have
//! been appended twice by the server.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// An acknowledged event as its 201 described it.
#[derive(Clone, Debug)]
pub struct Acked {
    pub marker: String,
    pub session: String,
    pub id: String,
    pub seq: u64,
    pub hash: String,
}

#[derive(Default)]
pub struct Ledger {
    pub acked: Vec<Acked>,
    /// Markers of requests refused (503/429 with Retry-After): none may be stored.
    pub refused: Vec<Vec<String>>,
    /// Markers of requests without an answer (a killed node, a cut connection).
    pub unknown: Vec<Vec<String>>,
    /// Answers that break the promises (another status, 503 without Retry-After).
    pub bad: Vec<String>,
    /// The first few bodies of refusals, to say why.
    pub refusal_samples: Vec<String>,
    /// Status counts, per node.
    pub statuses: BTreeMap<(String, u16), u64>,
    /// When each node acknowledged, for the longest gap between acks.
    pub ack_times: HashMap<String, Vec<Instant>>,
}

pub struct Load {
    pub ledger: Arc<Mutex<Ledger>>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

pub fn session(k: usize) -> String {
    format!("fault-{k}")
}

impl Load {
    /// `clients` tasks, each posting batches of 1 to 4 events (to random
    /// sessions among `sessions`) through a random node of `bases`.
    pub fn start(bases: &[String], key: &str, clients: usize, sessions: usize) -> Load {
        let ledger = Arc::new(Mutex::new(Ledger::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..clients)
            .map(|c| {
                tokio::spawn(client(
                    bases.to_vec(),
                    key.to_owned(),
                    c,
                    sessions,
                    ledger.clone(),
                    stop.clone(),
                ))
            })
            .collect();
        Load {
            ledger,
            stop,
            tasks,
        }
    }

    pub fn acked(&self) -> usize {
        self.ledger.lock().expect("ledger").acked.len()
    }

    /// Acks by `node` sent after `since`.
    pub fn acks_since(&self, node: &str, since: Instant) -> usize {
        let l = self.ledger.lock().expect("ledger");
        l.ack_times
            .get(node)
            .map_or(0, |t| t.iter().filter(|t| **t >= since).count())
    }

    /// Stop the clients and wait for their last answers.
    pub async fn finish(self) -> Ledger {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.tasks {
            t.await.expect("client task");
        }
        Arc::try_unwrap(self.ledger)
            .ok()
            .expect("clients done")
            .into_inner()
            .expect("ledger")
    }
}

async fn client(
    bases: Vec<String>,
    key: String,
    c: usize,
    sessions: usize,
    ledger: Arc<Mutex<Ledger>>,
    stop: Arc<AtomicBool>,
) {
    let http = reqwest::Client::builder()
        // Longer than the writer's 30 s search for an unknown COMMIT outcome.
        .timeout(Duration::from_secs(45))
        .build()
        .expect("client");
    let mut state = 0x9E37_79B9_7F4A_7C15u64.wrapping_mul(c as u64 + 1);
    let mut rnd = move |n: usize| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % n as u64) as usize
    };
    let mut counter = 0u64;
    while !stop.load(Ordering::SeqCst) {
        let base = &bases[rnd(bases.len())];
        let n = 1 + rnd(4);
        let mut markers = Vec::new();
        let mut sess = Vec::new();
        let events: Vec<Value> = (0..n)
            .map(|_| {
                counter += 1;
                let m = format!("c{c}-{counter}");
                let s = session(rnd(sessions));
                markers.push(m.clone());
                sess.push(s.clone());
                json!({"session_id": s, "agent_id": "fault-agent", "kind": "tool_call",
                       "payload": {"toolName": "search", "callId": m, "marker": m,
                                   "arguments": {"q": format!("fault test {m}")}}})
            })
            .collect();
        let r = http
            .post(format!("{base}/api/v1/events"))
            .bearer_auth(&key)
            .json(&json!({ "events": events }))
            .send()
            .await;
        let answer = match r {
            Ok(r) => {
                let status = r.status();
                let retry_after = r.headers().contains_key("retry-after");
                r.bytes().await.ok().map(|b| (status, retry_after, b))
            }
            Err(_) => None,
        };
        if record(&ledger, base, n, markers, sess, answer) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Put one answer in the ledger; true when the client should back off.
fn record(
    ledger: &Mutex<Ledger>,
    base: &str,
    n: usize,
    markers: Vec<String>,
    sess: Vec<String>,
    answer: Option<(reqwest::StatusCode, bool, bytes::Bytes)>,
) -> bool {
    let base = base.to_owned();
    let mut l = ledger.lock().expect("ledger");
    let Some((status, retry_after, body)) = answer else {
        l.unknown.push(markers);
        *l.statuses.entry((base, 0)).or_default() += 1;
        return true;
    };
    *l.statuses
        .entry((base.clone(), status.as_u16()))
        .or_default() += 1;
    if status == reqwest::StatusCode::CREATED {
        let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let acks = v["events"].as_array().cloned().unwrap_or_default();
        if acks.len() != n {
            l.bad.push(format!("201 without an ack per event: {v}"));
            return false;
        }
        for ((m, s), a) in markers.into_iter().zip(sess).zip(acks) {
            l.acked.push(Acked {
                marker: m,
                session: s,
                id: a["id"].as_str().unwrap_or_default().to_owned(),
                seq: a["seq"].as_u64().unwrap_or(0),
                hash: a["hash"].as_str().unwrap_or_default().to_owned(),
            });
        }
        l.ack_times.entry(base).or_default().push(Instant::now());
        false
    } else {
        let expected = status == reqwest::StatusCode::SERVICE_UNAVAILABLE
            || status == reqwest::StatusCode::TOO_MANY_REQUESTS;
        if expected && retry_after {
            l.refused.push(markers);
            if l.refusal_samples.len() < 3 {
                let sample = String::from_utf8_lossy(&body).into_owned();
                l.refusal_samples.push(sample);
            }
        } else {
            l.bad.push(format!(
                "{base}: {status} (Retry-After: {retry_after}): {}",
                String::from_utf8_lossy(&body)
            ));
            // Its outcome is not promised either way.
            l.unknown.push(markers);
        }
        true
    }
}

/// What the check found.
#[derive(Debug)]
pub struct Report {
    pub acked: usize,
    pub stored: usize,
    pub lost: usize,
    pub duplicated: usize,
    pub refused_stored: usize,
    pub unknown_requests: usize,
    pub unknown_stored: usize,
    pub bad: usize,
}

/// One stored event as an export line shows it.
#[derive(PartialEq, Eq, Debug)]
struct Line {
    seq: u64,
    id: String,
    hash: String,
    marker: Option<String>,
}

/// Every session through `base`: seqs 1..=n, and the verify route says valid.
async fn stored(base: &str, key: &str, sessions: usize) -> Vec<(String, Vec<Line>)> {
    let http = reqwest::Client::new();
    let mut out = Vec::new();
    for k in 0..sessions {
        let s = session(k);
        let r = http
            .get(format!("{base}/api/v1/sessions/{s}/export"))
            .bearer_auth(key)
            .send()
            .await
            .expect("export");
        if r.status() == reqwest::StatusCode::NOT_FOUND {
            continue;
        }
        assert!(r.status().is_success(), "export {s}: {}", r.status());
        let text = r.text().await.expect("export body");
        let lines: Vec<Line> = text
            .lines()
            // Not the log proof line that ends a session's export.
            .filter(|l| !l.starts_with("{\"log_proof\""))
            .map(|l| {
                let v: Value = serde_json::from_str(l).expect("export line is JSON");
                Line {
                    seq: v["seq"].as_u64().unwrap_or(0),
                    id: v["id"].as_str().unwrap_or_default().to_owned(),
                    hash: v["hash"].as_str().unwrap_or_default().to_owned(),
                    marker: v["payload"]["marker"].as_str().map(str::to_owned),
                }
            })
            .collect();
        for (i, l) in lines.iter().enumerate() {
            assert_eq!(l.seq, i as u64 + 1, "{s} through {base}: seq gap");
        }
        let v: Value = http
            .get(format!("{base}/api/v1/sessions/{s}/verify"))
            .bearer_auth(key)
            .send()
            .await
            .expect("verify")
            .json()
            .await
            .expect("verify json");
        assert_eq!(v["valid"], true, "{s} through {base}: {v}");
        assert_eq!(v["events"].as_u64(), Some(lines.len() as u64), "{v}");
        out.push((s, lines));
    }
    out
}

/// Check the clients' ledger against what every node in `bases` serves.
/// Panics on any broken promise; returns the figures.
pub async fn check(bases: &[String], key: &str, sessions: usize, ledger: &Ledger) -> Report {
    let first = stored(&bases[0], key, sessions).await;
    for other in &bases[1..] {
        assert!(
            stored(other, key, sessions).await == first,
            "{other} serves other chains than {}",
            bases[0]
        );
    }
    let mut found: HashMap<&str, (&str, &Line)> = HashMap::new();
    let mut duplicated = 0;
    for (s, lines) in &first {
        for l in lines {
            let m = l
                .marker
                .as_deref()
                .expect("every stored event has a marker");
            if found.insert(m, (s, l)).is_some() {
                duplicated += 1;
            }
        }
    }
    let mut lost = 0;
    for a in &ledger.acked {
        match found.get(a.marker.as_str()) {
            None => lost += 1,
            Some((s, l)) => {
                assert_eq!(*s, a.session, "{} moved session", a.marker);
                assert_eq!(
                    (&l.id, l.seq, &l.hash),
                    (&a.id, a.seq, &a.hash),
                    "{} stored other than acknowledged",
                    a.marker
                );
            }
        }
    }
    let refused_stored = ledger
        .refused
        .iter()
        .flatten()
        .filter(|m| found.contains_key(m.as_str()))
        .count();
    let mut unknown_stored = 0;
    for u in &ledger.unknown {
        let n = u.iter().filter(|m| found.contains_key(m.as_str())).count();
        assert!(
            n == 0 || n == u.len(),
            "a request was stored in part: {n} of {}",
            u.len()
        );
        unknown_stored += n;
    }
    let report = Report {
        acked: ledger.acked.len(),
        stored: found.len() + duplicated,
        lost,
        duplicated,
        refused_stored,
        unknown_requests: ledger.unknown.len(),
        unknown_stored,
        bad: ledger.bad.len(),
    };
    println!("{report:?}");
    println!("statuses (node, status) -> count: {:?}", ledger.statuses);
    println!("refusals, for example: {:?}", ledger.refusal_samples);
    assert_eq!(
        report.stored,
        report.acked + report.unknown_stored,
        "stored events that were never acknowledged nor in doubt"
    );
    assert!(
        ledger.bad.is_empty(),
        "answers outside the promises: {:?}",
        &ledger.bad[..ledger.bad.len().min(5)]
    );
    assert_eq!(
        (
            report.lost,
            report.duplicated,
            report.refused_stored,
            report.bad
        ),
        (0, 0, 0, 0),
        "lost, duplicated, refused-but-stored, answers outside the promises"
    );
    report
}

/// The longest time between two consecutive acks of `node`.
pub fn longest_ack_gap(ledger: &Ledger, node: &str) -> Duration {
    let Some(t) = ledger.ack_times.get(node) else {
        return Duration::ZERO;
    };
    let mut t = t.clone();
    t.sort();
    t.windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or(Duration::ZERO)
}
