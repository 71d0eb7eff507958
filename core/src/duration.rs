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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86_400)));
        for bad in ["", "5", "m", "5 m", "05m", "0s", "5y", "-5s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }
}
