//! A payload (or metadata) pretty-printed as text, cut into segments so the
//! page can mark each finding at its span. Segments are plain text: the
//! template escapes them, so nothing in a payload is ever markup.

use serde_json::Value;

use agentledger_core::verdict::Finding;

/// A run of the printed text; `hit` names the finding it shows (detector
/// and rule), when it is one.
pub struct Segment {
    pub text: String,
    pub hit: Option<String>,
}

/// Print `raw` (JSON text) indented, marking the findings whose pointer
/// starts with `root` (`/payload` or `/metadata`).
pub fn segments(raw: &str, root: &str, findings: &[Finding]) -> Vec<Segment> {
    let mine: Vec<&Finding> = findings
        .iter()
        .filter(|f| f.json_pointer == root || f.json_pointer.starts_with(&format!("{root}/")))
        .collect();
    let Ok(v) = serde_json::from_str::<Value>(raw) else {
        return vec![Segment {
            text: raw.to_owned(),
            hit: None,
        }];
    };
    let mut p = Printer {
        out: Vec::new(),
        text: String::new(),
        findings: mine,
    };
    p.value(&v, root, 0);
    p.flush();
    p.out
}

struct Printer<'a> {
    out: Vec<Segment>,
    text: String,
    findings: Vec<&'a Finding>,
}

/// RFC 6901: `~` and `/` in a member name.
fn escape_token(s: &str) -> String {
    s.replace('~', "~0").replace('/', "~1")
}

fn quoted(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

impl Printer<'_> {
    fn flush(&mut self) {
        if !self.text.is_empty() {
            self.out.push(Segment {
                text: std::mem::take(&mut self.text),
                hit: None,
            });
        }
    }

    fn indent(&mut self, depth: usize) {
        self.text.push('\n');
        for _ in 0..depth {
            self.text.push_str("  ");
        }
    }

    fn value(&mut self, v: &Value, path: &str, depth: usize) {
        match v {
            Value::Object(m) if !m.is_empty() => {
                self.text.push('{');
                for (i, (k, x)) in m.iter().enumerate() {
                    if i > 0 {
                        self.text.push(',');
                    }
                    self.indent(depth + 1);
                    self.text.push_str(&quoted(k));
                    self.text.push_str(": ");
                    self.value(x, &format!("{path}/{}", escape_token(k)), depth + 1);
                }
                self.indent(depth);
                self.text.push('}');
            }
            Value::Array(a) if !a.is_empty() => {
                self.text.push('[');
                for (i, x) in a.iter().enumerate() {
                    if i > 0 {
                        self.text.push(',');
                    }
                    self.indent(depth + 1);
                    self.value(x, &format!("{path}/{i}"), depth + 1);
                }
                self.indent(depth);
                self.text.push(']');
            }
            Value::String(s) => self.string(s, path),
            other => self.text.push_str(&other.to_string()),
        }
    }

    /// A string with its findings marked: each match's byte range of the
    /// string is printed (JSON-escaped) as its own segment. A range that
    /// does not fall on the string's characters (a redacted value is
    /// shorter than what was matched) marks the whole string.
    fn string(&mut self, s: &str, path: &str) {
        let mut spans: Vec<(usize, usize, String)> = self
            .findings
            .iter()
            .filter(|f| f.json_pointer == path)
            .map(|f| {
                let label = format!("{}: {}", f.detector, f.rule);
                match s.get(f.start..f.end) {
                    Some(_) if f.start < f.end => (f.start, f.end, label),
                    _ => (0, s.len(), label),
                }
            })
            .collect();
        if spans.is_empty() {
            self.text.push_str(&quoted(s));
            return;
        }
        spans.sort_by_key(|(a, b, _)| (*a, *b));
        // Overlapping matches are shown as one mark.
        let mut merged: Vec<(usize, usize, String)> = Vec::new();
        for (a, b, l) in spans {
            match merged.last_mut() {
                Some(last) if a < last.1 => {
                    last.1 = last.1.max(b);
                    if !last.2.contains(&l) {
                        last.2.push_str(", ");
                        last.2.push_str(&l);
                    }
                }
                _ => merged.push((a, b, l)),
            }
        }
        let inner = |t: &str| {
            let q = quoted(t);
            q[1..q.len() - 1].to_owned()
        };
        self.text.push('"');
        let mut at = 0;
        for (a, b, label) in merged {
            self.text.push_str(&inner(&s[at..a]));
            self.flush();
            self.out.push(Segment {
                text: inner(&s[a..b]),
                hit: Some(label),
            });
            at = b;
        }
        self.text.push_str(&inner(&s[at..]));
        self.text.push('"');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finding(pointer: &str, start: usize, end: usize) -> Finding {
        Finding {
            detector: "secrets".into(),
            rule: "aws_access_key_id".into(),
            json_pointer: pointer.into(),
            start,
            end,
            confidence: 0.9,
        }
    }

    #[test]
    fn a_finding_is_marked_at_its_byte_span_and_the_rest_is_plain_text() {
        let raw = r#"{"arguments":{"q":"key AKIA1234 here"},"n":1}"#;
        let segs = segments(raw, "/payload", &[finding("/payload/arguments/q", 4, 12)]);
        let hits: Vec<&str> = segs
            .iter()
            .filter(|s| s.hit.is_some())
            .map(|s| s.text.as_str())
            .collect();
        assert_eq!(hits, ["AKIA1234"]);
        let all: String = segs.iter().map(|s| s.text.as_str()).collect();
        assert!(all.contains("\"key AKIA1234 here\""), "{all}");
        assert!(all.contains("\"n\": 1"), "{all}");
    }

    #[test]
    fn a_span_off_the_characters_marks_the_whole_string() {
        let segs = segments(r#"{"s":"é"}"#, "/payload", &[finding("/payload/s", 1, 2)]);
        assert!(segs.iter().any(|s| s.hit.is_some() && s.text == "é"));
    }
}
