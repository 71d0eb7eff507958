//! [`EmbeddedFacilitator`]: an in-process x402 facilitator for the `exact` and `aggr_deferred`
//! EVM schemes with EIP-3009 tokens, backed by an in-memory token ledger instead of a chain.
//!
//! It really verifies payloads — the checklist of OKX's/Coinbase's Python facilitator (wire facts
//! §7), with the chain calls replaced by the ledger (nonce state and balances) — and settles by
//! moving balances. Use it for tests, demos and local development; it never touches a network.
//! `aggr_deferred`: see [`EmbeddedFacilitator`]. `upto` and `exact` over Permit2: see
//! `embedded_permit2.rs` ([`EMBEDDED_FACILITATOR_ADDRESS`], [`EmbeddedFacilitator::approve_permit2`]).
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
use super::session_cert::DevSessionCert;
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
use std::time::Duration;

#[path = "embedded_permit2.rs"]
mod permit2;
pub use permit2::{EMBEDDED_FACILITATOR_ADDRESS, permit2_reasons};

/// The scheme the embedded facilitator settles in deferred batches.
const AGGR_DEFERRED: &str = "aggr_deferred";

/// Default number of queued `aggr_deferred` payments that triggers a flush.
pub const DEFAULT_DEFERRED_BATCH_SIZE: usize = 16;

/// Default age of the oldest queued `aggr_deferred` payment after which the next facilitator
/// call flushes the queue.
pub const DEFAULT_DEFERRED_BATCH_AGE: Duration = Duration::from_secs(5);

/// One flushed batch of `aggr_deferred` payments.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeferredBatch {
    /// The batch transaction hash (`0x` + 64 hex), answered by `settle_status`.
    pub transaction: String,
    /// The network.
    pub network: Network,
    /// How many payments it settled.
    pub payments: usize,
    /// The paying wallets (EIP-55), each once, in order.
    pub payers: Vec<String>,
}

/// An accepted `aggr_deferred` payment waiting for the next flush.
#[derive(Debug, Clone)]
struct Queued {
    chain_id: u64,
    network: Network,
    token: Address,
    wallet: Address,
    payee: Address,
    value: U256,
    session_key: Address,
    nonce: B256,
}

#[derive(Default)]
struct Ledger {
    /// (token, owner) → balance.
    balances: HashMap<(Address, Address), U256>,
    /// The balance of accounts absent from `balances` (zero unless a faucet is set).
    faucet: U256,
    /// (token, authorizer, nonce) used by a settlement (queued deferred ones included).
    used_nonces: HashSet<(Address, Address, B256)>,
    /// Successful settle answers, in order (deferred intakes included).
    settlements: Vec<SettleResponse>,
    /// (token, wallet) → amount queued for the next flush.
    reserved: HashMap<(Address, Address), U256>,
    /// Queued `aggr_deferred` payments, in order.
    queue: Vec<Queued>,
    /// When the oldest queued payment was accepted (Unix seconds).
    queued_since: Option<u64>,
    /// Flushed batches, in order.
    batches: Vec<DeferredBatch>,
    /// Permit2 allowances and used nonces (`upto`, Permit2 `exact`).
    permit2: permit2::Permit2State,
}

impl Ledger {
    fn balance_of(&self, key: &(Address, Address)) -> U256 {
        self.balances.get(key).copied().unwrap_or(self.faucet)
    }

    /// The balance not reserved for queued deferred payments.
    fn available(&self, key: &(Address, Address)) -> U256 {
        self.balance_of(key).saturating_sub(self.reserved.get(key).copied().unwrap_or_default())
    }

    /// Moves `value` of `token` from `from` to `to`; `None` (nothing changed) on underflow or
    /// overflow.
    fn transfer(&mut self, token: Address, from: Address, to: Address, value: U256) -> Option<()> {
        let (from_key, to_key) = ((token, from), (token, to));
        let debited = self.balance_of(&from_key).checked_sub(value)?;
        let to_balance = if from == to { debited } else { self.balance_of(&to_key) };
        let credited = to_balance.checked_add(value)?;
        self.balances.insert(from_key, debited);
        self.balances.insert(to_key, credited);
        Some(())
    }

    /// Settles every queued payment: one batch (and transaction hash) per network.
    fn flush(&mut self) -> Vec<DeferredBatch> {
        let queue = std::mem::take(&mut self.queue);
        self.queued_since = None;
        let mut networks: Vec<Network> = Vec::new();
        for q in &queue {
            if !networks.contains(&q.network) {
                networks.push(q.network.clone());
            }
        }
        let mut flushed = Vec::new();
        for network in networks {
            let mut preimage = b"pay402-embedded-deferred-batch".to_vec();
            preimage.extend_from_slice(&(self.batches.len() as u64).to_be_bytes());
            let mut payers: Vec<String> = Vec::new();
            let mut payments = 0;
            for q in queue.iter().filter(|q| q.network == network) {
                let key = (q.token, q.wallet);
                let reserved = self.reserved.get(&key).copied().unwrap_or_default();
                self.reserved.insert(key, reserved.saturating_sub(q.value));
                if self.transfer(q.token, q.wallet, q.payee, q.value).is_none() {
                    // Unreachable while reservations hold (the amount was reserved under the lock).
                    tracing::error!(wallet = %q.wallet, value = %q.value, "embedded facilitator: deferred transfer failed");
                    continue;
                }
                preimage.extend_from_slice(&q.chain_id.to_be_bytes());
                preimage.extend_from_slice(q.token.as_slice());
                preimage.extend_from_slice(q.session_key.as_slice());
                preimage.extend_from_slice(q.nonce.as_slice());
                let payer = evm::checksum(&q.wallet);
                if !payers.contains(&payer) {
                    payers.push(payer);
                }
                payments += 1;
            }
            if payments == 0 {
                continue;
            }
            let batch =
                DeferredBatch { transaction: evm::to_hex(evm::keccak256(&preimage)), network, payments, payers };
            tracing::debug!(transaction = %batch.transaction, payments, "embedded facilitator flushed a deferred batch");
            self.batches.push(batch.clone());
            flushed.push(batch);
        }
        self.reserved.retain(|_, amount| !amount.is_zero());
        flushed
    }
}

/// A payment that passed every check: the transfer and who pays it.
struct Checked<'r> {
    transfer: CheckedTransfer<'r>,
    /// The account debited: `from` for `exact`, the certificate's wallet for `aggr_deferred`.
    payer: Address,
    /// `payer` as answered (`from` as sent for `exact`, EIP-55 for `aggr_deferred`).
    payer_text: String,
    deferred: bool,
}

/// An in-process `exact` and `aggr_deferred` EVM (EIP-3009) facilitator with an in-memory
/// ledger.
///
/// # `aggr_deferred`
///
/// The buyer's session key signs the EIP-3009 authorization (`from` = the session key) and the
/// payment carries a pay402 development certificate ([`DevSessionCert`]) in
/// `accepted.extra.sessionCert`. Verify runs the same `exact` checklist (the signature must be
/// `from`'s), then checks the certificate (signed by its wallet, not expired, delegating to
/// `from`), then the ledger steps with the **wallet** as the payer: nonce unused, the wallet's
/// available balance (balance minus reservations). `payer` in the answers is the wallet.
///
/// Settle is deferred and batched, as OKX's facilitator does: it answers `success: true`,
/// `status: "success"`, an empty `transaction` at once, reserves the amount on the wallet (so it
/// cannot be spent twice) and queues the payment. A **flush** moves every queued payment from
/// its wallet to its payee, one batch transaction hash per network
/// ([`EmbeddedFacilitator::deferred_batches`]; `settle_status` of that hash answers success). A
/// flush happens on [`EmbeddedFacilitator::flush_deferred`], when the queue reaches the batch
/// size, and at the first facilitator call (verify, settle, supported, settle status) after the
/// oldest queued payment has waited the batch age (defaults [`DEFAULT_DEFERRED_BATCH_SIZE`],
/// [`DEFAULT_DEFERRED_BATCH_AGE`]; see [`EmbeddedFacilitator::with_deferred_batching`]). No
/// background task runs.
///
/// `upto` and `exact` over Permit2 (`extra.assetTransferMethod = "permit2"`) are verified and
/// settled on the same ledger, with its Permit2 allowances ([`Self::approve_permit2`]; a faucet
/// approves unlimited for every account) and unordered nonces; `upto` settles the requirements'
/// amount (at most the signed maximum; 0 moves nothing) as [`EMBEDDED_FACILITATOR_ADDRESS`]
/// ([`Self::with_facilitator_address`]), announced in `/supported`.
///
/// Clones share the ledger (balances, used nonces, settlements, the deferred queue), so a test
/// can keep a handle while a resource server owns another. The builder methods
/// ([`Self::with_networks`], [`Self::with_clock`], [`Self::with_deferred_batching`]) affect
/// only the handle they are called on (and its later clones).
#[derive(Clone)]
pub struct EmbeddedFacilitator {
    networks: Vec<Network>,
    clock: UnixClock,
    clock_skew: Duration,
    batch_size: usize,
    batch_age: Duration,
    facilitator: Address,
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
            batch_size: DEFAULT_DEFERRED_BATCH_SIZE,
            batch_age: DEFAULT_DEFERRED_BATCH_AGE,
            facilitator: EMBEDDED_FACILITATOR_ADDRESS,
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

    /// When queued `aggr_deferred` payments are flushed besides
    /// [`flush_deferred`](Self::flush_deferred): as soon as `size` are queued (at least 1), and
    /// at the first facilitator call after the oldest has waited `age` (whole seconds of this
    /// facilitator's clock).
    pub fn with_deferred_batching(mut self, size: usize, age: Duration) -> Self {
        self.batch_size = size.max(1);
        self.batch_age = age;
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

    /// The ledger, after flushing the deferred queue if its oldest payment is due.
    fn lock_flushed(&self) -> MutexGuard<'_, Ledger> {
        let mut ledger = self.lock();
        let due = ledger.queued_since.is_some_and(|t| (self.clock)() >= t.saturating_add(self.batch_age.as_secs()));
        if due {
            ledger.flush();
        }
        ledger
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
    /// accounts not seen yet; zero for unparseable addresses). Queued `aggr_deferred` payments
    /// are not deducted before their flush (see [`reserved`](Self::reserved)).
    pub fn balance(&self, asset: &str, owner: &str) -> U256 {
        let (Ok(asset), Ok(owner)) = (evm::parse_address(asset), evm::parse_address(owner)) else {
            return U256::ZERO;
        };
        self.lock().balance_of(&(asset, owner))
    }

    /// The amount of token `asset` reserved on `owner` by queued `aggr_deferred` payments.
    pub fn reserved(&self, asset: &str, owner: &str) -> U256 {
        let (Ok(asset), Ok(owner)) = (evm::parse_address(asset), evm::parse_address(owner)) else {
            return U256::ZERO;
        };
        self.lock().reserved.get(&(asset, owner)).copied().unwrap_or_default()
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

    /// The successful settle answers so far, in order (`aggr_deferred` intakes included, with
    /// an empty transaction).
    pub fn settlements(&self) -> Vec<SettleResponse> {
        self.lock().settlements.clone()
    }

    /// How many settle calls succeeded.
    pub fn settlement_count(&self) -> usize {
        self.lock().settlements.len()
    }

    /// How many `aggr_deferred` payments wait for the next flush.
    pub fn pending_deferred(&self) -> usize {
        self.lock().queue.len()
    }

    /// Flushes the `aggr_deferred` queue now: moves every queued payment from its wallet to its
    /// payee; returns the new batches (none when the queue was empty).
    pub fn flush_deferred(&self) -> Vec<DeferredBatch> {
        self.lock().flush()
    }

    /// Every flushed `aggr_deferred` batch so far, in order.
    pub fn deferred_batches(&self) -> Vec<DeferredBatch> {
        self.lock().batches.clone()
    }

    /// Verifies without touching the ledger's state (synchronous core of
    /// [`FacilitatorClient::verify`]; a due deferred flush may run first).
    pub fn verify_now(&self, payload: &PaymentPayload, requirements: &PaymentRequirements) -> VerifyResponse {
        let ledger = self.lock_flushed();
        if let Some(kind) = permit2::kind_of(requirements) {
            return self.verify_permit2(&ledger, kind, payload, requirements);
        }
        match self.check(&ledger, payload, requirements) {
            Ok(c) => VerifyResponse::valid(c.payer_text),
            Err(rejection) => rejection.into_verify(),
        }
    }

    /// Re-verifies and settles atomically (synchronous core of [`FacilitatorClient::settle`]):
    /// `exact` moves the balance now, `aggr_deferred` reserves it and queues the payment.
    pub fn settle_now(&self, payload: &PaymentPayload, requirements: &PaymentRequirements) -> SettleResponse {
        let network = requirements.network.clone();
        let mut ledger = self.lock_flushed();
        if let Some(kind) = permit2::kind_of(requirements) {
            return self.settle_permit2(&mut ledger, kind, payload, requirements);
        }
        let checked = match self.check(&ledger, payload, requirements) {
            Ok(c) => c,
            Err(rejection) => return rejection.into_settle(network),
        };
        let TransferWithAuthorization { from, to, value, nonce, .. } = checked.transfer.message;
        let token = checked.transfer.token;
        let payer = Some(checked.payer_text.clone());
        let transaction = if checked.deferred {
            let key = (token, checked.payer);
            let Some(reserved) = ledger.reserved.get(&key).copied().unwrap_or_default().checked_add(value) else {
                return SettleResponse::failure(reasons::TRANSACTION_FAILED, network, payer, String::new());
            };
            ledger.reserved.insert(key, reserved);
            ledger.queue.push(Queued {
                chain_id: checked.transfer.chain_id,
                network: network.clone(),
                token,
                wallet: checked.payer,
                payee: to,
                value,
                session_key: from,
                nonce,
            });
            let now = (self.clock)();
            ledger.queued_since.get_or_insert(now);
            String::new()
        } else {
            if ledger.transfer(token, from, to, value).is_none() {
                let reason = if ledger.balance_of(&(token, from)) < value {
                    reasons::INSUFFICIENT_BALANCE
                } else {
                    reasons::TRANSACTION_FAILED
                };
                return SettleResponse::failure(reason, network, payer, String::new());
            }
            transaction_hash(checked.transfer.chain_id, token, from, nonce)
        };
        ledger.used_nonces.insert((token, from, nonce));
        let response = SettleResponse {
            success: true,
            error_reason: None,
            error_message: None,
            status: Some(settle_status::SUCCESS.to_owned()),
            payer,
            transaction,
            network,
            amount: None,
        };
        ledger.settlements.push(response.clone());
        if ledger.queue.len() >= self.batch_size {
            ledger.flush();
        }
        tracing::debug!(payer = %checked.payer_text, %value, deferred = checked.deferred, "embedded facilitator settled");
        response
    }

    /// The §7 checklist ([`check_exact`]); for `aggr_deferred` the session certificate; then
    /// the ledger's steps: nonce unused, the payer's available balance.
    fn check<'r>(
        &self,
        ledger: &Ledger,
        payload: &PaymentPayload,
        requirements: &'r PaymentRequirements,
    ) -> Result<Checked<'r>, Rejection> {
        let serves = |_: u64, requirements: &PaymentRequirements| {
            if self.networks.contains(&requirements.network) {
                Ok(())
            } else {
                Err(reasons::FAILED_TO_GET_NETWORK_CONFIG)
            }
        };
        let deferred = requirements.scheme == AGGR_DEFERRED;
        let now = (self.clock)();
        let policy = ExactPolicy {
            scheme: if deferred { AGGR_DEFERRED } else { "exact" },
            now,
            clock_skew: self.clock_skew,
            serves: &serves,
            signers: Signers::Eoa,
        };
        let transfer = check_exact(payload, requirements, &policy)?;
        let from = transfer.message.from;
        let (payer, payer_text) = if deferred {
            // The session certificate: the wallet delegated to `from` (the signature's key).
            let refuse = |why: &dyn fmt::Display| {
                tracing::debug!(error = %why, "embedded facilitator: session certificate refused");
                Rejection { reason: reasons::INVALID_SESSION_CERT, payer: Some(transfer.payer.clone()), message: None }
            };
            let text = payload.accepted.extra.get("sessionCert").and_then(Value::as_str);
            let cert = DevSessionCert::verify(text.ok_or_else(|| refuse(&"missing"))?, now).map_err(|e| refuse(&e))?;
            if cert.session_key != from {
                return Err(refuse(&"the certificate delegates to another session key"));
            }
            (cert.wallet, evm::checksum(&cert.wallet))
        } else {
            (from, transfer.payer.clone())
        };
        let reject = |reason: &'static str| Rejection { reason, payer: Some(payer_text.clone()), message: None };
        let token = transfer.token;
        // 11. nonce unused
        if ledger.used_nonces.contains(&(token, from, transfer.message.nonce)) {
            return Err(reject(reasons::NONCE_ALREADY_USED));
        }
        // 13. balance (minus what queued deferred payments reserved)
        if ledger.available(&(token, payer)) < transfer.message.value {
            return Err(reject(reasons::INSUFFICIENT_BALANCE));
        }
        Ok(Checked { transfer, payer, payer_text, deferred })
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
        drop(self.lock_flushed());
        let kind = |scheme: &str, network: &Network| SupportedKind {
            x402_version: X402_VERSION,
            scheme: scheme.to_owned(),
            network: network.clone(),
            extra: None,
        };
        Ok(SupportedResponse {
            kinds: self
                .networks
                .iter()
                .flat_map(|network| [kind("exact", network), kind(AGGR_DEFERRED, network), self.upto_kind(network)])
                .collect(),
            ..SupportedResponse::default()
        })
    }

    async fn settle_status(&self, tx_hash: &str) -> Result<SettleStatusResponse, FacilitatorError> {
        let ledger = self.lock_flushed();
        let settled = ledger
            .settlements
            .iter()
            .find(|s| !tx_hash.is_empty() && s.transaction.eq_ignore_ascii_case(tx_hash))
            .map(|s| (s.payer.clone(), s.transaction.clone(), s.network.clone()));
        let batched = || {
            ledger.batches.iter().find(|b| b.transaction.eq_ignore_ascii_case(tx_hash)).map(|b| {
                let payer = if b.payers.len() == 1 { b.payers.first().cloned() } else { None };
                (payer, b.transaction.clone(), b.network.clone())
            })
        };
        Ok(match settled.or_else(batched) {
            Some((payer, transaction, network)) => SettleStatusResponse {
                success: true,
                status: Some(settle_status::SUCCESS.to_owned()),
                error_reason: None,
                error_message: None,
                payer,
                transaction: Some(transaction),
                network: Some(network),
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

    const WALLET_KEY: [u8; 32] = [0x41; 32];
    const SESSION_KEY: [u8; 32] = [0x42; 32];

    fn key(bytes: [u8; 32]) -> evm::PrivateKeySigner {
        evm::PrivateKeySigner::from_bytes(&bytes.into()).unwrap()
    }

    /// An `aggr_deferred` payment of 1000 to `PAY_TO` signed by the session key at `NOW`, with
    /// the certificate `cert`.
    fn deferred(nonce: u8, cert: &str) -> (PaymentPayload, PaymentRequirements) {
        let requirements = PaymentRequirements { scheme: AGGR_DEFERRED.into(), ..requirements() };
        let scheme = crate::x402::AggrDeferredEvmClientScheme::new(key(SESSION_KEY), cert)
            .with_clock(|| NOW)
            .with_nonce_source(move || B256::repeat_byte(nonce));
        let mut accepted = requirements.clone();
        accepted.extra.insert("sessionCert".into(), json!(cert));
        let payload = scheme.sign_payload(&requirements).unwrap();
        (PaymentPayload { x402_version: 2, payload, accepted, resource: None, extensions: None }, requirements)
    }

    fn cert_by(wallet: [u8; 32], session: [u8; 32], expires_at: u64) -> String {
        DevSessionCert::issue(&key(wallet), key(session).address(), expires_at).unwrap()
    }

    #[test]
    fn deferred_reserves_then_flushes_in_one_batch() {
        let f = EmbeddedFacilitator::new().with_clock(|| NOW).with_deferred_batching(3, Duration::from_secs(60));
        let wallet = evm::checksum(&key(WALLET_KEY).address());
        let session = evm::checksum(&key(SESSION_KEY).address());
        f.fund(X_LAYER_USDT0, &wallet, U256::from(2500)).unwrap();
        let cert = cert_by(WALLET_KEY, SESSION_KEY, NOW + 60);

        let (p1, r) = deferred(1, &cert);
        assert_eq!(f.verify_now(&p1, &r), VerifyResponse::valid(wallet.clone()));
        let s1 = f.settle_now(&p1, &r);
        assert!(s1.success, "{s1:?}");
        assert_eq!((s1.status.as_deref(), s1.transaction.as_str()), (Some("success"), ""));
        assert_eq!(s1.payer.as_deref(), Some(wallet.as_str()));
        // Reserved, not yet moved; the same authorization cannot be settled twice.
        assert_eq!(
            (f.balance(X_LAYER_USDT0, &wallet), f.reserved(X_LAYER_USDT0, &wallet)),
            (U256::from(2500), U256::from(1000))
        );
        assert_eq!(f.balance(X_LAYER_USDT0, PAY_TO), U256::ZERO);
        assert!(f.is_nonce_used(X_LAYER_USDT0, &session, &evm::to_hex(B256::repeat_byte(1))));
        assert_eq!(f.settle_now(&p1, &r).error_reason.as_deref(), Some(reasons::NONCE_ALREADY_USED));
        // 1500 available: a second payment fits, a third (or an `exact` one) would not.
        let (p2, _) = deferred(2, &cert);
        assert!(f.settle_now(&p2, &r).success);
        let (p3, _) = deferred(3, &cert);
        let poor = f.verify_now(&p3, &r);
        assert_eq!(poor.invalid_reason.as_deref(), Some(reasons::INSUFFICIENT_BALANCE));
        assert_eq!(poor.payer.as_deref(), Some(wallet.as_str()));
        assert_eq!(f.pending_deferred(), 2);

        let batches = f.flush_deferred();
        assert_eq!(batches.len(), 1);
        assert_eq!((batches[0].payments, batches[0].payers.clone()), (2, vec![wallet.clone()]));
        assert_eq!(batches[0].transaction.len(), 66);
        assert_eq!(f.balance(X_LAYER_USDT0, &wallet), U256::from(500));
        assert_eq!(f.balance(X_LAYER_USDT0, PAY_TO), U256::from(2000));
        assert_eq!(f.reserved(X_LAYER_USDT0, &wallet), U256::ZERO);
        assert!(f.flush_deferred().is_empty());
        assert_eq!(f.deferred_batches(), batches);
    }

    #[tokio::test]
    async fn deferred_flushes_by_size_and_age_and_answers_status() {
        let clock = Arc::new(std::sync::atomic::AtomicU64::new(NOW));
        let c = clock.clone();
        let f = EmbeddedFacilitator::new()
            .with_clock(move || c.load(std::sync::atomic::Ordering::SeqCst))
            .with_deferred_batching(2, Duration::from_secs(5))
            .with_faucet(U256::from(10_000));
        let cert = cert_by(WALLET_KEY, SESSION_KEY, NOW + 600);
        let (p1, r) = deferred(1, &cert);
        let (p2, _) = deferred(2, &cert);
        assert!(f.settle(&p1, &r).await.unwrap().success);
        assert!(f.settle(&p2, &r).await.unwrap().success);
        // The second payment filled the batch.
        assert_eq!((f.pending_deferred(), f.deferred_batches().len()), (0, 1));
        let tx = f.deferred_batches()[0].transaction.clone();
        let status = f.settle_status(&tx).await.unwrap();
        assert!(status.success);
        assert_eq!(status.payer, Some(evm::checksum(&key(WALLET_KEY).address())));
        assert!(!f.settle_status("").await.unwrap().success);

        let (p3, _) = deferred(3, &cert);
        assert!(f.settle(&p3, &r).await.unwrap().success);
        clock.store(NOW + 4, std::sync::atomic::Ordering::SeqCst);
        f.supported().await.unwrap();
        assert_eq!(f.pending_deferred(), 1);
        clock.store(NOW + 5, std::sync::atomic::Ordering::SeqCst);
        f.supported().await.unwrap();
        assert_eq!((f.pending_deferred(), f.deferred_batches().len()), (0, 2));
        assert_eq!(f.balance(X_LAYER_USDT0, PAY_TO), U256::from(13_000));
    }

    #[test]
    fn deferred_refuses_bad_certificates() {
        let f = EmbeddedFacilitator::new().with_clock(|| NOW).with_faucet(U256::from(10_000));
        let session = evm::checksum(&key(SESSION_KEY).address());
        let cases = [
            ("expired", cert_by(WALLET_KEY, SESSION_KEY, NOW)),
            ("other session key", cert_by(WALLET_KEY, [0x43; 32], NOW + 60)),
            ("not a certificate", "opaque-okx-certificate".to_owned()),
        ];
        for (why, cert) in cases {
            let (p, r) = deferred(1, &cert);
            let v = f.verify_now(&p, &r);
            assert_eq!(v.invalid_reason.as_deref(), Some(reasons::INVALID_SESSION_CERT), "{why}");
            assert_eq!(v.payer.as_deref(), Some(session.as_str()), "{why}");
            assert!(!f.settle_now(&p, &r).success, "{why}");
        }
        // Forged: claims naming the wallet, signed by another key.
        let genuine = cert_by(WALLET_KEY, SESSION_KEY, NOW + 60);
        let other = cert_by([0x44; 32], SESSION_KEY, NOW + 60);
        let forged = format!("{}.{}", genuine.split('.').next().unwrap(), other.split('.').nth(1).unwrap());
        let (p, r) = deferred(1, &forged);
        assert_eq!(f.verify_now(&p, &r).invalid_reason.as_deref(), Some(reasons::INVALID_SESSION_CERT));
        // No certificate at all.
        let (mut p, r) = deferred(1, &genuine);
        p.accepted.extra.remove("sessionCert");
        assert_eq!(f.verify_now(&p, &r).invalid_reason.as_deref(), Some(reasons::INVALID_SESSION_CERT));
        // A signature by another key than `from` fails the exact checklist first.
        let (mut p, r) = deferred(1, &genuine);
        p.payload["authorization"].as_object_mut().unwrap().insert("from".into(), json!(PAYER));
        assert_eq!(f.verify_now(&p, &r).invalid_reason.as_deref(), Some(reasons::INVALID_SIGNATURE));
        assert_eq!(f.settlement_count(), 0);
        assert_eq!(f.pending_deferred(), 0);
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
        assert_eq!(kinds.len(), 6);
        let schemes: Vec<&str> = kinds.iter().map(|k| k.scheme.as_str()).collect();
        assert_eq!(schemes, ["exact", "aggr_deferred", "upto", "exact", "aggr_deferred", "upto"]);
        assert!(kinds.iter().all(|k| k.x402_version == 2));
        assert!(kinds[0].covers("exact", &X_LAYER.into()));
        assert!(kinds[1].covers("aggr_deferred", &X_LAYER.into()));
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
