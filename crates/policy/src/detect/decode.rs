//! Encodings that hide text from a regex: %-encoding (with `+` for space in
//! form-encoded text), base64 (standard and URL-safe) and hex. Each decoder
//! is one linear pass; the caller ([`super::views`]) bounds how deep and how
//! much is decoded.

use base64::Engine;

use super::spans::SpanMap;

/// Shortest base64 run tried, padding included: 16 characters are 10 to 12
/// bytes, enough for an SSN; shorter runs are words and identifiers.
pub(crate) const MIN_BASE64_RUN: usize = 16;
/// Shortest hex run tried (10 decoded bytes).
const MIN_HEX_RUN: usize = 20;

/// How a derived text was encoded in its parent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Percent,
    Base64,
    Hex,
}

impl Encoding {
    pub fn as_str(self) -> &'static str {
        match self {
            Encoding::Percent => "percent",
            Encoding::Base64 => "base64",
            Encoding::Hex => "hex",
        }
    }
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// The byte `%XX` at `i` stands for, if it is one.
fn escape_at(b: &[u8], i: usize) -> Option<u8> {
    if b.get(i) != Some(&b'%') {
        return None;
    }
    Some(hex_value(*b.get(i + 1)?)? << 4 | hex_value(*b.get(i + 2)?)?)
}

/// `s` with its `%XX` escapes decoded (where they form UTF-8; others stay as
/// written) and, when `s` has no whitespace at all (form encoding), `+` read
/// as a space. `None` when nothing was decoded.
pub(crate) fn percent(s: &str) -> Option<(String, SpanMap)> {
    let b = s.as_bytes();
    if !s.contains('%') || !(0..b.len()).any(|i| escape_at(b, i).is_some()) {
        return None;
    }
    let plus_is_space = !s.bytes().any(|c| c.is_ascii_whitespace());
    let mut out = String::with_capacity(s.len());
    let mut map = SpanMap::default();
    let mut changed = false;
    // Everything before the first escape is copied as it is (but for `+`).
    let mut i = 0;
    let mut literal_from = 0;
    let flush = |out: &mut String, map: &mut SpanMap, from: usize, to: usize| {
        if to > from {
            map.identity(out.len(), from, to - from);
            out.push_str(&s[from..to]);
        }
    };
    while i < b.len() {
        if plus_is_space && b[i] == b'+' {
            flush(&mut out, &mut map, literal_from, i);
            map.unit(out.len(), i, i + 1);
            out.push(' ');
            changed = true;
            i += 1;
            literal_from = i;
            continue;
        }
        if escape_at(b, i).is_none() {
            i += 1;
            continue;
        }
        flush(&mut out, &mut map, literal_from, i);
        // A run of consecutive escapes: decode the bytes, keep the valid
        // UTF-8 characters, leave invalid bytes as their `%XX` text.
        let run_start = i;
        let mut bytes = Vec::new();
        while let Some(v) = escape_at(b, i) {
            bytes.push(v);
            i += 3;
        }
        let mut pos = run_start;
        for chunk in bytes.utf8_chunks() {
            for c in chunk.valid().chars() {
                let n = c.len_utf8() * 3;
                map.unit(out.len(), pos, pos + n);
                out.push(c);
                pos += n;
                changed = true;
            }
            let n = chunk.invalid().len() * 3;
            if n > 0 {
                map.identity(out.len(), pos, n);
                out.push_str(&s[pos..pos + n]);
                pos += n;
            }
        }
        literal_from = i;
    }
    flush(&mut out, &mut map, literal_from, b.len());
    changed.then_some((out, map))
}

fn base64_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'-' | b'_')
}

/// Byte ranges of `s` that may be base64 or hex: runs of the base64
/// alphabets (both) with up to two `=`, at least [`MIN_BASE64_RUN`] long.
pub(crate) fn runs(s: &str) -> impl Iterator<Item = (usize, usize)> + '_ {
    let b = s.as_bytes();
    let mut i = 0;
    std::iter::from_fn(move || {
        while i < b.len() {
            if !base64_char(b[i]) {
                i += 1;
                continue;
            }
            let start = i;
            while i < b.len() && base64_char(b[i]) {
                i += 1;
            }
            let mut end = i;
            while end < b.len() && end - i < 2 && b[end] == b'=' {
                end += 1;
            }
            i = end;
            if end - start >= MIN_BASE64_RUN {
                return Some((start, end));
            }
        }
        None
    })
}

/// Decode one run found by [`runs`]: hex if it is all hex digits, else
/// base64 (standard, then URL-safe; a run mixing both alphabets is tried by
/// its standard-alphabet pieces). Only text is kept: UTF-8 that is mostly
/// printable. Each result is `(start, end, encoding, text)` with the span of
/// the encoded piece in `s`.
pub(crate) fn decode_run(
    s: &str,
    start: usize,
    end: usize,
) -> Vec<(usize, usize, Encoding, String)> {
    let run = &s[start..end];
    let body = run.trim_end_matches('=');
    let hex = body.strip_prefix("0x").unwrap_or(body);
    if hex.len() >= MIN_HEX_RUN
        && hex.len().is_multiple_of(2)
        && hex.bytes().all(|c| c.is_ascii_hexdigit())
        && let Some(text) = hex_decode(hex).and_then(printable)
    {
        return vec![(start, end, Encoding::Hex, text)];
    }
    if let Some(text) = base64_decode(body) {
        return vec![(start, end, Encoding::Base64, text)];
    }
    let mixed = body.bytes().any(|c| matches!(c, b'+' | b'/'))
        && body.bytes().any(|c| matches!(c, b'-' | b'_'));
    if !mixed {
        return Vec::new();
    }
    let mut out = Vec::new();
    let mut at = start;
    for piece in body.split(['-', '_']) {
        if piece.len() >= MIN_BASE64_RUN
            && let Some(text) = base64_decode(piece)
        {
            out.push((at, at + piece.len(), Encoding::Base64, text));
        }
        at += piece.len() + 1;
    }
    out
}

fn base64_decode(body: &str) -> Option<String> {
    use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
    STANDARD_NO_PAD
        .decode(body)
        .or_else(|_| URL_SAFE_NO_PAD.decode(body))
        .ok()
        .and_then(printable)
}

fn hex_decode(s: &str) -> Option<Vec<u8>> {
    s.as_bytes()
        .chunks(2)
        .map(|p| Some(hex_value(p[0])? << 4 | hex_value(*p.get(1)?)?))
        .collect()
}

/// Decoded bytes that read as text (UTF-8, mostly printable): random or
/// binary data (hashes, keys, images) almost never does, and is not
/// scanned.
fn printable(b: Vec<u8>) -> Option<String> {
    let s = String::from_utf8(b).ok()?;
    let mut all = 0usize;
    let mut ok = 0usize;
    for c in s.chars() {
        all += 1;
        if !c.is_control() || c.is_whitespace() {
            ok += 1;
        }
    }
    (ok * 10 >= all * 9).then_some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decodes_utf8_and_maps_each_character_to_its_escapes() {
        let s = "to=bob%40example.org&n=%C3%A9%FF";
        let (t, m) = percent(s).expect("decoded");
        assert_eq!(t, "to=bob@example.org&n=é%FF");
        let at = t.find('@').expect("at");
        assert_eq!(m.map(at, at + 1), (6, 9));
        let e = t.find('é').expect("é");
        assert_eq!(&s[m.map(e, e + 2).0..m.map(e, e + 2).1], "%C3%A9");
        assert_eq!(
            percent("Ignore+all+previous%21").map(|p| p.0),
            Some("Ignore all previous!".into())
        );
        // With whitespace, `+` is a plus.
        assert_eq!(percent("1+1 = %32").map(|p| p.0), Some("1+1 = 2".into()));
        assert!(percent("100% sure, 50%-off").is_none());
    }

    #[test]
    fn runs_and_decoding() {
        let s = "x aGVsbG8gd29ybGQsIHRoaXMgaXMgYSBwbGFpbiBtZXNzYWdl== y";
        let r: Vec<_> = runs(s).collect();
        assert_eq!(r, vec![(2, 52)]);
        let d = decode_run(s, 2, 52);
        assert_eq!(d[0].3, "hello world, this is a plain message");
        assert_eq!(d[0].2, Encoding::Base64);
        let h = "3c7c696d5f73746172747c3e73797374656d";
        assert_eq!(decode_run(h, 0, h.len())[0].3, "<|im_start|>system");
        // A hash is hex, but not text.
        let sha = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        assert!(decode_run(sha, 0, sha.len()).is_empty());
    }
}
