//! Token formats of the major providers, private keys, JWTs, credentials in
//! URLs and generic high-entropy assignments. The project's own rules (formats
//! learnt from public rule lists); each rule has keywords, and a rule's regex
//! runs only on strings where an Aho-Corasick pass found one of them.

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use regex::bytes::Regex;

use super::{Hit, dedup, entropy};

struct Rule {
    id: &'static str,
    keywords: &'static [&'static str],
    /// ASCII-mode bytes regex; capture group 1 (if any) is the secret itself.
    pattern: &'static str,
    /// Minimum Shannon entropy (bits/byte) of the secret; 0 = no check.
    min_entropy: f64,
    confidence: f64,
}

const RULES: &[Rule] = &[
    Rule {
        id: "aws_access_key_id",
        keywords: &["akia", "asia", "abia", "acca"],
        pattern: r"\b((?:AKIA|ASIA|ABIA|ACCA)[A-Z2-7]{16})\b",
        min_entropy: 3.0,
        confidence: 0.95,
    },
    Rule {
        id: "aws_secret_access_key",
        keywords: &["aws"],
        pattern: r#"(?i)aws.{0,20}?(?:secret|private)?.{0,10}?key.{0,5}?['"\s:=]{1,5}([A-Za-z0-9/+]{40})\b"#,
        min_entropy: 4.0,
        confidence: 0.9,
    },
    Rule {
        id: "github_token",
        keywords: &["ghp_", "gho_", "ghu_", "ghs_", "ghr_"],
        pattern: r"\b(gh[pousr]_[A-Za-z0-9]{36,251})\b",
        min_entropy: 3.5,
        confidence: 0.95,
    },
    Rule {
        id: "github_fine_grained_token",
        keywords: &["github_pat_"],
        pattern: r"\b(github_pat_[A-Za-z0-9_]{82})\b",
        min_entropy: 3.5,
        confidence: 0.95,
    },
    Rule {
        id: "gitlab_token",
        keywords: &["glpat-"],
        pattern: r"\b(glpat-[A-Za-z0-9_-]{20,})\b",
        min_entropy: 3.0,
        confidence: 0.95,
    },
    Rule {
        id: "slack_token",
        keywords: &["xoxb-", "xoxa-", "xoxp-", "xoxr-", "xoxs-", "xoxe-"],
        pattern: r"\b(xox[baprse]-[0-9A-Za-z-]{10,250})",
        min_entropy: 3.0,
        confidence: 0.9,
    },
    Rule {
        id: "slack_webhook",
        keywords: &["hooks.slack.com"],
        pattern: r"(https://hooks\.slack\.com/(?:services|workflows)/[A-Za-z0-9+/]{20,100})",
        min_entropy: 0.0,
        confidence: 0.9,
    },
    Rule {
        id: "stripe_key",
        keywords: &["sk_live_", "sk_test_", "rk_live_", "rk_test_", "sk_prod_"],
        pattern: r"\b((?:sk|rk)_(?:live|test|prod)_[A-Za-z0-9]{16,99})\b",
        min_entropy: 3.0,
        confidence: 0.95,
    },
    Rule {
        id: "openai_api_key",
        keywords: &["t3blbkfj", "sk-proj-", "sk-svcacct-", "sk-admin-"],
        pattern: r"\b(sk-(?:(?:proj|svcacct|admin)-[A-Za-z0-9_-]{40,200}|[A-Za-z0-9]{20}T3BlbkFJ[A-Za-z0-9]{20}))(?:[^A-Za-z0-9_-]|$)",
        min_entropy: 3.5,
        confidence: 0.95,
    },
    Rule {
        id: "anthropic_api_key",
        keywords: &["sk-ant-"],
        pattern: r"\b(sk-ant-(?:api|admin)\d\d-[A-Za-z0-9_-]{32,120})",
        min_entropy: 3.5,
        confidence: 0.95,
    },
    Rule {
        id: "google_api_key",
        keywords: &["aiza"],
        pattern: r"\b(AIza[0-9A-Za-z_-]{35})(?:[^0-9A-Za-z_-]|$)",
        min_entropy: 3.5,
        confidence: 0.9,
    },
    Rule {
        id: "sendgrid_api_key",
        keywords: &["sg."],
        pattern: r"\b(SG\.[A-Za-z0-9_-]{16,32}\.[A-Za-z0-9_-]{16,64})\b",
        min_entropy: 3.5,
        confidence: 0.9,
    },
    Rule {
        id: "npm_token",
        keywords: &["npm_"],
        pattern: r"\b(npm_[A-Za-z0-9]{36})\b",
        min_entropy: 3.5,
        confidence: 0.9,
    },
    Rule {
        id: "huggingface_token",
        keywords: &["hf_"],
        pattern: r"\b(hf_[A-Za-z]{34})\b",
        min_entropy: 3.5,
        confidence: 0.85,
    },
    Rule {
        id: "azure_storage_key",
        keywords: &["accountkey="],
        pattern: r"AccountKey=([A-Za-z0-9+/]{86}==)",
        min_entropy: 4.0,
        confidence: 0.95,
    },
    Rule {
        id: "private_key",
        keywords: &["private key"],
        pattern: r"(-----BEGIN[ A-Z0-9_-]{0,100}PRIVATE KEY(?: BLOCK)?-----)",
        min_entropy: 0.0,
        confidence: 0.99,
    },
    Rule {
        id: "jwt",
        keywords: &["eyj"],
        pattern: r"\b(eyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,})",
        min_entropy: 3.0,
        confidence: 0.85,
    },
    Rule {
        id: "credentials_in_url",
        keywords: &["://"],
        pattern: r"\b[A-Za-z][A-Za-z0-9+.-]{1,20}://[^\s:/@]{1,64}:([^\s@/]{4,128})@[A-Za-z0-9.-]+",
        min_entropy: 0.0,
        confidence: 0.85,
    },
    Rule {
        id: "generic_secret",
        keywords: &[
            "key",
            "secret",
            "token",
            "passw",
            "pwd",
            "credential",
            "auth",
        ],
        pattern: r#"(?i)\b(?:api[_-]?key|apikey|secret(?:[_-]?key)?|client[_-]?secret|access[_-]?token|auth[_-]?token|bearer|token|passw(?:or)?d|pwd|credentials?)["']?\s*(?:[:=]|=>|\s)\s*["']?([A-Za-z0-9_+/=.~-]{16,128})"#,
        min_entropy: 3.5,
        confidence: 0.7,
    },
];

/// The compiled rule set.
pub struct Secrets {
    prefilter: AhoCorasick,
    /// Keyword index -> rule index.
    keyword_rule: Vec<usize>,
    regexes: Vec<Regex>,
}

impl Default for Secrets {
    fn default() -> Self {
        Self::new()
    }
}

impl Secrets {
    pub fn new() -> Self {
        let mut keywords = Vec::new();
        let mut keyword_rule = Vec::new();
        for (i, r) in RULES.iter().enumerate() {
            for k in r.keywords {
                keywords.push(*k);
                keyword_rule.push(i);
            }
        }
        let prefilter = AhoCorasickBuilder::new()
            .ascii_case_insensitive(true)
            .match_kind(MatchKind::Standard)
            .build(&keywords)
            .unwrap_or_else(|e| panic!("secret keywords: {e}"));
        let regexes = RULES
            .iter()
            .map(|r| {
                // ASCII mode: \b, \w and classes over bytes, never Unicode tables.
                Regex::new(&format!("(?-u){}", r.pattern))
                    .unwrap_or_else(|e| panic!("secret rule {}: {e}", r.id))
            })
            .collect();
        Secrets {
            prefilter,
            keyword_rule,
            regexes,
        }
    }

    pub fn scan(&self, s: &str) -> Vec<Hit> {
        let bytes = s.as_bytes();
        let mut wanted = [false; RULES.len()];
        let mut any = false;
        for m in self.prefilter.find_overlapping_iter(bytes) {
            wanted[self.keyword_rule[m.pattern().as_usize()]] = true;
            any = true;
        }
        if !any {
            return Vec::new();
        }
        let mut hits = Vec::new();
        for (i, rule) in RULES.iter().enumerate() {
            if !wanted[i] {
                continue;
            }
            for caps in self.regexes[i].captures_iter(bytes) {
                let Some(m) = caps.get(1).or_else(|| caps.get(0)) else {
                    continue;
                };
                if rule.min_entropy > 0.0 && entropy(m.as_bytes()) < rule.min_entropy {
                    continue;
                }
                if rule.id == "generic_secret" && looks_like_placeholder(m.as_bytes()) {
                    continue;
                }
                hits.push(Hit {
                    rule: rule.id,
                    start: m.start(),
                    end: m.end(),
                    confidence: rule.confidence,
                });
            }
        }
        dedup(hits)
    }
}

/// Values that look like identifiers or placeholders rather than secrets:
/// all letters (a word), or a path.
fn looks_like_placeholder(v: &[u8]) -> bool {
    let letters = v.iter().filter(|b| b.is_ascii_alphabetic()).count();
    let digits = v.iter().filter(|b| b.is_ascii_digit()).count();
    letters == v.len()
        || digits == 0 && v.contains(&b'_')
        || v.starts_with(b"/")
        || v.windows(4).any(|w| w.eq_ignore_ascii_case(b"xxxx"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_compile_and_find_their_format() {
        let s = Secrets::new();
        let hits = s.scan("export AWS_ACCESS_KEY_ID=AKIAIOSFODNN7Q2MPLEX and more");
        assert_eq!(hits.len(), 1, "{hits:?}");
        assert_eq!(hits[0].rule, "aws_access_key_id");
        assert_eq!(
            &"export AWS_ACCESS_KEY_ID=AKIAIOSFODNN7Q2MPLEX and more"[hits[0].start..hits[0].end],
            "AKIAIOSFODNN7Q2MPLEX"
        );
        assert!(s.scan("the quick brown fox").is_empty());
    }
}
