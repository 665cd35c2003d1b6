//! Personal data: e-mail addresses, phone numbers, payment cards (Luhn),
//! IBANs (mod 97), US social security numbers and IP addresses. Checksums,
//! number ranges and context words keep false positives down.

use std::net::{Ipv4Addr, Ipv6Addr};

use regex::Regex;

use super::{Hit, dedup};

pub struct Pii {
    email: Regex,
    phone: Regex,
    card: Regex,
    iban: Regex,
    ssn: Regex,
    /// An SSN without dashes (`123456789`, `123 45 6789`): reported only
    /// with a context word, since nine digits are often something else.
    ssn_plain: Regex,
    ipv4: Regex,
    ipv6: Regex,
}

impl Default for Pii {
    fn default() -> Self {
        Self::new()
    }
}

fn re(p: &str) -> Regex {
    Regex::new(p).unwrap_or_else(|e| panic!("pii pattern {p}: {e}"))
}

/// Words near a number that make it likely to be what it looks like.
fn context(s: &str, start: usize, words: &[&str]) -> bool {
    let from = s.floor_char_boundary(start.saturating_sub(40));
    let before = s[from..start].to_ascii_lowercase();
    words.iter().any(|w| before.contains(w))
}

/// The Luhn checksum of a digit string.
pub fn luhn(digits: &[u8]) -> bool {
    let mut sum = 0u32;
    for (i, d) in digits.iter().rev().enumerate() {
        let mut v = (d - b'0') as u32;
        if i % 2 == 1 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    sum.is_multiple_of(10)
}

/// An issuer prefix of the major card networks, with a length it issues.
fn card_network(d: &[u8]) -> bool {
    let p = |n: usize| -> u32 {
        d[..n]
            .iter()
            .fold(0u32, |acc, b| acc * 10 + (b - b'0') as u32)
    };
    let len = d.len();
    (d[0] == b'4' && matches!(len, 13 | 16 | 19))
        || ((51..=55).contains(&p(2)) || (2221..=2720).contains(&p(4))) && len == 16
        || matches!(p(2), 34 | 37) && len == 15
        || (p(4) == 6011 || p(2) == 65 || (644..=649).contains(&p(3))) && (16..=19).contains(&len)
        || (3528..=3589).contains(&p(4)) && (16..=19).contains(&len)
        || (matches!(p(2), 36 | 38 | 39) || (300..=305).contains(&p(3))) && (14..=19).contains(&len)
}

/// IBAN lengths by country (the SEPA countries and the most common others).
fn iban_length(country: &str) -> Option<usize> {
    Some(match country {
        "NO" => 15,
        "BE" => 16,
        "DK" | "FI" | "NL" => 18,
        "MK" | "SI" => 19,
        "AT" | "BA" | "EE" | "KZ" | "LT" | "LU" | "XK" => 20,
        "CH" | "CR" | "HR" | "LI" | "LV" => 21,
        "BG" | "BH" | "DE" | "GB" | "GE" | "IE" | "ME" | "RS" => 22,
        "AE" | "GI" | "IL" | "TL" => 23,
        "AD" | "CZ" | "ES" | "MD" | "PK" | "RO" | "SA" | "SE" | "SK" | "TN" | "VG" => 24,
        "PT" => 25,
        "IS" | "TR" => 26,
        "FR" | "GR" | "IT" | "MC" | "MR" | "SM" => 27,
        "AL" | "AZ" | "CY" | "DO" | "GT" | "HU" | "LB" | "PL" => 28,
        "BR" | "PS" | "QA" => 29,
        "JO" | "KW" | "MU" => 30,
        "MT" | "SC" => 31,
        _ => return None,
    })
}

/// ISO 13616 mod-97 check of an IBAN without spaces.
pub fn iban_valid(iban: &str) -> bool {
    let b = iban.as_bytes();
    if b.len() < 15 || iban_length(&iban[..2]) != Some(b.len()) {
        return false;
    }
    let mut rem: u32 = 0;
    for &c in b[4..].iter().chain(&b[..4]) {
        let v = match c {
            b'0'..=b'9' => (c - b'0') as u32,
            b'A'..=b'Z' => (c - b'A') as u32 + 10,
            _ => return false,
        };
        rem = if v >= 10 {
            (rem * 100 + v) % 97
        } else {
            (rem * 10 + v) % 97
        };
    }
    rem == 1
}

impl Pii {
    pub fn new() -> Self {
        Pii {
            email: re(
                r"(?i)\b[a-z0-9](?:[a-z0-9._%+-]{0,63})@(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,24}\b",
            ),
            phone: re(
                r"(?:\+\d{1,3}[\s.-]?)?(?:\(\d{2,4}\)[\s.-]?|\b\d{2,4}[\s.-])\d{3,4}[\s.-]\d{3,4}\b|\+\d{8,15}\b",
            ),
            card: re(r"\b\d(?:[ -]?\d){12,18}\b"),
            iban: re(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b"),
            ssn: re(r"\b(\d{3})-(\d{2})-(\d{4})\b"),
            ssn_plain: re(r"\b(\d{3}) ?(\d{2}) ?(\d{4})\b"),
            ipv4: re(r"\b(?:\d{1,3}\.){3}\d{1,3}\b"),
            ipv6: re(r"(?i)\b[0-9a-f]{0,4}(?::[0-9a-f]{0,4}){2,7}\b"),
        }
    }

    /// US social security numbers: dashed ones always (more confident with a
    /// context word), undashed ones only with a context word.
    fn ssns(&self, s: &str, hits: &mut Vec<Hit>) {
        const WORDS: &[&str] = &["ssn", "social security", "social-security", "taxpayer"];
        for (re, dashed) in [(&self.ssn, true), (&self.ssn_plain, false)] {
            for c in re.captures_iter(s) {
                let (Some(all), Some(a), Some(g), Some(n)) =
                    (c.get(0), c.get(1), c.get(2), c.get(3))
                else {
                    continue;
                };
                let area: u32 = a.as_str().parse().unwrap_or(0);
                let valid = area != 0
                    && area != 666
                    && area < 900
                    && g.as_str() != "00"
                    && n.as_str() != "0000";
                if !valid {
                    continue;
                }
                let ctx = context(s, all.start(), WORDS);
                if !dashed && !ctx {
                    continue;
                }
                hits.push(Hit {
                    rule: "us_ssn",
                    start: all.start(),
                    end: all.end(),
                    confidence: if ctx { 0.95 } else { 0.6 },
                });
            }
        }
    }

    /// A JSON number (its text as serde_json writes it) under the member
    /// `key`: a card number or SSN sent as a number rather than a string.
    /// The member name is the context a string would have had before the
    /// number ("card", "ssn"); an SSN sent as a number has lost its leading
    /// zeros, so one of 7 or 8 digits under an SSN-like key is padded back.
    /// Hits cover the whole number.
    pub fn scan_number(&self, key: &str, number: &str) -> Vec<Hit> {
        let digits = number.bytes().filter(u8::is_ascii_digit).count();
        if digits < 7 {
            return Vec::new();
        }
        let key = &key[..key.floor_char_boundary(32)];
        let key = key.to_ascii_lowercase().replace(['_', '-'], " ");
        let ssn_key = ["ssn", "social security", "taxpayer"]
            .iter()
            .any(|w| key.contains(w));
        let padded;
        let number_text = if ssn_key && digits < 9 && number.bytes().all(|b| b.is_ascii_digit()) {
            padded = format!("{number:0>9}");
            padded.as_str()
        } else {
            number
        };
        let text = format!("{key}: {number_text}");
        let at = key.len() + 2;
        let mut hits: Vec<Hit> = self
            .scan(&text)
            .into_iter()
            .filter(|h| h.start >= at && matches!(h.rule, "payment_card" | "us_ssn"))
            .map(|h| Hit {
                start: 0,
                end: number.len(),
                ..h
            })
            .collect();
        hits.truncate(1);
        hits
    }

    pub fn scan(&self, s: &str) -> Vec<Hit> {
        let mut hits = Vec::new();
        if s.contains('@') {
            for m in self.email.find_iter(s) {
                hits.push(Hit {
                    rule: "email",
                    start: m.start(),
                    end: m.end(),
                    confidence: 0.9,
                });
            }
        }
        let has_digit = s.bytes().any(|b| b.is_ascii_digit());
        if !has_digit {
            return dedup(hits);
        }
        for m in self.card.find_iter(s) {
            let digits: Vec<u8> = m.as_str().bytes().filter(u8::is_ascii_digit).collect();
            if (13..=19).contains(&digits.len()) && luhn(&digits) && card_network(&digits) {
                let ctx = context(
                    s,
                    m.start(),
                    &["card", "visa", "mastercard", "amex", "cc", "payment"],
                );
                hits.push(Hit {
                    rule: "payment_card",
                    start: m.start(),
                    end: m.end(),
                    confidence: if ctx { 0.98 } else { 0.9 },
                });
            }
        }
        for m in self.iban.find_iter(s) {
            let compact: String = m.as_str().chars().filter(|c| *c != ' ').collect();
            if iban_valid(&compact) {
                hits.push(Hit {
                    rule: "iban",
                    start: m.start(),
                    end: m.end(),
                    confidence: 0.95,
                });
            }
        }
        self.ssns(s, &mut hits);
        for m in self.phone.find_iter(s) {
            let digits = m.as_str().bytes().filter(u8::is_ascii_digit).count();
            if !(10..=15).contains(&digits) {
                continue;
            }
            let ctx = context(
                s,
                m.start(),
                &[
                    "phone", "tel", "mobile", "cell", "call", "sms", "whatsapp", "fax",
                ],
            );
            let international = m.as_str().starts_with('+');
            // Without a leading + or a context word, a bare digit group is too
            // often an id, an amount or a date to report.
            if !(international || ctx) {
                continue;
            }
            hits.push(Hit {
                rule: "phone_number",
                start: m.start(),
                end: m.end(),
                confidence: if ctx { 0.9 } else { 0.7 },
            });
        }
        for m in self.ipv4.find_iter(s) {
            let Ok(ip) = m.as_str().parse::<Ipv4Addr>() else {
                continue;
            };
            if ip.is_unspecified() || ip.is_loopback() || ip.is_broadcast() {
                continue;
            }
            // "version 1.2.3.4", "v10.0.0.1": release numbers, not hosts.
            let before = &s[s.floor_char_boundary(m.start().saturating_sub(1))..m.start()];
            if before.eq_ignore_ascii_case("v")
                || context(s, m.start(), &["version", "release", "build"])
            {
                continue;
            }
            hits.push(Hit {
                rule: "ip_address",
                start: m.start(),
                end: m.end(),
                confidence: if ip.is_private() { 0.5 } else { 0.7 },
            });
        }
        if s.contains("::") || s.matches(':').count() >= 7 {
            for m in self.ipv6.find_iter(s) {
                let Ok(ip) = m.as_str().parse::<Ipv6Addr>() else {
                    continue;
                };
                if ip.is_unspecified() || ip.is_loopback() || m.as_str().len() < 6 {
                    continue;
                }
                hits.push(Hit {
                    rule: "ip_address",
                    start: m.start(),
                    end: m.end(),
                    confidence: 0.7,
                });
            }
        }
        dedup(hits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums() {
        assert!(luhn(b"4111111111111111"));
        assert!(!luhn(b"4111111111111112"));
        assert!(iban_valid("GB82WEST12345698765432"));
        assert!(iban_valid("DE89370400440532013000"));
        assert!(!iban_valid("DE89370400440532013001"));
    }
}
