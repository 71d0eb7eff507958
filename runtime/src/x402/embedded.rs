//! [`EmbeddedFacilitator`]: an in-process x402 facilitator for the `exact` EVM scheme with
//! EIP-3009 tokens, backed by an in-memory token ledger instead of a chain.
//!
//! It really verifies payloads — the checklist of OKX's/Coinbase's Python facilitator (wire facts
//! §7), with the chain calls replaced by the ledger (nonce state and balances) — and settles by
//! moving balances. Use it for tests, demos and local development; it never touches a network.
//!
//! ```
//! use pay402_runtime::evm::U256;
//! use pay402_runtime::x402::EmbeddedFacilitator;
//! use pay402_runtime::chain::X_LAYER_USDT0;
//!
//! let facilitator = EmbeddedFacilitator::new().with_clock(|| 1_700_000_000);
//! let payer = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266";
//! facilitator.fund(X_LAYER_USDT0, payer, U256::from(5_000)).unwrap();
//! assert_eq!(facilitator.balance(X_LAYER_USDT0, &payer.to_lowercase()), U256::from(5_000));
//! ```

use super::exact::{CheckedTransfer, ExactPolicy, Rejection, Signers, check_exact, reasons};
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
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

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

/// An in-process `exact` EVM (EIP-3009) facilitator with an in-memory ledger.
///
/// Clones share the ledger (balances, used nonces, settlements), so a test can keep a handle
/// while a resource server owns another. The builder methods ([`Self::with_networks`],
/// [`Self::with_clock`]) affect only the handle they are called on (and its later clones).
#[derive(Clone)]
pub struct EmbeddedFacilitator {
    networks: Vec<Network>,
    clock: UnixClock,
    clock_skew: Duration,
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
        Self {
            networks: vec![Network::from(X_LAYER)],
            clock: evm::system_clock(),
            clock_skew: Duration::ZERO,
            ledger: Arc::default(),
        }
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

    /// How far in the future `validAfter` may be and still verify: allowance for this clock
    /// running behind the payer's. Default zero (`validAfter` must not be in the future), as
    /// this facilitator's clock is the seller's own; the on-chain facilitator allows
    /// [`DEFAULT_CLOCK_SKEW`](super::DEFAULT_CLOCK_SKEW).
    pub fn with_clock_skew(mut self, skew: Duration) -> Self {
        self.clock_skew = skew;
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
            Err(rejection) => rejection.into_verify(),
        }
    }

    /// Re-verifies and settles atomically (synchronous core of [`FacilitatorClient::settle`]).
    pub fn settle_now(&self, payload: &PaymentPayload, requirements: &PaymentRequirements) -> SettleResponse {
        let network = requirements.network.clone();
        let mut ledger = self.lock();
        let checked = match self.check(&ledger, payload, requirements) {
            Ok(c) => c,
            Err(rejection) => return rejection.into_settle(network),
        };
        let TransferWithAuthorization { from, to, value, nonce, .. } = checked.message;
        let from_key = (checked.token, from);
        let to_key = (checked.token, to);
        let from_balance = ledger.balance_of(&from_key);
        let Some(debited) = from_balance.checked_sub(value) else {
            return SettleResponse::failure(reasons::INSUFFICIENT_BALANCE, network, Some(checked.payer), String::new());
        };
        let to_balance = if from == to { debited } else { ledger.balance_of(&to_key) };
        let Some(credited) = to_balance.checked_add(value) else {
            return SettleResponse::failure(reasons::TRANSACTION_FAILED, network, Some(checked.payer), String::new());
        };
        ledger.balances.insert(from_key, debited);
        ledger.balances.insert(to_key, credited);
        ledger.used_nonces.insert((checked.token, from, nonce));

        let response = SettleResponse {
            success: true,
            error_reason: None,
            error_message: None,
            status: Some(settle_status::SUCCESS.to_owned()),
            payer: Some(checked.payer.clone()),
            transaction: transaction_hash(checked.chain_id, checked.token, from, nonce),
            network,
        };
        ledger.settlements.push(response.clone());
        tracing::debug!(payer = %checked.payer, %value, "embedded facilitator settled");
        response
    }

    /// The §7 checklist ([`check_exact`]), then the ledger's steps: nonce unused, balance.
    fn check<'r>(
        &self,
        ledger: &Ledger,
        payload: &PaymentPayload,
        requirements: &'r PaymentRequirements,
    ) -> Result<CheckedTransfer<'r>, Rejection> {
        let serves = |_: u64, requirements: &PaymentRequirements| {
            if self.networks.contains(&requirements.network) {
                Ok(())
            } else {
                Err(reasons::FAILED_TO_GET_NETWORK_CONFIG)
            }
        };
        let policy =
            ExactPolicy { now: (self.clock)(), clock_skew: self.clock_skew, serves: &serves, signers: Signers::Eoa };
        let checked = check_exact(payload, requirements, &policy)?;
        let reject = |reason: &'static str| Rejection { reason, payer: Some(checked.payer.clone()), message: None };
        let (token, from) = (checked.token, checked.message.from);
        // 11. nonce unused
        if ledger.used_nonces.contains(&(token, from, checked.message.nonce)) {
            return Err(reject(reasons::NONCE_ALREADY_USED));
        }
        // 13. balance
        if ledger.balance_of(&(token, from)) < checked.message.value {
            return Err(reject(reasons::INSUFFICIENT_BALANCE));
        }
        Ok(checked)
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
    use crate::x402::exact::DEFAULT_CLOCK_SKEW;
    use crate::x402::exact::tests::{NOW, PAY_TO, PAYER, payment_with_nonce as payment, requirements};
    use serde_json::json;

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
        // With a clock-skew allowance validAfter may be that far ahead of this clock.
        let lenient = |t: u64| facilitator().with_clock(move || t).with_clock_skew(DEFAULT_CLOCK_SKEW);
        assert!(lenient(NOW - 605).verify_now(&p, &requirements()).is_valid);
        let late = lenient(NOW - 606).verify_now(&p, &requirements());
        assert_eq!(late.invalid_reason.as_deref(), Some(reasons::VALID_AFTER));
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
