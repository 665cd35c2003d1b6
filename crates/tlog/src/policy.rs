//! C2SP tlog-policy (<https://c2sp.org/tlog-policy>): which logs and witnesses are trusted, and
//! which sets of witness cosignatures make a checkpoint trustworthy (the quorum).
//!
//! ```text
//! log <vkey> [<url>]
//! witness <name> <vkey> [<url>]
//! group <name> all|any|<k> <name>...
//! quorum <name>|none
//! ```
//!
//! Lines are separated by `\n`, items by spaces or tabs; blank lines and `#` comments are
//! ignored. Names must be defined before they are used, so groups cannot be circular. A log's
//! vkey must be an Ed25519 note key (type 0x01) named like the log's origin; a witness's must be
//! an Ed25519 cosignature key (type 0x04, or a type 0x01 vkey taken as the witness's
//! cosigning key, as transparency-dev's witnesses publish them). One difference from the spec, stated in
//! docs/transparency.md: names must be UTF-8 (the spec allows any high-bit octets).

use std::collections::HashSet;

use crate::checkpoint::{Checkpoint, CheckpointError};
use crate::cosignature::CosignatureVerifier;
use crate::note::{
    Ed25519Verifier, KeyError, Note, NoteError, NoteVerifier, OpenedNote, VerifierKey, open,
};

/// A trusted log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyLog {
    pub key: Ed25519Verifier,
    pub url: Option<String>,
}

/// A trusted witness, known in the policy by `name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyWitness {
    pub name: String,
    pub key: CosignatureVerifier,
    pub url: Option<String>,
}

/// A group member: a witness or an earlier group, by position in [`Policy`]'s lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Member {
    Witness(usize),
    Group(usize),
}

/// `group <name> <k> <members>`: satisfied when at least `threshold` members are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyGroup {
    pub name: String,
    pub threshold: usize,
    pub members: Vec<Member>,
}

/// The quorum line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quorum {
    /// `quorum none`: no cosignature required.
    None,
    Member(Member),
}

/// A parsed policy file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub logs: Vec<PolicyLog>,
    pub witnesses: Vec<PolicyWitness>,
    pub groups: Vec<PolicyGroup>,
    pub quorum: Quorum,
}

/// A policy file that does not parse, naming its (1-based) line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("line {line}: not UTF-8")]
    NotUtf8 { line: usize },
    #[error("line {line}: control character other than tab")]
    ControlCharacter { line: usize },
    #[error("line {line}: unknown keyword {word:?} (want log, witness, group or quorum)")]
    UnknownKeyword { line: usize, word: String },
    #[error("line {line}: wrong number of items for {keyword:?}")]
    WrongArity { line: usize, keyword: &'static str },
    #[error("line {line}: bad key: {source}")]
    BadKey {
        line: usize,
        #[source]
        source: KeyError,
    },
    #[error("line {line}: a {role} key must have signature type {want}")]
    WrongKeyType {
        line: usize,
        role: &'static str,
        /// The types taken, as text (`0x01`; `0x04 or 0x06`).
        want: &'static str,
    },
    #[error("line {line}: this public key is already listed")]
    DuplicateKey { line: usize },
    #[error("line {line}: name {name:?} is already defined")]
    DuplicateName { line: usize, name: String },
    #[error("line {line}: name {name:?} is not defined on an earlier line")]
    UndefinedName { line: usize, name: String },
    #[error("line {line}: \"none\" cannot be defined or used as a group member")]
    ReservedName { line: usize },
    #[error("line {line}: {name:?} is already a member of a group")]
    DuplicateMember { line: usize, name: String },
    #[error("line {line}: threshold must be all, any or a decimal 1..=members")]
    BadThreshold { line: usize },
    #[error("line {line}: more than one quorum line")]
    SecondQuorum { line: usize },
    #[error("policy has no quorum line")]
    NoQuorum,
}

/// Why a checkpoint does not satisfy a policy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyCheckError {
    #[error("checkpoint note: {0}")]
    Note(#[from] NoteError),
    #[error("checkpoint: {0}")]
    Checkpoint(#[from] CheckpointError),
    #[error("no log in the policy is named {0:?}")]
    UnknownLog(String),
    #[error("checkpoint has no valid signature by its log")]
    NoLogSignature,
    #[error("cosignatures by {have:?} do not meet the quorum")]
    QuorumNotMet { have: Vec<String> },
}

/// A checkpoint that is signed by a policy log and meets the policy's quorum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedCheckpoint {
    pub checkpoint: Checkpoint,
    pub note: OpenedNote,
    /// Policy names of the witnesses whose cosignatures verified.
    pub witnesses: Vec<String>,
}

fn is_space(c: char) -> bool {
    c == ' ' || c == '\t'
}

impl Policy {
    /// Parses a policy file.
    pub fn parse(data: &[u8]) -> Result<Policy, PolicyError> {
        let mut logs: Vec<PolicyLog> = Vec::new();
        let mut witnesses: Vec<PolicyWitness> = Vec::new();
        let mut groups: Vec<PolicyGroup> = Vec::new();
        let mut quorum = None;
        // tlog-policy: "Duplicate logs, i.e., multiple log lines with the same public key, are
        // not allowed", and the same of witnesses; a key may be both a log's and a witness's.
        let mut log_keys: HashSet<Vec<u8>> = HashSet::new();
        let mut witness_keys: HashSet<Vec<u8>> = HashSet::new();
        // A name may be a group member once in the whole file, so no witness counts twice.
        let mut used_members: HashSet<Member> = HashSet::new();

        let body = data.strip_suffix(b"\n").unwrap_or(data);
        for (i, raw) in body.split(|&b| b == b'\n').enumerate() {
            let line = i + 1;
            if raw.iter().any(|&b| b < 0x20 && b != b'\t' || b == 0x7f) {
                return Err(PolicyError::ControlCharacter { line });
            }
            let text = std::str::from_utf8(raw).map_err(|_| PolicyError::NotUtf8 { line })?;
            let items: Vec<&str> = text.split(is_space).filter(|s| !s.is_empty()).collect();
            let Some(&keyword) = items.first() else {
                continue;
            };
            if keyword.starts_with('#') {
                continue;
            }
            let lookup = |name: &str| -> Option<Member> {
                if let Some(i) = witnesses.iter().position(|w| w.name == name) {
                    return Some(Member::Witness(i));
                }
                groups
                    .iter()
                    .position(|g| g.name == name)
                    .map(Member::Group)
            };
            let define = |name: &str| -> Result<(), PolicyError> {
                if name == "none" {
                    return Err(PolicyError::ReservedName { line });
                }
                if lookup(name).is_some() {
                    return Err(PolicyError::DuplicateName {
                        line,
                        name: name.to_owned(),
                    });
                }
                Ok(())
            };
            let parse_key = |vkey: &str| {
                VerifierKey::parse(vkey).map_err(|source| PolicyError::BadKey { line, source })
            };
            match keyword {
                "log" => {
                    if !(2..=3).contains(&items.len()) {
                        return Err(PolicyError::WrongArity {
                            line,
                            keyword: "log",
                        });
                    }
                    let VerifierKey::Ed25519(key) = parse_key(items[1])? else {
                        return Err(PolicyError::WrongKeyType {
                            line,
                            role: "log",
                            want: "0x01",
                        });
                    };
                    if !log_keys.insert(key.public_key().to_vec()) {
                        return Err(PolicyError::DuplicateKey { line });
                    }
                    logs.push(PolicyLog {
                        key,
                        url: items.get(2).map(|s| (*s).to_owned()),
                    });
                }
                "witness" => {
                    if !(3..=4).contains(&items.len()) {
                        return Err(PolicyError::WrongArity {
                            line,
                            keyword: "witness",
                        });
                    }
                    define(items[1])?;
                    let key =
                        CosignatureVerifier::parse(items[2]).map_err(|source| match source {
                            KeyError::WrongAlgorithm { .. } => PolicyError::WrongKeyType {
                                line,
                                role: "witness",
                                want: "0x04 or 0x06 (ML-DSA-44)",
                            },
                            source => PolicyError::BadKey { line, source },
                        })?;
                    if !witness_keys.insert(key.public_key()) {
                        return Err(PolicyError::DuplicateKey { line });
                    }
                    witnesses.push(PolicyWitness {
                        name: items[1].to_owned(),
                        key,
                        url: items.get(3).map(|s| (*s).to_owned()),
                    });
                }
                "group" => {
                    if items.len() < 4 {
                        return Err(PolicyError::WrongArity {
                            line,
                            keyword: "group",
                        });
                    }
                    define(items[1])?;
                    let mut members = Vec::new();
                    for &name in &items[3..] {
                        if name == "none" {
                            return Err(PolicyError::ReservedName { line });
                        }
                        let member = lookup(name).ok_or_else(|| PolicyError::UndefinedName {
                            line,
                            name: name.to_owned(),
                        })?;
                        if members.contains(&member) || used_members.contains(&member) {
                            return Err(PolicyError::DuplicateMember {
                                line,
                                name: name.to_owned(),
                            });
                        }
                        members.push(member);
                    }
                    used_members.extend(members.iter().copied());
                    let n = members.len();
                    let threshold = match items[2] {
                        "all" => n,
                        "any" => 1,
                        k => crate::checkpoint::parse_canonical_u64(k)
                            .and_then(|k| usize::try_from(k).ok())
                            .filter(|k| (1..=n).contains(k))
                            .ok_or(PolicyError::BadThreshold { line })?,
                    };
                    groups.push(PolicyGroup {
                        name: items[1].to_owned(),
                        threshold,
                        members,
                    });
                }
                "quorum" => {
                    if items.len() != 2 {
                        return Err(PolicyError::WrongArity {
                            line,
                            keyword: "quorum",
                        });
                    }
                    if quorum.is_some() {
                        return Err(PolicyError::SecondQuorum { line });
                    }
                    quorum = Some(if items[1] == "none" {
                        Quorum::None
                    } else {
                        Quorum::Member(lookup(items[1]).ok_or_else(|| {
                            PolicyError::UndefinedName {
                                line,
                                name: items[1].to_owned(),
                            }
                        })?)
                    });
                }
                other => {
                    return Err(PolicyError::UnknownKeyword {
                        line,
                        word: other.to_owned(),
                    });
                }
            }
        }
        Ok(Policy {
            logs,
            witnesses,
            groups,
            quorum: quorum.ok_or(PolicyError::NoQuorum)?,
        })
    }

    fn member_met(&self, member: Member, cosigned: &[bool]) -> bool {
        match member {
            Member::Witness(i) => cosigned.get(i).copied().unwrap_or(false),
            Member::Group(g) => self.groups.get(g).is_some_and(|group| {
                let met = group
                    .members
                    .iter()
                    .filter(|&&m| self.member_met(m, cosigned))
                    .count();
                met >= group.threshold
            }),
        }
    }

    /// True if cosignatures by the witnesses with these policy names meet the quorum.
    pub fn quorum_met<S: AsRef<str>>(&self, witness_names: &[S]) -> bool {
        let cosigned: Vec<bool> = self
            .witnesses
            .iter()
            .map(|w| witness_names.iter().any(|n| n.as_ref() == w.name))
            .collect();
        match self.quorum {
            Quorum::None => true,
            Quorum::Member(m) => self.member_met(m, &cosigned),
        }
    }

    /// Verifies a signed checkpoint note against this policy: signed by the policy log named
    /// like its origin, and cosigned by witnesses meeting the quorum. As signed-note requires,
    /// a signature or cosignature by a listed key that does not verify rejects the note.
    pub fn verify_checkpoint(&self, note: &[u8]) -> Result<VerifiedCheckpoint, PolicyCheckError> {
        let parsed = Note::parse(note)?;
        let checkpoint = Checkpoint::parse(&parsed.text)?;
        let logs: Vec<&PolicyLog> = self
            .logs
            .iter()
            .filter(|l| l.key.name() == checkpoint.origin)
            .collect();
        if logs.is_empty() {
            return Err(PolicyCheckError::UnknownLog(checkpoint.origin));
        }
        let mut known: Vec<&dyn NoteVerifier> = logs.iter().map(|l| &l.key as _).collect();
        known.extend(self.witnesses.iter().map(|w| &w.key as &dyn NoteVerifier));
        let opened = match open(note, &known) {
            Err(NoteError::NoVerifiedSignature) => return Err(PolicyCheckError::NoLogSignature),
            other => other?,
        };
        let signed_by = |v: &dyn NoteVerifier| {
            opened
                .verified
                .iter()
                .any(|s| s.name == v.name() && s.key_id == v.key_id())
        };
        if !logs.iter().any(|l| signed_by(&l.key)) {
            return Err(PolicyCheckError::NoLogSignature);
        }
        let witnesses: Vec<String> = self
            .witnesses
            .iter()
            .filter(|w| signed_by(&w.key))
            .map(|w| w.name.clone())
            .collect();
        if !self.quorum_met(&witnesses) {
            return Err(PolicyCheckError::QuorumNotMet { have: witnesses });
        }
        Ok(VerifiedCheckpoint {
            checkpoint,
            note: opened,
            witnesses,
        })
    }
}
