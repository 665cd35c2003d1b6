//! OpenTelemetry OTLP/HTTP: `POST /v1/traces` and `POST /v1/logs`, protobuf or
//! JSON, optionally gzip-compressed. Answers follow the OTLP specification: the
//! response in the request's encoding, `partial_success` for spans that could
//! not be mapped, and a `google.rpc.Status` body on every error.

use std::io::Read;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;

use agentledger_core::Dialect;
use agentledger_core::limits::MAX_BODY_BYTES;
use agentledger_dialects::InputError;
use agentledger_dialects::otlp::{self, Encoding, Mapped, RpcStatus};
use agentledger_store::StoredReply;

use crate::auth::Caller;
use crate::body::read_limited;
use crate::error::ApiError;
use crate::ingest::{Done, Idempotency, Submission, submit};
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    let r = Router::new()
        .route("/v1/traces", post(traces))
        .route("/v1/logs", post(logs));
    crate::ingest::ingest_routes(Dialect::Otlp, r)
}

/// An error on the OTLP edge: a `google.rpc.Status` in the request's encoding.
pub struct OtlpError(ApiError, Encoding);

impl IntoResponse for OtlpError {
    fn into_response(self) -> Response {
        let OtlpError(e, enc) = self;
        if let ApiError::Internal(cause) | ApiError::StorageFull(cause) = &e {
            tracing::error!(%cause, "OTLP request failed");
        }
        let status = e.status();
        // gRPC status codes, as the OTLP/HTTP specification asks.
        let code = match status {
            StatusCode::BAD_REQUEST => 3,   // INVALID_ARGUMENT
            StatusCode::UNAUTHORIZED => 16, // UNAUTHENTICATED
            StatusCode::FORBIDDEN => 7,     // PERMISSION_DENIED
            StatusCode::PAYLOAD_TOO_LARGE | StatusCode::INSUFFICIENT_STORAGE => 8, // RESOURCE_EXHAUSTED
            StatusCode::SERVICE_UNAVAILABLE => 14,                                 // UNAVAILABLE
            StatusCode::UNSUPPORTED_MEDIA_TYPE => 3,
            StatusCode::CONFLICT => 9, // FAILED_PRECONDITION (an Idempotency-Key reused)
            _ => 13,                   // INTERNAL
        };
        let body = RpcStatus {
            code,
            message: e.to_string(),
        }
        .encode_as(enc);
        let mut resp = (status, body).into_response();
        resp.extensions_mut()
            .insert(crate::ingest::Refusal(e.reason()));
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(enc.content_type()),
        );
        if status == StatusCode::SERVICE_UNAVAILABLE {
            h.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        resp
    }
}

/// The request's encoding from its Content-Type.
fn encoding(headers: &HeaderMap) -> Option<Encoding> {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(Encoding::from_content_type)
}

/// The body, gunzipped when `Content-Encoding: gzip`; both the compressed and
/// the decompressed size are bounded by [`MAX_BODY_BYTES`].
async fn body(req: Request) -> Result<Bytes, ApiError> {
    let ce = req
        .headers()
        .get(header::CONTENT_ENCODING)
        .map(|v| v.to_str().unwrap_or("?").trim().to_ascii_lowercase());
    let raw = read_limited(req, MAX_BODY_BYTES).await?;
    match ce.as_deref() {
        None | Some("") | Some("identity") => Ok(raw),
        Some("gzip") | Some("x-gzip") => {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(&raw[..])
                .take(MAX_BODY_BYTES as u64 + 1)
                .read_to_end(&mut out)
                .map_err(|e| InputError::invalid("", format!("body is not valid gzip: {e}")))?;
            if out.len() > MAX_BODY_BYTES {
                return Err(ApiError::BodyTooLarge(MAX_BODY_BYTES));
            }
            Ok(out.into())
        }
        Some(other) => Err(InputError::invalid(
            "",
            format!("Content-Encoding {other:?} is not supported; send gzip or no encoding"),
        )
        .into()),
    }
}

type Decode =
    fn(&[u8], Encoding, &dyn Fn(&[u8; 16]) -> Option<String>) -> Result<Mapped, InputError>;

fn decode_traces(
    b: &[u8],
    e: Encoding,
    k: &dyn Fn(&[u8; 16]) -> Option<String>,
) -> Result<Mapped, InputError> {
    otlp::map_traces(&otlp::decode_traces(b, e)?, k)
}

fn decode_logs(
    b: &[u8],
    e: Encoding,
    k: &dyn Fn(&[u8; 16]) -> Option<String>,
) -> Result<Mapped, InputError> {
    otlp::map_logs(&otlp::decode_logs(b, e)?, k)
}

/// Authenticate, read, decode and map; then the pipeline judges, appends and
/// answers (an `Export…ServiceResponse` in the request's encoding, with
/// `partial_success` for what could not be mapped).
async fn export(
    st: &AppState,
    caller: Result<Caller, ApiError>,
    idem: Idempotency,
    req: Request,
    enc: Encoding,
    decode: Decode,
    respond: fn(&Mapped, Encoding) -> Vec<u8>,
) -> Result<Response, ApiError> {
    let caller = caller?;
    let bytes = body(req).await?;
    let key = idem.key_for(&bytes);
    let project = caller.project.clone();
    let traces = st.traces.clone();
    let known = move |t: &[u8; 16]| traces.get(&project, t);
    let mut mapped = decode(&bytes, enc, &known)?;
    drop(bytes);
    let events = std::mem::take(&mut mapped.events);
    let learnt = std::mem::take(&mut mapped.learnt);
    let rejected = mapped.rejected;
    let answer = respond(&mapped, enc);
    let resp = submit(
        st,
        &caller,
        Submission::events(Dialect::Otlp, events, key),
        std::sync::Arc::new(move |_: &Done<'_>| StoredReply {
            status: 200,
            content_type: enc.content_type().into(),
            body: answer.clone(),
        }),
    )
    .await?;
    // Learnt only once committed: state follows the ledger.
    st.traces.learn(&caller.project, learnt);
    if rejected > 0 {
        st.metrics.rejected(Dialect::Otlp.as_str(), "UNMAPPABLE");
    }
    Ok(resp)
}

async fn handle(
    st: AppState,
    caller: Result<Caller, ApiError>,
    idem: Result<Idempotency, ApiError>,
    req: Request,
    decode: Decode,
    respond: fn(&Mapped, Encoding) -> Vec<u8>,
) -> Result<Response, OtlpError> {
    let Some(enc) = encoding(req.headers()) else {
        return Err(OtlpError(ApiError::UnsupportedMediaType, Encoding::Json));
    };
    let idem = idem.map_err(|e| OtlpError(e, enc))?;
    export(&st, caller, idem, req, enc, decode, respond)
        .await
        .map_err(|e| OtlpError(e, enc))
}

/// Export spans (OTLP/HTTP)
///
/// An `ExportTraceServiceRequest` as protobuf (`application/x-protobuf`) or
/// OTLP JSON (`application/json`), optionally `Content-Encoding: gzip`. The
/// answer is an `ExportTraceServiceResponse` in the same encoding, sent after
/// the accepted spans are committed; spans that could not be mapped are
/// counted in `partialSuccess`. Errors carry a `google.rpc.Status`.
#[utoipa::path(post, path = "/v1/traces", tag = "otlp",
    request_body(description = "ExportTraceServiceRequest, as OTLP JSON or protobuf",
        content((Object = "application/json"), (Vec<u8> = "application/x-protobuf"))),
    responses((status = 200, description = "ExportTraceServiceResponse", body = Object),
        (status = 400, description = "Unparseable body (google.rpc.Status)"),
        (status = 401, description = "Missing or unknown API key (google.rpc.Status)"),
        (status = 413, description = "Body over 10 MiB, before or after gzip"),
        (status = 415, description = "Content-Type is neither protobuf nor JSON"),
        (status = 503, description = "The ledger is busy; retry after Retry-After")),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn traces(
    State(st): State<AppState>,
    caller: Result<Caller, ApiError>,
    idem: Result<Idempotency, ApiError>,
    req: Request,
) -> Result<Response, OtlpError> {
    handle(st, caller, idem, req, decode_traces, otlp::traces_response).await
}

/// Export log records (OTLP/HTTP)
///
/// GenAI events sent as log records (`gen_ai.user.message`, `gen_ai.choice`,
/// …), one ledger event each. Same encodings and answers as `/v1/traces`.
#[utoipa::path(post, path = "/v1/logs", tag = "otlp",
    request_body(description = "ExportLogsServiceRequest, as OTLP JSON or protobuf",
        content((Object = "application/json"), (Vec<u8> = "application/x-protobuf"))),
    responses((status = 200, description = "ExportLogsServiceResponse", body = Object),
        (status = 400, description = "Unparseable body (google.rpc.Status)"),
        (status = 401, description = "Missing or unknown API key (google.rpc.Status)"),
        (status = 413, description = "Body over 10 MiB, before or after gzip"),
        (status = 415, description = "Content-Type is neither protobuf nor JSON"),
        (status = 503, description = "The ledger is busy; retry after Retry-After")),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn logs(
    State(st): State<AppState>,
    caller: Result<Caller, ApiError>,
    idem: Result<Idempotency, ApiError>,
    req: Request,
) -> Result<Response, OtlpError> {
    handle(st, caller, idem, req, decode_logs, otlp::logs_response).await
}
