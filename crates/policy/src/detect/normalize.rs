//! Text as the reader sees it, for detectors that look for ASCII words and
//! digits: one zero-width space, a soft hyphen, full-width or mathematical
//! letters, a Cyrillic `о` or a combining accent must not hide
//! "ignore previous instructions", an AWS key or a card number.
//!
//! Per character of the input:
//! - characters nobody sees are dropped: general category Cf (zero-width
//!   space and joiners, soft hyphen, BOM, bidi controls, tag characters …)
//!   and the other default-ignorable code points (variation selectors,
//!   Hangul fillers, the combining grapheme joiner);
//! - the compatibility decomposition (Unicode's NFKD, the first half of
//!   NFKC, from the `unicode-normalization` crate) is taken and its combining
//!   marks dropped: `Ｉ` `𝐈` `Í` `Ｉ` become `I`, `①` `1`, `ﬁ` `fi`;
//! - a small table folds what NFKC leaves alone but a reader takes for
//!   Latin: Cyrillic, Greek and Armenian lookalikes, Latin small capitals,
//!   dotless i, the decimal digits of other scripts, Unicode dashes and
//!   ideographic full stops.
//!
//! Recomposition (NFKC's second half) is not needed: the marks it would
//! compose are dropped. Hangul syllables are kept whole (decomposed they
//! would only turn Korean into jamo). Working per character keeps every
//! output character traceable to one input character ([`SpanMap`]), at one
//! table lookup per non-ASCII character; ASCII is copied in runs, and
//! all-ASCII text is returned as is without a pass at all.

use unicode_normalization::char::{decompose_compatible, is_combining_mark};

use super::spans::SpanMap;

/// How many bytes a normalised text may grow beyond its input. Ordinary text
/// shrinks (full-width and accented letters become ASCII); a few characters
/// expand more than tenfold (U+FDFA is 18 characters), and a megabyte of them
/// would cost the scan six times its size. Past this bound the rest of the
/// input is copied unchanged and the caller is told (the event is flagged).
pub(crate) const MAX_GROWTH_BYTES: usize = 4 << 10;

/// A normalised text, where it came from, and whether the bound cut it short.
pub(crate) struct Normalized {
    pub text: String,
    pub map: SpanMap,
    pub truncated: bool,
}

/// The normalised form of `s`, or `None` when it is the same text.
pub(crate) fn normalize(s: &str) -> Option<Normalized> {
    if s.is_ascii() {
        return None;
    }
    let bytes = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut map = SpanMap::default();
    let mut changed = false;
    let mut truncated = false;
    let max = s.len() + MAX_GROWTH_BYTES;
    let mut i = 0;
    while i < s.len() {
        // An ASCII run, copied whole.
        let run = bytes[i..]
            .iter()
            .position(|b| !b.is_ascii())
            .unwrap_or(bytes.len() - i);
        if run > 0 {
            map.identity(out.len(), i, run);
            out.push_str(&s[i..i + run]);
            i += run;
            continue;
        }
        let Some(c) = s[i..].chars().next() else {
            break;
        };
        let len = c.len_utf8();
        if out.len() >= max {
            map.identity(out.len(), i, s.len() - i);
            out.push_str(&s[i..]);
            truncated = true;
            break;
        }
        if ignorable(c) || is_combining_mark(c) {
            changed = true;
            i += len;
            continue;
        }
        let at = out.len();
        if is_hangul_syllable(c) {
            out.push(c);
        } else {
            decompose_compatible(c, |d| {
                if !(ignorable(d) || is_combining_mark(d)) {
                    out.push(fold(d).unwrap_or(d));
                }
            });
        }
        if out[at..] == s[i..i + len] {
            map.identity(at, i, len);
        } else {
            changed = true;
            if out.len() > at {
                map.unit(at, i, i + len);
            }
        }
        i += len;
    }
    changed.then_some(Normalized {
        text: out,
        map,
        truncated,
    })
}

fn is_hangul_syllable(c: char) -> bool {
    ('\u{AC00}'..='\u{D7A3}').contains(&c)
}

/// General category Cf, and the other Default_Ignorable_Code_Point
/// characters: rendered as nothing, so they can sit inside a word unseen.
pub(crate) fn ignorable(c: char) -> bool {
    matches!(c as u32,
        0x00AD | 0x034F | 0x061C | 0x0600..=0x0605 | 0x06DD | 0x070F | 0x0890..=0x0891
        | 0x08E2 | 0x115F..=0x1160 | 0x17B4..=0x17B5 | 0x180B..=0x180F | 0x200B..=0x200F
        | 0x202A..=0x202E | 0x2060..=0x206F | 0x3164 | 0xFE00..=0xFE0F | 0xFEFF | 0xFFA0
        | 0xFFF0..=0xFFFB | 0x110BD | 0x110CD | 0x13430..=0x1343F | 0x1BCA0..=0x1BCA3
        | 0x1D173..=0x1D17A | 0xE0000..=0xE0FFF)
}

/// Zeros of the decimal digit blocks NFKC leaves as they are (Arabic-Indic,
/// Devanagari, Bengali, Thai …): each block is ten consecutive code points.
const DIGIT_ZEROS: &[u32] = &[
    0x0660, 0x06F0, 0x07C0, 0x0966, 0x09E6, 0x0A66, 0x0AE6, 0x0B66, 0x0BE6, 0x0C66, 0x0CE6, 0x0D66,
    0x0DE6, 0x0E50, 0x0ED0, 0x0F20, 0x1040, 0x1090, 0x17E0, 0x1810, 0x1946, 0x19D0, 0x1A80, 0x1A90,
    0x1B50, 0x1BB0, 0x1C40, 0x1C50, 0xA620, 0xA8D0, 0xA900, 0xA9D0, 0xA9F0, 0xAA50, 0xABF0,
    0x104A0, 0x11066, 0x110F0, 0x11136, 0x111D0, 0x116C0, 0x1E950,
];

/// The Latin letter, ASCII digit or punctuation a reader takes `c` for,
/// where NFKC does not already say so. Deliberately small: common
/// lookalikes of the letters and digits the detectors' words are made of.
pub(crate) fn fold(c: char) -> Option<char> {
    let n = c as u32;
    if n < 0x80 {
        return None;
    }
    if let Some(l) = fold_letter(c) {
        return Some(l);
    }
    if n < DIGIT_ZEROS[0] {
        return None;
    }
    let z = DIGIT_ZEROS.iter().find(|&&z| (z..z + 10).contains(&n))?;
    char::from_digit(n - z, 10)
}

fn fold_letter(c: char) -> Option<char> {
    Some(match c {
        // Cyrillic
        'а' => 'a',
        'е' | 'ё' => 'e',
        'һ' => 'h',
        'і' | 'ї' => 'i',
        'ј' => 'j',
        'к' => 'k',
        'ӏ' => 'l',
        'о' => 'o',
        'р' => 'p',
        'ԛ' => 'q',
        'с' => 'c',
        'ѕ' => 's',
        'у' => 'y',
        'ԝ' => 'w',
        'х' => 'x',
        'ԁ' => 'd',
        'А' => 'A',
        'В' => 'B',
        'Е' => 'E',
        'Н' => 'H',
        'І' | 'Ӏ' => 'I',
        'Ј' => 'J',
        'К' => 'K',
        'М' => 'M',
        'О' => 'O',
        'Р' => 'P',
        'Ԛ' => 'Q',
        'С' => 'C',
        'Ѕ' => 'S',
        'Т' => 'T',
        'Ү' => 'Y',
        'Ԝ' => 'W',
        'Х' => 'X',
        // Greek
        'α' => 'a',
        'ε' => 'e',
        'ι' => 'i',
        'κ' => 'k',
        'ν' => 'v',
        'ο' => 'o',
        'ρ' => 'p',
        'ϲ' => 'c',
        'ϳ' => 'j',
        'τ' => 't',
        'υ' => 'u',
        'χ' => 'x',
        'γ' => 'y',
        'Α' => 'A',
        'Β' => 'B',
        'Ε' => 'E',
        'Ζ' => 'Z',
        'Η' => 'H',
        'Ι' => 'I',
        'Κ' => 'K',
        'Μ' => 'M',
        'Ν' => 'N',
        'Ο' => 'O',
        'Ρ' => 'P',
        'Τ' => 'T',
        'Υ' => 'Y',
        'Χ' => 'X',
        'Ϲ' => 'C',
        // Armenian
        'հ' => 'h',
        'ո' => 'n',
        'ս' => 'u',
        'օ' => 'o',
        // Latin letters outside ASCII that read as ASCII ones, and small capitals
        'ı' | 'ɩ' => 'i',
        'ȷ' => 'j',
        'ɑ' => 'a',
        'ɡ' => 'g',
        'ᴀ' => 'a',
        'ʙ' => 'b',
        'ᴄ' => 'c',
        'ᴅ' => 'd',
        'ᴇ' => 'e',
        'ꜰ' => 'f',
        'ɢ' => 'g',
        'ʜ' => 'h',
        'ɪ' => 'i',
        'ᴊ' => 'j',
        'ᴋ' => 'k',
        'ʟ' => 'l',
        'ᴍ' => 'm',
        'ɴ' => 'n',
        'ᴏ' => 'o',
        'ᴘ' => 'p',
        'ʀ' => 'r',
        'ꜱ' => 's',
        'ᴛ' => 't',
        'ᴜ' => 'u',
        'ᴠ' => 'v',
        'ᴡ' => 'w',
        'ʏ' => 'y',
        'ᴢ' => 'z',
        // Dashes and minus signs (an SSN or card written with U+2010), and
        // full stops (IDNA treats U+3002 as a dot in domain names).
        '\u{2010}'..='\u{2015}' | '\u{2043}' | '\u{2212}' | '\u{FE58}' => '-',
        '\u{3002}' => '.',
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(s: &str) -> String {
        normalize(s).map_or_else(|| s.to_owned(), |n| n.text)
    }

    #[test]
    fn what_a_reader_sees() {
        assert!(normalize("plain ascii").is_none());
        assert_eq!(norm("ig\u{200B}no\u{AD}re"), "ignore");
        assert_eq!(norm("Ｉｇｎｏｒｅ　ａｌｌ"), "Ignore all");
        assert_eq!(norm("𝐢𝐠𝐧𝐨𝐫𝐞"), "ignore");
        assert_eq!(norm("Ignоrе"), "Ignore"); // Cyrillic о, е
        assert_eq!(norm("I\u{301}gnore pre\u{301}vious"), "Ignore previous");
        assert_eq!(norm("ɪɢɴᴏʀᴇ"), "ignore");
        assert_eq!(norm("٤١١١ ４１１１"), "4111 4111");
        assert_eq!(norm("123\u{2010}45\u{2011}6789"), "123-45-6789");
        assert_eq!(norm("한국어 text"), "한국어 text");
        // Text in other scripts keeps its letters (only lookalikes fold).
        assert_eq!(norm("Привет"), "Пpивeт");
    }

    #[test]
    fn spans_map_back_to_the_original() {
        let s = "key AKIA\u{200B}UJZDEGXDNCF32EPF ok";
        let n = normalize(s).expect("changed");
        let start = n.text.find("AKIA").expect("found");
        let end = start + 20;
        let (a, b) = n.map.map(start, end);
        assert_eq!(&s[a..b], "AKIA\u{200B}UJZDEGXDNCF32EPF");
        let s = "Ｉｇｎｏｒｅ";
        let n = normalize(s).expect("changed");
        assert_eq!(n.map.map(1, 3), (3, 9));
    }

    #[test]
    fn expansion_is_bounded() {
        let s = "\u{FDFA}".repeat(10_000);
        let n = normalize(&s).expect("changed");
        assert!(n.truncated);
        assert!(n.text.len() <= 2 * s.len() + MAX_GROWTH_BYTES);
        let (a, b) = n.map.map(0, n.text.len());
        assert_eq!((a, b), (0, s.len()));
    }
}
