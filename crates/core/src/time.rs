//! Timestamps: microseconds since the Unix epoch, rendered as RFC 3339 in UTC
//! with exactly six fractional digits, so the same instant always has the same text.
//!
//! # The representable range
//!
//! A timestamp is hashed as its canonical text (docs/hash-chain.md), and that
//! text has a four-digit year. So the ledger holds exactly the instants from
//! `0001-01-01T00:00:00.000000Z` to `9999-12-31T23:59:59.999999Z` in UTC
//! ([`Micros::MIN`] ..= [`Micros::MAX`], well inside `i64` microseconds), and
//! refuses anything else. The offset is applied first: `9999-12-31T23:59:59-23:59`
//! is in year 10000 UTC and is refused; before this rule it was stored and
//! hashed as `1970-01-01…`, and a year-0 instant as `-001-…` (issue 13).
//! Year 0000 is left out although RFC 3339 can spell it: common readers
//! (Python's `datetime`, which an auditor may use on an export; .NET's
//! `DateTime`) start at year 1, and an export should parse everywhere.
//!
//! Within the range, rendering and parsing are inverse: `parse(render(t)) == t`
//! for every `t`, and `render(parse(s))` is `s` in canonical form (a property
//! test checks both over the whole range).

use std::fmt;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Micros(pub i64);

/// Why a client's timestamp was refused. The text follows the field name in
/// error messages (`events[0].timestamp: is not …`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadTimestamp {
    #[error(
        "is not an RFC 3339 / ISO 8601 timestamp with a time zone (e.g. 2026-02-08T10:00:00.000Z)"
    )]
    Syntax,
    #[error(
        "is outside the range the ledger can represent: 0001-01-01T00:00:00Z to \
         9999-12-31T23:59:59.999999Z in UTC, after applying the offset"
    )]
    OutOfRange,
}

const MICROS_PER_SECOND: i64 = 1_000_000;
const MICROS_PER_DAY: i64 = 86_400 * MICROS_PER_SECOND;

impl Micros {
    /// `0001-01-01T00:00:00.000000Z`, the earliest instant the ledger holds.
    pub const MIN: Micros = Micros(-62_135_596_800 * MICROS_PER_SECOND);
    /// `9999-12-31T23:59:59.999999Z`, the latest.
    pub const MAX: Micros = Micros(253_402_300_800 * MICROS_PER_SECOND - 1);

    pub fn now() -> Self {
        // The clock says a year in 0001..=9999 for the next eight millennia;
        // past that, clamping beats a panic on every request.
        Self::from_unix_nanos(OffsetDateTime::now_utc().unix_timestamp_nanos()).unwrap_or(Self::MAX)
    }

    /// Whether this instant is inside the representable range.
    pub fn is_representable(self) -> bool {
        (Self::MIN..=Self::MAX).contains(&self)
    }

    /// Whole microseconds, or `None` outside the representable range.
    /// Sub-microsecond digits are dropped, which for instants before 1970 means
    /// rounding towards the past: `…59.9999995Z` keeps `…59.999999Z`.
    fn from_unix_nanos(nanos: i128) -> Option<Self> {
        let micros = i64::try_from(nanos.div_euclid(1000)).ok()?;
        Some(Micros(micros)).filter(|m| m.is_representable())
    }

    /// Parse an RFC 3339 timestamp (any offset; sub-microsecond digits are
    /// dropped). Refuses instants outside [`Micros::MIN`] ..= [`Micros::MAX`].
    pub fn parse_rfc3339(s: &str) -> Result<Self, BadTimestamp> {
        let dt = OffsetDateTime::parse(s, &Rfc3339).map_err(|_| BadTimestamp::Syntax)?;
        Self::from_unix_nanos(dt.unix_timestamp_nanos()).ok_or(BadTimestamp::OutOfRange)
    }

    /// Unix seconds as a float (some vendors send these), or `None` when not
    /// finite or outside the representable range.
    pub fn from_unix_seconds_f64(secs: f64) -> Option<Self> {
        if !secs.is_finite() {
            return None;
        }
        let micros = (secs * 1_000_000.0).round();
        // `as i64` saturates instead of failing, so bound the float loosely
        // first; the exact range check follows on the integer.
        if micros.abs() > 1.0e18 {
            return None;
        }
        Some(Micros(micros as i64)).filter(|m| m.is_representable())
    }

    pub fn as_unix_seconds_f64(self) -> f64 {
        self.0 as f64 / 1_000_000.0
    }

    /// `2026-02-08T10:00:00.000000Z`: the canonical form used in hashes.
    pub fn to_rfc3339(self) -> String {
        let mut out = Vec::with_capacity(27);
        self.write_rfc3339(&mut out);
        // Only ASCII digits, signs and separators are written.
        String::from_utf8(out).unwrap_or_default()
    }

    /// [`Micros::to_rfc3339`] appended to `out` (the hash envelope and the
    /// export line write it for every event).
    pub fn write_rfc3339(self, out: &mut Vec<u8>) {
        fn digits(out: &mut Vec<u8>, n: u32, width: usize) {
            let mut buf = [b'0'; 6];
            let mut n = n;
            for at in (0..width).rev() {
                buf[at] = b'0' + (n % 10) as u8;
                n /= 10;
            }
            out.extend_from_slice(&buf[..width]);
        }
        let c = Civil::of(self);
        match u32::try_from(c.year) {
            Ok(y) if (1..=9999).contains(&y) => digits(out, y, 4),
            _ => out.extend_from_slice(c.year_text().as_bytes()),
        }
        out.push(b'-');
        digits(out, c.month.into(), 2);
        out.push(b'-');
        digits(out, c.day.into(), 2);
        out.push(b'T');
        digits(out, c.hour.into(), 2);
        out.push(b':');
        digits(out, c.minute.into(), 2);
        out.push(b':');
        digits(out, c.second.into(), 2);
        out.push(b'.');
        digits(out, c.micro, 6);
        out.push(b'Z');
    }

    /// `2026-02-08T10:00:00.000Z`: millisecond form for vendor APIs that document it.
    pub fn to_rfc3339_millis(self) -> String {
        let c = Civil::of(self);
        format!(
            "{}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            c.year_text(),
            c.month,
            c.day,
            c.hour,
            c.minute,
            c.second,
            c.micro / 1000
        )
    }
}

/// The UTC calendar fields of an instant, computed for every `i64` (no
/// fallback value: the old rendering turned anything it could not format into
/// 1970, so different instants hashed alike).
struct Civil {
    year: i64,
    month: u8,
    day: u8,
    hour: u8,
    minute: u8,
    second: u8,
    micro: u32,
}

impl Civil {
    fn of(t: Micros) -> Self {
        let days = t.0.div_euclid(MICROS_PER_DAY);
        let in_day = t.0.rem_euclid(MICROS_PER_DAY);
        let (year, month, day) = civil_from_days(days);
        let secs = in_day / MICROS_PER_SECOND;
        // Each cast below is of a value already reduced below its type's limit.
        Civil {
            year,
            month,
            day,
            hour: (secs / 3600) as u8,
            minute: (secs / 60 % 60) as u8,
            second: (secs % 60) as u8,
            micro: (in_day % MICROS_PER_SECOND) as u32,
        }
    }

    /// Four digits inside the range. Outside it (reachable only by building a
    /// `Micros` directly, e.g. from a corrupted row) the year is written in
    /// ISO 8601's expanded form, `+10000` / `-0001`: still one text per
    /// instant, and one no parser here accepts, so it cannot pass for a real
    /// timestamp.
    fn year_text(&self) -> String {
        if (1..=9999).contains(&self.year) {
            format!("{:04}", self.year)
        } else {
            format!("{:+05}", self.year)
        }
    }
}

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day), after
/// Howard Hinnant's `civil_from_days`; exact for every `i64` day count that a
/// microsecond `i64` can reach.
fn civil_from_days(days: i64) -> (i64, u8, u8) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11], March = 0
    let day = (doy - (153 * mp + 2) / 5 + 1) as u8;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

impl fmt::Display for Micros {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_render() {
        let t = Micros::parse_rfc3339("2026-02-08T10:00:00.000Z").unwrap();
        assert_eq!(t.to_rfc3339(), "2026-02-08T10:00:00.000000Z");
        assert_eq!(t.to_rfc3339_millis(), "2026-02-08T10:00:00.000Z");
        let offset = Micros::parse_rfc3339("2026-02-08T12:00:00.123456+02:00").unwrap();
        assert_eq!(offset.to_rfc3339(), "2026-02-08T10:00:00.123456Z");
        assert!(Micros::parse_rfc3339("2026-02-08 10:00").is_err());
        assert!(
            Micros::parse_rfc3339("2026-02-08T10:00:00").is_err(),
            "zone required"
        );
    }

    #[test]
    fn float_seconds() {
        let t = Micros::from_unix_seconds_f64(1_700_000_000.25).unwrap();
        assert_eq!(t.0, 1_700_000_000_250_000);
        assert!(Micros::from_unix_seconds_f64(f64::NAN).is_none());
    }

    #[test]
    fn extreme_offsets_are_refused_not_wrapped() {
        // 10000-01-01T23:58:59Z in UTC: no four-digit year can say it.
        assert!(Micros::parse_rfc3339("9999-12-31T23:59:59-23:59").is_err());
        // Year 0 in UTC.
        assert!(Micros::parse_rfc3339("0001-01-01T00:00:00+00:01").is_err());
        assert!(Micros::parse_rfc3339("0000-06-01T00:00:00Z").is_err());
        // The edges themselves are kept and render as sent.
        let last = Micros::parse_rfc3339("9999-12-31T23:59:59.999999Z").unwrap();
        assert_eq!(last.to_rfc3339(), "9999-12-31T23:59:59.999999Z");
        let first = Micros::parse_rfc3339("0001-01-01T00:00:00Z").unwrap();
        assert_eq!(first.to_rfc3339(), "0001-01-01T00:00:00.000000Z");
    }

    #[test]
    fn sub_microsecond_digits_before_1970_are_dropped_not_rounded_up() {
        let t = Micros::parse_rfc3339("1969-12-31T23:59:59.9999995Z").unwrap();
        assert_eq!(t.to_rfc3339(), "1969-12-31T23:59:59.999999Z");
    }

    #[test]
    fn the_range_is_what_its_constants_say() {
        assert_eq!(Micros::MIN.to_rfc3339(), "0001-01-01T00:00:00.000000Z");
        assert_eq!(Micros::MAX.to_rfc3339(), "9999-12-31T23:59:59.999999Z");
        assert_eq!(Micros::MAX.to_rfc3339_millis(), "9999-12-31T23:59:59.999Z");
        let before = Micros(Micros::MIN.0 - 1);
        let after = Micros(Micros::MAX.0 + 1);
        assert!(!before.is_representable() && !after.is_representable());
        // Outside the range the text is still one per instant, and refused.
        assert_eq!(before.to_rfc3339(), "+0000-12-31T23:59:59.999999Z");
        assert_eq!(after.to_rfc3339(), "+10000-01-01T00:00:00.000000Z");
        assert_eq!(
            Micros(i64::MIN).to_rfc3339(),
            "-290308-12-21T19:59:05.224192Z"
        );
        for t in [before, after, Micros(i64::MIN), Micros(i64::MAX)] {
            assert!(Micros::parse_rfc3339(&t.to_rfc3339()).is_err(), "{t}");
        }
        assert_eq!(
            Micros::parse_rfc3339("9999-12-31T23:59:59-23:59"),
            Err(BadTimestamp::OutOfRange)
        );
        assert_eq!(
            Micros::parse_rfc3339("yesterday"),
            Err(BadTimestamp::Syntax)
        );
    }

    #[test]
    fn float_seconds_follow_the_same_range() {
        let min_secs = Micros::MIN.0 as f64 / 1e6;
        assert_eq!(Micros::from_unix_seconds_f64(min_secs), Some(Micros::MIN));
        assert_eq!(Micros::from_unix_seconds_f64(min_secs - 1.0), None);
        assert_eq!(Micros::from_unix_seconds_f64(-1.0e11), None, "year -1199");
        assert_eq!(Micros::from_unix_seconds_f64(253_402_300_800.0), None);
        assert_eq!(Micros::from_unix_seconds_f64(1.0e300), None);
        assert_eq!(Micros::from_unix_seconds_f64(f64::INFINITY), None);
    }

    #[test]
    fn leap_second_is_the_last_microsecond_of_its_day() {
        let t = Micros::parse_rfc3339("2016-12-31T23:59:60Z").unwrap();
        assert_eq!(t.to_rfc3339(), "2016-12-31T23:59:59.999999Z");
    }

    use proptest::prelude::*;

    /// Days in a month of the proleptic Gregorian calendar.
    fn month_days(year: i64, month: u8) -> u8 {
        let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
        match month {
            2 if leap => 29,
            2 => 28,
            4 | 6 | 9 | 11 => 30,
            _ => 31,
        }
    }

    proptest! {
        // PROPTEST_CASES sets the number of cases (default 256).
        #![proptest_config(ProptestConfig::default())]

        /// The hand-written digits are the `format!` text, for every `i64`.
        #[test]
        fn written_text_is_the_formatted_text(us in any::<i64>()) {
            let c = Civil::of(Micros(us));
            let formatted = format!(
                "{}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
                c.year_text(), c.month, c.day, c.hour, c.minute, c.second, c.micro
            );
            prop_assert_eq!(Micros(us).to_rfc3339(), formatted);
        }

        /// Every representable instant renders to text that parses back to it.
        #[test]
        fn render_then_parse_is_identity(us in Micros::MIN.0..=Micros::MAX.0) {
            let t = Micros(us);
            let text = t.to_rfc3339();
            prop_assert_eq!(text.len(), 27, "{}", text);
            prop_assert_eq!(Micros::parse_rfc3339(&text), Ok(t));
            // Milliseconds: the same instant with the last three digits dropped.
            let ms = Micros::parse_rfc3339(&t.to_rfc3339_millis());
            prop_assert_eq!(ms, Ok(Micros(us - us.rem_euclid(1000))));
            // The calendar arithmetic agrees with the `time` crate's.
            let dt = OffsetDateTime::from_unix_timestamp_nanos(i128::from(us) * 1000).unwrap();
            let c = Civil::of(t);
            prop_assert_eq!(
                (c.year, c.month, c.day, c.hour, c.minute, c.second, c.micro),
                (i64::from(dt.year()), dt.month() as u8, dt.day(), dt.hour(), dt.minute(),
                 dt.second(), dt.microsecond())
            );
        }

        /// Canonical text parses to an instant that renders as the same text.
        #[test]
        fn parse_then_render_is_identity(
            year in 1i64..=9999, month in 1u8..=12, day_seed in 0u8..31,
            hour in 0u8..24, minute in 0u8..60, second in 0u8..60, micro in 0u32..1_000_000,
        ) {
            let day = 1 + day_seed % month_days(year, month);
            let text = format!(
                "{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}.{micro:06}Z"
            );
            let t = Micros::parse_rfc3339(&text);
            prop_assert!(t.is_ok(), "{} refused", text);
            prop_assert_eq!(t.map(Micros::to_rfc3339), Ok(text));
        }

        /// Any offset: the timestamp is kept exactly when its UTC instant is in
        /// range, and then renders to text that parses back to it.
        #[test]
        fn offsets_are_applied_then_the_range_is_checked(
            year in prop_oneof![0i64..=2, 9998i64..=9999, 0i64..=9999],
            month in 1u8..=12, day_seed in 0u8..31,
            hour in 0u8..24, minute in 0u8..60, second in 0u8..60,
            frac in "[0-9]{0,9}", east in any::<bool>(), off_h in 0u8..24, off_m in 0u8..60,
        ) {
            let day = 1 + day_seed % month_days(year, month);
            let frac = if frac.is_empty() { frac } else { format!(".{frac}") };
            let sign = if east { '+' } else { '-' };
            let text = format!(
                "{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}{frac}{sign}{off_h:02}:{off_m:02}"
            );
            let nanos = OffsetDateTime::parse(&text, &Rfc3339).unwrap().unix_timestamp_nanos();
            let in_range = (i128::from(Micros::MIN.0) * 1000..(i128::from(Micros::MAX.0) + 1) * 1000)
                .contains(&nanos);
            match Micros::parse_rfc3339(&text) {
                Ok(t) => {
                    prop_assert!(in_range, "{} kept as {}", text, t);
                    prop_assert_eq!(i128::from(t.0), nanos.div_euclid(1000));
                    prop_assert_eq!(Micros::parse_rfc3339(&t.to_rfc3339()), Ok(t));
                }
                Err(e) => {
                    prop_assert!(!in_range, "{} refused: {}", text, e);
                    prop_assert_eq!(e, BadTimestamp::OutOfRange);
                }
            }
        }

        /// No `i64` makes rendering panic, and only representable ones parse back.
        #[test]
        fn every_i64_renders(us in any::<i64>()) {
            let t = Micros(us);
            let back = Micros::parse_rfc3339(&t.to_rfc3339());
            prop_assert_eq!(back.is_ok(), t.is_representable());
            let _ = t.to_rfc3339_millis();
        }
    }
}
