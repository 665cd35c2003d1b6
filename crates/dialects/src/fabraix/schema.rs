//! Fabraix schemas: read and checked cheaply ([`Schema::read`]), parsed and
//! measured ([`Schema::measure`], [`super::cost`]), compiled, and kept in a cache bounded by the bytes the
//! compiled validators may hold. Hostile schemas are contained: no `$ref` is
//! ever fetched (offline), `pattern` uses the linear-time `regex` engine with
//! compile- and cache-size limits, the schema is bounded in size, depth and
//! I-JSON before it is parsed further, and what compiling and validating may
//! cost is measured before either happens.

use std::sync::{Arc, Mutex};

use jsonschema::{Draft, PatternOptions, Validator};
use lru::LruCache;
use serde_json::Value;

use agentledger_core::chain::sha256;
use agentledger_core::limits::{MAX_JSON_DEPTH, json_depth};

use super::cost::{REGEX_DFA_LIMIT, REGEX_SIZE_LIMIT, SchemaCost};
use crate::InputError;

/// A schema as received: checked cheaply, not yet parsed into a document.
#[derive(Debug, Clone)]
pub struct Schema {
    /// SHA-256 of the schema text: the cache key.
    key: [u8; 32],
    text: String,
}

/// A schema parsed and measured, ready to compile.
#[derive(Debug, Clone)]
pub struct Measured {
    /// What content is validated against: the schema, or the `parameters`
    /// of a function-style schema.
    target: Value,
    pub cost: SchemaCost,
}

impl Schema {
    /// Cheap checks, linear in the text: depth (before parsing) and I-JSON,
    /// which reads the whole text as JSON (the schema is stored verbatim
    /// with the event, so it must read the same everywhere). A schema whose
    /// validator is cached passed them already (same SHA-256, same text) and
    /// is not read again.
    pub fn read(text: String, cache: &SchemaCache) -> Result<Schema, InputError> {
        let key = sha256(text.as_bytes());
        if !cache.contains(&key) {
            if json_depth(&text) > MAX_JSON_DEPTH {
                return Err(invalid_schema(format!(
                    "schema: nested deeper than {MAX_JSON_DEPTH} levels"
                )));
            }
            agentledger_core::ijson::check(&text)
                .map_err(|e| invalid_schema(format!("schema is not valid I-JSON: {e}")))?;
        }
        Ok(Schema { key, text })
    }

    pub fn key(&self) -> &[u8; 32] {
        &self.key
    }

    /// Parse and measure what compiling and validating against this schema
    /// may cost; refuses (413) a schema whose compiled form would be too
    /// large. Linear in the schema; compiles nothing.
    pub fn measure(&self) -> Result<Measured, InputError> {
        let mut schema: Value = serde_json::from_str(&self.text)
            .map_err(|e| invalid_schema(format!("schema is not valid JSON: {e}")))?;
        // A function-style tool schema (`"type": "function"` with
        // `parameters`, as the Fabraix document's tool example uses)
        // validates the content against its `parameters`.
        let target = match &mut schema {
            Value::Object(o) if o.get("type").and_then(Value::as_str) == Some("function") => {
                match o.remove("parameters") {
                    Some(p @ Value::Object(_)) => p,
                    _ => {
                        return Err(invalid_schema(
                            "schema: a function schema needs an object \"parameters\"".into(),
                        ));
                    }
                }
            }
            Value::Object(_) | Value::Bool(_) => schema,
            _ => return Err(invalid_schema("schema must be a JSON object".into())),
        };
        // The draft jsonschema will use: `$schema`, else 2020-12.
        let draft = if target.get("$schema").is_some() {
            Draft::Draft202012.detect(&target)
        } else {
            Draft::Draft202012
        };
        let cost = SchemaCost::measure(&target, draft)?;
        cost.within_limits()?;
        Ok(Measured { target, cost })
    }
}

impl Measured {
    /// Compile: CPU work within the measured cost.
    pub fn compile(&self) -> Result<Validator, InputError> {
        let mut opts = jsonschema::options().offline().with_pattern_options(
            PatternOptions::regex()
                .size_limit(REGEX_SIZE_LIMIT)
                .dfa_size_limit(REGEX_DFA_LIMIT),
        );
        // `$schema` picks the draft (jsonschema reads it); without it, 2020-12.
        if self.target.get("$schema").is_none() {
            opts = opts.with_draft(Draft::Draft202012);
        }
        opts.build(&self.target)
            .map_err(|e| invalid_schema(format!("schema is not a valid JSON Schema: {e}")))
    }
}

/// Compiled validators by schema hash, least recently used evicted first,
/// bounded by the bytes their compiled forms may hold (the estimate of
/// [`SchemaCost::compiled_bytes`], which covers the regex caches that fill
/// as validators are used) rather than by count: 1,024 validators of 1,300
/// patterns each would have held over 100 GB.
pub struct SchemaCache {
    inner: Mutex<Cached>,
    budget: u64,
}

struct Cached {
    validators: LruCache<[u8; 32], Entry>,
    bytes: u64,
}

struct Entry {
    validator: Arc<Validator>,
    cost: SchemaCost,
}

impl SchemaCache {
    /// A cache holding validators of at most `budget_bytes` (estimated) in
    /// all; one validator over a quarter of that is used once, not kept, so
    /// that one schema cannot evict every other.
    pub fn new(budget_bytes: usize) -> Self {
        SchemaCache {
            inner: Mutex::new(Cached {
                validators: LruCache::unbounded(),
                bytes: 0,
            }),
            budget: budget_bytes as u64,
        }
    }

    /// The largest validator (estimated bytes) that is kept.
    pub fn max_entry_bytes(&self) -> u64 {
        self.budget / 4
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cached> {
        // The cache holds no invariant a panic could break halfway.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Validators currently cached.
    pub fn len(&self) -> usize {
        self.lock().validators.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Estimated bytes of the cached validators.
    pub fn bytes(&self) -> u64 {
        self.lock().bytes
    }

    /// Whether a schema's validator is cached (without making it recent).
    pub fn contains(&self, key: &[u8; 32]) -> bool {
        self.lock().validators.contains(key)
    }

    /// The cached validator for a schema, and the schema's cost, if any.
    pub fn get(&self, key: &[u8; 32]) -> Option<(Arc<Validator>, SchemaCost)> {
        self.lock()
            .validators
            .get(key)
            .map(|e| (e.validator.clone(), e.cost))
    }

    /// Keep a validator (weighing its cost's compiled bytes), evicting the
    /// least recently used until the cache is within its budget.
    pub fn insert(&self, key: [u8; 32], validator: Arc<Validator>, cost: SchemaCost) {
        let bytes = cost.compiled_bytes;
        if bytes > self.max_entry_bytes() {
            return;
        }
        let mut c = self.lock();
        if let Some(old) = c.validators.put(key, Entry { validator, cost }) {
            c.bytes -= old.cost.compiled_bytes;
        }
        c.bytes += bytes;
        while c.bytes > self.budget {
            match c.validators.pop_lru() {
                Some((_, e)) => c.bytes -= e.cost.compiled_bytes,
                None => break,
            }
        }
    }

    /// The validator for a measured schema, compiling (and keeping) it on
    /// first sight.
    pub fn validator(
        &self,
        schema: &Schema,
        measured: &Measured,
    ) -> Result<Arc<Validator>, InputError> {
        if let Some((v, _)) = self.get(schema.key()) {
            return Ok(v);
        }
        let compiled = Arc::new(measured.compile()?);
        self.insert(*schema.key(), compiled.clone(), measured.cost);
        Ok(compiled)
    }
}

fn invalid_schema(message: String) -> InputError {
    InputError::invalid("schema", message).with_code("INVALID_SCHEMA")
}

/// Read, measure and compile a schema text in one step (tests, tools).
pub fn compile(schema_text: &str) -> Result<Validator, InputError> {
    Schema::read(schema_text.to_owned(), &SchemaCache::new(0))?
        .measure()?
        .compile()
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
    check_with(validator, content, true)
}

/// As [`check`]; without `detailed`, a failure is reported at `$` without
/// asking jsonschema for its first error, which for a failing `anyOf`/`oneOf`
/// is built from every error of every branch (unbounded for recursive
/// schemas; see [`super::cost::Work::detailed_errors`]).
pub fn check_with(
    validator: &Validator,
    content: &Value,
    detailed: bool,
) -> Result<(), InputError> {
    // Checking allocates nothing per error and stops at the first failure.
    if validator.is_valid(content) {
        return Ok(());
    }
    if !detailed {
        return Err(InputError::invalid(
            "$",
            "Content does not match provided schema (the failing location is not reported \
             for schemas whose anyOf/oneOf are recursive or this large)",
        )
        .with_code("SCHEMA_MISMATCH"));
    }
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
    fn an_unknown_dollar_schema_is_refused_not_guessed() {
        let e =
            compile(r#"{"$schema":"https://example.com/my-meta","type":"string"}"#).unwrap_err();
        assert_eq!(e.reason(), "INVALID_SCHEMA");
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

    fn cached(cache: &SchemaCache, text: &str) -> Arc<Validator> {
        let s = Schema::read(text.to_owned(), cache).unwrap();
        let measured = s.measure().unwrap();
        cache.validator(&s, &measured).unwrap()
    }

    #[test]
    fn cache_compiles_once_per_schema() {
        let cache = SchemaCache::new(64 << 20);
        let a = cached(&cache, r#"{"type":"object"}"#);
        let b = cached(&cache, r#"{"type":"object"}"#);
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn cache_is_bounded_by_bytes_and_evicts_the_least_recently_used() {
        let pattern_schema = |i: usize| format!(r#"{{"pattern":"^a{{{i}}}$"}}"#);
        let one = Schema::read(pattern_schema(0), &SchemaCache::new(0))
            .unwrap()
            .measure()
            .unwrap()
            .cost
            .compiled_bytes;
        // Room for four such validators (each within a quarter of the budget).
        let budget = 4 * one + one / 2;
        let cache = SchemaCache::new(budget as usize);
        let first = cached(&cache, &pattern_schema(1));
        for i in 2..=5 {
            cached(&cache, &pattern_schema(i));
            assert!(cache.bytes() <= budget);
        }
        assert_eq!(cache.len(), 4);
        let again = cached(&cache, &pattern_schema(1));
        assert!(
            !Arc::ptr_eq(&first, &again),
            "the oldest was evicted and compiled again"
        );
        // A validator over a quarter of the budget is used, not kept.
        let small = SchemaCache::new((3 * one) as usize);
        cached(&small, &pattern_schema(1));
        assert!(small.is_empty());
    }

    #[test]
    fn repeated_member_names_are_refused() {
        for text in [
            r#"{"type":"object","type":"string"}"#,
            r#"{"properties":{"a":{"type":"string"},"a":{"type":"integer"}}}"#,
        ] {
            let e = Schema::read(text.to_owned(), &SchemaCache::new(0)).unwrap_err();
            assert_eq!(
                (e.reason(), e.path()),
                ("INVALID_SCHEMA", "schema"),
                "{text}"
            );
            assert!(e.to_string().contains("I-JSON"), "{e}");
        }
    }

    #[test]
    fn failures_without_detail_are_reported_at_the_root() {
        let v = compile(r#"{"anyOf":[{"type":"string"},{"type":"null"}]}"#).unwrap();
        let e = check_with(&v, &json!(1), false).unwrap_err();
        assert_eq!((e.reason(), e.path()), ("SCHEMA_MISMATCH", "$"));
        assert!(
            e.to_string()
                .starts_with("Content does not match provided schema")
        );
        assert!(check_with(&v, &json!("x"), false).is_ok());
    }
}
