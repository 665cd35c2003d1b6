//! The canonical event taxonomy, severities and the dialects events arrive through.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

macro_rules! string_enum {
    ($(#[$doc:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub enum $name {
            $(#[serde(rename = $text)] $variant),+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl FromStr for $name {
            type Err = UnknownName;
            fn from_str(s: &str) -> Result<Self, UnknownName> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err(UnknownName {
                        what: stringify!($name),
                        allowed: &[$($text),+],
                    }),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

/// A name that is not one of an enum's allowed values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("must be one of: {}", allowed.join(", "))]
pub struct UnknownName {
    pub what: &'static str,
    pub allowed: &'static [&'static str],
}

string_enum!(
    /// What happened, in the canonical taxonomy every dialect maps into.
    Kind {
        SessionStarted => "session_started",
        SessionEnded => "session_ended",
        UserInput => "user_input",
        LlmCall => "llm_call",
        LlmResponse => "llm_response",
        ToolCall => "tool_call",
        ToolResponse => "tool_response",
        ToolError => "tool_error",
        Decision => "decision",
        Memory => "memory",
        Environment => "environment",
        System => "system",
        Error => "error",
        Retrieval => "retrieval",
        Embedding => "embedding",
        ApprovalRequested => "approval_requested",
        ApprovalGranted => "approval_granted",
        ApprovalDenied => "approval_denied",
        ApprovalExpired => "approval_expired",
        FormSubmitted => "form_submitted",
        FormCompleted => "form_completed",
        FormExpired => "form_expired",
        CostTracked => "cost_tracked",
        AlertTriggered => "alert_triggered",
        AlertResolved => "alert_resolved",
        Custom => "custom",
    }
);

string_enum!(
    /// How serious an event is. Ordered: debug < info < warn < error < critical.
    Severity {
        Debug => "debug",
        Info => "info",
        Warn => "warn",
        Error => "error",
        Critical => "critical",
    }
);

string_enum!(
    /// The API an event arrived through.
    Dialect {
        Native => "native",
        Fabraix => "fabraix",
        AgentLens => "agentlens",
        Secureagentics => "secureagentics",
        Realm => "realm",
        Otlp => "otlp",
    }
);

impl Default for Severity {
    fn default() -> Self {
        Severity::Info
    }
}

impl Severity {
    /// Stable small integer used for storage and range filters.
    pub fn rank(self) -> u8 {
        self as u8
    }
    pub fn from_rank(r: u8) -> Option<Self> {
        Self::ALL.get(r as usize).copied()
    }
}

impl Kind {
    pub fn code(self) -> u8 {
        self as u8
    }
    pub fn from_code(c: u8) -> Option<Self> {
        Self::ALL.get(c as usize).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_roundtrip() {
        assert_eq!(Kind::ALL.len(), 26);
        for k in Kind::ALL {
            assert_eq!(k.as_str().parse::<Kind>().unwrap(), *k);
            assert_eq!(Kind::from_code(k.code()), Some(*k));
        }
        for s in Severity::ALL {
            assert_eq!(Severity::from_rank(s.rank()), Some(*s));
        }
        assert!(Severity::Warn > Severity::Info);
    }

    #[test]
    fn unknown_names_list_the_allowed_ones() {
        let e = "toolcall".parse::<Kind>().unwrap_err();
        assert!(e.to_string().contains("tool_call"));
    }
}
