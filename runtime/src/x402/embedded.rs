//! [`EmbeddedFacilitator`]: an in-process x402 facilitator for the `exact` EVM scheme with
//! EIP-3009 tokens, backed by an in-memory token ledger instead of a chain.
//!
//! It really verifies payloads — the checklist of OKX's/Coinbase's Python facilitator (wire facts
//! §7), with the chain calls replaced by the ledger (nonce state and balances) — and settles by
//! moving balances. Use it for tests, demos and local development; it never touches a network.
//!
//! ```
//! use pay402_runtime::evm::U256;
//! use pay402_runtime::x402::embedded::EmbeddedFacilitator;
//! use pay402_runtime::chain::X_LAYER_USDT0;
//!
//! let facilitator = EmbeddedFacilitator::new().with_clock(|| 1_700_000_000);
//! let payer = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266";
//! facilitator.fund(X_LAYER_USDT0, payer, U256::from(5_000)).unwrap();
//! assert_eq!(facilitator.balance(X_LAYER_USDT0, &payer.to_lowercase()), U256::from(5_000));
//! ```

use super::facilitator::{FacilitatorClient, FacilitatorError};
use super::types::{
    PaymentPayload, PaymentRequirements, SettleResponse, SettleStatusResponse, SupportedKind, SupportedResponse,
    VerifyResponse, X402_VERSION, settle_status,
};
use crate::chain::Network;
use crate::chain::X_LAYER;
use crate::evm::transaction_hash;
use crate::evm::{self, Address, B256, TransferWithAuthorization, U256, UnixClock};
use async_trait::async_trait;
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// The `invalidReason` / `errorReason` strings of the embedded facilitator (the Python
/// reference's constants).
pub mod reasons {
    /// `accepted.scheme` (or the requirements' scheme) is not `exact`.
    pub const UNSUPPORTED_SCHEME: &str = "unsupported_scheme";
    /// `accepted.network` differs from the requirements' network.
    pub const NETWORK_MISMATCH: &str = "network_mismatch";
    /// The network is not `eip155:<id>` or not served by this facilitator.
    pub const FAILED_TO_GET_NETWORK_CONFIG: &str = "invalid_exact_evm_failed_to_get_network_config";
    /// `extra.name` / `extra.version` missing.
    pub const MISSING_EIP712_DOMAIN: &str = "missing_eip712_domain";
    /// The payload is not an EIP-3009 `{signature, authorization}` object of strings.
    pub const INVALID_PAYLOAD: &str = "invalid_payload";
    /// `authorization.to` is not `payTo`.
    pub const RECIPIENT_MISMATCH: &str = "invalid_exact_evm_payload_recipient_mismatch";
    /// `authorization.value` is not exactly `amount`.
    pub const VALUE_MISMATCH: &str = "invalid_exact_evm_payload_authorization_value_mismatch";
    /// `validBefore` is less than 6 s away.
    pub const VALID_BEFORE: &str = "invalid_exact_evm_payload_authorization_valid_before";
    /// `validAfter` is in the future.
    pub const VALID_AFTER: &str = "invalid_exact_evm_payload_authorization_valid_after";
    /// The signature is missing, malformed, or not by `from`.
    pub const INVALID_SIGNATURE: &str = "invalid_exact_evm_payload_signature";
    /// The typed data could not be built (unparseable `from`, nonce or asset).
    pub const FAILED_TO_VERIFY_SIGNATURE: &str = "invalid_exact_evm_failed_to_verify_signature";
    /// The nonce was already used by this authorizer on this token.
    pub const NONCE_ALREADY_USED: &str = "invalid_exact_evm_nonce_already_used";
    /// `accepted.asset` differs from the requirements' asset.
    pub const ASSET_MISMATCH: &str = "invalid_exact_evm_asset_mismatch";
    /// The payer's ledger balance is below the value.
    pub const INSUFFICIENT_BALANCE: &str = "invalid_exact_evm_insufficient_balance";
    /// Crediting the recipient would overflow (a ledger transfer failed).
    pub const TRANSACTION_FAILED: &str = "transaction_failed";
}

/// `validBefore` must be at least this many seconds in the future (Python's buffer).
pub const VALID_BEFORE_BUFFER_SECONDS: u64 = 6;

#[derive(Default)]
struct Ledger {
    /// (token, owner) → balance.
    balances: HashMap<(Address, Address), U256>,
    /// The balance of accounts absent from `balances` (zero unless a faucet is set).
    faucet: U256,
    /// (token, authorizer, nonce) used by a settlement.
    used_nonces: HashSet<(Address, Address, B256)>,
    /// Successful settlements, in order.
    settlements: Vec<SettleResponse>,
}

impl Ledger {
    fn balance_of(&self, key: &(Address, Address)) -> U256 {
        self.balances.get(key).copied().unwrap_or(self.faucet)
    }
}

/// A payment that passed every check.
struct Checked {
    chain_id: u64,
    asset: Address,
    from: Address,
    to: Address,
    value: U256,
    nonce: B256,
    payer: String,
}

/// A failed check: (reason, payer).
type Rejection = (&'static str, Option<String>);

/// An in-process `exact` EVM (EIP-3009) facilitator with an in-memory ledger.
///
/// Clones share the ledger (balances, used nonces, settlements), so a test can keep a handle
/// while a resource server owns another. The builder methods ([`Self::with_networks`],
/// [`Self::with_clock`]) affect only the handle they are called on (and its later clones).
#[derive(Clone)]
pub struct EmbeddedFacilitator {
    networks: Vec<Network>,
    clock: UnixClock,
    ledger: Arc<Mutex<Ledger>>,
}

impl fmt::Debug for EmbeddedFacilitator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmbeddedFacilitator").field("networks", &self.networks).finish_non_exhaustive()
    }
}

impl Default for EmbeddedFacilitator {
    fn default() -> Self {
        Self::new()
    }
}

impl EmbeddedFacilitator {
    /// A facilitator for X Layer (`eip155:196`) with an empty ledger and the system clock.
    pub fn new() -> Self {
        Self { networks: vec![Network::from(X_LAYER)], clock: evm::system_clock(), ledger: Arc::default() }
    }

    /// Replaces the served networks (each should be `eip155:<id>`).
    pub fn with_networks<N: Into<Network>>(mut self, networks: impl IntoIterator<Item = N>) -> Self {
        self.networks = networks.into_iter().map(Into::into).collect();
        self
    }

    /// Replaces the clock (Unix seconds), for tests.
    pub fn with_clock(mut self, clock: impl Fn() -> u64 + Send + Sync + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Development faucet: every account the ledger has not seen yet (per token) starts with
    /// `amount` instead of zero, so any wallet can pay. Applies to the shared ledger, hence to
    /// every clone.
    pub fn with_faucet(self, amount: U256) -> Self {
        self.lock().faucet = amount;
        self
    }

    /// The served networks.
    pub fn networks(&self) -> &[Network] {
        &self.networks
    }

    fn lock(&self) -> MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Credits `amount` of token `asset` to `owner` (addresses in any case); returns the new
    /// balance.
    pub fn fund(&self, asset: &str, owner: &str, amount: U256) -> Result<U256, evm::EvmError> {
        let key = (evm::parse_address(asset)?, evm::parse_address(owner)?);
        let mut ledger = self.lock();
        let balance = ledger.balance_of(&key).checked_add(amount).ok_or(evm::EvmError::Overflow)?;
        ledger.balances.insert(key, balance);
        Ok(balance)
    }

    /// The ledger balance of `owner` in token `asset` (the faucet amount, zero by default, for
    /// accounts not seen yet; zero for unparseable addresses).
    pub fn balance(&self, asset: &str, owner: &str) -> U256 {
        let (Ok(asset), Ok(owner)) = (evm::parse_address(asset), evm::parse_address(owner)) else {
            return U256::ZERO;
        };
        self.lock().balance_of(&(asset, owner))
    }

    /// Whether `authorizer` already used `nonce` (`0x` + 64 hex) on token `asset`.
    pub fn is_nonce_used(&self, asset: &str, authorizer: &str, nonce: &str) -> bool {
        let (Ok(asset), Ok(authorizer), Ok(nonce)) =
            (evm::parse_address(asset), evm::parse_address(authorizer), evm::parse_bytes32(nonce))
        else {
            return false;
        };
        self.lock().used_nonces.contains(&(asset, authorizer, nonce))
    }

    /// The successful settlements so far, in order.
    pub fn settlements(&self) -> Vec<SettleResponse> {
        self.lock().settlements.clone()
    }

    /// How many settlements succeeded.
    pub fn settlement_count(&self) -> usize {
        self.lock().settlements.len()
    }

    /// Verifies without touching the ledger's state (synchronous core of
    /// [`FacilitatorClient::verify`]).
    pub fn verify_now(&self, payload: &PaymentPayload, requirements: &PaymentRequirements) -> VerifyResponse {
        let ledger = self.lock();
        match self.check(&ledger, payload, requirements) {
            Ok(c) => VerifyResponse::valid(c.payer),
            Err((reason, payer)) => VerifyResponse::invalid(reason, payer),
        }
    }

    /// Re-verifies and settles atomically (synchronous core of [`FacilitatorClient::settle`]).
    pub fn settle_now(&self, payload: &PaymentPayload, requirements: &PaymentRequirements) -> SettleResponse {
        let network = requirements.network.clone();
        let mut ledger = self.lock();
        let checked = match self.check(&ledger, payload, requirements) {
            Ok(c) => c,
            Err((reason, payer)) => return SettleResponse::failure(reason, network, payer, String::new()),
        };
        let from_key = (checked.asset, checked.from);
        let to_key = (checked.asset, checked.to);
        let from_balance = ledger.balance_of(&from_key);
        let Some(debited) = from_balance.checked_sub(checked.value) else {
            return SettleResponse::failure(reasons::INSUFFICIENT_BALANCE, network, Some(checked.payer), String::new());
        };
        let to_balance = if checked.from == checked.to { debited } else { ledger.balance_of(&to_key) };
        let Some(credited) = to_balance.checked_add(checked.value) else {
            return SettleResponse::failure(reasons::TRANSACTION_FAILED, network, Some(checked.payer), String::new());
        };
        ledger.balances.insert(from_key, debited);
        ledger.balances.insert(to_key, credited);
        ledger.used_nonces.insert((checked.asset, checked.from, checked.nonce));

        let response = SettleResponse {
            success: true,
            error_reason: None,
            error_message: None,
            status: Some(settle_status::SUCCESS.to_owned()),
            payer: Some(checked.payer.clone()),
            transaction: transaction_hash(checked.chain_id, checked.asset, checked.from, checked.nonce),
            network,
        };
        ledger.settlements.push(response.clone());
        tracing::debug!(payer = %checked.payer, value = %checked.value, "embedded facilitator settled");
        response
    }

    /// The §7 checklist, in order; the first failure wins.
    fn check(
        &self,
        ledger: &Ledger,
        payload: &PaymentPayload,
        requirements: &PaymentRequirements,
    ) -> Result<Checked, Rejection> {
        let authorization = payload.payload.get("authorization").and_then(Value::as_object);
        let field = |name: &str| authorization.and_then(|a| a.get(name)).and_then(Value::as_str);
        let payer = field("from").map(str::to_owned);
        let reject = |reason: &'static str| -> Rejection { (reason, payer.clone()) };

        // 1. scheme
        if payload.accepted.scheme != "exact" || requirements.scheme != "exact" {
            return Err(reject(reasons::UNSUPPORTED_SCHEME));
        }
        // 2. network
        if payload.accepted.network != requirements.network {
            return Err(reject(reasons::NETWORK_MISMATCH));
        }
        // 3. chain id (and a network this facilitator serves)
        let chain_id = evm::chain_id_of(requirements.network.as_str())
            .ok()
            .filter(|_| self.networks.contains(&requirements.network))
            .ok_or_else(|| reject(reasons::FAILED_TO_GET_NETWORK_CONFIG))?;
        // 4. EIP-712 domain
        let extra = |key: &str| requirements.extra.get(key).and_then(Value::as_str);
        let (Some(name), Some(version)) = (extra("name"), extra("version")) else {
            return Err(reject(reasons::MISSING_EIP712_DOMAIN));
        };
        // Payload shape: an authorization object whose six fields are strings.
        let (Some(from), Some(to), Some(value), Some(valid_after), Some(valid_before), Some(nonce)) =
            (field("from"), field("to"), field("value"), field("validAfter"), field("validBefore"), field("nonce"))
        else {
            return Err(reject(reasons::INVALID_PAYLOAD));
        };
        // 5. recipient
        if !to.eq_ignore_ascii_case(&requirements.pay_to) {
            return Err(reject(reasons::RECIPIENT_MISMATCH));
        }
        // 6. value, exactly
        let value = evm::parse_uint256(value)
            .ok()
            .filter(|v| Some(*v) == requirements.amount_atomic())
            .ok_or_else(|| reject(reasons::VALUE_MISMATCH))?;
        // 7–8. validity window
        let now = U256::from((self.clock)());
        let valid_before = evm::parse_uint256(valid_before)
            .ok()
            .filter(|vb| *vb >= now + U256::from(VALID_BEFORE_BUFFER_SECONDS))
            .ok_or_else(|| reject(reasons::VALID_BEFORE))?;
        let valid_after =
            evm::parse_uint256(valid_after).ok().filter(|va| *va <= now).ok_or_else(|| reject(reasons::VALID_AFTER))?;
        // 9. signature present
        let signature = payload
            .payload
            .get("signature")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| reject(reasons::INVALID_SIGNATURE))?;
        // 10. signature by `from` over the typed data
        let (Ok(from_address), Ok(to_address), Ok(nonce), Ok(token)) = (
            evm::parse_address(from),
            evm::parse_address(to),
            evm::parse_bytes32(nonce),
            evm::parse_address(&requirements.asset),
        ) else {
            return Err(reject(reasons::FAILED_TO_VERIFY_SIGNATURE));
        };
        let message = TransferWithAuthorization {
            from: from_address,
            to: to_address,
            value,
            validAfter: valid_after,
            validBefore: valid_before,
            nonce,
        };
        let digest = evm::transfer_authorization_digest(&evm::eip3009_domain(name, version, chain_id, token), &message);
        if evm::recover_authorizer(&digest, signature).ok() != Some(from_address) {
            return Err(reject(reasons::INVALID_SIGNATURE));
        }
        // 11. nonce unused
        if ledger.used_nonces.contains(&(token, from_address, nonce)) {
            return Err(reject(reasons::NONCE_ALREADY_USED));
        }
        // 12. asset
        if !payload.accepted.asset.eq_ignore_ascii_case(&requirements.asset) {
            return Err(reject(reasons::ASSET_MISMATCH));
        }
        // 13. balance
        if ledger.balance_of(&(token, from_address)) < value {
            return Err(reject(reasons::INSUFFICIENT_BALANCE));
        }
        Ok(Checked { chain_id, asset: token, from: from_address, to: to_address, value, nonce, payer: from.to_owned() })
    }
}

#[async_trait]
impl FacilitatorClient for EmbeddedFacilitator {
    async fn verify(
        &self,
        payload: &PaymentPayload,
        requirements: &PaymentRequirements,
    ) -> Result<VerifyResponse, FacilitatorError> {
        Ok(self.verify_now(payload, requirements))
    }

    async fn settle(
        &self,
        payload: &PaymentPayload,
        requirements: &PaymentRequirements,
    ) -> Result<SettleResponse, FacilitatorError> {
        Ok(self.settle_now(payload, requirements))
    }

    async fn supported(&self) -> Result<SupportedResponse, FacilitatorError> {
        Ok(SupportedResponse {
            kinds: self
                .networks
                .iter()
                .map(|network| SupportedKind {
                    x402_version: X402_VERSION,
                    scheme: "exact".to_owned(),
                    network: network.clone(),
                    extra: None,
                })
                .collect(),
            ..SupportedResponse::default()
        })
    }

    async fn settle_status(&self, tx_hash: &str) -> Result<SettleStatusResponse, FacilitatorError> {
        let ledger = self.lock();
        let found = ledger.settlements.iter().find(|s| s.transaction.eq_ignore_ascii_case(tx_hash));
        Ok(match found {
            Some(s) => SettleStatusResponse {
                success: true,
                status: Some(settle_status::SUCCESS.to_owned()),
                error_reason: None,
                error_message: None,
                payer: s.payer.clone(),
                transaction: Some(s.transaction.clone()),
                network: Some(s.network.clone()),
            },
            None => SettleStatusResponse {
                success: false,
                status: Some(settle_status::FAILED.to_owned()),
                error_reason: Some("transaction_not_found".to_owned()),
                error_message: None,
                payer: None,
                transaction: Some(tx_hash.to_owned()),
                network: None,
            },
        })
    }

    fn name(&self) -> &str {
        "embedded"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::X_LAYER_USDT0;
    use crate::x402::client::ExactEvmClientScheme;
    use serde_json::json;

    const KEY: &str = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";
    const PAYER: &str = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266";
    const PAY_TO: &str = "0x1111111111111111111111111111111111111111";
    const NOW: u64 = 1_700_000_000;

    fn requirements() -> PaymentRequirements {
        PaymentRequirements {
            scheme: "exact".into(),
            network: X_LAYER.into(),
            asset: X_LAYER_USDT0.into(),
            amount: "1000".into(),
            pay_to: PAY_TO.into(),
            max_timeout_seconds: 300,
            extra: json!({"name": "USD\u{20ae}0", "version": "1"}).as_object().cloned().unwrap(),
        }
    }

    fn payment(nonce: u8) -> PaymentPayload {
        let scheme = ExactEvmClientScheme::new(KEY.parse().unwrap())
            .with_clock(|| NOW)
            .with_nonce_source(move || B256::repeat_byte(nonce));
        PaymentPayload {
            x402_version: 2,
            payload: scheme.sign_payload(&requirements()).unwrap().to_json_object(),
            accepted: requirements(),
            resource: None,
            extensions: None,
        }
    }

    fn facilitator() -> EmbeddedFacilitator {
        let f = EmbeddedFacilitator::new().with_clock(|| NOW);
        f.fund(X_LAYER_USDT0, PAYER, U256::from(1500)).unwrap();
        f
    }

    #[test]
    fn verify_settle_and_replay() {
        let f = facilitator();
        let handle = f.clone();
        let p = payment(1);
        assert_eq!(f.verify_now(&p, &requirements()), VerifyResponse::valid(PAYER));
        let settled = f.settle_now(&p, &requirements());
        assert!(settled.success, "{settled:?}");
        assert_eq!(settled.status.as_deref(), Some("success"));
        assert_eq!(settled.payer.as_deref(), Some(PAYER));
        let nonce = B256::repeat_byte(1);
        let asset = evm::parse_address(X_LAYER_USDT0).unwrap();
        let from = evm::parse_address(PAYER).unwrap();
        assert_eq!(settled.transaction, transaction_hash(196, asset, from, nonce));
        assert_eq!(settled.transaction.len(), 66);
        assert_eq!(handle.balance(X_LAYER_USDT0, PAYER), U256::from(500));
        assert_eq!(handle.balance(&X_LAYER_USDT0.to_uppercase().replace('X', "x"), PAY_TO), U256::from(1000));
        assert!(handle.is_nonce_used(X_LAYER_USDT0, &PAYER.to_lowercase(), &evm::to_hex(nonce)));
        assert_eq!(handle.settlement_count(), 1);

        let again = f.settle_now(&p, &requirements());
        assert_eq!(again.error_reason.as_deref(), Some(reasons::NONCE_ALREADY_USED));
        assert_eq!(again.transaction, "");
        assert!(!again.success);
        assert_eq!(handle.settlements(), vec![settled]);

        // Only 500 left: a second (fresh-nonce) payment of 1000 is refused.
        let poor = f.verify_now(&payment(2), &requirements());
        assert_eq!(poor.invalid_reason.as_deref(), Some(reasons::INSUFFICIENT_BALANCE));
        assert_eq!(poor.payer.as_deref(), Some(PAYER));
    }

    #[test]
    fn reasons_in_order() {
        let f = facilitator();
        type Mutation = Box<dyn Fn(&mut PaymentPayload, &mut PaymentRequirements)>;
        let cases: Vec<(&str, Mutation)> = vec![
            (reasons::UNSUPPORTED_SCHEME, Box::new(|p, _| p.accepted.scheme = "aggr_deferred".into())),
            (reasons::NETWORK_MISMATCH, Box::new(|p, _| p.accepted.network = "eip155:8453".into())),
            (
                reasons::FAILED_TO_GET_NETWORK_CONFIG,
                Box::new(|p, r| {
                    p.accepted.network = "eip155:8453".into();
                    r.network = "eip155:8453".into();
                }),
            ),
            (reasons::MISSING_EIP712_DOMAIN, Box::new(|_, r| drop(r.extra.remove("name")))),
            (reasons::INVALID_PAYLOAD, Box::new(|p, _| drop(p.payload.remove("authorization")))),
            (
                reasons::RECIPIENT_MISMATCH,
                Box::new(|_, r| r.pay_to = "0x2222222222222222222222222222222222222222".into()),
            ),
            (reasons::VALUE_MISMATCH, Box::new(|_, r| r.amount = "999".into())),
            (reasons::INVALID_SIGNATURE, Box::new(|p, _| drop(p.payload.remove("signature")))),
            (reasons::INVALID_SIGNATURE, Box::new(|p, _| drop(p.payload.insert("signature".into(), json!("0x1234"))))),
            (reasons::INVALID_SIGNATURE, Box::new(|_, r| drop(r.extra.insert("version".into(), json!("2"))))),
            (
                reasons::FAILED_TO_VERIFY_SIGNATURE,
                Box::new(|p, _| {
                    drop(p.payload["authorization"].as_object_mut().unwrap().insert("nonce".into(), json!("0x12")))
                }),
            ),
            (reasons::ASSET_MISMATCH, Box::new(|p, _| p.accepted.asset = PAY_TO.into())),
        ];
        for (expected, mutate) in cases {
            let mut p = payment(3);
            let mut r = requirements();
            mutate(&mut p, &mut r);
            let v = f.verify_now(&p, &r);
            assert_eq!(v.invalid_reason.as_deref(), Some(expected), "{v:?}");
            assert!(!v.is_valid);
        }
        // Upper-case payTo still matches (case-insensitive).
        let mut r = requirements();
        r.pay_to = PAY_TO.to_uppercase().replacen('X', "x", 1);
        assert!(f.verify_now(&payment(3), &r).is_valid);
    }

    #[test]
    fn time_window() {
        let p = payment(4); // validAfter NOW-600, validBefore NOW+300
        let at = |t: u64| facilitator().with_clock(move || t).verify_now(&p, &requirements());
        assert!(at(NOW + 294).is_valid);
        assert_eq!(at(NOW + 295).invalid_reason.as_deref(), Some(reasons::VALID_BEFORE));
        assert!(at(NOW - 600).is_valid);
        assert_eq!(at(NOW - 601).invalid_reason.as_deref(), Some(reasons::VALID_AFTER));
    }

    #[test]
    fn concurrent_settles_of_one_nonce_settle_once() {
        let f = facilitator();
        f.fund(X_LAYER_USDT0, PAYER, U256::from(100_000)).unwrap();
        let p = payment(5);
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (f, p) = (f.clone(), p.clone());
                std::thread::spawn(move || f.settle_now(&p, &requirements()).success)
            })
            .collect();
        let wins = threads.into_iter().map(|t| t.join().unwrap()).filter(|&ok| ok).count();
        assert_eq!(wins, 1);
        assert_eq!(f.balance(X_LAYER_USDT0, PAY_TO), U256::from(1000));
    }

    #[test]
    fn faucet_funds_unseen_accounts() {
        let f = EmbeddedFacilitator::new().with_clock(|| NOW).with_faucet(U256::from(5000));
        let handle = f.clone();
        assert_eq!(handle.balance(X_LAYER_USDT0, PAYER), U256::from(5000));
        assert!(f.settle_now(&payment(7), &requirements()).success);
        assert_eq!(handle.balance(X_LAYER_USDT0, PAYER), U256::from(4000));
        assert_eq!(handle.balance(X_LAYER_USDT0, PAY_TO), U256::from(6000));
        assert_eq!(handle.fund(X_LAYER_USDT0, PAYER, U256::from(1)).unwrap(), U256::from(4001));
        assert_eq!(EmbeddedFacilitator::new().balance(X_LAYER_USDT0, PAYER), U256::ZERO);
    }

    #[tokio::test]
    async fn trait_surface() {
        let f = facilitator().with_networks(["eip155:196", "eip155:8453"]);
        let kinds = f.supported().await.unwrap().kinds;
        assert_eq!(kinds.len(), 2);
        assert!(kinds.iter().all(|k| k.x402_version == 2 && k.scheme == "exact"));
        assert!(kinds[0].covers("exact", &X_LAYER.into()));
        assert!(!kinds.iter().any(|k| k.covers("aggr_deferred", &X_LAYER.into())));
        let settled = f.settle(&payment(6), &requirements()).await.unwrap();
        let status = f.settle_status(&settled.transaction).await.unwrap();
        assert!(status.success);
        assert!(!f.settle_status("0xdead").await.unwrap().success);
        assert_eq!(f.name(), "embedded");
        assert!(f.fund(X_LAYER_USDT0, PAYER, U256::MAX).is_err());
        assert!(f.fund("nope", PAYER, U256::from(1)).is_err());
        assert_eq!(f.balance("nope", PAYER), U256::ZERO);
    }
}
