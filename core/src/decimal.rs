//! Exact, non-negative decimal numbers (`mantissa / 10^scale`) with checked arithmetic.
//!
//! Money never goes through floating point in pay402: prices are parsed into a [`Decimal`]
//! and converted to the token's atomic units with [`Decimal::to_atomic`].

use std::fmt;

/// Largest scale (number of fractional digits) a [`Decimal`] may carry.
pub const MAX_SCALE: u32 = 38;

/// A non-negative exact decimal: `mantissa × 10^-scale`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Decimal {
    mantissa: u128,
    scale: u32,
}

/// How to treat fractional digits beyond a token's decimals in [`Decimal::to_atomic`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Rounding {
    /// Excess non-zero digits are an error ([`DecimalError::TooPrecise`]). The default: a
    /// price that cannot be charged exactly is refused rather than silently changed.
    #[default]
    Exact,
    /// Excess digits are dropped (truncation towards zero), as OKX's Python SDK does
    /// (`$0.0000001` becomes `0` on a 6-decimal token).
    Truncate,
}

/// Why a decimal literal was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecimalError {
    /// The text is empty.
    Empty,
    /// The number is negative.
    Negative,
    /// The text is not a plain decimal number (the offending text is included).
    NotANumber(String),
    /// More fractional digits than the asset supports.
    TooPrecise {
        /// Fractional digits in the value (trailing zeros ignored).
        places: u32,
        /// Digits the asset supports.
        decimals: u8,
    },
    /// The value does not fit the integer type.
    Overflow,
}

impl fmt::Display for DecimalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("amount is empty"),
            Self::Negative => f.write_str("amount is negative; amounts must be positive"),
            Self::NotANumber(s) => write!(f, "`{s}` is not a decimal number like \"0.001\""),
            Self::TooPrecise { places, decimals } => write!(
                f,
                "amount has {places} decimal places but the asset has {decimals} (smallest unit 0.{}1)",
                "0".repeat(usize::from(decimals.saturating_sub(1)))
            ),
            Self::Overflow => f.write_str("amount is too large"),
        }
    }
}

impl std::error::Error for DecimalError {}

impl Decimal {
    /// Zero.
    pub const ZERO: Self = Self { mantissa: 0, scale: 0 };

    /// Builds `mantissa × 10^-scale`.
    pub fn new(mantissa: u128, scale: u32) -> Result<Self, DecimalError> {
        if scale > MAX_SCALE {
            return Err(DecimalError::Overflow);
        }
        Ok(Self { mantissa, scale })
    }

    /// Parses a plain decimal: `digits [. digits]`, optionally with an exponent
    /// (`1e-3`, `2.5E2`) when `allow_exponent` is true. No sign, spaces, `_` or `,`.
    pub fn parse_with(text: &str, allow_exponent: bool) -> Result<Self, DecimalError> {
        if text.is_empty() {
            return Err(DecimalError::Empty);
        }
        if text.starts_with('-') {
            return Err(DecimalError::Negative);
        }
        let nan = || DecimalError::NotANumber(text.to_owned());
        let (number, exponent) = match text.find(['e', 'E']) {
            Some(i) if allow_exponent => {
                let exp = &text[i + 1..];
                let (neg, digits) = match exp.as_bytes().first() {
                    Some(b'-') => (true, &exp[1..]),
                    Some(b'+') => (false, &exp[1..]),
                    _ => (false, exp),
                };
                if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) || digits.len() > 3 {
                    return Err(nan());
                }
                let v: i64 = digits.parse().map_err(|_| nan())?;
                (&text[..i], if neg { -v } else { v })
            }
            _ => (text, 0),
        };
        let (int, frac) = match number.split_once('.') {
            Some((i, f)) => (i, f),
            None => (number, ""),
        };
        if int.is_empty() && frac.is_empty() {
            return Err(nan());
        }
        if !int.bytes().all(|b| b.is_ascii_digit()) || !frac.bytes().all(|b| b.is_ascii_digit()) {
            return Err(nan());
        }
        if number.ends_with('.') && frac.is_empty() && int.is_empty() {
            return Err(nan());
        }
        let mut mantissa: u128 = 0;
        for b in int.bytes().chain(frac.bytes()) {
            mantissa = mantissa
                .checked_mul(10)
                .and_then(|m| m.checked_add(u128::from(b - b'0')))
                .ok_or(DecimalError::Overflow)?;
        }
        let frac_len = i64::try_from(frac.len()).map_err(|_| DecimalError::Overflow)?;
        let mut scale = frac_len - exponent;
        while scale < 0 {
            mantissa = mantissa.checked_mul(10).ok_or(DecimalError::Overflow)?;
            scale += 1;
        }
        let scale = u32::try_from(scale).map_err(|_| DecimalError::Overflow)?;
        let mut d = Self::new(mantissa, scale.min(MAX_SCALE + 40))?;
        d.normalize();
        Ok(d)
    }

    /// Parses a plain decimal (`"0.001"`, `"12"`), exponent not allowed.
    pub fn parse(text: &str) -> Result<Self, DecimalError> {
        Self::parse_with(text, false)
    }

    fn normalize(&mut self) {
        while self.scale > 0 && self.mantissa.is_multiple_of(10) {
            self.mantissa /= 10;
            self.scale -= 1;
        }
        if self.mantissa == 0 {
            self.scale = 0;
        }
    }

    /// The integer mantissa (after dropping trailing zeros).
    pub fn mantissa(&self) -> u128 {
        self.mantissa
    }

    /// Number of significant fractional digits (trailing zeros dropped).
    pub fn scale(&self) -> u32 {
        self.scale
    }

    /// True when the value is zero.
    pub fn is_zero(&self) -> bool {
        self.mantissa == 0
    }

    /// Converts to atomic units of a token with `decimals` decimals:
    /// `self × 10^decimals`, exactly (or truncated with [`Rounding::Truncate`]).
    pub fn to_atomic(&self, decimals: u8, rounding: Rounding) -> Result<u128, DecimalError> {
        let decimals_u32 = u32::from(decimals);
        if self.scale <= decimals_u32 {
            let factor = 10u128.checked_pow(decimals_u32 - self.scale).ok_or(DecimalError::Overflow)?;
            return self.mantissa.checked_mul(factor).ok_or(DecimalError::Overflow);
        }
        match rounding {
            Rounding::Exact => Err(DecimalError::TooPrecise { places: self.scale, decimals }),
            Rounding::Truncate => {
                let drop = self.scale - decimals_u32;
                match 10u128.checked_pow(drop) {
                    Some(div) => Ok(self.mantissa / div),
                    None => Ok(0),
                }
            }
        }
    }
}

impl fmt::Display for Decimal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let digits = self.mantissa.to_string();
        let scale = usize::try_from(self.scale).map_err(|_| fmt::Error)?;
        if scale == 0 {
            return f.write_str(&digits);
        }
        if digits.len() > scale {
            let (i, fr) = digits.split_at(digits.len() - scale);
            write!(f, "{i}.{fr}")
        } else {
            write!(f, "0.{}{digits}", "0".repeat(scale - digits.len()))
        }
    }
}

impl std::str::FromStr for Decimal {
    type Err = DecimalError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_converts_exactly() {
        let d = Decimal::parse("0.001").unwrap();
        assert_eq!(d.to_atomic(6, Rounding::Exact).unwrap(), 1000);
        assert_eq!(Decimal::parse("1.50").unwrap().to_atomic(6, Rounding::Exact).unwrap(), 1_500_000);
        assert_eq!(Decimal::parse("2").unwrap().to_atomic(6, Rounding::Exact).unwrap(), 2_000_000);
        assert_eq!(Decimal::parse(".5").unwrap().to_string(), "0.5");
        assert_eq!(Decimal::parse("0.0000001").unwrap().to_string(), "0.0000001");
    }

    #[test]
    fn excess_precision_is_refused_or_truncated() {
        let d = Decimal::parse("0.0000001").unwrap();
        assert_eq!(d.to_atomic(6, Rounding::Exact), Err(DecimalError::TooPrecise { places: 7, decimals: 6 }));
        assert_eq!(d.to_atomic(6, Rounding::Truncate), Ok(0));
        // Trailing zeros do not count as precision.
        assert_eq!(Decimal::parse("0.1000000").unwrap().to_atomic(6, Rounding::Exact), Ok(100_000));
    }

    #[test]
    fn rejects_garbage() {
        for bad in ["", "-1", "abc", "1.2.3", "1,5", "1_000", " 1", ".", "1e5", "0x10", "NaN", "inf"] {
            assert!(Decimal::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(Decimal::parse("-1"), Err(DecimalError::Negative));
        assert_eq!(Decimal::parse("1e-3").unwrap_err(), DecimalError::NotANumber("1e-3".into()));
        assert_eq!(Decimal::parse_with("1e-3", true).unwrap().to_string(), "0.001");
        assert_eq!(Decimal::parse_with("2.5E2", true).unwrap().to_string(), "250");
    }

    #[test]
    fn overflow_is_typed() {
        let big = "9".repeat(60);
        assert_eq!(Decimal::parse(&big), Err(DecimalError::Overflow));
        let d = Decimal::parse(&"9".repeat(38)).unwrap();
        assert_eq!(d.to_atomic(18, Rounding::Exact), Err(DecimalError::Overflow));
    }
}
