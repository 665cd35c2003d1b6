//! The native API under `/api/v1`.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::StreamExt;

use agentledger_core::Dialect;
use agentledger_dialects::native::{
    self, ErrorBody, EventList, EventOut, EventsParams, IngestResponse, IngestedEvent, SessionList,
    SessionOut, SessionsParams, UsageParams, UsageReport, UsageRowOut, VerifyOut,
};
use agentledger_store::{NewSession, verify::verify_session};

use super::shared::fetch_event;
use crate::auth::Caller;
use crate::body::JsonBytes;
use crate::error::ApiError;
use crate::extract::{PathParam, QueryParams};
use crate::ingest::{Done, Idempotency, Submission, json_reply, submit};
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    let r = Router::new()
        .route("/api/v1/sessions", get(list_sessions).post(create_session))
        .route("/api/v1/sessions/{id}", get(get_session))
        .route("/api/v1/sessions/{id}/verify", get(verify))
        .route("/api/v1/sessions/{id}/export", get(export))
        .route("/api/v1/events", get(list_events).post(ingest))
        .route("/api/v1/usage", get(usage))
        .route("/api/v1/events/{id}", get(get_event));
    crate::ingest::ingest_routes(Dialect::Native, r)
}

/// Record a batch of events
///
/// All-or-nothing: either every event is validated, chained and committed
/// durably before the 201, or nothing is stored.
#[utoipa::path(post, path = "/api/v1/events", tag = "native",
    request_body = native::IngestRequest,
    responses(
        (status = 201, body = IngestResponse),
        (status = 400, body = ErrorBody, description = "Invalid JSON or a field failed validation; details.path names it"),
        (status = 401, body = ErrorBody), (status = 413, body = ErrorBody), (status = 415, body = ErrorBody),
        (status = 503, body = ErrorBody, description = "Back-pressure; retry after Retry-After seconds"),
    ),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn ingest(
    State(st): State<AppState>,
    caller: Caller,
    idem: Idempotency,
    JsonBytes(body): JsonBytes,
) -> Result<Response, ApiError> {
    let events = native::parse_ingest(&body)?;
    let sub = Submission::events(Dialect::Native, events, idem.key_for(&body));
    submit(
        &st,
        &caller,
        sub,
        std::sync::Arc::new(|d: &Done<'_>| {
            let resp = IngestResponse {
                ingested: d.appended.len(),
                events: d
                    .appended
                    .iter()
                    .map(|e| IngestedEvent {
                        id: e.id.to_string(),
                        session_id: e.session_id.clone(),
                        seq: e.seq,
                        hash: hex::encode(e.hash),
                    })
                    .collect(),
            };
            json_reply(StatusCode::CREATED, &resp)
        }),
    )
    .await
}

/// Query events
///
/// Newest first by default. Filtered to one session, events come in chain (seq) order.
#[utoipa::path(get, path = "/api/v1/events", tag = "native", params(EventsParams),
    responses((status = 200, body = EventList), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn list_events(
    State(st): State<AppState>,
    caller: Caller,
    QueryParams(p): QueryParams<EventsParams>,
) -> Result<Json<EventList>, ApiError> {
    let page = st
        .store
        .query_events(&caller.project, p.to_query()?)
        .await?;
    Ok(Json(EventList {
        events: page.events.into_iter().map(EventOut::from).collect(),
        total: page.total.unwrap_or(0),
        total_capped: page.total_capped,
        next_cursor: page.next_cursor.map(|c| c.encode()),
    }))
}

/// Sum tokens and cost
///
/// Over the events that carry model usage (LLM calls and responses, cost
/// records, embeddings, agent spans), with the same filters as event queries,
/// optionally grouped by model, agent, session or kind.
#[utoipa::path(get, path = "/api/v1/usage", tag = "native", params(UsageParams),
    responses((status = 200, body = UsageReport), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn usage(
    State(st): State<AppState>,
    caller: Caller,
    QueryParams(p): QueryParams<UsageParams>,
) -> Result<Json<UsageReport>, ApiError> {
    let (q, group) = p.to_query()?;
    let rows = st.store.usage(&caller.project, q, group).await?;
    Ok(Json(UsageReport {
        group_by: p.group_by.filter(|g| !g.is_empty()),
        rows: rows.into_iter().map(UsageRowOut::from).collect(),
    }))
}

/// Get one event
#[utoipa::path(get, path = "/api/v1/events/{id}", tag = "native",
    params(("id" = String, Path, description = "Event id in any form: ULID, UUID, evt_…, event_…")),
    responses((status = 200, body = EventOut), (status = 404, body = ErrorBody), (status = 401, body = ErrorBody)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn get_event(
    State(st): State<AppState>,
    caller: Caller,
    PathParam(id): PathParam<String>,
) -> Result<Json<EventOut>, ApiError> {
    let ev = fetch_event(&st, &caller, &id).await?;
    Ok(Json(ev.into()))
}

/// Create a session
#[utoipa::path(post, path = "/api/v1/sessions", tag = "native",
    request_body = native::CreateSessionRequest,
    responses((status = 201, body = SessionOut), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "A session with that id exists"), (status = 415, body = ErrorBody)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn create_session(
    State(st): State<AppState>,
    caller: Caller,
    idem: Idempotency,
    JsonBytes(body): JsonBytes,
) -> Result<Response, ApiError> {
    let spec = native::parse_create_session(&body)?;
    let sub = Submission {
        session: Some(NewSession {
            id: spec.id,
            agent_id: spec.agent_id,
            system_prompt: spec.system_prompt,
            metadata: spec.metadata,
        }),
        ..Submission::events(Dialect::Native, Vec::new(), idem.key_for(&body))
    };
    submit(
        &st,
        &caller,
        sub,
        std::sync::Arc::new(|d: &Done<'_>| match d.session {
            Some(s) => json_reply(StatusCode::CREATED, &SessionOut::from(s.clone())),
            None => json_reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                &ApiError::Internal(String::new()).body(),
            ),
        }),
    )
    .await
}

/// List sessions
///
/// Newest first.
#[utoipa::path(get, path = "/api/v1/sessions", tag = "native", params(SessionsParams),
    responses((status = 200, body = SessionList), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn list_sessions(
    State(st): State<AppState>,
    caller: Caller,
    QueryParams(p): QueryParams<SessionsParams>,
) -> Result<Json<SessionList>, ApiError> {
    let page = st
        .store
        .list_sessions(&caller.project, p.to_query()?)
        .await?;
    Ok(Json(SessionList {
        sessions: page.sessions.into_iter().map(SessionOut::from).collect(),
        total: page.total,
        next_cursor: page.next_cursor.map(|c| c.encode()),
    }))
}

/// Get a session with its head and event count
#[utoipa::path(get, path = "/api/v1/sessions/{id}", tag = "native",
    params(("id" = String, Path, description = "Session id")),
    responses((status = 200, body = SessionOut), (status = 404, body = ErrorBody), (status = 401, body = ErrorBody)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn get_session(
    State(st): State<AppState>,
    caller: Caller,
    PathParam(id): PathParam<String>,
) -> Result<Json<SessionOut>, ApiError> {
    let s = st
        .store
        .get_session(&caller.project, &id)
        .await?
        .ok_or(ApiError::NotFound("session not found"))?;
    Ok(Json(s.into()))
}

/// Verify a session's hash chain
///
/// Recomputes every payload digest and envelope hash from the stored bytes and
/// checks the links and the recorded head. `valid: false` names the first
/// broken seq and why.
#[utoipa::path(get, path = "/api/v1/sessions/{id}/verify", tag = "native",
    params(("id" = String, Path, description = "Session id")),
    responses((status = 200, body = VerifyOut), (status = 404, body = ErrorBody), (status = 401, body = ErrorBody)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn verify(
    State(st): State<AppState>,
    caller: Caller,
    PathParam(id): PathParam<String>,
) -> Result<Json<VerifyOut>, ApiError> {
    let report = verify_session(st.store.as_ref(), &caller.project, &id)
        .await?
        .ok_or(ApiError::NotFound("session not found"))?;
    Ok(Json(report.into()))
}

/// Export a session as JSON Lines
///
/// One event per line in seq order, with everything needed to re-verify the
/// chain offline (see docs/hash-chain.md). `payload` and `metadata` appear
/// byte for byte as they were hashed. A last line `{"log_proof": {...}}` holds
/// the C2SP tlog-proof of the newest exported event in the project's signed
/// (and, with a witness policy, cosigned) checkpoint (docs/transparency.md
/// "Exports carry their proof"); it is absent until an event of the session
/// is in a checkpoint.
#[utoipa::path(get, path = "/api/v1/sessions/{id}/export", tag = "native",
    params(("id" = String, Path, description = "Session id")),
    responses((status = 200, content_type = "application/x-ndjson", body = String, description = "JSON Lines"),
        (status = 404, body = ErrorBody), (status = 401, body = ErrorBody)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn export(
    State(st): State<AppState>,
    caller: Caller,
    PathParam(id): PathParam<String>,
) -> Result<Response, ApiError> {
    if st.store.get_session(&caller.project, &id).await?.is_none() {
        return Err(ApiError::NotFound("session not found"));
    }
    // The stream reads after the handler returns: it holds the key's read
    // slot until the last chunk, so exports count against --reads-per-key.
    let slot = Arc::new(caller.read_slot());
    // The last event streamed (seq, id), for the log proof line that ends the export.
    let exported = Arc::new(std::sync::Mutex::new(None));
    let (store, project) = (st.store.clone(), caller.project.clone());
    let events = {
        let (slot, exported, id) = (slot.clone(), exported.clone(), id.clone());
        // Chunks are read and rendered a few at a time, in order
        // (`export_chunks`), while hyper sends the one before.
        let mut done = false;
        export_chunks(store, project, id).scan((), move |(), chunk| {
            let _slot = &slot;
            if done {
                return std::future::ready(None);
            }
            std::future::ready(Some(match chunk {
                Ok(c) => {
                    done = c.last_chunk;
                    if let Some(last) = c.last_event {
                        *exported.lock().unwrap_or_else(|p| p.into_inner()) = Some(last);
                    }
                    Ok(c.lines)
                }
                Err(e) => {
                    done = true;
                    tracing::error!(cause = %e, "export aborted");
                    Err(std::io::Error::other("export aborted"))
                }
            }))
        })
    };
    // After the events: the proof of the newest exported event in the served checkpoint
    // (docs/transparency.md "Exports carry their proof").
    let proof = futures_util::stream::once(async move {
        let _slot = slot;
        let last = *exported.lock().unwrap_or_else(|p| p.into_inner());
        let last = last?;
        let line = async {
            let Some(cp) = crate::export_proof::served(
                st.store.as_ref(),
                st.witnessing.as_deref(),
                &caller.project,
            )
            .await?
            else {
                return Ok(None);
            };
            crate::export_proof::proof_line(st.store.as_ref(), &cp, &caller.project, &id, last)
                .await
        };
        match line.await {
            Ok(line) => line.map(Ok),
            Err(e) => {
                tracing::error!(cause = %e, "export aborted at its log proof");
                Some(Err(std::io::Error::other("export aborted")))
            }
        }
    })
    .filter_map(std::future::ready);
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(events.chain(proof)),
    )
        .into_response())
}

/// One chunk of a session's export.
struct ExportChunk {
    lines: Bytes,
    /// The last event in `lines` (seq, id).
    last_event: Option<(u64, agentledger_core::EventId)>,
    /// No events follow this chunk.
    last_chunk: bool,
}

/// Events per chunk of an export.
const EXPORT_CHUNK: u32 = 2_000;

/// A session's events as JSON Lines, in seq order, chunk by chunk. Chunk
/// `i` reads the first [`EXPORT_CHUNK`] events after seq `i * EXPORT_CHUNK`,
/// and writes their lines as it reads them (`session_export_lines`), so
/// chunks are read and rendered ([`agentledger_store::verify::CHUNK_READS`]
/// at once), up to [`agentledger_store::verify::CHUNKS_AHEAD`] ahead of the
/// one being sent. A full chunk keeps only its events
/// up to seq `(i + 1) * EXPORT_CHUNK` (the rest are the next chunk's); a chunk
/// that is not full holds every event after its start and is the last. So
/// every stored event is written once, in order, even where seqs are not
/// contiguous (a tampered ledger: verification names the gap).
fn export_chunks(
    store: Arc<dyn agentledger_store::EventStore>,
    project: agentledger_store::ProjectRef,
    id: String,
) -> impl futures_util::Stream<Item = Result<ExportChunk, agentledger_store::StoreError>> {
    let reads = Arc::new(tokio::sync::Semaphore::new(
        agentledger_store::verify::CHUNK_READS,
    ));
    futures_util::stream::iter(0u64..)
        .map(move |i| {
            let (store, project, id, reads) =
                (store.clone(), project.clone(), id.clone(), reads.clone());
            async move {
                let after = i * u64::from(EXPORT_CHUNK);
                let until = after + u64::from(EXPORT_CHUNK);
                let mut piece = {
                    let _reading = reads.acquire().await.map_err(|_| {
                        agentledger_store::StoreError::Storage("export stopped".into())
                    })?;
                    store
                        .session_export_lines(&project, &id, after, EXPORT_CHUNK, until)
                        .await?
                };
                let last_chunk = piece.read < EXPORT_CHUNK as usize;
                if !last_chunk {
                    piece.keep_until();
                }
                Ok(ExportChunk {
                    lines: Bytes::from(piece.lines),
                    last_event: piece.last,
                    last_chunk,
                })
            }
        })
        .buffered(agentledger_store::verify::CHUNKS_AHEAD)
}
