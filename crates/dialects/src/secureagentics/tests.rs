//! The Secureagentics document's examples.

use super::*;

fn fixture(name: &str) -> String {
    let path = format!(
        "{}/src/secureagentics/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn agent() -> AgentId {
    agent_param("agt_01j9xkz2m3n4p5q6r7s8t9u0").unwrap()
}

#[test]
fn documented_single_event_parses_into_its_trace_session() {
    let e = parse_event(&agent(), fixture("event_request.json").as_bytes()).unwrap();
    assert_eq!((e.kind, e.source_type.as_str()), (Kind::LlmCall, "prompt"));
    assert_eq!(e.session_id.as_str(), "trace_abc123");
    assert_eq!(
        e.client_ts.unwrap().to_rfc3339(),
        "2026-05-04T10:30:00.000000Z"
    );
    let out = serde_json::to_value(EventOut::created(
        e,
        EventId::generate(Micros::now()),
        Micros::now(),
    ))
    .unwrap();
    assert!(out["id"].as_str().unwrap().starts_with("evt_"));
    assert_eq!(out["type"], "prompt");
    assert_eq!(out["trace_id"], "trace_abc123");
    assert_eq!(out["payload"]["model"], "gpt-4o");
    assert_eq!(out["policy_result"]["evaluated"], false);
    assert_eq!(out["policy_result"]["decision"], "not_evaluated");
}

#[test]
fn documented_batch_parses_in_order() {
    let evs = parse_batch(&agent(), fixture("batch_request.json").as_bytes()).unwrap();
    assert_eq!(
        evs.iter()
            .map(|e| e.source_type.as_str())
            .collect::<Vec<_>>(),
        vec!["prompt", "completion"]
    );
    assert!(evs.iter().all(|e| e.session_id.as_str() == "trace_xyz789"));
}

#[test]
fn untraced_events_go_to_the_agents_own_stream() {
    let e = parse_event(&agent(), br#"{"type":"custom","payload":{"k":1}}"#).unwrap();
    assert_eq!(e.session_id.as_str(), agent().as_str());
    let out = EventOut::created(e, EventId::generate(Micros::now()), Micros::now());
    assert_eq!(out.trace_id, None);
}

#[test]
fn bad_inputs() {
    assert_eq!(
        agent_param("01j9xkz").unwrap_err().reason(),
        "INVALID_AGENT_ID"
    );
    assert_eq!(
        agent_param("agt_\u{7}").unwrap_err().reason(),
        "INVALID_AGENT_ID"
    );
    assert_eq!(
        parse_event(&agent(), br#"{"type":"thought","payload":{}}"#)
            .unwrap_err()
            .path(),
        "type"
    );
    assert_eq!(
        parse_event(&agent(), br#"{"type":"prompt","payload":"x"}"#)
            .unwrap_err()
            .path(),
        "payload"
    );
    assert_eq!(
        parse_event(
            &agent(),
            br#"{"type":"prompt","payload":{},"timestamp":"now"}"#
        )
        .unwrap_err()
        .path(),
        "timestamp"
    );
    let one = r#"{"type":"prompt","payload":{}}"#;
    let e = parse_batch(
        &agent(),
        format!(r#"{{"events":[{}]}}"#, vec![one; 101].join(",")).as_bytes(),
    )
    .unwrap_err();
    assert!(matches!(e, InputError::TooLarge { .. }));
    assert!(parse_batch(&agent(), br#"{"events":[]}"#).is_err());
    let e = parse_batch(
        &agent(),
        br#"{"events":[{"type":"prompt","payload":{}},{"type":"nope","payload":{}}]}"#,
    )
    .unwrap_err();
    assert_eq!(e.path(), "events[1].type");
}

#[test]
fn listing_parameters() {
    let q = ListParams {
        kind: Some("prompt".into()),
        limit: Some(10),
        ..Default::default()
    }
    .to_query(&agent())
    .unwrap();
    assert_eq!(
        (q.kinds, q.limit, q.agent_id.as_deref()),
        (
            vec![Kind::LlmCall],
            10,
            Some("agt_01j9xkz2m3n4p5q6r7s8t9u0")
        )
    );
    for bad in [0, 501] {
        assert!(
            ListParams {
                limit: Some(bad),
                ..Default::default()
            }
            .to_query(&agent())
            .is_err()
        );
    }
    assert!(
        ListParams {
            kind: Some("thought".into()),
            ..Default::default()
        }
        .to_query(&agent())
        .is_err()
    );
}
