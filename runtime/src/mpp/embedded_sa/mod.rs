//! [`EmbeddedSa`]: an in-process [`SaClient`] — the MPP twin of the embedded x402 facilitator —
//! settling `evm` charges against an in-memory token ledger instead of a chain.
//!
//! It really checks what it is sent (the challenge echo, the request it carries, every
//! EIP-3009 signature, validity windows, nonces and balances) and answers like OKX's Settlement
//! Agent: success is a [`ChargeReceipt`], failure an [`SaError::Api`] with the SA code and the
//! error class [`map_sa_error`] gives it (wire facts §9.7-§9.8). Use it for tests, demos and
//! local development; it never touches a network.
//!
//! Sessions are served by an in-memory **escrow**: `session/open` and `session/topUp` move the
//! payer's EIP-3009 deposit into the escrow contract's ledger account, `session/settle` pays
//! the payee what the highest voucher adds to what was already settled, `session/close` does
//! the same and refunds the rest of the deposit to the payer (see [`EmbeddedSa`]).
//!
//! ```
//! use pay402_runtime::evm::U256;
//! use pay402_runtime::mpp::EmbeddedSa;
//!
//! let sa = EmbeddedSa::new().with_clock(|| 1_774_864_800);
//! let token = "0x779ded0c9e1022225f8e0630b35a9b54be713736";
//! let payer = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266";
//! sa.fund(token, payer, U256::from(5_000)).unwrap();
//! assert_eq!(sa.balance(token, payer), U256::from(5_000));
//! assert_eq!(sa.charge_count(), 0);
//! ```

mod charge;
mod escrow;

use super::charge_request::ChargeRequest;
use super::credential::payer_from_did;
use super::encoding::b64url_decode;
use super::expiry::{parse_rfc3339, python_isoformat_z};
use super::wire::EVM_METHOD;
use crate::chain::{NetworkRegistry, X_LAYER_CHAIN_ID};
use crate::evm::{
    self, Address, B256, Eip712Domain, EvmError, TokenLedger, TransferWithAuthorization, U256, UnixClock,
};
use crate::okx::sa::{
    ChargeReceipt, ChargeSettleRequest, ChargeVerifyHashRequest, EIP3009_AUTHORIZATION_TYPE, SaChallengeEcho, SaClient,
    SaError, SessionCloseRequest, SessionOpenRequest, SessionReceipt, SessionSettleRequest, SessionStatus,
    SessionTopUpRequest, TransferAuthorization, map_sa_error,
};
use async_trait::async_trait;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use time::OffsetDateTime;

/// The SA codes the embedded SA answers with (wire facts §9.8).
pub(crate) mod sa_codes {
    /// Malformed or missing field, amount/recipient mismatch, unsupported operation
    /// (`BadRequestError`, 400).
    pub(crate) const BAD_REQUEST: i64 = 70000;
    /// Chain or token not supported (`InternalSAError`, 500).
    pub(crate) const CHAIN_UNSUPPORTED: i64 = 70001;
    /// Nonce reused, insufficient balance, authorization expired or not yet valid, transaction
    /// already used (`MalformedCredentialError`, 402).
    pub(crate) const MALFORMED_CREDENTIAL: i64 = 70003;
    /// A signature does not recover to the payer (`InvalidSignatureError`, 402).
    pub(crate) const INVALID_SIGNATURE: i64 = 70004;
    /// The splits add up to more than the amount (`InvalidSplitError`, 400).
    pub(crate) const SPLITS_EXCEED_AMOUNT: i64 = 70005;
    /// More than ten splits (`InvalidSplitError`, 400).
    pub(crate) const TOO_MANY_SPLITS: i64 = 70006;
    /// The transaction hash is not known (`InternalSAError`, 500).
    pub(crate) const TX_NOT_CONFIRMED: i64 = 70007;
    /// The channel is closed (`ChannelClosedError`, 410).
    pub(crate) const CHANNEL_CLOSED: i64 = 70008;
    /// The challenge echo is missing, not `evm`/`charge` (`evm`/`session` for session
    /// operations), or expired (`InvalidChallengeError`, 402).
    pub(crate) const INVALID_CHALLENGE: i64 = 70009;
    /// The channel is not known (`ChannelNotFoundError`, 410).
    pub(crate) const CHANNEL_NOT_FOUND: i64 = 70010;
    /// The voucher exceeds the deposit (`AmountExceedsDepositError`, 402).
    pub(crate) const AMOUNT_EXCEEDS_DEPOSIT: i64 = 70012;
}

fn sa_error(code: i64, msg: impl AsRef<str>) -> SaError {
    SaError::Api { code, error: map_sa_error(code, msg.as_ref()) }
}

fn bad_request(msg: impl AsRef<str>) -> SaError {
    sa_error(sa_codes::BAD_REQUEST, msg)
}

/// A transfer known to the embedded "chain", for `charge/verifyHash`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct RecordedTransfer {
    chain_id: u64,
    token: Address,
    from: Address,
    to: Address,
    value: U256,
}

#[derive(Default)]
struct State {
    ledger: TokenLedger,
    /// Accepted charges (settled or verified by hash), in order.
    charges: Vec<ChargeReceipt>,
    /// Known transactions by hash.
    transactions: HashMap<B256, RecordedTransfer>,
    /// The challenge id each transaction paid for.
    hash_used_by: HashMap<B256, String>,
    /// Payment channels held in escrow.
    channels: HashMap<B256, EscrowChannel>,
    /// Deposit transactions (`hash` opens and top-ups): the channel each one funded and the
    /// receipt answered, repeated for a duplicate on the same channel (an idempotent SA).
    deposit_hashes: HashMap<B256, (B256, SessionReceipt)>,
    /// Escrow payouts so far (their synthetic nonces).
    payouts: u64,
}

/// One payment channel held by the embedded escrow.
#[derive(Clone, Debug, PartialEq, Eq)]
struct EscrowChannel {
    chain_id: u64,
    escrow: Address,
    token: Address,
    payer: Address,
    payee: Address,
    authorized_signer: Address,
    deposit: U256,
    settled: U256,
    closed: bool,
}

/// An in-process Settlement Agent for MPP `evm` charges, with an in-memory token ledger.
///
/// Clones share the state (balances, used nonces, known transactions, accepted charges), so a
/// test can keep a handle while a seller owns another. [`Self::with_clock`] and
/// [`Self::with_registry`] affect only the handle they are called on (and its later clones).
///
/// **`settle`** (`charge/settle`) checks, in order, answering the first failure:
///
/// 1. the echo has non-empty `id`, `realm`, `method`, `intent`, `request`; method `evm`,
///    intent `charge`; `expires`, when present, is RFC 3339 and not past — else 70009;
/// 2. the echoed `request` is base64url JSON (else 70009) with `amount`, `currency`,
///    `recipient`, optional `methodDetails.chainId` (196) and `methodDetails.splits` — else
///    70000; the registry knows the token on that chain (its EIP-712 name and version) — else
///    70001;
/// 3. authorization type `eip-3009`, at most 10 splits (70006), every authorization
///    well-formed (70000), Σ split values ≤ amount (70005);
/// 4. `to` is the recipient (case-insensitive), value + Σ splits = amount exactly, the splits
///    pay exactly the request's splits in order and come from the same payer, `source` (when
///    not empty) is the payer's `did:pkh` on that chain — else 70000;
/// 5. every signature (each split signs its own authorization) recovers to `from` over the
///    domain `{name, version, chainId, verifyingContract: currency}` — else 70004;
/// 6. validAfter ≤ now ≤ validBefore for each — else 70003 `authorization expired` (or
///    `authorization not yet valid`);
/// 7. nonces unused per (token, from) — else 70003 `authorization nonce already used`;
/// 8. the payer's balance covers the total — else 70003 `insufficient balance`.
///
/// Then the balances move (primary to the recipient, each split to its recipient), the nonces
/// are marked used, and the receipt is `{method: "evm", reference, status: "success",
/// timestamp, chainId, challengeId}` where `reference` is the deterministic pseudo hash
/// [`transaction_hash`](crate::evm::transaction_hash) of the primary transfer. A challenge id is not single-use here (the
/// seller enforces that); a nonce is.
///
/// **`verify_hash`** (`charge/verifyHash`) accepts a hash registered with
/// [`Self::record_transfer`] (or produced by an earlier `settle`): the same echo and request
/// checks, no splits, then the transfer must be on the request's chain and token, to the
/// recipient, for exactly the amount (70000); an unknown hash is 70007 `transaction not
/// confirmed`; a hash already accepted for another challenge is 70003.
///
/// **Sessions** run against an in-memory escrow (the escrow contract is an ordinary ledger
/// account holding every deposit):
///
/// * `session/open` ([`Self::session_open_now`]) needs the echo of an `evm`/`session`
///   challenge; verifies the EIP-3009 authorization from the payer **to the escrow contract**
///   for the deposit (signature over the token's domain, validity window, nonce, balance) and,
///   when a salt is sent, that the channel id is
///   [`derive_channel_id`](crate::evm::derive_channel_id); moves payer → escrow and
///   records the channel (payer, payee = the request's recipient, token, deposit, settled 0);
/// * `session/topUp` likewise for `additionalDeposit` on a known, open channel;
/// * both also take a deposit by transaction `hash` (payload type `hash`): a transfer
///   registered with [`Self::record_transfer`] on the request's chain and token, **to the
///   escrow contract**; its `from` is the payer and its value the deposit (the ledger is not
///   moved again: the transfer was recorded as made). A hash funds one channel only (70003 for
///   another); presented again for the same channel, the SA answers **idempotently** with the
///   first receipt and counts nothing;
/// * every session receipt carries `channelId` and `deposit` = the channel's total escrowed
///   deposit after the action;
/// * `session/settle` verifies the payee's `SettleAuthorization` (channel domain, signer = the
///   channel's payee) and the payer's voucher over `cumulativeAmount`, then pays the payee
///   `cumulativeAmount − settled` out of the escrow;
/// * `session/close` the same with a `CloseAuthorization`, then refunds `deposit −
///   cumulativeAmount` to the payer and marks the channel closed;
/// * `session/status` reports it.
///
/// Session errors use the SA codes: 70004 signature, 70010 unknown channel, 70008 closed,
/// 70012 amount exceeds the deposit, 70003 nonce/balance/expiry, 70009 echo, 70000 bad
/// parameters.
#[derive(Clone)]
pub struct EmbeddedSa {
    clock: UnixClock,
    registry: Option<Arc<NetworkRegistry>>,
    state: Arc<Mutex<State>>,
}

impl fmt::Debug for EmbeddedSa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmbeddedSa").field("charges", &self.charge_count()).finish_non_exhaustive()
    }
}

impl Default for EmbeddedSa {
    fn default() -> Self {
        Self::new()
    }
}

/// One authorization, parsed.
struct Parsed {
    message: TransferWithAuthorization,
    signature: Option<String>,
}

fn parse_authorization(a: &TransferAuthorization, what: &str) -> Result<Parsed, SaError> {
    let malformed = |field: &str, e: EvmError| bad_request(format!("{what}.{field}: {e}"));
    Ok(Parsed {
        message: TransferWithAuthorization {
            from: evm::parse_address(&a.from).map_err(|e| malformed("from", e))?,
            to: evm::parse_address(&a.to).map_err(|e| malformed("to", e))?,
            value: evm::parse_uint256(&a.value).map_err(|e| malformed("value", e))?,
            validAfter: evm::parse_uint256(&a.valid_after).map_err(|e| malformed("validAfter", e))?,
            validBefore: evm::parse_uint256(&a.valid_before).map_err(|e| malformed("validBefore", e))?,
            nonce: evm::parse_bytes32(&a.nonce).map_err(|e| malformed("nonce", e))?,
        },
        signature: a.signature.clone().filter(|s| !s.is_empty()),
    })
}

fn is_eip3009(auth_type: &str) -> bool {
    auth_type.is_empty() || auth_type == EIP3009_AUTHORIZATION_TYPE
}

impl EmbeddedSa {
    /// An embedded SA with an empty ledger, the system clock and the process-wide
    /// [`NetworkRegistry::global`] (read at each call).
    pub fn new() -> Self {
        Self { clock: evm::system_clock(), registry: None, state: Arc::default() }
    }

    /// Replaces the clock (Unix seconds), for tests.
    pub fn with_clock(mut self, clock: impl Fn() -> u64 + Send + Sync + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Uses `registry` for the supported tokens and their EIP-712 name and version.
    pub fn with_registry(mut self, registry: NetworkRegistry) -> Self {
        self.registry = Some(Arc::new(registry));
        self
    }

    /// Development faucet: every account the ledger has not seen yet (per token) starts with
    /// `amount` instead of zero. Off (zero) by default. Applies to the shared state, hence to
    /// every clone.
    pub fn with_faucet(self, amount: U256) -> Self {
        self.lock().ledger.set_faucet(amount);
        self
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn registry(&self) -> Arc<NetworkRegistry> {
        self.registry.clone().unwrap_or_else(NetworkRegistry::global)
    }

    /// Credits `amount` of `token` to `owner` (addresses in any case); returns the new balance.
    pub fn fund(&self, token: &str, owner: &str, amount: U256) -> Result<U256, EvmError> {
        let (token, owner) = (evm::parse_address(token)?, evm::parse_address(owner)?);
        self.lock().ledger.credit(token, owner, amount).map_err(|_| EvmError::Overflow)
    }

    /// The ledger balance of `owner` in `token` (the faucet amount for accounts not seen yet;
    /// zero for unparseable addresses).
    pub fn balance(&self, token: &str, owner: &str) -> U256 {
        match (evm::parse_address(token), evm::parse_address(owner)) {
            (Ok(token), Ok(owner)) => self.lock().ledger.balance_of(token, owner),
            _ => U256::ZERO,
        }
    }

    /// Whether `authorizer` already used `nonce` (`0x` + 64 hex) on `token`.
    pub fn is_nonce_used(&self, token: &str, authorizer: &str, nonce: &str) -> bool {
        match (evm::parse_address(token), evm::parse_address(authorizer), evm::parse_bytes32(nonce)) {
            (Ok(t), Ok(a), Ok(n)) => self.lock().ledger.is_nonce_used(t, a, n),
            _ => false,
        }
    }

    /// The accepted charges (settled, or verified by hash), in order.
    pub fn charges(&self) -> Vec<ChargeReceipt> {
        self.lock().charges.clone()
    }

    /// How many charges were accepted.
    pub fn charge_count(&self) -> usize {
        self.lock().charges.len()
    }

    /// Registers a transfer on X Layer (chain 196) that happened out of band (the client
    /// broadcast it itself), so `verify_hash` can accept `hash`. The ledger's balances are not
    /// touched. Replaces an earlier record of the same hash.
    pub fn record_transfer(&self, hash: &str, from: &str, to: &str, token: &str, value: U256) -> Result<(), EvmError> {
        self.record_transfer_on(X_LAYER_CHAIN_ID, hash, from, to, token, value)
    }

    /// [`Self::record_transfer`] on another chain.
    pub fn record_transfer_on(
        &self,
        chain_id: u64,
        hash: &str,
        from: &str,
        to: &str,
        token: &str,
        value: U256,
    ) -> Result<(), EvmError> {
        let record = RecordedTransfer {
            chain_id,
            token: evm::parse_address(token)?,
            from: evm::parse_address(from)?,
            to: evm::parse_address(to)?,
            value,
        };
        self.lock().transactions.insert(evm::parse_bytes32(hash)?, record);
        Ok(())
    }

    fn now(&self) -> u64 {
        (self.clock)()
    }

    fn timestamp(now: u64) -> String {
        let at = i64::try_from(now).ok().and_then(|s| OffsetDateTime::from_unix_timestamp(s).ok());
        at.map_or_else(|| now.to_string(), python_isoformat_z)
    }

    /// Steps 1–2: the echo and the request it carries, and the token's EIP-712 domain.
    fn check_echo(
        &self,
        echo: &SaChallengeEcho,
        now: u64,
        intent: &str,
    ) -> Result<(ChargeRequest, Eip712Domain, Map<String, Value>), SaError> {
        let invalid = |msg: &str| sa_error(sa_codes::INVALID_CHALLENGE, msg);
        for (name, value) in [
            ("id", &echo.id),
            ("realm", &echo.realm),
            ("method", &echo.method),
            ("intent", &echo.intent),
            ("request", &echo.request),
        ] {
            if value.is_empty() {
                return Err(invalid(&format!("challenge {name} is missing")));
            }
        }
        if echo.method != EVM_METHOD || echo.intent != intent {
            return Err(invalid(&format!("challenge is {}/{}, expected evm/{intent}", echo.method, echo.intent)));
        }
        if let Some(expires) = &echo.expires {
            let at = parse_rfc3339(expires).map_err(|_| invalid("challenge expires is not RFC 3339"))?;
            if at.unix_timestamp() < i64::try_from(now).unwrap_or(i64::MAX) {
                return Err(invalid("challenge expired"));
            }
        }
        let request = b64url_decode(&echo.request)
            .ok()
            .and_then(|bytes| serde_json::from_slice::<Map<String, Value>>(&bytes).ok())
            .ok_or_else(|| invalid("challenge request is not base64url JSON"))?;
        let raw = request;
        let request = ChargeRequest::from_request(&raw).map_err(|e| bad_request(e.to_string()))?;
        let registry = self.registry();
        let Some(token) = request.token_info(&registry) else {
            return Err(sa_error(
                sa_codes::CHAIN_UNSUPPORTED,
                format!("token {} on chain {} is not supported", request.currency_text, request.chain_id),
            ));
        };
        let domain = evm::eip3009_domain(&token.name, &token.version, request.chain_id, request.currency);
        Ok((request, domain, raw))
    }

    fn check_source(source: &str, request: &ChargeRequest, payer: Address) -> Result<(), SaError> {
        if source.is_empty() {
            return Ok(());
        }
        match payer_from_did(source) {
            Some(did) if did.chain_id == request.chain_id && did.address == payer => Ok(()),
            Some(_) => Err(bad_request("source does not match the payer")),
            None => Err(bad_request("source is not a did:pkh:eip155 DID")),
        }
    }
}

#[async_trait]
impl SaClient for EmbeddedSa {
    async fn settle(&self, req: &ChargeSettleRequest) -> Result<ChargeReceipt, SaError> {
        self.settle_now(req)
    }

    async fn verify_hash(&self, req: &ChargeVerifyHashRequest) -> Result<ChargeReceipt, SaError> {
        self.verify_hash_now(req)
    }

    async fn session_open(&self, req: &SessionOpenRequest) -> Result<SessionReceipt, SaError> {
        self.session_open_now(req)
    }

    async fn session_top_up(&self, req: &SessionTopUpRequest) -> Result<SessionReceipt, SaError> {
        self.session_top_up_now(req)
    }

    async fn session_settle(&self, req: &SessionSettleRequest) -> Result<SessionReceipt, SaError> {
        self.session_settle_now(req)
    }

    async fn session_close(&self, req: &SessionCloseRequest) -> Result<SessionReceipt, SaError> {
        self.session_close_now(req)
    }

    async fn session_status(&self, channel_id: &str) -> Result<SessionStatus, SaError> {
        self.session_status_now(channel_id)
    }
}

#[cfg(test)]
mod tests;
