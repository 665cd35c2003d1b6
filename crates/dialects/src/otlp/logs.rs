//! Log records (GenAI events sent as logs) to events, and the event builder
//! spans share.

use serde_json::value::RawValue;
use serde_json::{Map, Value};

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::logs::v1::LogRecord;

use agentledger_core::limits::{MAX_JSON_DEPTH, MAX_PAYLOAD_BYTES, json_depth};
use agentledger_core::{AgentId, Dialect, Kind, Micros, NewEvent, SessionId, Severity};

use super::attrs::{Attrs, object, to_json};
use super::spans::{genai_fields, metadata, micros, source_type};
use super::{MAX_ITEMS_PER_REQUEST, Mapped};
use crate::InputError;

/// JSON text within the payload bounds every dialect has.
pub(super) fn raw(what: &str, v: &Value) -> Result<Box<RawValue>, String> {
    let text = serde_json::to_string(v).map_err(|e| format!("{what}: {e}"))?;
    if text.len() > MAX_PAYLOAD_BYTES {
        return Err(format!(
            "{what} would be {} bytes; the limit is {MAX_PAYLOAD_BYTES}",
            text.len()
        ));
    }
    if json_depth(&text) > MAX_JSON_DEPTH {
        return Err(format!(
            "{what} is nested deeper than {MAX_JSON_DEPTH} levels"
        ));
    }
    RawValue::from_string(text).map_err(|e| format!("{what}: {e}"))
}

#[allow(clippy::too_many_arguments)]
pub(super) fn new_event(
    session_id: &SessionId,
    agent_id: &AgentId,
    kind: Kind,
    source_type: String,
    severity: Severity,
    client_ts: Option<Micros>,
    payload: Value,
    metadata: &RawValue,
) -> Result<NewEvent, String> {
    Ok(NewEvent {
        session_id: session_id.clone(),
        agent_id: agent_id.clone(),
        kind,
        source_type,
        dialect: Dialect::Otlp,
        severity,
        client_ts,
        payload: raw("payload", &payload)?,
        metadata: metadata.to_owned(),
        judgement: None,
    })
}

/// The kind of a GenAI event name.
fn event_kind(name: &str, severity: i32) -> Kind {
    match name {
        "gen_ai.system.message" => Kind::System,
        "gen_ai.user.message" => Kind::UserInput,
        "gen_ai.assistant.message" | "gen_ai.choice" => Kind::LlmResponse,
        "gen_ai.tool.message" => Kind::ToolResponse,
        "gen_ai.client.inference.operation.details" => Kind::LlmCall,
        _ if severity >= 17 => Kind::Error,
        _ => Kind::Custom,
    }
}

/// OTLP severity numbers (1-24) to ledger severities.
fn severity(n: i32) -> Severity {
    match n {
        1..=8 => Severity::Debug,
        13..=16 => Severity::Warn,
        17..=20 => Severity::Error,
        21..=24 => Severity::Critical,
        _ => Severity::Info,
    }
}

/// Map a logs export request: one event per log record.
pub fn map_logs(
    req: &ExportLogsServiceRequest,
    known: &dyn Fn(&[u8; 16]) -> Option<String>,
) -> Result<Mapped, InputError> {
    let total: usize = req
        .resource_logs
        .iter()
        .flat_map(|r| &r.scope_logs)
        .map(|s| s.log_records.len())
        .sum();
    if total > MAX_ITEMS_PER_REQUEST {
        return Err(InputError::invalid(
            "resourceLogs",
            format!("{total} log records in one request; the limit is {MAX_ITEMS_PER_REQUEST}"),
        ));
    }
    let mut out = Mapped {
        items: total,
        events: Vec::with_capacity(total),
        ..Default::default()
    };
    for rl in &req.resource_logs {
        let res = Attrs(rl.resource.as_ref().map_or(&[][..], |r| &r.attributes[..]));
        let service = res
            .str(&["service.name"])
            .filter(|s| AgentId::parse(*s).is_ok());
        for sl in &rl.scope_logs {
            let md = raw(
                "metadata",
                &metadata(rl.resource.as_ref(), sl.scope.as_ref(), &rl.schema_url),
            );
            for rec in &sl.log_records {
                let r = md
                    .as_ref()
                    .map_err(Clone::clone)
                    .and_then(|md| map_record(rec, service, md, known, &mut out.learnt));
                match r {
                    Ok(ev) => out.events.push(ev),
                    Err(why) => out.reject(why),
                }
            }
        }
    }
    Ok(out)
}

fn map_record(
    rec: &LogRecord,
    service: Option<&str>,
    metadata: &RawValue,
    known: &dyn Fn(&[u8; 16]) -> Option<String>,
    learnt: &mut Vec<([u8; 16], String)>,
) -> Result<NewEvent, String> {
    let a = Attrs(&rec.attributes);
    let trace = <[u8; 16]>::try_from(&rec.trace_id[..])
        .ok()
        .filter(|t| t.iter().any(|b| *b != 0));
    let agent = a
        .str(&["gen_ai.agent.id", "gen_ai.agent.name", "agent.name"])
        .filter(|s| AgentId::parse(*s).is_ok())
        .or(service)
        .unwrap_or("unknown");
    let agent_id = AgentId::parse(agent).map_err(|e| format!("agent id: {e}"))?;
    let attr_session = a
        .str(&["gen_ai.conversation.id", "session.id"])
        .filter(|s| SessionId::parse(*s).is_ok());
    if let (Some(t), Some(s)) = (trace, attr_session) {
        learnt.push((t, s.to_owned()));
    }
    let session = attr_session
        .map(str::to_owned)
        .or_else(|| trace.and_then(|t| known(&t)))
        .or_else(|| trace.map(hex::encode))
        .unwrap_or_else(|| agent.to_owned());
    let session_id = SessionId::parse(session).map_err(|e| format!("session id: {e}"))?;

    let name = if rec.event_name.is_empty() {
        a.str(&["event.name"]).unwrap_or("")
    } else {
        rec.event_name.as_str()
    };
    let time = micros(rec.time_unix_nano)?.or(micros(rec.observed_time_unix_nano)?);
    let mut p = Map::new();
    if !name.is_empty() {
        p.insert("event_name".into(), name.into());
    }
    if let Some(b) = &rec.body {
        p.insert("body".into(), to_json(b));
    }
    if !rec.severity_text.is_empty() {
        p.insert("severity_text".into(), rec.severity_text.clone().into());
    }
    if rec.severity_number != 0 {
        p.insert("severity_number".into(), rec.severity_number.into());
    }
    if let Some(t) = trace {
        p.insert("trace_id".into(), hex::encode(t).into());
    }
    if rec.span_id.len() == 8 {
        p.insert("span_id".into(), hex::encode(&rec.span_id).into());
    }
    if let Some(t) = time {
        p.insert("time".into(), t.to_rfc3339().into());
    }
    genai_fields(&a, &mut p);
    p.insert("attributes".into(), Value::Object(object(&rec.attributes)));
    new_event(
        &session_id,
        &agent_id,
        event_kind(name, rec.severity_number),
        source_type(Some(name), "log"),
        severity(rec.severity_number),
        time,
        Value::Object(p),
        metadata,
    )
}
