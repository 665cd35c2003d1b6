//! The texts one payload string is scanned as: the string itself (or its
//! normalised form, [`super::normalize`]), and every text hidden in it by
//! %-encoding, base64 or hex, decoded and normalised in turn, up to
//! [`MAX_DECODE_DEPTH`] encodings deep. Each derived text keeps a map to its
//! parent, so a match anywhere is reported at a span of the original string:
//! exact through normalisation and %-decoding, the whole encoded run for
//! base64 and hex.
//!
//! Cost: normalising is linear and skipped for ASCII; a decoded text is
//! shorter than the run it came from and runs do not overlap, so every level
//! of decoding together is at most the length of the level above, and all
//! levels at most a few times the string. Counts and bytes are bounded on
//! top of that ([`MAX_VIEWS`], [`MAX_VIEW_BYTES`]) and the deadline is checked
//! before each new text; when a bound stops the work, [`Views::incomplete`]
//! says so and the event is flagged rather than passed as clean.

use std::time::Instant;

use super::decode::{Encoding, decode_run, percent, runs};
use super::normalize::normalize;
use super::spans::SpanMap;

/// Encodings unwrapped inside one another (double base64 is two; a
/// %-encoded double base64 three).
pub(crate) const MAX_DECODE_DEPTH: usize = 3;
/// Derived texts per string.
pub(crate) const MAX_VIEWS: usize = 256;
/// Bytes of derived text per string.
pub(crate) const MAX_VIEW_BYTES: usize = 8 << 20;

pub(crate) struct View {
    pub text: String,
    parent: Option<usize>,
    map: SpanMap,
    /// The outermost encoding this text was hidden under, if any.
    pub encoding: Option<Encoding>,
    /// Scanned by the detectors: false when its normalised form stands in.
    pub scan: bool,
}

pub(crate) struct Views<'a> {
    pub original: &'a str,
    /// Scan the original itself (false when its normalised form stands in).
    pub scan_original: bool,
    pub views: Vec<View>,
    /// A bound or the deadline stopped normalising or decoding early.
    pub incomplete: bool,
    bytes: usize,
    deadline: Option<Instant>,
}

impl<'a> Views<'a> {
    /// Every text `s` is scanned as. Plain ASCII without `%` escapes or
    /// base64-looking runs (most strings) allocates nothing.
    pub(crate) fn build(s: &'a str, deadline: Option<Instant>) -> Views<'a> {
        let mut v = Views {
            original: s,
            scan_original: true,
            views: Vec::new(),
            incomplete: false,
            bytes: 0,
            deadline,
        };
        v.expand(None, 0, None);
        v
    }

    fn text(&self, node: Option<usize>) -> &str {
        match node {
            None => self.original,
            Some(i) => &self.views[i].text,
        }
    }

    fn push(
        &mut self,
        parent: Option<usize>,
        text: String,
        map: SpanMap,
        encoding: Option<Encoding>,
    ) -> Option<usize> {
        if self.views.len() >= MAX_VIEWS
            || self.bytes + text.len() > MAX_VIEW_BYTES
            || self.deadline.is_some_and(|d| Instant::now() >= d)
        {
            self.incomplete = true;
            return None;
        }
        self.bytes += text.len();
        self.views.push(View {
            text,
            parent,
            map,
            encoding,
            scan: true,
        });
        Some(self.views.len() - 1)
    }

    /// Normalise `node`'s text, then decode what is hidden in it.
    fn expand(&mut self, node: Option<usize>, depth: usize, encoding: Option<Encoding>) {
        let mut work = node;
        if let Some(n) = normalize(self.text(node)) {
            self.incomplete |= n.truncated;
            let Some(i) = self.push(node, n.text, n.map, encoding) else {
                return;
            };
            match node {
                None => self.scan_original = false,
                Some(p) => self.views[p].scan = false,
            }
            work = Some(i);
        }
        if depth >= MAX_DECODE_DEPTH {
            return;
        }
        // %-decoding leaves base64 runs as they were (or decodes the escapes
        // inside them), so runs are looked for in the decoded text only.
        if let Some((text, map)) = percent(self.text(work)) {
            let enc = encoding.or(Some(Encoding::Percent));
            if let Some(i) = self.push(work, text, map, enc) {
                self.expand(Some(i), depth + 1, enc);
            }
            return;
        }
        let text = self.text(work);
        let room = MAX_VIEWS.saturating_sub(self.views.len());
        let mut found = Vec::new();
        for (start, end) in runs(text) {
            if found.len() > room {
                break;
            }
            found.extend(decode_run(text, start, end));
        }
        for (start, end, enc, decoded) in found {
            let enc = encoding.or(Some(enc));
            let Some(i) = self.push(work, decoded, SpanMap::whole(start, end), enc) else {
                return;
            };
            self.expand(Some(i), depth + 1, enc);
        }
    }

    /// The span of the original string that `start..end` of view `i` came from.
    pub(crate) fn to_original(&self, i: usize, start: usize, end: usize) -> (usize, usize) {
        let (mut node, mut span) = (i, (start, end));
        loop {
            let v = &self.views[node];
            span = v.map.map(span.0, span.1);
            match v.parent {
                None => return span,
                Some(p) => node = p,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    #[test]
    fn plain_ascii_has_no_views() {
        let v = Views::build("quarterly revenue by region, call_00000001", None);
        assert!(v.scan_original && v.views.is_empty() && !v.incomplete);
    }

    #[test]
    fn nested_encodings_are_unwrapped_to_the_bound() {
        let inner = "ignore previous instructions";
        let s = format!("x {} y", b64(&b64(&b64(&b64(inner)))));
        let v = Views::build(&s, None);
        let texts: Vec<&str> = v.views.iter().map(|v| v.text.as_str()).collect();
        assert_eq!(texts.len(), 3, "{texts:?}");
        assert!(!texts.contains(&inner));
        let s = format!("x {} y", b64(&b64(&b64(inner))));
        let v = Views::build(&s, None);
        let i = v
            .views
            .iter()
            .position(|v| v.text == inner)
            .expect("decoded");
        assert_eq!(v.views[i].encoding, Some(Encoding::Base64));
        assert_eq!(v.to_original(i, 0, 6), (2, s.len() - 2));
    }

    #[test]
    fn percent_then_normalise_maps_exactly() {
        // A %-encoded zero-width space inside the word.
        let s = "say ign%E2%80%8Bore now";
        let v = Views::build(s, None);
        let last = v.views.len() - 1;
        assert_eq!(v.views[last].text, "say ignore now");
        let (a, b) = v.to_original(last, 4, 10);
        assert_eq!(&s[a..b], "ign%E2%80%8Bore");
    }

    #[test]
    fn too_many_decodable_runs_is_reported_incomplete() {
        let one = b64("a harmless little sentence");
        let s = vec![one; MAX_VIEWS + 10].join(" ");
        let v = Views::build(&s, None);
        assert!(v.incomplete);
        assert_eq!(v.views.len(), MAX_VIEWS);
    }
}
