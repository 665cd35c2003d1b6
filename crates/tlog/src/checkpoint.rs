//! C2SP tlog-checkpoint (<https://c2sp.org/tlog-checkpoint>): the note text a log signs.
//!
//! ```text
//! <origin>\n
//! <tree size, decimal, no leading zeroes>\n
//! <root hash, standard base64>\n
//! [<extension line>\n]...
//! ```
//!
//! Parsing is strict, because a checkpoint is compared byte for byte by witnesses and monitors:
//! any spelling other than the one [`Checkpoint::to_text`] produces is refused, so there is only
//! one text per (origin, size, root, extensions).

use crate::hash::{Hash, HashParseError};
use crate::note::OpenedNote;

/// A checkpoint body: what the log commits to at one tree size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The log's identity, e.g. `agentledger.example/log/<project>`.
    pub origin: String,
    /// Number of leaves.
    pub size: u64,
    /// RFC 6962 root hash of those leaves.
    pub root: Hash,
    /// Optional opaque lines after the root (non-empty; not recommended by the spec).
    pub extensions: Vec<String>,
}

/// A checkpoint text that does not parse, naming the line at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    #[error("checkpoint text must end with a newline")]
    NoFinalNewline,
    #[error("checkpoint has {0} lines; it needs origin, size and root hash")]
    TooFewLines(usize),
    #[error("checkpoint origin line is empty")]
    EmptyOrigin,
    #[error("checkpoint origin {0:?} contains a newline or control character")]
    BadOrigin(String),
    #[error("checkpoint line {line} contains a control character")]
    ControlCharacter { line: usize },
    #[error("checkpoint size line {0:?} is not a decimal number without leading zeroes")]
    BadSize(String),
    #[error("checkpoint root hash line: {0}")]
    BadRoot(#[from] HashParseError),
    #[error("checkpoint extension line {line} is empty")]
    EmptyExtension { line: usize },
}

/// Parses a decimal with no sign, no leading zeroes (except `0` itself), fitting in u64.
pub(crate) fn parse_canonical_u64(s: &str) -> Option<u64> {
    let ok =
        !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && (s == "0" || !s.starts_with('0'));
    if ok { s.parse().ok() } else { None }
}

/// What signed-note forbids in a note's text besides newline: "ASCII control characters (those
/// below U+0020)". DEL and the C1 controls are not among them.
fn is_note_control(c: char) -> bool {
    c < ' '
}

impl Checkpoint {
    /// A checkpoint without extension lines, refusing an origin that would not survive
    /// [`Checkpoint::to_text`] intact (empty, or holding a newline or control character).
    /// The fields are public for reading; build checkpoints to sign with this.
    pub fn new(origin: &str, size: u64, root: Hash) -> Result<Checkpoint, CheckpointError> {
        if origin.is_empty() {
            return Err(CheckpointError::EmptyOrigin);
        }
        if origin.chars().any(is_note_control) {
            return Err(CheckpointError::BadOrigin(origin.to_owned()));
        }
        Ok(Checkpoint {
            origin: origin.to_owned(),
            size,
            root,
            extensions: Vec::new(),
        })
    }

    /// The note text: three lines plus extensions, each ending in `\n`.
    pub fn to_text(&self) -> String {
        let mut text = format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            self.root.to_base64()
        );
        for ext in &self.extensions {
            text.push_str(ext);
            text.push('\n');
        }
        text
    }

    /// Parses a checkpoint note text (the text of a signed note, without signatures).
    pub fn parse(text: &str) -> Result<Checkpoint, CheckpointError> {
        let body = text
            .strip_suffix('\n')
            .ok_or(CheckpointError::NoFinalNewline)?;
        let lines: Vec<&str> = body.split('\n').collect();
        if lines.len() < 3 {
            return Err(CheckpointError::TooFewLines(lines.len()));
        }
        if let Some(line) = lines.iter().position(|l| l.chars().any(is_note_control)) {
            return Err(CheckpointError::ControlCharacter { line: line + 1 });
        }
        if lines[0].is_empty() {
            return Err(CheckpointError::EmptyOrigin);
        }
        let size = parse_canonical_u64(lines[1])
            .ok_or_else(|| CheckpointError::BadSize(lines[1].into()))?;
        let root = Hash::parse_base64(lines[2])?;
        let mut extensions = Vec::new();
        for (i, ext) in lines[3..].iter().enumerate() {
            if ext.is_empty() {
                return Err(CheckpointError::EmptyExtension { line: i + 4 });
            }
            extensions.push((*ext).to_owned());
        }
        Ok(Checkpoint {
            origin: lines[0].to_owned(),
            size,
            root,
            extensions,
        })
    }

    /// The checkpoint inside a verified note.
    pub fn from_opened(note: &OpenedNote) -> Result<Checkpoint, CheckpointError> {
        Checkpoint::parse(&note.text)
    }
}

impl std::fmt::Display for Checkpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_text())
    }
}
