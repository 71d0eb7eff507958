//! CAIP-2 chain identifiers (`namespace:reference`, e.g. `eip155:196`).

use std::fmt;

/// A validated CAIP-2 chain id.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Caip2 {
    namespace: String,
    reference: String,
}

/// Why a CAIP-2 literal was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Caip2Error {
    /// No `:` separator.
    MissingColon,
    /// Namespace not `[-a-z0-9]{3,8}`.
    BadNamespace,
    /// Reference not `[-_a-zA-Z0-9]{1,32}`.
    BadReference,
    /// `eip155` reference not a decimal chain id without leading zero that fits u64.
    BadChainId,
}

impl fmt::Display for Caip2Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MissingColon => f.write_str("network must be a CAIP-2 id like \"eip155:196\" (namespace:reference)"),
            Self::BadNamespace => f.write_str("CAIP-2 namespace must be 3-8 characters of [-a-z0-9], like \"eip155\""),
            Self::BadReference => f.write_str("CAIP-2 reference must be 1-32 characters of [-_a-zA-Z0-9]"),
            Self::BadChainId => {
                f.write_str("eip155 chain id must be a decimal number without leading zero, like \"eip155:196\"")
            }
        }
    }
}

impl std::error::Error for Caip2Error {}

impl Caip2 {
    /// Parses and validates a CAIP-2 id.
    pub fn parse(text: &str) -> Result<Self, Caip2Error> {
        let (ns, reference) = text.split_once(':').ok_or(Caip2Error::MissingColon)?;
        if !(3..=8).contains(&ns.len())
            || !ns.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(Caip2Error::BadNamespace);
        }
        if !(1..=32).contains(&reference.len())
            || !reference.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(Caip2Error::BadReference);
        }
        if ns == "eip155"
            && (!reference.bytes().all(|b| b.is_ascii_digit())
                || (reference.len() > 1 && reference.starts_with('0'))
                || reference.parse::<u64>().is_err())
        {
            return Err(Caip2Error::BadChainId);
        }
        Ok(Self { namespace: ns.to_owned(), reference: reference.to_owned() })
    }

    /// The namespace (`eip155`).
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The reference (`196`).
    pub fn reference(&self) -> &str {
        &self.reference
    }

    /// The EVM chain id, for `eip155` networks.
    pub fn evm_chain_id(&self) -> Option<u64> {
        if self.namespace == "eip155" { self.reference.parse().ok() } else { None }
    }
}

impl fmt::Display for Caip2 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.namespace, self.reference)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caip2_rules() {
        let c = Caip2::parse("eip155:196").unwrap();
        assert_eq!(c.evm_chain_id(), Some(196));
        assert_eq!(c.to_string(), "eip155:196");
        assert!(Caip2::parse("solana:5eykt4UsFv8P8NJdTREpY1vzqKqZKvdp").is_ok());
        assert_eq!(Caip2::parse("eip155"), Err(Caip2Error::MissingColon));
        assert_eq!(Caip2::parse("EIP155:1"), Err(Caip2Error::BadNamespace));
        assert_eq!(Caip2::parse("eip155:08453"), Err(Caip2Error::BadChainId));
        assert_eq!(Caip2::parse("eip155:x"), Err(Caip2Error::BadChainId));
        assert_eq!(Caip2::parse("eip155:"), Err(Caip2Error::BadReference));
    }
}
