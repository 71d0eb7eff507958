//! A self-hosted, on-chain x402 facilitator (feature `chain`).
//!
//! * [`X402Facilitator`] dispatches `verify` / `settle` / `supported` to registered facilitator
//!   schemes by (x402 version, scheme, network), like the Python SDK's `x402Facilitator`. It
//!   implements [`FacilitatorClient`], so a seller can use it in-process.
//! * [`ExactEvmFacilitatorScheme`] is the `exact` EVM scheme for EIP-3009 tokens over an alloy
//!   provider: the full verify checklist of wire facts §7 against the chain (EIP-712 / ERC-1271
//!   signatures, validity window, `authorizationState`, balance, an `eth_call` simulation) and
//!   settlement by sending `transferWithAuthorization` from the facilitator's key.
//! * [`UptoEvmFacilitator`] is the `upto` scheme (Permit2 authorisations of a maximum, settled
//!   for the actual amount through the x402 upto proxy); [`ExactEvmFacilitatorScheme`] also
//!   verifies and settles `exact` over Permit2 (`extra.assetTransferMethod = "permit2"`). Both
//!   share one settlement account (see the `permit2` checklist in [`UptoEvmFacilitator`]'s docs).
//! * [`server::router`] (features `chain` + `axum`) serves the standard facilitator HTTP API
//!   (`POST /verify`, `POST /settle`, `GET /supported`, `GET /settle/status`).
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use pay402_runtime::x402::facilitator_evm::{ExactEvmFacilitatorScheme, X402Facilitator};
//!
//! let key = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80".parse()?;
//! let exact = ExactEvmFacilitatorScheme::connect_http("http://127.0.0.1:8545", key).await?;
//! let network = exact.network().clone(); // eip155:<the node's chain id>
//! let facilitator = X402Facilitator::new().register([network], exact);
//! # let _ = facilitator; Ok(()) }
//! ```

mod exact;
mod permit2;
#[cfg(feature = "axum")]
pub mod server;

pub use exact::{DEFAULT_MAX_SETTLEMENT_GAS, DEFAULT_RPC_TIMEOUT, ExactEvmFacilitatorScheme, SetupError};
/// The settlement machinery of the `exact` scheme that the Permit2 payments share.
use exact::{InFlight, Read};
pub use permit2::UptoEvmFacilitator;

use super::facilitator::{FacilitatorClient, FacilitatorError};
use super::types::{
    JsonObject, PaymentPayload, PaymentRequirements, SettleResponse, SettleStatusResponse, SupportedKind,
    SupportedResponse, VerifyResponse, X402_VERSION,
};
use crate::chain::Network;
use async_trait::async_trait;
use std::fmt;
use std::sync::Arc;

/// The `invalidReason` / `errorReason` strings of the on-chain facilitator: those of the
/// embedded facilitator ([`crate::x402::reasons`]) plus the chain-only ones of wire
/// facts §7.
pub mod reasons {
    pub use crate::x402::reasons::*;
    /// The payload's `x402Version` is not served.
    pub const INVALID_X402_VERSION: &str = "invalid_x402_version";
    /// The token has no working `authorizationState(address,bytes32)` (not EIP-3009).
    pub const EIP3009_NOT_SUPPORTED: &str = "invalid_exact_evm_eip3009_not_supported";
    /// The token's `name()` differs from `extra.name`.
    pub const TOKEN_NAME_MISMATCH: &str = "invalid_exact_evm_token_name_mismatch";
    /// The token's `version()` differs from `extra.version`.
    pub const TOKEN_VERSION_MISMATCH: &str = "invalid_exact_evm_token_version_mismatch";
    /// The `eth_call` simulation of `transferWithAuthorization` reverted for another reason.
    pub const SIMULATION_FAILED: &str = "invalid_exact_evm_transaction_simulation_failed";
    /// The facilitator's account cannot pay the gas of the settlement transaction.
    pub const FACILITATOR_INSUFFICIENT_GAS: &str = "facilitator_insufficient_gas_funds";
    /// The settlement transaction was not found on chain (dropped from the mempool).
    pub const TRANSACTION_NOT_FOUND: &str = "transaction_not_found";
    /// The asset is not one this facilitator was configured for (the x402 SDKs' reason for an
    /// asset missing from the network's configuration).
    pub const FAILED_TO_GET_ASSET_INFO: &str = "invalid_exact_evm_failed_to_get_asset_info";
    /// The settlement transaction would need more gas than the facilitator's ceiling (pay402's
    /// own reason; nothing was sent).
    pub const GAS_ABOVE_CEILING: &str = "invalid_exact_evm_settlement_gas_above_ceiling";
    /// Permit2: the spender is not the x402 proxy of the payment's kind.
    pub const INVALID_PERMIT2_SPENDER: &str = "invalid_permit2_spender";
    /// Permit2: `witness.to` is not the requirements' `payTo`.
    pub const INVALID_PERMIT2_RECIPIENT_MISMATCH: &str = "invalid_permit2_recipient_mismatch";
    /// Permit2: the deadline has passed (or is within 6 seconds).
    pub const PERMIT2_DEADLINE_EXPIRED: &str = "permit2_deadline_expired";
    /// Permit2: `witness.validAfter` is in the future.
    pub const PERMIT2_NOT_YET_VALID: &str = "permit2_not_yet_valid";
    /// Permit2: the signed amount is not the requirements' amount.
    pub const PERMIT2_AMOUNT_MISMATCH: &str = "permit2_amount_mismatch";
    /// Permit2: the signed token is not the requirements' asset.
    pub const PERMIT2_TOKEN_MISMATCH: &str = "permit2_token_mismatch";
    /// Permit2: the signature is not `from`'s over Permit2's domain.
    pub const INVALID_PERMIT2_SIGNATURE: &str = "invalid_permit2_signature";
    /// Permit2: the buyer has not approved Permit2 for the amount (the one-time ERC-20
    /// `approve`); sellers answer it with HTTP 412.
    pub const PERMIT2_ALLOWANCE_REQUIRED: &str = "permit2_allowance_required";
    /// Permit2: the buyer's balance is below the amount.
    pub const PERMIT2_INSUFFICIENT_BALANCE: &str = "permit2_insufficient_balance";
    /// `upto`: `witness.facilitator` is not this facilitator.
    pub const UPTO_FACILITATOR_MISMATCH: &str = "upto_facilitator_mismatch";
    /// `upto`: the amount to settle is above the signed maximum.
    pub const UPTO_SETTLEMENT_EXCEEDS_AMOUNT: &str = "invalid_upto_evm_payload_settlement_exceeds_amount";
}

/// The facilitator side of one payment scheme (e.g. `exact` on EVM networks).
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a facilitator-side x402 scheme",
    label = "this does not implement `SchemeNetworkFacilitator`",
    note = "implement `pay402::x402::facilitator_evm::SchemeNetworkFacilitator` (`scheme`, `signers`, `verify`, `settle`; with `#[async_trait]`) for it, or register the built-in `x402::facilitator_evm::ExactEvmFacilitatorScheme` (EIP-3009 over an alloy provider)"
)]
#[async_trait]
pub trait SchemeNetworkFacilitator: Send + Sync + 'static {
    /// The scheme name (`exact`).
    fn scheme(&self) -> &str;

    /// The x402 version served (2).
    fn x402_version(&self) -> u32 {
        X402_VERSION
    }

    /// `extra` advertised in `/supported` for `network`.
    fn supported_extra(&self, network: &Network) -> Option<JsonObject> {
        let _ = network;
        None
    }

    /// The CAIP family (`eip155:*`) and the addresses that sign settlements, for `/supported`'s
    /// `signers`.
    fn signers(&self) -> (String, Vec<String>);

    /// Verifies `payload` against the seller's `requirements`.
    async fn verify(
        &self,
        payload: &PaymentPayload,
        requirements: &PaymentRequirements,
    ) -> Result<VerifyResponse, FacilitatorError>;

    /// Settles `payload` against the seller's `requirements`.
    async fn settle(
        &self,
        payload: &PaymentPayload,
        requirements: &PaymentRequirements,
    ) -> Result<SettleResponse, FacilitatorError>;

    /// The status of a settlement transaction this scheme may have sent on `network`;
    /// `Ok(None)` when the scheme does not serve it.
    async fn settle_status(&self, tx_hash: &str) -> Result<Option<SettleStatusResponse>, FacilitatorError> {
        let _ = tx_hash;
        Ok(None)
    }
}

struct Registration {
    networks: Vec<Network>,
    scheme: Arc<dyn SchemeNetworkFacilitator>,
}

/// A facilitator dispatching to registered schemes by (x402 version, scheme, network).
///
/// Network registrations may be exact (`eip155:196`) or wildcards (`eip155:*`); the first
/// matching registration wins. Unregistered kinds are answered `unsupported_scheme` (verify)
/// or a failed settlement, never an error.
#[derive(Clone, Default)]
pub struct X402Facilitator {
    registrations: Arc<Vec<Registration>>,
}

impl fmt::Debug for X402Facilitator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kinds: Vec<_> = self
            .registrations
            .iter()
            .map(|r| (r.scheme.x402_version(), r.scheme.scheme().to_owned(), r.networks.clone()))
            .collect();
        f.debug_struct("X402Facilitator").field("kinds", &kinds).finish()
    }
}

impl X402Facilitator {
    /// A facilitator with no schemes.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `scheme` for `networks` (exact CAIP-2 ids or `namespace:*` wildcards).
    pub fn register<N: Into<Network>>(
        mut self,
        networks: impl IntoIterator<Item = N>,
        scheme: impl SchemeNetworkFacilitator,
    ) -> Self {
        self.push(networks.into_iter().map(Into::into).collect(), Arc::new(scheme));
        self
    }

    /// Registers a shared scheme (e.g. one also used directly by a test).
    pub fn register_shared<N: Into<Network>>(
        mut self,
        networks: impl IntoIterator<Item = N>,
        scheme: Arc<dyn SchemeNetworkFacilitator>,
    ) -> Self {
        self.push(networks.into_iter().map(Into::into).collect(), scheme);
        self
    }

    fn push(&mut self, networks: Vec<Network>, scheme: Arc<dyn SchemeNetworkFacilitator>) {
        let mut registrations: Vec<Registration> = self
            .registrations
            .iter()
            .map(|r| Registration { networks: r.networks.clone(), scheme: Arc::clone(&r.scheme) })
            .collect();
        registrations.push(Registration { networks, scheme });
        self.registrations = Arc::new(registrations);
    }

    /// The scheme registered for (version, scheme, network), if any.
    fn find(&self, version: u32, scheme: &str, network: &Network) -> Option<&Arc<dyn SchemeNetworkFacilitator>> {
        self.registrations
            .iter()
            .find(|r| {
                r.scheme.x402_version() == version
                    && r.scheme.scheme() == scheme
                    && r.networks.iter().any(|n| network.matches_pattern(n.as_str()))
            })
            .map(|r| &r.scheme)
    }

    /// Picks the scheme for a payment, or the rejection reason.
    fn route(
        &self,
        payload: &PaymentPayload,
        requirements: &PaymentRequirements,
    ) -> Result<&Arc<dyn SchemeNetworkFacilitator>, &'static str> {
        if payload.x402_version != X402_VERSION {
            return Err(reasons::INVALID_X402_VERSION);
        }
        self.find(payload.x402_version, &requirements.scheme, &requirements.network).ok_or(reasons::UNSUPPORTED_SCHEME)
    }

    /// The `/supported` answer: one kind per registered (scheme, network), plus signers by
    /// CAIP family.
    pub fn supported_kinds(&self) -> SupportedResponse {
        let mut response = SupportedResponse::default();
        for registration in self.registrations.iter() {
            for network in &registration.networks {
                response.kinds.push(SupportedKind {
                    x402_version: registration.scheme.x402_version(),
                    scheme: registration.scheme.scheme().to_owned(),
                    network: network.clone(),
                    extra: registration.scheme.supported_extra(network),
                });
            }
            let (family, signers) = registration.scheme.signers();
            let entry = response.signers.entry(family).or_insert_with(|| serde_json::Value::Array(Vec::new()));
            if let serde_json::Value::Array(list) = entry {
                for signer in signers {
                    let signer = serde_json::Value::String(signer);
                    if !list.contains(&signer) {
                        list.push(signer);
                    }
                }
            }
        }
        response
    }
}

#[async_trait]
impl FacilitatorClient for X402Facilitator {
    async fn verify(
        &self,
        payload: &PaymentPayload,
        requirements: &PaymentRequirements,
    ) -> Result<VerifyResponse, FacilitatorError> {
        match self.route(payload, requirements) {
            Ok(scheme) => scheme.verify(payload, requirements).await,
            Err(reason) => Ok(VerifyResponse::invalid(reason, payload.claimed_payer().map(str::to_owned))),
        }
    }

    async fn settle(
        &self,
        payload: &PaymentPayload,
        requirements: &PaymentRequirements,
    ) -> Result<SettleResponse, FacilitatorError> {
        match self.route(payload, requirements) {
            Ok(scheme) => scheme.settle(payload, requirements).await,
            Err(reason) => Ok(SettleResponse::failure(
                reason,
                requirements.network.clone(),
                payload.claimed_payer().map(str::to_owned),
                String::new(),
            )),
        }
    }

    async fn supported(&self) -> Result<SupportedResponse, FacilitatorError> {
        Ok(self.supported_kinds())
    }

    /// Asks each registered scheme in turn: the first that knows the transaction answers;
    /// when none does, the first `transaction_not_found` answer.
    async fn settle_status(&self, tx_hash: &str) -> Result<SettleStatusResponse, FacilitatorError> {
        let mut not_found = None;
        for registration in self.registrations.iter() {
            match registration.scheme.settle_status(tx_hash).await? {
                Some(status) if status.error_reason.as_deref() == Some(reasons::TRANSACTION_NOT_FOUND) => {
                    not_found.get_or_insert(status);
                }
                Some(status) => return Ok(status),
                None => {}
            }
        }
        not_found.ok_or(FacilitatorError::Unsupported("settle status queries for this transaction"))
    }

    fn name(&self) -> &str {
        "x402-facilitator"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A scheme answering with its own name, counting calls.
    struct Named {
        name: &'static str,
        calls: Arc<AtomicUsize>,
        signer: &'static str,
        knows: Option<&'static str>,
    }

    #[async_trait]
    impl SchemeNetworkFacilitator for Named {
        fn scheme(&self) -> &str {
            "exact"
        }
        fn signers(&self) -> (String, Vec<String>) {
            ("eip155:*".into(), vec![self.signer.to_owned()])
        }
        async fn verify(
            &self,
            _: &PaymentPayload,
            _: &PaymentRequirements,
        ) -> Result<VerifyResponse, FacilitatorError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            Ok(VerifyResponse::valid(self.name))
        }
        async fn settle(
            &self,
            _: &PaymentPayload,
            r: &PaymentRequirements,
        ) -> Result<SettleResponse, FacilitatorError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            Ok(SettleResponse::failure(self.name, r.network.clone(), None, String::new()))
        }
        async fn settle_status(&self, tx: &str) -> Result<Option<SettleStatusResponse>, FacilitatorError> {
            let found = self.knows == Some(tx);
            Ok(Some(SettleStatusResponse {
                success: found,
                status: Some(if found { "success" } else { "failed" }.into()),
                error_reason: (!found).then(|| reasons::TRANSACTION_NOT_FOUND.to_owned()),
                error_message: None,
                payer: Some(self.name.to_owned()),
                transaction: Some(tx.to_owned()),
                network: None,
            }))
        }
    }

    fn named(name: &'static str, signer: &'static str, knows: Option<&'static str>) -> (Named, Arc<AtomicUsize>) {
        let calls = Arc::new(AtomicUsize::new(0));
        (Named { name, calls: Arc::clone(&calls), signer, knows }, calls)
    }

    fn payment(scheme: &str, network: &str) -> (PaymentPayload, PaymentRequirements) {
        let requirements = PaymentRequirements {
            scheme: scheme.into(),
            network: network.into(),
            asset: "0x779ded0c9e1022225f8e0630b35a9b54be713736".into(),
            amount: "1000".into(),
            pay_to: "0x1111111111111111111111111111111111111111".into(),
            max_timeout_seconds: 300,
            extra: JsonObject::new(),
        };
        let mut payload = JsonObject::new();
        payload.insert("authorization".into(), serde_json::json!({"from": "0xabc"}));
        let p = PaymentPayload {
            x402_version: 2,
            payload,
            accepted: requirements.clone(),
            resource: None,
            extensions: None,
        };
        (p, requirements)
    }

    #[tokio::test]
    async fn dispatches_by_version_scheme_and_network() {
        let (x_layer, x_calls) = named("x-layer", "0xA", Some("0x01"));
        let (any_evm, any_calls) = named("any-evm", "0xA", Some("0x02"));
        let f = X402Facilitator::new().register(["eip155:196"], x_layer).register(["eip155:*"], any_evm);

        let (p, r) = payment("exact", "eip155:196");
        assert_eq!(f.verify(&p, &r).await.unwrap().payer.as_deref(), Some("x-layer"));
        let (p, r) = payment("exact", "eip155:8453");
        assert_eq!(f.settle(&p, &r).await.unwrap().error_reason.as_deref(), Some("any-evm"));
        assert_eq!((x_calls.load(Ordering::SeqCst), any_calls.load(Ordering::SeqCst)), (1, 1));

        // Unregistered scheme or namespace, or another x402 version: answered, never dispatched.
        for (scheme, network, version, reason) in [
            ("aggr_deferred", "eip155:196", 2, reasons::UNSUPPORTED_SCHEME),
            ("exact", "solana:mainnet", 2, reasons::UNSUPPORTED_SCHEME),
            ("exact", "eip155:196", 1, reasons::INVALID_X402_VERSION),
        ] {
            let (mut p, r) = payment(scheme, network);
            p.x402_version = version;
            let v = f.verify(&p, &r).await.unwrap();
            assert_eq!(
                (v.is_valid, v.invalid_reason.as_deref(), v.payer.as_deref()),
                (false, Some(reason), Some("0xabc"))
            );
            let s = f.settle(&p, &r).await.unwrap();
            assert_eq!((s.success, s.error_reason.as_deref()), (false, Some(reason)));
            assert_eq!(s.network.as_str(), network);
        }
        assert_eq!((x_calls.load(Ordering::SeqCst), any_calls.load(Ordering::SeqCst)), (1, 1));
    }

    #[tokio::test]
    async fn supported_lists_kinds_and_deduplicated_signers() {
        let (a, _) = named("a", "0xA", None);
        let (b, _) = named("b", "0xA", None);
        let (c, _) = named("c", "0xC", None);
        let f = X402Facilitator::new()
            .register(["eip155:196", "eip155:8453"], a)
            .register(["eip155:1"], b)
            .register_shared(["eip155:10"], Arc::new(c));
        let supported = f.supported().await.unwrap();
        let kinds: Vec<_> =
            supported.kinds.iter().map(|k| (k.x402_version, k.scheme.as_str(), k.network.as_str())).collect();
        assert_eq!(
            kinds,
            [
                (2, "exact", "eip155:196"),
                (2, "exact", "eip155:8453"),
                (2, "exact", "eip155:1"),
                (2, "exact", "eip155:10")
            ]
        );
        assert_eq!(supported.signers["eip155:*"], serde_json::json!(["0xA", "0xC"]));
        assert!(X402Facilitator::new().supported().await.unwrap().kinds.is_empty());
        assert!(format!("{f:?}").contains("eip155:8453"));
    }

    #[tokio::test]
    async fn settle_status_prefers_the_scheme_that_knows_the_transaction() {
        let (a, _) = named("a", "0xA", Some("0x01"));
        let (b, _) = named("b", "0xB", Some("0x02"));
        let f = X402Facilitator::new().register(["eip155:1"], a).register(["eip155:2"], b);
        assert_eq!(f.settle_status("0x02").await.unwrap().payer.as_deref(), Some("b"));
        assert_eq!(f.settle_status("0x01").await.unwrap().payer.as_deref(), Some("a"));
        let unknown = f.settle_status("0x03").await.unwrap();
        assert!(!unknown.success);
        assert_eq!(unknown.error_reason.as_deref(), Some(reasons::TRANSACTION_NOT_FOUND));
        assert!(matches!(X402Facilitator::new().settle_status("0x01").await, Err(FacilitatorError::Unsupported(_))));
    }
}
