//! Model usage and cost, read out of an event's payload so that queries can
//! filter by model and sum tokens and cost across dialects.
//!
//! Field names are accepted in the spellings the dialects use: snake_case
//! (native, OTLP mapping) and camelCase (AgentLens), at the top level or inside
//! a `usage` object. Only kinds that carry usage are read.

use serde::Deserialize;

use crate::Kind;

/// What one event says about model usage. All fields optional.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Usage {
    pub model: Option<String>,
    pub input_tokens: Option<i64>,
    pub output_tokens: Option<i64>,
    pub cost_usd: Option<f64>,
}

#[derive(Deserialize, Default)]
struct Counts {
    #[serde(alias = "inputTokens", alias = "prompt_tokens", alias = "promptTokens")]
    input_tokens: Option<Number>,
    #[serde(
        alias = "outputTokens",
        alias = "completion_tokens",
        alias = "completionTokens"
    )]
    output_tokens: Option<Number>,
}

#[derive(Deserialize)]
struct Shape {
    #[serde(alias = "responseModel")]
    response_model: Option<String>,
    model: Option<String>,
    // The counts at the top level, spelled as in `Counts`. Not
    // `#[serde(flatten)] Counts`: flattening buffers every other member of
    // the payload (prompts, completions) just to pass them over, and this
    // runs on the store's writer for every LLM event.
    #[serde(alias = "inputTokens", alias = "prompt_tokens", alias = "promptTokens")]
    input_tokens: Option<Number>,
    #[serde(
        alias = "outputTokens",
        alias = "completion_tokens",
        alias = "completionTokens"
    )]
    output_tokens: Option<Number>,
    usage: Option<Counts>,
    #[serde(alias = "costUsd")]
    cost_usd: Option<Number>,
}

/// Any JSON number (or something else, ignored).
#[derive(Deserialize)]
#[serde(untagged)]
enum Number {
    F(f64),
    Other(serde::de::IgnoredAny),
}

impl Number {
    fn get(self) -> Option<f64> {
        match self {
            Number::F(f) if f.is_finite() => Some(f),
            _ => None,
        }
    }
}

fn tokens(n: Option<Number>) -> Option<i64> {
    n.and_then(Number::get)
        .filter(|f| *f >= 0.0 && *f <= 1.0e15)
        .map(|f| f as i64)
}

/// The longest model name kept.
const MAX_MODEL_CHARS: usize = 256;

impl Usage {
    /// Kinds whose payloads may carry usage.
    pub fn applies_to(kind: Kind) -> bool {
        matches!(
            kind,
            Kind::LlmCall | Kind::LlmResponse | Kind::CostTracked | Kind::Embedding | Kind::Agent
        )
    }

    /// Read usage out of a payload; `None` when the kind carries none or the
    /// payload names nothing.
    pub fn of(kind: Kind, payload: &str) -> Option<Usage> {
        if !Usage::applies_to(kind) {
            return None;
        }
        let s: Shape = serde_json::from_str(payload).ok()?;
        let counts = s.usage.unwrap_or_default();
        let u = Usage {
            model: s
                .response_model
                .or(s.model)
                .filter(|m| !m.is_empty() && m.chars().count() <= MAX_MODEL_CHARS),
            input_tokens: tokens(s.input_tokens).or(tokens(counts.input_tokens)),
            output_tokens: tokens(s.output_tokens).or(tokens(counts.output_tokens)),
            cost_usd: s.cost_usd.and_then(Number::get).filter(|c| *c >= 0.0),
        };
        (u != Usage::default()).then_some(u)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agentlens_llm_response() {
        let p = r#"{"callId":"c","provider":"openai","model":"gpt-4o","completion":"hi",
            "finishReason":"stop","usage":{"inputTokens":12,"outputTokens":5,"totalTokens":17},
            "costUsd":0.0012,"latencyMs":300}"#;
        let u = Usage::of(Kind::LlmResponse, p).unwrap();
        assert_eq!(u.model.as_deref(), Some("gpt-4o"));
        assert_eq!((u.input_tokens, u.output_tokens), (Some(12), Some(5)));
        assert_eq!(u.cost_usd, Some(0.0012));
    }

    #[test]
    fn snake_case_and_top_level_counts() {
        let p = r#"{"model":"m1","response_model":"m1-2025","usage":{"input_tokens":3,"output_tokens":4}}"#;
        let u = Usage::of(Kind::LlmCall, p).unwrap();
        assert_eq!(u.model.as_deref(), Some("m1-2025"));
        assert_eq!((u.input_tokens, u.output_tokens), (Some(3), Some(4)));
        let p = r#"{"provider":"x","model":"m","inputTokens":7,"outputTokens":8,"totalTokens":15,"costUsd":1.5}"#;
        let u = Usage::of(Kind::CostTracked, p).unwrap();
        assert_eq!((u.input_tokens, u.cost_usd), (Some(7), Some(1.5)));
    }

    #[test]
    fn ignores_other_kinds_and_odd_values() {
        assert_eq!(Usage::of(Kind::ToolCall, r#"{"model":"x"}"#), None);
        assert_eq!(Usage::of(Kind::LlmCall, r#"{"prompt":"x"}"#), None);
        let u = Usage::of(
            Kind::LlmCall,
            r#"{"model":5,"usage":{"input_tokens":"many","output_tokens":-1},"cost_usd":"free"}"#,
        );
        assert_eq!(u, None);
    }
}
