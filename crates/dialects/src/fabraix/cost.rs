//! What validating a Fabraix `content` against its `schema` may cost, measured
//! from the two texts before anything is compiled, so that an expensive
//! request is refused (413, naming `schema`) instead of being paid for.
//!
//! Three costs are bounded separately, each from measurements of jsonschema
//! 0.60 and regex 1.13 (release build, one core):
//!
//! - **Memory of the compiled validator.** jsonschema keeps 60–660 bytes per
//!   JSON value of the schema (more the deeper it sits), and every `not` (and
//!   `contentSchema`) keeps a copy of its whole subschema, so 120 nested `not`s
//!   repeated across 60 KB compiled to 300 MB. Each distinct regular expression
//!   holds its programs and, once it has matched, caches whose size the regex
//!   limits below bound (see [`regex_bytes`]). The estimate is
//!   `BYTES_PER_VALUE` per schema value, counted once more for every enclosing
//!   `not`, plus the regexes' ceilings.
//! - **Keyword evaluations.** Any keyword of any subschema may run on any
//!   content value, so the work is at most (keywords, `$ref`s followed) ×
//!   (content values). Following references matters: a 2 KB schema whose 24
//!   levels each reference the next twice runs 2^24 evaluations per value, and
//!   jsonschema's first-error report for a failing `anyOf` collected them all
//!   (1.5 GB at 20 levels; the process was killed at 24). About 1.2 ns per
//!   evaluation in the worst shape measured (2,000 `not`/`const` branches over
//!   50,000 strings).
//! - **String scans.** `pattern`, `format` and the `content*` keywords read
//!   whole strings: at most (such keywords, `$ref`s followed) × (bytes of the
//!   content's strings). A regex whose lazy DFA keeps overflowing falls back to
//!   the PikeVM, about 1 µs a byte for the largest patterns the size limit
//!   allows; ordinary patterns run at about 1 ns a byte.
//!
//! References are resolved with the `referencing` crate, the registry
//! jsonschema itself builds (offline), so the walk follows exactly the
//! references the validator will. A reference back into a subschema being
//! walked counts once: recursion has to descend into the content to go on.

use std::collections::{HashMap, HashSet};

use referencing::{Draft, Registry, Resolver, uri};
use serde_json::Value;

use crate::InputError;

/// Compiled-program bound per regular expression (regex's `size_limit`).
pub const REGEX_SIZE_LIMIT: usize = 64 * 1024;
/// Lazy-DFA cache bound per regular expression (regex's `dfa_size_limit`).
/// The caches are what grows with the strings matched (at the former 256 KiB,
/// 1,300 patterns held 600 MB after matching); a small cache only means an
/// overflowing pattern falls back to the PikeVM sooner.
pub const REGEX_DFA_LIMIT: usize = 16 * 1024;
/// The bounded backtracker's visited set, the regex crate's fixed default.
const BACKTRACK_BYTES: u64 = 256 * 1024;
/// A one-pass DFA, built for patterns with a capture group or `\b`; the regex
/// crate's fixed default bound.
const ONEPASS_BYTES: u64 = 1024 * 1024;
/// Compiled validator bytes per schema value (the largest ratio measured, 658,
/// rounded up).
const BYTES_PER_VALUE: u64 = 768;

/// At most this many distinct regular expressions in one schema.
pub const MAX_PATTERNS: u64 = 32;
/// At most this many bytes (estimated) for one compiled validator.
pub const MAX_COMPILED_BYTES: u64 = 48 * 1024 * 1024;
/// At most this many keyword evaluations (estimated) for one content.
pub const MAX_KEYWORD_WORK: u64 = 100_000_000;
/// At most this many string bytes scanned (estimated) for one content.
pub const MAX_STRING_WORK: u64 = 32 * 1024 * 1024;
/// References followed inside references, at most (a guard for the walk's
/// own stack; real schemas nest a handful).
const MAX_UNFOLD_DEPTH: usize = 256;
/// Keyword evaluations of a failing `anyOf`/`oneOf` for which the first
/// error is reported in detail: jsonschema builds that error from every
/// error of every branch, about 1.5 KB each.
const MAX_DETAILED_ERRORS: u64 = 32 * 1024;

/// Worst-case bytes one compiled regular expression holds: forward and
/// reverse NFAs and the PikeVM's state (each within the size limit), two lazy
/// DFA caches, the backtracker's visited set, and a one-pass DFA when the
/// pattern may build one.
pub fn regex_bytes(pattern: &str) -> u64 {
    let base = 3 * REGEX_SIZE_LIMIT as u64 + 2 * REGEX_DFA_LIMIT as u64 + BACKTRACK_BYTES;
    if may_build_onepass(pattern) {
        base + ONEPASS_BYTES
    } else {
        base
    }
}

/// A capture group (`(` not followed by `?`, or a named group) or a word
/// boundary; escaped parentheses count too, which only overestimates.
fn may_build_onepass(pattern: &str) -> bool {
    pattern.contains("\\b")
        || pattern.match_indices('(').any(|(i, _)| {
            let rest = &pattern[i + 1..];
            !rest.starts_with('?') || rest.starts_with("?<") || rest.starts_with("?P<")
        })
}

/// The shape of a content, read from its JSON text in one pass.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ContentShape {
    /// JSON values (containers, members and elements).
    pub values: u64,
    /// Bytes inside strings, member names included.
    pub string_bytes: u64,
}

impl ContentShape {
    /// Measure valid JSON text. A container holding n values has n - 1
    /// commas, so counting one per `[`, `{` and `,` (outside strings), plus
    /// one, counts every value exactly, but for one too many per empty
    /// container.
    pub fn measure(text: &str) -> Self {
        let (mut values, mut string_bytes) = (1u64, 0u64);
        let (mut in_str, mut escaped) = (false, false);
        for &b in text.as_bytes() {
            if in_str {
                match (escaped, b) {
                    (true, _) => escaped = false,
                    (false, b'\\') => escaped = true,
                    (false, b'"') => {
                        in_str = false;
                        continue;
                    }
                    _ => {}
                }
                string_bytes += 1;
                continue;
            }
            match b {
                b'"' => in_str = true,
                b',' | b'[' | b'{' => values += 1,
                _ => {}
            }
        }
        ContentShape {
            values,
            string_bytes,
        }
    }
}

/// What one schema may cost, independent of the content.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SchemaCost {
    /// Keywords that may run on one content value, `$ref`s followed.
    pub keywords: u64,
    /// String-reading keywords that may run on one content string.
    pub string_scans: u64,
    /// Keywords under the largest `anyOf`/`oneOf`, `$ref`s followed.
    pub widest_alternative: u64,
    /// A subschema refers back to itself (a tree-shaped schema).
    pub recursive: bool,
    /// Distinct regular expressions compiled.
    pub patterns: u64,
    /// Estimated bytes of the compiled validator.
    pub compiled_bytes: u64,
}

/// What validating one content against one schema may cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Work {
    pub keyword_evaluations: u64,
    pub string_bytes_scanned: u64,
    /// Whether a failure may be reported with its path: false when the
    /// first error of a failing `anyOf`/`oneOf` could hold too many others.
    pub detailed_errors: bool,
}

fn over(message: String, limit: u64) -> InputError {
    InputError::TooLarge {
        path: "schema".into(),
        message,
        limit: usize::try_from(limit).unwrap_or(usize::MAX),
    }
}

impl SchemaCost {
    /// Measure the schema content is validated against (`draft` as the
    /// validator will use it). Fails for references that cannot be resolved,
    /// as compiling would.
    pub fn measure(target: &Value, draft: Draft) -> Result<Self, InputError> {
        let mut facts = Facts::default();
        facts.scan(target, 0);
        let walk = unfold(target, draft, facts.dynamic)?;
        let compiled_bytes = facts
            .values
            .saturating_mul(BYTES_PER_VALUE)
            .saturating_add(facts.patterns.iter().map(|p| regex_bytes(p)).sum());
        Ok(SchemaCost {
            keywords: walk.keywords,
            string_scans: walk.scans,
            widest_alternative: walk.widest,
            recursive: walk.recursive,
            patterns: facts.patterns.len() as u64,
            compiled_bytes,
        })
    }

    /// Refuse a schema whose compiled form would be too large.
    pub fn within_limits(&self) -> Result<(), InputError> {
        if self.patterns > MAX_PATTERNS {
            return Err(over(
                format!(
                    "schema: {} distinct regular expressions (pattern, patternProperties) \
                     exceed the limit of {MAX_PATTERNS}",
                    self.patterns
                ),
                MAX_PATTERNS,
            ));
        }
        if self.compiled_bytes > MAX_COMPILED_BYTES {
            return Err(over(
                format!(
                    "schema: its compiled form would hold about {} MiB, over the limit of {} MiB \
                     (every `not` keeps a copy of its subschema; every regular expression up to {} KiB)",
                    self.compiled_bytes >> 20,
                    MAX_COMPILED_BYTES >> 20,
                    regex_bytes("") >> 10
                ),
                MAX_COMPILED_BYTES,
            ));
        }
        Ok(())
    }

    /// The work of validating a content of this shape, refused above the limits.
    pub fn work(&self, content: ContentShape) -> Result<Work, InputError> {
        let keyword_evaluations = self.keywords.saturating_mul(content.values);
        if keyword_evaluations > MAX_KEYWORD_WORK {
            return Err(over(
                format!(
                    "schema: validating this content could take {keyword_evaluations} keyword \
                     evaluations ({} schema keywords, $refs followed, × {} content values), \
                     over the limit of {MAX_KEYWORD_WORK}",
                    self.keywords, content.values
                ),
                MAX_KEYWORD_WORK,
            ));
        }
        let string_bytes_scanned = self.string_scans.saturating_mul(content.string_bytes);
        if string_bytes_scanned > MAX_STRING_WORK {
            return Err(over(
                format!(
                    "schema: validating this content could scan {string_bytes_scanned} bytes \
                     ({} pattern/format keywords, $refs followed, × {} bytes of strings), \
                     over the limit of {MAX_STRING_WORK}",
                    self.string_scans, content.string_bytes
                ),
                MAX_STRING_WORK,
            ));
        }
        // Without alternatives the first error costs no more than checking;
        // with them, jsonschema collects every error of every branch, which
        // only a non-recursive schema bounds (a recursive `anyOf` over 18
        // nested arrays collected 700 MB).
        let detailed_errors = self.widest_alternative == 0
            || (!self.recursive
                && self.widest_alternative.saturating_mul(content.values) <= MAX_DETAILED_ERRORS);
        Ok(Work {
            keyword_evaluations,
            string_bytes_scanned,
            detailed_errors,
        })
    }
}

/// Facts read from the schema's JSON as a whole (every value, reachable or not,
/// is compiled).
#[derive(Default)]
struct Facts<'a> {
    /// Values, each counted once more per enclosing `not`/`contentSchema`.
    values: u64,
    patterns: HashSet<&'a str>,
    /// `$dynamicRef` or `$recursiveRef` present.
    dynamic: bool,
}

impl<'a> Facts<'a> {
    /// Recursion is bounded: the schema's depth was checked before.
    fn scan(&mut self, v: &'a Value, copies: u64) {
        self.values = self.values.saturating_add(1 + copies);
        match v {
            Value::Object(m) => {
                for (k, x) in m {
                    match (k.as_str(), x) {
                        ("pattern", Value::String(p)) => {
                            self.patterns.insert(p);
                        }
                        ("patternProperties", Value::Object(props)) => {
                            self.patterns.extend(props.keys().map(String::as_str));
                        }
                        ("$dynamicRef" | "$recursiveRef", _) => self.dynamic = true,
                        _ => {}
                    }
                    let nested = matches!(k.as_str(), "not" | "contentSchema");
                    self.scan(x, copies + u64::from(nested));
                }
            }
            Value::Array(a) => a.iter().for_each(|x| self.scan(x, copies)),
            _ => {}
        }
    }
}

/// JSON values in a document (a `const`/`enum` compares against all of them).
fn json_values(v: &Value) -> u64 {
    match v {
        Value::Object(m) => 1 + m.values().map(json_values).sum::<u64>(),
        Value::Array(a) => 1 + a.iter().map(json_values).sum::<u64>(),
        _ => 1,
    }
}

/// The default base URI jsonschema gives a schema without `$id`.
const DEFAULT_BASE_URI: &str = "json-schema:///";

fn unresolvable(e: referencing::Error) -> InputError {
    InputError::invalid("schema", format!("schema is not a valid JSON Schema: {e}"))
        .with_code("INVALID_SCHEMA")
}

struct Walked {
    keywords: u64,
    scans: u64,
    widest: u64,
    recursive: bool,
}

/// Keywords, string scans and the widest alternative, `$ref`s followed.
fn unfold(target: &Value, draft: Draft, dynamic: bool) -> Result<Walked, InputError> {
    let resource = draft.create_resource_ref(target);
    // The registry jsonschema builds for this schema: same base URI, same
    // draft, and (by default) no retrieval of anything outside it.
    let base = uri::from_str(resource.id().unwrap_or(DEFAULT_BASE_URI)).map_err(unresolvable)?;
    let registry = Registry::new()
        .draft(draft)
        .add(base.as_str(), resource)
        .and_then(|b| b.prepare())
        .map_err(unresolvable)?;
    let resolver = registry.resolver(base);
    let mut walk = Unfold::default();
    if dynamic {
        walk.collect_dynamic_anchors(target, &resolver, draft, 0)?;
    }
    let root = walk.node(target, &resolver, draft)?;
    Ok(Walked {
        keywords: root.keywords,
        scans: root.scans,
        widest: walk.widest,
        recursive: walk.recursive,
    })
}

#[derive(Debug, Clone, Copy, Default)]
struct Unfolded {
    keywords: u64,
    scans: u64,
}

impl Unfolded {
    fn add(&mut self, o: Unfolded) {
        self.keywords = self.keywords.saturating_add(o.keywords);
        self.scans = self.scans.saturating_add(o.scans);
    }
}

#[derive(Default)]
struct Unfold<'r> {
    /// Per subschema (by address: every target lives in the one document).
    memo: HashMap<*const Value, Unfolded>,
    walking: HashSet<*const Value>,
    /// Subschemas a `$dynamicRef`/`$recursiveRef` may land on at run time.
    dynamic_targets: Vec<(&'r Value, Resolver<'r>, Draft)>,
    widest: u64,
    recursive: bool,
    depth: usize,
}

impl<'r> Unfold<'r> {
    fn enter(&mut self) -> Result<(), InputError> {
        self.depth += 1;
        if self.depth > MAX_UNFOLD_DEPTH {
            return Err(over(
                format!("schema: subschemas and $refs nest deeper than {MAX_UNFOLD_DEPTH}"),
                MAX_UNFOLD_DEPTH as u64,
            ));
        }
        Ok(())
    }

    fn collect_dynamic_anchors(
        &mut self,
        v: &'r Value,
        resolver: &Resolver<'r>,
        draft: Draft,
        depth: usize,
    ) -> Result<(), InputError> {
        let Value::Object(obj) = v else { return Ok(()) };
        if depth > MAX_UNFOLD_DEPTH {
            return Ok(());
        }
        let draft = draft.detect(v);
        let resolver = resolver
            .in_subresource(draft.create_resource_ref(v))
            .map_err(unresolvable)?;
        if obj.contains_key("$dynamicAnchor")
            || obj.get("$recursiveAnchor") == Some(&Value::Bool(true))
        {
            self.dynamic_targets.push((v, resolver.clone(), draft));
        }
        for child in draft.subresources_of(v) {
            self.collect_dynamic_anchors(child, &resolver, draft, depth + 1)?;
        }
        Ok(())
    }

    fn node(
        &mut self,
        v: &'r Value,
        resolver: &Resolver<'r>,
        draft: Draft,
    ) -> Result<Unfolded, InputError> {
        let key = v as *const Value;
        if let Some(u) = self.memo.get(&key) {
            return Ok(*u);
        }
        let Value::Object(obj) = v else {
            return Ok(Unfolded {
                keywords: 1,
                scans: 0,
            });
        };
        if !self.walking.insert(key) {
            // A cycle: each turn has to descend into the content, whose
            // values the work multiplies by anyway (jsonschema also stops a
            // turn that does not descend).
            self.recursive = true;
            return Ok(Unfolded {
                keywords: 1,
                scans: 0,
            });
        }
        self.enter()?;
        let draft = draft.detect(v);
        let resolver = resolver
            .in_subresource(draft.create_resource_ref(v))
            .map_err(unresolvable)?;
        let mut u = Unfolded {
            keywords: 1,
            scans: 0,
        };
        for (k, x) in obj {
            let (keywords, scans) = match (k.as_str(), x) {
                ("const" | "enum", _) => (json_values(x), 0),
                // Hashes every item, each to its full depth.
                ("uniqueItems", _) => (16, 0),
                ("pattern" | "format" | "contentEncoding" | "contentMediaType", _) => (1, 1),
                ("patternProperties", Value::Object(m)) => (1, m.len() as u64),
                _ => (1, 0),
            };
            u.add(Unfolded { keywords, scans });
        }
        // Definitions run only where referenced, and are counted there.
        let definitions: Vec<*const Value> = ["$defs", "definitions"]
            .iter()
            .filter_map(|d| obj.get(*d).and_then(Value::as_object))
            .flat_map(|m| m.values().map(|s| s as *const Value))
            .collect();
        for child in draft.subresources_of(v) {
            if !definitions.contains(&(child as *const Value)) {
                let c = self.node(child, &resolver, draft)?;
                u.add(c);
            }
        }
        for alternatives in ["anyOf", "oneOf"] {
            if let Some(Value::Array(branches)) = obj.get(alternatives) {
                let mut sum = 0u64;
                for b in branches {
                    // Memoized: each branch was walked above.
                    sum = sum.saturating_add(self.node(b, &resolver, draft)?.keywords);
                }
                self.widest = self.widest.max(sum);
            }
        }
        if let Some(Value::String(r)) = obj.get("$ref") {
            let (target, res, d) = resolver.lookup(r).map_err(unresolvable)?.into_inner();
            let c = self.node(target, &res, d)?;
            u.add(c);
        }
        let dynamic = match (obj.get("$dynamicRef"), obj.get("$recursiveRef")) {
            (Some(Value::String(r)), _) => Some(resolver.lookup(r)),
            (_, Some(Value::String(_))) => Some(resolver.lookup_recursive_ref()),
            _ => None,
        };
        if let Some(resolved) = dynamic {
            // Where it lands depends on the path taken at run time: count
            // the costliest of the places it may land.
            let (target, res, d) = resolved.map_err(unresolvable)?.into_inner();
            let mut worst = self.node(target, &res, d)?;
            for i in 0..self.dynamic_targets.len() {
                let (t, r, d) = self.dynamic_targets[i].clone();
                let c = self.node(t, &r, d)?;
                if c.keywords > worst.keywords || c.scans > worst.scans {
                    worst = Unfolded {
                        keywords: worst.keywords.max(c.keywords),
                        scans: worst.scans.max(c.scans),
                    };
                }
            }
            u.add(worst);
        }
        self.depth -= 1;
        self.walking.remove(&key);
        self.memo.insert(key, u);
        Ok(u)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cost(schema: &Value) -> SchemaCost {
        SchemaCost::measure(schema, Draft::Draft202012).unwrap()
    }

    #[test]
    fn content_shape_counts_values_and_string_bytes() {
        let s = ContentShape::measure(r#"{"a":[1,"x,y",{"b":null}],"c":"\"q"}"#);
        // object, a's array, 1, "x,y", {b}, null, c's string
        assert_eq!(s.values, 7);
        // a, x,y, b, c and the escaped \"q as written
        assert_eq!(s.string_bytes, 1 + 3 + 1 + 1 + 3);
        assert_eq!(
            ContentShape::measure("{}").values,
            2,
            "one too many per empty container"
        );
    }

    #[test]
    fn references_are_followed_and_counted_per_use() {
        let once = cost(&json!({"properties": {"a": {"type": "string"}}}));
        let twice = cost(&json!({
            "$defs": {"s": {"properties": {"a": {"type": "string"}}}},
            "allOf": [{"$ref": "#/$defs/s"}, {"$ref": "#/$defs/s"}]
        }));
        assert!(twice.keywords >= 2 * once.keywords, "{twice:?} vs {once:?}");
        // Recursive schemas (trees) are finite: each turn descends.
        let tree = cost(&json!({
            "$defs": {"node": {"properties": {"children": {"items": {"$ref": "#/$defs/node"}}}}},
            "$ref": "#/$defs/node"
        }));
        assert!(tree.keywords < 20, "{tree:?}");
        assert!(tree.recursive);
        assert!(!once.recursive && !twice.recursive);
    }

    /// Each level references the next twice: 2^n evaluations per value from
    /// a schema of n small definitions.
    fn doubling(levels: usize) -> Value {
        let mut defs = serde_json::Map::new();
        for i in 0..levels {
            let next = format!("#/$defs/a{}", i + 1);
            defs.insert(
                format!("a{i}"),
                json!({"anyOf": [{"$ref": next}, {"allOf": [{"$ref": next}]}]}),
            );
        }
        defs.insert(format!("a{levels}"), json!({"type": "string"}));
        json!({"$defs": defs, "$ref": "#/$defs/a0"})
    }

    #[test]
    fn reference_amplification_is_seen_before_compiling() {
        let small = cost(&doubling(4));
        assert!(small.keywords >= 16, "{small:?}");
        let bomb = cost(&doubling(24));
        assert!(bomb.keywords >= 1 << 24, "{bomb:?}");
        let e = bomb.work(ContentShape::measure("{}")).unwrap_err();
        assert_eq!((e.reason(), e.path()), ("TOO_LARGE", "schema"));
        assert!(e.to_string().contains("keyword evaluations"), "{e}");
    }

    #[test]
    fn dynamic_references_count_their_costliest_landing() {
        let heavy: Vec<Value> = (0..50).map(|i| json!({"const": i})).collect();
        let s = json!({
            "$dynamicAnchor": "node",
            "$defs": {"other": {"$dynamicAnchor": "node", "allOf": heavy}},
            "properties": {"x": {"$dynamicRef": "#node"}}
        });
        assert!(cost(&s).keywords > 100, "{:?}", cost(&s));
    }

    #[test]
    fn nested_nots_weigh_their_copies() {
        let mut v = json!({"type": "string"});
        for _ in 0..120 {
            v = json!({"not": v});
        }
        let chain = json!({"allOf": vec![v; 60]});
        let c = cost(&chain);
        let e = c.within_limits().unwrap_err();
        assert_eq!((e.reason(), e.path()), ("TOO_LARGE", "schema"), "{c:?}");
        // The same values without nesting are cheap.
        let flat = json!({"allOf": vec![json!({"type": "string"}); 7_000]});
        assert!(cost(&flat).within_limits().is_ok());
    }

    #[test]
    fn patterns_are_counted_once_each_and_bounded() {
        let same: Vec<Value> = (0..100).map(|_| json!({"pattern": "^a+$"})).collect();
        let c = cost(&json!({"allOf": same}));
        assert_eq!(c.patterns, 1);
        assert_eq!(c.string_scans, 100);
        let distinct: Vec<Value> = (0..MAX_PATTERNS + 1)
            .map(|i| json!({"pattern": format!("^a{{{i}}}$")}))
            .collect();
        let e = cost(&json!({"allOf": distinct}))
            .within_limits()
            .unwrap_err();
        assert!(e.to_string().contains("regular expressions"), "{e}");
        assert!(
            regex_bytes("^(a)$") > regex_bytes("^a$"),
            "captures build a one-pass DFA"
        );
        assert!(regex_bytes(r"\bword") > regex_bytes("word"));
        assert!(!may_build_onepass("^(?:a|b)$"));
        assert!(may_build_onepass("^(?<n>a)$"));
    }

    #[test]
    fn string_scans_multiply_by_string_bytes() {
        let c = cost(&json!({"items": {"pattern": "^a", "format": "email"}}));
        assert_eq!(c.string_scans, 2);
        let big = format!("[\"{}\"]", "a".repeat(20 * 1024 * 1024));
        let e = c.work(ContentShape::measure(&big)).unwrap_err();
        assert!(e.to_string().contains("scan"), "{e}");
        assert!(c.work(ContentShape::measure(r#"["aaa"]"#)).is_ok());
    }

    #[test]
    fn unresolvable_references_are_invalid_schemas() {
        let e = SchemaCost::measure(&json!({"$ref": "#/$defs/missing"}), Draft::Draft202012)
            .unwrap_err();
        assert_eq!(e.reason(), "INVALID_SCHEMA");
    }

    #[test]
    fn wide_alternatives_limit_error_detail_not_validation() {
        let branches: Vec<Value> = (0..1000).map(|i| json!({"const": i})).collect();
        let c = cost(&json!({"items": {"anyOf": branches}}));
        let small = c.work(ContentShape::measure("[1,2]")).unwrap();
        assert!(small.detailed_errors);
        let many = format!("[{}]", vec!["1"; 100].join(","));
        let w = c.work(ContentShape::measure(&many)).unwrap();
        assert!(!w.detailed_errors);
        // A recursive anyOf never reports in detail; a schema without
        // alternatives always does.
        let tree = cost(
            &json!({"$defs": {"x": {"anyOf": [{"items": {"$ref": "#/$defs/x"}}, {"type": "null"}]}}, "$ref": "#/$defs/x"}),
        );
        assert!(
            !tree
                .work(ContentShape::measure("[[1]]"))
                .unwrap()
                .detailed_errors
        );
        let plain = cost(&json!({"items": {"type": "string"}}));
        assert!(
            plain
                .work(ContentShape::measure(&many))
                .unwrap()
                .detailed_errors
        );
    }
}
