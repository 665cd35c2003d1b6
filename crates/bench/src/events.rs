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

/// A small deterministic generator (SplitMix64): the same mix every run.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in lo..=hi.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

const WORDS: &[&str] = &[
    "the",
    "customer",
    "invoice",
    "refund",
    "account",
    "region",
    "report",
    "quarterly",
    "revenue",
    "deploy",
    "service",
    "cluster",
    "latency",
    "error",
    "timeout",
    "retry",
    "database",
    "query",
    "index",
    "migration",
    "ticket",
    "priority",
    "escalate",
    "summary",
    "document",
    "contract",
    "policy",
    "approval",
    "budget",
    "forecast",
    "pipeline",
    "release",
    "feature",
    "incident",
    "postmortem",
    "dashboard",
    "metric",
    "alert",
    "threshold",
    "owner",
    "team",
    "schedule",
    "meeting",
    "notes",
    "action",
    "item",
    "follow",
    "up",
    "with",
    "and",
    "for",
    "from",
    "into",
    "about",
    "after",
    "before",
    "during",
    "between",
    "shipping",
    "warehouse",
    "supplier",
    "order",
    "payment",
    "card",
    "transfer",
    "balance",
    "ledger",
    "audit",
    "compliance",
    "review",
    "draft",
];

/// `bytes` (about) of prose from the vocabulary, JSON-safe.
pub fn prose(rng: &mut Rng, bytes: usize) -> String {
    let mut s = String::with_capacity(bytes + 16);
    while s.len() < bytes {
        if !s.is_empty() {
            s.push(' ');
        }
        s.push_str(WORDS[(rng.next() % WORDS.len() as u64) as usize]);
    }
    s
}

/// Which sizes a mixed event may take.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Tail {
    /// 5% of events are tool results of 20-100 KB (the ingest mix).
    Large,
    /// No large tail (the query dataset, so 1M events stay around 1 GB).
    None,
}

/// Mixed event `i` of the realistic mix: kinds in the proportions an agent
/// produces them (LLM calls and responses, tool calls and results, inputs,
/// retrievals, memory, errors), prose payloads with a median around 1 KB, and
/// with `Tail::Large` 5% of tool results between 20 and 100 KB. Each event
/// carries a unique order number (`ord-<i>`) for selective searches.
pub fn mixed_event(i: u64, sessions: u64, tail: Tail) -> String {
    let mut rng = Rng::new(i.wrapping_mul(0x2545_f491_4f6c_dd1d) ^ 0x5eed);
    let session = format!("mix-{}", rng.next() % sessions);
    let agent = format!("agent-{}", rng.next() % 20);
    let call = format!("call_{i:010}");
    let roll = rng.next() % 100;
    let (kind, payload) = if tail == Tail::Large && roll < 5 {
        let n = rng.range(20_000, 100_000) as usize;
        (
            "tool_response",
            serde_json::json!({"callId": call, "toolName": "read_file", "durationMs": rng.range(5, 900),
                "result": {"path": format!("/srv/docs/ord-{i}.md"), "content": prose(&mut rng, n)}}),
        )
    } else {
        match roll {
            0..=7 => (
                "user_input",
                serde_json::json!({"text": format!("ord-{i} {}", prose_between(&mut rng, 200, 900))}),
            ),
            8..=25 => (
                "llm_call",
                serde_json::json!({"callId": call, "provider": "openai", "model": "gpt-4o-mini",
                    "messages": [
                        {"role": "system", "content": prose(&mut rng, 500)},
                        {"role": "user", "content": format!("ord-{i} {}", prose_between(&mut rng, 200, 1200))}
                    ],
                    "parameters": {"temperature": 0.2, "max_tokens": 1024}}),
            ),
            26..=43 => {
                let (input, output) = (rng.range(200, 4000), rng.range(20, 800));
                (
                    "llm_response",
                    serde_json::json!({"callId": call, "provider": "openai", "model": "gpt-4o-mini",
                        "completion": format!("ord-{i} {}", prose_between(&mut rng, 300, 1600)),
                        "finishReason": "stop",
                        "usage": {"inputTokens": input, "outputTokens": output},
                        "costUsd": (input as f64 * 0.15 + output as f64 * 0.6) / 1e6,
                        "latencyMs": rng.range(200, 4000)}),
                )
            }
            44..=65 => (
                "tool_call",
                serde_json::json!({"toolName": "search_database", "callId": call,
                    "arguments": {"query": format!("ord-{i} {}", prose_between(&mut rng, 80, 600)), "limit": 20}}),
            ),
            66..=87 => (
                "tool_response",
                serde_json::json!({"callId": call, "toolName": "search_database", "durationMs": rng.range(5, 900),
                    "result": {"rows": rng.range(0, 50), "text": format!("ord-{i} {}", prose_between(&mut rng, 300, 2500))}}),
            ),
            88..=92 => (
                "retrieval",
                serde_json::json!({"query": format!("ord-{i}"), "documents": (0..4).map(|_| prose(&mut rng, 300)).collect::<Vec<_>>()}),
            ),
            93..=97 => (
                "memory",
                serde_json::json!({"key": format!("ord-{i}"), "value": prose_between(&mut rng, 100, 600)}),
            ),
            _ => (
                "error",
                serde_json::json!({"message": format!("ord-{i} upstream timeout"), "stack": prose(&mut rng, 900)}),
            ),
        }
    };
    format!(
        r#"{{"session_id":"{session}","agent_id":"{agent}","kind":"{kind}","payload":{payload},"metadata":{{"host":"bench-01"}}}}"#
    )
}

/// Prose of a length drawn uniformly from lo..=hi bytes.
fn prose_between(rng: &mut Rng, lo: usize, hi: usize) -> String {
    let n = rng.range(lo as u64, hi as u64) as usize;
    prose(rng, n)
}

/// A native ingest body of mixed events `start..start+n`.
pub fn mixed_batch_body(start: u64, n: u64, sessions: u64, tail: Tail) -> String {
    let mut body = String::from(r#"{"events":["#);
    for i in start..start + n {
        if i > start {
            body.push(',');
        }
        body.push_str(&mixed_event(i, sessions, tail));
    }
    body.push_str("]}");
    body
}

#[cfg(test)]
mod mix_tests {
    use super::*;

    #[test]
    fn the_mix_has_a_1kb_median_a_large_tail_and_valid_kinds() {
        let mut sizes: Vec<usize> = (0..4000)
            .map(|i| mixed_event(i, 100, Tail::Large).len())
            .collect();
        sizes.sort_unstable();
        let median = sizes[sizes.len() / 2];
        assert!((700..=1500).contains(&median), "median {median}");
        let large = sizes.iter().filter(|&&s| s >= 20_000).count();
        assert!((120..=280).contains(&large), "large {large}");
        assert!(*sizes.last().unwrap() <= 110_000);
        for i in 0..200 {
            let v: serde_json::Value =
                serde_json::from_str(&mixed_event(i, 10, Tail::None)).unwrap();
            let kind: agentledger_core::Kind = v["kind"].as_str().unwrap().parse().unwrap();
            let payload = serde_json::value::to_raw_value(&v["payload"]).unwrap();
            agentledger_core::payload::validate(kind, &payload).unwrap();
            assert!(v["payload"].to_string().contains(&format!("ord-{i}")));
        }
        assert_eq!(
            mixed_event(7, 10, Tail::Large),
            mixed_event(7, 10, Tail::Large)
        );
    }
}
