//! Timestamps: microseconds since the Unix epoch, rendered as RFC 3339 in UTC
//! with exactly six fractional digits, so the same instant always has the same text.

use std::fmt;

use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, UtcOffset};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Micros(pub i64);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("is not an RFC 3339 / ISO 8601 timestamp with a time zone (e.g. 2026-02-08T10:00:00.000Z)")]
pub struct BadTimestamp;

impl Micros {
    pub fn now() -> Self {
        Self::from_datetime(OffsetDateTime::now_utc())
    }

    fn from_datetime(dt: OffsetDateTime) -> Self {
        Micros((dt.unix_timestamp_nanos() / 1000) as i64)
    }

    /// Parse an RFC 3339 timestamp (any offset; sub-microsecond digits are dropped).
    pub fn parse_rfc3339(s: &str) -> Result<Self, BadTimestamp> {
        let dt = OffsetDateTime::parse(s, &Rfc3339).map_err(|_| BadTimestamp)?;
        Ok(Self::from_datetime(dt))
    }

    pub fn from_unix_seconds_f64(secs: f64) -> Option<Self> {
        if !secs.is_finite() || secs.abs() > 1.0e11 {
            return None;
        }
        Some(Micros((secs * 1_000_000.0).round() as i64))
    }

    pub fn as_unix_seconds_f64(self) -> f64 {
        self.0 as f64 / 1_000_000.0
    }

    fn datetime(self) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp_nanos(self.0 as i128 * 1000)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH)
            .to_offset(UtcOffset::UTC)
    }

    /// `2026-02-08T10:00:00.000000Z`: the canonical form used in hashes.
    pub fn to_rfc3339(self) -> String {
        let dt = self.datetime();
        format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
            dt.year(),
            dt.month() as u8,
            dt.day(),
            dt.hour(),
            dt.minute(),
            dt.second(),
            dt.microsecond()
        )
    }

    /// `2026-02-08T10:00:00.000Z`: millisecond form for vendor APIs that document it.
    pub fn to_rfc3339_millis(self) -> String {
        let s = self.to_rfc3339();
        format!("{}Z", &s[..23])
    }
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
}
