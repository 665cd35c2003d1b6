//! C2SP tlog-witness (<https://c2sp.org/tlog-witness>): the `add-checkpoint` request body, the
//! responses, and the witness's decision as a pure function.
//!
//! Request body: `old <size>\n`, zero to 63 base64 consistency-proof lines, an empty line, then
//! the signed checkpoint note. A 200 response is one or more note signature lines (the
//! cosignatures); a 409 response is the witness's latest size in decimal and a newline, with
//! content type `text/x.tlog.size`.
//!
//! The same body is what we serve as the text form of a consistency proof between two sizes:
//! it already carries exactly the old size, the RFC 6962 proof and the signed new checkpoint,
//! in a public format (docs/transparency.md, "Consistency proof text").

use crate::checkpoint::{Checkpoint, parse_canonical_u64};
use crate::hash::{EMPTY_ROOT, Hash, HashParseError};
use crate::note::{NoteError, NoteSignature, NoteVerifier, OpenedNote, open};
use crate::tree::{ProofError, verify_consistency};

/// Most consistency-proof lines a request may carry.
pub const MAX_PROOF_LINES: usize = 63;
/// Content type of a 409 response body.
pub const SIZE_CONTENT_TYPE: &str = "text/x.tlog.size";

/// An add-checkpoint request body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddCheckpointRequest {
    /// Size of the latest checkpoint the client believes the witness cosigned (0 if none).
    pub old_size: u64,
    /// RFC 6962 consistency proof from `old_size` to the checkpoint's size.
    pub consistency_proof: Vec<Hash>,
    /// The signed checkpoint note, verbatim.
    pub checkpoint: Vec<u8>,
}

/// A request (or size response) that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WitnessFormatError {
    #[error("first line must be \"old <size>\" with a decimal size without leading zeroes")]
    BadOldLine,
    #[error("consistency proof line {line}: {source}")]
    BadProofLine {
        line: usize,
        #[source]
        source: HashParseError,
    },
    #[error("more than {MAX_PROOF_LINES} consistency proof lines")]
    TooManyProofLines,
    #[error("no empty line before the checkpoint")]
    NoBlankLine,
    #[error("size response must be a decimal size and a newline")]
    BadSizeResponse,
}

impl AddCheckpointRequest {
    /// The request body bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = format!("old {}\n", self.old_size).into_bytes();
        for h in &self.consistency_proof {
            out.extend_from_slice(h.to_base64().as_bytes());
            out.push(b'\n');
        }
        out.push(b'\n');
        out.extend_from_slice(&self.checkpoint);
        out
    }

    /// Parses a request body; the checkpoint is returned unparsed (see [`verify_add_checkpoint`]).
    pub fn parse(body: &[u8]) -> Result<AddCheckpointRequest, WitnessFormatError> {
        let mut rest = body;
        let mut next_line = || -> Option<&[u8]> {
            let end = rest.iter().position(|&b| b == b'\n')?;
            let line = &rest[..end];
            rest = &rest[end + 1..];
            Some(line)
        };
        let old = next_line().ok_or(WitnessFormatError::BadOldLine)?;
        let old_size = std::str::from_utf8(old)
            .ok()
            .and_then(|l| l.strip_prefix("old "))
            .and_then(parse_canonical_u64)
            .ok_or(WitnessFormatError::BadOldLine)?;
        let mut consistency_proof = Vec::new();
        loop {
            let line = next_line().ok_or(WitnessFormatError::NoBlankLine)?;
            if line.is_empty() {
                break;
            }
            if consistency_proof.len() == MAX_PROOF_LINES {
                return Err(WitnessFormatError::TooManyProofLines);
            }
            let text = String::from_utf8_lossy(line);
            let h =
                Hash::parse_base64(&text).map_err(|source| WitnessFormatError::BadProofLine {
                    line: consistency_proof.len() + 2,
                    source,
                })?;
            consistency_proof.push(h);
        }
        Ok(AddCheckpointRequest {
            old_size,
            consistency_proof,
            checkpoint: rest.to_vec(),
        })
    }
}

/// The 409 response body: `<size>\n`.
pub fn format_size_response(size: u64) -> String {
    format!("{size}\n")
}

/// Parses a 409 response body.
pub fn parse_size_response(body: &[u8]) -> Result<u64, WitnessFormatError> {
    std::str::from_utf8(body)
        .ok()
        .and_then(|b| b.strip_suffix('\n'))
        .and_then(parse_canonical_u64)
        .ok_or(WitnessFormatError::BadSizeResponse)
}

/// The 200 response body: the cosignature lines.
pub fn format_cosignature_response(cosignatures: &[NoteSignature]) -> String {
    cosignatures.iter().map(NoteSignature::to_line).collect()
}

/// Why a witness refuses to cosign, with the HTTP status tlog-witness prescribes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WitnessRefusal {
    #[error("malformed request: {0}")]
    BadRequest(String),
    #[error("unknown log origin {0:?}")]
    UnknownOrigin(String),
    #[error("checkpoint is not validly signed by the log: {0}")]
    Forbidden(String),
    #[error("old size {old} is larger than the checkpoint size {size}")]
    OldSizeLarger { old: u64, size: u64 },
    #[error("old size does not match the latest cosigned size {latest}")]
    Conflict { latest: u64 },
    #[error("checkpoint is not consistent: {0}")]
    Inconsistent(String),
}

impl WitnessRefusal {
    /// The HTTP status code for this refusal (400, 403, 404, 409 or 422).
    pub fn status(&self) -> u16 {
        match self {
            WitnessRefusal::BadRequest(_) | WitnessRefusal::OldSizeLarger { .. } => 400,
            WitnessRefusal::Forbidden(_) => 403,
            WitnessRefusal::UnknownOrigin(_) => 404,
            WitnessRefusal::Conflict { .. } => 409,
            WitnessRefusal::Inconsistent(_) => 422,
        }
    }
}

/// The origin line of the request's checkpoint, so the caller can look up the log's keys and
/// its stored state before calling [`verify_add_checkpoint`].
pub fn request_origin(request: &AddCheckpointRequest) -> Option<String> {
    let text = std::str::from_utf8(&request.checkpoint).ok()?;
    text.split('\n').next().map(str::to_owned)
}

/// Everything a witness checks before cosigning, in the order tlog-witness lists them.
///
/// `log_keys` are the keys the witness trusts for the request's origin (empty: unknown origin,
/// 404). `latest` is the `(size, root)` it last cosigned for that origin, or `None`. On success
/// the caller must atomically replace its stored state with the returned checkpoint's size and
/// root (only if it still equals `latest`), then cosign the checkpoint's note text.
pub fn verify_add_checkpoint(
    request: &AddCheckpointRequest,
    log_keys: &[&dyn NoteVerifier],
    latest: Option<(u64, Hash)>,
) -> Result<(Checkpoint, OpenedNote), WitnessRefusal> {
    let origin = request_origin(request)
        .ok_or_else(|| WitnessRefusal::BadRequest("checkpoint is not UTF-8".into()))?;
    if log_keys.is_empty() {
        return Err(WitnessRefusal::UnknownOrigin(origin));
    }
    let opened = open(&request.checkpoint, log_keys).map_err(|e| match e {
        NoteError::NoVerifiedSignature
        | NoteError::InvalidSignature { .. }
        | NoteError::AmbiguousKey { .. } => WitnessRefusal::Forbidden(e.to_string()),
        // Not a note at all: a malformed request rather than a signature problem.
        other => WitnessRefusal::BadRequest(other.to_string()),
    })?;
    let checkpoint =
        Checkpoint::parse(&opened.text).map_err(|e| WitnessRefusal::BadRequest(e.to_string()))?;
    if request.old_size > checkpoint.size {
        return Err(WitnessRefusal::OldSizeLarger {
            old: request.old_size,
            size: checkpoint.size,
        });
    }
    let (latest_size, latest_root) = latest.unwrap_or((0, EMPTY_ROOT));
    if request.old_size != latest_size {
        return Err(WitnessRefusal::Conflict {
            latest: latest_size,
        });
    }
    if checkpoint.size == 0 && checkpoint.root != EMPTY_ROOT {
        return Err(WitnessRefusal::Inconsistent(
            "a checkpoint of size 0 must have the empty tree's root".into(),
        ));
    }
    verify_consistency(
        latest_size,
        checkpoint.size,
        &latest_root,
        &checkpoint.root,
        &request.consistency_proof,
    )
    .map_err(|e: ProofError| WitnessRefusal::Inconsistent(e.to_string()))?;
    Ok((checkpoint, opened))
}
