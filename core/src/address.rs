//! EVM addresses: `0x` + 40 hex digits, with EIP-55 mixed-case checksums.

use std::fmt;
use tiny_keccak::{Hasher, Keccak};

/// A 20-byte EVM address parsed from text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EvmAddress(pub [u8; 20]);

/// Why an address literal was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AddressError {
    /// Missing `0x` prefix.
    MissingPrefix,
    /// Not exactly 40 hex digits after `0x` (the count is included).
    BadLength(usize),
    /// A character that is not a hex digit.
    NotHex,
    /// Mixed case that is not the EIP-55 checksum; `expected` is the checksummed form.
    BadChecksum {
        /// The correctly checksummed spelling.
        expected: String,
    },
    /// All lower- or all upper-case where a checksummed literal is required.
    NotChecksummed {
        /// The correctly checksummed spelling.
        expected: String,
    },
    /// The zero address, which can never receive or hold a payment.
    Zero,
}

impl fmt::Display for AddressError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MissingPrefix => f.write_str("address must start with `0x`"),
            Self::BadLength(n) => write!(f, "address must have 40 hex digits after `0x`, found {n}"),
            Self::NotHex => f.write_str("address contains a character that is not a hex digit"),
            Self::BadChecksum { expected } => {
                write!(f, "address fails its EIP-55 checksum; did you mean \"{expected}\"?")
            }
            Self::NotChecksummed { expected } => {
                write!(f, "address is not EIP-55 checksummed; did you mean \"{expected}\"?")
            }
            Self::Zero => f.write_str("the zero address cannot receive payments"),
        }
    }
}

impl std::error::Error for AddressError {}

fn keccak(data: &[u8]) -> [u8; 32] {
    let mut k = Keccak::v256();
    k.update(data);
    let mut out = [0u8; 32];
    k.finalize(&mut out);
    out
}

impl EvmAddress {
    /// Parses `0x` + 40 hex digits in any case; mixed case must be a valid EIP-55 checksum.
    pub fn parse(text: &str) -> Result<Self, AddressError> {
        let hex = text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")).ok_or(AddressError::MissingPrefix)?;
        if hex.len() != 40 {
            return Err(AddressError::BadLength(hex.chars().count()));
        }
        let mut bytes = [0u8; 20];
        for (i, pair) in hex.as_bytes().chunks(2).enumerate() {
            let hi = hex_val(pair[0]).ok_or(AddressError::NotHex)?;
            let lo = hex_val(pair[1]).ok_or(AddressError::NotHex)?;
            bytes[i] = hi << 4 | lo;
        }
        let addr = Self(bytes);
        let has_lower = hex.bytes().any(|b| b.is_ascii_lowercase());
        let has_upper = hex.bytes().any(|b| b.is_ascii_uppercase());
        if has_lower && has_upper {
            let expected = addr.to_checksum();
            if expected[2..] != *hex {
                return Err(AddressError::BadChecksum { expected });
            }
        }
        Ok(addr)
    }

    /// Parses and additionally requires the EIP-55 checksummed spelling and a non-zero address
    /// (the compile-time rule for `pay_to`/`asset` literals).
    pub fn parse_checksummed(text: &str) -> Result<Self, AddressError> {
        let addr = Self::parse(text)?;
        if addr.0 == [0u8; 20] {
            return Err(AddressError::Zero);
        }
        let expected = addr.to_checksum();
        if expected != text {
            return Err(AddressError::NotChecksummed { expected });
        }
        Ok(addr)
    }

    /// The EIP-55 checksummed spelling (`0x` + mixed-case hex).
    pub fn to_checksum(&self) -> String {
        let lower = self.to_lower_hex();
        let hash = keccak(&lower.as_bytes()[2..]);
        let mut out = String::with_capacity(42);
        out.push_str("0x");
        for (i, c) in lower[2..].chars().enumerate() {
            let nibble = (hash[i / 2] >> if i % 2 == 0 { 4 } else { 0 }) & 0x0f;
            if c.is_ascii_alphabetic() && nibble >= 8 {
                out.push(c.to_ascii_uppercase());
            } else {
                out.push(c);
            }
        }
        out
    }

    /// `0x` + lower-case hex.
    pub fn to_lower_hex(&self) -> String {
        let mut out = String::with_capacity(42);
        out.push_str("0x");
        for b in self.0 {
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0x0f)]));
        }
        out
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eip55_known_vectors() {
        // From EIP-55 itself.
        for good in [
            "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
            "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359",
            "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB",
            "0xD1220A0cf47c7B9Be7A2E6BA89F429762e7b9aDb",
            "0x779Ded0c9e1022225f8E0630b35a9b54bE713736",
        ] {
            assert_eq!(EvmAddress::parse_checksummed(good).unwrap().to_checksum(), good);
        }
    }

    #[test]
    fn checksum_errors_suggest_the_fix() {
        let lower = "0x779ded0c9e1022225f8e0630b35a9b54be713736";
        assert!(EvmAddress::parse(lower).is_ok());
        assert_eq!(
            EvmAddress::parse_checksummed(lower),
            Err(AddressError::NotChecksummed { expected: "0x779Ded0c9e1022225f8E0630b35a9b54bE713736".into() })
        );
        assert_eq!(
            EvmAddress::parse("0x779DEd0c9e1022225f8E0630b35a9b54bE713736"),
            Err(AddressError::BadChecksum { expected: "0x779Ded0c9e1022225f8E0630b35a9b54bE713736".into() })
        );
        assert_eq!(EvmAddress::parse("779ded"), Err(AddressError::MissingPrefix));
        assert_eq!(EvmAddress::parse("0x1234"), Err(AddressError::BadLength(4)));
        assert_eq!(EvmAddress::parse(&format!("0x{}", "g".repeat(40))), Err(AddressError::NotHex));
        assert_eq!(EvmAddress::parse_checksummed(&format!("0x{}", "0".repeat(40))), Err(AddressError::Zero));
    }
}
