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

/// Common names for the networks pay402 knows, mapped to their CAIP-2 ids (for "did you mean"
/// hints; pay402 itself only accepts CAIP-2 ids).
pub const NETWORK_ALIASES: &[(&str, &str)] = &[
    ("xlayer", "eip155:196"),
    ("x-layer", "eip155:196"),
    ("x_layer", "eip155:196"),
    ("okx", "eip155:196"),
    ("base", "eip155:8453"),
    ("base-sepolia", "eip155:84532"),
    ("base_sepolia", "eip155:84532"),
];

/// The CAIP-2 id a refused network literal probably meant: a known alias (`"xlayer"` →
/// `"eip155:196"`, case-insensitive), a bare EVM chain id (`"196"` → `"eip155:196"`), an
/// upper-case namespace (`"EIP155:196"`), or a chain id with leading zeros (`"eip155:0196"`).
pub fn suggest_network(text: &str) -> Option<String> {
    let lower = text.trim().to_ascii_lowercase();
    if let Some((_, id)) = NETWORK_ALIASES.iter().find(|(alias, _)| *alias == lower) {
        return Some((*id).to_owned());
    }
    let candidate = if lower.bytes().all(|b| b.is_ascii_digit()) && !lower.is_empty() {
        format!("eip155:{}", lower.trim_start_matches('0'))
    } else if let Some(reference) = lower.strip_prefix("eip155:") {
        format!("eip155:{}", reference.trim_start_matches('0'))
    } else {
        return None;
    };
    (candidate != text && Caip2::parse(&candidate).is_ok()).then_some(candidate)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_suggestions() {
        assert_eq!(suggest_network("xlayer").as_deref(), Some("eip155:196"));
        assert_eq!(suggest_network("Base").as_deref(), Some("eip155:8453"));
        assert_eq!(suggest_network("196").as_deref(), Some("eip155:196"));
        assert_eq!(suggest_network("EIP155:196").as_deref(), Some("eip155:196"));
        assert_eq!(suggest_network("eip155:08453").as_deref(), Some("eip155:8453"));
        assert_eq!(suggest_network("eip155:196"), None);
        assert_eq!(suggest_network("mainnet"), None);
        assert_eq!(suggest_network("0"), None);
    }

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
