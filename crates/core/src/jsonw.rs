//! Writing JSON text straight into a byte buffer, for the two hot paths that
//! emit a fixed shape per event: the hash envelope (every append and every
//! verification) and the export line (streamed stored bytes). Strings are
//! escaped exactly as serde_json escapes them (its compact output is what
//! the envelope was defined by, and what tests compare against); a string
//! with nothing to escape, the usual case, is copied as is.

/// Whether serde_json would escape any byte of `s`: a control character, a
/// quote or a backslash (nothing else, not even DEL or non-ASCII).
fn needs_escape(s: &str) -> bool {
    s.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\')
}

/// `s` as a JSON string.
pub fn push_str(out: &mut Vec<u8>, s: &str) {
    if needs_escape(s) {
        // Writing to a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, s);
        return;
    }
    out.reserve(s.len() + 2);
    out.push(b'"');
    out.extend_from_slice(s.as_bytes());
    out.push(b'"');
}

/// A digest as a quoted lower-case hex string.
pub fn push_hex32(out: &mut Vec<u8>, d: &[u8; 32]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut quoted = [b'"'; 66];
    for (i, b) in d.iter().enumerate() {
        quoted[1 + 2 * i] = DIGITS[usize::from(b >> 4)];
        quoted[2 + 2 * i] = DIGITS[usize::from(b & 0x0f)];
    }
    out.extend_from_slice(&quoted);
}

/// A non-negative integer.
pub fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// An object written member by member, in the order given.
pub struct Obj<'a> {
    out: &'a mut Vec<u8>,
    empty: bool,
}

impl<'a> Obj<'a> {
    pub fn new(out: &'a mut Vec<u8>) -> Self {
        out.push(b'{');
        Obj { out, empty: true }
    }

    /// The member's name (ASCII with nothing to escape, as every name here
    /// is); its value is written next.
    pub fn key(&mut self, k: &str) -> &mut Vec<u8> {
        if !self.empty {
            self.out.push(b',');
        }
        self.empty = false;
        self.out.push(b'"');
        self.out.extend_from_slice(k.as_bytes());
        self.out.extend_from_slice(b"\":");
        self.out
    }

    pub fn str(&mut self, k: &str, v: &str) {
        push_str(self.key(k), v);
    }

    pub fn opt_str(&mut self, k: &str, v: Option<&str>) {
        match v {
            Some(v) => self.str(k, v),
            None => self.null(k),
        }
    }

    pub fn hex(&mut self, k: &str, v: &[u8; 32]) {
        push_hex32(self.key(k), v);
    }

    pub fn opt_hex(&mut self, k: &str, v: Option<&[u8; 32]>) {
        match v {
            Some(v) => self.hex(k, v),
            None => self.null(k),
        }
    }

    pub fn time(&mut self, k: &str, v: crate::Micros) {
        let out = self.key(k);
        out.push(b'"');
        v.write_rfc3339(out);
        out.push(b'"');
    }

    pub fn opt_time(&mut self, k: &str, v: Option<crate::Micros>) {
        match v {
            Some(v) => self.time(k, v),
            None => self.null(k),
        }
    }

    pub fn u64(&mut self, k: &str, v: u64) {
        push_u64(self.key(k), v);
    }

    /// Stored JSON text, copied as is.
    pub fn raw(&mut self, k: &str, json: &str) {
        self.key(k).extend_from_slice(json.as_bytes());
    }

    pub fn null(&mut self, k: &str) {
        self.key(k).extend_from_slice(b"null");
    }

    pub fn end(self) {
        self.out.push(b'}');
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn strings_are_escaped_as_serde_json_does(s in any::<String>()) {
            let mut ours = Vec::new();
            push_str(&mut ours, &s);
            prop_assert_eq!(ours, serde_json::to_vec(&s).unwrap());
        }

        #[test]
        fn digests_are_quoted_lower_case_hex(d in any::<[u8; 32]>()) {
            let mut ours = Vec::new();
            push_hex32(&mut ours, &d);
            prop_assert_eq!(ours, serde_json::to_vec(&hex::encode(d)).unwrap());
        }

        #[test]
        fn integers_are_written_as_serde_json_does(n in any::<u64>()) {
            let mut ours = Vec::new();
            push_u64(&mut ours, n);
            prop_assert_eq!(ours, serde_json::to_vec(&n).unwrap());
        }
    }

    #[test]
    fn edge_strings_and_integers() {
        for s in ["", "\"", "\\", "\u{7f}", "\u{1f}", "é€😀", "a\nb\tc\u{0}"] {
            let mut ours = Vec::new();
            push_str(&mut ours, s);
            assert_eq!(ours, serde_json::to_vec(s).unwrap(), "{s:?}");
        }
        for n in [0, 9, 10, u64::MAX] {
            let mut ours = Vec::new();
            push_u64(&mut ours, n);
            assert_eq!(ours, n.to_string().into_bytes());
        }
        let mut out = Vec::new();
        let mut o = Obj::new(&mut out);
        o.str("a", "x");
        o.null("b");
        o.u64("c", 7);
        o.raw("d", "{\"e\":[1]}");
        o.end();
        assert_eq!(out, br#"{"a":"x","b":null,"c":7,"d":{"e":[1]}}"#);
    }
}
