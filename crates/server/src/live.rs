//! Committed events as they happen, for the live tail (the console's and
//! `GET /api/v1/events/stream`). The ingest pipeline publishes a summary of
//! each event right after its commit; each stream subscribes and keeps the
//! events of its own project that pass its filters.
//!
//! Bounded: the channel keeps the last [`BACKLOG`] events; a stream that
//! falls further behind is told how many it missed (never silently), and a
//! key holds at most [`STREAMS_PER_KEY`] streams at once. One process sees
//! its own commits: with several servers on one PostgreSQL database, a
//! stream shows the events committed through the server it is connected to.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tokio::sync::{broadcast, watch};
use utoipa::ToSchema;

use agentledger_core::query::EventQuery;
use agentledger_core::verdict::Decision;
use agentledger_core::{Dialect, Kind, Micros, NewEvent, Severity};
use agentledger_store::AppendedEvent;

/// Events kept for streams that are behind.
pub const BACKLOG: usize = 4096;
/// Streams one API key may hold open at once (the console's count too).
pub const STREAMS_PER_KEY: usize = 4;

/// One committed event as a stream sends it (`data:` of an SSE `event`).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LiveEvent {
    #[serde(skip)]
    pub project_id: i64,
    pub id: String,
    pub session_id: String,
    pub seq: u64,
    pub agent_id: String,
    pub kind: String,
    pub source_type: String,
    pub dialect: String,
    pub severity: String,
    /// allow, flag or deny; null without the policy checkpoint.
    pub decision: Option<String>,
    /// When it happened: the client's timestamp, else the receive time.
    pub timestamp: String,
    pub received_at: String,
    pub hash: String,
    #[serde(skip)]
    time: Micros,
}

impl LiveEvent {
    pub fn new(project_id: i64, ev: &NewEvent, a: &AppendedEvent) -> LiveEvent {
        let time = ev.client_ts.unwrap_or(a.server_ts);
        LiveEvent {
            project_id,
            id: a.id.to_string(),
            session_id: a.session_id.clone(),
            seq: a.seq,
            agent_id: ev.agent_id.as_str().to_owned(),
            kind: ev.kind.as_str().into(),
            source_type: ev.source_type.clone(),
            dialect: ev.dialect.as_str().into(),
            severity: ev.severity.as_str().into(),
            decision: ev
                .judgement
                .as_ref()
                .map(|j| j.decision.as_str().to_owned()),
            timestamp: time.to_rfc3339(),
            received_at: a.server_ts.to_rfc3339(),
            hash: hex::encode(a.hash),
            time,
        }
    }

    /// Whether the event passes a listing's filters (those a stream takes).
    pub fn matches(&self, q: &EventQuery) -> bool {
        let is = |want: &Option<String>, have: &str| want.as_deref().is_none_or(|w| w == have);
        let any = |list: &[&str], have: &str| list.is_empty() || list.contains(&have);
        let kinds: Vec<&str> = q.kinds.iter().map(|k: &Kind| k.as_str()).collect();
        let sevs: Vec<&str> = q.severities.iter().map(|s: &Severity| s.as_str()).collect();
        let decs: Vec<&str> = q.decisions.iter().map(|d: &Decision| d.as_str()).collect();
        is(&q.session_id, &self.session_id)
            && is(&q.agent_id, &self.agent_id)
            && any(&kinds, &self.kind)
            && any(&sevs, &self.severity)
            && (decs.is_empty() || self.decision.as_deref().is_some_and(|d| decs.contains(&d)))
            && q.dialect
                .is_none_or(|d: Dialect| d.as_str() == self.dialect)
            && q.from.is_none_or(|f| self.time >= f)
            && q.to.is_none_or(|t| self.time <= t)
    }
}

/// The hub: a channel per project with open streams, the open streams per
/// key, and the stop signal. One channel per project, not one for all: a
/// project's stream then lags only behind its own project's commits, and
/// the count its `lagged` event gives is of those alone (a shared channel's
/// count told every project the whole server's commit rate, and a busy
/// project pushed its neighbours' streams behind).
pub struct Live {
    /// Each project's channel and its number of open streams (counted here,
    /// under the lock, not read off the channel: two streams ending at once
    /// would each still see the other's receiver and leave it behind).
    channels: Mutex<HashMap<i64, Channel>>,
    open: Mutex<HashMap<String, usize>>,
    stop: watch::Sender<bool>,
}

/// One project's channel, and how many of its streams are open.
struct Channel {
    tx: broadcast::Sender<Arc<LiveEvent>>,
    streams: usize,
}

impl Default for Live {
    fn default() -> Self {
        Live {
            channels: Mutex::new(HashMap::new()),
            open: Mutex::new(HashMap::new()),
            stop: watch::channel(false).0,
        }
    }
}

/// One open stream: its subscription, and its place among its key's
/// streams (given back when dropped).
pub struct Subscription {
    pub rx: broadcast::Receiver<Arc<LiveEvent>>,
    pub stop: watch::Receiver<bool>,
    hub: Arc<Live>,
    key_id: String,
    project_id: i64,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        {
            // The last stream of its project takes the channel with it.
            let mut c = self.hub.channels.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(ch) = c.get_mut(&self.project_id) {
                ch.streams = ch.streams.saturating_sub(1);
                if ch.streams == 0 {
                    c.remove(&self.project_id);
                }
            }
        }
        let mut m = self.hub.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = m.get_mut(&self.key_id) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                m.remove(&self.key_id);
            }
        }
    }
}

impl Live {
    /// Publish committed events (no one listening is fine).
    pub fn publish(&self, project_id: i64, events: &[NewEvent], appended: &[AppendedEvent]) {
        let tx = {
            let c = self.channels.lock().unwrap_or_else(|p| p.into_inner());
            match c.get(&project_id) {
                Some(ch) => ch.tx.clone(),
                None => return,
            }
        };
        for (ev, a) in events.iter().zip(appended) {
            let _ = tx.send(Arc::new(LiveEvent::new(project_id, ev, a)));
        }
    }

    /// Open a stream of `project_id`'s commits for `key_id` (a key of that
    /// project); `None` when the key already holds its [`STREAMS_PER_KEY`].
    pub fn subscribe(self: &Arc<Self>, key_id: &str, project_id: i64) -> Option<Subscription> {
        let mut m = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let n = m.entry(key_id.to_owned()).or_default();
        if *n >= STREAMS_PER_KEY {
            return None;
        }
        *n += 1;
        let rx = {
            let mut c = self.channels.lock().unwrap_or_else(|p| p.into_inner());
            let ch = c.entry(project_id).or_insert_with(|| Channel {
                tx: broadcast::channel(BACKLOG).0,
                streams: 0,
            });
            ch.streams += 1;
            ch.tx.subscribe()
        };
        Some(Subscription {
            rx,
            stop: self.stop.subscribe(),
            hub: self.clone(),
            key_id: key_id.to_owned(),
            project_id,
        })
    }

    /// End every stream (the server is stopping: graceful shutdown waits
    /// for open responses, and a stream would otherwise never end).
    pub fn close(&self) {
        let _ = self.stop.send(true);
    }
}

/// Longest a stream stays open; it then ends with an `end` event and a
/// client reconnects (an `EventSource` does so by itself).
pub const MAX_STREAM: std::time::Duration = std::time::Duration::from_secs(3600);
/// A comment line at least this often keeps proxies from closing an idle stream.
pub const HEARTBEAT: std::time::Duration = std::time::Duration::from_secs(15);

/// A subscription as Server-Sent Events: `event: event` with a
/// [`LiveEvent`] per matching commit of `project_id`, `event: lagged` with
/// the count a slow reader missed, `event: end` when the stream's time is
/// up, and a heartbeat comment every [`HEARTBEAT`].
pub fn sse(
    sub: Subscription,
    project_id: i64,
    q: EventQuery,
) -> axum::response::sse::Sse<
    impl futures_util::Stream<Item = Result<axum::response::sse::Event, std::convert::Infallible>>,
> {
    use axum::response::sse::{Event, KeepAlive, Sse};
    let deadline = tokio::time::Instant::now() + MAX_STREAM;
    let stream = futures_util::stream::unfold(Some(sub), move |sub| {
        let q = q.clone();
        async move {
            let mut sub = sub?;
            loop {
                if *sub.stop.borrow() {
                    return None;
                }
                let next = tokio::select! {
                    _ = sub.stop.changed() => return None,
                    _ = tokio::time::sleep_until(deadline) => {
                        return Some((Ok(Event::default().event("end").data("reconnect")), None));
                    }
                    r = sub.rx.recv() => r,
                };
                match next {
                    Ok(ev) if ev.project_id == project_id && ev.matches(&q) => {
                        let data = serde_json::to_string(&*ev).unwrap_or_default();
                        let e = Event::default().event("event").id(ev.id.clone()).data(data);
                        return Some((Ok(e), Some(sub)));
                    }
                    Ok(_) => continue,
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        let e = Event::default()
                            .event("lagged")
                            .data(format!("{{\"missed\":{n}}}"));
                        return Some((Ok(e), Some(sub)));
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(HEARTBEAT))
}

#[cfg(test)]
mod tests {
    use super::*;
    use agentledger_core::{AgentId, EventId, SessionId};

    fn commit(n: usize) -> (Vec<NewEvent>, Vec<AppendedEvent>) {
        let ev = NewEvent {
            session_id: SessionId::parse("s").unwrap(),
            agent_id: AgentId::parse("a").unwrap(),
            kind: Kind::Memory,
            source_type: "memory".into(),
            dialect: Dialect::Native,
            severity: Severity::Info,
            client_ts: None,
            payload: serde_json::value::RawValue::from_string("{}".into()).unwrap(),
            metadata: agentledger_core::event::empty_object(),
            judgement: None,
        };
        let a = |i: usize| AppendedEvent {
            id: EventId::generate(Micros::now()),
            session_id: "s".into(),
            seq: i as u64 + 1,
            hash: [0; 32],
            server_ts: Micros::now(),
        };
        (vec![ev; n], (0..n).map(a).collect())
    }

    /// Another project's commits, however many, neither reach a stream nor
    /// push it behind: its `lagged` count is of its own project's events.
    #[test]
    fn a_stream_lags_only_behind_its_own_project() {
        let live = Arc::new(Live::default());
        let mut a = live.subscribe("key-a", 1).unwrap();
        let (evs, appended) = commit(BACKLOG + 10);
        live.publish(2, &evs, &appended);
        assert!(matches!(
            a.rx.try_recv(),
            Err(broadcast::error::TryRecvError::Empty)
        ));
        live.publish(1, &evs[..3], &appended[..3]);
        for _ in 0..3 {
            assert_eq!(a.rx.try_recv().unwrap().project_id, 1);
        }
        live.publish(1, &evs, &appended);
        assert!(matches!(
            a.rx.try_recv(),
            Err(broadcast::error::TryRecvError::Lagged(10))
        ));
    }

    /// A project's channel goes with its last stream; a later stream opens
    /// a new one and sees what is published after it opened.
    #[test]
    fn the_last_stream_of_a_project_takes_its_channel() {
        let live = Arc::new(Live::default());
        let a = live.subscribe("k", 7).unwrap();
        let b = live.subscribe("k", 7).unwrap();
        drop(a);
        assert_eq!(live.channels.lock().unwrap().len(), 1);
        drop(b);
        assert!(live.channels.lock().unwrap().is_empty());
        // Streams ending on several threads at once leave no channel behind.
        let subs: Vec<_> = (0..4)
            .map(|i| live.subscribe(&format!("k{i}"), 7).unwrap())
            .collect();
        let barrier = Arc::new(std::sync::Barrier::new(subs.len()));
        let ends: Vec<_> = subs
            .into_iter()
            .map(|s| {
                let barrier = barrier.clone();
                std::thread::spawn(move || {
                    barrier.wait();
                    drop(s);
                })
            })
            .collect();
        for e in ends {
            e.join().unwrap();
        }
        assert!(live.channels.lock().unwrap().is_empty());
        let (evs, appended) = commit(1);
        live.publish(7, &evs, &appended);
        let mut c = live.subscribe("k", 7).unwrap();
        assert!(c.rx.try_recv().is_err());
        live.publish(7, &evs, &appended);
        assert_eq!(c.rx.try_recv().unwrap().project_id, 7);
    }
}
