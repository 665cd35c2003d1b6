use super::*;
use agentledger_core::limits::MAX_PAYLOAD_BYTES;
use agentledger_core::{Kind, Severity};

#[test]
fn parses_a_valid_batch_keeping_payload_bytes() {
    let body = br#"{"events":[{"session_id":"s1","agent_id":"a","kind":"tool_call",
        "payload":{"toolName":"search", "callId":"c1","arguments":{"q":1}},
        "timestamp":"2026-02-08T10:00:00.000Z"}]}"#;
    let evs = parse_ingest(body).unwrap();
    assert_eq!(evs.len(), 1);
    assert_eq!(
        evs[0].payload.get(),
        r#"{"toolName":"search", "callId":"c1","arguments":{"q":1}}"#
    );
    assert_eq!(evs[0].metadata.get(), "{}");
    assert_eq!(evs[0].severity, Severity::Info);
    assert_eq!(
        evs[0].client_ts.unwrap().to_rfc3339(),
        "2026-02-08T10:00:00.000000Z"
    );
}

#[test]
fn errors_name_the_field_and_index() {
    let body = br#"{"events":[
        {"session_id":"s1","agent_id":"a","kind":"memory","payload":{}},
        {"session_id":"s1","agent_id":"a","kind":"tool_call","payload":{"toolName":"x","arguments":{}}}]}"#;
    let e = parse_ingest(body).unwrap_err();
    assert_eq!(e.path(), "events[1].payload.callId");
    assert!(e.to_string().contains("events[1]"), "{e}");

    let body = br#"{"events":[{"session_id":"s1","agent_id":"a","kind":"nope","payload":{}}]}"#;
    assert_eq!(parse_ingest(body).unwrap_err().path(), "events[0].kind");

    let body = br#"{"events":[{"session_id":"","agent_id":"a","kind":"memory","payload":{}}]}"#;
    assert_eq!(
        parse_ingest(body).unwrap_err().path(),
        "events[0].session_id"
    );

    let body = br#"{"events":[{"session_id":"s","agent_id":"a","kind":"memory","payload":[]}]}"#;
    assert_eq!(parse_ingest(body).unwrap_err().path(), "events[0].payload");

    let body =
        br#"{"events":[{"session_id":"s","agent_id":"a","kind":"memory","payload":{},"extra":1}]}"#;
    assert!(
        parse_ingest(body)
            .unwrap_err()
            .to_string()
            .contains("extra")
    );
}

#[test]
fn batch_bounds() {
    assert_eq!(
        parse_ingest(br#"{"events":[]}"#).unwrap_err().path(),
        "events"
    );
    let one = r#"{"session_id":"s","agent_id":"a","kind":"memory","payload":{}}"#;
    let body = format!(r#"{{"events":[{}]}}"#, vec![one; 1001].join(","));
    assert!(matches!(
        parse_ingest(body.as_bytes()),
        Err(InputError::TooLarge { .. })
    ));
    let body = format!(r#"{{"events":[{}]}}"#, vec![one; 1000].join(","));
    assert_eq!(parse_ingest(body.as_bytes()).unwrap().len(), 1000);
}

#[test]
fn oversize_payload_is_413() {
    let big = "x".repeat(MAX_PAYLOAD_BYTES);
    let body = format!(
        r#"{{"events":[{{"session_id":"s","agent_id":"a","kind":"memory","payload":{{"b":"{big}"}}}}]}}"#
    );
    let e = parse_ingest(body.as_bytes()).unwrap_err();
    assert!(matches!(e, InputError::TooLarge { .. }));
    assert_eq!(e.path(), "events[0].payload");
}

#[test]
fn query_params_validate() {
    let p = EventsParams {
        kind: Some("tool_call,llm_call".into()),
        limit: Some(10),
        ..Default::default()
    };
    let q = p.to_query().unwrap();
    assert_eq!(q.kinds, vec![Kind::ToolCall, Kind::LlmCall]);
    assert_eq!(q.limit, 10);
    let p = EventsParams {
        limit: Some(501),
        ..Default::default()
    };
    assert_eq!(p.to_query().unwrap_err().path(), "limit");
    let p = EventsParams {
        severity: Some("loud".into()),
        ..Default::default()
    };
    assert_eq!(p.to_query().unwrap_err().path(), "severity");
    let p = EventsParams {
        from: Some("yesterday".into()),
        ..Default::default()
    };
    assert_eq!(p.to_query().unwrap_err().path(), "from");
    let p = EventsParams {
        cursor: Some("garbage".into()),
        ..Default::default()
    };
    assert_eq!(p.to_query().unwrap_err().path(), "cursor");
}
