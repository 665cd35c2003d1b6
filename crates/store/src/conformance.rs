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
        session: None,
        events: vec![event("s", Kind::ToolCall, r#"{"toolName":"x"}"#)],
        idempotency: Some(keyed("k-1", fp)),
        expect_heads: Vec::new(),
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
        session: Some(crate::NewSession {
            id: SessionId::parse("created").expect("id"),
            agent_id: AgentId::parse("agent-1").expect("id"),
            system_prompt: None,
            metadata: empty_object(),
        }),
        events: Vec::new(),
        idempotency: Some(keyed("k-2", 3)),
        expect_heads: Vec::new(),
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

/// A request that names the heads it was judged against commits only onto
/// exactly those heads (0: a session with no event yet).
pub async fn expected_heads_are_checked(store: &dyn EventStore) {
    use crate::{AppendOutcome, AppendRequest, StoreError};
    let p = project(store, "heads").await;
    let req = |expect: Vec<(&str, u64)>| AppendRequest {
        events: vec![
            event("h1", Kind::ToolCall, r#"{"toolName":"x"}"#),
            event("h2", Kind::ToolCall, r#"{"toolName":"x"}"#),
        ],
        expect_heads: expect.into_iter().map(|(s, n)| (s.to_owned(), n)).collect(),
        ..AppendRequest::default()
    };
    assert!(matches!(
        store
            .append_request(&p, req(vec![("h1", 0), ("h2", 0)]))
            .await,
        Ok(AppendOutcome::Committed { .. })
    ));
    match store
        .append_request(&p, req(vec![("h1", 1), ("h2", 0)]))
        .await
    {
        Err(StoreError::HeadMoved(s)) => assert_eq!(s, "h2"),
        other => panic!("h2 is at 1: {:?}", other.err()),
    }
    let s = store
        .get_session(&p, "h1")
        .await
        .expect("read")
        .expect("h1");
    assert_eq!(s.head_seq, 1, "nothing of the refused request was stored");
    assert!(matches!(
        store
            .append_request(&p, req(vec![("h1", 1), ("h2", 1)]))
            .await,
        Ok(AppendOutcome::Committed { .. })
    ));
    // Queued requests are carried out in the order they were queued.
    let first = store
        .enqueue(&p, req(vec![("h1", 2), ("h2", 2)]))
        .expect("queue");
    let second = store
        .enqueue(&p, req(vec![("h1", 3), ("h2", 3)]))
        .expect("queue");
    assert!(second.await.is_ok() && first.await.is_ok());
}
