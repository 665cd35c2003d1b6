//! Where each byte of a derived text (normalised or decoded) came from in the
//! text it was derived from, so a match found in the derived text is
//! reported at a span of the payload string as received — the span the
//! console shows and redaction replaces.
//!
//! A map is a sorted list of segments that together cover the derived text.
//! An *identity* segment was copied unchanged, so offsets inside it map byte
//! for byte. Any other segment (a folded homoglyph, a decoded `%41`, a whole
//! base64 run) maps as one unit: a match that starts or ends inside it is
//! widened to all of it. Segment edges are character boundaries on both
//! sides, so a mapped span always is too. Lookups are binary searches, and a
//! map holds at most one segment per source character: linear in the input.

/// One piece of the derived text: bytes from `at` up to the next segment's
/// `at` came from `from..to` of the source.
#[derive(Debug, Clone, Copy)]
struct Seg {
    at: u32,
    from: u32,
    to: u32,
    identity: bool,
}

/// Offsets are kept as u32: derived texts are bounded far below 4 GiB
/// (payloads are at most 1 MiB), and a map of a megabyte of folded text is
/// then 16 bytes per character instead of 32.
#[derive(Debug, Default)]
pub(crate) struct SpanMap {
    segs: Vec<Seg>,
}

fn u(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

impl SpanMap {
    /// `len` bytes at `at` copied unchanged from `from`.
    pub(crate) fn identity(&mut self, at: usize, from: usize, len: usize) {
        if len == 0 {
            return;
        }
        if let Some(last) = self.segs.last_mut()
            && last.identity
            && last.to == u(from)
            && last.at + (last.to - last.from) == u(at)
        {
            last.to = u(from + len);
            return;
        }
        self.segs.push(Seg {
            at: u(at),
            from: u(from),
            to: u(from + len),
            identity: true,
        });
    }

    /// The bytes from `at` (up to the next segment) stand for `from..to`.
    pub(crate) fn unit(&mut self, at: usize, from: usize, to: usize) {
        self.segs.push(Seg {
            at: u(at),
            from: u(from),
            to: u(to),
            identity: false,
        });
    }

    /// A map in which the whole derived text stands for `from..to`.
    pub(crate) fn whole(from: usize, to: usize) -> SpanMap {
        let mut m = SpanMap::default();
        m.unit(0, from, to);
        m
    }

    /// The source span of the derived span `start..end`.
    pub(crate) fn map(&self, start: usize, end: usize) -> (usize, usize) {
        if self.segs.is_empty() {
            return (0, 0);
        }
        let (start, end) = (u(start), u(end));
        // The segment holding byte `start`, and the one holding byte `end - 1`.
        let first = self.segs.partition_point(|s| s.at <= start).max(1) - 1;
        let s = self.segs[first];
        let from = if s.identity {
            (s.from + (start - s.at)).min(s.to)
        } else {
            s.from
        };
        if end <= start {
            return (from as usize, from as usize);
        }
        let last = self.segs.partition_point(|s| s.at < end).max(1) - 1;
        let e = self.segs[last];
        let to = if e.identity {
            (e.from + (end - e.at)).min(e.to)
        } else {
            e.to
        };
        (from as usize, to.max(from) as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_runs_map_byte_for_byte_and_units_widen() {
        // Source "ab\u{200b}cdé" -> derived "abcde": "ab" and "cd" copied,
        // the zero-width space dropped, "é" folded to "e".
        let mut m = SpanMap::default();
        m.identity(0, 0, 2);
        m.identity(2, 5, 2);
        m.unit(4, 7, 9);
        assert_eq!(m.segs.len(), 3);
        assert_eq!(m.map(0, 5), (0, 9));
        assert_eq!(m.map(1, 3), (1, 6));
        // A match ending where the dropped character was excludes it.
        assert_eq!(m.map(0, 2), (0, 2));
        assert_eq!(m.map(4, 5), (7, 9));
        // Adjacent identity copies merge.
        let mut m = SpanMap::default();
        m.identity(0, 0, 2);
        m.identity(2, 2, 3);
        assert_eq!(m.segs.len(), 1);
        assert_eq!(m.map(1, 4), (1, 4));
    }
}
