//! Property tests for every dialect parser: arbitrary bytes and arbitrary
//! JSON in each vendor's shape never panic, finish promptly, and whatever is
//! accepted is within the ledger's bounds (object payloads, I-JSON, batch
//! limits). The time bound is a hang guard (a case takes microseconds), not a
//! performance target.

use std::time::{Duration, Instant};

use proptest::prelude::*;
use serde_json::{Value, json};

use agentledger_core::limits::{MAX_BATCH_EVENTS, MAX_PAYLOAD_BYTES};
use agentledger_core::{AgentId, NewEvent, SessionId};
use agentledger_dialects::fabraix::SchemaCache;
use agentledger_dialects::otlp::{Encoding, decode_logs, decode_traces, map_logs, map_traces};
use agentledger_dialects::{agentlens, fabraix, native, realm, secureagentics};

const HANG_GUARD: Duration = Duration::from_secs(2);

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,30}".prop_map(Value::from),
        prop_oneof![
            Just("tool_call"),
            Just("llm_call"),
            Just("prompt"),
            Just("custom"),
            Just("session_ended"),
            Just("2026-05-04T10:30:00Z"),
            Just("sk-live-0123456789abcdef0123456789abcdef"),
        ]
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 40, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::from),
            prop::collection::btree_map(
                prop_oneof![
                    ".{0,10}",
                    Just("type".to_owned()),
                    Just("payload".to_owned()),
                    Just("data".to_owned()),
                    Just("toolName".to_owned()),
                    Just("callId".to_owned()),
                    Just("arguments".to_owned()),
                    Just("reason".to_owned()),
                ],
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A field that is usually plausible and sometimes anything.
fn field(plausible: Vec<Value>) -> impl Strategy<Value = Option<Value>> {
    prop_oneof![
        10 => prop::sample::select(plausible).prop_map(Some),
        1 => json_value().prop_map(Some),
        1 => Just(None),
    ]
}

fn object(fields: Vec<(&'static str, Option<Value>)>) -> Value {
    Value::Object(
        fields
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k.to_owned(), v)))
            .collect(),
    )
}

/// Events in the native / AgentLens shapes, with each field often valid.
fn event_fields() -> impl Strategy<Value = Vec<Option<Value>>> {
    (
        field(vec![json!("s1"), json!("sess-é"), json!("s1"), json!("")]),
        field(vec![json!("agent-1"), json!("a")]),
        field(vec![json!("tool_call"), json!("custom"), json!("custom"), json!("session_ended"), json!("nope")]),
        field(vec![
            json!({"toolName": "t", "callId": "c", "arguments": {}, "type": "x", "reason": "completed"}),
            json!({"type": "note", "data": {"k": [1, 2.5, "ü"]}, "reason": "completed"}),
            json!({"type": "note"}),
            json!({}),
        ]),
        field(vec![json!({}), json!(null)]),
        field(vec![json!("2026-05-04T10:30:00Z"), json!("2026-05-04T10:30:00.123456Z"), json!("yesterday")]),
    )
        .prop_map(|(a, b, c, d, e, f)| vec![a, b, c, d, e, f])
}

fn check_events(evs: &[NewEvent]) -> Result<(), TestCaseError> {
    prop_assert!(evs.len() <= MAX_BATCH_EVENTS);
    for e in evs {
        let p = e.payload.get();
        prop_assert!(p.starts_with('{'), "payload is an object: {}", p);
        prop_assert!(p.len() <= MAX_PAYLOAD_BYTES);
        prop_assert!(agentledger_core::ijson::check(p).is_ok(), "I-JSON: {}", p);
        prop_assert!(agentledger_core::ijson::check(e.metadata.get()).is_ok());
    }
    Ok(())
}

fn timed<T>(f: impl FnOnce() -> T) -> Result<T, TestCaseError> {
    let t = Instant::now();
    let out = f();
    prop_assert!(t.elapsed() < HANG_GUARD, "took {:?}", t.elapsed());
    Ok(out)
}

fn all_parsers(body: &[u8]) -> Result<(), TestCaseError> {
    let session = SessionId::parse("s1").expect("session");
    let agent = AgentId::parse("agt_1").expect("agent");
    let schemas = SchemaCache::new(16);
    if let Ok(evs) = timed(|| native::parse_ingest(body))? {
        check_events(&evs)?;
    }
    let _ = timed(|| native::parse_create_session(body))?;
    if let Ok(evs) = timed(|| agentlens::parse_ingest(body))? {
        check_events(&evs)?;
    }
    if let Ok(ev) = timed(|| realm::parse_event(&session, &agent, body))? {
        check_events(&[ev])?;
    }
    if let Ok(evs) = timed(|| realm::parse_batch(&session, &agent, body))? {
        check_events(&evs)?;
    }
    if let Ok(ev) = timed(|| secureagentics::parse_event(&agent, body))? {
        check_events(&[ev])?;
    }
    if let Ok(evs) = timed(|| secureagentics::parse_batch(&agent, body))? {
        check_events(&evs)?;
    }
    let _ = timed(|| fabraix::parse_register(body))?;
    let _ = timed(|| fabraix::parse_event(body, &schemas))?;
    for enc in [Encoding::Json, Encoding::Protobuf] {
        if let Ok(req) = timed(|| decode_traces(body, enc))?
            && let Ok(m) = timed(|| map_traces(&req, &|_| None))?
        {
            check_events(&m.events)?;
        }
        if let Ok(req) = timed(|| decode_logs(body, enc))?
            && let Ok(m) = timed(|| map_logs(&req, &|_| None))?
        {
            check_events(&m.events)?;
        }
    }
    Ok(())
}

proptest! {
    // PROPTEST_CASES sets the number of cases (default 256).
        #![proptest_config(ProptestConfig::default())]

    #[test]
    fn arbitrary_bytes_never_panic_any_parser(body in prop::collection::vec(any::<u8>(), 0..2048)) {
        all_parsers(&body)?;
    }

    #[test]
    fn arbitrary_json_never_panics_any_parser(v in json_value()) {
        all_parsers(v.to_string().as_bytes())?;
        all_parsers(json!({"events": [v]}).to_string().as_bytes())?;
    }

    #[test]
    fn native_and_agentlens_shaped_batches(batch in prop::collection::vec(event_fields(), 1..8)) {
        let native: Vec<Value> = batch.iter().map(|f| object(vec![
            ("session_id", f[0].clone()), ("agent_id", f[1].clone()), ("kind", f[2].clone()),
            ("payload", f[3].clone()), ("metadata", f[4].clone()), ("timestamp", f[5].clone()),
        ])).collect();
        all_parsers(json!({"events": native}).to_string().as_bytes())?;
        let lens: Vec<Value> = batch.iter().map(|f| object(vec![
            ("sessionId", f[0].clone()), ("agentId", f[1].clone()), ("eventType", f[2].clone()),
            ("payload", f[3].clone()), ("metadata", f[4].clone()), ("timestamp", f[5].clone()),
        ])).collect();
        all_parsers(json!({"events": lens}).to_string().as_bytes())?;
    }

    #[test]
    fn vendor_shaped_single_events(
        t in field(vec![json!("tool_call"), json!("prompt"), json!("llm_call"), json!("error"), json!("thought")]),
        data in field(vec![json!({"tool_name": "x", "tool_input": {}}), json!({"input": "hi"})]),
        trace in field(vec![json!("trace_1"), json!("run-1")]),
        ts in field(vec![json!("2026-05-04T10:30:00Z"), json!(1700000000.5)]),
        content in field(vec![json!("{\"a\":1}"), json!("not json")]),
        schema in field(vec![json!("{\"type\":\"object\"}"), json!("{\"type\":\"object\",\"pattern\":\"(a+)+$\"}")]),
    ) {
        // Realm, Secureagentics, Fabraix events and runs.
        all_parsers(object(vec![("type", t.clone()), ("data", data.clone())]).to_string().as_bytes())?;
        all_parsers(object(vec![("type", t.clone()), ("payload", data.clone()), ("trace_id", trace.clone()), ("timestamp", ts.clone())]).to_string().as_bytes())?;
        all_parsers(object(vec![("event_type", t), ("trace_id", trace), ("timestamp", ts), ("content", content), ("schema", schema)]).to_string().as_bytes())?;
    }
}

/// OTLP through protobuf: spans with arbitrary ids, times and GenAI attributes.
mod otlp_structured {
    use super::*;
    use agentledger_dialects::otlp::proto::collector::trace::v1::ExportTraceServiceRequest;
    use agentledger_dialects::otlp::proto::common::v1::{AnyValue, KeyValue, any_value};
    use agentledger_dialects::otlp::proto::trace::v1::{ResourceSpans, ScopeSpans, Span};
    use prost::Message;

    fn attr() -> impl Strategy<Value = KeyValue> {
        (
            prop::sample::select(vec![
                "gen_ai.operation.name",
                "gen_ai.conversation.id",
                "gen_ai.agent.name",
                "gen_ai.tool.name",
                "gen_ai.tool.call.arguments",
                "gen_ai.usage.input_tokens",
                "gen_ai.request.model",
                "session.id",
                "openinference.span.kind",
                "input.value",
                "x",
            ]),
            prop_oneof![
                ".{0,20}".prop_map(any_value::Value::StringValue),
                any::<i64>().prop_map(any_value::Value::IntValue),
                any::<f64>().prop_map(any_value::Value::DoubleValue),
                any::<bool>().prop_map(any_value::Value::BoolValue),
                prop::collection::vec(any::<u8>(), 0..8).prop_map(any_value::Value::BytesValue),
            ],
        )
            .prop_map(|(k, v)| KeyValue {
                key: k.into(),
                value: Some(AnyValue { value: Some(v) }),
                ..Default::default()
            })
    }

    fn span() -> impl Strategy<Value = Span> {
        (
            prop::collection::vec(any::<u8>(), 0..17),
            prop::collection::vec(any::<u8>(), 0..9),
            prop::collection::vec(any::<u8>(), 0..9),
            any::<u64>(),
            any::<u64>(),
            prop::collection::vec(attr(), 0..8),
            ".{0,20}",
        )
            .prop_map(
                |(trace_id, span_id, parent, start, end, attributes, name)| Span {
                    trace_id,
                    span_id,
                    parent_span_id: parent,
                    start_time_unix_nano: start,
                    end_time_unix_nano: end,
                    attributes,
                    name,
                    ..Default::default()
                },
            )
    }

    proptest! {
        // PROPTEST_CASES sets the number of cases (default 256).
        #![proptest_config(ProptestConfig::default())]

        #[test]
        fn arbitrary_span_trees_map_or_are_refused(spans in prop::collection::vec(span(), 0..20)) {
            let req = ExportTraceServiceRequest {
                resource_spans: vec![ResourceSpans {
                    scope_spans: vec![ScopeSpans { spans, ..Default::default() }],
                    ..Default::default()
                }],
            };
            let bytes = req.encode_to_vec();
            let decoded = timed(|| decode_traces(&bytes, Encoding::Protobuf))?;
            prop_assert!(decoded.is_ok());
            if let Ok(m) = timed(|| map_traces(&req, &|_| None))? {
                check_events(&m.events)?;
            }
        }
    }
}

/// The shaped strategies are not vacuous: a fair share of what they make is
/// accepted, so the properties above run on the accepting paths too.
#[test]
fn shaped_batches_are_often_accepted() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let strategy = prop::collection::vec(event_fields(), 1..2);
    let mut accepted = 0;
    for _ in 0..400 {
        let batch = strategy.new_tree(&mut runner).expect("tree").current();
        let native: Vec<Value> = batch
            .iter()
            .map(|f| {
                object(vec![
                    ("session_id", f[0].clone()),
                    ("agent_id", f[1].clone()),
                    ("kind", f[2].clone()),
                    ("payload", f[3].clone()),
                    ("metadata", f[4].clone()),
                    ("timestamp", f[5].clone()),
                ])
            })
            .collect();
        if native::parse_ingest(json!({ "events": native }).to_string().as_bytes()).is_ok() {
            accepted += 1;
        }
    }
    eprintln!("{accepted} of 400 accepted");
    assert!(accepted >= 20, "only {accepted} of 400 accepted");
}
