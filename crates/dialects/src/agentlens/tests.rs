//! Every example of the AgentLens document.

use std::collections::BTreeSet;

use serde_json::Value;

use super::*;

fn fixture(name: &str) -> String {
    let path = format!(
        "{}/src/agentlens/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object().unwrap().keys().cloned().collect()
}

#[test]
fn documented_ingest_examples_parse() {
    for name in ["ingest_request.json", "ingest_curl_example.json"] {
        let evs = parse_ingest(fixture(name).as_bytes()).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(evs.len(), 1);
        assert_eq!(evs[0].kind, Kind::ToolCall);
        assert_eq!(evs[0].dialect, Dialect::AgentLens);
        assert_eq!(evs[0].agent_id.as_str(), "my-agent");
    }
    let r: IngestResponse = serde_json::from_str(&fixture("ingest_response.json")).unwrap();
    assert_eq!(r.ingested, 1);
}

#[test]
fn rendered_events_have_exactly_the_documented_keys() {
    let documented: Value = serde_json::from_str(&fixture("get_response.json")).unwrap();
    let evs = parse_ingest(fixture("ingest_request.json").as_bytes()).unwrap();
    let e = &evs[0];
    let stored = Event {
        id: agentledger_core::EventId::generate(agentledger_core::Micros::now()),
        project: "p".into(),
        session_id: e.session_id.to_string(),
        seq: 1,
        agent_id: e.agent_id.to_string(),
        kind: e.kind,
        source_type: e.source_type.clone(),
        dialect: e.dialect,
        severity: e.severity,
        client_ts: e.client_ts,
        server_ts: agentledger_core::Micros::now(),
        payload: e.payload.clone(),
        metadata: e.metadata.clone(),
        payload_sha256: [0; 32],
        prev_hash: None,
        hash: [1; 32],
        envelope_version: 2,
        verdict: None,
        original_payload_sha256: None,
        original_metadata_sha256: None,
        session_header: None,
        erased: None,
    };
    let ours = serde_json::to_value(EventOut::from(stored)).unwrap();
    assert_eq!(keys(&ours), keys(&documented));
    assert_eq!(
        ours["timestamp"], "2026-02-08T10:00:00.000Z",
        "documented millisecond form"
    );
    assert_eq!(ours["prevHash"], Value::Null);
    let list: Value = serde_json::from_str(&fixture("list_response.json")).unwrap();
    let ours = serde_json::to_value(EventList {
        events: vec![],
        total: 0,
        has_more: false,
    })
    .unwrap();
    assert_eq!(keys(&ours), keys(&list));
}

#[test]
fn only_the_eighteen_types_are_accepted_and_payloads_are_typed() {
    assert_eq!(EVENT_TYPES.len(), 18);
    let body = |t: &str, p: &str| {
        format!(
            r#"{{"events":[{{"sessionId":"s","agentId":"a","eventType":"{t}","payload":{p}}}]}}"#
        )
    };
    let e = parse_ingest(body("user_input", "{}").as_bytes()).unwrap_err();
    assert_eq!(e.path(), "events[0].eventType");
    let e =
        parse_ingest(body("tool_error", r#"{"callId":"c","toolName":"t","error":"x"}"#).as_bytes())
            .unwrap_err();
    assert_eq!(e.path(), "events[0].payload.durationMs");
    assert!(parse_ingest(body("cost_tracked", r#"{"provider":"p","model":"m","inputTokens":1,"outputTokens":2,"totalTokens":3,"costUsd":0.01}"#).as_bytes()).is_ok());
}

#[test]
fn empty_and_oversize_batches_are_400() {
    let e = parse_ingest(br#"{"events":[]}"#).unwrap_err();
    assert!(matches!(e, InputError::Invalid { .. }));
    let one =
        r#"{"sessionId":"s","agentId":"a","eventType":"custom","payload":{"type":"t","data":1}}"#;
    let e = parse_ingest(format!(r#"{{"events":[{}]}}"#, vec![one; 1001].join(",")).as_bytes())
        .unwrap_err();
    assert_eq!(e.reason(), "BATCH_TOO_LARGE");
    let e = parse_ingest(b"{nope").unwrap_err();
    assert_eq!(e.reason(), "INVALID_JSON");
}

#[test]
fn query_parameters_follow_the_document() {
    let q = EventsParams {
        event_type: Some("tool_error".into()),
        severity: Some("error,critical".into()),
        from: Some("2026-02-07T00:00:00Z".into()),
        search: Some("timeout".into()),
        limit: Some(900),
        offset: Some(100),
        ..Default::default()
    }
    .to_query()
    .unwrap();
    assert_eq!(q.kinds, vec![Kind::ToolError]);
    assert_eq!(q.limit, 500, "capped at the documented max");
    assert_eq!(q.offset, 100);
    assert_eq!(q.text.as_deref(), Some("timeout"));
    assert_eq!(
        q.order,
        agentledger_core::query::Order::Desc,
        "desc by default"
    );
    assert!(
        EventsParams {
            order: Some("up".into()),
            ..Default::default()
        }
        .to_query()
        .is_err()
    );
}

mod read {
    use agentledger_core::SessionStatus;

    use crate::agentlens::read::{MAX_OFFSET, SessionsParams, TimelineParams};

    fn params(status: &str) -> SessionsParams {
        SessionsParams {
            status: Some(status.into()),
            ..Default::default()
        }
    }

    #[test]
    fn statuses_map_onto_the_ledgers() {
        let r = params("active").to_request().unwrap();
        assert_eq!(r.query.status, Some(SessionStatus::Active));
        let r = params("completed").to_request().unwrap();
        assert_eq!(r.query.status, Some(SessionStatus::Ended));
        // Both: no status filter; error alone: nothing can match.
        let r = params("active,completed").to_request().unwrap();
        assert_eq!((r.query.status, r.matches_nothing), (None, false));
        let r = params("error").to_request().unwrap();
        assert!(r.matches_nothing);
        let r = params("error,completed").to_request().unwrap();
        assert_eq!(
            (r.query.status, r.matches_nothing),
            (Some(SessionStatus::Ended), false)
        );
        assert!(params("done").to_request().is_err());
    }

    #[test]
    fn pages_and_tags_are_bounded() {
        let p = SessionsParams {
            limit: Some(100_000),
            offset: Some(MAX_OFFSET),
            tags: Some("a, b,,c".into()),
            ..Default::default()
        };
        let r = p.to_request().unwrap();
        assert_eq!(r.query.limit, 500);
        assert_eq!(r.offset, MAX_OFFSET);
        assert_eq!(r.tags, ["a", "b", "c"]);
        let deep = SessionsParams {
            offset: Some(MAX_OFFSET + 1),
            ..Default::default()
        };
        assert!(deep.to_request().is_err());
        let many = SessionsParams {
            tags: Some(vec!["t"; 21].join(",")),
            ..Default::default()
        };
        assert!(many.to_request().is_err());
        let t = TimelineParams {
            limit: Some(5_000),
            offset: Some(u64::MAX),
        };
        assert_eq!(t.page().unwrap(), (1_000, i64::MAX as u64));
    }
}
