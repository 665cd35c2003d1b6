//! Policy verdicts as the ledger stores them. The policy crate produces them;
//! the store keeps the serialised text (covered by the event hash) and the
//! decision (for filters); every API renders them.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

pub use crate::kind::Decision;

/// One detector match. Never holds the matched text itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    /// `secrets`, `pii` or `injection`.
    pub detector: String,
    /// The rule that matched, e.g. `aws_access_key_id`.
    pub rule: String,
    /// RFC 6901 pointer to the string, from the event: `/payload/arguments/query`.
    pub json_pointer: String,
    /// Byte offsets of the match within that string (as received).
    pub start: usize,
    pub end: usize,
    /// 0..1: how sure the rule is (checksums and context words raise it).
    pub confidence: f64,
}

/// What the policy checkpoint decided about one event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    pub decision: Decision,
    /// Every policy that decided it (deny: the forbids; flag: the flags; allow:
    /// the permits that matched, if any).
    pub policies: Vec<String>,
    /// The `@reason` of each policy listed, and reasons of the engine itself
    /// (`evaluation_budget_exceeded`, `policy_error: …`).
    pub reasons: Vec<String>,
    pub findings: Vec<Finding>,
}

impl Verdict {
    pub fn allowed(&self) -> bool {
        self.decision != Decision::Deny
    }
}

/// The decision of a stored verdict's text, reading nothing else of it (no
/// allocation: verification does this for every event).
pub fn decision_of(verdict_text: &str) -> Option<Decision> {
    #[derive(Deserialize)]
    struct OnlyDecision {
        decision: Decision,
    }
    serde_json::from_str::<OnlyDecision>(verdict_text)
        .ok()
        .map(|d| d.decision)
}

/// A verdict attached to an event on its way into the ledger.
#[derive(Debug, Clone)]
pub struct Judgement {
    pub decision: Decision,
    /// The verdict as stored and hashed (JSON text).
    pub verdict: Box<RawValue>,
    /// When redaction changed the payload / metadata: the HMAC-SHA256 of the
    /// bytes as received under `redaction_salt` (envelope v3). Never a plain
    /// digest: a redacted SSN or card number could be recovered from one by
    /// trying every value.
    pub original_payload_sha256: Option<[u8; 32]>,
    pub original_metadata_sha256: Option<[u8; 32]>,
    /// The random key of those commitments, stored apart from the event.
    pub redaction_salt: Option<[u8; 32]>,
}

impl Judgement {
    pub fn new(v: &Verdict) -> Judgement {
        // A struct of strings and numbers always serialises.
        let text = serde_json::to_string(v).unwrap_or_else(|_| "{}".into());
        Judgement {
            decision: v.decision,
            verdict: RawValue::from_string(text).unwrap_or_else(|_| crate::event::empty_object()),
            original_payload_sha256: None,
            original_metadata_sha256: None,
            redaction_salt: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_decision_is_read_from_stored_verdict_text() {
        let v = Verdict {
            decision: Decision::Deny,
            policies: vec!["p".into()],
            reasons: vec![],
            findings: vec![],
        };
        let j = Judgement::new(&v);
        assert_eq!(decision_of(j.verdict.get()), Some(Decision::Deny));
        assert_eq!(
            decision_of(r#"{"policies":[],"decision":"flag"}"#),
            Some(Decision::Flag)
        );
        assert_eq!(decision_of(r#"{"decision":"maybe"}"#), None);
        assert_eq!(decision_of("{}"), None);
    }
}
