use prost::Message;
use serde_json::Value;

use agentledger_core::usage::Usage;
use agentledger_core::{Kind, NewEvent, Severity};

use super::*;

const GENAI: &str = include_str!("fixtures/genai_trace.json");
const OPENINFERENCE: &str = include_str!("fixtures/openinference_trace.json");
const LOGS: &str = include_str!("fixtures/genai_logs.json");

fn none(_: &[u8; 16]) -> Option<String> {
    None
}

fn payload(e: &NewEvent) -> Value {
    serde_json::from_str(e.payload.get()).unwrap()
}

fn genai() -> Mapped {
    let req = decode_traces(GENAI.as_bytes(), Encoding::Json).unwrap();
    map_traces(&req, &none).unwrap()
}

#[test]
fn genai_spans_map_to_kinds_session_and_agent() {
    let m = genai();
    assert_eq!((m.items, m.rejected), (5, 0));
    let kinds: Vec<Kind> = m.events.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [
            Kind::Agent,
            Kind::LlmCall,
            Kind::ToolCall,
            Kind::ToolCall,
            Kind::Error,
            Kind::Custom
        ]
    );
    for e in &m.events {
        // The conversation id on the agent span reaches its children.
        assert_eq!(e.session_id.as_str(), "conv_5j66UpCpwteGg4YSxUnt7lPY");
        // gen_ai.agent.id wins over the name and the service.
        assert_eq!(e.agent_id.as_str(), "asst_5j66UpCpwteGg4YSxUnt7lPY");
        assert_eq!(e.dialect, agentledger_core::Dialect::Otlp);
    }
    assert_eq!(m.events[0].source_type, "invoke_agent");
    assert_eq!(m.events[5].source_type, "span");
    assert_eq!(payload(&m.events[5])["convention"], "none");
    assert_eq!(
        m.learnt,
        vec![(
            hex::decode("5b8efff798038103d269b633813fc60c")
                .unwrap()
                .try_into()
                .unwrap(),
            "conv_5j66UpCpwteGg4YSxUnt7lPY".to_owned()
        )]
    );
}

#[test]
fn chat_span_carries_usage_and_tree_fields() {
    let m = genai();
    let chat = &m.events[1];
    let p = payload(chat);
    assert_eq!(p["convention"], "gen_ai");
    assert_eq!(p["model"], "gpt-4o-2024-08-06");
    assert_eq!(p["request_model"], "gpt-4o");
    assert_eq!(p["provider"], "openai");
    assert_eq!(p["usage"]["input_tokens"], 97);
    assert_eq!(p["usage"]["output_tokens"], 52);
    assert_eq!(p["usage"]["cache_read_input_tokens"], 64);
    assert_eq!(p["finish_reasons"][0], "tool_calls");
    assert_eq!(p["input"][0]["role"], "user");
    assert_eq!(p["trace_id"], "5b8efff798038103d269b633813fc60c");
    assert_eq!(p["span_id"], "eee19b7ec3c1b175");
    assert_eq!(p["parent_span_id"], "eee19b7ec3c1b174");
    assert_eq!(p["span_kind"], "client");
    assert_eq!(p["start_time"], "2025-11-21T10:00:00.100000Z");
    assert_eq!(p["duration_ms"], 1200.0);
    assert_eq!(p["status"]["code"], "ok");
    assert_eq!(
        chat.client_ts.unwrap().to_rfc3339(),
        "2025-11-21T10:00:00.100000Z"
    );
    let u = Usage::of(chat.kind, chat.payload.get()).unwrap();
    assert_eq!(u.model.as_deref(), Some("gpt-4o-2024-08-06"));
    assert_eq!((u.input_tokens, u.output_tokens), (Some(97), Some(52)));
    let md: Value = serde_json::from_str(chat.metadata.get()).unwrap();
    assert_eq!(md["resource"]["service.name"], "travel-assistant");
    assert_eq!(
        md["scope"]["name"],
        "opentelemetry.instrumentation.openai_v2"
    );
}

#[test]
fn tool_and_error_spans() {
    let m = genai();
    let tool = payload(&m.events[2]);
    assert_eq!(tool["tool"]["name"], "search_flights");
    assert_eq!(tool["tool"]["call_id"], "call_mszuSIzqtI65i1wAUOE8w5H4");
    assert_eq!(tool["tool"]["arguments"]["destination"], "CDG");
    assert_eq!(tool["tool"]["result"]["flights"], 3);
    let failed = &m.events[3];
    assert_eq!(failed.severity, Severity::Error);
    let err = &m.events[4];
    assert_eq!((err.kind, err.severity), (Kind::Error, Severity::Error));
    assert_eq!(err.source_type, "span_error");
    let e = payload(err);
    assert_eq!(e["message"], "card declined");
    assert_eq!(e["error_type"], "PaymentDeclined");
    assert_eq!(e["span_id"], "eee19b7ec3c1b177");
    assert_eq!(e["exceptions"][0]["type"], "PaymentDeclined");
}

#[test]
fn protobuf_and_json_map_the_same() {
    let req = decode_traces(GENAI.as_bytes(), Encoding::Json).unwrap();
    let bytes = req.encode_to_vec();
    let again = decode_traces(&bytes, Encoding::Protobuf).unwrap();
    let a = map_traces(&req, &none).unwrap();
    let b = map_traces(&again, &none).unwrap();
    assert_eq!(a.events.len(), b.events.len());
    for (x, y) in a.events.iter().zip(&b.events) {
        assert_eq!(x.payload.get(), y.payload.get());
        assert_eq!(x.metadata.get(), y.metadata.get());
    }
}

#[test]
fn openinference_spans() {
    let req = decode_traces(OPENINFERENCE.as_bytes(), Encoding::Json).unwrap();
    let m = map_traces(&req, &none).unwrap();
    assert_eq!(m.events.len(), 2);
    let llm = &m.events[0];
    assert_eq!(llm.kind, Kind::LlmCall);
    assert_eq!(llm.session_id.as_str(), "phx-session-42");
    assert_eq!(llm.agent_id.as_str(), "phoenix-demo");
    let p = payload(llm);
    assert_eq!(p["convention"], "openinference");
    assert_eq!(p["model"], "gpt-4o-mini");
    assert_eq!(p["usage"]["input_tokens"], 120);
    assert_eq!(p["usage"]["total_tokens"], 150);
    assert_eq!(p["input"][0]["content"], "What is 2+2?");
    assert_eq!(p["output"][0]["role"], "assistant");
    let tool = &m.events[1];
    assert_eq!(tool.kind, Kind::ToolCall);
    assert_eq!(tool.session_id.as_str(), "phx-session-42");
    assert_eq!(payload(tool)["tool"]["name"], "calculator");
}

#[test]
fn session_falls_back_to_known_trace_then_trace_id() {
    let mut req = decode_traces(OPENINFERENCE.as_bytes(), Encoding::Json).unwrap();
    // Drop session.id: the tool span now has no session anywhere in the request.
    for s in &mut req.resource_spans[0].scope_spans[0].spans {
        s.attributes.retain(|kv| kv.key != "session.id");
    }
    let m = map_traces(&req, &none).unwrap();
    assert_eq!(
        m.events[0].session_id.as_str(),
        "0af7651916cd43dd8448eb211c80319c"
    );
    let known = |_: &[u8; 16]| Some("learnt-earlier".to_owned());
    let m = map_traces(&req, &known).unwrap();
    assert_eq!(m.events[1].session_id.as_str(), "learnt-earlier");
}

#[test]
fn unmappable_spans_are_rejected_and_the_rest_kept() {
    let mut req = decode_traces(GENAI.as_bytes(), Encoding::Json).unwrap();
    let spans = &mut req.resource_spans[0].scope_spans[0].spans;
    spans[2].trace_id = vec![0; 16];
    spans[3].span_id = vec![1, 2, 3];
    spans[4].span_id = vec![0; 8];
    let m = map_traces(&req, &none).unwrap();
    assert_eq!((m.items, m.rejected), (5, 3));
    assert_eq!(m.events.len(), 2);
    assert!(m.error.contains("trace_id"), "{}", m.error);
    let resp = traces_response(&m, Encoding::Json);
    let v: Value = serde_json::from_slice(&resp).unwrap();
    assert_eq!(v["partialSuccess"]["rejectedSpans"], 3);
}

#[test]
fn oversize_span_payload_is_rejected() {
    let mut req = decode_traces(GENAI.as_bytes(), Encoding::Json).unwrap();
    let span = &mut req.resource_spans[0].scope_spans[0].spans[1];
    span.attributes
        .push(opentelemetry_proto::tonic::common::v1::KeyValue {
            key: "input.value".into(),
            value: Some(opentelemetry_proto::tonic::common::v1::AnyValue {
                value: Some(
                    opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(
                        "x".repeat(2 << 20),
                    ),
                ),
            }),
            ..Default::default()
        });
    let m = map_traces(&req, &none).unwrap();
    assert_eq!(m.rejected, 1);
    assert!(m.error.contains("limit"), "{}", m.error);
}

#[test]
fn bad_bodies_are_refused() {
    let req = decode_traces(GENAI.as_bytes(), Encoding::Json).unwrap();
    let bytes = req.encode_to_vec();
    assert!(decode_traces(&bytes[..bytes.len() / 2], Encoding::Protobuf).is_err());
    assert!(decode_traces(b"{\"resourceSpans\": 5}", Encoding::Json).is_err());
    assert!(decode_traces(b"", Encoding::Json).is_err());
    // An empty protobuf message is a valid, empty request.
    let empty = decode_traces(b"", Encoding::Protobuf).unwrap();
    assert_eq!(map_traces(&empty, &none).unwrap().items, 0);
}

#[test]
fn log_records_map_to_genai_events() {
    let req = decode_logs(LOGS.as_bytes(), Encoding::Json).unwrap();
    let m = map_logs(&req, &none).unwrap();
    assert_eq!(m.events.len(), 2);
    assert_eq!(m.events[0].kind, Kind::UserInput);
    assert_eq!(m.events[0].source_type, "gen_ai.user.message");
    assert_eq!(m.events[1].kind, Kind::LlmResponse);
    assert_eq!(
        m.events[0].session_id.as_str(),
        "5b8efff798038103d269b633813fc60c"
    );
    assert_eq!(m.events[0].agent_id.as_str(), "travel-assistant");
    let p = payload(&m.events[0]);
    assert_eq!(p["body"]["content"], "Book a flight to Paris");
    let known = |_: &[u8; 16]| Some("conv_5j66UpCpwteGg4YSxUnt7lPY".to_owned());
    let m = map_logs(&req, &known).unwrap();
    assert_eq!(
        m.events[1].session_id.as_str(),
        "conv_5j66UpCpwteGg4YSxUnt7lPY"
    );
}

#[test]
fn responses_in_both_encodings() {
    let ok = Mapped::default();
    assert_eq!(traces_response(&ok, Encoding::Protobuf), Vec::<u8>::new());
    let v: Value = serde_json::from_slice(&traces_response(&ok, Encoding::Json)).unwrap();
    assert!(v.get("partialSuccess").is_none_or(Value::is_null));
    let st = RpcStatus {
        code: 3,
        message: "bad".into(),
    };
    assert_eq!(
        RpcStatus::decode(&st.encode_as(Encoding::Protobuf)[..]).unwrap(),
        st
    );
}
