//! Server-side x402 schemes: price parsing and requirement enhancement (wire facts §6).
//!
//! [`ExactEvmScheme`] turns a [`Price`] into an [`AssetAmount`] through the money-parser chain
//! (custom parsers first, in registration order; the network's default stablecoin last) and fills
//! the EIP-712 `extra` of requirements. [`AggrDeferredEvmScheme`] delegates to it.

use super::types::{AssetAmount, JsonObject, PaymentRequirements, Price, SupportedKind};
use crate::chain::Network;
use crate::chain::{AssetInfo, NetworkRegistry, TransferMethod};
use pay402_core::{Decimal, MoneyError, MoneySyntax, Rounding, parse_money};
use serde_json::Value;
use std::sync::Arc;

/// Why a price could not be turned into requirements.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PriceError {
    /// The money text is not an acceptable amount.
    #[error("invalid price `{text}`: {source}")]
    Money {
        /// The literal.
        text: String,
        /// Why.
        source: MoneyError,
    },
    /// More fractional digits than the asset has, or an amount that does not fit.
    #[error("price `{text}` cannot be charged exactly on {network}: {reason}")]
    Precision {
        /// The literal.
        text: String,
        /// The network.
        network: String,
        /// Why.
        reason: String,
    },
    /// No money parser produced an amount and the network has no default stablecoin.
    #[error(
        "No default stablecoin configured for network {0}; use register_money_parser or specify an explicit AssetAmount"
    )]
    NoDefaultAsset(String),
    /// An explicit [`AssetAmount`] without an asset.
    #[error("asset amount must name an asset")]
    MissingAsset,
    /// An explicit [`AssetAmount`] whose amount is not a non-negative integer.
    #[error("asset amount `{0}` is not an integer number of atomic units")]
    BadAtomicAmount(String),
    /// An `upto` kind whose facilitator announced no valid `extra.facilitatorAddress` in
    /// `/supported`: the buyer's authorization must name the facilitator, so the route cannot
    /// be sold (misconfiguration 500).
    #[error(
        "the facilitator's `upto` kind on {network} announces no `extra.facilitatorAddress` in /supported; it cannot serve upto"
    )]
    MissingFacilitatorAddress {
        /// The network.
        network: String,
    },
    /// A decimal requirement amount on an asset whose decimals are unknown.
    #[error("cannot convert decimal amount `{amount}`: asset {asset} is not the default asset of {network}")]
    UnknownAsset {
        /// The amount.
        amount: String,
        /// The asset.
        asset: String,
        /// The network.
        network: String,
    },
}

/// The `extra` key of the asset transfer method (`"permit2"` for `upto` and Permit2 `exact`).
pub const ASSET_TRANSFER_METHOD_EXTRA: &str = "assetTransferMethod";

/// A custom money parser: given the exact amount and network, returns an [`AssetAmount`] or
/// `None` to let the next parser try.
pub type MoneyParser = Arc<dyn Fn(&Decimal, &Network) -> Option<AssetAmount> + Send + Sync>;

/// A server-side x402 scheme for one family of networks.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a seller-side x402 scheme",
    label = "this does not implement `SchemeNetworkServer`",
    note = "implement `pay402::x402::SchemeNetworkServer` (`scheme`, `parse_price`, `enhance_payment_requirements`) for it, or register a built-in one: `x402::ExactEvmScheme` or `x402::AggrDeferredEvmScheme`"
)]
pub trait SchemeNetworkServer: Send + Sync + 'static {
    /// Scheme name on the wire (`exact`, `aggr_deferred`).
    fn scheme(&self) -> &str;

    /// Converts a price into an atomic [`AssetAmount`] on `network`.
    fn parse_price(&self, price: &Price, network: &Network) -> Result<AssetAmount, PriceError>;

    /// Completes requirements (default asset, decimal amount, EIP-712 `extra`).
    fn enhance_payment_requirements(
        &self,
        requirements: PaymentRequirements,
        supported_kind: Option<&SupportedKind>,
        extension_keys: &[String],
    ) -> Result<PaymentRequirements, PriceError>;
}

/// The `exact` EVM scheme, server side.
#[derive(Clone)]
pub struct ExactEvmScheme {
    parsers: Vec<MoneyParser>,
    registry: Arc<NetworkRegistry>,
    rounding: Rounding,
    allow_zero: bool,
    transfer_method: Option<TransferMethod>,
}

impl std::fmt::Debug for ExactEvmScheme {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExactEvmScheme")
            .field("money_parsers", &self.parsers.len())
            .field("rounding", &self.rounding)
            .field("allow_zero", &self.allow_zero)
            .field("transfer_method", &self.transfer_method)
            .finish()
    }
}

impl Default for ExactEvmScheme {
    fn default() -> Self {
        Self::new()
    }
}

fn extra_for(info: &AssetInfo) -> JsonObject {
    let mut extra = JsonObject::new();
    extra.insert("name".into(), Value::String(info.name.clone()));
    extra.insert("version".into(), Value::String(info.version.clone()));
    extra
}

impl ExactEvmScheme {
    /// A scheme over the process-wide [`NetworkRegistry`], refusing prices that cannot be
    /// charged exactly and zero prices.
    pub fn new() -> Self {
        Self::with_registry(NetworkRegistry::global())
    }

    /// A scheme over a specific registry.
    pub fn with_registry(registry: Arc<NetworkRegistry>) -> Self {
        Self { parsers: Vec::new(), registry, rounding: Rounding::Exact, allow_zero: false, transfer_method: None }
    }

    /// Python-compatible conversion: excess fractional digits are truncated (`$0.0000001` →
    /// `0` on a 6-decimal token) and zero prices are allowed. OKX's Python SDK behaves like
    /// this; pay402's default refuses both, because they silently change what is charged.
    pub fn python_compatible(mut self) -> Self {
        self.rounding = Rounding::Truncate;
        self.allow_zero = true;
        self
    }

    /// Sets how excess fractional digits are handled.
    pub fn rounding(mut self, rounding: Rounding) -> Self {
        self.rounding = rounding;
        self
    }

    /// Allows (or refuses) zero prices.
    pub fn allow_zero(mut self, allow: bool) -> Self {
        self.allow_zero = allow;
        self
    }

    /// Sells `exact` with this asset transfer method on every route of the scheme, whatever the
    /// asset's [`AssetInfo::transfer_method`] says (which is used otherwise).
    /// [`TransferMethod::Permit2`] — for tokens without EIP-3009 — puts
    /// `extra.assetTransferMethod = "permit2"` in the requirements: the buyer signs a Permit2
    /// `PermitWitnessTransferFrom` for the x402 exact Permit2 proxy instead of an EIP-3009
    /// authorization (and needs a one-time ERC-20 approval of Permit2). One route alone can
    /// ask for it with [`PaymentOption::extra`](super::PaymentOption::extra)
    /// (`{"assetTransferMethod": "permit2"}`).
    pub fn asset_transfer_method(mut self, method: TransferMethod) -> Self {
        self.transfer_method = Some(method);
        self
    }

    /// Adds a custom money parser, tried before the default conversion, in registration order.
    pub fn register_money_parser(
        mut self,
        parser: impl Fn(&Decimal, &Network) -> Option<AssetAmount> + Send + Sync + 'static,
    ) -> Self {
        self.parsers.push(Arc::new(parser));
        self
    }

    /// The registry in use.
    pub fn registry(&self) -> &NetworkRegistry {
        &self.registry
    }

    fn to_atomic(&self, text: &str, value: &Decimal, network: &Network, decimals: u8) -> Result<String, PriceError> {
        value.to_atomic(decimals, self.rounding).map(|a| a.to_string()).map_err(|e| PriceError::Precision {
            text: text.to_owned(),
            network: network.to_string(),
            reason: e.to_string(),
        })
    }
}

impl SchemeNetworkServer for ExactEvmScheme {
    fn scheme(&self) -> &str {
        "exact"
    }

    fn parse_price(&self, price: &Price, network: &Network) -> Result<AssetAmount, PriceError> {
        let money = match price {
            Price::Asset(a) => {
                if a.asset.is_empty() {
                    return Err(PriceError::MissingAsset);
                }
                if super::types::parse_atomic(&a.amount).is_none() {
                    return Err(PriceError::BadAtomicAmount(a.amount.clone()));
                }
                return Ok(a.clone());
            }
            Price::Money(m) => m.as_str(),
        };
        let value = parse_money(money, MoneySyntax::Lenient, self.allow_zero)
            .map_err(|source| PriceError::Money { text: money.to_owned(), source })?;
        for parser in &self.parsers {
            if let Some(amount) = parser(&value, network) {
                return Ok(amount);
            }
        }
        let info =
            self.registry.default_asset(network).ok_or_else(|| PriceError::NoDefaultAsset(network.to_string()))?;
        let amount = self.to_atomic(money, &value, network, info.decimals)?;
        Ok(AssetAmount { amount, asset: info.address.clone(), extra: extra_for(info) })
    }

    fn enhance_payment_requirements(
        &self,
        mut req: PaymentRequirements,
        _supported_kind: Option<&SupportedKind>,
        _extension_keys: &[String],
    ) -> Result<PaymentRequirements, PriceError> {
        if req.asset.is_empty() {
            let info = self
                .registry
                .default_asset(&req.network)
                .ok_or_else(|| PriceError::NoDefaultAsset(req.network.to_string()))?;
            req.asset = info.address.clone();
        }
        let info = self.registry.asset_info(&req.network, &req.asset).cloned();
        if req.amount.contains('.') {
            let info = info.as_ref().ok_or_else(|| PriceError::UnknownAsset {
                amount: req.amount.clone(),
                asset: req.asset.clone(),
                network: req.network.to_string(),
            })?;
            let value = parse_money(&req.amount, MoneySyntax::Lenient, self.allow_zero)
                .map_err(|source| PriceError::Money { text: req.amount.clone(), source })?;
            req.amount = self.to_atomic(&req.amount, &value, &req.network, info.decimals)?;
        }
        if self.transfer_method.or(info.as_ref().map(|i| i.transfer_method)) == Some(TransferMethod::Permit2) {
            req.extra.insert(
                ASSET_TRANSFER_METHOD_EXTRA.into(),
                Value::String(crate::evm::permit2::ASSET_TRANSFER_METHOD_PERMIT2.into()),
            );
        }
        if let Some(info) = info {
            for (k, v) in extra_for(&info) {
                req.extra.entry(k).or_insert(v);
            }
        }
        Ok(req)
    }
}

/// The `aggr_deferred` EVM scheme, server side: identical to [`ExactEvmScheme`] except for the
/// scheme name (OKX's facilitator batches the settlement).
#[derive(Clone, Debug, Default)]
pub struct AggrDeferredEvmScheme {
    inner: ExactEvmScheme,
}

impl AggrDeferredEvmScheme {
    /// A scheme over the process-wide registry.
    pub fn new() -> Self {
        Self { inner: ExactEvmScheme::new() }
    }

    /// Wraps a configured [`ExactEvmScheme`] (its money parsers and policies apply).
    pub fn from_exact(inner: ExactEvmScheme) -> Self {
        Self { inner }
    }
}

impl SchemeNetworkServer for AggrDeferredEvmScheme {
    fn scheme(&self) -> &str {
        "aggr_deferred"
    }

    fn parse_price(&self, price: &Price, network: &Network) -> Result<AssetAmount, PriceError> {
        self.inner.parse_price(price, network)
    }

    fn enhance_payment_requirements(
        &self,
        requirements: PaymentRequirements,
        supported_kind: Option<&SupportedKind>,
        extension_keys: &[String],
    ) -> Result<PaymentRequirements, PriceError> {
        self.inner.enhance_payment_requirements(requirements, supported_kind, extension_keys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_by_default() {
        let s = ExactEvmScheme::new();
        let n = Network::from("eip155:196");
        assert!(matches!(s.parse_price(&"$0.0000001".into(), &n), Err(PriceError::Precision { .. })));
        assert!(matches!(s.parse_price(&"$0".into(), &n), Err(PriceError::Money { source: MoneyError::Zero, .. })));
        assert!(matches!(s.parse_price(&"-1".into(), &n), Err(PriceError::Money { .. })));
        assert!(matches!(s.parse_price(&"abc".into(), &n), Err(PriceError::Money { .. })));
        assert_eq!(s.parse_price(&"$0.001".into(), &n).unwrap().amount, "1000");
    }

    #[test]
    fn exact_over_permit2_is_announced() {
        let req = PaymentRequirements {
            scheme: "exact".into(),
            network: "eip155:196".into(),
            asset: String::new(),
            amount: "1000".into(),
            pay_to: "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed".into(),
            max_timeout_seconds: 60,
            extra: JsonObject::new(),
        };
        let plain = ExactEvmScheme::new().enhance_payment_requirements(req.clone(), None, &[]).unwrap();
        assert_eq!(plain.extra.get("assetTransferMethod"), None);
        let permit2 = ExactEvmScheme::new()
            .asset_transfer_method(TransferMethod::Permit2)
            .enhance_payment_requirements(req, None, &[])
            .unwrap();
        assert_eq!(permit2.extra.get("assetTransferMethod"), Some(&Value::String("permit2".into())));
        assert!(permit2.extra.contains_key("name") && permit2.extra.contains_key("version"));
    }

    #[test]
    fn custom_parsers_come_first() {
        let s = ExactEvmScheme::new().register_money_parser(|v, n| {
            let amount = v.to_atomic(18, Rounding::Exact).ok()?.to_string();
            (n.as_str() == "eip155:1").then(|| AssetAmount { amount, asset: "0xdai".into(), extra: JsonObject::new() })
        });
        let a = s.parse_price(&"1.5".into(), &"eip155:1".into()).unwrap();
        assert_eq!(a.amount, "1500000000000000000");
        assert_eq!(a.asset, "0xdai");
        assert_eq!(s.parse_price(&"1.5".into(), &"eip155:196".into()).unwrap().amount, "1500000");
    }
}
