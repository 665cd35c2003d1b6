//! Per-kind payload rules: the typed payloads of the AgentLens document (seed 002),
//! applied to every dialect's events of those kinds.
//!
//! Validation looks only at the top-level members of the payload object and the
//! first byte of each member's raw JSON, so it costs one shallow parse and no
//! allocation of the member values.

use std::borrow::Cow;
use std::collections::HashMap;

use serde_json::value::RawValue;

use crate::Kind;

/// The JSON type a field must have. `Any` accepts every value, including null.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ty {
    Str,
    Num,
    Obj,
    Arr,
    Bool,
    Any,
}

impl Ty {
    fn name(self) -> &'static str {
        match self {
            Ty::Str => "a string",
            Ty::Num => "a number",
            Ty::Obj => "an object",
            Ty::Arr => "an array",
            Ty::Bool => "a boolean",
            Ty::Any => "any value",
        }
    }

    fn accepts(self, raw: &RawValue) -> bool {
        let first = raw.get().as_bytes().first().copied().unwrap_or(b' ');
        match self {
            Ty::Any => true,
            Ty::Str => first == b'"',
            Ty::Num => first == b'-' || first.is_ascii_digit(),
            Ty::Obj => first == b'{',
            Ty::Arr => first == b'[',
            Ty::Bool => first == b't' || first == b'f',
        }
    }
}

/// One field rule: name, type, required.
pub type Field = (&'static str, Ty, bool);

const R: bool = true;
const O: bool = false;

/// The documented fields of a kind's payload (empty for kinds the document does not type).
pub fn fields(kind: Kind) -> &'static [Field] {
    use Ty::*;
    match kind {
        Kind::SessionStarted => &[
            ("agentName", Str, O),
            ("agentVersion", Str, O),
            ("mcpClientInfo", Any, O),
            ("tags", Arr, O),
        ],
        Kind::SessionEnded => &[
            ("reason", Str, R),
            ("summary", Str, O),
            ("totalToolCalls", Num, O),
            ("totalDurationMs", Num, O),
        ],
        Kind::ToolCall => &[
            ("toolName", Str, R),
            ("callId", Str, R),
            ("arguments", Any, R),
            ("serverName", Str, O),
        ],
        Kind::ToolResponse => &[
            ("callId", Str, R),
            ("toolName", Str, R),
            ("result", Any, R),
            ("durationMs", Num, R),
        ],
        Kind::ToolError => &[
            ("callId", Str, R),
            ("toolName", Str, R),
            ("error", Any, R),
            ("errorCode", Any, O),
            ("durationMs", Num, R),
        ],
        Kind::ApprovalRequested => &[
            ("requestId", Str, R),
            ("action", Str, R),
            ("params", Any, R),
            ("urgency", Str, R),
        ],
        Kind::ApprovalGranted | Kind::ApprovalDenied | Kind::ApprovalExpired => &[
            ("requestId", Str, R),
            ("action", Str, R),
            ("decidedBy", Str, R),
            ("reason", Str, O),
        ],
        Kind::FormSubmitted => &[
            ("submissionId", Str, R),
            ("formId", Str, R),
            ("formName", Str, O),
            ("fieldCount", Num, R),
        ],
        Kind::FormCompleted => &[
            ("submissionId", Str, R),
            ("formId", Str, R),
            ("completedBy", Str, R),
            ("durationMs", Num, R),
        ],
        Kind::FormExpired => &[
            ("submissionId", Str, R),
            ("formId", Str, R),
            ("expiredAfterMs", Num, R),
        ],
        Kind::LlmCall => &[
            ("callId", Str, R),
            ("provider", Str, R),
            ("model", Str, R),
            ("messages", Arr, R),
            ("systemPrompt", Str, O),
            ("parameters", Obj, O),
            ("tools", Arr, O),
            ("redacted", Bool, O),
        ],
        Kind::LlmResponse => &[
            ("callId", Str, R),
            ("provider", Str, R),
            ("model", Str, R),
            // A completion may be null when the model answered only with tool calls.
            ("completion", Any, R),
            ("toolCalls", Arr, O),
            ("finishReason", Str, R),
            ("usage", Obj, R),
            ("costUsd", Num, R),
            ("latencyMs", Num, R),
            ("redacted", Bool, O),
        ],
        Kind::CostTracked => &[
            ("provider", Str, R),
            ("model", Str, R),
            ("inputTokens", Num, R),
            ("outputTokens", Num, R),
            ("totalTokens", Num, R),
            ("costUsd", Num, R),
            ("trigger", Str, O),
        ],
        Kind::AlertTriggered => &[
            ("alertRuleId", Str, R),
            ("alertName", Str, R),
            ("condition", Any, R),
            ("currentValue", Num, R),
            ("threshold", Num, R),
            ("message", Str, R),
        ],
        Kind::AlertResolved => &[
            ("alertRuleId", Str, R),
            ("alertName", Str, R),
            ("resolvedBy", Str, O),
        ],
        Kind::Custom => &[("type", Str, R), ("data", Any, R)],
        _ => &[],
    }
}

/// Allowed values of `session_ended.reason`.
pub const SESSION_END_REASONS: &[&str] = &["completed", "error", "timeout", "manual"];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    #[error("payload must be a JSON object")]
    NotAnObject,
    #[error("payload.{field} is required for kind {kind}")]
    Missing { kind: Kind, field: &'static str },
    #[error("payload.{field} must be {expected}")]
    WrongType {
        field: &'static str,
        expected: &'static str,
    },
    #[error("payload.reason must be one of: {}", SESSION_END_REASONS.join(", "))]
    BadReason,
}

impl PayloadError {
    /// The offending field, relative to the payload (`None` for the payload itself).
    pub fn field(&self) -> Option<&'static str> {
        match self {
            PayloadError::NotAnObject => None,
            PayloadError::Missing { field, .. } | PayloadError::WrongType { field, .. } => {
                Some(field)
            }
            PayloadError::BadReason => Some("reason"),
        }
    }
}

/// Check that `payload` is a JSON object carrying the documented fields of `kind`.
/// Optional fields may be null; required fields must be present and typed (null
/// is accepted only where the rule's type is `Any`).
pub fn validate(kind: Kind, payload: &RawValue) -> Result<(), PayloadError> {
    if !payload.get().starts_with('{') {
        return Err(PayloadError::NotAnObject);
    }
    let rules = fields(kind);
    if rules.is_empty() {
        return Ok(());
    }
    let members: HashMap<Cow<'_, str>, &RawValue> =
        serde_json::from_str(payload.get()).map_err(|_| PayloadError::NotAnObject)?;
    for &(name, ty, required) in rules {
        match members.get(name) {
            None if required => return Err(PayloadError::Missing { kind, field: name }),
            None => {}
            Some(raw) if !required && raw.get() == "null" => {}
            Some(raw) if !ty.accepts(raw) => {
                return Err(PayloadError::WrongType {
                    field: name,
                    expected: ty.name(),
                });
            }
            Some(_) => {}
        }
    }
    if kind == Kind::SessionEnded
        && let Some(raw) = members.get("reason")
    {
        let reason: Cow<'_, str> =
            serde_json::from_str(raw.get()).map_err(|_| PayloadError::BadReason)?;
        if !SESSION_END_REASONS.contains(&reason.as_ref()) {
            return Err(PayloadError::BadReason);
        }
    }
    Ok(())
}

/// The tool an event's payload names, across the dialects' payload shapes:
/// the first of `toolName`, `tool_name`, `tool` that is a string, else
/// `tool.name` (OTLP), else `name` for tool kinds. One definition for the
/// policy engine (what `resource.tool` is) and the store's rollups (the
/// overview's tool tally), so both name a tool alike.
pub fn tool_name(kind: Kind, p: &serde_json::Value) -> Option<&str> {
    use serde_json::Value;
    ["toolName", "tool_name", "tool"]
        .iter()
        .find_map(|k| p.get(*k).and_then(Value::as_str))
        .or_else(|| p.pointer("/tool/name").and_then(Value::as_str))
        .or_else(|| {
            matches!(kind, Kind::ToolCall | Kind::ToolResponse | Kind::ToolError)
                .then(|| p.get("name").and_then(Value::as_str))
                .flatten()
        })
}

/// [`tool_name`] of a payload's text, without building its whole tree: the
/// top-level members are split as raw text and only the few a tool name can
/// be in are read (the store's writer tallies tools for every tool call).
/// A member given twice counts as its last, as in a parsed tree.
pub fn tool_name_in(kind: Kind, payload: &str) -> Option<String> {
    type Members<'a> = HashMap<Cow<'a, str>, &'a RawValue>;
    let top: Members<'_> = serde_json::from_str(payload).ok()?;
    let text = |k: &str| {
        top.get(k)
            .and_then(|v| serde_json::from_str::<String>(v.get()).ok())
    };
    text("toolName")
        .or_else(|| text("tool_name"))
        .or_else(|| text("tool"))
        .or_else(|| {
            let tool: Members<'_> = serde_json::from_str(top.get("tool")?.get()).ok()?;
            serde_json::from_str::<String>(tool.get("name")?.get()).ok()
        })
        .or_else(|| {
            matches!(kind, Kind::ToolCall | Kind::ToolResponse | Kind::ToolError)
                .then(|| text("name"))
                .flatten()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The text reader names the same tool as the tree reader.
    #[test]
    fn tool_name_in_agrees_with_tool_name() {
        let cases = [
            r#"{"toolName":"search","name":"x"}"#,
            r#"{"tool_name":"a\u0062c"}"#,
            r#"{"tool":"shell"}"#,
            r#"{"tool":{"name":"mail","arguments":{}}}"#,
            r#"{"tool":{"name":7},"name":"fallback"}"#,
            r#"{"name":"only-for-tool-kinds"}"#,
            r#"{"toolName":5,"tool_name":"second"}"#,
            r#"{"toolName":"first","toolName":"last"}"#,
            r#"{"other":{"toolName":"nested, not read"}}"#,
            r#"["not","an","object"]"#,
            r#"{}"#,
        ];
        for kind in [Kind::ToolCall, Kind::LlmCall] {
            for c in cases {
                let tree: serde_json::Value = serde_json::from_str(c).unwrap();
                assert_eq!(
                    tool_name_in(kind, c).as_deref(),
                    tool_name(kind, &tree),
                    "{kind:?} {c}"
                );
            }
        }
    }

    fn raw(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.to_owned()).unwrap()
    }

    #[test]
    fn documented_tool_call_passes() {
        let p = raw(r#"{"toolName":"search","callId":"c1","arguments":{"query":"test"}}"#);
        assert_eq!(validate(Kind::ToolCall, &p), Ok(()));
    }

    #[test]
    fn missing_field_is_named() {
        let p = raw(r#"{"toolName":"search","arguments":{}}"#);
        let e = validate(Kind::ToolCall, &p).unwrap_err();
        assert_eq!(e.field(), Some("callId"));
        assert_eq!(
            e.to_string(),
            "payload.callId is required for kind tool_call"
        );
    }

    #[test]
    fn wrong_type_is_named() {
        let p = raw(r#"{"toolName":7,"callId":"c","arguments":{}}"#);
        let e = validate(Kind::ToolCall, &p).unwrap_err();
        assert_eq!(e.field(), Some("toolName"));
    }

    #[test]
    fn optional_null_is_fine_and_untyped_kinds_take_any_object() {
        let p = raw(r#"{"toolName":"s","callId":"c","arguments":[],"serverName":null}"#);
        assert_eq!(validate(Kind::ToolCall, &p), Ok(()));
        assert_eq!(validate(Kind::Memory, &raw(r#"{"anything":1}"#)), Ok(()));
        assert_eq!(
            validate(Kind::Memory, &raw("[1]")),
            Err(PayloadError::NotAnObject)
        );
    }

    #[test]
    fn session_end_reason_is_an_enum() {
        assert!(validate(Kind::SessionEnded, &raw(r#"{"reason":"completed"}"#)).is_ok());
        assert_eq!(
            validate(Kind::SessionEnded, &raw(r#"{"reason":"bored"}"#)),
            Err(PayloadError::BadReason)
        );
    }

    #[test]
    fn escaped_keys_are_understood() {
        let p = raw(r#"{"type":"x","d\u0061ta":1}"#);
        assert_eq!(validate(Kind::Custom, &p), Ok(()));
    }
}
