//! Prompt injection: instruction-override phrases, chat-template role markers,
//! invisible and Unicode tag characters. The phrase and marker checks also
//! run on the string's normalised form and on what %-encoding, base64 or hex
//! hides in it ([`super::views`]); found there, they are reported as
//! `<rule>_percent`, `_base64` or `_hex`.

use regex::Regex;

use super::decode::Encoding;
use super::{Hit, dedup};

pub struct Injection {
    phrases: Regex,
    markers: Regex,
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

fn invisible_kind(c: char) -> Option<&'static str> {
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
        }
    }

    /// Phrases and markers in one text. The caller runs this on the
    /// normalised and decoded forms of a string too ([`super::views`]) and
    /// renames what it finds there with [`encoded_rule`].
    pub fn scan(&self, s: &str) -> Vec<Hit> {
        let mut hits = Vec::new();
        for m in self.phrases.find_iter(s) {
            hits.push(Hit {
                rule: "instruction_override",
                start: m.start(),
                end: m.end(),
                confidence: 0.9,
            });
        }
        for m in self.markers.find_iter(s) {
            hits.push(Hit {
                rule: "role_marker",
                start: m.start(),
                end: m.end(),
                confidence: 0.7,
            });
        }
        dedup(hits)
    }

    /// Invisible characters in the string as received: runs of them, one
    /// finding per run. (Normalisation removes them, so this looks at the
    /// original only.)
    pub fn invisible(&self, s: &str) -> Vec<Hit> {
        let mut hits = Vec::new();
        if s.is_ascii() {
            return hits;
        }
        let mut run: Option<(&'static str, usize, usize, usize)> = None;
        let flush = |run: &mut Option<(&'static str, usize, usize, usize)>, hits: &mut Vec<Hit>| {
            if let Some((rule, start, end, n)) = run.take() {
                let confidence = match rule {
                    "unicode_tag_characters" => 0.95,
                    "bidi_override" => 0.8,
                    _ if n >= 3 => 0.7,
                    _ => 0.0,
                };
                // A lone zero-width space or soft hyphen is common in pasted
                // text; what it may hide is found in the normalised text.
                if confidence > 0.0 {
                    hits.push(Hit {
                        rule,
                        start,
                        end,
                        confidence,
                    });
                }
            }
        };
        for (i, c) in s.char_indices() {
            match (invisible_kind(c), &mut run) {
                (Some(r), Some((rule, _, end, n))) if *rule == r => {
                    *end = i + c.len_utf8();
                    *n += 1;
                }
                (Some(r), _) => {
                    flush(&mut run, &mut hits);
                    run = Some((r, i, i + c.len_utf8(), 1));
                }
                (None, _) => flush(&mut run, &mut hits),
            }
        }
        flush(&mut run, &mut hits);
        hits
    }
}

/// The rule a phrase or marker found inside an encoded text is reported
/// under: `instruction_override_base64`, `role_marker_percent`, ...
pub fn encoded_rule(rule: &'static str, encoding: Encoding) -> &'static str {
    match (rule, encoding) {
        ("instruction_override", Encoding::Base64) => "instruction_override_base64",
        ("instruction_override", Encoding::Hex) => "instruction_override_hex",
        ("instruction_override", Encoding::Percent) => "instruction_override_percent",
        ("role_marker", Encoding::Base64) => "role_marker_base64",
        ("role_marker", Encoding::Hex) => "role_marker_hex",
        ("role_marker", Encoding::Percent) => "role_marker_percent",
        (other, _) => other,
    }
}
