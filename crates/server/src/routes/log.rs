//! The transparency log's read routes under `/log/` (issue 17, docs/transparency.md): the
//! C2SP tlog-tiles layout (`checkpoint`, `tile/<L>/<N>[.p/<W>]`, `tile/entries/<N>[.p/<W>]`)
//! and proofs (JSON, or the C2SP tlog-proof / tlog-witness texts). Each caller sees its own
//! project's log and nothing of another's.

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use agentledger_core::EventId;
use agentledger_dialects::InputError;
use agentledger_dialects::native::ErrorBody;
use agentledger_store::log::{self, LogCheckpoint};
use agentledger_tlog::proof::TlogProof;
use agentledger_tlog::tile::{TilePath, encode_entry_bundle, parse_tile_path};
use agentledger_tlog::witness::AddCheckpointRequest;
use agentledger_tlog::{Hash, leaf_hash};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::{PathParam, QueryParams};
use crate::state::AppState;

/// Longest tile path taken (the longest valid one is about 40 bytes).
const MAX_TILE_PATH: usize = 96;
/// Tile levels that can exist: 256^8 = 2^64 leaves.
const MAX_LEVEL: u8 = 7;
const TEXT: &str = "text/plain; charset=utf-8";

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/log/checkpoint", get(checkpoint))
        .route("/log/witnesses", get(witnesses))
        .route("/log/tile/{*path}", get(tile))
        .route("/log/proof/inclusion/{id}", get(inclusion))
        .route("/log/proof/consistency/{from}", get(consistency))
}

/// Whether a request's `Accept-Encoding` takes gzip (RFC 9110 12.5.3): `gzip` (or `x-gzip`), or
/// else `*`, with a q-value above 0; an explicit `gzip` entry wins over `*`. Hand-written rather
/// than tower-http's compression layer: that layer answers 406, on every response of the route
/// (hash tiles, 404s), to a client that refuses identity and takes nothing it offers.
fn accepts_gzip(headers: &axum::http::HeaderMap) -> bool {
    let (mut gzip, mut any) = (None, None);
    for value in headers.get_all(header::ACCEPT_ENCODING) {
        let Ok(value) = value.to_str() else { continue };
        for item in value.split(',') {
            let mut parts = item.split(';');
            let coding = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let mut q = 1.0f32;
            for p in parts {
                if let Some(v) = p
                    .trim()
                    .strip_prefix("q=")
                    .or_else(|| p.trim().strip_prefix("Q="))
                {
                    q = v.trim().parse().unwrap_or(0.0);
                }
            }
            match coding.as_str() {
                "gzip" | "x-gzip" => gzip = Some(q),
                "*" => any = Some(q),
                _ => {}
            }
        }
    }
    gzip.or(any).is_some_and(|q| q > 0.0)
}

/// An entry bundle gzipped (C2SP tlog-tiles: "Entry bundles SHOULD be compressed at the HTTP
/// layer"); `None` if compressing failed, and it is sent as is.
fn gzip(body: &[u8]) -> Option<Vec<u8>> {
    use std::io::Write as _;
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(body.len() / 2),
        flate2::Compression::default(),
    );
    enc.write_all(body).ok()?;
    enc.finish().ok()
}

/// Proof renderings.
#[derive(Debug, Clone, Copy, Default, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ProofFormat {
    /// A JSON object.
    #[default]
    Json,
    /// Text: a C2SP tlog-proof (inclusion) or a tlog-witness add-checkpoint body
    /// (consistency), as docs/transparency.md specifies.
    Text,
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct InclusionParams {
    /// Prove against the checkpoint of this tree size (default: the latest checkpoint).
    pub size: Option<u64>,
    /// `json` (default) or `text` (C2SP tlog-proof).
    #[param(inline)]
    pub format: Option<ProofFormat>,
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ConsistencyParams {
    /// The newer tree size, which must have a checkpoint (default: the latest checkpoint).
    pub to: Option<u64>,
    /// `json` (default) or `text` (tlog-witness add-checkpoint body).
    #[param(inline)]
    pub format: Option<ProofFormat>,
}

/// An event's inclusion proof.
#[derive(Debug, Serialize, ToSchema)]
pub struct InclusionOut {
    pub event_id: String,
    /// The event's leaf index in the project's log.
    pub index: u64,
    /// The checkpoint's tree size.
    pub tree_size: u64,
    /// The leaf entry (docs/transparency.md "Leaves"), base64.
    pub entry: String,
    /// `SHA-256(0x00 || entry)`, base64.
    pub leaf_hash: String,
    /// RFC 6962 `PATH(index, D[tree_size])`, leaf's sibling first, base64 hashes.
    pub inclusion_proof: Vec<String>,
    /// The signed checkpoint (C2SP signed-note text) the proof leads to.
    pub checkpoint: String,
}

/// A consistency proof between two tree sizes.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConsistencyOut {
    pub from: u64,
    pub to: u64,
    /// RFC 6962 `PROOF(from, D[to])`, base64 hashes.
    pub consistency_proof: Vec<String>,
    /// The signed checkpoint of size `to`.
    pub checkpoint: String,
}

fn b64(hashes: &[Hash]) -> Vec<String> {
    hashes.iter().map(Hash::to_base64).collect()
}

fn text(bytes: Vec<u8>) -> Response {
    ([(header::CONTENT_TYPE, TEXT)], bytes).into_response()
}

/// Every project's log is served at the same paths, chosen by the caller's API key: a cache
/// keeps a response for that key only (`private`, and `Vary` on both headers a key may come in).
const VARY_KEY: &str = "authorization, x-api-key";
/// C2SP tlog-tiles: a tile or entry bundle "is immutable, so its caching headers SHOULD be
/// long-lived" (a partial tile `.p/W` too: its W hashes never change).
const CACHE_IMMUTABLE: &str = "private, max-age=31536000, immutable";
/// C2SP tlog-tiles: the checkpoint's "headers SHOULD prevent caching beyond a few seconds".
const CACHE_CHECKPOINT: &str = "private, no-cache";

fn note_text(cp: &LogCheckpoint) -> String {
    String::from_utf8_lossy(&cp.note).into_owned()
}

/// The checkpoint at `size` (or the latest), or a 404 saying which is missing.
async fn checkpoint_at(
    st: &AppState,
    caller: &Caller,
    size: Option<u64>,
) -> Result<LogCheckpoint, ApiError> {
    crate::cosign::served_checkpoint(
        st.store.as_ref(),
        st.witnessing.as_deref(),
        &caller.project,
        size,
    )
    .await?
    .ok_or(ApiError::NotFound(if size.is_some() {
        "no checkpoint of that tree size (sizes with a checkpoint: see /log/checkpoint)"
    } else if st.witnessing.is_some() {
        "no checkpoint meets the witness policy's quorum yet (GET /log/witnesses shows each \
         witness's state)"
    } else {
        "no checkpoint yet: this project's log has no signed checkpoint (events are \
         integrated within a second and signed every --checkpoint-interval)"
    }))
}

/// The latest signed checkpoint
///
/// The project's log's newest checkpoint: a C2SP signed note over the C2SP tlog-checkpoint
/// text (origin, tree size, root hash), signed with the key `agentledger log-key` prints.
/// With a witness policy (`serve --witness-policy`), the newest checkpoint whose witnesses'
/// cosignatures (C2SP tlog-cosignature lines after the log's signature) meet its quorum.
#[utoipa::path(get, path = "/log/checkpoint", tag = "log",
    responses((status = 200, content_type = "text/plain", body = String, description = "Signed note"),
        (status = 404, body = ErrorBody, description = "No checkpoint signed yet")),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn checkpoint(State(st): State<AppState>, caller: Caller) -> Result<Response, ApiError> {
    let cp = checkpoint_at(&st, &caller, None).await?;
    Ok((
        [
            (header::CONTENT_TYPE, TEXT),
            (header::CACHE_CONTROL, CACHE_CHECKPOINT),
            (header::VARY, VARY_KEY),
        ],
        cp.note,
    )
        .into_response())
}

/// A tile or entry bundle
///
/// C2SP tlog-tiles: `tile/<L>/<N>[.p/<W>]` is 256 (or W) hashes of level L, 32 bytes each;
/// `tile/entries/<N>[.p/<W>]` the leaf entries of level 0 tile N, each prefixed by its
/// big-endian u16 length. N is written in 3-digit groups (`x001/x234/067`).
#[utoipa::path(get, path = "/log/tile/{path}", tag = "log",
    params(("path" = String, Path, description = "The tile path after `tile/`, e.g. `0/000.p/5`, `1/x001/002` or `entries/000`")),
    responses((status = 200, content_type = "application/octet-stream", body = Vec<u8>),
        (status = 400, body = ErrorBody, description = "Not a tile path"),
        (status = 404, body = ErrorBody, description = "The log has no such tile")),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn tile(
    State(st): State<AppState>,
    caller: Caller,
    PathParam(path): PathParam<String>,
    headers: axum::http::HeaderMap,
) -> Result<Response, ApiError> {
    if path.len() > MAX_TILE_PATH {
        return Err(InputError::invalid("path", "path: too long for a tile path").into());
    }
    let parsed = parse_tile_path(&format!("tile/{path}"))
        .map_err(|e| ApiError::from(InputError::invalid("path", format!("path: {e}"))))?;
    let bundle = matches!(parsed, TilePath::Entries { .. });
    let body = match parsed {
        TilePath::Hashes(tile) => {
            if tile.level > MAX_LEVEL {
                return Err(ApiError::NotFound("the log has no such tile"));
            }
            st.store
                .log_tiles(&caller.project, &[tile])
                .await?
                .pop()
                .flatten()
                .ok_or(ApiError::NotFound("the log has no such tile"))?
        }
        TilePath::Entries { index, width } => {
            let first = index
                .checked_mul(256)
                .ok_or(ApiError::NotFound("the log has no such entry bundle"))?;
            let entries = st.store.log_entries(&caller.project, first, width).await?;
            if entries.len() != usize::from(width) {
                return Err(ApiError::NotFound("the log has no such entry bundle"));
            }
            encode_entry_bundle(&entries).map_err(|e| ApiError::Internal(e.to_string()))?
        }
    };
    // An entry bundle varies with the encoding too; gzipped where the client takes it.
    let zipped = if bundle && accepts_gzip(&headers) {
        gzip(&body)
    } else {
        None
    };
    let gzipped = zipped.is_some();
    let mut response = (
        [
            (header::CONTENT_TYPE, "application/octet-stream"),
            (header::CACHE_CONTROL, CACHE_IMMUTABLE),
            (header::VARY, VARY_KEY),
        ],
        zipped.unwrap_or(body),
    )
        .into_response();
    let h = response.headers_mut();
    if bundle {
        h.append(header::VARY, HeaderValue::from_static("accept-encoding"));
    }
    if gzipped {
        h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    Ok(response)
}

/// Prove an event is in the log
///
/// The event's leaf index, entry and RFC 6962 inclusion proof against a signed checkpoint
/// (the latest, or `size`'s). 404 until the event is in a signed checkpoint (integration
/// takes about a second, signing every --checkpoint-interval).
#[utoipa::path(get, path = "/log/proof/inclusion/{id}", tag = "log",
    params(("id" = String, Path, description = "Event id"), InclusionParams),
    responses((status = 200, description = "JSON, or with format=text a C2SP tlog-proof",
            content((InclusionOut = "application/json"), (String = "text/plain"))),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn inclusion(
    State(st): State<AppState>,
    caller: Caller,
    PathParam(id): PathParam<String>,
    QueryParams(p): QueryParams<InclusionParams>,
) -> Result<Response, ApiError> {
    let event = EventId::parse_any(&id)
        .map_err(|e| ApiError::from(InputError::invalid("id", format!("id: {e}"))))?;
    let Some(index) = st.store.log_leaf_index(&caller.project, event).await? else {
        return Err(ApiError::NotFound(
            "no event with this id is in this project's log (yet: integration takes about a second)",
        ));
    };
    let cp = checkpoint_at(&st, &caller, p.size).await?;
    if index >= cp.size {
        return Err(ApiError::NotFound(
            "the event is in the log but not yet in that checkpoint; retry after the next one",
        ));
    }
    let proof = log::inclusion_proof(st.store.as_ref(), &caller.project, index, cp.size).await?;
    if p.format.unwrap_or_default() == ProofFormat::Text {
        return Ok(text(
            TlogProof {
                extra: None,
                index,
                inclusion_proof: proof,
                checkpoint: cp.note,
            }
            .to_bytes(),
        ));
    }
    let entry = st
        .store
        .log_entries(&caller.project, index, 1)
        .await?
        .pop()
        .ok_or_else(|| ApiError::Internal(format!("log leaf {index} has no entry")))?;
    Ok(Json(InclusionOut {
        event_id: event.to_string(),
        index,
        tree_size: cp.size,
        leaf_hash: leaf_hash(&entry).to_base64(),
        entry: STANDARD.encode(&entry),
        inclusion_proof: b64(&proof),
        checkpoint: note_text(&cp),
    })
    .into_response())
}

/// Prove the log only grew
///
/// RFC 6962 consistency proof from tree size `from` to a signed checkpoint (the latest, or
/// `to`'s): a client holding the root of size `from` checks the log kept every leaf.
#[utoipa::path(get, path = "/log/proof/consistency/{from}", tag = "log",
    params(("from" = u64, Path, description = "The older tree size"), ConsistencyParams),
    responses((status = 200, description = "JSON, or with format=text a tlog-witness add-checkpoint body",
            content((ConsistencyOut = "application/json"), (String = "text/plain"))),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn consistency(
    State(st): State<AppState>,
    caller: Caller,
    PathParam(from): PathParam<String>,
    QueryParams(p): QueryParams<ConsistencyParams>,
) -> Result<Response, ApiError> {
    let from: u64 = from.parse().map_err(|_| {
        ApiError::from(InputError::invalid(
            "from",
            "from: must be a tree size, a decimal number",
        ))
    })?;
    let cp = checkpoint_at(&st, &caller, p.to).await?;
    if from > cp.size {
        return Err(InputError::invalid(
            "from",
            format!(
                "from: {from} is larger than the checkpoint's tree size {}",
                cp.size
            ),
        )
        .into());
    }
    let proof = log::consistency_proof(st.store.as_ref(), &caller.project, from, cp.size).await?;
    if p.format.unwrap_or_default() == ProofFormat::Text {
        return Ok(text(
            AddCheckpointRequest {
                old_size: from,
                consistency_proof: proof,
                checkpoint: cp.note,
            }
            .to_bytes(),
        ));
    }
    Ok(Json(ConsistencyOut {
        from,
        to: cp.size,
        consistency_proof: b64(&proof),
        checkpoint: note_text(&cp),
    })
    .into_response())
}

/// The witnesses of the policy in force, for the caller's project's log.
#[derive(Debug, Serialize, ToSchema)]
pub struct WitnessesOut {
    /// False when the server runs without `--witness-policy` (the list is then empty).
    pub policy: bool,
    /// The policy's quorum line (`none`, a witness or a group name).
    pub quorum: Option<String>,
    pub witnesses: Vec<crate::cosign::WitnessState>,
}

/// The log's witnesses
///
/// Each witness of the server's witness policy with, for the caller's project's log, the
/// largest tree size it cosigned since the server started, and its last failure.
#[utoipa::path(get, path = "/log/witnesses", tag = "log",
    responses((status = 200, body = WitnessesOut)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn witnesses(State(st): State<AppState>, caller: Caller) -> Json<WitnessesOut> {
    Json(match &st.witnessing {
        Some(w) => WitnessesOut {
            policy: true,
            quorum: Some(w.quorum()),
            witnesses: w.states(&caller.project),
        },
        None => WitnessesOut {
            policy: false,
            quorum: None,
            witnesses: Vec::new(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::accepts_gzip;
    use axum::http::{HeaderMap, HeaderValue, header};

    fn with(values: &[&'static str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(header::ACCEPT_ENCODING, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn gzip_is_taken_as_accept_encoding_says() {
        for (values, want) in [
            (&[][..], false),
            (&["gzip"][..], true),
            (&["GZip"][..], true),
            (&["x-gzip"][..], true),
            (&["br, gzip;q=0.5"][..], true),
            (&["gzip;q=0"][..], false),
            (&["gzip; q=0.0"][..], false),
            (&["*"][..], true),
            (&["*;q=0"][..], false),
            (&["*;q=0, gzip"][..], true),
            (&["gzip;q=0, *"][..], false),
            (&["identity;q=0"][..], false),
            (&["br", "gzip"][..], true),
            (&["deflate, br"][..], false),
            (&["gzip;q=bad"][..], false),
        ] {
            assert_eq!(accepts_gzip(&with(values)), want, "{values:?}");
        }
    }
}
