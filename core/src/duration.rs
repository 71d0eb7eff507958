//! Short duration literals: `"90s"`, `"5m"`, `"2h"`, `"1d"`.

use std::time::Duration;

/// Parses `<positive integer><unit>` with unit `s`, `m`, `h` or `d`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let err = || format!("`{text}` is not a duration; write it like \"90s\", \"5m\" or \"1h\"");
    let split = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(err)?;
    let (num, unit) = text.split_at(split);
    if num.is_empty() || (num.len() > 1 && num.starts_with('0')) {
        return Err(err());
    }
    let n: u64 = num.parse().map_err(|_| err())?;
    if n == 0 {
        return Err(format!("`{text}` is zero; a challenge must live for a positive time"));
    }
    let secs = match unit {
        "s" => Some(n),
        "m" => n.checked_mul(60),
        "h" => n.checked_mul(3600),
        "d" => n.checked_mul(86_400),
        _ => None,
    }
    .ok_or_else(err)?;
    Ok(Duration::from_secs(secs))
}

/// Parses a positive whole number of seconds written as decimal digits (an integer literal's
/// digits, such as `max_timeout_seconds = 60`).
pub fn parse_seconds(digits: &str) -> Result<u64, String> {
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("`{digits}` is not a whole number of seconds; write it like 60"));
    }
    let n: u64 = digits.parse().map_err(|_| format!("`{digits}` seconds is too large"))?;
    if n == 0 {
        return Err("the timeout is zero; write a positive number of seconds like 60".to_owned());
    }
    Ok(n)
}

/// The short spelling of a duration [`parse_duration`] refused, when the intent is clear:
/// `"5 minutes"` → `"5m"`, `"90 sec"` → `"90s"`, `"1 Hour"` → `"1h"`, `"300"` → `"300s"`,
/// `"05m"` → `"5m"`. Used for "did you mean" hints; `None` when there is nothing to suggest
/// (zero, an unknown unit, not a number, or already valid).
pub fn suggest_duration(text: &str) -> Option<String> {
    if parse_duration(text).is_ok() {
        return None;
    }
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (num, unit) = text.split_at(split);
    let n: u64 = num.parse().ok()?;
    let unit = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "s" | "sec" | "secs" | "second" | "seconds" => "s",
        "m" | "min" | "mins" | "minute" | "minutes" => "m",
        "h" | "hr" | "hrs" | "hour" | "hours" => "h",
        "d" | "day" | "days" => "d",
        _ => return None,
    };
    let fixed = format!("{n}{unit}");
    parse_duration(&fixed).is_ok().then_some(fixed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds() {
        assert_eq!(parse_seconds("60"), Ok(60));
        assert!(parse_seconds("0").unwrap_err().contains("zero"));
        assert!(parse_seconds("-1").is_err());
        assert!(parse_seconds("1.5").is_err());
        assert!(parse_seconds("99999999999999999999999").unwrap_err().contains("too large"));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86_400)));
        for bad in ["", "5", "m", "5 m", "05m", "0s", "5y", "-5s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn duration_suggestions() {
        for (bad, want) in [
            ("5 minutes", "5m"),
            ("90 sec", "90s"),
            ("90seconds", "90s"),
            ("1 Hour", "1h"),
            ("2 days", "2d"),
            ("300", "300s"),
            ("05m", "5m"),
            ("5M", "5m"),
            (" 5m ", "5m"),
        ] {
            assert_eq!(suggest_duration(bad).as_deref(), Some(want), "{bad:?}");
        }
        for nothing in ["5m", "0s", "0 minutes", "5 years", "m", "", "-5s", "1h30m"] {
            assert_eq!(suggest_duration(nothing), None, "{nothing:?}");
        }
    }
}
