//! Every request and response example of the Fabraix documents.

use serde_json::Value;

use super::*;

fn fixture(name: &str) -> String {
    let path = format!("{}/src/fabraix/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

const DOCUMENTED_EVENTS: &[&str] = &[
    "event_user.json",
    "event_tool.json",
    "event_model_output.json",
    "event_memory.json",
    "event_error.json",
    "event_complete_user.json",
    "event_complete_tool.json",
    "event_email_detailed_schema.json",
];

#[test]
fn registration_example_parses_and_chains_the_body() {
    let body = fixture("register_request.json");
    let r = parse_register(body.as_bytes()).unwrap();
    assert_eq!(r.agent_id.as_str(), "a1b2c3d4-e5f6-7890-1234-567890abcdef");
    assert!(
        r.system_prompt
            .starts_with("You are a helpful customer service assistant")
    );
    assert_eq!(r.opening.kind, Kind::SessionStarted);
    assert_eq!(
        r.opening.client_ts.unwrap().to_rfc3339(),
        "2024-01-15T14:30:45.123000Z"
    );
    let payload: Value = serde_json::from_str(r.opening.payload.get()).unwrap();
    assert_eq!(
        payload["system_prompt"],
        Value::from(r.system_prompt.clone())
    );
    assert_eq!(r.session_id.as_str().len(), 36, "trace_id is a UUID");
    let response: RegisterResponse =
        serde_json::from_str(&fixture("register_response.json")).unwrap();
    assert_eq!(response.trace_id.len(), 36);
}

#[test]
fn registration_rejects_bad_agent_ids_with_the_documented_code() {
    for agent in ["", &"x".repeat(129), "tab\there"] {
        let body = serde_json::json!({"agent_id": agent, "timestamp": "2024-01-15T14:30:45.123Z", "system_prompt": "p"});
        let e = parse_register(body.to_string().as_bytes()).unwrap_err();
        assert_eq!(e.reason(), "INVALID_AGENT_ID", "{agent:?}");
    }
    let documented: Value = serde_json::from_str(&fixture("register_error.json")).unwrap();
    assert_eq!(documented["error"]["code"], "INVALID_AGENT_ID");
    let missing =
        parse_register(br#"{"agent_id":"a","timestamp":"2024-01-15T14:30:45.123Z"}"#).unwrap_err();
    assert!(missing.to_string().contains("system_prompt"), "{missing}");
    let bad_time =
        parse_register(br#"{"agent_id":"a","timestamp":"yesterday","system_prompt":""}"#)
            .unwrap_err();
    assert_eq!(bad_time.path(), "timestamp");
    // The prompt is kept in the session row, which cannot hold NUL on
    // PostgreSQL: refused on either backend, naming it.
    let nul = parse_register(
        br#"{"agent_id":"a","timestamp":"2024-01-15T14:30:45.123Z","system_prompt":"a\u0000b"}"#,
    )
    .unwrap_err();
    assert_eq!(nul.path(), "system_prompt");
    assert!(nul.to_string().contains("NUL"), "{nul}");
}

#[test]
fn every_documented_event_validates_and_keeps_content_bytes() {
    let cache = SchemaCache::new(64 << 20);
    for name in DOCUMENTED_EVENTS {
        let body = fixture(name).replace("TRACE_ID", "f4f4f4f4-f4f4-f4f4-f4f4-f4f4f4f4f4f4");
        let ev = parse_event(body.as_bytes(), &cache).unwrap_or_else(|e| panic!("{name}: {e}"));
        let req: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            ev.payload.get(),
            req["content"].as_str().unwrap(),
            "{name}: payload is content verbatim"
        );
        assert_eq!(ev.source_type, req["event_type"].as_str().unwrap());
        let meta: Value = serde_json::from_str(ev.metadata.get()).unwrap();
        let schema: Value = serde_json::from_str(req["schema"].as_str().unwrap()).unwrap();
        assert_eq!(meta["schema"], schema, "{name}: schema kept");
        assert_eq!(ev.client_ts.0, 1_678_886_405_123_000);
    }
    let response: EventResponse = serde_json::from_str(&fixture("event_response.json")).unwrap();
    assert_eq!(response.event_id.len(), 36);
}

#[test]
fn documented_schema_mismatch_has_the_documented_envelope_details() {
    let cache = SchemaCache::new(64 << 20);
    let body = fixture("event_user_missing_user_id.json");
    let e = parse_event(body.as_bytes(), &cache).unwrap_err();
    let documented: Value = serde_json::from_str(&fixture("error_schema_mismatch.json")).unwrap();
    assert_eq!(e.reason(), documented["error"]["code"].as_str().unwrap());
    assert_eq!(
        e.path(),
        documented["error"]["details"]["path"].as_str().unwrap()
    );
    let InputError::Invalid { extra, .. } = &e else {
        panic!("not a 400")
    };
    assert_eq!(extra, &vec![("missing_field", "user_id".to_string())]);
}

#[test]
fn mismatch_paths_point_inside_nested_content() {
    let cache = SchemaCache::new(64 << 20);
    let schema = r#"{"type":"object","properties":{"a":{"type":"object","properties":{"b":{"type":"array","items":{"type":"integer"}}}}}}"#;
    let body = serde_json::json!({"event_type": "tool", "trace_id": "t", "timestamp": 1.0,
        "content": r#"{"a":{"b":[1,"two"]}}"#, "schema": schema});
    let e = parse_event(body.to_string().as_bytes(), &cache).unwrap_err();
    assert_eq!((e.reason(), e.path()), ("SCHEMA_MISMATCH", "$.a.b[1]"));
    // The function-style tool schema validates content against its parameters.
    let tool = fixture("event_tool.json").replace(r#"\"guests\": 2"#, r#"\"guests\": 11"#);
    let e = parse_event(tool.as_bytes(), &cache).unwrap_err();
    assert_eq!((e.reason(), e.path()), ("SCHEMA_MISMATCH", "$.guests"));
}

#[test]
fn bad_event_inputs_name_their_problem() {
    let cache = SchemaCache::new(64 << 20);
    let ok = |f: &dyn Fn(&mut Value)| {
        let mut v: Value = serde_json::from_str(&fixture("event_user.json")).unwrap();
        f(&mut v);
        parse_event(v.to_string().as_bytes(), &cache)
    };
    let code = |r: Result<FabraixEvent, InputError>| r.err().map(|e| e.reason()).unwrap_or("OK");
    assert_eq!(
        code(ok(&|v| v["event_type"] = "thought".into())),
        "INVALID_EVENT_TYPE"
    );
    assert_eq!(
        code(ok(&|v| v["content"] = "{not json".into())),
        "INVALID_CONTENT"
    );
    assert_eq!(
        code(ok(&|v| v["content"] = "[1,2]".into())),
        "INVALID_CONTENT"
    );
    assert_eq!(
        code(ok(&|v| v["schema"] = "{not json".into())),
        "INVALID_SCHEMA"
    );
    assert_eq!(
        code(ok(&|v| v["schema"] = r#"{"type":"nonsense"}"#.into())),
        "INVALID_SCHEMA"
    );
    assert_eq!(
        code(ok(
            &|v| v["content"] = Value::String("x".repeat(MAX_CONTENT_BYTES + 1))
        )),
        "TOO_LARGE"
    );
    assert_eq!(
        code(ok(
            &|v| v["schema"] = Value::String(" ".repeat(MAX_SCHEMA_BYTES + 1))
        )),
        "TOO_LARGE"
    );
    assert_eq!(
        code(ok(&|v| v
            .as_object_mut()
            .unwrap()
            .remove("schema")
            .map(|_| ())
            .unwrap_or(()))),
        "VALIDATION_ERROR"
    );
    assert_eq!(code(ok(&|_| ())), "OK");
}

#[test]
fn event_types_map_to_canonical_kinds() {
    assert_eq!(kind_of("model_output"), Some(Kind::LlmResponse));
    assert_eq!(kind_of("tool"), Some(Kind::ToolCall));
    assert_eq!(kind_of("user"), Some(Kind::UserInput));
    assert_eq!(kind_of("thought"), None);
    assert_eq!(EVENT_TYPES.len(), 8);
}

/// The review's schema: 1,300 distinct patterns, each with a matching
/// 500-character string.
fn many_patterns_event(n: usize) -> String {
    let mut props = serde_json::Map::new();
    let mut content = serde_json::Map::new();
    let s: String = (0..500)
        .map(|i| if i % 3 == 1 { 'a' } else { 'b' })
        .collect();
    for i in 0..n {
        props.insert(
            format!("p{i}"),
            serde_json::json!({"pattern": format!("[ab]*a[ab]{{12}}$|{i}")}),
        );
        content.insert(format!("p{i}"), Value::String(s.clone()));
    }
    serde_json::json!({
        "event_type": "tool", "trace_id": "t", "timestamp": 1.0,
        "content": Value::Object(content).to_string(),
        "schema": serde_json::json!({"properties": props}).to_string(),
    })
    .to_string()
}

#[test]
fn reading_an_event_compiles_nothing_and_planning_refuses_what_is_over_budget() {
    let cache = SchemaCache::new(64 << 20);
    let body = many_patterns_event(1300);
    let ev = read_event(body.as_bytes(), &cache).expect("cheap checks pass");
    assert!(cache.is_empty());
    let e = ev.plan(&cache).unwrap_err();
    assert_eq!((e.reason(), e.path()), ("TOO_LARGE", "schema"));
    assert!(
        e.to_string().contains("1300 distinct regular expressions"),
        "{e}"
    );
    assert!(cache.is_empty(), "nothing compiled");
    // Within the limits, the same kind of schema is validated and kept.
    let ok = read_event(
        many_patterns_event(cost::MAX_PATTERNS as usize).as_bytes(),
        &cache,
    )
    .unwrap();
    let plan = ok.plan(&cache).unwrap();
    assert!(
        !ok.is_light(&plan),
        "first sight compiles: off the async workers"
    );
    ok.validate(&plan, &cache).unwrap();
    assert_eq!(cache.len(), 1);
}

#[test]
fn repeated_members_in_a_schema_are_refused_before_anything_else() {
    let mut v: Value = serde_json::from_str(&fixture("event_user.json")).unwrap();
    v["schema"] = r#"{"type":"object","required":["message"],"required":[]}"#.into();
    let e = read_event(v.to_string().as_bytes(), &SchemaCache::new(64 << 20)).unwrap_err();
    assert_eq!((e.reason(), e.path()), ("INVALID_SCHEMA", "schema"));
}

#[test]
fn a_cached_schema_with_small_work_is_light() {
    let cache = SchemaCache::new(64 << 20);
    let body = fixture("event_user.json");
    let ev = read_event(body.as_bytes(), &cache).unwrap();
    let plan = ev.plan(&cache).unwrap();
    assert!(!ev.is_light(&plan));
    ev.validate(&plan, &cache).unwrap();
    let plan = ev.plan(&cache).unwrap();
    assert!(ev.is_light(&plan), "{plan:?}");
}
