//! The Realm document's examples.

use std::collections::BTreeSet;

use serde_json::Value;

use super::*;

fn fixture(name: &str) -> String {
    let path = format!("{}/src/realm/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn ids() -> (SessionId, AgentId) {
    (
        session_param("session_abc123").unwrap(),
        AgentId::parse(UNKNOWN_AGENT).unwrap(),
    )
}

#[test]
fn every_documented_event_parses_with_its_data_verbatim() {
    let (s, a) = ids();
    for (name, kind) in [
        ("tool_call.json", Kind::ToolCall),
        ("decision.json", Kind::Decision),
        ("llm_call.json", Kind::LlmCall),
        ("error.json", Kind::Error),
    ] {
        let body = fixture(name);
        let e = parse_event(&s, &a, body.as_bytes()).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(e.kind, kind, "{name}");
        let sent: Value = serde_json::from_str(&body).unwrap();
        let kept: Value = serde_json::from_str(e.payload.get()).unwrap();
        assert_eq!(kept, sent["data"]);
    }
}

#[test]
fn documented_batch_and_get_shapes() {
    let (s, a) = ids();
    let events: Vec<Value> = ["decision.json", "tool_call.json", "llm_call.json"]
        .iter()
        .map(|n| serde_json::from_str(&fixture(n)).unwrap())
        .collect();
    let body = serde_json::json!({ "events": events }).to_string();
    assert_eq!(parse_batch(&s, &a, body.as_bytes()).unwrap().len(), 3);
    let documented: Value = serde_json::from_str(&fixture("get_response.json")).unwrap();
    let e = parse_event(&s, &a, fixture("tool_call.json").as_bytes()).unwrap();
    let ours = serde_json::to_value(EventOut::created(
        e,
        EventId::generate(Micros::now()),
        Micros::now(),
    ))
    .unwrap();
    let keys = |v: &Value| {
        v.as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect::<BTreeSet<_>>()
    };
    assert_eq!(keys(&ours), keys(&documented));
    assert!(ours["id"].as_str().unwrap().starts_with("event_"));
    let documented: Value = serde_json::from_str(&fixture("batch_response.json")).unwrap();
    let ours = serde_json::to_value(BatchResponse {
        created: 0,
        event_ids: vec![],
    })
    .unwrap();
    assert_eq!(keys(&ours), keys(&documented));
}

#[test]
fn bad_inputs() {
    let (s, a) = ids();
    assert_eq!(
        parse_event(&s, &a, br#"{"type":"thought","data":{}}"#)
            .unwrap_err()
            .path(),
        "type"
    );
    assert_eq!(
        parse_event(&s, &a, br#"{"type":"custom","data":[1]}"#)
            .unwrap_err()
            .path(),
        "data"
    );
    assert!(parse_event(&s, &a, br#"{"type":"custom"}"#).is_err());
    assert!(parse_batch(&s, &a, br#"{"events":[]}"#).is_err());
    assert!(session_param("").is_err());
}
