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

use super::charge_request::ChargeRequest;
use super::credential::payer_from_did;
use super::encoding::b64url_decode;
use super::expiry::{parse_rfc3339, python_isoformat_z};
use super::wire::{CHARGE_INTENT, EVM_METHOD, MAX_SPLITS, SESSION_INTENT};
use crate::chain::{NetworkRegistry, X_LAYER_CHAIN_ID};
use crate::evm::channel::{
    ChannelDomain, DEFAULT_ESCROW_CONTRACT, close_authorization_digest, recover_channel_signer,
    settle_authorization_digest, verify_voucher_signature,
};
use crate::evm::transaction_hash;
use crate::evm::{
    self, Address, B256, Eip712Domain, EvmError, TokenLedger, TransferWithAuthorization, U256, UnixClock, keccak256,
};
use crate::okx::sa::{
    ChargeAuthorization, ChargeReceipt, ChargeSettleRequest, ChargeVerifyHashRequest, EIP3009_AUTHORIZATION_TYPE,
    SaChallengeEcho, SaClient, SaError, SessionCloseRequest, SessionOpenRequest, SessionReceipt, SessionSettleRequest,
    SessionStatus, SessionTopUpRequest, TransferAuthorization, map_sa_error,
};
use async_trait::async_trait;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use time::OffsetDateTime;

/// The SA codes the embedded SA answers with (wire facts §9.8).
pub mod sa_codes {
    /// Malformed or missing field, amount/recipient mismatch, unsupported operation
    /// (`BadRequestError`, 400).
    pub const BAD_REQUEST: i64 = 70000;
    /// Chain or token not supported (`InternalSAError`, 500).
    pub const CHAIN_UNSUPPORTED: i64 = 70001;
    /// Nonce reused, insufficient balance, authorization expired or not yet valid, transaction
    /// already used (`MalformedCredentialError`, 402).
    pub const MALFORMED_CREDENTIAL: i64 = 70003;
    /// A signature does not recover to the payer (`InvalidSignatureError`, 402).
    pub const INVALID_SIGNATURE: i64 = 70004;
    /// The splits add up to more than the amount (`InvalidSplitError`, 400).
    pub const SPLITS_EXCEED_AMOUNT: i64 = 70005;
    /// More than ten splits (`InvalidSplitError`, 400).
    pub const TOO_MANY_SPLITS: i64 = 70006;
    /// The transaction hash is not known (`InternalSAError`, 500).
    pub const TX_NOT_CONFIRMED: i64 = 70007;
    /// The channel is closed (`ChannelClosedError`, 410).
    pub const CHANNEL_CLOSED: i64 = 70008;
    /// The challenge echo is missing, not `evm`/`charge` (`evm`/`session` for session
    /// operations), or expired (`InvalidChallengeError`, 402).
    pub const INVALID_CHALLENGE: i64 = 70009;
    /// The channel is not known (`ChannelNotFoundError`, 410).
    pub const CHANNEL_NOT_FOUND: i64 = 70010;
    /// The voucher exceeds the deposit (`AmountExceedsDepositError`, 402).
    pub const AMOUNT_EXCEEDS_DEPOSIT: i64 = 70012;
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
/// [`transaction_hash`] of the primary transfer. A challenge id is not single-use here (the
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

fn primary_as_transfer(a: &ChargeAuthorization) -> TransferAuthorization {
    TransferAuthorization {
        auth_type: a.auth_type.clone(),
        from: a.from.clone(),
        to: a.to.clone(),
        value: a.value.clone(),
        valid_after: a.valid_after.clone(),
        valid_before: a.valid_before.clone(),
        nonce: a.nonce.clone(),
        signature: a.signature.clone(),
    }
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

    /// Synchronous core of [`SaClient::settle`]: checks and settles atomically.
    pub fn settle_now(&self, req: &ChargeSettleRequest) -> Result<ChargeReceipt, SaError> {
        let now = self.now();
        let (request, domain, _) = self.check_echo(&req.challenge, now, CHARGE_INTENT)?;
        let auth = &req.payload.authorization;

        // 3. shape
        let splits = auth.splits.as_deref().unwrap_or_default();
        if !is_eip3009(&auth.auth_type) || splits.iter().any(|s| !is_eip3009(&s.auth_type)) {
            return Err(bad_request(format!("authorization type must be {EIP3009_AUTHORIZATION_TYPE}")));
        }
        if splits.len() > MAX_SPLITS {
            return Err(sa_error(
                sa_codes::TOO_MANY_SPLITS,
                format!("{} splits, at most {MAX_SPLITS} are allowed", splits.len()),
            ));
        }
        let primary = parse_authorization(&primary_as_transfer(auth), "authorization")?;
        let parsed_splits = splits
            .iter()
            .enumerate()
            .map(|(i, s)| parse_authorization(s, &format!("authorization.splits[{i}]")))
            .collect::<Result<Vec<_>, _>>()?;
        let splits_total = parsed_splits
            .iter()
            .try_fold(U256::ZERO, |acc, s| acc.checked_add(s.message.value))
            .filter(|total| *total <= request.amount)
            .ok_or_else(|| sa_error(sa_codes::SPLITS_EXCEED_AMOUNT, "splits exceed the amount"))?;

        // 4. binding to the request
        let payer = primary.message.from;
        if primary.message.to != request.recipient {
            return Err(bad_request("authorization.to is not the recipient"));
        }
        if primary.message.value.checked_add(splits_total) != Some(request.amount) {
            return Err(bad_request(format!(
                "authorization value {} plus splits {splits_total} is not the amount {}",
                primary.message.value, request.amount
            )));
        }
        if parsed_splits.len() != request.splits.len() {
            return Err(bad_request(format!(
                "{} splits authorized, the request has {}",
                parsed_splits.len(),
                request.splits.len()
            )));
        }
        for (i, (got, want)) in parsed_splits.iter().zip(&request.splits).enumerate() {
            if got.message.to != want.recipient || got.message.value != want.amount {
                return Err(bad_request(format!("split {i} does not match the request")));
            }
            if got.message.from != payer {
                return Err(bad_request(format!("split {i} is not from the payer")));
            }
        }
        Self::check_source(&req.source, &request, payer)?;

        // 5. signatures
        let all: Vec<&Parsed> = std::iter::once(&primary).chain(&parsed_splits).collect();
        for p in &all {
            let signed =
                p.signature.as_deref().is_some_and(|s| evm::verify_transfer_authorization(&domain, &p.message, s));
            if !signed {
                return Err(sa_error(sa_codes::INVALID_SIGNATURE, "signature does not match the payer"));
            }
        }

        // 6. validity windows
        let now_u = U256::from(now);
        for p in &all {
            if now_u < p.message.validAfter {
                return Err(sa_error(sa_codes::MALFORMED_CREDENTIAL, "authorization not yet valid"));
            }
            if now_u > p.message.validBefore {
                return Err(sa_error(sa_codes::MALFORMED_CREDENTIAL, "authorization expired"));
            }
        }

        // 7–8. nonces and balance, then settle — under one lock.
        let batch: Vec<TransferWithAuthorization> = all.iter().map(|p| p.message.clone()).collect();
        let mut state = self.lock();
        state
            .ledger
            .apply_authorizations(request.currency, &batch)
            .map_err(|e| sa_error(sa_codes::MALFORMED_CREDENTIAL, e.to_string()))?;
        let reference = transaction_hash(request.chain_id, request.currency, payer, primary.message.nonce);
        let receipt = ChargeReceipt {
            method: EVM_METHOD.to_owned(),
            reference: reference.clone(),
            status: "success".to_owned(),
            timestamp: Self::timestamp(now),
            chain_id: request.chain_id.to_string(),
            challenge_id: req.challenge.id.clone(),
            external_id: None,
        };
        if let Ok(hash) = evm::parse_bytes32(&reference) {
            let record = RecordedTransfer {
                chain_id: request.chain_id,
                token: request.currency,
                from: payer,
                to: primary.message.to,
                value: primary.message.value,
            };
            state.transactions.insert(hash, record);
            state.hash_used_by.insert(hash, req.challenge.id.clone());
        }
        state.charges.push(receipt.clone());
        tracing::debug!(payer = %payer, amount = %request.amount, "embedded SA settled a charge");
        Ok(receipt)
    }

    /// Synchronous core of [`SaClient::verify_hash`].
    pub fn verify_hash_now(&self, req: &ChargeVerifyHashRequest) -> Result<ChargeReceipt, SaError> {
        let now = self.now();
        let (request, _, _) = self.check_echo(&req.challenge, now, CHARGE_INTENT)?;
        if !request.splits.is_empty() {
            return Err(bad_request("a charge with splits cannot be paid by transaction hash"));
        }
        let hash = evm::parse_bytes32(&req.payload.hash).map_err(|e| bad_request(format!("payload.hash: {e}")))?;
        let mut state = self.lock();
        let Some(tx) = state.transactions.get(&hash).cloned() else {
            return Err(sa_error(sa_codes::TX_NOT_CONFIRMED, "transaction not confirmed"));
        };
        let already = state.hash_used_by.get(&hash);
        if already.is_some_and(|id| *id != req.challenge.id) {
            return Err(sa_error(sa_codes::MALFORMED_CREDENTIAL, "transaction already used for another challenge"));
        }
        let repeat = already.is_some();
        if tx.chain_id != request.chain_id || tx.token != request.currency {
            return Err(bad_request("transaction is not on the requested chain and token"));
        }
        if tx.to != request.recipient {
            return Err(bad_request("transaction does not pay the recipient"));
        }
        if tx.value != request.amount {
            return Err(bad_request(format!("transaction value {} is not the amount {}", tx.value, request.amount)));
        }
        Self::check_source(&req.source, &request, tx.from)?;
        let receipt = ChargeReceipt {
            method: EVM_METHOD.to_owned(),
            reference: evm::to_hex(hash),
            status: "success".to_owned(),
            timestamp: Self::timestamp(now),
            chain_id: request.chain_id.to_string(),
            challenge_id: req.challenge.id.clone(),
            external_id: None,
        };
        if !repeat {
            state.hash_used_by.insert(hash, req.challenge.id.clone());
            state.charges.push(receipt.clone());
        }
        Ok(receipt)
    }
}

/// `methodDetails.escrowContract` of a session request (the default escrow when absent).
fn request_escrow(raw: &Map<String, Value>) -> Result<Address, SaError> {
    match raw.get("methodDetails").and_then(|d| d.get("escrowContract")) {
        None | Some(Value::Null) => Ok(DEFAULT_ESCROW_CONTRACT),
        Some(Value::String(s)) => {
            evm::parse_address(s).map_err(|e| bad_request(format!("methodDetails.escrowContract: {e}")))
        }
        Some(_) => Err(bad_request("methodDetails.escrowContract must be a string")),
    }
}

/// A channel id: hex, at most 32 bytes, left-padded (as the session intent reads it).
fn parse_channel_id(text: &str) -> Result<B256, SaError> {
    crate::evm::channel::channel_id_from_hex(text).map_err(|e| bad_request(format!("channelId: {e}")))
}

fn parse_u256(text: &str, field: &str) -> Result<U256, SaError> {
    evm::parse_uint256(text).map_err(|e| bad_request(format!("{field}: {e}")))
}

/// A channel deposit: who paid, how much, and the transaction hash when it was paid by hash.
struct Deposit {
    payer: Address,
    value: U256,
    hash: Option<B256>,
}

/// A deposit by hash: new, or a repeat on the same channel (answered with the first receipt).
enum HashDeposit {
    New(Deposit),
    Repeated(SessionReceipt),
}

/// What a session open or top-up funds a channel with: its challenge and its payload's fields.
struct DepositSource<'a> {
    challenge: &'a SaChallengeEcho,
    channel_id: &'a str,
    payload_type: &'a str,
    authorization: Option<&'a TransferAuthorization>,
    hash: Option<&'a str>,
}

impl<'a> DepositSource<'a> {
    fn new(
        challenge: &'a SaChallengeEcho,
        channel_id: &'a str,
        payload_type: &'a str,
        authorization: Option<&'a TransferAuthorization>,
        hash: Option<&'a str>,
    ) -> Self {
        Self { challenge, channel_id, payload_type, authorization, hash }
    }
}

/// A checked session deposit: new, or a repeated hash answered with its first receipt.
enum Funding<'a> {
    New(Box<Funded<'a>>),
    Repeated(SessionReceipt),
}

/// A new deposit that passed the checks, with the locked state and, for a signed deposit, its
/// authorization.
struct Funded<'a> {
    now: u64,
    request: ChargeRequest,
    escrow: Address,
    id: B256,
    state: MutexGuard<'a, State>,
    signed: Option<Parsed>,
    deposit: Deposit,
}

/// The payload type of a deposit made by transaction hash.
const HASH_PAYLOAD_TYPE: &str = "hash";

/// What a settle or close authorizes, parsed.
struct PayeeAuthorization {
    channel_id: B256,
    cumulative: u128,
    nonce: U256,
    deadline: U256,
}

impl EmbeddedSa {
    /// Checks a deposit authorization (open or top-up) against the echo: the token's EIP-712
    /// signature by `from`, `to` = the escrow, value > 0, the validity window. Returns it.
    fn check_deposit(
        &self,
        auth: Option<&TransferAuthorization>,
        payload_type: &str,
        domain: &Eip712Domain,
        escrow: Address,
        now: u64,
    ) -> Result<Parsed, SaError> {
        if !(payload_type.is_empty() || payload_type == crate::okx::sa::TRANSACTION_PAYLOAD_TYPE) {
            // (`hash` deposits are handled by the callers.)
            return Err(bad_request(format!("payload type {payload_type:?} is not supported by the embedded SA")));
        }
        let auth = auth.ok_or_else(|| bad_request("payload.authorization is missing"))?;
        if !is_eip3009(&auth.auth_type) {
            return Err(bad_request(format!("authorization type must be {EIP3009_AUTHORIZATION_TYPE}")));
        }
        let parsed = parse_authorization(auth, "authorization")?;
        if parsed.message.to != escrow {
            return Err(bad_request("authorization.to is not the escrow contract"));
        }
        if parsed.message.value.is_zero() {
            return Err(bad_request("the deposit must be positive"));
        }
        let signed =
            parsed.signature.as_deref().is_some_and(|s| evm::verify_transfer_authorization(domain, &parsed.message, s));
        if !signed {
            return Err(sa_error(sa_codes::INVALID_SIGNATURE, "signature does not match the payer"));
        }
        let now_u = U256::from(now);
        if now_u < parsed.message.validAfter {
            return Err(sa_error(sa_codes::MALFORMED_CREDENTIAL, "authorization not yet valid"));
        }
        if now_u > parsed.message.validBefore {
            return Err(sa_error(sa_codes::MALFORMED_CREDENTIAL, "authorization expired"));
        }
        Ok(parsed)
    }

    fn session_receipt(now: u64, channel: &EscrowChannel, id: B256, reference: String) -> SessionReceipt {
        SessionReceipt {
            method: EVM_METHOD.to_owned(),
            intent: SESSION_INTENT.to_owned(),
            status: "success".to_owned(),
            timestamp: Self::timestamp(now),
            channel_id: evm::to_hex(id),
            chain_id: channel.chain_id.to_string(),
            reference,
            deposit: channel.deposit.to_string(),
        }
    }

    /// Synchronous core of [`SaClient::session_open`]: checks, in order, the echo (an `evm`/
    /// `session` challenge, not expired — 70009) and its request (70000/70001), a `transaction`
    /// payload with an `eip-3009` authorization paying the request's escrow contract, a
    /// 32-byte channel id — equal to [`derive_channel_id`](crate::evm::derive_channel_id)
    /// when a `salt` is given — and `source` (70000); the signature (70004); the validity
    /// window (70003); a new channel (70000); the nonce and balance (70003). Then moves the
    /// deposit payer → escrow and records the channel (payee = the request's recipient).
    pub fn session_open_now(&self, req: &SessionOpenRequest) -> Result<SessionReceipt, SaError> {
        let p = &req.payload;
        let source = DepositSource::new(
            &req.challenge,
            &p.channel_id,
            &p.payload_type,
            p.authorization.as_ref(),
            p.hash.as_deref(),
        );
        let Funded { now, request, escrow, id, mut state, signed, deposit } = match self.session_deposit(&source)? {
            Funding::New(funded) => *funded,
            Funding::Repeated(receipt) => return Ok(receipt),
        };
        let payer = deposit.payer;
        if !p.salt.is_empty() {
            let salt = evm::parse_bytes32(&p.salt).map_err(|e| bad_request(format!("salt: {e}")))?;
            let expected = crate::evm::derive_channel_id(
                payer,
                request.recipient,
                request.currency,
                salt,
                request.chain_id,
                escrow,
            );
            if expected != id {
                return Err(bad_request("channelId does not match (payer, payee, token, salt, chainId, escrow)"));
            }
        }
        Self::check_source(&req.source, &request, payer)?;
        let authorized_signer = match p.authorized_signer.as_deref().filter(|s| !s.is_empty()) {
            Some(s) => evm::parse_address(s).map_err(|e| bad_request(format!("authorizedSigner: {e}")))?,
            None => Address::ZERO,
        };
        let channel = EscrowChannel {
            chain_id: request.chain_id,
            escrow,
            token: request.currency,
            payer,
            payee: request.recipient,
            authorized_signer: if authorized_signer == Address::ZERO { payer } else { authorized_signer },
            deposit: deposit.value,
            settled: U256::ZERO,
            closed: false,
        };
        if state.channels.contains_key(&id) {
            return Err(bad_request("channel already exists"));
        }
        let reference = Self::move_deposit(&mut state, signed.as_ref(), &deposit, &request)?;
        let receipt = Self::session_receipt(now, &channel, id, reference);
        if let Some(hash) = deposit.hash {
            state.deposit_hashes.insert(hash, (id, receipt.clone()));
        }
        state.channels.insert(id, channel);
        Ok(receipt)
    }

    /// The checks a session open and a top-up share: the echo (a `session` challenge, not
    /// expired) and its escrow, the channel id, and the deposit — a signed EIP-3009
    /// authorization to the escrow (checked before the state is locked) or a recorded transfer
    /// by `hash`. Returns them with the locked state; or, for a hash this channel already used,
    /// its first receipt.
    fn session_deposit(&self, source: &DepositSource<'_>) -> Result<Funding<'_>, SaError> {
        let now = self.now();
        let (request, domain, raw) = self.check_echo(source.challenge, now, SESSION_INTENT)?;
        let escrow = request_escrow(&raw)?;
        let id = parse_channel_id(source.channel_id)?;
        let signed = if source.payload_type == HASH_PAYLOAD_TYPE {
            None
        } else {
            Some(self.check_deposit(source.authorization, source.payload_type, &domain, escrow, now)?)
        };
        let state = self.lock();
        let deposit = match &signed {
            Some(parsed) => Deposit { payer: parsed.message.from, value: parsed.message.value, hash: None },
            None => match Self::hash_deposit(&state, source.hash, &request, escrow, id)? {
                HashDeposit::New(d) => d,
                HashDeposit::Repeated(receipt) => return Ok(Funding::Repeated(receipt)),
            },
        };
        Ok(Funding::New(Box::new(Funded { now, request, escrow, id, state, signed, deposit })))
    }

    /// Moves a signed deposit payer → escrow in the ledger; the receipt's reference is that
    /// transfer's transaction hash, or the recorded hash of a deposit by hash.
    fn move_deposit(
        state: &mut State,
        signed: Option<&Parsed>,
        deposit: &Deposit,
        request: &ChargeRequest,
    ) -> Result<String, SaError> {
        match (signed, deposit.hash) {
            (Some(parsed), _) => {
                state
                    .ledger
                    .apply_authorizations(request.currency, std::slice::from_ref(&parsed.message))
                    .map_err(|e| sa_error(sa_codes::MALFORMED_CREDENTIAL, e.to_string()))?;
                Ok(transaction_hash(request.chain_id, request.currency, deposit.payer, parsed.message.nonce))
            }
            (None, Some(hash)) => Ok(evm::to_hex(hash)),
            (None, None) => Err(bad_request("payload.hash is missing")),
        }
    }

    /// A deposit by transaction hash: a recorded transfer on the request's chain and token to
    /// the escrow (70007 when unknown, 70000 otherwise); a hash already used for another
    /// channel is 70003, for this channel the first receipt again.
    fn hash_deposit(
        state: &State,
        hash: Option<&str>,
        request: &ChargeRequest,
        escrow: Address,
        channel: B256,
    ) -> Result<HashDeposit, SaError> {
        let hash = hash.ok_or_else(|| bad_request("payload.hash is missing"))?;
        let hash = evm::parse_bytes32(hash).map_err(|e| bad_request(format!("payload.hash: {e}")))?;
        if let Some((funded, receipt)) = state.deposit_hashes.get(&hash) {
            if *funded != channel {
                return Err(sa_error(sa_codes::MALFORMED_CREDENTIAL, "transaction already used for another channel"));
            }
            return Ok(HashDeposit::Repeated(receipt.clone()));
        }
        let Some(tx) = state.transactions.get(&hash) else {
            return Err(sa_error(sa_codes::TX_NOT_CONFIRMED, "transaction not confirmed"));
        };
        if tx.chain_id != request.chain_id || tx.token != request.currency {
            return Err(bad_request("transaction is not on the requested chain and token"));
        }
        if tx.to != escrow {
            return Err(bad_request("transaction does not pay the escrow contract"));
        }
        if tx.value.is_zero() {
            return Err(bad_request("the deposit must be positive"));
        }
        Ok(HashDeposit::New(Deposit { payer: tx.from, value: tx.value, hash: Some(hash) }))
    }

    /// Synchronous core of [`SaClient::session_top_up`]: the echo and deposit checks of
    /// [`Self::session_open_now`], a known (70010), open (70008) channel on the same token and
    /// escrow, and `additionalDeposit` equal to the deposit's value (70000); then moves
    /// it payer → escrow (not for a recorded `hash`) and raises the deposit. The receipt's
    /// `deposit` is the channel's new total.
    pub fn session_top_up_now(&self, req: &SessionTopUpRequest) -> Result<SessionReceipt, SaError> {
        let p = &req.payload;
        let source = DepositSource::new(
            &req.challenge,
            &p.channel_id,
            &p.payload_type,
            p.authorization.as_ref(),
            p.hash.as_deref(),
        );
        let Funded { now, request, escrow, id, mut state, signed, deposit } = match self.session_deposit(&source)? {
            Funding::New(funded) => *funded,
            Funding::Repeated(receipt) => return Ok(receipt),
        };
        if parse_u256(&p.additional_deposit, "additionalDeposit")? != deposit.value {
            return Err(bad_request("additionalDeposit is not the deposit's value"));
        }
        Self::check_source(&req.source, &request, deposit.payer)?;
        let channel =
            state.channels.get(&id).ok_or_else(|| sa_error(sa_codes::CHANNEL_NOT_FOUND, "channel not found"))?;
        if channel.closed {
            return Err(sa_error(sa_codes::CHANNEL_CLOSED, "channel is closed"));
        }
        if channel.token != request.currency || channel.escrow != escrow || channel.chain_id != request.chain_id {
            return Err(bad_request("the top-up is not in the channel's token, escrow and chain"));
        }
        let new_deposit = channel.deposit.checked_add(deposit.value).ok_or_else(|| bad_request("overflow"))?;
        let reference = Self::move_deposit(&mut state, signed.as_ref(), &deposit, &request)?;
        let channel = state.channels.get_mut(&id).ok_or_else(|| sa_error(sa_codes::CHANNEL_NOT_FOUND, "gone"))?;
        channel.deposit = new_deposit;
        let channel = channel.clone();
        let receipt = Self::session_receipt(now, &channel, id, reference);
        if let Some(hash) = deposit.hash {
            state.deposit_hashes.insert(hash, (id, receipt.clone()));
        }
        Ok(receipt)
    }

    fn parse_payee_authorization(
        channel_id: &str,
        cumulative: &str,
        nonce: &str,
        deadline: &str,
    ) -> Result<PayeeAuthorization, SaError> {
        let cumulative = parse_u256(cumulative, "cumulativeAmount")?;
        Ok(PayeeAuthorization {
            channel_id: parse_channel_id(channel_id)?,
            cumulative: u128::try_from(cumulative).map_err(|_| bad_request("cumulativeAmount exceeds uint128"))?,
            nonce: parse_u256(nonce, "nonce")?,
            deadline: parse_u256(deadline, "deadline")?,
        })
    }

    /// The checks shared by settle and close: a known (70010), open (70008) channel; the amount
    /// within the deposit (70012); a deadline not past (70003); the payee's signature over
    /// `digest` (70004); the payer's (or authorized signer's) voucher signature over the amount
    /// (70004; none needed for 0). Returns the channel.
    fn check_payee_authorization(
        state: &State,
        a: &PayeeAuthorization,
        now: u64,
        digest: impl Fn(&ChannelDomain) -> B256,
        payee_signature: &str,
        voucher_signature: &str,
    ) -> Result<EscrowChannel, SaError> {
        let channel = state
            .channels
            .get(&a.channel_id)
            .ok_or_else(|| sa_error(sa_codes::CHANNEL_NOT_FOUND, "channel not found"))?;
        if channel.closed {
            return Err(sa_error(sa_codes::CHANNEL_CLOSED, "channel is closed"));
        }
        if U256::from(a.cumulative) > channel.deposit {
            return Err(sa_error(sa_codes::AMOUNT_EXCEEDS_DEPOSIT, "cumulativeAmount exceeds the deposit"));
        }
        if a.deadline < U256::from(now) {
            return Err(sa_error(sa_codes::MALFORMED_CREDENTIAL, "authorization expired"));
        }
        let domain = ChannelDomain::new(channel.chain_id, channel.escrow);
        if recover_channel_signer(&digest(&domain), payee_signature).ok() != Some(channel.payee) {
            return Err(sa_error(sa_codes::INVALID_SIGNATURE, "payee signature does not match the payee"));
        }
        if a.cumulative > 0
            && verify_voucher_signature(
                &domain,
                a.channel_id,
                a.cumulative,
                voucher_signature,
                channel.authorized_signer,
            )
            .is_err()
        {
            return Err(sa_error(sa_codes::INVALID_SIGNATURE, "voucher signature does not match the payer"));
        }
        Ok(channel.clone())
    }

    /// Moves `value` out of the escrow's account (a synthetic, nonce-unique transfer); returns
    /// the pseudo transaction hash.
    fn escrow_payout(state: &mut State, channel: &EscrowChannel, to: Address, value: U256) -> Result<String, SaError> {
        state.payouts += 1;
        let nonce = keccak256([channel.escrow.as_slice(), &state.payouts.to_be_bytes()].concat());
        let reference = transaction_hash(channel.chain_id, channel.token, channel.escrow, nonce);
        if value.is_zero() {
            return Ok(reference);
        }
        let transfer = TransferWithAuthorization {
            from: channel.escrow,
            to,
            value,
            validAfter: U256::ZERO,
            validBefore: U256::MAX,
            nonce,
        };
        state
            .ledger
            .apply_authorizations(channel.token, &[transfer])
            .map_err(|e| sa_error(sa_codes::TX_NOT_CONFIRMED, format!("escrow payout failed: {e}")))?;
        Ok(reference)
    }

    /// Synchronous core of [`SaClient::session_settle`]: a known (70010), open (70008)
    /// channel; `cumulativeAmount` within the deposit (70012); a deadline not past (70003); the
    /// payee's `SettleAuthorization` signature and the payer's (or authorized signer's) voucher
    /// signature (70004). Then pays the payee `cumulativeAmount − settled` (nothing when not
    /// above what was settled); the channel stays open.
    pub fn session_settle_now(&self, req: &SessionSettleRequest) -> Result<SessionReceipt, SaError> {
        let now = self.now();
        let p = &req.payload;
        let a = Self::parse_payee_authorization(&p.channel_id, &p.cumulative_amount, &p.nonce, &p.deadline)?;
        let mut state = self.lock();
        let digest =
            |d: &ChannelDomain| settle_authorization_digest(d, a.channel_id, a.cumulative, a.nonce, a.deadline);
        let channel =
            Self::check_payee_authorization(&state, &a, now, digest, &p.payee_signature, &p.voucher_signature)?;
        let cumulative = U256::from(a.cumulative);
        let payout = cumulative.saturating_sub(channel.settled);
        let reference = Self::escrow_payout(&mut state, &channel, channel.payee, payout)?;
        let stored =
            state.channels.get_mut(&a.channel_id).ok_or_else(|| sa_error(sa_codes::CHANNEL_NOT_FOUND, "gone"))?;
        stored.settled = stored.settled.max(cumulative);
        let channel = stored.clone();
        Ok(Self::session_receipt(now, &channel, a.channel_id, reference))
    }

    /// Synchronous core of [`SaClient::session_close`]: the checks of
    /// [`Self::session_settle_now`] with a `CloseAuthorization`, then pays the payee `cumulativeAmount − settled`, refunds
    /// `deposit − max(cumulativeAmount, settled)` to the payer and closes the channel.
    pub fn session_close_now(&self, req: &SessionCloseRequest) -> Result<SessionReceipt, SaError> {
        let now = self.now();
        let p = &req.payload;
        let a = Self::parse_payee_authorization(&p.channel_id, &p.cumulative_amount, &p.nonce, &p.deadline)?;
        let mut state = self.lock();
        let digest = |d: &ChannelDomain| close_authorization_digest(d, a.channel_id, a.cumulative, a.nonce, a.deadline);
        let channel =
            Self::check_payee_authorization(&state, &a, now, digest, &p.payee_signature, &p.voucher_signature)?;
        let final_amount = U256::from(a.cumulative).max(channel.settled);
        let payout = final_amount - channel.settled;
        let refund = channel.deposit.saturating_sub(final_amount);
        // Check both transfers fit before moving anything (the escrow holds every deposit).
        if state.ledger.balance_of(channel.token, channel.escrow) < payout + refund {
            return Err(sa_error(sa_codes::TX_NOT_CONFIRMED, "escrow balance does not cover the channel"));
        }
        let reference = Self::escrow_payout(&mut state, &channel, channel.payee, payout)?;
        Self::escrow_payout(&mut state, &channel, channel.payer, refund)?;
        let stored =
            state.channels.get_mut(&a.channel_id).ok_or_else(|| sa_error(sa_codes::CHANNEL_NOT_FOUND, "gone"))?;
        stored.settled = final_amount;
        stored.closed = true;
        let channel = stored.clone();
        Ok(Self::session_receipt(now, &channel, a.channel_id, reference))
    }

    /// Synchronous core of [`SaClient::session_status`]: `deposit`, `cumulativeAmount` and
    /// `settledOnChain` (what was paid out to the payee), `remainingBalance` (deposit − settled;
    /// 0 once closed), `sessionStatus` `OPEN` or `CLOSED`. Unknown channel ⇒ 70010.
    pub fn session_status_now(&self, channel_id: &str) -> Result<SessionStatus, SaError> {
        let id = parse_channel_id(channel_id)?;
        let state = self.lock();
        let c = state.channels.get(&id).ok_or_else(|| sa_error(sa_codes::CHANNEL_NOT_FOUND, "channel not found"))?;
        Ok(SessionStatus {
            channel_id: evm::to_hex(id),
            payer: evm::checksum(&c.payer),
            payee: evm::checksum(&c.payee),
            token: evm::to_hex(c.token),
            deposit: c.deposit.to_string(),
            cumulative_amount: c.settled.to_string(),
            settled_on_chain: c.settled.to_string(),
            remaining_balance: if c.closed { "0".to_owned() } else { (c.deposit - c.settled).to_string() },
            session_status: if c.closed { "CLOSED" } else { "OPEN" }.to_owned(),
        })
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
mod tests {
    use super::*;
    use crate::mpp::{Challenge, Credential, MppChargeClient, parse_www_authenticate};
    use crate::okx::sa::{ChargeHashPayload, ChargeTransactionPayload, EvmPaymentError};
    use serde_json::json;

    const KEY: &str = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";
    const PAYER: &str = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266";
    const USDT0: &str = "0x779ded0c9e1022225f8e0630b35a9b54be713736";
    const PAY_TO: &str = "0x1111111111111111111111111111111111111111";
    const NOW: u64 = 1_774_864_800; // 2026-03-30T10:00:00Z

    fn challenge(amount: &str, expires: Option<&str>) -> Credential {
        let request = json!({
            "amount": amount, "currency": USDT0, "recipient": PAY_TO,
            "methodDetails": {"chainId": 196, "feePayer": false}
        });
        let c = Challenge::new(
            "s",
            "api.example.com",
            "evm",
            "charge",
            request.as_object().unwrap().clone(),
            expires.map(Into::into),
            None,
            None,
            None,
        );
        let parsed = parse_www_authenticate(&[&c.to_www_authenticate().unwrap()]).unwrap().remove(0);
        MppChargeClient::new(KEY.parse().unwrap()).with_clock(|| NOW).credential_for(&parsed).unwrap()
    }

    fn echo(c: &Credential) -> SaChallengeEcho {
        let e = &c.challenge;
        SaChallengeEcho {
            id: e.id.clone(),
            realm: e.realm.clone(),
            method: e.method.clone(),
            intent: e.intent.clone(),
            request: e.request.clone(),
            expires: e.expires.clone(),
        }
    }

    fn settle_request(c: &Credential) -> ChargeSettleRequest {
        let authorization: ChargeAuthorization = serde_json::from_value(c.payload["authorization"].clone()).unwrap();
        ChargeSettleRequest {
            challenge: echo(c),
            payload: ChargeTransactionPayload { authorization },
            source: c.source.clone().unwrap_or_default(),
        }
    }

    fn hash_request(c: &Credential, hash: &str) -> ChargeVerifyHashRequest {
        ChargeVerifyHashRequest {
            challenge: echo(c),
            payload: ChargeHashPayload { hash: hash.to_owned() },
            source: c.source.clone().unwrap_or_default(),
        }
    }

    fn code(r: Result<ChargeReceipt, SaError>) -> i64 {
        match r {
            Err(SaError::Api { code, .. }) => code,
            other => panic!("expected an SA error, got {other:?}"),
        }
    }

    fn sa() -> EmbeddedSa {
        EmbeddedSa::new().with_clock(|| NOW).with_registry(NetworkRegistry::x_layer())
    }

    #[tokio::test]
    async fn unknown_channels() {
        let sa = sa();
        let e = sa.session_status("0x01").await.unwrap_err();
        assert!(matches!(e, SaError::Api { code: 70010, error: EvmPaymentError::ChannelNotFound(_) }));
        assert_eq!(e.status(), 410);
        assert!(matches!(sa.session_status("zz").await, Err(SaError::Api { code: 70000, .. })));
        assert!(sa.session_open(&SessionOpenRequest::default()).await.is_err());
        assert!(sa.session_top_up(&SessionTopUpRequest::default()).await.is_err());
        assert!(sa.session_settle(&SessionSettleRequest::default()).await.is_err());
        assert!(sa.session_close(&SessionCloseRequest::default()).await.is_err());
    }

    #[test]
    fn settle_then_its_hash_is_bound_to_the_challenge() {
        let sa = sa().with_faucet(U256::from(100));
        let c = challenge("40", Some("2026-03-30T10:05:00Z"));
        let receipt = sa.settle_now(&settle_request(&c)).unwrap();
        assert_eq!(receipt.timestamp, "2026-03-30T10:00:00Z");
        assert_eq!(sa.balance(USDT0, PAYER), U256::from(60));
        assert_eq!(sa.balance(USDT0, PAY_TO), U256::from(140));
        // The settlement's own hash verifies for the same challenge (no second charge) …
        let again = sa.verify_hash_now(&hash_request(&c, &receipt.reference)).unwrap();
        assert_eq!(again.reference, receipt.reference);
        assert_eq!(sa.charge_count(), 1);
        // … but not for another one.
        let other = challenge("40", Some("2026-03-30T10:04:00Z"));
        assert_eq!(code(sa.verify_hash_now(&hash_request(&other, &receipt.reference))), 70003);
    }

    #[test]
    fn echo_and_source_checks() {
        let sa = sa().with_faucet(U256::from(100));
        let c = challenge("1", Some("2026-03-30T10:05:00Z"));
        let mut req = settle_request(&c);
        req.challenge.intent = "session".into();
        assert_eq!(code(sa.settle_now(&req)), 70009);
        let mut req = settle_request(&c);
        req.challenge.id.clear();
        assert_eq!(code(sa.settle_now(&req)), 70009);
        let mut req = settle_request(&c);
        req.challenge.request = "!!".into();
        assert_eq!(code(sa.settle_now(&req)), 70009);
        let late = sa.clone().with_clock(|| NOW + 301);
        assert_eq!(code(late.settle_now(&settle_request(&c))), 70009);
        let mut req = settle_request(&c);
        req.source = format!("did:pkh:eip155:196:{PAY_TO}");
        assert_eq!(code(sa.settle_now(&req)), 70000);
        let mut req = settle_request(&c);
        req.source = "did:web:example.com".into();
        assert_eq!(code(sa.settle_now(&req)), 70000);
        let mut req = settle_request(&c);
        req.payload.authorization.auth_type = "permit2".into();
        assert_eq!(code(sa.settle_now(&req)), 70000);
        let mut req = settle_request(&c);
        req.payload.authorization.signature = None;
        assert_eq!(code(sa.settle_now(&req)), 70004);
        // Unknown token on the chain: 70001 (InternalSA).
        let unknown = EmbeddedSa::new().with_clock(|| NOW).with_registry(NetworkRegistry::empty());
        let e = unknown.settle_now(&settle_request(&c)).unwrap_err();
        assert!(matches!(e, SaError::Api { code: 70001, error: EvmPaymentError::InternalSA(_) }));
        // Nothing was charged by any of these.
        assert_eq!(sa.charge_count(), 0);
        // An empty source is accepted.
        let mut req = settle_request(&c);
        req.source.clear();
        assert!(sa.settle_now(&req).is_ok());
    }

    #[test]
    fn recorded_transfers() {
        let sa = sa();
        assert!(sa.record_transfer("0x12", PAYER, PAY_TO, USDT0, U256::from(1)).is_err());
        let hash = format!("0x{}", "ab".repeat(32));
        let c = challenge("5", None);
        assert_eq!(code(sa.verify_hash_now(&hash_request(&c, &hash))), 70007);
        sa.record_transfer_on(1, &hash, PAYER, PAY_TO, USDT0, U256::from(5)).unwrap();
        assert_eq!(code(sa.verify_hash_now(&hash_request(&c, &hash))), 70000);
        sa.record_transfer(&hash, PAYER, PAY_TO, USDT0, U256::from(5)).unwrap();
        assert_eq!(code(sa.verify_hash_now(&hash_request(&c, "0xnothex"))), 70000);
        let r = sa.verify_hash_now(&hash_request(&c, &hash.to_uppercase().replacen('X', "x", 1))).unwrap();
        assert_eq!((r.reference.as_str(), r.chain_id.as_str()), (hash.as_str(), "196"));
        assert_eq!(sa.charges(), vec![r]);
    }

    #[test]
    fn concurrent_settles_of_one_authorization_settle_once() {
        let sa = sa();
        sa.fund(USDT0, PAYER, U256::from(1_000)).unwrap();
        let req = settle_request(&challenge("100", None));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (sa, req) = (sa.clone(), req.clone());
                std::thread::spawn(move || sa.settle_now(&req).is_ok())
            })
            .collect();
        let wins = threads.into_iter().map(|t| t.join().unwrap()).filter(|&ok| ok).count();
        assert_eq!(wins, 1);
        assert_eq!(sa.balance(USDT0, PAYER), U256::from(900));
    }

    mod sessions {
        use super::*;
        use crate::evm::channel::{ChannelDomain, sign_settle_authorization, sign_voucher};
        use crate::evm::derive_channel_id;
        use crate::evm::{Signer, signer_from_hex};
        use crate::mpp::SessionClient;
        use crate::okx::sa::SessionOpenPayload;

        const PAYEE_KEY: &str = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d";
        const PAYEE: &str = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8";
        const ESCROW: &str = "0x5E550002e64FaF79B41D89fE8439eEb1be66CE3b";

        fn parsed(intent: &str) -> crate::mpp::ParsedChallenge {
            let request = json!({
                "amount": "1000", "currency": USDT0, "recipient": PAYEE,
                "methodDetails": {"chainId": 196, "escrowContract": ESCROW, "feePayer": false, "minVoucherDelta": "0"}
            });
            let c = Challenge::new(
                "s",
                "api.example.com",
                "evm",
                intent,
                request.as_object().unwrap().clone(),
                Some("2026-03-30T10:05:00Z".into()),
                None,
                None,
                None,
            );
            parse_www_authenticate(&[&c.to_www_authenticate().unwrap()]).unwrap().remove(0)
        }

        fn open_request(header: &str) -> SessionOpenRequest {
            let c = Credential::from_authorization_header(header).unwrap();
            let p = &c.payload;
            SessionOpenRequest {
                challenge: echo(&c),
                payload: SessionOpenPayload {
                    channel_id: p["channelId"].as_str().unwrap().to_owned(),
                    authorization: Some(serde_json::from_value(p["authorization"].clone()).unwrap()),
                    salt: p["salt"].as_str().unwrap().to_owned(),
                    ..SessionOpenPayload::default()
                },
                source: c.source.clone().unwrap_or_default(),
            }
        }

        fn code<T: fmt::Debug>(r: Result<T, SaError>) -> i64 {
            match r {
                Err(SaError::Api { code, .. }) => code,
                other => panic!("expected an SA error, got {other:?}"),
            }
        }

        fn settle(id: B256, cumulative: u128, payee: &dyn Signer, payer: &dyn Signer) -> SessionSettleRequest {
            let domain = ChannelDomain::default();
            SessionSettleRequest {
                payload: crate::okx::sa::SessionSettlePayload {
                    channel_id: evm::to_hex(id),
                    cumulative_amount: cumulative.to_string(),
                    voucher_signature: sign_voucher(payer, &domain, id, cumulative).unwrap(),
                    payee_signature: sign_settle_authorization(
                        payee,
                        &domain,
                        id,
                        cumulative,
                        U256::from(1),
                        U256::MAX,
                    )
                    .unwrap(),
                    nonce: "1".into(),
                    deadline: U256::MAX.to_string(),
                },
            }
        }

        #[test]
        fn escrow_checks_and_codes() {
            let sa = sa();
            sa.fund(USDT0, PAYER, U256::from(10_000)).unwrap();
            let payer = signer_from_hex(KEY).unwrap();
            let payee = signer_from_hex(PAYEE_KEY).unwrap();
            let client = SessionClient::new(payer.clone()).with_clock(|| NOW).with_registry(NetworkRegistry::x_layer());
            let c = parsed("session");
            let (channel, header) = client.open_header(&c, U256::from(5_000)).unwrap();
            let good = open_request(&header);
            let id = evm::parse_bytes32(&channel).unwrap();
            let salt = evm::parse_bytes32(&good.payload.salt).unwrap();
            let (pay_to, escrow) = (evm::parse_address(PAYEE).unwrap(), evm::parse_address(ESCROW).unwrap());
            let usdt0 = evm::parse_address(USDT0).unwrap();
            assert_eq!(derive_channel_id(payer.address(), pay_to, usdt0, salt, 196, escrow), id);

            // Refusals, nothing moved.
            let mut r = good.clone();
            r.challenge.intent = "charge".into();
            assert_eq!(code(sa.session_open_now(&r)), 70009);
            let mut r = good.clone();
            r.payload.salt = evm::to_hex(B256::repeat_byte(9));
            assert_eq!(code(sa.session_open_now(&r)), 70000);
            let mut r = good.clone();
            r.payload.authorization.as_mut().unwrap().value = "4999".into();
            assert_eq!(code(sa.session_open_now(&r)), 70004);
            let mut r = good.clone();
            r.payload.authorization.as_mut().unwrap().to = PAYEE.into();
            assert_eq!(code(sa.session_open_now(&r)), 70000);
            assert_eq!(sa.balance(USDT0, PAYER), U256::from(10_000));

            let receipt = sa.session_open_now(&good).unwrap();
            assert_eq!((receipt.channel_id.as_str(), receipt.deposit.as_str()), (channel.as_str(), "5000"));
            assert_eq!(sa.balance(USDT0, ESCROW), U256::from(5_000));
            assert_eq!(code(sa.session_open_now(&good)), 70000, "exists (and the nonce is used)");

            // Settle: amount above the deposit, wrong payee, wrong voucher signer.
            assert_eq!(code(sa.session_settle_now(&settle(id, 5_001, &payee, &payer))), 70012);
            assert_eq!(code(sa.session_settle_now(&settle(id, 100, &payer, &payer))), 70004);
            assert_eq!(code(sa.session_settle_now(&settle(id, 100, &payee, &payee))), 70004);
            assert_eq!(code(sa.session_settle_now(&settle(B256::repeat_byte(1), 1, &payee, &payer))), 70010);
            sa.session_settle_now(&settle(id, 300, &payee, &payer)).unwrap();
            sa.session_settle_now(&settle(id, 300, &payee, &payer)).unwrap();
            assert_eq!(sa.balance(USDT0, PAYEE), U256::from(300), "a repeated settle pays nothing more");
            let status = sa.session_status_now(&channel).unwrap();
            assert_eq!((status.settled_on_chain.as_str(), status.remaining_balance.as_str()), ("300", "4700"));
        }

        #[test]
        fn hash_deposits_fund_one_channel_and_repeat_idempotently() {
            let sa = sa();
            let c = parsed("session");
            let echo = SaChallengeEcho {
                id: c.id.clone(),
                realm: c.realm.clone(),
                method: c.method.clone(),
                intent: c.intent.clone(),
                request: c.request_b64.clone(),
                expires: c.expires.clone(),
            };
            let open = |channel: B256, hash: &str| SessionOpenRequest {
                challenge: echo.clone(),
                payload: SessionOpenPayload {
                    payload_type: "hash".into(),
                    channel_id: evm::to_hex(channel),
                    hash: Some(hash.into()),
                    ..SessionOpenPayload::default()
                },
                source: String::new(),
            };
            let (a, b) = (B256::repeat_byte(0xa1), B256::repeat_byte(0xb2));
            let unknown = evm::to_hex(B256::repeat_byte(0x99));
            assert_eq!(code(sa.session_open_now(&open(a, &unknown))), 70007, "unknown transaction");
            let to_payee = evm::to_hex(B256::repeat_byte(0x98));
            sa.record_transfer(&to_payee, PAYER, PAYEE, USDT0, U256::from(700)).unwrap();
            assert_eq!(code(sa.session_open_now(&open(a, &to_payee))), 70000, "not paid to the escrow");
            let hash = evm::to_hex(B256::repeat_byte(0x97));
            sa.record_transfer(&hash, PAYER, ESCROW, USDT0, U256::from(700)).unwrap();
            let first = sa.session_open_now(&open(a, &hash)).unwrap();
            assert_eq!((first.deposit.as_str(), first.reference.as_str()), ("700", hash.as_str()));
            assert_eq!(sa.session_status_now(&evm::to_hex(a)).unwrap().payer, PAYER);
            assert_eq!(sa.session_open_now(&open(a, &hash)).unwrap(), first, "idempotent for the same channel");
            assert_eq!(code(sa.session_open_now(&open(b, &hash))), 70003, "one transaction funds one channel");
        }
    }
}
