//! Compiled JSON Schema validators for Fabraix events, cached by the SHA-256
//! of the schema text. Hostile schemas are contained: no `$ref` is ever
//! fetched (offline), `pattern` uses the linear-time `regex` engine with
//! compile-size limits, and the schema itself is bounded in size and depth
//! before it is compiled.

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

use jsonschema::{Draft, PatternOptions, Validator};
use lru::LruCache;
use serde_json::Value;

use agentledger_core::chain::sha256;
use agentledger_core::limits::{MAX_JSON_DEPTH, json_depth};

use crate::InputError;

/// Compiled-regex size bound per `pattern` (bytes of compiled program).
const REGEX_SIZE_LIMIT: usize = 256 * 1024;
/// Lazy-DFA cache bound per `pattern`.
const REGEX_DFA_LIMIT: usize = 256 * 1024;

pub struct SchemaCache {
    cache: Mutex<LruCache<[u8; 32], Arc<Validator>>>,
}

impl SchemaCache {
    pub fn new(capacity: usize) -> Self {
        let cap = NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN);
        SchemaCache {
            cache: Mutex::new(LruCache::new(cap)),
        }
    }

    /// Validators currently cached.
    pub fn len(&self) -> usize {
        self.cache.lock().map(|c| c.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The validator for a schema text, compiling it on first sight.
    pub fn validator(&self, schema_text: &str) -> Result<Arc<Validator>, InputError> {
        let key = sha256(schema_text.as_bytes());
        if let Some(v) = self
            .cache
            .lock()
            .ok()
            .and_then(|mut c| c.get(&key).cloned())
        {
            return Ok(v);
        }
        let compiled = Arc::new(compile(schema_text)?);
        if let Ok(mut c) = self.cache.lock() {
            c.put(key, compiled.clone());
        }
        Ok(compiled)
    }
}

fn invalid_schema(message: String) -> InputError {
    InputError::invalid("schema", message).with_code("INVALID_SCHEMA")
}

/// Compile a schema. A function-style tool schema (`"type": "function"` with
/// `parameters`, as the Fabraix document's tool example uses) validates the
/// content against its `parameters`.
pub fn compile(schema_text: &str) -> Result<Validator, InputError> {
    if json_depth(schema_text) > MAX_JSON_DEPTH {
        return Err(invalid_schema(format!(
            "schema: nested deeper than {MAX_JSON_DEPTH} levels"
        )));
    }
    let schema: Value = serde_json::from_str(schema_text)
        .map_err(|e| invalid_schema(format!("schema is not valid JSON: {e}")))?;
    let target = match &schema {
        Value::Object(o) if o.get("type").and_then(Value::as_str) == Some("function") => {
            match o.get("parameters") {
                Some(p @ Value::Object(_)) => p,
                _ => {
                    return Err(invalid_schema(
                        "schema: a function schema needs an object \"parameters\"".into(),
                    ));
                }
            }
        }
        Value::Object(_) | Value::Bool(_) => &schema,
        _ => return Err(invalid_schema("schema must be a JSON object".into())),
    };
    let mut opts = jsonschema::options().offline().with_pattern_options(
        PatternOptions::regex()
            .size_limit(REGEX_SIZE_LIMIT)
            .dfa_size_limit(REGEX_DFA_LIMIT),
    );
    // `$schema` picks the draft; without it, 2020-12.
    if target.get("$schema").is_none() {
        opts = opts.with_draft(Draft::Draft202012);
    }
    opts.build(target)
        .map_err(|e| invalid_schema(format!("schema is not a valid JSON Schema: {e}")))
}

/// Render a JSON Pointer into `content` as `$.a.b[0]`, using the instance to
/// tell array indexes from object keys that look like numbers.
pub fn json_path(instance: &Value, pointer: &str) -> String {
    let mut out = String::from("$");
    let mut cur = Some(instance);
    for raw in pointer.split('/').skip(1) {
        let seg = raw.replace("~1", "/").replace("~0", "~");
        match cur {
            Some(Value::Array(a)) => {
                out.push_str(&format!("[{seg}]"));
                cur = seg.parse::<usize>().ok().and_then(|i| a.get(i));
            }
            other => {
                if !seg.is_empty() && seg.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    out.push('.');
                    out.push_str(&seg);
                } else {
                    out.push_str(&format!("[{}]", serde_json::Value::String(seg.clone())));
                }
                cur = other.and_then(|v| v.get(&seg));
            }
        }
    }
    out
}

/// Validate `content` against a compiled schema; the first error becomes the
/// documented SCHEMA_MISMATCH error with its `path` (and `missing_field`).
pub fn check(validator: &Validator, content: &Value) -> Result<(), InputError> {
    let Err(err) = validator.validate(content) else {
        return Ok(());
    };
    let pointer = err.instance_path().to_string();
    let mut path = json_path(content, &pointer);
    let mut missing = None;
    if let jsonschema::error::ValidationErrorKind::Required { property } = err.kind() {
        let name = property
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| property.to_string());
        path = json_path(
            content,
            &format!("{pointer}/{}", name.replace('~', "~0").replace('/', "~1")),
        );
        // The parent exists, so the last segment renders as a key.
        missing = Some(name);
    }
    let mut e = InputError::invalid(
        path.clone(),
        format!("Content does not match provided schema: {err} (at {path})"),
    )
    .with_code("SCHEMA_MISMATCH");
    if let Some(m) = missing {
        e = e.with_detail("missing_field", m);
    }
    Err(e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn paths_use_dollar_dot_and_brackets() {
        let v = json!({"a": {"b": [{"c": 1}]}, "7": {"x y": 1}});
        assert_eq!(json_path(&v, "/a/b/0/c"), "$.a.b[0].c");
        assert_eq!(json_path(&v, ""), "$");
        assert_eq!(json_path(&v, "/7/x y"), "$.7[\"x y\"]");
    }

    #[test]
    fn hostile_schemas_are_refused_or_contained() {
        assert!(
            compile(r#"{"$ref": "https://example.com/s.json"}"#).is_err(),
            "no fetching"
        );
        assert!(
            compile(r#"{"$ref": "file:///etc/passwd"}"#).is_err(),
            "no file access"
        );
        assert!(compile(r#"{"type": 12}"#).is_err(), "not a valid schema");
        assert!(compile("[1,2]").is_err());
        // Catastrophic-backtracking pattern: linear with the regex engine.
        let v = compile(r#"{"type":"string","pattern":"^(a+)+$"}"#).unwrap();
        let evil = Value::String(format!("{}!", "a".repeat(50_000)));
        assert!(check(&v, &evil).is_err());
        // Backreferences need a backtracking engine and are refused.
        assert!(compile(r#"{"type":"string","pattern":"(a)\\1"}"#).is_err());
        let deep = format!(
            "{}{}",
            "{\"not\":".repeat(200),
            "{}".to_owned() + &"}".repeat(200)
        );
        assert!(compile(&deep).is_err(), "depth bound");
    }

    #[test]
    fn draft_follows_dollar_schema() {
        // Draft 4 treats exclusiveMaximum as a boolean; 2020-12 as a number.
        let d4 = compile(r#"{"$schema":"http://json-schema.org/draft-04/schema#","maximum":5,"exclusiveMaximum":true}"#).unwrap();
        assert!(check(&d4, &json!(5)).is_err());
        let d2020 = compile(r#"{"exclusiveMaximum":5}"#).unwrap();
        assert!(check(&d2020, &json!(5)).is_err());
        assert!(check(&d2020, &json!(4)).is_ok());
    }

    #[test]
    fn cache_compiles_once_per_schema() {
        let cache = SchemaCache::new(8);
        let a = cache.validator(r#"{"type":"object"}"#).unwrap();
        let b = cache.validator(r#"{"type":"object"}"#).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(cache.len(), 1);
    }
}
