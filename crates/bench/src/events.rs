//! The benchmark's event shapes.

/// The payload of standard event `i` (what the ledger stores).
pub fn standard_payload(i: u64) -> String {
    let query = "quarterly revenue by region and product line for the enterprise segment, \
        excluding refunds and internal test accounts, grouped by fiscal month with \
        year-over-year deltas and the top ten accounts by growth in each region";
    format!(
        concat!(
            r#"{{"toolName":"search_database","callId":"call_{i:08}","#,
            r#""arguments":{{"query":"{q}","limit":20,"filters":{{"region":"eu-west-1","since":"2026-01-01"}}}}}}"#
        ),
        i = i,
        q = query
    )
}

/// Metadata of every standard event.
pub const STANDARD_METADATA: &str = r#"{"host":"bench-01","attempt":1}"#;

/// A standard event: a tool_call of about 500 bytes as sent on the wire,
/// spread over `sessions` sessions.
pub fn standard_event(i: u64, sessions: u64) -> String {
    format!(
        r#"{{"session_id":"bench-{s}","agent_id":"bench-agent","kind":"tool_call","payload":{p},"metadata":{m}}}"#,
        s = i % sessions,
        p = standard_payload(i),
        m = STANDARD_METADATA
    )
}

/// An AgentLens ingest body with the same standard events (camelCase fields).
pub fn agentlens_batch_body(start: u64, n: u64, sessions: u64) -> String {
    let mut body = String::with_capacity(n as usize * 520 + 16);
    body.push_str(r#"{"events":["#);
    for i in start..start + n {
        if i > start {
            body.push(',');
        }
        body.push_str(&format!(
            r#"{{"sessionId":"bench-{s}","agentId":"bench-agent","eventType":"tool_call","payload":{p},"metadata":{m}}}"#,
            s = i % sessions,
            p = standard_payload(i),
            m = STANDARD_METADATA
        ));
    }
    body.push_str("]}");
    body
}

/// An OTLP `ExportTraceServiceRequest` (protobuf) of `n` GenAI tool spans
/// carrying the standard payload's fields, from one service, spread over
/// `sessions` conversations (one trace each).
pub fn otlp_traces_body(start: u64, n: u64, sessions: u64) -> Vec<u8> {
    use agentledger_dialects::otlp::proto::collector::trace::v1::ExportTraceServiceRequest;
    use agentledger_dialects::otlp::proto::common::v1::{AnyValue, KeyValue, any_value};
    use agentledger_dialects::otlp::proto::resource::v1::Resource;
    use agentledger_dialects::otlp::proto::trace::v1::{ResourceSpans, ScopeSpans, Span};
    use prost::Message;

    let kv = |k: &str, v: any_value::Value| KeyValue {
        key: k.into(),
        value: Some(AnyValue { value: Some(v) }),
        ..Default::default()
    };
    let s = |v: String| any_value::Value::StringValue(v);
    let spans = (start..start + n)
        .map(|i| {
            let session = i % sessions;
            let mut trace_id = [0u8; 16];
            trace_id[..8].copy_from_slice(&(session + 1).to_be_bytes());
            let t0 = 1_763_719_200_000_000_000u64 + i * 1_000_000;
            Span {
                trace_id: trace_id.to_vec(),
                span_id: (i + 1).to_be_bytes().to_vec(),
                name: "execute_tool search_database".into(),
                kind: 1,
                start_time_unix_nano: t0,
                end_time_unix_nano: t0 + 750_000,
                attributes: vec![
                    kv("gen_ai.operation.name", s("execute_tool".into())),
                    kv("gen_ai.conversation.id", s(format!("bench-{session}"))),
                    kv("gen_ai.agent.name", s("bench-agent".into())),
                    kv("gen_ai.tool.name", s("search_database".into())),
                    kv("gen_ai.tool.call.id", s(format!("call_{i:08}"))),
                    kv("gen_ai.tool.call.arguments", s(standard_payload(i))),
                ],
                ..Default::default()
            }
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv("service.name", s("bench-service".into()))],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

/// The JSON Schema a Fabraix client would send with the standard payload.
pub const STANDARD_SCHEMA: &str = r#"{"type":"object","properties":{"toolName":{"type":"string"},"callId":{"type":"string","pattern":"^call_[0-9]+$"},"arguments":{"type":"object","properties":{"query":{"type":"string","maxLength":2000},"limit":{"type":"integer","minimum":1,"maximum":100},"filters":{"type":"object"}},"required":["query"]}},"required":["toolName","callId","arguments"]}"#;

/// A Fabraix `/v1/event` body carrying standard event `i` for run `trace`.
pub fn fabraix_event_body(i: u64, trace: &str) -> String {
    serde_json::json!({
        "event_type": "tool",
        "trace_id": trace,
        "timestamp": 1_700_000_000.0 + i as f64,
        "content": standard_payload(i),
        "schema": STANDARD_SCHEMA,
    })
    .to_string()
}

/// A native ingest body holding events `start..start+n`.
pub fn batch_body(start: u64, n: u64, sessions: u64) -> String {
    let mut body = String::with_capacity(n as usize * 520 + 16);
    body.push_str(r#"{"events":["#);
    for i in start..start + n {
        if i > start {
            body.push(',');
        }
        body.push_str(&standard_event(i, sessions));
    }
    body.push_str("]}");
    body
}

#[cfg(test)]
mod tests {
    #[test]
    fn standard_event_is_about_500_bytes_and_valid_json() {
        let e = super::standard_event(7, 100);
        assert!((450..=560).contains(&e.len()), "{}", e.len());
        let v: serde_json::Value = serde_json::from_str(&e).unwrap();
        assert_eq!(v["kind"], "tool_call");
        let b: serde_json::Value = serde_json::from_str(&super::batch_body(0, 3, 2)).unwrap();
        assert_eq!(b["events"].as_array().unwrap().len(), 3);
        let b: serde_json::Value =
            serde_json::from_str(&super::agentlens_batch_body(0, 3, 2)).unwrap();
        assert_eq!(b["events"][2]["eventType"], "tool_call");
        let f: serde_json::Value =
            serde_json::from_str(&super::fabraix_event_body(4, "t")).unwrap();
        assert_eq!(f["content"].as_str().unwrap(), super::standard_payload(4));
    }

    #[test]
    fn otlp_body_maps_to_one_tool_call_per_span() {
        use agentledger_dialects::otlp::{Encoding, decode_traces, map_traces};
        let body = super::otlp_traces_body(0, 8, 4);
        let req = decode_traces(&body, Encoding::Protobuf).unwrap();
        let m = map_traces(&req, &|_| None).unwrap();
        assert_eq!((m.events.len(), m.rejected), (8, 0));
        assert!(
            m.events
                .iter()
                .all(|e| e.kind == agentledger_core::Kind::ToolCall)
        );
        assert_eq!(m.events[5].session_id.as_str(), "bench-1");
    }
}
