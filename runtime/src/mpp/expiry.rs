//! MPP timestamps (wire facts §1.3, §8.4): the Python `isoformat()` → `Z` form used for the
//! challenge `expires` default and the receipt `timestamp`, and a tolerant RFC 3339 parser.

use time::format_description::FormatItem;
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{Duration, OffsetDateTime, UtcOffset};

/// How long a challenge stays valid by default (5 minutes).
pub const DEFAULT_CHALLENGE_TTL: Duration = Duration::minutes(5);

const SECONDS: &[FormatItem<'static>] = format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]");

/// Python `datetime.isoformat()` of the instant in UTC with `+00:00` replaced by `Z`:
/// `2026-03-30T10:00:01Z` when the microseconds are 0, else six fractional digits
/// (`2026-03-30T10:00:01.123456Z`). Sub-microsecond precision is truncated.
pub fn python_isoformat_z(at: OffsetDateTime) -> String {
    let utc = at.to_offset(UtcOffset::UTC);
    // Formatting a valid date with a static description cannot fail; never panic anyway.
    let mut s = utc.format(SECONDS).unwrap_or_else(|_| utc.unix_timestamp().to_string());
    let micros = utc.microsecond();
    if micros != 0 {
        s.push_str(&format!(".{micros:06}"));
    }
    s.push('Z');
    s
}

/// The default challenge `expires`: `now` + [`DEFAULT_CHALLENGE_TTL`] in
/// [`python_isoformat_z`] form.
pub fn default_expires(now: OffsetDateTime) -> String {
    python_isoformat_z(now + DEFAULT_CHALLENGE_TTL)
}

/// Parses an RFC 3339 timestamp: `Z` or a numeric offset, optional fraction
/// (`2026-03-30T10:05:00Z`, `2026-03-30T10:05:00.510457Z`, `2026-03-30T10:05:00+00:00`).
pub fn parse_rfc3339(text: &str) -> Result<OffsetDateTime, time::error::Parse> {
    OffsetDateTime::parse(text.trim(), &Rfc3339)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn isoformat_rule() {
        assert_eq!(python_isoformat_z(datetime!(2026-03-30 10:00:01 UTC)), "2026-03-30T10:00:01Z");
        assert_eq!(python_isoformat_z(datetime!(2026-03-30 10:00:01.123456789 UTC)), "2026-03-30T10:00:01.123456Z");
        assert_eq!(python_isoformat_z(datetime!(2026-03-30 10:00:01.000000999 UTC)), "2026-03-30T10:00:01Z");
        assert_eq!(python_isoformat_z(datetime!(2026-03-30 12:00:01.5 +02:00)), "2026-03-30T10:00:01.500000Z");
        assert_eq!(default_expires(datetime!(2026-11-24 06:52:43.510457 UTC)), "2026-11-24T06:57:43.510457Z");
    }

    #[test]
    fn parses_rfc3339_variants() {
        let t = datetime!(2026-03-30 10:05:00 UTC);
        assert_eq!(parse_rfc3339("2026-03-30T10:05:00Z").unwrap(), t);
        assert_eq!(parse_rfc3339("2026-03-30T10:05:00+00:00").unwrap(), t);
        assert_eq!(parse_rfc3339("2026-03-30T12:05:00+02:00").unwrap(), t);
        assert_eq!(parse_rfc3339("2026-03-30T10:05:00.510457Z").unwrap(), datetime!(2026-03-30 10:05:00.510457 UTC));
        assert!(parse_rfc3339("2026-03-30 10:05").is_err());
        assert!(parse_rfc3339("2026-03-30T10:05:00").is_err());
    }
}
