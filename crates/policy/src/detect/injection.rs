//! Prompt injection: instruction-override phrases, chat-template role markers,
//! invisible and Unicode tag characters, and the same phrase and marker checks
//! on base64- and hex-decoded substrings.

use base64::Engine;
use regex::Regex;

use super::{Hit, dedup};

/// Decoded candidates examined per string, and the longest decoded.
const MAX_DECODED_CANDIDATES: usize = 16;
const MAX_CANDIDATE_BYTES: usize = 64 * 1024;

pub struct Injection {
    phrases: Regex,
    markers: Regex,
    b64: Regex,
    hex: Regex,
}

impl Default for Injection {
    fn default() -> Self {
        Self::new()
    }
}

const PHRASES: &str = r"(?ix)
    \b(?:ignore|disregard|forget|override|bypass|skip)\s+(?:all\s+|any\s+|the\s+|your\s+|my\s+)?
        (?:previous|prior|above|earlier|preceding|original|system|safety|existing)\s+
        (?:instructions?|prompts?|rules|directions|guidelines|directives|context|messages?)\b
  | \bforget\s+(?:everything|all)\s+(?:you\s+(?:were|have\s+been)\s+told|above|before)\b
  | \byou\s+are\s+now\s+(?:in\s+)?(?:DAN|developer\s+mode|jailbroken|unrestricted|unfiltered|an?\s+unrestricted)\b
  | \b(?:do\s+anything\s+now|jailbreak\s+mode|developer\s+mode\s+enabled)\b
  | \b(?:reveal|print|show|repeat|output|leak|dump)\s+(?:me\s+)?(?:your|the)\s+(?:full\s+|entire\s+|hidden\s+|original\s+)?
        (?:system\s+prompt|hidden\s+instructions|initial\s+instructions|instructions\s+above|prompt\s+above)\b
  | \bnew\s+(?:system\s+)?instructions\s*:
  | \bact\s+as\s+(?:an?\s+)?(?:unrestricted|unfiltered|uncensored|jailbroken)\b
  | \bpretend\s+(?:that\s+)?you\s+(?:have\s+no|are\s+not\s+bound\s+by|are\s+free\s+from)\s+(?:restrictions|rules|guidelines|limits)\b
  | \b(?:from\s+now\s+on|henceforth)\s*,?\s+you\s+(?:will|must)\s+(?:ignore|obey\s+only|not\s+follow)\b
";

const MARKERS: &str = r"(?x)
    <\|(?:im_start|im_end|system|user|assistant|endoftext|begin_of_text|start_header_id|end_header_id|eot_id)\|>
  | \[/?INST\] | <</?SYS>>
  | (?m:^\s*\#\#\#\s*(?:System|Instruction)\s*:)
  | \n\n(?:Human|Assistant):
";

fn invisible(c: char) -> Option<&'static str> {
    match c as u32 {
        0xE0000..=0xE007F => Some("unicode_tag_characters"),
        0x200B..=0x200F | 0x2060..=0x2064 | 0xFEFF | 0x180E | 0x00AD => {
            Some("invisible_characters")
        }
        0x202A..=0x202E | 0x2066..=0x2069 => Some("bidi_override"),
        _ => None,
    }
}

impl Injection {
    pub fn new() -> Self {
        let re = |p: &str| Regex::new(p).unwrap_or_else(|e| panic!("injection pattern: {e}"));
        Injection {
            phrases: re(PHRASES),
            markers: re(MARKERS),
            b64: re(r"[A-Za-z0-9+/]{24,}={0,2}|[A-Za-z0-9_-]{24,}={0,2}"),
            hex: re(r"\b(?:[0-9a-fA-F]{2}){16,}\b"),
        }
    }

    /// Phrases and markers in plain text, reported as `rule` + suffix.
    fn text_hits(&self, s: &str, suffix: &'static str, out: &mut Vec<(String, usize, usize, f64)>) {
        for m in self.phrases.find_iter(s) {
            out.push((
                format!("instruction_override{suffix}"),
                m.start(),
                m.end(),
                0.9,
            ));
        }
        for m in self.markers.find_iter(s) {
            out.push((format!("role_marker{suffix}"), m.start(), m.end(), 0.7));
        }
    }

    pub fn scan(&self, s: &str) -> Vec<Hit> {
        let mut raw: Vec<(String, usize, usize, f64)> = Vec::new();
        self.text_hits(s, "", &mut raw);

        // Invisible characters: runs of them, one finding per run.
        let mut run: Option<(&'static str, usize, usize, usize)> = None;
        let flush = |run: &mut Option<(&'static str, usize, usize, usize)>,
                     raw: &mut Vec<(String, usize, usize, f64)>| {
            if let Some((rule, start, end, n)) = run.take() {
                let conf = match rule {
                    "unicode_tag_characters" => 0.95,
                    "bidi_override" => 0.8,
                    _ if n >= 3 => 0.7,
                    _ => 0.0,
                };
                // A lone zero-width space or soft hyphen is common in pasted text.
                if conf > 0.0 {
                    raw.push((rule.to_owned(), start, end, conf));
                }
            }
        };
        for (i, c) in s.char_indices() {
            match (invisible(c), &mut run) {
                (Some(r), Some((rule, _, end, n))) if *rule == r => {
                    *end = i + c.len_utf8();
                    *n += 1;
                }
                (Some(r), _) => {
                    flush(&mut run, &mut raw);
                    run = Some((r, i, i + c.len_utf8(), 1));
                }
                (None, _) => flush(&mut run, &mut raw),
            }
        }
        flush(&mut run, &mut raw);

        // Encoded payloads: decode and look again.
        let mut tried = 0;
        for m in self.b64.find_iter(s) {
            if tried >= MAX_DECODED_CANDIDATES {
                break;
            }
            if m.len() > MAX_CANDIDATE_BYTES {
                continue;
            }
            tried += 1;
            let t = m.as_str().trim_end_matches('=');
            let decoded = base64::engine::general_purpose::STANDARD_NO_PAD
                .decode(t)
                .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(t));
            if let Some(text) = decoded.ok().and_then(printable) {
                let mut inner = Vec::new();
                self.text_hits(&text, "_base64", &mut inner);
                for (rule, _, _, conf) in inner {
                    raw.push((rule, m.start(), m.end(), conf));
                }
            }
        }
        for m in self.hex.find_iter(s).take(MAX_DECODED_CANDIDATES) {
            if m.len() > MAX_CANDIDATE_BYTES {
                continue;
            }
            if let Some(text) = hex_decode(m.as_str()).and_then(printable) {
                let mut inner = Vec::new();
                self.text_hits(&text, "_hex", &mut inner);
                for (rule, _, _, conf) in inner {
                    raw.push((rule, m.start(), m.end(), conf));
                }
            }
        }
        let hits = raw
            .into_iter()
            .map(|(rule, start, end, confidence)| Hit {
                rule: intern(&rule),
                start,
                end,
                confidence,
            })
            .collect();
        dedup(hits)
    }
}

/// Rule names are a small fixed set; map them to statics.
fn intern(rule: &str) -> &'static str {
    const NAMES: &[&str] = &[
        "instruction_override",
        "role_marker",
        "instruction_override_base64",
        "role_marker_base64",
        "instruction_override_hex",
        "role_marker_hex",
        "unicode_tag_characters",
        "invisible_characters",
        "bidi_override",
    ];
    NAMES
        .iter()
        .find(|n| **n == rule)
        .copied()
        .unwrap_or("injection")
}

fn hex_decode(s: &str) -> Option<Vec<u8>> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Decoded bytes that read as text (UTF-8, mostly printable).
fn printable(b: Vec<u8>) -> Option<String> {
    let s = String::from_utf8(b).ok()?;
    let ok = s
        .chars()
        .filter(|c| !c.is_control() || c.is_whitespace())
        .count();
    (ok * 10 >= s.chars().count() * 9).then_some(s)
}
