//! Spans to events.

use std::collections::HashMap;

use serde_json::value::RawValue;
use serde_json::{Map, Value, json};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{Span, span::SpanKind, status::StatusCode};

use agentledger_core::{AgentId, Kind, Micros, NewEvent, SessionId, Severity};

use super::attrs::{Attrs, object};
use super::logs::{new_event, raw};
use super::{MAX_ITEMS_PER_REQUEST, Mapped};
use crate::InputError;

/// Session-id attributes, most specific first: the GenAI conversation, then
/// OpenInference's session.
const SESSION_KEYS: &[&str] = &["gen_ai.conversation.id", "session.id"];
/// Agent attributes: GenAI id, GenAI name, OpenInference's agent name.
const AGENT_KEYS: &[&str] = &["gen_ai.agent.id", "gen_ai.agent.name", "agent.name"];
/// How far up the parent chain a span looks for its session and agent.
const MAX_ANCESTORS: usize = 64;
/// The latest time accepted (as for every dialect: 1e11 seconds after 1970).
const MAX_TIME_MICROS: u64 = 100_000_000_000 * 1_000_000;

/// Which attribute convention named a span's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Convention {
    GenAi,
    OpenInference,
    None,
}

impl Convention {
    fn as_str(self) -> &'static str {
        match self {
            Convention::GenAi => "gen_ai",
            Convention::OpenInference => "openinference",
            Convention::None => "none",
        }
    }
}

/// The kind for a GenAI `gen_ai.operation.name` (or OpenLLMetry `llm.request.type`).
pub(super) fn genai_kind(op: &str) -> Kind {
    match op {
        "chat" | "text_completion" | "generate_content" | "completion" => Kind::LlmCall,
        "execute_tool" => Kind::ToolCall,
        "embeddings" | "embedding" => Kind::Embedding,
        "retrieval" | "retrieve" | "rerank" => Kind::Retrieval,
        "invoke_agent" | "create_agent" => Kind::Agent,
        "apply_guardrail" => Kind::Guardrail,
        o if o.contains("memory") => Kind::Memory,
        _ => Kind::Custom,
    }
}

/// The kind for an OpenInference `openinference.span.kind`.
fn openinference_kind(k: &str) -> Kind {
    match k.to_ascii_uppercase().as_str() {
        "LLM" => Kind::LlmCall,
        "TOOL" => Kind::ToolCall,
        "AGENT" => Kind::Agent,
        "EMBEDDING" => Kind::Embedding,
        "RETRIEVER" | "RERANKER" => Kind::Retrieval,
        "GUARDRAIL" => Kind::Guardrail,
        _ => Kind::Custom,
    }
}

/// Kind, convention and operation name of a span.
fn classify(a: &Attrs<'_>) -> (Kind, Convention, Option<String>) {
    if let Some(op) = a.str(&["gen_ai.operation.name", "llm.request.type"]) {
        return (genai_kind(op), Convention::GenAi, Some(op.to_owned()));
    }
    if let Some(k) = a.str(&["openinference.span.kind"]) {
        return (
            openinference_kind(k),
            Convention::OpenInference,
            Some(k.to_ascii_lowercase()),
        );
    }
    if a.0.iter().any(|kv| kv.key.starts_with("gen_ai.")) {
        return (Kind::Custom, Convention::GenAi, None);
    }
    (Kind::Custom, Convention::None, None)
}

/// What the parent walk needs of each span in the request.
struct Node<'a> {
    parent: Option<[u8; 8]>,
    session: Option<&'a str>,
    agent: Option<&'a str>,
}

type SpanKey = ([u8; 16], [u8; 8]);

/// Map an export request. `known` answers the session learnt earlier for a
/// trace (spans of one trace often arrive over several requests).
pub fn map_traces(
    req: &ExportTraceServiceRequest,
    known: &dyn Fn(&[u8; 16]) -> Option<String>,
) -> Result<Mapped, InputError> {
    let total: usize = req
        .resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .map(|s| s.spans.len())
        .sum();
    if total > MAX_ITEMS_PER_REQUEST {
        return Err(InputError::invalid(
            "resourceSpans",
            format!("{total} spans in one request; the limit is {MAX_ITEMS_PER_REQUEST}"),
        ));
    }
    let mut nodes: HashMap<SpanKey, Node<'_>> = HashMap::with_capacity(total);
    let mut trace_sessions: HashMap<[u8; 16], &str> = HashMap::new();
    for span in req
        .resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .flat_map(|s| &s.spans)
    {
        let (Ok(t), Ok(s)) = (
            <[u8; 16]>::try_from(&span.trace_id[..]),
            <[u8; 8]>::try_from(&span.span_id[..]),
        ) else {
            continue;
        };
        let a = Attrs(&span.attributes);
        let session = a.str(SESSION_KEYS).filter(|s| SessionId::parse(*s).is_ok());
        if let Some(sess) = session {
            trace_sessions.entry(t).or_insert(sess);
        }
        nodes.insert(
            (t, s),
            Node {
                parent: <[u8; 8]>::try_from(&span.parent_span_id[..]).ok(),
                session,
                agent: a.str(AGENT_KEYS).filter(|s| AgentId::parse(*s).is_ok()),
            },
        );
    }
    let mut out = Mapped {
        items: total,
        events: Vec::with_capacity(total),
        ..Default::default()
    };
    for (t, s) in &trace_sessions {
        out.learnt.push((*t, (*s).to_owned()));
    }
    let ctx = Ctx {
        nodes: &nodes,
        trace_sessions: &trace_sessions,
        known,
    };
    for rs in &req.resource_spans {
        let res = Attrs(rs.resource.as_ref().map_or(&[][..], |r| &r.attributes[..]));
        let service = res
            .str(&["service.name"])
            .filter(|s| AgentId::parse(*s).is_ok());
        for ss in &rs.scope_spans {
            let md = raw(
                "metadata",
                &metadata(rs.resource.as_ref(), ss.scope.as_ref(), &rs.schema_url),
            );
            for span in &ss.spans {
                let r = md
                    .as_ref()
                    .map_err(Clone::clone)
                    .and_then(|md| ctx.map_span(span, service, md));
                match r {
                    Ok(evs) => out.events.extend(evs),
                    Err(why) => out.reject(why),
                }
            }
        }
    }
    Ok(out)
}

/// The event metadata shared by every span of one scope: resource and scope.
pub(super) fn metadata(
    resource: Option<&Resource>,
    scope: Option<&InstrumentationScope>,
    schema_url: &str,
) -> Value {
    let mut m = Map::new();
    if let Some(r) = resource {
        m.insert("resource".into(), Value::Object(object(&r.attributes)));
    }
    if let Some(s) = scope {
        let mut sm = Map::new();
        sm.insert("name".into(), s.name.clone().into());
        if !s.version.is_empty() {
            sm.insert("version".into(), s.version.clone().into());
        }
        if !s.attributes.is_empty() {
            sm.insert("attributes".into(), Value::Object(object(&s.attributes)));
        }
        m.insert("scope".into(), Value::Object(sm));
    }
    if !schema_url.is_empty() {
        m.insert("schema_url".into(), schema_url.into());
    }
    Value::Object(m)
}

/// A nanosecond time as microseconds, or `None` for 0 (unset).
pub(super) fn micros(nanos: u64) -> Result<Option<Micros>, String> {
    if nanos == 0 {
        return Ok(None);
    }
    let us = nanos / 1000;
    if us > MAX_TIME_MICROS {
        return Err(format!("time {nanos} ns is out of range"));
    }
    Ok(Some(Micros(us as i64)))
}

/// A source type: the operation name when it is a short plain name.
pub(super) fn source_type(op: Option<&str>, fallback: &str) -> String {
    match op {
        Some(o)
            if !o.is_empty()
                && o.len() <= agentledger_core::limits::MAX_SOURCE_TYPE_CHARS
                && !o.chars().any(char::is_control) =>
        {
            o.to_owned()
        }
        _ => fallback.to_owned(),
    }
}

struct Ctx<'a, 'b> {
    nodes: &'b HashMap<SpanKey, Node<'a>>,
    trace_sessions: &'b HashMap<[u8; 16], &'a str>,
    known: &'b dyn Fn(&[u8; 16]) -> Option<String>,
}

impl Ctx<'_, '_> {
    /// The nearest value of `pick` on the span or its ancestors in this request.
    fn inherited<'n>(
        &'n self,
        key: SpanKey,
        pick: impl Fn(&'n Node<'_>) -> Option<&'n str>,
    ) -> Option<&'n str> {
        let mut at = key;
        for _ in 0..MAX_ANCESTORS {
            let node = self.nodes.get(&at)?;
            if let Some(v) = pick(node) {
                return Some(v);
            }
            at = (at.0, node.parent?);
        }
        None
    }

    fn map_span(
        &self,
        span: &Span,
        service: Option<&str>,
        metadata: &RawValue,
    ) -> Result<Vec<NewEvent>, String> {
        let trace: [u8; 16] = span.trace_id[..]
            .try_into()
            .ok()
            .filter(|t: &[u8; 16]| t.iter().any(|b| *b != 0))
            .ok_or_else(|| format!("span {:?}: trace_id must be 16 non-zero bytes", span.name))?;
        let span_id: [u8; 8] = span.span_id[..]
            .try_into()
            .ok()
            .filter(|s: &[u8; 8]| s.iter().any(|b| *b != 0))
            .ok_or_else(|| format!("span {:?}: span_id must be 8 non-zero bytes", span.name))?;
        let key = (trace, span_id);
        let session = self
            .inherited(key, |n| n.session)
            .map(str::to_owned)
            .or_else(|| self.trace_sessions.get(&trace).map(|s| (*s).to_owned()))
            .or_else(|| (self.known)(&trace))
            .unwrap_or_else(|| hex::encode(trace));
        let session_id = SessionId::parse(session).map_err(|e| format!("session id: {e}"))?;
        let agent = self
            .inherited(key, |n| n.agent)
            .or(service)
            .unwrap_or("unknown");
        let agent_id = AgentId::parse(agent).map_err(|e| format!("agent id: {e}"))?;

        let a = Attrs(&span.attributes);
        let (kind, convention, op) = classify(&a);
        let start = micros(span.start_time_unix_nano)?;
        let end = micros(span.end_time_unix_nano)?;
        let status_error = span
            .status
            .as_ref()
            .is_some_and(|s| s.code == StatusCode::Error as i32);

        let mut p = Map::new();
        p.insert("name".into(), span.name.clone().into());
        if let Some(op) = &op {
            p.insert("operation".into(), op.clone().into());
        }
        p.insert("convention".into(), convention.as_str().into());
        p.insert("trace_id".into(), hex::encode(trace).into());
        p.insert("span_id".into(), hex::encode(span_id).into());
        if !span.parent_span_id.is_empty() {
            p.insert(
                "parent_span_id".into(),
                hex::encode(&span.parent_span_id).into(),
            );
        }
        let span_kind = SpanKind::try_from(span.kind).unwrap_or(SpanKind::Unspecified);
        p.insert(
            "span_kind".into(),
            span_kind
                .as_str_name()
                .trim_start_matches("SPAN_KIND_")
                .to_ascii_lowercase()
                .into(),
        );
        if let Some(s) = start {
            p.insert("start_time".into(), s.to_rfc3339().into());
        }
        if let Some(e) = end {
            p.insert("end_time".into(), e.to_rfc3339().into());
        }
        if span.end_time_unix_nano >= span.start_time_unix_nano && start.is_some() {
            let ms = (span.end_time_unix_nano - span.start_time_unix_nano) as f64 / 1e6;
            p.insert("duration_ms".into(), json!(ms));
        }
        if let Some(st) = &span.status
            && (st.code != StatusCode::Unset as i32 || !st.message.is_empty())
        {
            let code = StatusCode::try_from(st.code).unwrap_or(StatusCode::Unset);
            let mut sm = Map::new();
            sm.insert(
                "code".into(),
                code.as_str_name()
                    .trim_start_matches("STATUS_CODE_")
                    .to_ascii_lowercase()
                    .into(),
            );
            if !st.message.is_empty() {
                sm.insert("message".into(), st.message.clone().into());
            }
            p.insert("status".into(), Value::Object(sm));
        }
        genai_fields(&a, &mut p);
        if !span.events.is_empty() {
            let evs: Vec<Value> = span
                .events
                .iter()
                .map(|e| {
                    let mut m = Map::new();
                    m.insert("name".into(), e.name.clone().into());
                    if let Ok(Some(t)) = micros(e.time_unix_nano) {
                        m.insert("time".into(), t.to_rfc3339().into());
                    }
                    if !e.attributes.is_empty() {
                        m.insert("attributes".into(), Value::Object(object(&e.attributes)));
                    }
                    Value::Object(m)
                })
                .collect();
            p.insert("events".into(), Value::Array(evs));
        }
        if !span.links.is_empty() {
            let links: Vec<Value> = span
                .links
                .iter()
                .map(|l| json!({"trace_id": hex::encode(&l.trace_id), "span_id": hex::encode(&l.span_id)}))
                .collect();
            p.insert("links".into(), Value::Array(links));
        }
        p.insert("attributes".into(), Value::Object(object(&span.attributes)));

        let severity = if status_error {
            Severity::Error
        } else {
            Severity::Info
        };
        let main = new_event(
            &session_id,
            &agent_id,
            kind,
            source_type(op.as_deref(), "span"),
            severity,
            start,
            Value::Object(p),
            metadata,
        )?;
        let mut out = vec![main];

        let exceptions: Vec<Value> = span
            .events
            .iter()
            .filter(|e| e.name == "exception")
            .map(|e| {
                let ea = Attrs(&e.attributes);
                let mut m = Map::new();
                for (k, name) in [
                    ("exception.type", "type"),
                    ("exception.message", "message"),
                    ("exception.stacktrace", "stacktrace"),
                ] {
                    if let Some(v) = ea.str(&[k]) {
                        m.insert(name.into(), v.into());
                    }
                }
                if let Ok(Some(t)) = micros(e.time_unix_nano) {
                    m.insert("time".into(), t.to_rfc3339().into());
                }
                Value::Object(m)
            })
            .collect();
        if status_error || !exceptions.is_empty() {
            let mut m = Map::new();
            m.insert("trace_id".into(), hex::encode(trace).into());
            m.insert("span_id".into(), hex::encode(span_id).into());
            m.insert("span_name".into(), span.name.clone().into());
            if let Some(op) = &op {
                m.insert("operation".into(), op.clone().into());
            }
            let message = span
                .status
                .as_ref()
                .map(|s| s.message.as_str())
                .filter(|s| !s.is_empty())
                .or_else(|| exceptions.first().and_then(|e| e["message"].as_str()))
                .unwrap_or("span ended with error status");
            m.insert("message".into(), message.into());
            if let Some(t) = a.str(&["error.type"]) {
                m.insert("error_type".into(), t.into());
            }
            if !exceptions.is_empty() {
                m.insert("exceptions".into(), Value::Array(exceptions));
            }
            out.push(new_event(
                &session_id,
                &agent_id,
                Kind::Error,
                "span_error".to_owned(),
                Severity::Error,
                end.or(start),
                Value::Object(m),
                metadata,
            )?);
        }
        Ok(out)
    }
}

/// The named GenAI / OpenInference fields: provider, models, usage, cost,
/// finish reasons, tool, agent, input and output.
pub(super) fn genai_fields(a: &Attrs<'_>, p: &mut Map<String, Value>) {
    if let Some(v) = a.str(&[
        "gen_ai.provider.name",
        "gen_ai.system",
        "llm.provider",
        "llm.system",
    ]) {
        p.insert("provider".into(), v.into());
    }
    let request_model = a.str(&[
        "gen_ai.request.model",
        "llm.model_name",
        "embedding.model_name",
    ]);
    let response_model = a.str(&["gen_ai.response.model"]);
    if let Some(m) = response_model.or(request_model) {
        p.insert("model".into(), m.into());
    }
    if let Some(m) = request_model {
        p.insert("request_model".into(), m.into());
    }
    if let Some(m) = response_model {
        p.insert("response_model".into(), m.into());
    }
    if let Some(id) = a.str(&["gen_ai.response.id"]) {
        p.insert("response_id".into(), id.into());
    }
    let mut usage = Map::new();
    for (name, keys) in [
        (
            "input_tokens",
            &[
                "gen_ai.usage.input_tokens",
                "gen_ai.usage.prompt_tokens",
                "llm.token_count.prompt",
            ][..],
        ),
        (
            "output_tokens",
            &[
                "gen_ai.usage.output_tokens",
                "gen_ai.usage.completion_tokens",
                "llm.token_count.completion",
            ][..],
        ),
        (
            "cache_read_input_tokens",
            &[
                "gen_ai.usage.cache_read.input_tokens",
                "gen_ai.usage.cache_read_input_tokens",
                "llm.token_count.prompt_details.cache_read",
            ][..],
        ),
        (
            "cache_creation_input_tokens",
            &[
                "gen_ai.usage.cache_creation.input_tokens",
                "gen_ai.usage.cache_creation_input_tokens",
                "llm.token_count.prompt_details.cache_write",
            ][..],
        ),
        (
            "reasoning_tokens",
            &[
                "gen_ai.usage.reasoning.output_tokens",
                "gen_ai.usage.reasoning_tokens",
                "llm.token_count.completion_details.reasoning",
            ][..],
        ),
        (
            "total_tokens",
            &[
                "gen_ai.usage.total_tokens",
                "llm.usage.total_tokens",
                "llm.token_count.total",
            ][..],
        ),
    ] {
        if let Some(n) = a.int(keys).filter(|n| *n >= 0) {
            usage.insert(name.into(), n.into());
        }
    }
    if !usage.is_empty() {
        p.insert("usage".into(), Value::Object(usage));
    }
    if let Some(c) = a
        .num(&["gen_ai.usage.cost", "llm.cost.total", "gen_ai.cost.total"])
        .filter(|c| *c >= 0.0)
    {
        p.insert("cost_usd".into(), json!(c));
    }
    if let Some(v) = a.json(&["gen_ai.response.finish_reasons"]) {
        p.insert("finish_reasons".into(), v);
    }
    let mut tool = Map::new();
    for (name, keys) in [
        ("name", &["gen_ai.tool.name", "tool.name"][..]),
        ("call_id", &["gen_ai.tool.call.id", "tool_call.id"][..]),
        ("type", &["gen_ai.tool.type"][..]),
        (
            "description",
            &["gen_ai.tool.description", "tool.description"][..],
        ),
    ] {
        if let Some(v) = a.str(keys) {
            tool.insert(name.into(), v.into());
        }
    }
    for (name, keys) in [
        (
            "arguments",
            &[
                "gen_ai.tool.call.arguments",
                "tool.parameters",
                "tool_call.function.arguments",
            ][..],
        ),
        ("result", &["gen_ai.tool.call.result"][..]),
    ] {
        if let Some(v) = a.json(keys) {
            tool.insert(name.into(), v);
        }
    }
    if !tool.is_empty() {
        p.insert("tool".into(), Value::Object(tool));
    }
    let mut agent = Map::new();
    for (name, keys) in [
        ("id", &["gen_ai.agent.id"][..]),
        ("name", &["gen_ai.agent.name", "agent.name"][..]),
        ("description", &["gen_ai.agent.description"][..]),
    ] {
        if let Some(v) = a.str(keys) {
            agent.insert(name.into(), v.into());
        }
    }
    if !agent.is_empty() {
        p.insert("agent".into(), Value::Object(agent));
    }
    let input = a
        .json(&["gen_ai.input.messages", "input.value"])
        .or_else(|| a.indexed("gen_ai.prompt.", ""))
        .or_else(|| a.indexed("llm.input_messages.", "message."));
    if let Some(v) = input {
        p.insert("input".into(), v);
    }
    let output = a
        .json(&["gen_ai.output.messages", "output.value"])
        .or_else(|| a.indexed("gen_ai.completion.", ""))
        .or_else(|| a.indexed("llm.output_messages.", "message."));
    if let Some(v) = output {
        p.insert("output".into(), v);
    }
    if let Some(v) = a.json(&["gen_ai.system_instructions"]) {
        p.insert("system_instructions".into(), v);
    }
}
