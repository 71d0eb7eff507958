//! The buyer side of x402: [`X402Client`] turns a 402 challenge into a signed payment.
//!
//! Register one [`SchemeNetworkClient`] per (scheme, network pattern) — e.g.
//! [`ExactEvmClientScheme`] for `exact` on `eip155:*` — and optionally a [`PaymentSelector`]
//! that decides which of the seller's accepted options to pay. Only options whose (scheme,
//! network) have a registered scheme client are candidates.
//!
//! ```
//! use pay402_runtime::evm::{PrivateKeySigner, U256};
//! use pay402_runtime::x402::{ExactEvmClientScheme, X402Client, max_amount, prefer_network};
//!
//! let signer = PrivateKeySigner::random();
//! let client = X402Client::new()
//!     .register("eip155:*", ExactEvmClientScheme::new(signer))
//!     .with_selector(max_amount(U256::from(10_000)).and_then(prefer_network("eip155:196")));
//! assert!(client.supports("exact", &"eip155:196".into()));
//! ```

use super::headers::{
    PAYMENT_SIGNATURE_HEADER, X_PAYMENT_HEADER, encode_payment_signature_header, encode_x_payment_header,
};
use super::types::{
    AnyPaymentPayload, AnyPaymentRequired, JsonObject, PaymentPayload, PaymentPayloadV1, PaymentRequirements,
    ResourceInfo, X402_VERSION,
};
use crate::chain::Network;
use crate::evm::{self, Eip3009Authorization, Eip3009Payload, Payer, PrivateKeySigner, U256, VALID_AFTER_SKEW_SECONDS};
use async_trait::async_trait;
use serde_json::Value;
use std::fmt;
use std::sync::Arc;

/// Why the client could not produce a payment.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// No accepted option has a registered scheme client for its (scheme, network).
    #[error("no supported payment option among {}", list_pairs(.offered))]
    NoSupportedOption {
        /// The (scheme, network) pairs the seller offered.
        offered: Vec<(String, String)>,
    },
    /// Every supported option is more expensive than the selector's cap.
    #[error("every payment option exceeds the cap of {cap} atomic units")]
    AmountOverCap {
        /// The cap.
        cap: U256,
        /// The cheapest supported option's amount, when any amount parsed.
        cheapest: Option<U256>,
    },
    /// The selector's filters (or custom picker) rejected every supported option.
    #[error("the payment selector rejected every supported option")]
    NoAcceptableOption,
    /// The chosen requirements are unusable (bad address or amount, missing EIP-712 domain, …).
    #[error("bad payment requirements: {0}")]
    BadRequirements(String),
    /// Signing failed.
    #[error("signing failed: {0}")]
    Signing(String),
    /// The payment could not be encoded into a header.
    #[error("cannot encode the payment: {0}")]
    Encoding(String),
    /// A custom scheme client failed.
    #[error("scheme client failed: {0}")]
    Scheme(String),
}

fn list_pairs(pairs: &[(String, String)]) -> String {
    if pairs.is_empty() {
        return "no options".to_owned();
    }
    pairs.iter().map(|(s, n)| format!("{s}@{n}")).collect::<Vec<_>>().join(", ")
}

/// Creates the scheme-specific `payload` of a payment (the buyer half of a scheme).
///
/// Implement it with `#[async_trait]` (the `async-trait` crate) for a scheme pay402 does not
/// sign itself, and register it with [`X402Client::register`]; for `exact` on EVM networks use
/// [`ExactEvmClientScheme`].
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an x402 scheme client",
    label = "an x402 scheme client (`SchemeNetworkClient`) is required here",
    note = "for `exact` on EVM networks register `ExactEvmClientScheme::new(signer)`; for another scheme \
            implement `SchemeNetworkClient` (with `#[async_trait]`): `scheme()` names it, `create_payment` \
            signs the payload",
    note = "a scheme client must be `Send + Sync + 'static` (share state through `Arc`)"
)]
#[async_trait]
pub trait SchemeNetworkClient: Send + Sync + 'static {
    /// The scheme name (`exact`).
    fn scheme(&self) -> &str;

    /// Builds and signs the payload for `requirements` (already chosen by the client).
    async fn create_payment(
        &self,
        requirements: &PaymentRequirements,
        resource: Option<&ResourceInfo>,
    ) -> Result<JsonObject, ClientError>;

    /// The payload plus what the scheme adds to the payment's envelope: extensions (merged with
    /// the challenge's) and keys merged into `accepted.extra` (as OKX's `acceptedExtraOverrides`).
    /// The default: [`create_payment`](Self::create_payment)'s payload alone.
    async fn create_payment_parts(
        &self,
        requirements: &PaymentRequirements,
        resource: Option<&ResourceInfo>,
    ) -> Result<SchemePayment, ClientError> {
        self.create_payment(requirements, resource).await.map(SchemePayment::new)
    }
}

/// What a [`SchemeNetworkClient`] produces for one payment (the Rust form of the TS SDKs'
/// `PaymentPayloadResult`).
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct SchemePayment {
    /// The scheme-specific `payload`.
    pub payload: JsonObject,
    /// Extensions the scheme adds, merged with the challenge's as `@x402/core` 2.27's
    /// `x402Client.mergeExtensions` does ([`merge_extensions`]).
    pub extensions: Option<JsonObject>,
    /// Keys merged into (overriding) the `accepted` copy's `extra` (e.g. `sessionCert`).
    pub accepted_extra: JsonObject,
}

impl SchemePayment {
    /// A payment of `payload` alone.
    pub fn new(payload: JsonObject) -> Self {
        Self { payload, extensions: None, accepted_extra: JsonObject::new() }
    }

    /// Sets the scheme's extensions.
    pub fn with_extensions(mut self, extensions: JsonObject) -> Self {
        self.extensions = Some(extensions);
        self
    }

    /// Sets the keys merged into `accepted.extra`.
    pub fn with_accepted_extra(mut self, extra: JsonObject) -> Self {
        self.accepted_extra = extra;
        self
    }
}

/// Merges the challenge's (server's) extensions with a scheme's (client's), as `@x402/core`
/// 2.27's `x402Client.mergeExtensions`: without one side, the other; a key whose value is not an
/// object on both sides takes the client's value; objects are merged recursively, the server's
/// fields winning and the client's adding missing ones (the `s` array of `builder-code` is
/// concatenated, client entries first, without duplicates).
pub fn merge_extensions(server: Option<&JsonObject>, client: Option<&JsonObject>) -> Option<JsonObject> {
    let (server, client) = match (server, client) {
        (None, None) => return None,
        (Some(server), None) => return Some(server.clone()),
        (None, Some(client)) => return Some(client.clone()),
        (Some(server), Some(client)) => (server, client),
    };
    let mut merged = server.clone();
    for (key, client_value) in client {
        match (merged.get_mut(key), client_value) {
            (Some(Value::Object(server_record)), Value::Object(client_record)) => {
                let additive = key == "builder-code";
                merge_record(server_record, client_record, additive);
            }
            _ => {
                merged.insert(key.clone(), client_value.clone());
            }
        }
    }
    Some(merged)
}

fn merge_record(target: &mut JsonObject, source: &JsonObject, additive: bool) {
    for (field, client_value) in source {
        match (target.get_mut(field), client_value) {
            (Some(Value::Object(server_nested)), Value::Object(client_nested)) => {
                merge_record(server_nested, client_nested, additive);
            }
            (Some(server_value), _)
                if additive && field == "s" && (server_value.is_array() || client_value.is_array()) =>
            {
                let as_array = |v: &Value| match v {
                    Value::Array(items) => Some(items.clone()),
                    Value::Null | Value::Object(_) => None,
                    other => Some(vec![other.clone()]),
                };
                if let (Some(server_items), Some(client_items)) = (as_array(server_value), as_array(client_value)) {
                    let mut items: Vec<Value> = Vec::new();
                    for item in client_items.into_iter().chain(server_items) {
                        if !items.contains(&item) {
                            items.push(item);
                        }
                    }
                    *server_value = Value::Array(items);
                }
            }
            (Some(_), _) => {}
            (None, _) => {
                target.insert(field.clone(), client_value.clone());
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Selectors
// ---------------------------------------------------------------------------------------------

type Predicate = Arc<dyn Fn(&PaymentRequirements) -> bool + Send + Sync>;

/// A custom picker: receives the candidates (after filters, ordered by preferences) and returns
/// the index of the one to pay, or `None` to refuse all.
pub type PickFn = Arc<dyn Fn(&[PaymentRequirements]) -> Option<usize> + Send + Sync>;

#[derive(Clone)]
enum Rule {
    Filter(Predicate),
    MaxAmount(U256),
    Prefer(Predicate),
    Pick(PickFn),
}

/// Chooses which accepted option to pay.
///
/// A selector is a list of rules, applied to the supported options in this order, whatever the
/// order they were added in:
/// 1. filters ([`PaymentSelector::filter`]) drop options;
/// 2. caps ([`max_amount`]) drop options whose amount is above the cap (or unparseable);
/// 3. preferences ([`prefer_network`], [`prefer_scheme`], [`PaymentSelector::prefer`]) order the
///    rest — earlier preferences dominate later ones, ties keep the seller's order;
/// 4. custom pickers ([`PaymentSelector::from_fn`]) choose among the ordered candidates (the
///    first that returns an index wins); without one, the first candidate is paid.
///
/// Combine selectors with [`PaymentSelector::and_then`]:
/// `max_amount(cap).and_then(prefer_network("eip155:196"))`.
#[derive(Clone, Default)]
pub struct PaymentSelector {
    rules: Vec<Rule>,
}

impl fmt::Debug for PaymentSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rules: Vec<String> = self
            .rules
            .iter()
            .map(|r| match r {
                Rule::Filter(_) => "filter".to_owned(),
                Rule::MaxAmount(cap) => format!("max_amount({cap})"),
                Rule::Prefer(_) => "prefer".to_owned(),
                Rule::Pick(_) => "pick".to_owned(),
            })
            .collect();
        f.debug_struct("PaymentSelector").field("rules", &rules).finish()
    }
}

impl PaymentSelector {
    /// The default selector: the first supported option, in the seller's order.
    pub fn new() -> Self {
        Self::default()
    }

    /// A selector with a custom picker (see [`PickFn`]).
    pub fn from_fn(pick: impl Fn(&[PaymentRequirements]) -> Option<usize> + Send + Sync + 'static) -> Self {
        Self { rules: vec![Rule::Pick(Arc::new(pick))] }
    }

    /// Adds a filter: only options for which `keep` returns true are candidates.
    pub fn filter(mut self, keep: impl Fn(&PaymentRequirements) -> bool + Send + Sync + 'static) -> Self {
        self.rules.push(Rule::Filter(Arc::new(keep)));
        self
    }

    /// Adds a preference: options for which `preferred` returns true come first.
    pub fn prefer(mut self, preferred: impl Fn(&PaymentRequirements) -> bool + Send + Sync + 'static) -> Self {
        self.rules.push(Rule::Prefer(Arc::new(preferred)));
        self
    }

    /// Adds a cap: options whose amount is above `cap` (or not a decimal integer) are dropped.
    pub fn max_amount(mut self, cap: U256) -> Self {
        self.rules.push(Rule::MaxAmount(cap));
        self
    }

    /// Adds a preference for `network`.
    pub fn prefer_network(self, network: impl Into<Network>) -> Self {
        let network = network.into();
        self.prefer(move |r| r.network == network)
    }

    /// Adds a preference for `scheme`.
    pub fn prefer_scheme(self, scheme: impl Into<String>) -> Self {
        let scheme = scheme.into();
        self.prefer(move |r| r.scheme == scheme)
    }

    /// Appends `other`'s rules to this selector's.
    pub fn and_then(mut self, other: PaymentSelector) -> Self {
        self.rules.extend(other.rules);
        self
    }

    /// Chooses among `options` (all assumed supported); returns the index into `options`.
    pub fn select(&self, options: &[PaymentRequirements]) -> Result<usize, ClientError> {
        let mut candidates: Vec<usize> = (0..options.len())
            .filter(|&i| {
                self.rules.iter().all(|rule| match rule {
                    Rule::Filter(keep) => keep(&options[i]),
                    _ => true,
                })
            })
            .collect();
        if candidates.is_empty() {
            return Err(ClientError::NoAcceptableOption);
        }

        let caps = self.rules.iter().filter_map(|r| match r {
            Rule::MaxAmount(cap) => Some(*cap),
            _ => None,
        });
        if let Some(cap) = caps.min() {
            let cheapest = candidates.iter().filter_map(|&i| options[i].amount_atomic()).min();
            candidates.retain(|&i| options[i].amount_atomic().is_some_and(|a| a <= cap));
            if candidates.is_empty() {
                return Err(ClientError::AmountOverCap { cap, cheapest });
            }
        }

        let preferences: Vec<&Predicate> = self
            .rules
            .iter()
            .filter_map(|r| match r {
                Rule::Prefer(p) => Some(p),
                _ => None,
            })
            .collect();
        // Stable sort: lexicographic on "fails preference k", seller order breaks ties.
        candidates.sort_by_cached_key(|&i| preferences.iter().map(|p| !p(&options[i])).collect::<Vec<bool>>());

        let ordered: Vec<PaymentRequirements> = candidates.iter().map(|&i| options[i].clone()).collect();
        let mut picked_any = false;
        for rule in &self.rules {
            if let Rule::Pick(pick) = rule {
                picked_any = true;
                if let Some(&index) = pick(&ordered).and_then(|k| candidates.get(k)) {
                    return Ok(index);
                }
            }
        }
        if picked_any {
            return Err(ClientError::NoAcceptableOption);
        }
        candidates.first().copied().ok_or(ClientError::NoAcceptableOption)
    }
}

/// The default selector: the first supported option.
pub fn default_payment_selector() -> PaymentSelector {
    PaymentSelector::new()
}

/// A selector preferring `network`.
pub fn prefer_network(network: impl Into<Network>) -> PaymentSelector {
    PaymentSelector::new().prefer_network(network)
}

/// A selector preferring `scheme`.
pub fn prefer_scheme(scheme: impl Into<String>) -> PaymentSelector {
    PaymentSelector::new().prefer_scheme(scheme)
}

/// A selector refusing options whose amount exceeds `cap` atomic units.
pub fn max_amount(cap: U256) -> PaymentSelector {
    PaymentSelector::new().max_amount(cap)
}

// ---------------------------------------------------------------------------------------------
// The client
// ---------------------------------------------------------------------------------------------

#[derive(Clone)]
struct Registration {
    pattern: String,
    scheme: Arc<dyn SchemeNetworkClient>,
}

/// The x402 buyer: picks an option from a 402 challenge and signs a payment for it.
#[derive(Clone, Default)]
pub struct X402Client {
    registrations: Vec<Registration>,
    selector: PaymentSelector,
}

impl fmt::Debug for X402Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let schemes: Vec<String> =
            self.registrations.iter().map(|r| format!("{}@{}", r.scheme.scheme(), r.pattern)).collect();
        f.debug_struct("X402Client").field("schemes", &schemes).field("selector", &self.selector).finish()
    }
}

impl X402Client {
    /// A client with no schemes and the default selector.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `scheme` for networks matching `network_pattern` (`eip155:196`, or `eip155:*`
    /// for every eip155 chain). An exact pattern beats a wildcard; otherwise the first
    /// registration wins.
    pub fn register(mut self, network_pattern: &str, scheme: impl SchemeNetworkClient) -> Self {
        self.registrations.push(Registration { pattern: network_pattern.to_owned(), scheme: Arc::new(scheme) });
        self
    }

    /// Replaces the selector.
    pub fn with_selector(mut self, selector: PaymentSelector) -> Self {
        self.selector = selector;
        self
    }

    /// The scheme client registered for (`scheme`, `network`), if any.
    fn scheme_for(&self, scheme: &str, network: &Network) -> Option<&Arc<dyn SchemeNetworkClient>> {
        let mut matching =
            self.registrations.iter().filter(|r| r.scheme.scheme() == scheme && network.matches_pattern(&r.pattern));
        let first = matching.next()?;
        if first.pattern == network.as_str() {
            return Some(&first.scheme);
        }
        Some(&matching.find(|r| r.pattern == network.as_str()).unwrap_or(first).scheme)
    }

    /// True when a scheme client is registered for (`scheme`, `network`).
    pub fn supports(&self, scheme: &str, network: &Network) -> bool {
        self.scheme_for(scheme, network).is_some()
    }

    /// The index (into `accepts`) of the option this client would pay.
    pub fn select(&self, accepts: &[PaymentRequirements]) -> Result<usize, ClientError> {
        let supported: Vec<usize> =
            (0..accepts.len()).filter(|&i| self.supports(&accepts[i].scheme, &accepts[i].network)).collect();
        if supported.is_empty() {
            return Err(ClientError::NoSupportedOption {
                offered: accepts.iter().map(|r| (r.scheme.clone(), r.network.to_string())).collect(),
            });
        }
        let options: Vec<PaymentRequirements> = supported.iter().map(|&i| accepts[i].clone()).collect();
        let chosen = self.selector.select(&options)?;
        supported.get(chosen).copied().ok_or(ClientError::NoAcceptableOption)
    }

    async fn sign(
        &self,
        requirements: &PaymentRequirements,
        resource: Option<&ResourceInfo>,
    ) -> Result<SchemePayment, ClientError> {
        let scheme = self.scheme_for(&requirements.scheme, &requirements.network).ok_or_else(|| {
            ClientError::NoSupportedOption {
                offered: vec![(requirements.scheme.clone(), requirements.network.to_string())],
            }
        })?;
        scheme.create_payment_parts(requirements, resource).await
    }

    /// Builds the payment for a 402 challenge.
    ///
    /// * v2: `PaymentPayload {x402Version: 2, payload, accepted: <the chosen requirements,
    ///   verbatim, plus the scheme's `accepted.extra` keys>, resource: <the challenge's>,
    ///   extensions: <the challenge's, merged with the scheme's ([`merge_extensions`])>}`; when the
    ///   challenge declares the `payment-identifier` extension, its echo carries a fresh id
    ///   ([`generate_payment_id`](super::payment_identifier::generate_payment_id)): resend this
    ///   payload (never a new one) to retry the same logical request;
    /// * v1: `PaymentPayloadV1 {x402Version: 1, scheme, network, payload}` (the v1 requirements
    ///   are lifted to the v2 shape to be signed).
    pub async fn create_payment_payload(
        &self,
        required: &AnyPaymentRequired,
    ) -> Result<AnyPaymentPayload, ClientError> {
        self.create_payment_payload_with_id(required, &super::payment_identifier::generate_payment_id()).await
    }

    /// [`create_payment_payload`](Self::create_payment_payload) with the payment identifier
    /// `payment_id` (used only when the challenge declares the `payment-identifier` extension;
    /// it must be 16–128 characters of `[A-Za-z0-9_-]`).
    pub async fn create_payment_payload_with_id(
        &self,
        required: &AnyPaymentRequired,
        payment_id: &str,
    ) -> Result<AnyPaymentPayload, ClientError> {
        match required {
            AnyPaymentRequired::V2(challenge) => {
                let index = self.select(&challenge.accepts)?;
                let accepted = challenge.accepts.get(index).ok_or(ClientError::NoAcceptableOption)?;
                let parts = self.sign(accepted, challenge.resource.as_ref()).await?;
                let payload = parts.payload;
                let mut accepted = accepted.clone();
                accepted.extra.extend(parts.accepted_extra);
                let mut extensions = merge_extensions(challenge.extensions.as_ref(), parts.extensions.as_ref());
                if let Some(ext) = extensions.as_mut() {
                    let declared = ext.get(super::payment_identifier::PAYMENT_IDENTIFIER).cloned();
                    if declared.is_some() {
                        if !super::payment_identifier::is_valid_payment_id(payment_id) {
                            return Err(ClientError::BadRequirements(format!(
                                "payment identifier `{payment_id}` is not 16-128 characters of [A-Za-z0-9_-]"
                            )));
                        }
                        super::payment_identifier::append_payment_identifier(ext, declared.as_ref(), payment_id);
                    }
                }
                Ok(AnyPaymentPayload::V2(PaymentPayload {
                    x402_version: X402_VERSION,
                    payload,
                    accepted,
                    resource: challenge.resource.clone(),
                    extensions,
                }))
            }
            AnyPaymentRequired::V1(challenge) => {
                let lifted: Vec<PaymentRequirements> =
                    challenge.accepts.iter().cloned().map(PaymentRequirements::from).collect();
                let index = self.select(&lifted)?;
                let (requirements, v1) =
                    lifted.get(index).zip(challenge.accepts.get(index)).ok_or(ClientError::NoAcceptableOption)?;
                let resource = ResourceInfo {
                    url: v1.resource.clone(),
                    description: v1.description.clone(),
                    mime_type: v1.mime_type.clone(),
                };
                let payload = self.sign(requirements, Some(&resource)).await?.payload;
                Ok(AnyPaymentPayload::V1(PaymentPayloadV1 {
                    x402_version: 1,
                    scheme: requirements.scheme.clone(),
                    network: requirements.network.clone(),
                    payload,
                }))
            }
        }
    }

    /// Builds the payment and encodes it as a request header: (`PAYMENT-SIGNATURE`, value) for
    /// v2 challenges, (`X-PAYMENT`, value) for v1.
    pub async fn create_payment_header(
        &self,
        required: &AnyPaymentRequired,
    ) -> Result<(&'static str, String), ClientError> {
        match self.create_payment_payload(required).await? {
            AnyPaymentPayload::V2(p) => encode_payment_signature_header(&p)
                .map(|v| (PAYMENT_SIGNATURE_HEADER, v))
                .map_err(|e| ClientError::Encoding(e.to_string())),
            AnyPaymentPayload::V1(p) => encode_x_payment_header(&p)
                .map(|v| (X_PAYMENT_HEADER, v))
                .map_err(|e| ClientError::Encoding(e.to_string())),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// exact / EVM / EIP-3009
// ---------------------------------------------------------------------------------------------

/// The buyer half of the `exact` EVM scheme for EIP-3009 tokens (USD₮0 on X Layer): signs a
/// `TransferWithAuthorization` and returns `{"signature", "authorization": {"from", "to",
/// "value", "validAfter", "validBefore", "nonce"}}`.
///
/// The EIP-712 domain is `{name: extra.name, version: extra.version, chainId: <from
/// eip155:<id>>, verifyingContract: asset}`; the authorization is valid from now − 600 s
/// (clamped at 0) until now + `maxTimeoutSeconds`, with a random 32-byte nonce. An offer with
/// `extra.assetTransferMethod = "permit2"` is paid with a Permit2 `PermitWitnessTransferFrom`
/// instead (spender the x402 exact proxy, witness `{to, validAfter}`; see
/// [`UptoEvmClientScheme`](super::UptoEvmClientScheme) for the shared rules); another method is
/// refused.
#[derive(Clone, Debug)]
pub struct ExactEvmClientScheme {
    pub(super) payer: Payer,
}

impl ExactEvmClientScheme {
    /// A scheme signing with `signer`, the system clock and random nonces.
    pub fn new(signer: PrivateKeySigner) -> Self {
        Self { payer: Payer::new(signer) }
    }

    evm::payer_seams!();

    /// Signs an EIP-3009 payload for `requirements` (synchronous core of
    /// [`SchemeNetworkClient::create_payment`] for EIP-3009 offers; a Permit2 offer is refused
    /// here and signed by `create_payment`).
    pub fn sign_payload(&self, requirements: &PaymentRequirements) -> Result<Eip3009Payload, ClientError> {
        let bad = ClientError::BadRequirements;
        if requirements.scheme != "exact" {
            return Err(bad(format!("scheme `{}` is not `exact`", requirements.scheme)));
        }
        if requirements.extra.get("assetTransferMethod").and_then(|v| v.as_str()).is_some_and(|m| m != "eip3009") {
            return Err(bad("an EIP-3009 payload needs assetTransferMethod eip3009 (or none)".to_owned()));
        }
        let chain_id = evm::chain_id_of(requirements.network.as_str()).map_err(|e| bad(e.to_string()))?;
        let text = |key: &str| requirements.extra.get(key).and_then(|v| v.as_str());
        let (Some(name), Some(version)) = (text("name"), text("version")) else {
            return Err(bad("extra.name and extra.version (the token's EIP-712 domain) are required".to_owned()));
        };
        let asset = evm::parse_address(&requirements.asset).map_err(|e| bad(format!("asset: {e}")))?;
        let to = evm::parse_address(&requirements.pay_to).map_err(|e| bad(format!("payTo: {e}")))?;
        let value = evm::parse_uint256(&requirements.amount).map_err(|e| bad(format!("amount: {e}")))?;

        let now = self.payer.now();
        let window = (
            U256::from(now.saturating_sub(VALID_AFTER_SKEW_SECONDS)),
            U256::from(now) + U256::from(requirements.max_timeout_seconds),
        );
        let domain = evm::eip3009_domain(name, version, chain_id, asset);
        let (message, signature) =
            self.payer.sign_transfer(&domain, to, value, window).map_err(|e| ClientError::Signing(e.to_string()))?;
        let mut authorization = Eip3009Authorization::from_message(&message);
        authorization.to = requirements.pay_to.clone();
        Ok(Eip3009Payload { signature, authorization })
    }
}

// `impl SchemeNetworkClient for ExactEvmClientScheme`: in `permit2_client.rs` (it chooses
// between this EIP-3009 payload and a Permit2 one).

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evm::B256;
    use crate::x402::types::{PaymentRequired, PaymentRequiredV1, PaymentRequirementsV1};
    use serde_json::json;

    const KEY: &str = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";
    const PAY_TO: &str = "0x1111111111111111111111111111111111111111";

    fn req(scheme: &str, network: &str, amount: &str) -> PaymentRequirements {
        let extra = json!({"name": "USD\u{20ae}0", "version": "1"});
        PaymentRequirements {
            scheme: scheme.into(),
            network: network.into(),
            asset: "0x779ded0c9e1022225f8e0630b35a9b54be713736".into(),
            amount: amount.into(),
            pay_to: PAY_TO.into(),
            max_timeout_seconds: 300,
            extra: extra.as_object().cloned().unwrap(),
        }
    }

    fn scheme() -> ExactEvmClientScheme {
        ExactEvmClientScheme::new(KEY.parse().unwrap())
            .with_clock(|| 1_000_000)
            .with_nonce_source(|| B256::repeat_byte(0x22))
    }

    struct Named(&'static str);

    #[async_trait]
    impl SchemeNetworkClient for Named {
        fn scheme(&self) -> &str {
            self.0
        }
        async fn create_payment(
            &self,
            requirements: &PaymentRequirements,
            _resource: Option<&ResourceInfo>,
        ) -> Result<JsonObject, ClientError> {
            let mut o = JsonObject::new();
            o.insert("by".into(), json!(format!("{}@{}", self.0, requirements.network)));
            Ok(o)
        }
    }

    #[test]
    fn exact_payload_shape_and_window() {
        let payload = scheme().sign_payload(&req("exact", "eip155:196", "1000")).unwrap();
        let text = serde_json::to_string(&payload.to_json_object()).unwrap();
        let expected_prefix = format!(
            r#"{{"signature":"0x{{SIG}}","authorization":{{"from":"0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266","to":"{PAY_TO}","value":"1000","validAfter":"999400","validBefore":"1000300","nonce":"0x{}"}}}}"#,
            "22".repeat(32)
        );
        assert_eq!(text.replace(&payload.signature[2..], "{SIG}"), expected_prefix);
        assert_eq!(payload.signature.len(), 132);

        let early = scheme().with_clock(|| 5).sign_payload(&req("exact", "eip155:196", "1")).unwrap();
        assert_eq!(early.authorization.valid_after, "0");
        assert_eq!(early.authorization.valid_before, "305");
    }

    #[test]
    fn exact_signature_recovers_to_signer() {
        let r = req("exact", "eip155:196", "1000");
        let s = scheme();
        let payload = s.sign_payload(&r).unwrap();
        let domain = evm::eip3009_domain("USD\u{20ae}0", "1", 196, evm::parse_address(&r.asset).unwrap());
        let digest = evm::transfer_authorization_digest(&domain, &payload.authorization.to_message().unwrap());
        assert_eq!(evm::recover_authorizer(&digest, &payload.signature).unwrap(), s.address());
    }

    #[test]
    fn exact_rejects_bad_requirements() {
        let mut r = req("exact", "eip155:196", "1000");
        r.extra.remove("version");
        assert!(matches!(scheme().sign_payload(&r), Err(ClientError::BadRequirements(_))));
        let mut r = req("exact", "eip155:196", "1000");
        r.extra.insert("name".into(), json!(7));
        assert!(matches!(scheme().sign_payload(&r), Err(ClientError::BadRequirements(_))));
        for (field, mutate) in [
            ("network", Box::new(|r: &mut PaymentRequirements| r.network = "solana:1".into()) as Box<dyn Fn(&mut _)>),
            ("asset", Box::new(|r: &mut PaymentRequirements| r.asset = "usdt".into())),
            ("payTo", Box::new(|r: &mut PaymentRequirements| r.pay_to = "0x12".into())),
            ("amount", Box::new(|r: &mut PaymentRequirements| r.amount = "0.001".into())),
            ("scheme", Box::new(|r: &mut PaymentRequirements| r.scheme = "upto".into())),
            (
                "permit2",
                Box::new(|r: &mut PaymentRequirements| {
                    r.extra.insert("assetTransferMethod".into(), json!("permit2"));
                }),
            ),
        ] {
            let mut r = req("exact", "eip155:196", "1000");
            mutate(&mut r);
            assert!(matches!(scheme().sign_payload(&r), Err(ClientError::BadRequirements(_))), "{field}");
        }
    }

    #[test]
    fn selectors() {
        let options = vec![
            req("exact", "eip155:8453", "5000"),
            req("aggr_deferred", "eip155:196", "2000"),
            req("exact", "eip155:196", "1000"),
        ];
        assert_eq!(default_payment_selector().select(&options).unwrap(), 0);
        assert_eq!(prefer_network("eip155:196").select(&options).unwrap(), 1);
        assert_eq!(prefer_network("eip155:196").and_then(prefer_scheme("exact")).select(&options).unwrap(), 2);
        assert_eq!(prefer_scheme("exact").and_then(prefer_network("eip155:196")).select(&options).unwrap(), 2);
        assert_eq!(max_amount(U256::from(2500)).select(&options).unwrap(), 1);
        assert_eq!(max_amount(U256::from(1000)).select(&options).unwrap(), 2);
        // Caps apply before preferences, whatever the order of composition.
        assert_eq!(prefer_network("eip155:8453").and_then(max_amount(U256::from(2000))).select(&options).unwrap(), 1);
        assert_eq!(
            max_amount(U256::from(999)).select(&options),
            Err(ClientError::AmountOverCap { cap: U256::from(999), cheapest: Some(U256::from(1000)) })
        );
        assert_eq!(
            PaymentSelector::new().filter(|r| r.scheme == "upto").select(&options),
            Err(ClientError::NoAcceptableOption)
        );
        let last = PaymentSelector::from_fn(|c| c.len().checked_sub(1));
        assert_eq!(last.select(&options).unwrap(), 2);
        assert_eq!(prefer_scheme("aggr_deferred").and_then(last).select(&options).unwrap(), 2);
        assert_eq!(PaymentSelector::from_fn(|_| None).select(&options), Err(ClientError::NoAcceptableOption));
        assert_eq!(PaymentSelector::from_fn(|_| Some(9)).select(&options), Err(ClientError::NoAcceptableOption));
        assert!(format!("{:?}", max_amount(U256::from(1))).contains("max_amount(1)"));
    }

    #[tokio::test]
    async fn client_only_considers_registered_options() {
        let options = vec![
            req("exact", "eip155:8453", "5000"),
            req("aggr_deferred", "eip155:196", "2000"),
            req("exact", "eip155:196", "1000"),
        ];
        let challenge = AnyPaymentRequired::V2(PaymentRequired {
            x402_version: 2,
            error: None,
            resource: None,
            accepts: options.clone(),
            extensions: None,
        });
        let client = X402Client::new().register("eip155:196", Named("exact"));
        assert_eq!(client.select(&options).unwrap(), 2);
        let AnyPaymentPayload::V2(p) = client.create_payment_payload(&challenge).await.unwrap() else { panic!() };
        assert_eq!(p.accepted, options[2]);
        assert_eq!(p.payload["by"], "exact@eip155:196");

        // Exact patterns beat wildcards registered earlier.
        let client = X402Client::new().register("eip155:*", Named("exact")).register("eip155:8453", Named("exact"));
        assert!(client.supports("exact", &"eip155:1".into()));
        assert!(!client.supports("exact", &"solana:x".into()));
        assert!(!client.supports("aggr_deferred", &"eip155:196".into()));
        assert_eq!(client.select(&options).unwrap(), 0);

        let none = X402Client::new().register("eip155:1", Named("exact"));
        let err = none.create_payment_payload(&challenge).await.unwrap_err();
        assert!(matches!(&err, ClientError::NoSupportedOption { offered } if offered.len() == 3), "{err}");
        assert!(err.to_string().contains("aggr_deferred@eip155:196"));
    }

    #[test]
    fn extensions_merge_like_x402_core() {
        let obj = |v: serde_json::Value| v.as_object().cloned().unwrap();
        let server = obj(json!({"a": {"keep": 1, "deep": {"x": 1}}, "b": 1, "builder-code": {"s": ["srv", "both"]}}));
        let client = obj(json!({"a": {"keep": 2, "add": 3, "deep": {"y": 2}}, "b": {"o": 1}, "c": 4,
            "builder-code": {"s": ["cli", "both"]}}));
        assert_eq!(
            merge_extensions(Some(&server), Some(&client)).unwrap(),
            obj(json!({"a": {"keep": 1, "deep": {"x": 1, "y": 2}, "add": 3}, "b": {"o": 1}, "c": 4,
                "builder-code": {"s": ["cli", "both", "srv"]}}))
        );
        assert_eq!(merge_extensions(None, Some(&client)), Some(client.clone()));
        assert_eq!(merge_extensions(Some(&server), None), Some(server));
        assert_eq!(merge_extensions(None, None), None);
    }

    #[tokio::test]
    async fn v1_challenge_gives_v1_payload_and_header() {
        let challenge = AnyPaymentRequired::V1(PaymentRequiredV1 {
            x402_version: 1,
            error: None,
            accepts: vec![PaymentRequirementsV1 {
                scheme: "exact".into(),
                network: "eip155:196".into(),
                max_amount_required: "1000".into(),
                resource: "https://example.com/x".into(),
                description: None,
                mime_type: None,
                pay_to: PAY_TO.into(),
                max_timeout_seconds: 60,
                asset: "0x779ded0c9e1022225f8e0630b35a9b54be713736".into(),
                output_schema: None,
                extra: Some(json!({"name": "USD\u{20ae}0", "version": "1"}).as_object().cloned().unwrap()),
            }],
        });
        let client = X402Client::new().register("eip155:*", scheme());
        let AnyPaymentPayload::V1(p) = client.create_payment_payload(&challenge).await.unwrap() else { panic!() };
        assert_eq!((p.x402_version, p.scheme.as_str(), p.network.as_str()), (1, "exact", "eip155:196"));
        assert_eq!(p.payload["authorization"]["value"], "1000");
        assert_eq!(p.payload["authorization"]["validBefore"], "1000060");
        let (name, _) = client.create_payment_header(&challenge).await.unwrap();
        assert_eq!(name, X_PAYMENT_HEADER);
    }
}
