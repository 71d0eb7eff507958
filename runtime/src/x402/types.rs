//! x402 protocol objects, version 2 and the legacy version 1 (wire facts §2).
//!
//! Field names, key order and omission rules follow OKX's Python SDK exactly: keys serialise in
//! declaration order, `None` optionals are omitted, `extra` maps keep insertion order.

use crate::chain::Network;
use alloy_primitives::U256;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::str::FromStr;

/// The x402 protocol version pay402 serves.
pub const X402_VERSION: u32 = 2;

/// A JSON object (`extra`, `extensions`, scheme payloads), insertion-ordered.
pub type JsonObject = Map<String, Value>;

/// Parses an atomic amount (a decimal integer string) into a `U256`.
pub fn parse_atomic(text: &str) -> Option<U256> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    U256::from_str_radix(text, 10).ok()
}

/// Describes the protected resource (v2). Key order: `url`, `description`, `mimeType`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceInfo {
    /// The resource URL.
    pub url: String,
    /// Human description (pay402, like Python, always fills it, `""` when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// MIME type of the resource (`""` when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mime_type: Option<String>,
}

/// What the seller accepts as payment (v2). Key order: `scheme`, `network`, `asset`, `amount`,
/// `payTo`, `maxTimeoutSeconds`, `extra`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentRequirements {
    /// Payment scheme (`exact`, `aggr_deferred`).
    pub scheme: String,
    /// CAIP-2 network.
    pub network: Network,
    /// Token contract address, as configured (X Layer USD₮0 is emitted lower-case).
    pub asset: String,
    /// Amount in atomic units, as a decimal string.
    pub amount: String,
    /// Recipient address.
    pub pay_to: String,
    /// How long the buyer's authorization should stay valid.
    pub max_timeout_seconds: u64,
    /// Scheme extras (EIP-712 `name`/`version` for EVM); always present, may be `{}`.
    #[serde(default)]
    pub extra: JsonObject,
}

impl PaymentRequirements {
    /// The amount as an integer, or `None` if it is not a decimal integer string.
    pub fn amount_atomic(&self) -> Option<U256> {
        parse_atomic(&self.amount)
    }

    /// Compares the five fields that bind a payment to these requirements (scheme, network,
    /// amount, asset, payTo; string equality, as the Python reference does). Returns the name
    /// of the first differing field.
    pub fn mismatch(&self, other: &PaymentRequirements) -> Option<&'static str> {
        if self.scheme != other.scheme {
            Some("scheme")
        } else if self.network != other.network {
            Some("network")
        } else if self.amount != other.amount {
            Some("amount")
        } else if self.asset != other.asset {
            Some("asset")
        } else if self.pay_to != other.pay_to {
            Some("payTo")
        } else {
            None
        }
    }
}

/// The 402 challenge (v2). Key order: `x402Version`, `error`, `resource`, `accepts`, `extensions`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentRequired {
    /// Always 2 for this type.
    pub x402_version: u32,
    /// Why payment is required (`"Payment required"`, a verify failure reason, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The protected resource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<ResourceInfo>,
    /// Accepted payment options, in preference order.
    pub accepts: Vec<PaymentRequirements>,
    /// Protocol extensions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extensions: Option<JsonObject>,
}

/// A buyer's payment (v2). Key order: `x402Version`, `payload`, `accepted`, `resource`,
/// `extensions`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentPayload {
    /// Always 2 for this type.
    pub x402_version: u32,
    /// Scheme-specific payload (EIP-3009: `signature` + `authorization`).
    pub payload: JsonObject,
    /// The requirements the buyer chose (scheme and network are read from here).
    pub accepted: PaymentRequirements,
    /// The resource the buyer paid for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<ResourceInfo>,
    /// Protocol extensions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extensions: Option<JsonObject>,
}

impl PaymentPayload {
    /// The payer address claimed by an EVM payload (`authorization.from` or
    /// `permit2Authorization.from`), if present.
    pub fn claimed_payer(&self) -> Option<&str> {
        ["authorization", "permit2Authorization"].iter().find_map(|k| self.payload.get(*k)?.get("from")?.as_str())
    }
}

/// The facilitator's answer to `/verify`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VerifyResponse {
    /// Whether the payment is valid.
    pub is_valid: bool,
    /// Machine-readable reason when invalid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invalid_reason: Option<String>,
    /// Human-readable message when invalid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invalid_message: Option<String>,
    /// The payer address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payer: Option<String>,
}

impl VerifyResponse {
    /// A valid verification for `payer`.
    pub fn valid(payer: impl Into<String>) -> Self {
        Self { is_valid: true, invalid_reason: None, invalid_message: None, payer: Some(payer.into()) }
    }

    /// An invalid verification with `reason`.
    pub fn invalid(reason: impl Into<String>, payer: Option<String>) -> Self {
        Self { is_valid: false, invalid_reason: Some(reason.into()), invalid_message: None, payer }
    }
}

/// Settlement status reported by OKX (`success`, `pending`, `timeout`).
pub mod settle_status {
    /// Settled on chain.
    pub const SUCCESS: &str = "success";
    /// Accepted, not yet confirmed (asynchronous settlement).
    pub const PENDING: &str = "pending";
    /// Not confirmed within the facilitator's wait (synchronous settlement): poll.
    pub const TIMEOUT: &str = "timeout";
    /// Settlement failed (settle/status only).
    pub const FAILED: &str = "failed";
}

/// The facilitator's answer to `/settle`; also the `PAYMENT-RESPONSE` header. Key order:
/// `success`, `errorReason`, `errorMessage`, `status`, `payer`, `transaction`, `network`, `amount`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SettleResponse {
    /// Whether settlement succeeded (or was accepted, see `status`).
    pub success: bool,
    /// Machine-readable reason when it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_reason: Option<String>,
    /// Human-readable message when it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
    /// OKX settlement status ([`settle_status`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// The payer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payer: Option<String>,
    /// Transaction hash (`""` when none).
    pub transaction: String,
    /// Network of the settlement.
    pub network: Network,
    /// The amount settled, in atomic units (the `upto` scheme: what the seller charged, `"0"`
    /// when nothing was; absent for schemes whose amount is the price).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount: Option<String>,
}

impl SettleResponse {
    /// A failure response, as sent in `PAYMENT-RESPONSE` when settlement fails.
    pub fn failure(reason: impl Into<String>, network: Network, payer: Option<String>, transaction: String) -> Self {
        Self {
            success: false,
            error_reason: Some(reason.into()),
            error_message: None,
            status: None,
            payer,
            transaction,
            network,
            amount: None,
        }
    }
}

/// Answer of OKX's `GET /settle/status?txHash=…` (all fields but `success` optional).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SettleStatusResponse {
    /// Whether the query succeeded / the settlement did not fail.
    pub success: bool,
    /// `pending`, `success` or `failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Failure reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_reason: Option<String>,
    /// Failure message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
    /// The payer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payer: Option<String>,
    /// Transaction hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transaction: Option<String>,
    /// Network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<Network>,
}

/// One (version, scheme, network) a facilitator supports.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SupportedKind {
    /// x402 version.
    pub x402_version: u32,
    /// Scheme.
    pub scheme: String,
    /// Network (may be a wildcard such as `eip155:*`).
    pub network: Network,
    /// Scheme-specific extras.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra: Option<JsonObject>,
}

impl SupportedKind {
    /// True when this kind covers (v2, `scheme`, `network`), honouring wildcard networks.
    pub fn covers(&self, scheme: &str, network: &Network) -> bool {
        self.x402_version == X402_VERSION && self.scheme == scheme && network.matches_pattern(self.network.as_str())
    }
}

/// A facilitator's `/supported` answer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SupportedResponse {
    /// Supported kinds.
    pub kinds: Vec<SupportedKind>,
    /// Supported extension names.
    #[serde(default)]
    pub extensions: Vec<String>,
    /// Signer addresses by CAIP family.
    #[serde(default)]
    pub signers: Map<String, Value>,
}

/// A price given as an explicit token amount (bypasses money parsing).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AssetAmount {
    /// Atomic amount, decimal string.
    pub amount: String,
    /// Token address.
    pub asset: String,
    /// Extras merged into the requirements' `extra`.
    #[serde(default)]
    pub extra: JsonObject,
}

/// A money amount in the asset's display unit (USD for stablecoins): `"$0.001"`, `"0.001"`,
/// `"1.5 USDC"`, or a JSON number. Kept as text; parsed exactly, never through floats.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Money(String);

impl Money {
    /// The literal text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<&str> for Money {
    fn from(s: &str) -> Self {
        Self(s.to_owned())
    }
}
impl From<String> for Money {
    fn from(s: String) -> Self {
        Self(s)
    }
}
impl From<u64> for Money {
    fn from(n: u64) -> Self {
        Self(n.to_string())
    }
}
impl From<pay402_core::Decimal> for Money {
    fn from(d: pay402_core::Decimal) -> Self {
        Self(d.to_string())
    }
}
impl From<serde_json::Number> for Money {
    /// JSON numbers are taken by their shortest decimal text (`0.01` → `"0.01"`), as Python's
    /// `str(float)` does.
    fn from(n: serde_json::Number) -> Self {
        Self(n.to_string())
    }
}

/// A price: money in display units, or an explicit [`AssetAmount`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Price {
    /// An explicit token amount.
    Asset(AssetAmount),
    /// A money amount.
    Money(Money),
}

impl From<&str> for Price {
    fn from(s: &str) -> Self {
        Self::Money(s.into())
    }
}
impl From<String> for Price {
    fn from(s: String) -> Self {
        Self::Money(s.into())
    }
}
impl From<AssetAmount> for Price {
    fn from(a: AssetAmount) -> Self {
        Self::Asset(a)
    }
}
impl From<Money> for Price {
    fn from(m: Money) -> Self {
        Self::Money(m)
    }
}

impl FromStr for Price {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self::from(s))
    }
}

// ---------------------------------------------------------------------------------------------
// Version 1 (legacy)
// ---------------------------------------------------------------------------------------------

/// v1 payment requirements.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentRequirementsV1 {
    /// Scheme.
    pub scheme: String,
    /// Legacy network name (`base-sepolia`) or CAIP-2.
    pub network: Network,
    /// Atomic amount.
    pub max_amount_required: String,
    /// Resource URL.
    pub resource: String,
    /// Description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// MIME type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mime_type: Option<String>,
    /// Recipient.
    pub pay_to: String,
    /// Authorization lifetime.
    pub max_timeout_seconds: u64,
    /// Token address.
    pub asset: String,
    /// Output schema.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_schema: Option<Value>,
    /// Extras.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra: Option<JsonObject>,
}

/// v1 402 challenge.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentRequiredV1 {
    /// Always 1.
    pub x402_version: u32,
    /// Reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Accepted options.
    pub accepts: Vec<PaymentRequirementsV1>,
}

/// v1 payment (scheme/network at top level).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentPayloadV1 {
    /// Always 1.
    pub x402_version: u32,
    /// Scheme.
    pub scheme: String,
    /// Network.
    pub network: Network,
    /// Scheme payload.
    pub payload: JsonObject,
}

/// v1 `/supported` answer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SupportedResponseV1 {
    /// Supported kinds.
    pub kinds: Vec<SupportedKind>,
}

/// A decoded 402 challenge of either version.
#[derive(Clone, Debug, PartialEq, Eq)]
#[allow(clippy::large_enum_variant)] // decoded once per response and matched at once
pub enum AnyPaymentRequired {
    /// Legacy v1.
    V1(PaymentRequiredV1),
    /// v2.
    V2(PaymentRequired),
}

/// A decoded payment of either version.
#[derive(Clone, Debug, PartialEq, Eq)]
#[allow(clippy::large_enum_variant)] // decoded once per request and matched at once
pub enum AnyPaymentPayload {
    /// Legacy v1.
    V1(PaymentPayloadV1),
    /// v2.
    V2(PaymentPayload),
}

impl From<PaymentRequirementsV1> for PaymentRequirements {
    /// Lifts v1 requirements into the v2 shape (`maxAmountRequired` → `amount`).
    fn from(v1: PaymentRequirementsV1) -> Self {
        Self {
            scheme: v1.scheme,
            network: v1.network,
            asset: v1.asset,
            amount: v1.max_amount_required,
            pay_to: v1.pay_to,
            max_timeout_seconds: v1.max_timeout_seconds,
            extra: v1.extra.unwrap_or_default(),
        }
    }
}
