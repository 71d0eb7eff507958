//! [`ExactEvmFacilitatorScheme`]: `exact` EIP-3009 payments verified against, and settled on,
//! an EVM chain through an alloy provider.

use super::{SchemeNetworkFacilitator, permit2, reasons};
use crate::chain::Network;
use crate::chain::NetworkRegistry;
use crate::evm::permit2::Permit2Kind;
use crate::evm::{self, Address, B256, TransferWithAuthorization, U256, UnixClock};
use crate::x402::FacilitatorError;
use crate::x402::exact::{DEFAULT_CLOCK_SKEW, ExactPolicy, Rejection, Signers, check_exact};
use crate::x402::{
    PaymentPayload, PaymentRequirements, SettleResponse, SettleStatusResponse, VerifyResponse, settle_status,
};
use alloy::network::{EthereumWallet, NetworkTransactionBuilder, TransactionBuilder};
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy::rpc::types::TransactionRequest;
use alloy::transports::{RpcError, TransportErrorKind};
use alloy_primitives::Bytes;
use alloy_signer_local::PrivateKeySigner;
use alloy_sol_types::{SolCall, sol};
use async_trait::async_trait;
use std::collections::HashSet;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

sol! {
    /// The EIP-3009 surface of the token (Circle's FiatToken v2.2 ABI).
    interface IEip3009Token {
        function transferWithAuthorization(address from, address to, uint256 value, uint256 validAfter, uint256 validBefore, bytes32 nonce, uint8 v, bytes32 r, bytes32 s) external;
        function transferWithAuthorization(address from, address to, uint256 value, uint256 validAfter, uint256 validBefore, bytes32 nonce, bytes signature) external;
        function authorizationState(address authorizer, bytes32 nonce) external view returns (bool);
        function balanceOf(address account) external view returns (uint256);
        function name() external view returns (string);
        function version() external view returns (string);
    }

    /// ERC-1271 contract-wallet signature validation.
    interface IErc1271 {
        function isValidSignature(bytes32 hash, bytes signature) external view returns (bytes4);
    }
}

/// The ERC-1271 magic value (`isValidSignature.selector`).
const ERC1271_MAGIC: [u8; 4] = [0x16, 0x26, 0xba, 0x7e];
/// Default bound on each JSON-RPC request of [`ExactEvmFacilitatorScheme::connect_http`].
pub const DEFAULT_RPC_TIMEOUT: Duration = Duration::from_secs(10);
/// Default wait for a settlement receipt.
const DEFAULT_RECEIPT_TIMEOUT: Duration = Duration::from_secs(30);
/// Default receipt polling interval.
const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(250);
/// Gas limit margin over the estimate, in percent.
const GAS_MARGIN_PERCENT: u64 = 20;
/// Default ceiling on the gas limit of a settlement transaction
/// ([`ExactEvmFacilitatorScheme::with_max_settlement_gas`]).
///
/// Circle's FiatTokenV2_2 `transferWithAuthorization` used 95.6k gas on anvil (EOA signature,
/// payee without a balance yet: the costliest EOA case), so its limit (estimate + 20 %) is about
/// 115k; contract-wallet (ERC-1271) signatures add the wallet's `isValidSignature`. 300k leaves
/// more than twice that room, while a token (or a payer's contract wallet) that burns more is
/// refused before anything is sent.
pub const DEFAULT_MAX_SETTLEMENT_GAS: u64 = 300_000;

/// Why an [`ExactEvmFacilitatorScheme`] could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SetupError {
    /// The RPC URL does not parse.
    #[error("invalid RPC URL `{url}`: {reason}")]
    InvalidUrl {
        /// The URL given.
        url: String,
        /// The parser's message.
        reason: String,
    },
    /// The HTTP client could not be built.
    #[error("cannot build the RPC HTTP client: {0}")]
    Http(String),
    /// The node did not answer `eth_chainId`.
    #[error("cannot read the chain id from the RPC node: {0}")]
    Rpc(String),
}

/// How the authorization is submitted to the token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SignatureKind {
    /// 65-byte ECDSA signature of an EOA: the `(v, r, s)` overload.
    Vrs,
    /// Contract-wallet (ERC-1271) signature: the `bytes signature` overload.
    Bytes,
}

/// A payment that passed every check.
struct Checked {
    token: Address,
    message: TransferWithAuthorization,
    signature: Bytes,
    kind: SignatureKind,
    payer: String,
}

impl Checked {
    /// `transferWithAuthorization` calldata, with the overload matching the signature kind.
    fn calldata(&self) -> Bytes {
        let m = &self.message;
        match self.kind {
            SignatureKind::Vrs => {
                let sig = &self.signature;
                let v = match sig[64] {
                    v @ (0 | 1) => v + 27,
                    v => v,
                };
                IEip3009Token::transferWithAuthorization_0Call {
                    from: m.from,
                    to: m.to,
                    value: m.value,
                    validAfter: m.validAfter,
                    validBefore: m.validBefore,
                    nonce: m.nonce,
                    v,
                    r: B256::from_slice(&sig[..32]),
                    s: B256::from_slice(&sig[32..64]),
                }
                .abi_encode()
                .into()
            }
            SignatureKind::Bytes => IEip3009Token::transferWithAuthorization_1Call {
                from: m.from,
                to: m.to,
                value: m.value,
                validAfter: m.validAfter,
                validBefore: m.validBefore,
                nonce: m.nonce,
                signature: self.signature.clone(),
            }
            .abi_encode()
            .into(),
        }
    }
}

/// The outcome of a contract read that reached the node: a value, or a revert (or another
/// node-side error answer). Transport failures are `Err(FacilitatorError)` instead.
pub(super) enum Read<T> {
    Value(T),
    Reverted(String),
}

/// Keeps `(token, from, nonce)` marked as being settled until dropped.
pub(super) struct InFlight<'a> {
    set: &'a Mutex<HashSet<(Address, Address, B256)>>,
    key: (Address, Address, B256),
}

impl<'a> InFlight<'a> {
    /// Marks `key` as being settled by `scheme`; `None` when it already is.
    pub(super) fn claim(scheme: &'a ExactEvmFacilitatorScheme, key: (Address, Address, B256)) -> Option<Self> {
        let set = &scheme.in_flight;
        // The guard is released before an `InFlight` exists: its drop takes the lock again.
        let claimed = set.lock().unwrap_or_else(PoisonError::into_inner).insert(key);
        if claimed { Some(InFlight { set, key }) } else { None }
    }

    /// Whether `key` is being settled by `scheme` right now.
    pub(super) fn contains(scheme: &ExactEvmFacilitatorScheme, key: &(Address, Address, B256)) -> bool {
        scheme.in_flight.lock().unwrap_or_else(PoisonError::into_inner).contains(key)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.set.lock().unwrap_or_else(PoisonError::into_inner).remove(&self.key);
    }
}

/// The `exact` scheme's facilitator for EIP-3009 tokens on one EVM chain.
///
/// Verification runs the wire facts §7 checklist against the chain: scheme, network (the
/// provider's chain), an asset this facilitator accepts (the registry's asset for the chain, plus
/// [`with_asset`](Self::with_asset); checked before any call to the token), EIP-712 domain present, recipient, exact value, validity window (with a
/// configurable clock-skew allowance on `validAfter`), an EIP-712 signature by `from` (ECDSA for
/// EOAs, ERC-1271 `isValidSignature` when `from` holds code), asset, `authorizationState` unused,
/// `balanceOf(from) ≥ value`, and an `eth_call` simulation of `transferWithAuthorization` whose
/// failure is diagnosed (token `name()` / `version()` mismatch).
///
/// Settlement re-verifies, refuses a transaction whose gas limit (estimate + 20 %) exceeds the
/// ceiling ([`with_max_settlement_gas`](Self::with_max_settlement_gas)), then sends
/// `transferWithAuthorization` from the facilitator's key —
/// the `(v, r, s)` overload for 65-byte EOA signatures, the `bytes` overload for contract
/// wallets — and waits for the receipt. Transactions from one facilitator key are serialised
/// through a local nonce counter (re-read from the node after any failed send), so concurrent
/// settlements never collide; if another sender of the same key (a second facilitator process)
/// took the counted nonce, the node's answer (`nonce too low`) makes it re-read the nonce and
/// send once more. Use one instance per key and process. A reverted or dropped transaction is a failed settlement
/// (`transaction_failed`); a transaction still pending when the receipt timeout expires is
/// answered `success: true, status: "timeout"` with its hash, which sellers resolve through
/// [`SchemeNetworkFacilitator::settle_status`] (and fail closed otherwise).
///
/// `exact` over Permit2 (requirements with `extra.assetTransferMethod = "permit2"`, or a payload
/// carrying `permit2Authorization`) takes the Permit2 checklist instead and settles through the
/// x402 exact Permit2 proxy with the same account and outcomes; share this scheme with an
/// [`UptoEvmFacilitator`](super::UptoEvmFacilitator) for `upto`.
pub struct ExactEvmFacilitatorScheme {
    provider: DynProvider,
    wallet: EthereumWallet,
    address: Address,
    chain_id: u64,
    network: Network,
    clock: UnixClock,
    clock_skew: Duration,
    receipt_timeout: Duration,
    poll_interval: Duration,
    next_nonce: tokio::sync::Mutex<Option<u64>>,
    in_flight: Mutex<HashSet<(Address, Address, B256)>>,
    allowed_assets: HashSet<Address>,
    max_gas: u64,
}

impl fmt::Debug for ExactEvmFacilitatorScheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExactEvmFacilitatorScheme")
            .field("network", &self.network)
            .field("address", &self.address)
            .field("clock_skew", &self.clock_skew)
            .field("receipt_timeout", &self.receipt_timeout)
            .field("allowed_assets", &self.allowed_assets)
            .field("max_settlement_gas", &self.max_gas)
            .finish_non_exhaustive()
    }
}

/// Maps an RPC error that is not a node-side error response to a facilitator error.
fn transport(context: &str, e: &RpcError<TransportErrorKind>) -> FacilitatorError {
    FacilitatorError::Transport(format!("{context}: {e}"))
}

impl ExactEvmFacilitatorScheme {
    /// A scheme over `provider` (any alloy provider; only reads and raw-transaction sends are
    /// used), settling from `signer`'s account. Reads the chain id from the node.
    ///
    /// Only the chain's asset in the process-wide [`NetworkRegistry`] (e.g. USD₮0 on X Layer,
    /// USDC on Base) is accepted; add others with [`with_asset`](Self::with_asset). Settlement
    /// transactions are capped at [`DEFAULT_MAX_SETTLEMENT_GAS`].
    pub async fn new(provider: impl Provider + 'static, signer: PrivateKeySigner) -> Result<Self, SetupError> {
        let provider = provider.erased();
        let chain_id = provider.get_chain_id().await.map_err(|e| SetupError::Rpc(e.to_string()))?;
        let address = signer.address();
        let network = Network::from(format!("eip155:{chain_id}"));
        let allowed_assets = NetworkRegistry::global()
            .default_asset(&network)
            .and_then(|asset| evm::parse_address(&asset.address).ok())
            .into_iter()
            .collect();
        Ok(Self {
            provider,
            wallet: EthereumWallet::from(signer),
            address,
            chain_id,
            network,
            clock: evm::system_clock(),
            clock_skew: DEFAULT_CLOCK_SKEW,
            receipt_timeout: DEFAULT_RECEIPT_TIMEOUT,
            poll_interval: DEFAULT_POLL_INTERVAL,
            next_nonce: tokio::sync::Mutex::new(None),
            in_flight: Mutex::new(HashSet::new()),
            allowed_assets,
            max_gas: DEFAULT_MAX_SETTLEMENT_GAS,
        })
    }

    /// A scheme over an HTTP JSON-RPC endpoint; every RPC request is bounded by
    /// [`DEFAULT_RPC_TIMEOUT`].
    pub async fn connect_http(rpc_url: &str, signer: PrivateKeySigner) -> Result<Self, SetupError> {
        Self::connect_http_with_timeout(rpc_url, signer, DEFAULT_RPC_TIMEOUT).await
    }

    /// A scheme over an HTTP JSON-RPC endpoint with a per-request `timeout`. A request that
    /// times out is a transport failure: verify fails with an error (the seller answers 502),
    /// and a settlement whose broadcast timed out is reported as an error (outcome unknown), so
    /// the seller fails closed.
    pub async fn connect_http_with_timeout(
        rpc_url: &str,
        signer: PrivateKeySigner,
        timeout: Duration,
    ) -> Result<Self, SetupError> {
        let url = rpc_url
            .parse()
            .map_err(|e: url::ParseError| SetupError::InvalidUrl { url: rpc_url.to_owned(), reason: e.to_string() })?;
        let http = reqwest::Client::builder().timeout(timeout).build().map_err(|e| SetupError::Http(e.to_string()))?;
        Self::new(ProviderBuilder::new().connect_reqwest(http, url), signer).await
    }

    /// Replaces the clock (Unix seconds) used for the validity window, for tests.
    pub fn with_clock(mut self, clock: impl Fn() -> u64 + Send + Sync + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// How far in the future `validAfter` may be and still verify (default 5 s): allowance for
    /// the facilitator's clock running behind the payer's. The chain still enforces its own
    /// block time, through the simulation.
    pub fn with_clock_skew(mut self, skew: Duration) -> Self {
        self.clock_skew = skew;
        self
    }

    /// How long settlement waits for the receipt (default 30 s).
    pub fn with_receipt_timeout(mut self, timeout: Duration) -> Self {
        self.receipt_timeout = timeout;
        self
    }

    /// How often settlement polls for the receipt (default 250 ms).
    pub fn with_poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    /// Also accepts payments in the EIP-3009 token at `asset`.
    ///
    /// The facilitator pays the gas of every settlement, and the token's code decides how much:
    /// only tokens you trust to be EIP-3009 tokens with a bounded `transferWithAuthorization`
    /// belong here. A payment in any other asset is refused at verify and settle
    /// (`invalid_exact_evm_failed_to_get_asset_info`) before the chain is asked anything.
    pub fn with_asset(mut self, asset: Address) -> Self {
        self.allowed_assets.insert(asset);
        self
    }

    /// Also accepts payments in each of `assets` (see [`with_asset`](Self::with_asset)).
    pub fn with_assets(mut self, assets: impl IntoIterator<Item = Address>) -> Self {
        self.allowed_assets.extend(assets);
        self
    }

    /// Whether payments in `asset` are verified and settled.
    pub fn accepts_asset(&self, asset: Address) -> bool {
        self.allowed_assets.contains(&asset)
    }

    /// Ceiling on the gas limit of a settlement transaction (default
    /// [`DEFAULT_MAX_SETTLEMENT_GAS`]). The limit sent is the node's estimate plus 20 %; when
    /// that exceeds `max_gas` the settlement is refused
    /// ([`reasons::GAS_ABOVE_CEILING`](super::reasons::GAS_ABOVE_CEILING)) and nothing is sent.
    pub fn with_max_settlement_gas(mut self, max_gas: u64) -> Self {
        self.max_gas = max_gas;
        self
    }

    /// The ceiling on the gas limit of a settlement transaction.
    pub fn max_settlement_gas(&self) -> u64 {
        self.max_gas
    }

    /// The served network, `eip155:<chain id>`.
    pub fn network(&self) -> &Network {
        &self.network
    }

    /// The chain id read from the node.
    pub fn chain_id(&self) -> u64 {
        self.chain_id
    }

    /// The facilitator's settlement account (pays the gas).
    pub fn address(&self) -> Address {
        self.address
    }

    /// Now, by the scheme's clock (Unix seconds).
    pub(super) fn now(&self) -> u64 {
        (self.clock)()
    }

    /// The allowance for a `validAfter` ahead of the facilitator's clock.
    pub(super) fn clock_skew(&self) -> Duration {
        self.clock_skew
    }

    /// Whether `who` holds code (a contract wallet).
    pub(super) async fn has_code(&self, who: Address) -> Result<bool, FacilitatorError> {
        let code = self.provider.get_code_at(who).await.map_err(|e| transport("eth_getCode", &e))?;
        Ok(!code.is_empty())
    }

    /// `eth_call` of `data` on `to` from the facilitator's account.
    pub(super) async fn read(&self, to: Address, data: Vec<u8>, what: &str) -> Result<Read<Bytes>, FacilitatorError> {
        let tx = TransactionRequest::default().with_from(self.address).with_to(to).with_input(data);
        match self.provider.call(tx).await {
            Ok(bytes) => Ok(Read::Value(bytes)),
            Err(RpcError::ErrorResp(payload)) => Ok(Read::Reverted(payload.message.to_string())),
            Err(e) => Err(transport(what, &e)),
        }
    }

    /// A typed view call: `Reverted` when the call reverts or its answer does not decode.
    pub(super) async fn view<C: SolCall>(
        &self,
        to: Address,
        call: C,
        what: &str,
    ) -> Result<Read<C::Return>, FacilitatorError> {
        Ok(match self.read(to, call.abi_encode(), what).await? {
            Read::Value(bytes) => match C::abi_decode_returns(&bytes) {
                Ok(value) => Read::Value(value),
                Err(e) => Read::Reverted(format!("undecodable answer: {e}")),
            },
            Read::Reverted(message) => Read::Reverted(message),
        })
    }

    /// The full verify checklist. `Err` only when the node could not be asked.
    async fn check(
        &self,
        payload: &PaymentPayload,
        requirements: &PaymentRequirements,
    ) -> Result<Result<Checked, Rejection>, FacilitatorError> {
        // 1–10 and 12: the pure checklist; 3 also refuses an asset this facilitator was not
        // configured for, before any call to its code (whose gas the facilitator would pay at
        // settlement).
        let serves = |chain_id: u64, requirements: &PaymentRequirements| {
            if chain_id != self.chain_id {
                return Err(reasons::FAILED_TO_GET_NETWORK_CONFIG);
            }
            if !evm::parse_address(&requirements.asset).is_ok_and(|asset| self.accepts_asset(asset)) {
                tracing::debug!(asset = %requirements.asset, "x402 facilitator: asset not configured; refused");
                return Err(reasons::FAILED_TO_GET_ASSET_INFO);
            }
            Ok(())
        };
        let policy = ExactPolicy {
            scheme: "exact",
            now: (self.clock)(),
            clock_skew: self.clock_skew,
            serves: &serves,
            signers: Signers::EoaOrContract,
        };
        let checked = match check_exact(payload, requirements, &policy) {
            Ok(checked) => checked,
            Err(rejection) => return Ok(Err(rejection)),
        };
        let payer = Some(checked.payer.clone());
        let reject = |reason: &'static str| Rejection { reason, payer: payer.clone(), message: None };
        let (token, from_address, nonce, value) =
            (checked.token, checked.message.from, checked.message.nonce, checked.message.value);
        // 10 (continued). As the token's SignatureChecker: ECDSA by `from` first, then ERC-1271
        // if it has code.
        let code = self.provider.get_code_at(from_address).await.map_err(|e| transport("eth_getCode", &e))?;
        let kind = if checked.signed_by_from && code.is_empty() {
            SignatureKind::Vrs
        } else if !code.is_empty()
            && (checked.signed_by_from
                || self.erc1271_valid(from_address, checked.digest(), &checked.signature).await?)
        {
            SignatureKind::Bytes
        } else {
            return Ok(Err(reject(reasons::INVALID_SIGNATURE)));
        };
        // nonce unused (on chain, and not being settled right now)
        let in_flight =
            self.in_flight.lock().unwrap_or_else(PoisonError::into_inner).contains(&(token, from_address, nonce));
        let state = IEip3009Token::authorizationStateCall { authorizer: from_address, nonce };
        match self.view(token, state, "authorizationState").await? {
            Read::Reverted(message) => {
                return Ok(Err(Rejection { message: Some(message), ..reject(reasons::EIP3009_NOT_SUPPORTED) }));
            }
            Read::Value(used) if used || in_flight => return Ok(Err(reject(reasons::NONCE_ALREADY_USED))),
            Read::Value(_) => {}
        }
        // 13. balance
        match self.view(token, IEip3009Token::balanceOfCall { account: from_address }, "balanceOf").await? {
            Read::Value(balance) if balance >= value => {}
            Read::Value(_) => return Ok(Err(reject(reasons::INSUFFICIENT_BALANCE))),
            Read::Reverted(message) => {
                return Ok(Err(Rejection { message: Some(message), ..reject(reasons::SIMULATION_FAILED) }));
            }
        }
        let (name, version) = (checked.name, checked.version);
        let checked =
            Checked { token, message: checked.message, signature: checked.signature, kind, payer: checked.payer };
        // 14. simulation, diagnosed on failure
        if let Read::Reverted(revert) = self.read(token, checked.calldata().to_vec(), "simulation").await? {
            let reason = self.diagnose(token, (from_address, nonce), name, version).await?;
            return Ok(Err(Rejection { message: Some(revert), ..reject(reason) }));
        }
        Ok(Ok(checked))
    }

    /// ERC-1271 `isValidSignature(digest, signature)` on `wallet` returns the magic value.
    pub(super) async fn erc1271_valid(
        &self,
        wallet: Address,
        digest: B256,
        signature: &Bytes,
    ) -> Result<bool, FacilitatorError> {
        let call = IErc1271::isValidSignatureCall { hash: digest, signature: signature.clone() };
        Ok(matches!(self.view(wallet, call, "isValidSignature").await?, Read::Value(magic) if magic.0 == ERC1271_MAGIC))
    }

    /// Why a simulation failed: the authorization was used meanwhile (a concurrent settlement of
    /// the same payment won the race), the token's domain differs, or something else.
    async fn diagnose(
        &self,
        token: Address,
        (authorizer, nonce): (Address, B256),
        name: &str,
        version: &str,
    ) -> Result<&'static str, FacilitatorError> {
        let state = IEip3009Token::authorizationStateCall { authorizer, nonce };
        if let Read::Value(true) = self.view(token, state, "authorizationState").await? {
            return Ok(reasons::NONCE_ALREADY_USED);
        }
        if let Read::Value(actual) = self.view(token, IEip3009Token::nameCall {}, "name").await?
            && actual != name
        {
            return Ok(reasons::TOKEN_NAME_MISMATCH);
        }
        if let Read::Value(actual) = self.view(token, IEip3009Token::versionCall {}, "version").await?
            && actual != version
        {
            return Ok(reasons::TOKEN_VERSION_MISMATCH);
        }
        Ok(reasons::SIMULATION_FAILED)
    }

    /// Signs and sends the settlement transaction (`calldata` to `to`) under the nonce lock.
    /// `Ok(Err)` is a definite failure (nothing was broadcast); `Err` means the broadcast's
    /// outcome is unknown.
    pub(super) async fn send(
        &self,
        to: Address,
        calldata: Bytes,
        payer: &str,
    ) -> Result<Result<B256, Rejection>, FacilitatorError> {
        let reject = |reason: &'static str, message: String| Rejection {
            reason,
            payer: Some(payer.to_owned()),
            message: Some(message),
        };
        let mut next_nonce = self.next_nonce.lock().await;
        // One retry after re-reading the account nonce, in case another sender (e.g. a second
        // facilitator process sharing the key) used the nonce we counted on.
        let mut resynced = false;
        loop {
            let nonce = match *next_nonce {
                Some(nonce) => nonce,
                None => self
                    .provider
                    .get_transaction_count(self.address)
                    .pending()
                    .await
                    .map_err(|e| transport("eth_getTransactionCount", &e))?,
            };
            let envelope = match self.prepare(to, calldata.clone(), nonce).await? {
                Ok(envelope) => envelope,
                Err((reason, message)) => return Ok(Err(reject(reason, message))),
            };
            match self.provider.send_tx_envelope(envelope).await {
                Ok(pending) => {
                    *next_nonce = Some(nonce.saturating_add(1));
                    return Ok(Ok(*pending.tx_hash()));
                }
                Err(RpcError::ErrorResp(payload)) => {
                    *next_nonce = None;
                    let message = payload.message.to_string();
                    let lower = message.to_ascii_lowercase();
                    if !resynced && (lower.contains("nonce too low") || lower.contains("already known")) {
                        tracing::debug!(%message, "x402 facilitator: nonce taken; re-reading the account nonce");
                        resynced = true;
                        continue;
                    }
                    let reason = if lower.contains("insufficient funds") {
                        reasons::FACILITATOR_INSUFFICIENT_GAS
                    } else {
                        reasons::TRANSACTION_FAILED
                    };
                    return Ok(Err(reject(reason, message)));
                }
                Err(e) => {
                    // The node may or may not have taken the transaction: unknown outcome.
                    *next_nonce = None;
                    return Err(transport("eth_sendRawTransaction", &e));
                }
            }
        }
    }

    /// Estimates gas and fees for the settlement transaction with `nonce`, checks that the
    /// facilitator can pay for it, and signs it. `Ok(Err)` is a definite rejection.
    async fn prepare(
        &self,
        to: Address,
        calldata: Bytes,
        nonce: u64,
    ) -> Result<Result<alloy::consensus::TxEnvelope, (&'static str, String)>, FacilitatorError> {
        let mut tx = TransactionRequest::default()
            .with_from(self.address)
            .with_to(to)
            .with_input(calldata)
            .with_chain_id(self.chain_id)
            .with_nonce(nonce);
        let gas = match self.provider.estimate_gas(tx.clone()).await {
            Ok(gas) => gas,
            Err(RpcError::ErrorResp(payload)) => {
                return Ok(Err((reasons::SIMULATION_FAILED, payload.message.to_string())));
            }
            Err(e) => return Err(transport("eth_estimateGas", &e)),
        };
        let gas_limit = gas.saturating_add(gas.saturating_mul(GAS_MARGIN_PERCENT) / 100);
        if gas_limit > self.max_gas {
            return Ok(Err((
                reasons::GAS_ABOVE_CEILING,
                format!("the settlement needs a gas limit of {gas_limit}, above the ceiling of {}", self.max_gas),
            )));
        }
        let fees = self.provider.estimate_eip1559_fees().await.map_err(|e| transport("fee estimation", &e))?;
        tx = tx
            .with_gas_limit(gas_limit)
            .with_max_fee_per_gas(fees.max_fee_per_gas)
            .with_max_priority_fee_per_gas(fees.max_priority_fee_per_gas);
        let cost = U256::from(gas_limit).saturating_mul(U256::from(fees.max_fee_per_gas));
        let balance = self.provider.get_balance(self.address).await.map_err(|e| transport("eth_getBalance", &e))?;
        if balance < cost {
            return Ok(Err((
                reasons::FACILITATOR_INSUFFICIENT_GAS,
                format!("facilitator {} holds {balance} wei, the settlement may cost {cost} wei", self.address),
            )));
        }
        tx.build(&self.wallet)
            .await
            .map(Ok)
            .map_err(|e| FacilitatorError::Config(format!("cannot sign the settlement transaction: {e}")))
    }

    /// Waits for the receipt of `hash` (polling) up to the receipt timeout.
    pub(super) async fn await_receipt(
        &self,
        hash: B256,
        payer: String,
        network: Network,
    ) -> Result<SettleResponse, FacilitatorError> {
        let transaction = evm::to_hex(hash);
        let deadline = tokio::time::Instant::now() + self.receipt_timeout;
        loop {
            match self.provider.get_transaction_receipt(hash).await {
                Ok(Some(receipt)) if receipt.status() => {
                    tracing::debug!(%transaction, %payer, "x402 facilitator: settled on chain");
                    return Ok(SettleResponse {
                        success: true,
                        error_reason: None,
                        error_message: None,
                        status: Some(settle_status::SUCCESS.to_owned()),
                        payer: Some(payer),
                        transaction,
                        network,
                        amount: None,
                    });
                }
                Ok(Some(_)) => {
                    tracing::warn!(%transaction, "x402 facilitator: settlement transaction reverted");
                    let mut failure =
                        SettleResponse::failure(reasons::TRANSACTION_FAILED, network, Some(payer), transaction);
                    failure.error_message = Some("the settlement transaction reverted".to_owned());
                    return Ok(failure);
                }
                Ok(None) => {}
                Err(e) => tracing::debug!(error = %e, "x402 facilitator: receipt poll failed; retrying"),
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                break;
            }
            tokio::time::sleep(self.poll_interval.min(deadline - now)).await;
        }
        match self.provider.get_transaction_by_hash(hash).await {
            Ok(None) => {
                // Dropped: the node forgot it. Re-read the account nonce before the next send.
                *self.next_nonce.lock().await = None;
                let mut failure =
                    SettleResponse::failure(reasons::TRANSACTION_FAILED, network, Some(payer), transaction);
                failure.error_message = Some("the settlement transaction was dropped".to_owned());
                Ok(failure)
            }
            // Still pending (or unknown): the seller polls settle status and fails closed.
            _ => Ok(SettleResponse {
                success: true,
                error_reason: None,
                error_message: None,
                status: Some(settle_status::TIMEOUT.to_owned()),
                payer: Some(payer),
                transaction,
                network,
                amount: None,
            }),
        }
    }
}

#[async_trait]
impl SchemeNetworkFacilitator for ExactEvmFacilitatorScheme {
    fn scheme(&self) -> &str {
        "exact"
    }

    fn signers(&self) -> (String, Vec<String>) {
        ("eip155:*".to_owned(), vec![evm::checksum(&self.address)])
    }

    async fn verify(
        &self,
        payload: &PaymentPayload,
        requirements: &PaymentRequirements,
    ) -> Result<VerifyResponse, FacilitatorError> {
        if permit2::selected(payload, requirements) {
            return permit2::verify(self, Permit2Kind::Exact, payload, requirements).await;
        }
        Ok(match self.check(payload, requirements).await? {
            Ok(checked) => VerifyResponse::valid(checked.payer),
            Err(rejection) => Rejection::into_verify(rejection),
        })
    }

    async fn settle(
        &self,
        payload: &PaymentPayload,
        requirements: &PaymentRequirements,
    ) -> Result<SettleResponse, FacilitatorError> {
        if permit2::selected(payload, requirements) {
            return permit2::settle(self, Permit2Kind::Exact, payload, requirements).await;
        }
        let network = requirements.network.clone();
        let checked = match self.check(payload, requirements).await? {
            Ok(checked) => checked,
            Err(rejection) => return Ok(Rejection::into_settle(rejection, network)),
        };
        let key = (checked.token, checked.message.from, checked.message.nonce);
        let Some(_in_flight) = InFlight::claim(self, key) else {
            return Ok(SettleResponse::failure(
                reasons::NONCE_ALREADY_USED,
                network,
                Some(checked.payer),
                String::new(),
            ));
        };
        match self.send(checked.token, checked.calldata(), &checked.payer).await? {
            Ok(hash) => self.await_receipt(hash, checked.payer, network).await,
            Err(rejection) => {
                tracing::warn!(reason = rejection.reason, "x402 facilitator: settlement not sent");
                Ok(Rejection::into_settle(rejection, network))
            }
        }
    }

    async fn settle_status(&self, tx_hash: &str) -> Result<Option<SettleStatusResponse>, FacilitatorError> {
        let Ok(hash) = evm::parse_bytes32(tx_hash) else {
            return Ok(None);
        };
        let status = |status: &str, error: Option<&str>| SettleStatusResponse {
            success: error.is_none(),
            status: Some(status.to_owned()),
            error_reason: error.map(str::to_owned),
            error_message: None,
            payer: None,
            transaction: Some(evm::to_hex(hash)),
            network: Some(self.network.clone()),
        };
        let receipt = self
            .provider
            .get_transaction_receipt(hash)
            .await
            .map_err(|e| transport("eth_getTransactionReceipt", &e))?;
        Ok(Some(match receipt {
            Some(r) if r.status() => status(settle_status::SUCCESS, None),
            Some(_) => status(settle_status::FAILED, Some(reasons::TRANSACTION_FAILED)),
            None => match self.provider.get_transaction_by_hash(hash).await {
                Ok(Some(_)) => status(settle_status::PENDING, None),
                Ok(None) => status(settle_status::FAILED, Some(reasons::TRANSACTION_NOT_FOUND)),
                Err(e) => return Err(transport("eth_getTransactionByHash", &e)),
            },
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";

    #[tokio::test]
    async fn setup_errors_are_typed_and_rpc_requests_are_bounded() {
        let signer: PrivateKeySigner = KEY.parse().unwrap();
        let bad = ExactEvmFacilitatorScheme::connect_http("not a url", signer.clone()).await.unwrap_err();
        assert!(matches!(bad, SetupError::InvalidUrl { .. }), "{bad}");

        // A node that accepts connections and never answers.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let silent = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        let connect = ExactEvmFacilitatorScheme::connect_http_with_timeout(&url, signer, Duration::from_millis(200));
        let outcome = tokio::time::timeout(Duration::from_secs(60), connect).await.expect("the RPC timeout applies");
        assert!(matches!(outcome, Err(SetupError::Rpc(_))), "{outcome:?}");
        silent.abort();
    }
}
