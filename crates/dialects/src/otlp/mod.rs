//! OpenTelemetry OTLP/HTTP: `POST /v1/traces` and `POST /v1/logs`, protobuf or
//! the OTLP JSON mapping. Spans and log records become ledger events; the GenAI
//! semantic conventions and OpenInference attributes name their kind, session,
//! agent, usage and tool fields. docs/otlp.md has the full table.

mod attrs;
mod logs;
mod spans;
#[cfg(test)]
mod tests;

use prost::Message;

use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};

use agentledger_core::NewEvent;

use crate::InputError;

/// The generated OTLP types, for clients of this module.
pub use opentelemetry_proto::tonic as proto;

pub use logs::map_logs;
pub use spans::map_traces;

/// The most spans (or log records) one request may carry.
pub const MAX_ITEMS_PER_REQUEST: usize = 10_000;

/// How a request body is encoded; the response uses the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Protobuf,
    Json,
}

impl Encoding {
    /// From a Content-Type value: `application/x-protobuf` or `application/json`
    /// (parameters such as charset ignored).
    pub fn from_content_type(ct: &str) -> Option<Encoding> {
        let mime = ct.split(';').next().unwrap_or("").trim();
        if mime.eq_ignore_ascii_case("application/x-protobuf")
            || mime.eq_ignore_ascii_case("application/protobuf")
        {
            Some(Encoding::Protobuf)
        } else if mime.eq_ignore_ascii_case("application/json") {
            Some(Encoding::Json)
        } else {
            None
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Encoding::Protobuf => "application/x-protobuf",
            Encoding::Json => "application/json",
        }
    }
}

/// What a request maps to: the events to store, in order, and the items that
/// could not be mapped (reported back in `partial_success`).
#[derive(Debug, Default)]
pub struct Mapped {
    pub events: Vec<NewEvent>,
    /// Spans or log records received.
    pub items: usize,
    pub rejected: usize,
    /// Why the first rejected item was refused (empty when none was).
    pub error: String,
    /// Sessions learnt from attributes, by trace id, so later requests for the
    /// same trace land in the same session.
    pub learnt: Vec<([u8; 16], String)>,
}

impl Mapped {
    fn reject(&mut self, why: String) {
        self.rejected += 1;
        if self.error.is_empty() {
            self.error = why;
        }
    }
}

fn decode<M: Message + Default + serde::de::DeserializeOwned>(
    body: &[u8],
    enc: Encoding,
    what: &str,
) -> Result<M, InputError> {
    match enc {
        Encoding::Protobuf => M::decode(body).map_err(|e| {
            InputError::invalid("", format!("body is not a valid {what} protobuf: {e}"))
        }),
        Encoding::Json => {
            // Unknown fields are skipped (as OTLP asks) without checking their
            // strings, so the body's encoding is checked as a whole first.
            let text = std::str::from_utf8(body)
                .map_err(|e| InputError::invalid("", format!("body is not UTF-8: {e}")))?;
            serde_json::from_str(text).map_err(|e| {
                InputError::invalid("", format!("body is not a valid {what} in OTLP JSON: {e}"))
            })
        }
    }
}

pub fn decode_traces(body: &[u8], enc: Encoding) -> Result<ExportTraceServiceRequest, InputError> {
    decode(body, enc, "ExportTraceServiceRequest")
}

pub fn decode_logs(body: &[u8], enc: Encoding) -> Result<ExportLogsServiceRequest, InputError> {
    decode(body, enc, "ExportLogsServiceRequest")
}

fn encode<M: Message + serde::Serialize>(m: &M, enc: Encoding) -> Vec<u8> {
    match enc {
        Encoding::Protobuf => m.encode_to_vec(),
        // Serialising these plain structs cannot fail.
        Encoding::Json => serde_json::to_vec(m).unwrap_or_else(|_| b"{}".to_vec()),
    }
}

/// The body of a successful `/v1/traces` answer.
pub fn traces_response(m: &Mapped, enc: Encoding) -> Vec<u8> {
    let partial_success = (m.rejected > 0).then(|| ExportTracePartialSuccess {
        rejected_spans: m.rejected as i64,
        error_message: m.error.clone(),
    });
    encode(&ExportTraceServiceResponse { partial_success }, enc)
}

/// The body of a successful `/v1/logs` answer.
pub fn logs_response(m: &Mapped, enc: Encoding) -> Vec<u8> {
    let partial_success = (m.rejected > 0).then(|| ExportLogsPartialSuccess {
        rejected_log_records: m.rejected as i64,
        error_message: m.error.clone(),
    });
    encode(&ExportLogsServiceResponse { partial_success }, enc)
}

/// `google.rpc.Status`, the body of every OTLP error answer.
#[derive(Clone, PartialEq, Message, serde::Serialize)]
pub struct RpcStatus {
    #[prost(int32, tag = "1")]
    pub code: i32,
    #[prost(string, tag = "2")]
    pub message: String,
}

impl RpcStatus {
    pub fn encode_as(&self, enc: Encoding) -> Vec<u8> {
        match enc {
            Encoding::Protobuf => self.encode_to_vec(),
            Encoding::Json => serde_json::to_vec(self).unwrap_or_else(|_| b"{}".to_vec()),
        }
    }
}
