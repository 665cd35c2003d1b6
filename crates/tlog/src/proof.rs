//! C2SP tlog-proof (<https://c2sp.org/tlog-proof>): an offline-verifiable inclusion proof.
//!
//! ```text
//! c2sp.org/tlog-proof@v1\n
//! [extra <base64 opaque data>\n]
//! index <leaf index>\n
//! <base64 inclusion proof hash>\n ...   (leaf's sibling first)
//! \n
//! <signed checkpoint note, verbatim, cosignatures included>
//! ```
//!
//! Consistency proofs have no C2SP text format of their own; we use the tlog-witness
//! add-checkpoint body ([`crate::witness::AddCheckpointRequest`]) for them.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use crate::checkpoint::{Checkpoint, CheckpointError, parse_canonical_u64};
use crate::hash::{Hash, HashParseError};
use crate::note::{NoteError, NoteVerifier, OpenedNote, open};
use crate::tree::{ProofError, verify_inclusion};

/// First line of every tlog-proof.
pub const TLOG_PROOF_HEADER: &str = "c2sp.org/tlog-proof@v1";

/// A tlog-proof: entry index, inclusion proof and the checkpoint it proves against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlogProof {
    /// Opaque, unauthenticated application data (`extra` line), if any.
    pub extra: Option<Vec<u8>>,
    pub index: u64,
    pub inclusion_proof: Vec<Hash>,
    /// The signed checkpoint note, verbatim.
    pub checkpoint: Vec<u8>,
}

/// A tlog-proof that does not parse or verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TlogProofError {
    #[error("first line must be {TLOG_PROOF_HEADER:?}")]
    BadHeader,
    #[error("extra line is not valid base64")]
    BadExtra,
    #[error("index line must be \"index <n>\" with no leading zeroes")]
    BadIndex,
    #[error("inclusion proof line {line}: {source}")]
    BadProofLine {
        line: usize,
        #[source]
        source: HashParseError,
    },
    #[error("no empty line before the checkpoint")]
    NoBlankLine,
    #[error("checkpoint note: {0}")]
    Note(#[from] NoteError),
    #[error("checkpoint: {0}")]
    Checkpoint(#[from] CheckpointError),
    #[error("inclusion proof: {0}")]
    Proof(#[from] ProofError),
}

impl TlogProof {
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = format!("{TLOG_PROOF_HEADER}\n");
        if let Some(extra) = &self.extra {
            out.push_str(&format!("extra {}\n", STANDARD.encode(extra)));
        }
        out.push_str(&format!("index {}\n", self.index));
        for h in &self.inclusion_proof {
            out.push_str(&h.to_base64());
            out.push('\n');
        }
        out.push('\n');
        let mut out = out.into_bytes();
        out.extend_from_slice(&self.checkpoint);
        out
    }

    pub fn parse(data: &[u8]) -> Result<TlogProof, TlogProofError> {
        let mut rest = data;
        let mut next_line = || -> Option<&[u8]> {
            let end = rest.iter().position(|&b| b == b'\n')?;
            let line = &rest[..end];
            rest = &rest[end + 1..];
            Some(line)
        };
        if next_line() != Some(TLOG_PROOF_HEADER.as_bytes()) {
            return Err(TlogProofError::BadHeader);
        }
        let mut line = next_line().ok_or(TlogProofError::BadIndex)?;
        let mut extra = None;
        if let Some(b64) = line.strip_prefix(b"extra ") {
            extra = Some(STANDARD.decode(b64).map_err(|_| TlogProofError::BadExtra)?);
            line = next_line().ok_or(TlogProofError::BadIndex)?;
        }
        let index = std::str::from_utf8(line)
            .ok()
            .and_then(|l| l.strip_prefix("index "))
            .and_then(parse_canonical_u64)
            .ok_or(TlogProofError::BadIndex)?;
        let first_proof_line = if extra.is_some() { 4 } else { 3 };
        let mut inclusion_proof = Vec::new();
        loop {
            let line = next_line().ok_or(TlogProofError::NoBlankLine)?;
            if line.is_empty() {
                break;
            }
            let h = Hash::parse_base64(&String::from_utf8_lossy(line)).map_err(|source| {
                TlogProofError::BadProofLine {
                    line: first_proof_line + inclusion_proof.len(),
                    source,
                }
            })?;
            inclusion_proof.push(h);
        }
        Ok(TlogProof {
            extra,
            index,
            inclusion_proof,
            checkpoint: rest.to_vec(),
        })
    }

    /// Verifies the checkpoint's signature by one of `log_keys` and that `leaf` (the entry's
    /// leaf hash, computed by the caller from the entry) is at `index` under its root. Witness
    /// cosignatures are judged separately, by [`crate::policy::Policy::verify_checkpoint`].
    pub fn verify(
        &self,
        leaf: &Hash,
        log_keys: &[&dyn NoteVerifier],
    ) -> Result<(Checkpoint, OpenedNote), TlogProofError> {
        let opened = open(&self.checkpoint, log_keys)?;
        let checkpoint = Checkpoint::parse(&opened.text)?;
        verify_inclusion(
            leaf,
            self.index,
            checkpoint.size,
            &self.inclusion_proof,
            &checkpoint.root,
        )?;
        Ok((checkpoint, opened))
    }
}
