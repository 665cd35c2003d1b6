//! The conformance suite every backend must pass. Each check takes a fresh,
//! empty store; a backend's tests call every function here.

use std::sync::Arc;

use serde_json::value::RawValue;

use agentledger_core::event::empty_object;
use agentledger_core::{AgentId, Dialect, Kind, Micros, NewEvent, SessionId, Severity};

use crate::verify::verify_session;
use crate::{
    Cursor, EventQuery, EventStore, NewSession, Order, ProjectRef, SessionQuery, UsageGroup,
};

mod log;
pub use log::{
    integrate_all, integrate_exactly, log_integrates_every_event_once,
    log_racing_passes_integrate_each_event_once,
};

pub fn event(session: &str, kind: Kind, payload: &str) -> NewEvent {
    NewEvent {
        session_id: SessionId::parse(session).expect("valid session id"),
        agent_id: AgentId::parse("agent-1").expect("valid agent id"),
        kind,
        source_type: kind.as_str().to_owned(),
        dialect: Dialect::Native,
        severity: Severity::Info,
        client_ts: None,
        payload: RawValue::from_string(payload.to_owned()).expect("valid JSON"),
        metadata: empty_object(),
        judgement: None,
    }
}

/// A new project with one admin key.
pub async fn project(store: &dyn EventStore, name: &str) -> ProjectRef {
    let key = agentledger_core::keys::generate_key();
    let info = store
        .create_key(
            name,
            "test",
            agentledger_core::keys::hash_key(&key),
            "al_",
            true,
        )
        .await
        .expect("create key");
    info.project
}

/// Seqs start at 1 per session, hashes link, and the chain verifies.
pub async fn append_assigns_seqs_and_chains(store: &dyn EventStore) {
    let p = project(store, "p").await;
    let batch = vec![
        event("s1", Kind::UserInput, r#"{"text":"hi"}"#),
        event("s2", Kind::UserInput, r#"{"text":"other"}"#),
        event("s1", Kind::Custom, r#"{"type":"x", "data": 1}"#),
    ];
    let out = store.append(&p, batch).await.expect("append");
    assert_eq!(out.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1, 1, 2]);
    let evs = store.session_events(&p, "s1", 0, 10).await.expect("read");
    assert_eq!(evs.len(), 2);
    assert_eq!(evs[0].prev_hash, None);
    assert_eq!(evs[1].prev_hash, Some(evs[0].hash));
    assert_eq!(
        evs[1].payload.get(),
        r#"{"type":"x", "data": 1}"#,
        "bytes kept as received"
    );
    let report = verify_session(store, &p, "s1")
        .await
        .expect("verify")
        .expect("exists");
    assert!(report.valid, "{report:?}");
    assert_eq!(report.events, 2);
    let s = store
        .get_session(&p, "s1")
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(s.head_seq, 2);
    assert_eq!(s.head_hash, Some(evs[1].hash));
}

/// Many concurrent appenders to one session never fork the chain.
pub async fn concurrent_appends_do_not_fork(store: Arc<dyn EventStore>) {
    let p = project(store.as_ref(), "p").await;
    let mut tasks = Vec::new();
    for t in 0..16 {
        let (store, p) = (store.clone(), p.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..10 {
                let payload = format!(r#"{{"task":{t},"i":{i}}}"#);
                store
                    .append(&p, vec![event("shared", Kind::Memory, &payload)])
                    .await
                    .expect("append");
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    let evs = store
        .session_events(&p, "shared", 0, 1000)
        .await
        .expect("read");
    assert_eq!(
        evs.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (1..=160).collect::<Vec<_>>()
    );
    let report = verify_session(store.as_ref(), &p, "shared")
        .await
        .expect("verify")
        .expect("exists");
    assert!(report.valid, "{report:?}");
}

/// One request naming several sessions, interleaved: answered in the order
/// given, each session chained in the order its events came (the backends
/// store each session's events of a request side by side:
/// `crate::session_order`). Returns the project, for the backends' checks of
/// where the rows went.
pub async fn a_mixed_request_chains_each_session_in_order(store: &dyn EventStore) -> ProjectRef {
    let p = project(store, "p").await;
    let sessions = ["a", "b", "a", "c", "b", "a"];
    let events = sessions
        .iter()
        .enumerate()
        .map(|(i, s)| event(s, Kind::Memory, &format!("{{\"n\":{i}}}")))
        .collect();
    let acked = store.append(&p, events).await.expect("append");
    let got: Vec<(&str, u64)> = acked
        .iter()
        .map(|a| (a.session_id.as_str(), a.seq))
        .collect();
    assert_eq!(
        got,
        [("a", 1), ("b", 1), ("a", 2), ("c", 1), ("b", 2), ("a", 3)]
    );
    for (a, s) in acked.iter().zip(sessions) {
        let stored = store
            .get_event(&p, a.id)
            .await
            .expect("get")
            .expect("stored");
        assert_eq!((stored.session_id.as_str(), stored.seq), (s, a.seq));
    }
    let a = store.session_events(&p, "a", 0, 10).await.expect("read");
    let payloads: Vec<&str> = a.iter().map(|e| e.payload.get()).collect();
    assert_eq!(payloads, [r#"{"n":0}"#, r#"{"n":2}"#, r#"{"n":5}"#]);
    for s in ["a", "b", "c"] {
        let report = verify_session(store, &p, s)
            .await
            .expect("verify")
            .expect("session");
        assert!(report.valid, "{s}: {report:?}");
    }
    p
}

/// Nothing of one project is visible from another.
pub async fn projects_are_isolated(store: &dyn EventStore) {
    let a = project(store, "a").await;
    let b = project(store, "b").await;
    let out = store
        .append(&a, vec![event("s", Kind::Memory, "{}")])
        .await
        .expect("append");
    assert!(store.get_event(&b, out[0].id).await.expect("get").is_none());
    assert!(store.get_session(&b, "s").await.expect("get").is_none());
    let page = store
        .query_events(
            &b,
            EventQuery {
                limit: 50,
                ..Default::default()
            },
        )
        .await
        .expect("query");
    assert_eq!((page.events.len(), page.total), (0, Some(0)));
    // The same session id in another project is another session.
    let out_b = store
        .append(&b, vec![event("s", Kind::Memory, "{}")])
        .await
        .expect("append");
    assert_eq!(out_b[0].seq, 1);
}

/// Wait, bounded, until the full-text index has caught up with the ledger
/// (for tests of what the index itself holds; a search never needs it).
pub async fn wait_for_search(store: &dyn EventStore) {
    for _ in 0..1000 {
        if store.search_backlog() == 0 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!(
        "search index still {} events behind after 10 s",
        store.search_backlog()
    );
}

/// An acknowledged append is found by the next full-text search, at once,
/// whatever the index's lag; and only in its own project.
pub async fn search_finds_what_was_acknowledged(store: &dyn EventStore) {
    let p = project(store, "p").await;
    let other = project(store, "other").await;
    for i in 0..200 {
        let word = format!("ack{i}");
        let payload = format!(r#"{{"note":"written {word} now"}}"#);
        let out = store
            .append(&p, vec![event("s", Kind::Memory, &payload)])
            .await
            .expect("append");
        store
            .append(&other, vec![event("s", Kind::Memory, &payload)])
            .await
            .expect("append");
        let page = store
            .query_events(
                &p,
                EventQuery {
                    limit: 10,
                    text: Some(format!("WRITTEN {word}")),
                    ..Default::default()
                },
            )
            .await
            .expect("search");
        let ids: Vec<_> = page.events.iter().map(|e| e.id).collect();
        assert_eq!(ids, vec![out[0].id], "search {i} right after its ack");
        assert_eq!(page.total, Some(1));
    }
}

/// Filters, full text, ordering and keyset paging.
pub async fn queries_filter_and_page(store: &dyn EventStore) {
    let p = project(store, "p").await;
    let mut batch = Vec::new();
    for i in 0..25 {
        let mut e = event(
            if i % 2 == 0 { "even" } else { "odd" },
            if i % 5 == 0 {
                Kind::ToolError
            } else {
                Kind::Memory
            },
            &format!(
                r#"{{"n":{i},"word":"{}"}}"#,
                if i == 7 { "needle" } else { "hay" }
            ),
        );
        e.client_ts = Some(Micros(1_000_000 * (i + 1)));
        e.severity = if i % 5 == 0 {
            Severity::Error
        } else {
            Severity::Info
        };
        batch.push(e);
    }
    store.append(&p, batch).await.expect("append");

    let q = |f: fn(&mut EventQuery)| {
        let mut q = EventQuery {
            limit: 100,
            ..Default::default()
        };
        f(&mut q);
        q
    };
    let page = store
        .query_events(&p, q(|q| q.kinds = vec![Kind::ToolError]))
        .await
        .expect("q");
    assert_eq!(page.total, Some(5));
    assert!(page.events.iter().all(|e| e.kind == Kind::ToolError));
    wait_for_search(store).await;
    let page = store
        .query_events(&p, q(|q| q.text = Some("needle".into())))
        .await
        .expect("q");
    assert_eq!(page.events.len(), 1);
    assert_eq!(page.events[0].payload.get(), r#"{"n":7,"word":"needle"}"#);
    let page = store
        .query_events(&p, q(|q| q.text = Some("\"unbalanced AND (".into())))
        .await
        .expect("q");
    assert_eq!(page.events.len(), 0, "user text is never FTS syntax");
    let page = store
        .query_events(
            &p,
            q(|q| {
                q.from = Some(Micros(3_000_000));
                q.to = Some(Micros(5_000_000));
                q.order = Order::Asc;
            }),
        )
        .await
        .expect("q");
    let times: Vec<i64> = page.events.iter().map(|e| e.time().0).collect();
    assert_eq!(times, vec![3_000_000, 4_000_000, 5_000_000]);

    // Keyset paging over everything, newest first, while new events arrive.
    let mut seen = Vec::new();
    let mut cursor: Option<Cursor> = None;
    loop {
        let page = store
            .query_events(
                &p,
                EventQuery {
                    limit: 7,
                    cursor,
                    ..Default::default()
                },
            )
            .await
            .expect("page");
        seen.extend(page.events.iter().map(|e| e.id));
        if seen.len() == 7 {
            let mut late = event("even", Kind::Memory, r#"{"late":true}"#);
            late.client_ts = Some(Micros(99_000_000));
            store.append(&p, vec![late]).await.expect("append late");
        }
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(seen.len(), 25, "no duplicates or gaps while events arrive");

    // One session is read in chain order.
    let page = store
        .query_events(
            &p,
            EventQuery {
                session_id: Some("odd".into()),
                limit: 5,
                order: Order::Asc,
                ..Default::default()
            },
        )
        .await
        .expect("session page");
    assert_eq!(
        page.events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5]
    );
    assert!(page.next_cursor.is_some());
}

/// Explicit sessions, listing, and duplicates.
pub async fn sessions_are_listed(store: &dyn EventStore) {
    let p = project(store, "p").await;
    let (s, opening) = store
        .create_session(
            &p,
            NewSession {
                id: SessionId::parse("explicit").expect("id"),
                agent_id: AgentId::parse("planner").expect("id"),
                system_prompt: Some("be careful".into()),
                metadata: RawValue::from_string(r#"{"team":"red"}"#.into()).expect("json"),
            },
            vec![event(
                "explicit",
                Kind::SessionStarted,
                r#"{"agentName":"planner"}"#,
            )],
        )
        .await
        .expect("create");
    assert_eq!((s.head_seq, s.agent_id.as_str()), (1, "planner"));
    assert_eq!((opening.len(), opening[0].seq), (1, 1));
    assert_eq!(s.head_hash, Some(opening[0].hash));
    let again = store
        .create_session(
            &p,
            NewSession {
                id: SessionId::parse("explicit").expect("id"),
                agent_id: AgentId::parse("planner").expect("id"),
                system_prompt: None,
                metadata: empty_object(),
            },
            Vec::new(),
        )
        .await;
    assert!(matches!(again, Err(crate::StoreError::SessionExists(_))));
    store
        .append(
            &p,
            vec![event(
                "explicit",
                Kind::SessionEnded,
                r#"{"reason":"completed"}"#,
            )],
        )
        .await
        .expect("append");
    store
        .append(&p, vec![event("implicit", Kind::Memory, "{}")])
        .await
        .expect("append");
    let page = store
        .list_sessions(
            &p,
            SessionQuery {
                limit: 10,
                ..Default::default()
            },
        )
        .await
        .expect("list");
    assert_eq!(page.total, 2);
    let ended = store
        .list_sessions(
            &p,
            SessionQuery {
                limit: 10,
                status: Some(agentledger_core::SessionStatus::Ended),
                ..Default::default()
            },
        )
        .await
        .expect("list");
    assert_eq!(ended.sessions.len(), 1);
    assert_eq!(ended.sessions[0].id, "explicit");
    assert_eq!(
        ended.sessions[0].system_prompt.as_deref(),
        Some("be careful")
    );
}

/// Keys resolve by hash; revoked keys do not.
pub async fn keys_authenticate_and_revoke(store: &dyn EventStore) {
    let key = agentledger_core::keys::generate_key();
    let hash = agentledger_core::keys::hash_key(&key);
    let info = store
        .create_key("proj", "ci", hash, "al_abcd", false)
        .await
        .expect("create");
    let found = store
        .authenticate(hash)
        .await
        .expect("auth")
        .expect("found");
    assert_eq!(
        (found.id.as_str(), found.project.name.as_str()),
        (info.id.as_str(), "proj")
    );
    assert!(store.authenticate([0; 32]).await.expect("auth").is_none());
    assert!(store.revoke_key(&info.id).await.expect("revoke"));
    assert!(!store.revoke_key(&info.id).await.expect("revoke again"));
    assert!(store.authenticate(hash).await.expect("auth").is_none());
    assert_eq!(store.count_keys().await.expect("count"), 1);
}

/// Policy sets belong to a project: saving one project's set leaves every
/// other project's untouched; clearing returns a project to the default.
pub async fn policy_sets_are_per_project(store: &dyn EventStore) {
    let a = project(store, "pol-a").await;
    let b = project(store, "pol-b").await;
    assert!(store.load_policy_sets().await.expect("load").is_empty());
    store
        .save_policy_set(&a, Some("[\"a1\"]".into()))
        .await
        .expect("save a");
    store
        .save_policy_set(&b, Some("[\"b1\"]".into()))
        .await
        .expect("save b");
    store
        .save_policy_set(&a, Some("[\"a2\"]".into()))
        .await
        .expect("save a again");
    let sets = store.load_policy_sets().await.expect("load");
    let of = |p: &ProjectRef| {
        sets.iter()
            .filter(|s| s.project == Some(p.id))
            .map(|s| s.sources.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(of(&a), vec!["[\"a2\"]".to_owned()], "only the newest of a");
    assert_eq!(of(&b), vec!["[\"b1\"]".to_owned()]);
    store.save_policy_set(&a, None).await.expect("clear a");
    let sets = store.load_policy_sets().await.expect("load");
    assert!(sets.iter().all(|s| s.project != Some(a.id)), "a cleared");
    assert_eq!(sets.len(), 1, "b kept: {sets:?}");
}

pub async fn usage_is_filtered_and_summed(store: &dyn EventStore) {
    let p = project(store, "usage").await;
    let other = project(store, "usage-other").await;
    let resp = |model: &str, i: u32, o: u32, cost: f64| {
        format!(
            r#"{{"callId":"c","provider":"p","model":"{model}","completion":"x","finishReason":"stop",
            "usage":{{"inputTokens":{i},"outputTokens":{o}}},"costUsd":{cost},"latencyMs":1}}"#
        )
    };
    let events = vec![
        event("u1", Kind::LlmResponse, &resp("gpt-4o", 100, 10, 0.5)),
        event("u1", Kind::LlmResponse, &resp("gpt-4o", 50, 5, 0.25)),
        event("u2", Kind::LlmResponse, &resp("claude", 7, 3, 1.0)),
        event(
            "u2",
            Kind::ToolCall,
            r#"{"model":"gpt-4o","input_tokens":999}"#,
        ),
    ];
    store.append(&p, events).await.expect("append");
    store
        .append(
            &other,
            vec![event("u1", Kind::LlmResponse, &resp("gpt-4o", 1, 1, 9.0))],
        )
        .await
        .expect("append other");

    let all = store
        .usage(&p, EventQuery::default(), None)
        .await
        .expect("usage");
    assert_eq!(all.len(), 1);
    assert_eq!(
        (all[0].events, all[0].input_tokens, all[0].output_tokens),
        (3, 157, 18)
    );
    assert!((all[0].cost_usd - 1.75).abs() < 1e-9);

    let by_model = store
        .usage(&p, EventQuery::default(), Some(UsageGroup::Model))
        .await
        .expect("usage by model");
    assert_eq!(by_model[0].group.as_deref(), Some("claude"));
    assert_eq!(by_model[1].group.as_deref(), Some("gpt-4o"));
    assert_eq!(by_model[1].input_tokens, 150);

    let by_session = store
        .usage(
            &p,
            EventQuery {
                model: Some("gpt-4o".into()),
                ..Default::default()
            },
            Some(UsageGroup::Session),
        )
        .await
        .expect("usage by session");
    assert_eq!(by_session.len(), 1);
    assert_eq!(by_session[0].group.as_deref(), Some("u1"));

    let page = store
        .query_events(
            &p,
            EventQuery {
                model: Some("gpt-4o".into()),
                limit: 10,
                ..Default::default()
            },
        )
        .await
        .expect("query by model");
    assert_eq!(page.events.len(), 2, "tool_call payloads carry no usage");
}

fn keyed(key: &str, fingerprint: u8) -> (crate::IdempotencyKey, crate::Render) {
    let render: crate::Render = Box::new(|c: &crate::Committed<'_>| crate::StoredReply {
        status: 201,
        content_type: "application/json".into(),
        body: format!(
            "{{\"ids\":{:?},\"session\":{}}}",
            c.appended
                .iter()
                .map(|a| a.id.to_string())
                .collect::<Vec<_>>(),
            c.session.is_some()
        )
        .into_bytes(),
    });
    (
        crate::IdempotencyKey {
            key: key.into(),
            fingerprint: [fingerprint; 32],
        },
        render,
    )
}

/// A request under an idempotency key commits once; the same key and
/// fingerprint replays the kept reply and appends nothing; another
/// fingerprint is a conflict; keys are per project.
pub async fn idempotency_keys_replay_once(store: &dyn EventStore) {
    use crate::{AppendOutcome, AppendRequest};
    let a = project(store, "idem-a").await;
    let b = project(store, "idem-b").await;
    let req = |fp: u8| AppendRequest {
        alerts: None,
        erase: None,
        session: None,
        events: vec![event("s", Kind::ToolCall, r#"{"toolName":"x"}"#)],
        idempotency: Some(keyed("k-1", fp)),
        judge: None,
    };
    let first = match store.append_request(&a, req(1)).await.expect("first") {
        AppendOutcome::Committed {
            reply: Some(r),
            appended,
            ..
        } => {
            assert_eq!(appended.len(), 1);
            assert!(String::from_utf8_lossy(&r.body).contains(&appended[0].id.to_string()));
            r
        }
        _ => panic!("the first request must commit and keep its reply"),
    };
    match store.append_request(&a, req(1)).await.expect("retry") {
        AppendOutcome::Replayed(r) => assert_eq!(r, first, "the kept reply, byte for byte"),
        _ => panic!("a retry must replay"),
    }
    let s = store
        .get_session(&a, "s")
        .await
        .expect("read")
        .expect("session");
    assert_eq!(s.head_seq, 1, "the retry appended nothing");
    match store.append_request(&a, req(2)).await {
        Err(crate::StoreError::IdempotencyConflict(k)) => assert_eq!(k, "k-1"),
        _ => panic!("another body under the same key must conflict"),
    }
    assert_eq!(
        store.idempotent_reply(&a, "k-1").await.expect("read"),
        Some(([1; 32], first.clone()))
    );
    assert_eq!(store.idempotent_reply(&b, "k-1").await.expect("read"), None);
    // Another project's key of the same name is its own.
    assert!(matches!(
        store.append_request(&b, req(2)).await.expect("b"),
        AppendOutcome::Committed { reply: Some(_), .. }
    ));
    // Creating a session under a key: the retry replays instead of
    // answering that the session exists.
    let create = || AppendRequest {
        alerts: None,
        erase: None,
        session: Some(crate::NewSession {
            id: SessionId::parse("created").expect("id"),
            agent_id: AgentId::parse("agent-1").expect("id"),
            system_prompt: None,
            metadata: empty_object(),
        }),
        events: Vec::new(),
        idempotency: Some(keyed("k-2", 3)),
        judge: None,
    };
    let made = match store.append_request(&a, create()).await.expect("create") {
        AppendOutcome::Committed {
            session: Some(_),
            reply: Some(r),
            ..
        } => r,
        _ => panic!("creating must commit the session"),
    };
    match store
        .append_request(&a, create())
        .await
        .expect("retry create")
    {
        AppendOutcome::Replayed(r) => assert_eq!(r, made),
        _ => panic!("a retried create must replay"),
    }
    // Without a key, a second create is refused as before.
    let plain = AppendRequest {
        idempotency: None,
        ..create()
    };
    assert!(matches!(
        store.append_request(&a, plain).await,
        Err(crate::StoreError::SessionExists(_))
    ));
}

/// A judge that counts: a session's state is how many events it holds, and
/// each judged event's verdict says how many it saw before it.
#[derive(Clone, Default)]
struct Count(u64);

impl crate::SessionFold for Count {
    fn apply_stored(&mut self, _ev: &agentledger_core::Event) {
        self.0 += 1;
    }
    fn clone_box(&self) -> Box<dyn crate::SessionFold> {
        Box::new(self.clone())
    }
    fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
        self
    }
}

struct Counter {
    seeds: Vec<(String, u64, u64)>,
    /// Refuse to judge (as a judge may): nothing of the request is stored.
    refuse: bool,
}

impl crate::Judge for Counter {
    fn empty(&self) -> Box<dyn crate::SessionFold> {
        Box::new(Count(0))
    }
    fn seed(&mut self, session: &str) -> Option<(u64, Box<dyn crate::SessionFold>)> {
        self.seeds
            .iter()
            .find(|(s, _, _)| s == session)
            .map(|(_, seq, n)| (*seq, Box::new(Count(*n)) as Box<dyn crate::SessionFold>))
    }
    fn judge(
        &mut self,
        events: Vec<NewEvent>,
        states: &mut crate::SessionStates,
    ) -> crate::StoreResult<(Vec<NewEvent>, Vec<agentledger_core::verdict::Verdict>)> {
        if self.refuse {
            return Err(crate::StoreError::Judge("refused".into()));
        }
        let mut verdicts = Vec::new();
        for ev in &events {
            let state = states
                .get_mut(ev.session_id.as_str())
                .and_then(|f| f.as_any_mut().downcast_mut::<Count>())
                .ok_or_else(|| crate::StoreError::Judge("no state".into()))?;
            verdicts.push(agentledger_core::verdict::Verdict {
                decision: agentledger_core::verdict::Decision::Allow,
                policies: Vec::new(),
                reasons: vec![state.0.to_string()],
                findings: Vec::new(),
            });
            state.0 += 1;
        }
        Ok((events, verdicts))
    }
}

fn counted(n: usize, session: &str, judge: Counter) -> crate::AppendRequest {
    crate::AppendRequest {
        events: (0..n)
            .map(|_| event(session, Kind::ToolCall, r#"{"toolName":"x"}"#))
            .collect(),
        judge: Some(Box::new(judge)),
        ..crate::AppendRequest::default()
    }
}

fn plain() -> Counter {
    Counter {
        seeds: Vec::new(),
        refuse: false,
    }
}

/// (seq, what the judge saw before it) of a committed request.
fn seen(outcome: crate::AppendOutcome) -> Vec<(u64, u64)> {
    match outcome {
        crate::AppendOutcome::Committed {
            appended, verdicts, ..
        } => appended
            .iter()
            .zip(&verdicts)
            .map(|(a, v)| (a.seq, v.reasons[0].parse().expect("a count")))
            .collect(),
        _ => panic!("the request must commit"),
    }
}

/// The judge runs in the append's transaction: each event is judged against
/// the fold of exactly the events before it in its chain, whatever order
/// requests were queued in, whoever appended before (another node: here,
/// appends without a judge), and nothing a refused request judged counts.
pub async fn judged_in_commit_order(store: Arc<dyn EventStore>) {
    use crate::AppendOutcome;
    let p = project(store.as_ref(), "judge").await;
    let r = store.append_request(&p, counted(2, "j", plain())).await;
    assert_eq!(seen(r.expect("first")), vec![(1, 0), (2, 1)]);
    // Appended by someone else (no judge): the kept state is moved on.
    store
        .append(&p, vec![event("j", Kind::ToolCall, "{}")])
        .await
        .expect("plain append");
    let r = store.append_request(&p, counted(1, "j", plain())).await;
    assert_eq!(seen(r.expect("after")), vec![(4, 3)]);
    // A refused request stores nothing and moves nothing.
    let refused = Counter {
        seeds: Vec::new(),
        refuse: true,
    };
    assert!(matches!(
        store.append_request(&p, counted(1, "j", refused)).await,
        Err(crate::StoreError::Judge(_))
    ));
    // Many requests queued at once, from many tasks: every event saw
    // exactly the events before it.
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (store, p) = (store.clone(), p.clone());
        tasks.push(tokio::spawn(async move {
            store.append_request(&p, counted(3, "j", plain())).await
        }));
    }
    for t in tasks {
        for (seq, before) in seen(t.await.expect("task").expect("append")) {
            assert_eq!(before, seq - 1, "event {seq} was judged out of order");
        }
    }
    // The same with appends without a judge among them (an erasure's
    // record, an alert's event), which a group commit may put before a
    // judged request: the judged events still saw every event before them.
    let mut judged = Vec::new();
    let mut unjudged = Vec::new();
    for _ in 0..16 {
        let (s1, p1) = (store.clone(), p.clone());
        unjudged.push(tokio::spawn(async move {
            s1.append(&p1, vec![event("j", Kind::ToolCall, "{}")]).await
        }));
        let (s2, p2) = (store.clone(), p.clone());
        judged.push(tokio::spawn(async move {
            s2.append_request(&p2, counted(2, "j", plain())).await
        }));
    }
    for t in unjudged {
        t.await.expect("task").expect("plain append");
    }
    for t in judged {
        for (seq, before) in seen(t.await.expect("task").expect("append")) {
            assert_eq!(
                before,
                seq - 1,
                "event {seq} was judged without an event appended before it"
            );
        }
    }
    // A long session the store keeps no state of (created without a
    // judge): handed back for a seed, then judged from it.
    let long: Vec<NewEvent> = (0..crate::FOLD_IN_WRITER + 5)
        .map(|_| event("long", Kind::ToolCall, "{}"))
        .collect();
    store.append(&p, long).await.expect("long");
    let at = crate::FOLD_IN_WRITER + 5;
    match store
        .append_request(&p, counted(1, "long", plain()))
        .await
        .expect("unseeded")
    {
        AppendOutcome::NeedsState { sessions, request } => {
            assert_eq!(sessions, vec!["long".to_owned()]);
            assert_eq!(request.events.len(), 1, "the request comes back whole");
        }
        _ => panic!("a long session without a state must be handed back"),
    }
    assert_eq!(
        store
            .get_session(&p, "long")
            .await
            .expect("read")
            .expect("long")
            .head_seq,
        at,
        "nothing of it was stored"
    );
    // A seed a few events behind the head: the store folds the rest.
    let seeded = Counter {
        seeds: vec![("long".into(), at - 3, at - 3)],
        refuse: false,
    };
    let r = store.append_request(&p, counted(1, "long", seeded)).await;
    assert_eq!(seen(r.expect("seeded")), vec![(at + 1, at)]);
}

/// Two nodes (two stores on one database) judging requests to the same
/// sessions at once: every event is judged against exactly the events
/// before it in its chain, whichever node appended them.
pub async fn judged_in_commit_order_across_nodes(nodes: [Arc<dyn EventStore>; 2]) {
    let p = project(nodes[0].as_ref(), "judge-nodes").await;
    let mut tasks = Vec::new();
    for node in &nodes {
        for t in 0..8 {
            let (node, p) = (node.clone(), p.clone());
            tasks.push(tokio::spawn(async move {
                let mut seen_here = Vec::new();
                for i in 0..10 {
                    let session = ["x", "y"][(t + i) % 2];
                    let r = node.append_request(&p, counted(2, session, plain())).await;
                    seen_here.extend(seen(r.expect("append")));
                }
                seen_here
            }));
        }
    }
    let mut judged = 0;
    for t in tasks {
        for (seq, before) in t.await.expect("task") {
            assert_eq!(before, seq - 1, "event {seq} was judged out of order");
            judged += 1;
        }
    }
    assert_eq!(judged, 2 * 8 * 10 * 2);
}

/// Projects and keys as the operator's commands list them.
pub async fn projects_and_keys_are_listed(store: &dyn EventStore) {
    let hash = |b: u8| [b; 32];
    let a = store
        .create_key("alpha", "ci", hash(1), "al_aaaa", false)
        .await
        .expect("create");
    let a2 = store
        .create_key("alpha", "ops", hash(2), "al_bbbb", true)
        .await
        .expect("create");
    let b = store
        .create_key("beta", "ci", hash(3), "al_cccc", false)
        .await
        .expect("create");
    assert_eq!(a.project, a2.project, "a second key joins the project");
    assert_ne!(a.project.id, b.project.id);
    let projects = store.list_projects().await.expect("projects");
    assert_eq!(
        projects.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(),
        vec!["alpha", "beta"]
    );
    assert_eq!(
        store.project_by_name("beta").await.expect("by name"),
        Some(b.project.clone())
    );
    assert_eq!(store.project_by_name("gamma").await.expect("by name"), None);
    assert!(store.revoke_key(&a.id).await.expect("revoke"));
    let keys = store.list_keys().await.expect("keys");
    let listed: Vec<_> = keys
        .iter()
        .map(|k| {
            (
                k.id.as_str(),
                k.project.name.as_str(),
                k.name.as_str(),
                k.prefix.as_str(),
                k.admin,
                k.revoked_at.is_some(),
            )
        })
        .collect();
    assert_eq!(
        listed,
        vec![
            (a.id.as_str(), "alpha", "ci", "al_aaaa", false, true),
            (a2.id.as_str(), "alpha", "ops", "al_bbbb", true, false),
            (b.id.as_str(), "beta", "ci", "al_cccc", false, false),
        ]
    );
    assert_eq!(store.count_keys().await.expect("count"), 3);
    let found = store
        .authenticate(hash(2))
        .await
        .expect("auth")
        .expect("found");
    assert!(found.admin);
    assert_eq!(found.project, a.project);
}

fn new_session(id: &str, agent: &str) -> NewSession {
    NewSession {
        id: SessionId::parse(id).expect("id"),
        agent_id: AgentId::parse(agent).expect("id"),
        system_prompt: None,
        metadata: empty_object(),
    }
}

/// Session listings page by cursor and by offset, filter by agent, time and
/// tags, and refuse a cursor of another listing; agents are summarised from
/// their sessions.
pub async fn sessions_and_agents_page_and_filter(store: &dyn EventStore) {
    let p = project(store, "p").await;
    let other = project(store, "other").await;
    for i in 0..6 {
        let agent = if i % 2 == 0 {
            "even-agent"
        } else {
            "odd-agent"
        };
        let tags = match i {
            0 => r#"{"tags":["prod","eu"]}"#,
            1 => r#"{"tags":["dev"]}"#,
            2 => r#"{"tags":[7,"us"]}"#,
            // A NUL in a stored tag (PostgreSQL's json functions refused the
            // whole listing), and the six characters `\u0000` as a tag.
            3 => r#"{"tags":["q\u0000","nul","\\u0000"]}"#,
            _ => "{}",
        };
        let id = format!("s{i}");
        let mut opening = event(&id, Kind::SessionStarted, tags);
        opening.agent_id = AgentId::parse(agent).expect("id");
        store
            .create_session(&p, new_session(&id, agent), vec![opening])
            .await
            .expect("create");
    }
    store
        .append(&other, vec![event("s9", Kind::Memory, "{}")])
        .await
        .expect("append");
    let listing = |offset: u64, tags: &[&str], limit: u32| crate::SessionListing {
        query: SessionQuery {
            limit,
            ..Default::default()
        },
        offset,
        any_tags: tags.iter().map(|t| (*t).to_owned()).collect(),
    };
    let ids = |page: &crate::SessionPage| {
        page.sessions
            .iter()
            .map(|s| s.id.clone())
            .collect::<Vec<_>>()
    };
    let all = store
        .list_sessions_at(&p, listing(0, &[], 10))
        .await
        .expect("list");
    assert_eq!(all.total, 6);
    assert_eq!(
        ids(&all),
        ["s5", "s4", "s3", "s2", "s1", "s0"],
        "newest first"
    );
    let page = store
        .list_sessions_at(&p, listing(2, &[], 2))
        .await
        .expect("offset");
    assert_eq!(
        (ids(&page), page.total),
        (vec!["s3".into(), "s2".into()], 6)
    );
    let tagged = store
        .list_sessions_at(&p, listing(0, &["eu", "us", "7"], 10))
        .await
        .expect("tags");
    assert_eq!(ids(&tagged), ["s2", "s0"], "string members only");
    assert_eq!(tagged.sessions[1].tags, ["prod", "eu"]);
    for tag in ["nul", "\\u0000"] {
        let nul = store
            .list_sessions_at(&p, listing(0, &[tag], 10))
            .await
            .expect("a stored tag holding NUL leaves the listing readable");
        assert_eq!(ids(&nul), ["s3"], "{tag}");
    }
    // Cursor paging, then a cursor naming another project's session.
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = store
            .list_sessions(
                &p,
                SessionQuery {
                    limit: 4,
                    agent_id: Some("even-agent".into()),
                    cursor,
                    ..Default::default()
                },
            )
            .await
            .expect("page");
        assert_eq!(page.total, 3);
        seen.extend(ids(&page));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(seen, ["s4", "s2", "s0"]);
    let foreign = store
        .list_sessions(
            &p,
            SessionQuery {
                limit: 4,
                cursor: Some(Cursor::after(b"s9".to_vec())),
                ..Default::default()
            },
        )
        .await;
    assert!(matches!(foreign, Err(crate::StoreError::BadCursor)));

    let agents = store.list_agents(&p, None, 10, 0).await.expect("agents");
    assert_eq!(agents.total, 2);
    let summary: Vec<_> = agents
        .agents
        .iter()
        .map(|a| (a.id.as_str(), a.session_count))
        .collect();
    assert_eq!(summary, [("even-agent", 3), ("odd-agent", 3)]);
    assert!(agents.agents[0].first_seen_at <= agents.agents[0].last_seen_at);
    let page = store.list_agents(&p, None, 1, 1).await.expect("agents");
    assert_eq!(page.agents.len(), 1);
    assert_eq!((page.agents[0].id.as_str(), page.total), ("odd-agent", 2));
    let only = store
        .list_agents(&p, Some("odd-agent".into()), 10, 0)
        .await
        .expect("one agent");
    assert_eq!((only.agents.len(), only.total), (1, 1));
    let none = store
        .list_agents(&other, Some("odd-agent".into()), 10, 0)
        .await;
    assert_eq!(none.expect("other").total, 0);
}

/// LLM responses grouped by model (provider from the payload) and by time
/// bucket, with latency from the payload; the provider filter.
pub async fn llm_usage_groups_by_model_and_time(store: &dyn EventStore) {
    use crate::LlmGroup;
    let p = project(store, "llm").await;
    let hour = 3_600 * 1_000_000i64;
    let resp = |provider: &str, model: &str, cost: f64, latency: &str, at: i64| {
        let mut e = event(
            "l",
            Kind::LlmResponse,
            &format!(
                r#"{{"provider":{provider},"model":"{model}","usage":{{"inputTokens":10,"outputTokens":2}},"costUsd":{cost}{latency}}}"#
            ),
        );
        e.client_ts = Some(Micros(at));
        e
    };
    let base = 1_700_000_000_000_000 / hour * hour;
    store
        .append(
            &p,
            vec![
                resp(r#""openai""#, "gpt-4o", 1.0, r#","latencyMs":100"#, base),
                resp(
                    r#""openai""#,
                    "gpt-4o",
                    2.0,
                    r#","latencyMs":300"#,
                    base + 10,
                ),
                resp(
                    r#""anthropic""#,
                    "claude",
                    0.5,
                    r#","latencyMs":"slow""#,
                    base + hour,
                ),
                resp("7", "other", 0.1, "", base + hour + 1),
                event("l", Kind::LlmCall, r#"{"model":"gpt-4o"}"#),
            ],
        )
        .await
        .expect("append");
    let by_model = store
        .llm_usage(&p, EventQuery::default(), None, LlmGroup::Model)
        .await
        .expect("by model");
    let rows: Vec<_> = by_model
        .iter()
        .map(|r| {
            (
                r.provider.as_deref(),
                r.model.as_deref(),
                r.calls,
                r.input_tokens,
                r.latency_count,
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            (Some("openai"), Some("gpt-4o"), 2, 20, 2),
            (Some("anthropic"), Some("claude"), 1, 10, 0),
            (None, Some("other"), 1, 10, 0),
        ],
        "largest cost first; a provider that is not a string is none"
    );
    assert!((by_model[0].cost_usd - 3.0).abs() < 1e-9);
    assert!((by_model[0].latency_ms_sum - 400.0).abs() < 1e-9);
    let openai = store
        .llm_usage(
            &p,
            EventQuery::default(),
            Some("openai".into()),
            LlmGroup::Model,
        )
        .await
        .expect("provider");
    assert_eq!(openai.len(), 1);
    let by_hour = store
        .llm_usage(&p, EventQuery::default(), None, LlmGroup::Time(hour))
        .await
        .expect("by hour");
    let buckets: Vec<_> = by_hour.iter().map(|r| (r.bucket, r.calls)).collect();
    assert_eq!(
        buckets,
        [(Some(Micros(base)), 2), (Some(Micros(base + hour)), 2)]
    );
    let later = store
        .llm_usage(
            &p,
            EventQuery {
                from: Some(Micros(base + hour)),
                ..Default::default()
            },
            None,
            LlmGroup::Time(hour),
        )
        .await
        .expect("from");
    assert_eq!(later.len(), 1);
    // A NUL anywhere in a payload (JSON `\u0000`, which PostgreSQL's json
    // operators refuse to unescape) leaves the project's analytics readable,
    // and its event's provider and latency counted.
    let nul = project(store, "llm-nul").await;
    store
        .append(
            &nul,
            vec![
                resp(
                    r#""openai""#,
                    "m",
                    1.0,
                    r#","completion":"a\u0000b","latencyMs":7"#,
                    base,
                ),
                resp(
                    r#""openai""#,
                    "m",
                    1.0,
                    r#","note":"\\u0000","latencyMs":9"#,
                    base,
                ),
                // The six characters `\u0000` as a provider are read as they are.
                resp(r#""\\u0000""#, "m2", 0.5, "", base),
            ],
        )
        .await
        .expect("append");
    let rows = store
        .llm_usage(&nul, EventQuery::default(), None, LlmGroup::Model)
        .await
        .expect("a payload holding \\u0000 leaves llm usage readable");
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(rows[1].provider.as_deref(), Some("\\u0000"), "{rows:?}");
    assert_eq!(rows[0].provider.as_deref(), Some("openai"));
    assert_eq!((rows[0].calls, rows[0].latency_count), (2, 2));
    assert!((rows[0].latency_ms_sum - 16.0).abs() < 1e-9);
    let openai = store
        .llm_usage(
            &nul,
            EventQuery::default(),
            Some("openai".into()),
            LlmGroup::Model,
        )
        .await
        .expect("by provider");
    assert_eq!(openai.len(), 1);
}

/// Events are read back by id (in their project only), with the columns
/// verification re-derives; a redacted event's salt is kept apart, readable
/// in its project, and destroyed on request without touching the chain.
pub async fn events_columns_and_salts_are_read_back(store: &dyn EventStore) {
    use agentledger_core::verdict::{Decision, Judgement};
    let p = project(store, "p").await;
    let other = project(store, "other").await;
    let mut judged = event(
        "s",
        Kind::LlmResponse,
        r#"{"model":"m","usage":{"inputTokens":3,"outputTokens":4},"costUsd":0.25}"#,
    );
    judged.judgement = Some(Judgement {
        decision: Decision::Flag,
        verdict: RawValue::from_string(
            r#"{"decision":"flag","policies":["p1"],"reasons":[],"findings":[]}"#.into(),
        )
        .expect("json"),
        original_payload_sha256: Some([9; 32]),
        original_metadata_sha256: None,
        redaction_salt: Some([5; 32]),
    });
    let out = store
        .append(&p, vec![event("s", Kind::Memory, "{}"), judged])
        .await
        .expect("append");
    let got = store
        .get_event(&p, out[1].id)
        .await
        .expect("get")
        .expect("found");
    assert_eq!((got.seq, got.hash), (2, out[1].hash));
    assert_eq!(got.original_payload_sha256, Some([9; 32]));
    assert!(got.verdict.is_some());
    assert!(
        store
            .get_event(&other, out[1].id)
            .await
            .expect("get")
            .is_none()
    );
    let rows = store
        .session_events_with_columns(&p, "s", 0, 10)
        .await
        .expect("columns");
    assert_eq!(rows.len(), 2);
    let (first, cols) = &rows[0];
    assert!(
        first.session_header.is_some(),
        "the first event carries the header"
    );
    assert_eq!((cols.project_id, cols.decision), (p.id.0, None));
    let (_, cols) = &rows[1];
    assert_eq!(cols.decision, Some(Decision::Flag));
    assert_eq!(cols.usage.model.as_deref(), Some("m"));
    assert_eq!(
        (cols.usage.input_tokens, cols.usage.output_tokens),
        (Some(3), Some(4))
    );
    let after = store
        .session_events_with_columns(&p, "s", 1, 10)
        .await
        .expect("after");
    assert_eq!(after.len(), 1);
    let flagged = store
        .query_events(
            &p,
            EventQuery {
                decisions: vec![Decision::Flag],
                limit: 10,
                ..Default::default()
            },
        )
        .await
        .expect("by decision");
    assert_eq!(flagged.events.len(), 1);

    assert_eq!(
        store.redaction_salt(&p, out[1].id).await.expect("salt"),
        Some([5; 32])
    );
    assert_eq!(
        store.redaction_salt(&p, out[0].id).await.expect("salt"),
        None
    );
    assert_eq!(
        store.redaction_salt(&other, out[1].id).await.expect("salt"),
        None
    );
    let kept = store
        .destroy_redaction_salts(Some(Micros(0)))
        .await
        .expect("destroy none");
    assert_eq!(kept, 0, "nothing stored before the epoch");
    assert_eq!(
        store.destroy_redaction_salts(None).await.expect("destroy"),
        1
    );
    assert_eq!(
        store.redaction_salt(&p, out[1].id).await.expect("salt"),
        None
    );
    let report = verify_session(store, &p, "s")
        .await
        .expect("verify")
        .expect("exists");
    assert!(report.valid, "{report:?}");
    views_agree_with_events(store, &p, "s").await;
}

/// What verification and export read of a session's rows (as views, without
/// an `Event` each, where the backend can) is what its `Event`s say: the same
/// verify rows, and the same export lines byte for byte, cut at `until`.
pub async fn views_agree_with_events(store: &dyn EventStore, p: &ProjectRef, session: &str) {
    let evs = store
        .session_events_with_columns(p, session, 0, 1_000)
        .await
        .expect("events");
    assert!(evs.len() >= 2, "a session of a few events");
    let want: Vec<_> = evs
        .iter()
        .map(|(ev, cols)| crate::verify::VerifyRow::new(&ev.view(), cols.clone()))
        .collect();
    let got = store
        .session_verify_rows(p, session, 0, 1_000)
        .await
        .expect("verify rows");
    assert_eq!(format!("{got:?}"), format!("{want:?}"));
    let mut lines = Vec::new();
    for (ev, _) in &evs {
        ev.write_export_line(&mut lines);
        lines.push(b'\n');
    }
    let all = store
        .session_export_lines(p, session, 0, 1_000, u64::MAX)
        .await
        .expect("export");
    assert_eq!(
        String::from_utf8_lossy(&all.lines),
        String::from_utf8_lossy(&lines)
    );
    let last = evs.last().map(|(e, _)| (e.seq, e.id));
    assert_eq!((all.read, all.last), (evs.len(), last));
    // From seq 1 on, cut at seq 1: the rest are read, and dropped.
    let mut cut = store
        .session_export_lines(p, session, 1, 1_000, 1)
        .await
        .expect("export");
    assert_eq!(cut.read, evs.len() - 1);
    cut.keep_until();
    assert_eq!((cut.lines.len(), cut.last), (0, None));
    let mut cut = store
        .session_export_lines(p, session, 0, 1_000, 1)
        .await
        .expect("export");
    cut.keep_until();
    let first_line = lines.iter().position(|b| *b == b'\n').expect("a line") + 1;
    assert_eq!(cut.lines, lines[..first_line]);
    assert_eq!(cut.last, Some((evs[0].0.seq, evs[0].0.id)));
    // A client's `after` past every seq, even past i64, reads nothing (SQLite
    // bound it as a negative seq and read from the first event).
    for after in [1 << 63, u64::MAX] {
        let none = store.session_events(p, session, after, 10).await;
        assert!(none.expect("events").is_empty(), "after {after}");
        let none = store.session_verify_rows(p, session, after, 10).await;
        assert!(none.expect("verify rows").is_empty(), "after {after}");
        let none = store
            .session_export_lines(p, session, after, 10, u64::MAX)
            .await
            .expect("export");
        assert_eq!((none.read, none.lines.len()), (0, 0), "after {after}");
    }
}

/// The writer's gauges settle to zero once every append is answered, and a
/// closed store refuses appends.
pub async fn gauges_settle_and_close_refuses(store: &dyn EventStore) {
    let p = project(store, "p").await;
    store
        .append(&p, vec![event("s", Kind::Memory, "{}"); 3])
        .await
        .expect("append");
    assert_eq!((store.queue_depth(), store.pending_events()), (0, 0));
    store.close().await;
    let r = store.append(&p, vec![event("s", Kind::Memory, "{}")]).await;
    assert!(matches!(r, Err(crate::StoreError::ShuttingDown)), "{r:?}");
}

/// A store's events, sessions, salts and metadata, as one comparable text.
async fn ledger_text(store: &dyn EventStore) -> String {
    let mut out = format!("{:?}\n", store.ledger_meta().await.expect("meta"));
    for p in store.list_projects().await.expect("projects") {
        let mut page = store
            .list_sessions(
                &p,
                SessionQuery {
                    limit: 100,
                    ..SessionQuery::default()
                },
            )
            .await
            .expect("sessions");
        page.sessions.sort_by(|a, b| a.id.cmp(&b.id));
        for s in page.sessions {
            out.push_str(&format!("{s:?}\n"));
            let rows = store
                .session_events_with_columns(&p, &s.id, 0, 1000)
                .await
                .expect("events");
            for (e, cols) in rows {
                let salt = store.redaction_salt(&p, e.id).await.expect("salt");
                out.push_str(&format!("{e:?} {cols:?} {salt:?}\n"));
            }
        }
    }
    out
}

/// `import_session` stores events as they are (no new chaining), continues
/// only the stored head, and with `import_meta` lets `copy_ledger` move a
/// whole ledger (projects, keys with their hashes, policy sets, sessions with
/// their headers, events with verdicts and salts) into another store,
/// resumably, refusing a target that holds other data. Both stores are fresh.
pub async fn import_copies_a_ledger_as_stored(source: &dyn EventStore, target: &dyn EventStore) {
    use crate::import::{ImportedEvent, copy_ledger};
    use agentledger_core::verdict::{Decision, Judgement};
    let p = project(source, "p").await;
    let q = project(source, "q").await;
    let key = agentledger_core::keys::generate_key();
    let revoked = source
        .create_key(
            "q",
            "gone",
            agentledger_core::keys::hash_key(&key),
            "al_",
            false,
        )
        .await
        .expect("key");
    assert!(source.revoke_key(&revoked.id).await.expect("revoke"));
    source
        .save_policy_set(&p, Some(r#"{"rules":1}"#.into()))
        .await
        .expect("policy");
    source.save_policy_set(&p, None).await.expect("cleared");
    source
        .save_policy_set(&q, Some(r#"{"rules":2}"#.into()))
        .await
        .expect("policy");
    let mut judged = event(
        "s1",
        Kind::LlmResponse,
        r#"{"model":"m","usage":{"inputTokens":3,"outputTokens":4},"costUsd":0.25}"#,
    );
    judged.judgement = Some(Judgement {
        decision: Decision::Flag,
        verdict: RawValue::from_string(
            r#"{"decision":"flag","policies":["p1"],"reasons":[],"findings":[]}"#.into(),
        )
        .expect("json"),
        original_payload_sha256: Some([9; 32]),
        original_metadata_sha256: None,
        redaction_salt: Some([5; 32]),
    });
    let first = source
        .append(
            &p,
            vec![
                event("s1", Kind::SessionStarted, r#"{"tags":["prod"]}"#),
                judged,
                event("s1", Kind::ToolCall, r#"{"toolName":"t"}"#),
                event("s2", Kind::Memory, "{}"),
            ],
        )
        .await
        .expect("append");
    source
        .append(
            &p,
            vec![
                event("s1", Kind::Error, r#"{"message":"x"}"#),
                event("s1", Kind::SessionEnded, "{}"),
            ],
        )
        .await
        .expect("append");
    // An erased event is copied erased, with its record (issue 17).
    erase(source, &p, first[1].id, "key:k")
        .await
        .expect("erase");
    let header = NewSession {
        id: SessionId::parse("s3").expect("id"),
        agent_id: AgentId::parse("agent-3").expect("agent"),
        system_prompt: Some("be brief".into()),
        metadata: RawValue::from_string(r#"{"team": "x"}"#.into()).expect("json"),
    };
    source
        .create_session(&q, header, vec![event("s3", Kind::UserInput, r#"{"t":1}"#)])
        .await
        .expect("session");
    let empty = NewSession {
        id: SessionId::parse("s4").expect("id"),
        agent_id: AgentId::parse("agent-4").expect("agent"),
        system_prompt: None,
        metadata: empty_object(),
    };
    source
        .create_session(&q, empty, Vec::new())
        .await
        .expect("empty session");

    let mut seen = 0;
    let r = copy_ledger(source, target, 2, &mut |_| seen += 1)
        .await
        .expect("copy");
    assert!(seen > 0, "progress was reported");
    assert!(r.broken.is_empty(), "{:?}", r.broken);
    assert_eq!(
        (
            r.projects,
            r.keys,
            r.policy_sets,
            r.sessions,
            r.events_copied
        ),
        (2, 3, 3, 4, 8)
    );
    assert_eq!(ledger_text(target).await, ledger_text(source).await);
    // Keys authenticate by their hash; the revoked one stays revoked.
    assert!(
        target
            .authenticate(agentledger_core::keys::hash_key(&key))
            .await
            .expect("auth")
            .is_none()
    );
    assert_eq!(
        target.load_policy_sets().await.expect("sets"),
        source.load_policy_sets().await.expect("sets")
    );

    // Run again: nothing to do.
    let r = copy_ledger(source, target, 2, &mut |_| {})
        .await
        .expect("again");
    assert_eq!((r.events_copied, r.events_already), (0, 8));
    // The source goes on; a rerun copies only what is new.
    source
        .append(&p, vec![event("s1", Kind::Memory, r#"{"late":1}"#)])
        .await
        .expect("append");
    let r = copy_ledger(source, target, 2, &mut |_| {})
        .await
        .expect("resume");
    assert_eq!((r.events_copied, r.events_already), (1, 8));
    assert_eq!(ledger_text(target).await, ledger_text(source).await);

    // An import must continue the stored head: a gap or a foreign chain is
    // refused and stores nothing.
    let rows = source
        .session_events_with_columns(&p, "s1", 0, 100)
        .await
        .expect("rows");
    let s1 = source
        .get_session(&p, "s1")
        .await
        .expect("get")
        .expect("s1");
    let again: Vec<ImportedEvent> = rows[..2]
        .iter()
        .map(|(e, c)| ImportedEvent {
            event: e.clone(),
            columns: c.clone(),
            redaction_salt: None,
        })
        .collect();
    let err = target.import_session(&p, &s1, again).await;
    assert!(
        matches!(err, Err(crate::StoreError::ImportConflict(_))),
        "{err:?}"
    );
    assert_eq!(ledger_text(target).await, ledger_text(source).await);

    // The target takes appends on the imported heads, and new projects.
    let out = target
        .append(&p, vec![event("s2", Kind::Memory, r#"{"after":"copy"}"#)])
        .await
        .expect("append on the copy");
    assert_eq!(out[0].seq, 2);
    let v = verify_session(target, &p, "s2")
        .await
        .expect("verify")
        .expect("s2");
    assert!(v.valid, "{v:?}");
    // Now the target holds an event the source does not: refused, untouched.
    let before = ledger_text(target).await;
    let err = copy_ledger(source, target, 2, &mut |_| {}).await;
    assert!(
        matches!(err, Err(crate::StoreError::ImportConflict(_))),
        "{err:?}"
    );
    assert_eq!(ledger_text(target).await, before);
    // Projects made after a copy get ids of their own.
    let fresh = project(target, "fresh").await;
    assert!(fresh.id != p.id && fresh.id != q.id);
}

/// Rollups as a table: (dimension code, hour, key) -> (events, input
/// tokens, output tokens, cost).
pub type RollupTable = std::collections::BTreeMap<(i16, i64, String), (u64, i64, i64, f64)>;

/// The rollups of every dimension of a project, by hour and key, over all
/// of time.
pub async fn rollup_table(store: &dyn EventStore, p: &ProjectRef) -> RollupTable {
    use crate::rollup::{MAX_ROLLUP_ROWS, RollupDim, RollupQuery};
    let mut out = std::collections::BTreeMap::new();
    for dim in RollupDim::ALL {
        let rows = store
            .rollups(
                p,
                RollupQuery {
                    dim,
                    from: Micros(0),
                    to: Micros(i64::MAX),
                    by_hour: true,
                    limit: MAX_ROLLUP_ROWS,
                },
            )
            .await
            .expect("rollups");
        assert!(rows.len() < MAX_ROLLUP_ROWS as usize);
        for r in rows {
            let hour = r.hour.expect("by hour").0;
            out.insert(
                (dim.code(), hour, r.key),
                (r.events, r.input_tokens, r.output_tokens, r.cost_usd),
            );
        }
    }
    out
}

/// The same, recounted from the project's events as stored.
pub async fn rollup_recount(store: &dyn EventStore, p: &ProjectRef) -> RollupTable {
    use crate::rollup::{EventFacts, Rollups};
    let mut r = Rollups::default();
    let mut sessions = Vec::new();
    let mut q = SessionQuery {
        limit: 100,
        ..Default::default()
    };
    loop {
        let page = store.list_sessions(p, q.clone()).await.expect("sessions");
        sessions.extend(page.sessions.into_iter().map(|s| s.id));
        match page.next_cursor {
            Some(c) => q.cursor = Some(c),
            None => break,
        }
    }
    for s in sessions {
        let mut after = 0;
        loop {
            let evs = store
                .session_events_with_columns(p, &s, after, 500)
                .await
                .expect("events");
            let Some(last) = evs.last() else { break };
            after = last.0.seq;
            for (ev, cols) in &evs {
                r.add(p.id.0, &EventFacts::stored(ev, cols));
            }
        }
    }
    r.rows
        .into_iter()
        .map(|(k, v)| {
            (
                (k.dim.code(), k.hour, k.key),
                (v.events as u64, v.input_tokens, v.output_tokens, v.cost_usd),
            )
        })
        .collect()
}

/// Whether two rollup tables agree (cost sums to a rounding error: they
/// were added in another order).
pub fn assert_rollups_equal(got: &RollupTable, want: &RollupTable) {
    let keys = |m: &RollupTable| m.keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(got), keys(want), "the same rows");
    for (k, w) in want {
        let g = &got[k];
        assert_eq!((g.0, g.1, g.2), (w.0, w.1, w.2), "row {k:?}");
        assert!(
            (g.3 - w.3).abs() < 1e-6,
            "cost of row {k:?}: {} vs {}",
            g.3,
            w.3
        );
    }
}

/// A ledger of random appends for the rollup checks: tool calls in the
/// dialects' shapes, LLM responses with usage, judged events with
/// findings, client times over six hours (and none), and one request that
/// fails (its events must not count). Returns the project and, from the
/// generator's own knowledge, the tool calls per tool and findings per
/// detector.
pub async fn random_rollup_ledger(
    store: &dyn EventStore,
) -> (
    ProjectRef,
    std::collections::BTreeMap<String, u64>,
    std::collections::BTreeMap<String, u64>,
) {
    use agentledger_core::verdict::{Decision, Judgement};
    let p = project(store, "rollups").await;
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let hour = 3_600_000_000i64;
    let base = 1_700_000_000_000_000 / hour * hour;
    let (mut tools, mut detectors) = (
        std::collections::BTreeMap::new(),
        std::collections::BTreeMap::new(),
    );
    for _ in 0..12 {
        let n = 1 + next() % 40;
        let mut batch = Vec::new();
        for _ in 0..n {
            let r = next();
            let session = format!("r{}", r % 7);
            let tool = ["search", "shell", "http"][(r / 7 % 3) as usize];
            let (kind, payload) = match r / 21 % 5 {
                0 => (
                    Kind::ToolCall,
                    format!(r#"{{"toolName":"{tool}","arguments":{{}}}}"#),
                ),
                1 => (
                    Kind::ToolCall,
                    format!(r#"{{"tool":{{"name":"{tool}"}},"args":[1]}}"#),
                ),
                2 => (Kind::ToolCall, format!(r#"{{"name":"{tool}","tool":7}}"#)),
                3 => (
                    Kind::LlmResponse,
                    format!(
                        r#"{{"model":"m","usage":{{"input_tokens":{},"output_tokens":{}}},"cost_usd":{}}}"#,
                        r % 1000,
                        r % 77,
                        (r % 1000) as f64 / 1000.0
                    ),
                ),
                _ => (Kind::UserInput, r#"{"text":"hi"}"#.to_owned()),
            };
            if kind == Kind::ToolCall {
                *tools.entry(tool.to_owned()).or_insert(0u64) += 1;
            }
            let mut e = event(&session, kind, &payload);
            e.agent_id = AgentId::parse(format!("agent-{}", r % 3)).expect("agent");
            e.client_ts = match r % 8 {
                0 => None,
                k => Some(Micros(base + (k as i64 - 1) * hour + (r % 1000) as i64)),
            };
            if r % 3 == 0 {
                let dets: Vec<&str> = ["pii", "secrets", "injection"]
                    .into_iter()
                    .take((r / 3 % 3) as usize)
                    .collect();
                for d in &dets {
                    *detectors.entry((*d).to_owned()).or_insert(0u64) += 1;
                }
                let findings: Vec<String> = dets
                    .iter()
                    .map(|d| {
                        format!(
                            r#"{{"detector":"{d}","rule":"x","json_pointer":"/payload","start":0,"end":1,"confidence":1.0}}"#
                        )
                    })
                    .collect();
                let decision =
                    [Decision::Allow, Decision::Flag, Decision::Deny][(r / 9 % 3) as usize];
                e.judgement = Some(Judgement {
                    decision,
                    verdict: RawValue::from_string(format!(
                        r#"{{"decision":"{}","policies":[],"reasons":[],"findings":[{}]}}"#,
                        decision.as_str(),
                        findings.join(",")
                    ))
                    .expect("verdict JSON"),
                    original_payload_sha256: None,
                    original_metadata_sha256: None,
                    redaction_salt: None,
                });
            }
            batch.push(e);
        }
        store.append(&p, batch).await.expect("append");
    }
    // A request that fails (its session exists): nothing of it counts.
    let failed = store
        .append_request(
            &p,
            crate::AppendRequest {
                session: Some(new_session("r1", "agent-9")),
                events: vec![event("r1", Kind::ToolCall, r#"{"toolName":"never"}"#)],
                ..Default::default()
            },
        )
        .await;
    assert!(failed.is_err(), "the session exists");
    (p, tools, detectors)
}

/// The writer's rollups equal a recount from the events after random
/// appends; tool and detector counts match what was sent; another
/// project's rollups are its own.
pub async fn rollups_equal_a_recount(store: &dyn EventStore) {
    use crate::rollup::{RollupDim, RollupQuery};
    let other = project(store, "other").await;
    store
        .append(
            &other,
            vec![event("o", Kind::ToolCall, r#"{"toolName":"search"}"#)],
        )
        .await
        .expect("append");
    let (p, tools, detectors) = random_rollup_ledger(store).await;
    let got = rollup_table(store, &p).await;
    assert_rollups_equal(&got, &rollup_recount(store, &p).await);
    let pr = &p;
    let per_key = |dim: RollupDim| async move {
        store
            .rollups(
                pr,
                RollupQuery {
                    dim,
                    from: Micros(0),
                    to: Micros(i64::MAX),
                    by_hour: false,
                    limit: 100,
                },
            )
            .await
            .expect("rollups")
            .into_iter()
            .map(|r| (r.key, r.events))
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    assert_eq!(per_key(RollupDim::Tool).await, tools);
    assert_eq!(per_key(RollupDim::Detector).await, detectors);
    let total: u64 = per_key(RollupDim::Kind).await.values().sum();
    let stored: u64 = store
        .query_events(
            &p,
            EventQuery {
                limit: 1,
                ..Default::default()
            },
        )
        .await
        .expect("count")
        .total
        .expect("a total");
    assert_eq!(total, stored);
    let theirs = rollup_table(store, &other).await;
    assert_eq!(theirs.len(), 3, "kind, agent, tool: {theirs:?}");
}

/// Searches page correctly whether their words are rare, in a few thousand
/// events, or in nearly every event (PostgreSQL and SQLite each plan those
/// differently: a sort of the matches, or a walk of the listing's order);
/// totals are exact or say they are capped; never another project's.
pub async fn search_pages_common_and_rare_words(store: &dyn EventStore) {
    const N: i64 = 5_200;
    let p = project(store, "p").await;
    let other = project(store, "other").await;
    let mut batch = Vec::new();
    for i in 0..N {
        let extra = match i {
            _ if i % 1000 == 500 => "rare half",
            _ if i % 2 == 0 => "half",
            _ => "",
        };
        let mut e = event(
            &format!("s{}", i % 3),
            Kind::Memory,
            &format!(r#"{{"n":{i},"text":"common word {extra}"}}"#),
        );
        e.client_ts = Some(Micros(1_000_000 * (i + 1)));
        batch.push(e);
        if batch.len() == 1000 {
            store
                .append(&p, std::mem::take(&mut batch))
                .await
                .expect("append");
        }
    }
    store.append(&p, batch).await.expect("append");
    let noise: Vec<_> = (0..50)
        .map(|_| event("s0", Kind::Memory, r#"{"text":"common rare half"}"#))
        .collect();
    store.append(&other, noise).await.expect("append");
    wait_for_search(store).await;

    let n_of = |e: &agentledger_core::Event| -> i64 {
        let v: serde_json::Value = serde_json::from_str(e.payload.get()).expect("payload");
        v["n"].as_i64().expect("n")
    };
    // Every page of a search, by cursor, in `order`: the `n` of each event.
    let p = &p;
    let all = |text: &'static str, session: Option<&'static str>, order: Order, limit: u32| async move {
        let mut got = Vec::new();
        let mut cursor = None;
        let mut first_total = None;
        loop {
            let page = store
                .query_events(
                    p,
                    EventQuery {
                        limit,
                        text: Some(text.into()),
                        session_id: session.map(str::to_owned),
                        order,
                        cursor: cursor.take(),
                        ..Default::default()
                    },
                )
                .await
                .expect("search");
            first_total.get_or_insert((page.total, page.total_capped));
            got.extend(page.events.iter().map(n_of));
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => return (got, first_total.expect("one page")),
            }
        }
    };
    let exact_or_capped = |(total, capped): (Option<u64>, bool), want: u64, what: &str| {
        let total = total.expect("a total");
        if capped {
            assert!(
                (agentledger_core::query::TEXT_COUNT_LIMIT..=want).contains(&total),
                "{what}: capped total {total} of {want}"
            );
        } else {
            assert_eq!(total, want, "{what}: total");
        }
    };

    // In every event: newest first, then oldest first, every event once.
    let (got, total) = all("common", None, Order::Desc, 700).await;
    assert_eq!(
        got,
        (0..N).rev().collect::<Vec<_>>(),
        "common, newest first"
    );
    exact_or_capped(total, N as u64, "common");
    let (got, _) = all("COMMON word", None, Order::Asc, 1000).await;
    assert_eq!(
        got,
        (0..N).collect::<Vec<_>>(),
        "common words, oldest first"
    );
    // In one session, in chain order.
    let (got, _) = all("common", Some("s1"), Order::Asc, 500).await;
    let want: Vec<i64> = (0..N).filter(|i| i % 3 == 1).collect();
    assert_eq!(got, want, "common, one session");
    // In half of them.
    let (got, total) = all("half", None, Order::Desc, 400).await;
    let want: Vec<i64> = (0..N).rev().filter(|i| i % 2 == 0).collect();
    assert_eq!(got, want, "half, newest first");
    exact_or_capped(total, want.len() as u64, "half");
    // In a few: exact totals.
    let (got, total) = all("rare", None, Order::Desc, 2).await;
    assert_eq!(got, vec![4500, 3500, 2500, 1500, 500], "rare");
    assert_eq!(total, (Some(5), false), "rare: total");
    let (got, _) = all("rare common", Some("s2"), Order::Asc, 10).await;
    assert_eq!(got, vec![500, 3500], "rare, one session");
    let (got, total) = all("common nowhere", None, Order::Desc, 50).await;
    assert!(got.is_empty(), "no event has both words");
    assert_eq!(total, (Some(0), false));
}

/// Alerting: rules and destinations are the caller's project's; a matching
/// event's alert and deliveries are written with it (and only with it); a
/// threshold alert opens once per subject and resolves; deliveries are
/// claimed once, retried, delivered or given up, and listed per project.
pub async fn alerts_outbox_and_deliveries(store: &dyn EventStore) {
    use crate::alerts::{
        AlertStatus, AttemptResult, Condition, DeliveryStatus, DestinationKind, Metric, NewAlert,
        NewDestination, NewRule, RuleSet, Transition,
    };
    use agentledger_core::verdict::{Decision, Judgement, Verdict};

    let p = project(store, "p").await;
    let q = project(store, "q").await;
    let dest = store
        .create_destination(
            &p,
            NewDestination {
                name: "siem".into(),
                kind: DestinationKind::Webhook,
                url: "http://127.0.0.1:9/hook".into(),
                secret: Some("whsec_x".into()),
            },
        )
        .await
        .expect("destination");
    assert_eq!(store.list_destinations(&p).await.unwrap().len(), 1);
    assert!(store.list_destinations(&q).await.unwrap().is_empty());
    assert_eq!(
        store
            .destination_by_id(&dest.id)
            .await
            .unwrap()
            .unwrap()
            .secret
            .as_deref(),
        Some("whsec_x")
    );
    let rule = store
        .create_rule(
            &p,
            NewRule {
                name: "denied".into(),
                condition: Condition::Decision {
                    decisions: vec![Decision::Deny],
                },
                destinations: vec![dest.id.clone()],
            },
        )
        .await
        .expect("rule");
    assert_eq!(
        store.list_rules(Some(&p)).await.unwrap(),
        vec![rule.clone()]
    );
    assert!(store.list_rules(Some(&q)).await.unwrap().is_empty());
    assert_eq!(store.list_rules(None).await.unwrap().len(), 1);
    assert!(!store.delete_rule(&q, &rule.id).await.unwrap(), "not q's");
    assert!(!store.delete_destination(&q, &dest.id).await.unwrap());

    // A denied event and an allowed one, appended with the rules.
    let judged = |d: Decision| {
        let mut e = event("s1", Kind::ToolCall, r#"{"toolName":"x","arguments":{}}"#);
        e.judgement = Some(Judgement::new(&Verdict {
            decision: d,
            policies: vec![],
            reasons: vec![],
            findings: vec![],
        }));
        e
    };
    let rules = Arc::new(RuleSet {
        rules: vec![rule.clone()],
    });
    let out = store
        .append_request(
            &p,
            crate::AppendRequest {
                events: vec![judged(Decision::Allow), judged(Decision::Deny)],
                alerts: Some(rules.clone()),
                ..Default::default()
            },
        )
        .await
        .expect("append");
    let crate::AppendOutcome::Committed { appended, .. } = out else {
        panic!("not committed");
    };
    let alerts = store.list_alerts(&p, true, 10).await.unwrap();
    assert_eq!(alerts.len(), 1, "one alert for the denied event");
    let a = &alerts[0];
    assert_eq!(
        a.event_id.as_deref(),
        Some(appended[1].id.to_string().as_str())
    );
    assert_eq!((a.session_id.as_str(), a.status), ("s1", AlertStatus::Open));
    assert!(store.list_alerts(&q, false, 10).await.unwrap().is_empty());
    assert_eq!(store.get_alert(&a.id).await.unwrap().as_ref(), Some(a));
    let to_record = store.alerts_to_record(10).await.unwrap();
    assert_eq!(to_record.len(), 1);
    store
        .mark_alerts_recorded(&[(a.id.clone(), Transition::Triggered, 3)])
        .await
        .unwrap();
    assert!(store.alerts_to_record(10).await.unwrap().is_empty());

    // A request that fails stores neither its events nor its alerts.
    let r = store
        .append_request(
            &p,
            crate::AppendRequest {
                session: Some(crate::NewSession {
                    id: SessionId::parse("s1").unwrap(),
                    agent_id: AgentId::parse("agent-1").unwrap(),
                    system_prompt: None,
                    metadata: empty_object(),
                }),
                events: vec![judged(Decision::Deny)],
                alerts: Some(rules),
                ..Default::default()
            },
        )
        .await;
    assert!(r.is_err(), "s1 exists");
    assert_eq!(store.list_alerts(&p, false, 10).await.unwrap().len(), 1);

    // Its delivery: due now, claimed once, retried, then delivered.
    let due = store.due_deliveries(Micros::now(), 10).await.unwrap();
    assert_eq!(due.len(), 1);
    let d = &due[0];
    assert_eq!((d.status, d.attempts), (DeliveryStatus::Pending, 0));
    assert_eq!(d.destination_id, dest.id);
    let lease = Micros(Micros::now().0 + 60_000_000);
    assert!(
        store
            .claim_delivery(&d.id, d.next_attempt_at, lease)
            .await
            .unwrap()
    );
    assert!(
        !store
            .claim_delivery(&d.id, d.next_attempt_at, lease)
            .await
            .unwrap(),
        "claimed once"
    );
    assert!(
        store
            .due_deliveries(Micros::now(), 10)
            .await
            .unwrap()
            .is_empty()
    );
    store
        .record_attempt(
            &d.id,
            AttemptResult::Retry {
                error: "connection refused".into(),
                status: None,
                next_at: Micros(0),
            },
        )
        .await
        .unwrap();
    let listed = store.list_deliveries(&p, Some(&a.id), 10).await.unwrap();
    assert_eq!(listed[0].attempts, 1);
    assert_eq!(listed[0].last_error.as_deref(), Some("connection refused"));
    store
        .record_attempt(&d.id, AttemptResult::Delivered { status: 204 })
        .await
        .unwrap();
    let listed = store.list_deliveries(&p, None, 10).await.unwrap();
    assert_eq!(
        (listed[0].status, listed[0].attempts, listed[0].last_status),
        (DeliveryStatus::Delivered, 2, Some(204))
    );
    assert!(
        store
            .list_deliveries(&q, None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .due_deliveries(Micros::now(), 10)
            .await
            .unwrap()
            .is_empty()
    );

    // Thresholds: one open alert per (rule, subject), resolved once.
    let new = || NewAlert {
        rule_id: "rul_t".into(),
        rule_name: "errors".into(),
        condition: serde_json::to_string(&Condition::Threshold {
            metric: Metric::AgentErrors,
            threshold: 2.0,
            window_secs: 300,
        })
        .unwrap(),
        session_id: "s1".into(),
        event_id: None,
        subject: "agent-1".into(),
        value: 3.0,
        threshold: 2.0,
        message: "3 errors".into(),
        destinations: vec![dest.id.clone()],
    };
    let opened = store.open_threshold_alert(&p, new()).await.unwrap();
    let opened = opened.expect("opened");
    assert!(
        store
            .open_threshold_alert(&p, new())
            .await
            .unwrap()
            .is_none()
    );
    let of_rule = store.open_threshold_alerts(&p, "rul_t", 10).await.unwrap();
    assert_eq!(
        of_rule,
        vec![opened.clone()],
        "the event alert is not the rule's"
    );
    assert!(
        store
            .open_threshold_alerts(&q, "rul_t", 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(!store.resolve_alert(&q, &opened.id, &[]).await.unwrap());
    assert!(
        store
            .resolve_alert(&p, &opened.id, std::slice::from_ref(&dest.id))
            .await
            .unwrap()
    );
    assert!(!store.resolve_alert(&p, &opened.id, &[]).await.unwrap());
    let open = store.list_alerts(&p, true, 10).await.unwrap();
    assert_eq!(open.len(), 1, "the event alert stays open");
    let pending: Vec<_> = store
        .list_deliveries(&p, Some(&opened.id), 10)
        .await
        .unwrap()
        .into_iter()
        .map(|d| (d.transition, d.status))
        .collect();
    assert_eq!(pending.len(), 2);
    assert!(pending.contains(&(Transition::Resolved, DeliveryStatus::Pending)));
    // Reopens after resolving.
    assert!(
        store
            .open_threshold_alert(&p, new())
            .await
            .unwrap()
            .is_some()
    );
    let due = store.due_deliveries(Micros::now(), 10).await.unwrap();
    let last = due.last().expect("due");
    store
        .record_attempt(
            &last.id,
            AttemptResult::Failed {
                error: "HTTP 500".into(),
                status: Some(500),
            },
        )
        .await
        .unwrap();
    let failed = store
        .list_deliveries(&p, None, 10)
        .await
        .unwrap()
        .into_iter()
        .filter(|d| d.status == DeliveryStatus::Failed)
        .count();
    assert_eq!(failed, 1);

    assert!(store.delete_rule(&p, &rule.id).await.unwrap());
    assert!(store.delete_destination(&p, &dest.id).await.unwrap());
    assert!(store.list_rules(None).await.unwrap().is_empty());
    assert!(store.destination_by_id(&dest.id).await.unwrap().is_none());
}

/// Erase `id` in `project` the way the server does: its `event_erased`
/// record appended with the erasure (core's `erasure`).
pub async fn erase(
    store: &dyn EventStore,
    project: &ProjectRef,
    id: agentledger_core::EventId,
    by: &str,
) -> crate::StoreResult<crate::AppendedEvent> {
    let ev = store
        .get_event(project, id)
        .await?
        .ok_or_else(|| crate::StoreError::Storage("no such event".into()))?;
    let record = agentledger_core::erasure::record_event(&ev, by, "personal data")
        .map_err(crate::StoreError::Storage)?;
    let req = crate::AppendRequest {
        events: vec![record],
        erase: Some(Box::new(crate::EraseTarget {
            event_id: id,
            seq: ev.seq,
            payload_sha256: ev.payload_sha256,
            by: by.to_owned(),
        })),
        ..Default::default()
    };
    match store.append_request(project, req).await? {
        crate::AppendOutcome::Committed { appended, .. } => appended
            .into_iter()
            .next()
            .ok_or_else(|| crate::StoreError::Storage("no record".into())),
        _ => Err(crate::StoreError::Storage("not committed".into())),
    }
}

/// Erasure keeps the proof: the payload and its search terms are gone, the
/// digest, usage figures and chain stay, the session verifies with the
/// record appended; a second erasure is refused and changes nothing; another
/// project's event cannot be erased.
/// An erasure rewrites, in its transaction, the replies kept under idempotency keys that
/// echo the erased payload (docs/transparency.md): a JSON reply keeps its shape with the
/// payload `null` (a retry replays that), one that cannot becomes a `410` saying the reply was
/// erased; replies of other events are untouched.
pub async fn erasure_scrubs_kept_replies(store: &dyn EventStore) {
    use crate::{AppendOutcome, AppendRequest, IdempotencyKey, StoredReply};
    let p = project(store, "p").await;
    let req = |key: &str, payload: &str, json: bool| AppendRequest {
        events: vec![event("s", Kind::Memory, payload)],
        idempotency: Some((
            IdempotencyKey {
                key: key.into(),
                fingerprint: [7; 32],
            },
            Box::new(move |c: &crate::Committed<'_>| {
                let (id, data) = (c.appended[0].id, c.events[0].payload.get());
                StoredReply {
                    status: 201,
                    content_type: if json {
                        "application/json"
                    } else {
                        "text/plain"
                    }
                    .into(),
                    body: if json {
                        format!(r#"{{"id":"event_{id}","data":{data}}}"#)
                    } else {
                        format!("created {id}: {data}")
                    }
                    .into_bytes(),
                }
            }) as crate::Render,
        )),
        ..Default::default()
    };
    let secret = r#"{"note":"zebrafinch 078-05-1120"}"#;
    let committed = |o: AppendOutcome| match o {
        AppendOutcome::Committed { appended, .. } => appended[0].id,
        _ => panic!("committed"),
    };
    let e1 = committed(
        store
            .append_request(&p, req("k-json", secret, true))
            .await
            .expect("1"),
    );
    let e2 = committed(
        store
            .append_request(&p, req("k-text", r#"{"note":"second secret"}"#, false))
            .await
            .expect("2"),
    );
    store
        .append_request(&p, req("k-other", secret, true))
        .await
        .expect("3");
    let p = &p;
    let kept = |key: &'static str| async move {
        store
            .idempotent_reply(p, key)
            .await
            .expect("read")
            .expect("kept")
            .1
    };
    let other = kept("k-other").await;

    erase(store, p, e1, "key:k1").await.expect("erase 1");
    let json = kept("k-json").await;
    assert_eq!(
        (
            json.status,
            json.content_type.as_str(),
            String::from_utf8_lossy(&json.body)
        ),
        (
            201,
            "application/json",
            format!(r#"{{"id":"event_{e1}","data":null}}"#).into()
        )
    );
    match store
        .append_request(p, req("k-json", secret, true))
        .await
        .expect("retry")
    {
        AppendOutcome::Replayed(r) => assert_eq!(r, json, "the retry replays the rewritten reply"),
        _ => panic!("a retry must replay"),
    }
    // Another event's reply holds the same payload text but not this event: untouched.
    assert_eq!(kept("k-other").await, other);

    erase(store, p, e2, "key:k1").await.expect("erase 2");
    let text = kept("k-text").await;
    let body = String::from_utf8_lossy(&text.body).into_owned();
    assert_eq!(
        (text.status, text.content_type.as_str()),
        (410, "application/json")
    );
    assert!(
        body.contains("REPLY_ERASED")
            && body.contains(r#""type":"gone""#)
            && body.contains(&e2.to_string())
            && !body.contains("second secret"),
        "{body}"
    );
    assert_eq!(kept("k-other").await, other);
}

pub async fn erasure_keeps_the_proof(store: &dyn EventStore) {
    let p = project(store, "p").await;
    let other = project(store, "other").await;
    let out = store
        .append(
            &p,
            vec![
                event(
                    "s",
                    Kind::LlmResponse,
                    r#"{"model":"m1","completion":"zebrafinch 555-0100","usage":{"inputTokens":3,"outputTokens":4},"costUsd":0.25}"#,
                ),
                event("s", Kind::Memory, r#"{"note":"zebrafinch lives here"}"#),
                event("s", Kind::Memory, r#"{"note":"nothing to see"}"#),
            ],
        )
        .await
        .expect("append");
    let search = |word: &str| EventQuery {
        limit: 10,
        text: Some(word.to_owned()),
        ..Default::default()
    };
    // Indexed first, so the erasure must take the terms out of the index
    // (and not only out of the tail the search scans).
    wait_for_search(store).await;
    let found = store
        .query_events(&p, search("zebrafinch"))
        .await
        .expect("q");
    assert_eq!(found.events.len(), 2);
    let before = store
        .get_event(&p, out[0].id)
        .await
        .expect("get")
        .expect("event");

    let record = erase(store, &p, out[0].id, "key:k1").await.expect("erase");
    assert_eq!((record.session_id.as_str(), record.seq), ("s", 4));

    let after = store
        .get_event(&p, out[0].id)
        .await
        .expect("get")
        .expect("event");
    assert_eq!(after.payload.get(), "null");
    assert_eq!(after.payload_sha256, before.payload_sha256);
    assert_eq!(after.hash, before.hash);
    assert_eq!(
        after.erased.as_deref(),
        Some(&agentledger_core::erasure::Erasure {
            by: "key:k1".into(),
            at: record.server_ts,
            record_seq: 4,
        })
    );
    let rec = store.session_events(&p, "s", 3, 10).await.expect("events");
    assert_eq!(rec.len(), 1);
    assert_eq!(rec[0].kind, Kind::EventErased);
    assert!(!rec[0].payload.get().contains("zebrafinch"));
    assert!(rec[0].payload.get().contains(r#""erasedSeq":1"#));

    // The word of the erased payload is found only in the one not erased;
    // a word only the erased payload held is found nowhere.
    for _ in 0..2 {
        let q = store
            .query_events(&p, search("zebrafinch"))
            .await
            .expect("q");
        assert_eq!(q.events.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![2]);
        let q = store.query_events(&p, search("555-0100")).await.expect("q");
        assert!(q.events.is_empty(), "erased text still found");
        wait_for_search(store).await;
    }
    // Usage figures and counters stay (the record keeps them in the chain).
    let s = store.get_session(&p, "s").await.expect("s").expect("s");
    assert_eq!(
        (
            s.counters.events,
            s.counters.input_tokens,
            s.counters.output_tokens
        ),
        (4, 3, 4)
    );

    let report = verify_session(store, &p, "s")
        .await
        .expect("verify")
        .expect("s");
    assert!(report.valid, "{report:?}");
    assert_eq!(report.events, 4);
    views_agree_with_events(store, &p, "s").await;
    // Reads that look inside payloads skip an erased one: the LLM usage
    // figures stay (from the kept columns), its latency and provider go.
    for provider in [None, Some("openai".to_owned())] {
        let rows = store
            .llm_usage(
                &p,
                EventQuery::default(),
                provider.clone(),
                crate::LlmGroup::Model,
            )
            .await
            .expect("llm usage over an erased event");
        if provider.is_none() {
            assert_eq!(rows.len(), 1, "{rows:?}");
        }
    }

    // Again: refused, nothing appended.
    match erase(store, &p, out[0].id, "key:k2").await {
        Err(crate::StoreError::AlreadyErased(_)) | Err(crate::StoreError::Storage(_)) => {}
        other => panic!("second erasure: {other:?}"),
    }
    // At the store level too (the caller's read raced another erasure).
    let req = crate::AppendRequest {
        events: vec![
            agentledger_core::erasure::record_event(&before, "key:k2", "again").expect("record"),
        ],
        erase: Some(Box::new(crate::EraseTarget {
            event_id: out[0].id,
            seq: 1,
            payload_sha256: before.payload_sha256,
            by: "key:k2".into(),
        })),
        ..Default::default()
    };
    assert!(matches!(
        store.append_request(&p, req).await,
        Err(crate::StoreError::AlreadyErased(_))
    ));
    assert_eq!(
        store
            .get_session(&p, "s")
            .await
            .expect("s")
            .expect("s")
            .head_seq,
        4
    );
    // Another project's event is not reachable.
    assert!(erase(store, &other, out[1].id, "key:k3").await.is_err());
    let req = crate::AppendRequest {
        events: vec![event("s", Kind::EventErased, "{}")],
        erase: Some(Box::new(crate::EraseTarget {
            event_id: out[1].id,
            seq: 2,
            payload_sha256: [0; 32],
            by: "key:k3".into(),
        })),
        ..Default::default()
    };
    assert!(store.append_request(&other, req).await.is_err());
    let kept = store
        .get_event(&p, out[1].id)
        .await
        .expect("get")
        .expect("e");
    assert!(kept.erased.is_none());
    let report = verify_session(store, &p, "s")
        .await
        .expect("verify")
        .expect("s");
    assert!(report.valid, "{report:?}");
}
