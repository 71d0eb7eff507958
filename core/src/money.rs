//! Price and amount literals: `"$0.001"`, `"0.001"`, `"1.5 USDC"`, `"$ 3"`.

use crate::decimal::{Decimal, DecimalError};
use std::fmt;

/// Which spellings of a money literal are accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MoneySyntax {
    /// Compile-time form: `^\$?(0|[1-9][0-9]*)(\.[0-9]+)?$`, `$` only when `allow_dollar`.
    Strict {
        /// Whether a leading `$` is allowed (x402 USD prices) or not (MPP amounts).
        allow_dollar: bool,
    },
    /// Run-time form, compatible with OKX's Python SDK: surrounding whitespace, any number of
    /// leading `$`, a trailing `USD`/`USDC` (any case, optional space), leading zeros and
    /// exponents are accepted.
    Lenient,
}

/// Why a money literal was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum MoneyError {
    /// The number itself is bad.
    Decimal(DecimalError),
    /// A `$` was used where only a plain amount is allowed.
    DollarNotAllowed,
    /// Zero where a positive amount is required.
    Zero,
    /// Leading zeros such as `"01.5"` in a strict literal.
    LeadingZero,
}

impl fmt::Display for MoneyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Decimal(e) => e.fmt(f),
            Self::DollarNotAllowed => f.write_str("`$` is not allowed here; write the amount alone, like \"0.00001\""),
            Self::Zero => f.write_str("amount is zero; a paid route needs a positive amount"),
            Self::LeadingZero => f.write_str("amount has a leading zero; write it like \"0.5\" or \"12\""),
        }
    }
}

impl std::error::Error for MoneyError {}

impl From<DecimalError> for MoneyError {
    fn from(e: DecimalError) -> Self {
        Self::Decimal(e)
    }
}

/// Strips the decorations a lenient money literal may carry and returns the bare number text.
fn strip_lenient(text: &str) -> &str {
    let mut s = text.trim();
    s = s.trim_start_matches('$').trim();
    for suffix in ["USDC", "usdc", "USD", "usd"] {
        if let Some(rest) = s.strip_suffix(suffix) {
            s = rest.trim();
            break;
        }
    }
    s
}

/// Parses a money literal into an exact [`Decimal`].
///
/// With `allow_zero = false`, a zero amount is [`MoneyError::Zero`].
pub fn parse_money(text: &str, syntax: MoneySyntax, allow_zero: bool) -> Result<Decimal, MoneyError> {
    let value = match syntax {
        MoneySyntax::Strict { allow_dollar } => {
            let body = match text.strip_prefix('$') {
                Some(rest) if allow_dollar => rest,
                Some(_) => return Err(MoneyError::DollarNotAllowed),
                None => text,
            };
            let int = body.split('.').next().unwrap_or("");
            if int.len() > 1 && int.starts_with('0') && int.bytes().all(|b| b.is_ascii_digit()) {
                return Err(MoneyError::LeadingZero);
            }
            if (int.is_empty() && !body.is_empty() && !body.starts_with('-')) || body.ends_with('.') {
                return Err(MoneyError::Decimal(DecimalError::NotANumber(text.to_owned())));
            }
            Decimal::parse(body).map_err(|e| match e {
                DecimalError::NotANumber(_) => DecimalError::NotANumber(text.to_owned()),
                other => other,
            })?
        }
        MoneySyntax::Lenient => {
            let body = strip_lenient(text);
            Decimal::parse_with(body, true).map_err(|e| match e {
                DecimalError::NotANumber(_) => DecimalError::NotANumber(text.to_owned()),
                other => other,
            })?
        }
    };
    if !allow_zero && value.is_zero() {
        return Err(MoneyError::Zero);
    }
    Ok(value)
}

/// The strict spelling of a money literal the strict grammar refused, when the lenient
/// (run-time) grammar understands it: `"1e3"` → `"$1000"`, `"01.5"` → `"$1.5"`,
/// `"1 USD"` → `"$1"`. Used for "did you mean" hints; `None` when there is nothing to suggest
/// (not a number, negative, or already strict).
pub fn strict_spelling(text: &str, allow_dollar: bool) -> Option<String> {
    if parse_money(text, MoneySyntax::Strict { allow_dollar }, true).is_ok() {
        return None;
    }
    let value = parse_money(text, MoneySyntax::Lenient, true).ok()?;
    Some(if allow_dollar { format!("${value}") } else { value.to_string() })
}

/// Checks an amount written in base units (the token's smallest unit, such as MPP's
/// `suggestedDeposit`): decimal digits only, no leading zero, positive, and at most 78 digits
/// (a `uint256`). The error says what to write; a human amount such as `"1.5"` gets its
/// base-unit spelling for a token of `decimals` decimals as a suggestion.
pub fn check_base_units(text: &str, decimals: u8) -> Result<(), String> {
    const MAX_DIGITS: usize = 78;
    let example = format!("\"1{}\"", "0".repeat(usize::from(decimals)));
    if text.is_empty() {
        return Err(format!("the amount is empty; write base units (whole digits) like {example}"));
    }
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        // An exponent is ambiguous here (`"1e6"` may already mean base units): no hint.
        let human = !text.contains(['e', 'E']);
        let hint = parse_money(text, MoneySyntax::Lenient, false)
            .ok()
            .filter(|_| human)
            .and_then(|v| v.to_atomic(decimals, crate::decimal::Rounding::Exact).ok())
            .map(|atomic| format!("; did you mean \"{atomic}\" ({text} at {decimals} decimals)?"))
            .unwrap_or_default();
        return Err(format!(
            "`{text}` is not in base units: write whole digits of the token's smallest unit, like {example}{hint}"
        ));
    }
    let digits = text.trim_start_matches('0');
    if digits.is_empty() {
        return Err("the amount is zero; write a positive number of base units".to_owned());
    }
    if digits.len() != text.len() {
        return Err(format!("`{text}` has a leading zero; did you mean \"{digits}\"?"));
    }
    if digits.len() > MAX_DIGITS {
        return Err(format!("`{text}` is too large for a uint256 amount"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_spelling_suggests_the_fix() {
        assert_eq!(strict_spelling("1e3", true).as_deref(), Some("$1000"));
        assert_eq!(strict_spelling("01.5", true).as_deref(), Some("$1.5"));
        assert_eq!(strict_spelling("$ 3", true).as_deref(), Some("$3"));
        assert_eq!(strict_spelling("0.5 USDC", false).as_deref(), Some("0.5"));
        assert_eq!(strict_spelling("$0.001", true), None);
        assert_eq!(strict_spelling("abc", true), None);
        assert_eq!(strict_spelling("-1", true), None);
    }

    const STRICT: MoneySyntax = MoneySyntax::Strict { allow_dollar: true };

    #[test]
    fn lenient_matches_python_forms() {
        for (input, want) in [
            ("$0.001", "0.001"),
            ("0.001", "0.001"),
            ("$1.50", "1.5"),
            ("1.5 USDC", "1.5"),
            ("$ 3", "3"),
            ("2", "2"),
            (" 4 usd ", "4"),
        ] {
            assert_eq!(parse_money(input, MoneySyntax::Lenient, true).unwrap().to_string(), want, "{input}");
        }
        assert_eq!(parse_money("-1", MoneySyntax::Lenient, true), Err(MoneyError::Decimal(DecimalError::Negative)));
        assert_eq!(parse_money("$0", MoneySyntax::Lenient, false), Err(MoneyError::Zero));
        assert!(matches!(
            parse_money("ten", MoneySyntax::Lenient, true),
            Err(MoneyError::Decimal(DecimalError::NotANumber(_)))
        ));
    }

    #[test]
    fn strict_is_the_compile_time_grammar() {
        assert_eq!(parse_money("$0.001", STRICT, false).unwrap().to_string(), "0.001");
        assert_eq!(
            parse_money("0.00001", MoneySyntax::Strict { allow_dollar: false }, false).unwrap().to_string(),
            "0.00001"
        );
        assert_eq!(
            parse_money("$1", MoneySyntax::Strict { allow_dollar: false }, false),
            Err(MoneyError::DollarNotAllowed)
        );
        assert_eq!(parse_money("01.5", STRICT, false), Err(MoneyError::LeadingZero));
        for bad in ["$ 1", "1 USD", "1e3", ".5", "1.", "+1", "$-1", "1,000"] {
            assert!(parse_money(bad, STRICT, false).is_err(), "{bad:?} accepted");
        }
        assert_eq!(parse_money("$0.000", STRICT, false), Err(MoneyError::Zero));
    }

    #[test]
    fn base_units() {
        assert_eq!(check_base_units("1000000", 6), Ok(()));
        assert_eq!(check_base_units("1", 6), Ok(()));
        for (bad, want) in [
            ("", "the amount is empty; write base units (whole digits) like \"1000000\""),
            ("1.5", "did you mean \"1500000\" (1.5 at 6 decimals)?"),
            ("abc", "`abc` is not in base units: write whole digits of the token's smallest unit, like \"1000000\""),
            ("0", "the amount is zero"),
            ("000", "the amount is zero"),
            ("0100", "`0100` has a leading zero; did you mean \"100\"?"),
            ("-5", "`-5` is not in base units"),
            ("1 USDC", "did you mean \"1000000\""),
        ] {
            let err = check_base_units(bad, 6).unwrap_err();
            assert!(err.contains(want), "{bad:?}: {err}");
        }
        assert!(check_base_units(&"9".repeat(79), 6).unwrap_err().contains("too large"));
        assert_eq!(check_base_units(&"9".repeat(78), 6), Ok(()));
        assert!(!check_base_units("1e6", 6).unwrap_err().contains("did you mean"));
    }
}
