//! The `session` intent of the `evm` method (OKX's `mpp_evm.SessionIntent`, wire facts
//! §9.4-§9.6): pay-as-you-go over an escrowed payment channel.
//!
//! The buyer opens a channel with a deposit held by the escrow contract (`open`, through the
//! Settlement Agent), then pays each request with an off-chain **voucher**: an EIP-712
//! signature over the channel's *cumulative* amount. The seller keeps the highest voucher in a
//! [`ChannelStore`] and charges each request against it; it settles on chain when it wants
//! (`settle`) and when the channel ends (`close`). Deposits can be increased (`topUp`).
//!
//! # Actions (`payload.action`)
//!
//! | action | SA call | answer |
//! |---|---|---|
//! | `open` | `session/open` | management JSON (HTTP 200, handler not run) |
//! | `topUp` | `session/topUp` | management JSON |
//! | `voucher` | **none** (hot path) | the handler runs; `Payment-Receipt` |
//! | `settle` | `session/settle` | management JSON (needs the highest voucher) |
//! | `close` | `session/close` | management JSON |
//!
//! Anything else is `InvalidPayloadError` (402). Every management action answers
//! `{"status":"ok","receipt":{"id":<challenge id>,"status":"success","method":"evm",
//! "intent":"session","settlement":<base64url, no padding, of the compact JSON
//! {"channelId","cumulativeAmount","escrowContract","status","reference"}>}}` — byte for byte
//! what OKX's Python `respond()` builds ([`SessionResult`]).
//!
//! # The receipt of a served voucher
//!
//! `Payment-Receipt` of a request paid by a voucher: `status` `success`, `timestamp` now,
//! `reference` = the channel id, `method` `evm`, no `externalId`, and `extra`:
//!
//! * `intent` — `session`;
//! * `channelId` — the channel;
//! * `cumulativeAmount` — the channel's highest voucher after this request (decimal);
//! * `reserved` — the price reserved for this request (committed when the handler succeeds);
//! * `remainingBalance` — `highest − spent − reserved` right after this reservation: what the
//!   buyer's vouchers still cover without signing a higher one;
//! * `deposit` — the channel's deposit.
//!
//! # Decisions (where pay402 differs from OKX's Python SDK)
//!
//! * **Cross-process correctness.** Python serialises a channel's actions with one
//!   `asyncio.Lock` per channel (one process only). Here every read-modify-write of a channel
//!   is one [`ChannelStore::update`] compare-and-swap, so several workers or hosts may share a
//!   [`FileStore`](super::store::FileStore) or a Redis store.
//! * **Reserve → commit.** A voucher does not deduct the price at once: it *reserves* it
//!   (`reserved += cost`, in the same compare-and-swap that accepts the voucher). The
//!   coordinator commits the reservation when the handler answered below 400 (`spent += cost`,
//!   `units += 1`) and releases it otherwise, so a failing handler is never charged.
//! * **Price.** [`SessionIntent::per_request_cost`] when set (Python's `per_request_cost`),
//!   else the route's price (the challenge `amount`, which is what OKX's Rust SDK charges).
//!   A price of 0 reserves nothing.
//! * **Replays are charged once per challenge** (fixes Python's §12.4 double charge, where a
//!   replayed voucher is charged again every time). A *replay* is a voucher whose amount and
//!   signature equal the stored highest voucher. Before anything is reserved, the key
//!   `mpp:voucher:{channel}:{challenge id}:{amount}` is recorded in the
//!   [`ReplayStore`] with an atomic insert-if-absent. A replay whose key is already recorded is
//!   refused (402 `InvalidPayloadError` "voucher replayed") and charged nothing; a replay under
//!   a challenge id not yet used for that voucher is charged once, from the surplus
//!   (`highest − spent − reserved`) of earlier, larger vouchers. A refused voucher (or a
//!   released reservation) forgets its key again, so a retry is possible.
//! * **Close** marks the channel (`closeRequestedAt`) before calling the SA, so no voucher is
//!   accepted while it is being closed; on a definite SA refusal the mark is removed, on an
//!   unknown outcome it stays (fail closed; the merchant can retry [`SessionIntent::close_channel`]).
//! * Open checks locally that a deposit authorization pays the escrow contract, verifies an
//!   initial voucher *before* calling the SA, and refuses an SA receipt naming another channel.
//! * **The deposit is the SA's** (Python trusts the buyer's `deposit`). The SA receipt of
//!   `open` and `topUp` must name the channel and carry `deposit` (the channel's total
//!   escrowed deposit); otherwise the action fails closed and nothing is counted. An `open`
//!   whose `deposit` or `authorization.value` differs from it (or from each other) is refused,
//!   and so is an initial voucher above it. A `topUp` counts the SA-reported total, which must
//!   include the top-up on top of the deposit counted before; each deposit transaction (`hash`,
//!   or the authorization's payer and nonce) counts at most once per channel
//!   ([`TOP_UP_KEY_TTL_SECONDS`]).
//! * **The payer is the depositor.** An `open` whose `source` names another address than
//!   `authorization.from` is refused; a deposit by `hash` is recorded only when the SA's
//!   `session/status` names the same payer.
//! * **Channels are bound to their terms.** A voucher, `topUp`, `settle` or `close` is
//!   accepted only on a route whose `currency`, `recipient`, `methodDetails.chainId` and
//!   `methodDetails.escrowContract` are the channel's token, payee, chain and escrow. The payee
//!   recorded at `open` is the challenge's `recipient`.
//! * **A buyer's `settle` needs the channel's highest voucher**, signed by the channel's signer,
//!   and settles each highest voucher at most once (Python settles any `channelId` for anyone).
//! * Channel ids are normalised to lower-case `0x` + 64 hex digits (store key and SA bodies).

use super::credential::{ChallengeEcho, Credential, payer_from_did};
use super::encoding::b64url_encode;
use super::method::{PayError, PendingCharge, SessionGrant, SessionHandler};
use super::receipt::Receipt;
use super::store::{ChannelState, ChannelStore, InMemoryChannelStore, StoreError, UpdateError, UpdateOutcome};
use super::wire::{EVM_METHOD, SESSION_INTENT};
use crate::chain::X_LAYER_CHAIN_ID;
use crate::evm::channel::{
    ChannelDomain, ChannelSignatureError, DEFAULT_DEADLINE, DEFAULT_DOMAIN_NAME, DEFAULT_DOMAIN_VERSION,
    DEFAULT_ESCROW_CONTRACT, NonceProvider, RandomNonceProvider, channel_id_from_hex, sign_close_authorization,
    sign_settle_authorization, verify_voucher_signature,
};
use crate::evm::{self, Address, B256, Signer, U256};
use crate::okx::sa::{
    EvmPaymentError, SaChallengeEcho, SaClient, SaError, SessionClosePayload, SessionCloseRequest, SessionOpenPayload,
    SessionOpenRequest, SessionReceipt, SessionSettlePayload, SessionSettleRequest, SessionTopUpPayload,
    SessionTopUpRequest, TransferAuthorization,
};
use crate::replay::{InMemoryReplayStore, ReplayStore};
use serde_json::{Map, Value};
use std::fmt;
use std::sync::Arc;

/// Status of an open channel in action results.
pub const STATUS_OPEN: &str = "open";
/// Status of a closed channel in action results.
pub const STATUS_CLOSED: &str = "closed";
/// How long a voucher replay key is kept when the challenge has no `expires` (one day).
pub const VOUCHER_KEY_TTL_SECONDS: u64 = 86_400;
/// The shortest life of a voucher replay key (5 minutes), also for already expired challenges.
pub const VOUCHER_KEY_MIN_TTL_SECONDS: u64 = 300;
/// How long a counted top-up deposit (by transaction hash, or by the authorization's payer and
/// nonce) is remembered per channel in the replay store (30 days). After that the SA-reported
/// total still refuses a duplicate that adds nothing.
pub const TOP_UP_KEY_TTL_SECONDS: u64 = 30 * 86_400;

/// The result dict of a session action (`{"channelId", "cumulativeAmount", "escrowContract",
/// "status", "reference"}`), as OKX's Python intent returns it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionResult {
    /// The channel id.
    pub channel_id: String,
    /// The highest voucher amount (`"0"` after `open`), decimal.
    pub cumulative_amount: String,
    /// The escrow contract (EIP-55).
    pub escrow_contract: String,
    /// `open` or `closed`.
    pub status: String,
    /// The SA's on-chain reference (`""` for vouchers).
    pub reference: String,
}

impl SessionResult {
    /// The JSON object, keys in Python's insertion order.
    pub fn to_json_value(&self) -> Value {
        let mut m = Map::new();
        m.insert("channelId".into(), Value::String(self.channel_id.clone()));
        m.insert("cumulativeAmount".into(), Value::String(self.cumulative_amount.clone()));
        m.insert("escrowContract".into(), Value::String(self.escrow_contract.clone()));
        m.insert("status".into(), Value::String(self.status.clone()));
        m.insert("reference".into(), Value::String(self.reference.clone()));
        Value::Object(m)
    }

    /// The receipt's `settlement`: base64url (no padding) of the compact, ASCII-escaped JSON.
    pub fn settlement(&self) -> String {
        let bytes = crate::json::compact_ascii(&self.to_json_value()).unwrap_or_default();
        b64url_encode(bytes)
    }

    /// The management answer (HTTP 200): `{"status":"ok","receipt":{"id","status":"success",
    /// "method":"evm","intent":"session","settlement"}}`.
    pub fn management_response(&self, challenge_id: &str) -> Value {
        let mut receipt = Map::new();
        receipt.insert("id".into(), Value::String(challenge_id.to_owned()));
        receipt.insert("status".into(), Value::String("success".into()));
        receipt.insert("method".into(), Value::String(EVM_METHOD.into()));
        receipt.insert("intent".into(), Value::String(SESSION_INTENT.into()));
        receipt.insert("settlement".into(), Value::String(self.settlement()));
        let mut m = Map::new();
        m.insert("status".into(), Value::String("ok".into()));
        m.insert("receipt".into(), Value::Object(receipt));
        Value::Object(m)
    }
}

/// The `session` intent. Cheap to clone (shared store, SA client, signer).
///
/// Defaults: in-memory channel store and replay store, chain 196, the default escrow contract,
/// price = the route's, minimum voucher delta 0, random (UUIDv4) authorization nonces,
/// deadline 2^256 − 1, domain `EVM Payment Channel`/`1`, `feePayer` false, no payee signer
/// (settle and close then answer `InvalidPayloadError` "payee signer not configured").
///
/// ```
/// use pay402_runtime::mpp::{EmbeddedSa, SessionIntent};
///
/// let intent = SessionIntent::new(EmbeddedSa::new(), "0x1111111111111111111111111111111111111111")
///     .min_voucher_delta(500);
/// let details = intent.method_details();
/// assert_eq!(details["minVoucherDelta"], "500");
/// assert_eq!(details["escrowContract"], "0x5E550002e64FaF79B41D89fE8439eEb1be66CE3b");
/// ```
#[derive(Clone)]
pub struct SessionIntent {
    sa: Arc<dyn SaClient>,
    recipient: String,
    signer: Option<Arc<dyn Signer>>,
    store: Arc<dyn ChannelStore>,
    chain_id: u64,
    escrow: Address,
    per_request_cost: Option<U256>,
    min_voucher_delta: u128,
    nonces: Arc<dyn NonceProvider>,
    deadline: U256,
    domain_name: String,
    domain_version: String,
    fee_payer: bool,
    replay: Arc<dyn ReplayStore>,
}

impl fmt::Debug for SessionIntent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionIntent")
            .field("recipient", &self.recipient)
            .field("signer", &self.signer.as_ref().map(|s| s.address()))
            .field("chain_id", &self.chain_id)
            .field("escrow", &self.escrow)
            .field("per_request_cost", &self.per_request_cost)
            .field("min_voucher_delta", &self.min_voucher_delta)
            .field("fee_payer", &self.fee_payer)
            .finish_non_exhaustive()
    }
}

/// The `reason` label of a refused voucher: the problem slug of its error.
fn rejection_reason(e: &PayError) -> &'static str {
    match e {
        PayError::Method(e) | PayError::Unknown(e) => e.slug(),
        PayError::Protocol(e) => e.kind().slug(),
    }
}

fn invalid_payload(msg: impl Into<String>) -> PayError {
    PayError::Method(EvmPaymentError::InvalidPayload(msg.into()))
}

fn method(e: EvmPaymentError) -> PayError {
    PayError::Method(e)
}

fn store_failure(e: StoreError) -> PayError {
    tracing::error!(error = %e, "mpp session: channel store failed");
    PayError::Unknown(EvmPaymentError::InternalSA(format!("channel store unavailable: {e}")))
}

fn update_failure(e: UpdateError<PayError>) -> PayError {
    match e {
        UpdateError::Rejected(e) => e,
        UpdateError::Store(e) => store_failure(e),
    }
}

fn sa_failure(e: SaError) -> PayError {
    match e {
        // L4: the SA's `msg` goes to the logs, buyers get the class alone.
        SaError::Api { ref error, .. } => {
            tracing::info!(error = %error, "mpp session: the settlement agent refused");
            PayError::Method(e.payment_error())
        }
        other => {
            tracing::error!(error = %other, "mpp session: settlement agent call failed; outcome unknown");
            PayError::Unknown(other.payment_error())
        }
    }
}

fn signature_failure(e: ChannelSignatureError) -> PayError {
    match e {
        ChannelSignatureError::SignerMismatch { .. } => method(EvmPaymentError::SignerMismatch(e.to_string())),
        _ => method(EvmPaymentError::InvalidSignature(e.to_string())),
    }
}

/// A non-empty string field.
fn text<'a>(m: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    m.get(key).and_then(Value::as_str).filter(|s| !s.is_empty())
}

/// A decimal amount field: a string of digits or a JSON integer.
fn amount_text(m: &Map<String, Value>, key: &str) -> Option<String> {
    match m.get(key)? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) if n.is_u64() => Some(n.to_string()),
        _ => None,
    }
}

fn parse_amount(text: &str, field: &str) -> Result<u128, PayError> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid_payload(format!("{field} is not a non-negative integer")));
    }
    text.parse::<u128>().map_err(|_| invalid_payload(format!("{field} exceeds uint128")))
}

/// Lower-case `0x` + 64 hex digits.
/// The voucher a buyer's `settle` or `close` carries: the channel, its cumulative amount and
/// the signature (`action` names the action in the refusal).
struct FinalVoucher<'p> {
    channel_b256: B256,
    channel_id: String,
    amount: u128,
    signature: &'p str,
}

fn final_voucher<'p>(p: &'p Map<String, Value>, action: &str) -> Result<FinalVoucher<'p>, PayError> {
    let (Some(channel), Some(amount_text), Some(signature)) =
        (text(p, "channelId"), amount_text(p, "cumulativeAmount"), text(p, "signature"))
    else {
        return Err(invalid_payload(format!("{action}: missing required fields")));
    };
    let (channel_b256, channel_id) = canonical_channel(channel)?;
    let amount = parse_amount(&amount_text, "cumulativeAmount")?;
    Ok(FinalVoucher { channel_b256, channel_id, amount, signature })
}

fn canonical_channel(text: &str) -> Result<(B256, String), PayError> {
    let id = channel_id_from_hex(text).map_err(|e| invalid_payload(format!("channelId: {e}")))?;
    Ok((id, evm::to_hex(id)))
}

/// A signature as lower-case `0x` hex (so replays compare equal whatever the case).
fn normalise_signature(sig: &str) -> String {
    let digits = sig.strip_prefix("0x").or_else(|| sig.strip_prefix("0X")).unwrap_or(sig);
    format!("0x{}", digits.to_ascii_lowercase())
}

fn sa_echo(c: &ChallengeEcho) -> SaChallengeEcho {
    SaChallengeEcho {
        id: c.id.clone(),
        realm: c.realm.clone(),
        method: c.method.clone(),
        intent: c.intent.clone(),
        request: c.request.clone(),
        expires: c.expires.clone(),
    }
}

fn transfer(auth: &Map<String, Value>) -> TransferAuthorization {
    let s = |k: &str| auth.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
    TransferAuthorization {
        auth_type: s("type"),
        from: s("from"),
        to: s("to"),
        value: s("value"),
        valid_after: s("validAfter"),
        valid_before: s("validBefore"),
        nonce: s("nonce"),
        signature: auth.get("signature").and_then(Value::as_str).map(str::to_owned),
    }
}

fn now_unix() -> u64 {
    evm::system_unix_time()
}

/// The SA's receipt must name our channel (an empty `channelId` is a refusal: the SA did not
/// confirm what it opened or topped up).
fn check_receipt_channel(receipt: &SessionReceipt, ours: B256, channel_id: &str) -> Result<(), PayError> {
    if receipt.channel_id.is_empty() && crate::reverts::is_reverted(crate::reverts::Fix::F10SaFailClosed) {
        return Ok(());
    }
    if channel_id_from_hex(&receipt.channel_id).ok() != Some(ours) {
        tracing::error!(ours = %channel_id, sa = %receipt.channel_id, "mpp session: the SA receipt names another (or no) channel");
        return Err(PayError::Unknown(EvmPaymentError::InternalSA(
            "the SA reported another channel id, or none".into(),
        )));
    }
    Ok(())
}

/// The channel's deposit as the SA reports it (required: missing or unparsable is a refusal).
fn receipt_deposit(receipt: &SessionReceipt, channel_id: &str) -> Result<u128, PayError> {
    let text = receipt.deposit.as_str();
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        tracing::error!(channel = %channel_id, deposit = %text, "mpp session: the SA receipt carries no valid deposit");
        return Err(PayError::Unknown(EvmPaymentError::InternalSA("the SA did not confirm the deposit".into())));
    }
    text.parse::<u128>().map_err(|_| {
        tracing::error!(channel = %channel_id, deposit = %text, "mpp session: the SA deposit exceeds uint128");
        PayError::Unknown(EvmPaymentError::InternalSA("the SA did not confirm the deposit".into()))
    })
}

/// Two address texts name the same address (both must parse).
fn same_address(a: &str, b: &str) -> bool {
    matches!((evm::parse_address(a), evm::parse_address(b)), (Ok(x), Ok(y)) if x == y)
}

/// A channel pays only for routes priced in its token, paying its payee, on its chain and
/// escrow: the route's request (`currency`, `recipient`, `methodDetails.chainId` and
/// `.escrowContract`) must name exactly the channel's.
fn check_binding(s: &ChannelState, request: &Map<String, Value>) -> Result<(), PayError> {
    let details = request.get("methodDetails").and_then(Value::as_object);
    let chain = details.and_then(|d| d.get("chainId")).and_then(Value::as_u64);
    let escrow = details.and_then(|d| d.get("escrowContract")).and_then(Value::as_str);
    let currency = request.get("currency").and_then(Value::as_str);
    let recipient = request.get("recipient").and_then(Value::as_str);
    let bound = currency.is_some_and(|c| same_address(c, &s.token))
        && recipient.is_some_and(|r| same_address(r, &s.payee))
        && chain == Some(s.chain_id)
        && escrow.is_some_and(|e| same_address(e, &s.escrow_contract));
    if !bound {
        tracing::warn!(
            channel = %s.channel_id, token = %s.token, payee = %s.payee, chain = s.chain_id, escrow = %s.escrow_contract,
            ?currency, ?recipient, ?chain, ?escrow,
            "mpp session: channel used for a route with other terms"
        );
        return Err(invalid_payload("the channel does not pay for this route"));
    }
    Ok(())
}

/// A closure error or "the voucher needs no write".
type Step = Result<Option<ChannelState>, PayError>;

impl SessionIntent {
    /// A session intent over a Settlement Agent client, paying `recipient` (the payee).
    pub fn new(sa: impl SaClient, recipient: impl Into<String>) -> Self {
        Self::with_sa(Arc::new(sa), recipient)
    }

    /// A session intent over a shared Settlement Agent client.
    pub fn with_sa(sa: Arc<dyn SaClient>, recipient: impl Into<String>) -> Self {
        Self {
            sa,
            recipient: recipient.into(),
            signer: None,
            store: Arc::new(InMemoryChannelStore::new()),
            chain_id: X_LAYER_CHAIN_ID,
            escrow: DEFAULT_ESCROW_CONTRACT,
            per_request_cost: None,
            min_voucher_delta: 0,
            nonces: Arc::new(RandomNonceProvider),
            deadline: DEFAULT_DEADLINE,
            domain_name: DEFAULT_DOMAIN_NAME.to_owned(),
            domain_version: DEFAULT_DOMAIN_VERSION.to_owned(),
            fee_payer: false,
            replay: Arc::new(InMemoryReplayStore::new()),
        }
    }

    /// The payee's key, which signs `SettleAuthorization` / `CloseAuthorization`.
    pub fn signer(mut self, signer: Arc<dyn Signer>) -> Self {
        self.signer = Some(signer);
        self
    }

    /// Where channels are kept (share one across workers: `FileStore`, Redis).
    pub fn store(mut self, store: Arc<dyn ChannelStore>) -> Self {
        self.store = store;
        self
    }

    /// The chain id (196).
    pub fn chain_id(mut self, chain_id: u64) -> Self {
        self.chain_id = chain_id;
        self
    }

    /// The escrow contract ([`DEFAULT_ESCROW_CONTRACT`]).
    pub fn escrow(mut self, escrow: Address) -> Self {
        self.escrow = escrow;
        self
    }

    /// A fixed price per voucher request in base units; `None` (the default) charges the
    /// route's price.
    pub fn per_request_cost(mut self, cost: Option<U256>) -> Self {
        self.per_request_cost = cost;
        self
    }

    /// The smallest accepted increase between two vouchers (0; when 0 the channel's stored
    /// value applies).
    pub fn min_voucher_delta(mut self, delta: u128) -> Self {
        self.min_voucher_delta = delta;
        self
    }

    /// The nonce source of settle/close authorizations (random UUIDv4 by default).
    pub fn nonce_provider(mut self, nonces: Arc<dyn NonceProvider>) -> Self {
        self.nonces = nonces;
        self
    }

    /// The deadline of settle/close authorizations (2^256 − 1).
    pub fn deadline(mut self, deadline: U256) -> Self {
        self.deadline = deadline;
        self
    }

    /// The escrow's EIP-712 domain name (`EVM Payment Channel`).
    pub fn domain_name(mut self, name: impl Into<String>) -> Self {
        self.domain_name = name.into();
        self
    }

    /// The escrow's EIP-712 domain version (`1`).
    pub fn domain_version(mut self, version: impl Into<String>) -> Self {
        self.domain_version = version.into();
        self
    }

    /// The seller pays gas (`feePayer: true`).
    pub fn fee_payer(mut self, fee_payer: bool) -> Self {
        self.fee_payer = fee_payer;
        self
    }

    /// Where voucher replay keys are recorded (share one across workers).
    pub fn replay_store(mut self, store: Arc<dyn ReplayStore>) -> Self {
        self.replay = store;
        self
    }

    /// The payee.
    pub fn recipient(&self) -> &str {
        &self.recipient
    }

    /// The channel store.
    pub fn channel_store(&self) -> &Arc<dyn ChannelStore> {
        &self.store
    }

    /// The escrow's EIP-712 domain.
    pub fn channel_domain(&self) -> ChannelDomain {
        ChannelDomain {
            name: self.domain_name.clone(),
            version: self.domain_version.clone(),
            chain_id: self.chain_id,
            escrow: self.escrow,
        }
    }

    /// `methodDetails` of a session challenge: `{"chainId", "escrowContract" (EIP-55),
    /// "minVoucherDelta" (decimal string), "feePayer"}`.
    pub fn method_details(&self) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("chainId".into(), Value::from(self.chain_id));
        m.insert("escrowContract".into(), Value::String(evm::checksum(&self.escrow)));
        m.insert("minVoucherDelta".into(), Value::String(self.min_voucher_delta.to_string()));
        m.insert("feePayer".into(), Value::Bool(self.fee_payer));
        m
    }

    fn escrow_text(&self) -> String {
        evm::checksum(&self.escrow)
    }

    fn result(&self, channel_id: &str, cumulative: u128, status: &str, reference: String) -> SessionResult {
        SessionResult {
            channel_id: channel_id.to_owned(),
            cumulative_amount: cumulative.to_string(),
            escrow_contract: self.escrow_text(),
            status: status.to_owned(),
            reference,
        }
    }

    fn payee_signer(&self) -> Result<&Arc<dyn Signer>, PayError> {
        self.signer.as_ref().ok_or_else(|| invalid_payload("payee signer not configured"))
    }

    fn payee_address(&self, signer: &dyn Signer) -> Address {
        evm::parse_address(&self.recipient).unwrap_or_else(|_| signer.address())
    }

    /// Checks that a deposit authorization pays the escrow contract (and, when `value` is
    /// given, that amount).
    fn check_deposit_authorization(&self, auth: &Map<String, Value>, value: Option<&str>) -> Result<(), PayError> {
        let to = auth.get("to").and_then(Value::as_str).unwrap_or("");
        if evm::parse_address(to).ok() != Some(self.escrow) {
            return Err(invalid_payload(format!("authorization pays {to}, not the escrow contract")));
        }
        if let Some(v) = value
            && auth.get("value").and_then(Value::as_str) != Some(v)
        {
            return Err(invalid_payload("authorization value does not match the deposit"));
        }
        Ok(())
    }

    /// Asks the SA who pays `channel_id` (`session/status`) and requires `payer`.
    async fn confirm_payer(&self, channel_id: &str, payer: &str) -> Result<(), PayError> {
        let status =
            crate::metrics::sa_call("session_status", self.sa.session_status(channel_id)).await.map_err(sa_failure)?;
        if !same_address(&status.payer, payer) {
            tracing::error!(
                channel = %channel_id, claimed = %payer, sa = %status.payer,
                "mpp session: the SA does not confirm the payer of a hash deposit; channel not recorded"
            );
            return Err(invalid_payload("open: the payer is not confirmed"));
        }
        Ok(())
    }

    // ---------------------------------------------------------------- open

    async fn open(&self, credential: &Credential, request: &Map<String, Value>) -> Result<SessionResult, PayError> {
        let p = &credential.payload;
        let channel = text(p, "channelId").ok_or_else(|| invalid_payload("open: missing required field channelId"))?;
        let (channel_b256, channel_id) = canonical_channel(channel)?;
        let payload_type = text(p, "type").unwrap_or("transaction");
        let authorization = p.get("authorization").and_then(Value::as_object);
        let source = match credential.source.as_deref().filter(|s| !s.is_empty()) {
            Some(did) => Some(
                payer_from_did(did)
                    .map(|d| evm::to_hex(d.address))
                    .ok_or_else(|| invalid_payload("open: source is not a did:pkh:eip155 DID"))?,
            ),
            None => None,
        };
        let depositor = match (payload_type, authorization.and_then(|a| text(a, "from"))) {
            ("transaction", Some(from)) => Some(
                evm::parse_address(from)
                    .map(evm::to_hex)
                    .map_err(|_| invalid_payload("open: authorization.from is not an address"))?,
            ),
            _ => None,
        };
        // The vouchers of a channel redeem only when signed for the escrow's payer (the
        // depositor): a `source` naming anyone else is refused here; for a deposit by `hash` the
        // SA's channel status must confirm the payer (below).
        let payer = match (source, depositor) {
            (Some(source), Some(depositor)) if source != depositor => {
                tracing::warn!(%source, %depositor, "mpp session: open whose source is not the depositor");
                return Err(invalid_payload("open: source is not the depositor"));
            }
            (_, Some(depositor)) => depositor,
            (Some(source), None) => source,
            (None, None) => return Err(invalid_payload("open: cannot determine the payer")),
        };
        // The buyer's claims of the deposit: they must agree with each other, and (after the
        // SA call) with what the SA reports as escrowed.
        let claimed_deposit = amount_text(p, "deposit").map(|d| parse_amount(&d, "deposit")).transpose()?;
        let authorized_value = authorization
            .and_then(|a| amount_text(a, "value"))
            .map(|v| parse_amount(&v, "authorization.value"))
            .transpose()?;
        if let (Some(claim), Some(value)) = (claimed_deposit, authorized_value)
            && claim != value
            && !crate::reverts::is_reverted(crate::reverts::Fix::F1SessionDeposit)
        {
            return Err(invalid_payload("open: deposit does not match the authorization value"));
        }
        let deposit_hint = claimed_deposit.or(authorized_value);
        if let Some(auth) = authorization {
            self.check_deposit_authorization(auth, None)?;
        }
        let signer = match text(p, "authorizedSigner") {
            Some(s) => {
                let a =
                    evm::parse_address(s).map_err(|_| invalid_payload("open: authorizedSigner is not an address"))?;
                if a == Address::ZERO { payer.clone() } else { evm::to_hex(a) }
            }
            None => payer.clone(),
        };
        // The optional initial voucher, verified before anything happens on chain.
        let initial_sig =
            text(p, "voucherSignature").or_else(|| (payload_type == "hash").then(|| text(p, "signature")).flatten());
        let cumulative = match amount_text(p, "cumulativeAmount") {
            Some(c) => parse_amount(&c, "cumulativeAmount")?,
            None => 0,
        };
        if let Some(sig) = initial_sig {
            let expected = evm::parse_address(&signer).map_err(|_| invalid_payload("open: bad signer"))?;
            verify_voucher_signature(&self.channel_domain(), channel_b256, cumulative, sig, expected)
                .map_err(|e| method(EvmPaymentError::InvalidSignature(e.to_string())))?;
            if deposit_hint.is_some_and(|d| cumulative > d) {
                return Err(method(EvmPaymentError::AmountExceedsDeposit(format!(
                    "voucher {cumulative} exceeds the deposit"
                ))));
            }
        }
        if self.store.get(&channel_id).await.map_err(store_failure)?.is_some() {
            return Err(invalid_payload("open: channel already exists"));
        }
        let req = SessionOpenRequest {
            challenge: sa_echo(&credential.challenge),
            payload: SessionOpenPayload {
                payload_type: payload_type.to_owned(),
                channel_id: channel_id.clone(),
                authorization: authorization.map(transfer),
                signature: text(p, "signature").map(str::to_owned),
                hash: text(p, "hash").map(str::to_owned),
                salt: text(p, "salt").unwrap_or("").to_owned(),
                authorized_signer: text(p, "authorizedSigner").map(str::to_owned),
            },
            source: credential.source.clone().unwrap_or_default(),
        };
        let receipt: SessionReceipt =
            crate::metrics::sa_call("session_open", self.sa.session_open(&req)).await.map_err(sa_failure)?;
        check_receipt_channel(&receipt, channel_b256, &channel_id)?;
        let deposit = if crate::reverts::is_reverted(crate::reverts::Fix::F1SessionDeposit) {
            match deposit_hint {
                Some(d) => d,
                None => receipt_deposit(&receipt, &channel_id).unwrap_or(0),
            }
        } else {
            // The deposit is what the SA reports as escrowed, never the buyer's claim.
            let escrowed = receipt_deposit(&receipt, &channel_id)?;
            if deposit_hint.is_some_and(|claim| claim != escrowed) {
                tracing::error!(
                    channel = %channel_id, claimed = ?deposit_hint, escrowed,
                    "mpp session: the deposit claimed at open is not what the SA escrowed; channel not recorded"
                );
                return Err(invalid_payload("open: the deposit does not match the escrowed amount"));
            }
            if initial_sig.is_some() && cumulative > escrowed {
                tracing::error!(channel = %channel_id, cumulative, escrowed, "mpp session: initial voucher above the deposit");
                return Err(method(EvmPaymentError::AmountExceedsDeposit(
                    "the initial voucher exceeds the deposit".into(),
                )));
            }
            escrowed
        };
        if authorization.is_none() {
            // A deposit by transaction hash: no signed authorization names the payer, so the
            // SA's view of the channel must.
            self.confirm_payer(&channel_id, &payer).await?;
        }
        let token = request.get("currency").and_then(Value::as_str).unwrap_or("").to_ascii_lowercase();
        let payee = request.get("recipient").and_then(Value::as_str).unwrap_or(&self.recipient).to_owned();
        let state = ChannelState {
            token,
            authorized_signer: signer,
            deposit,
            highest_voucher_amount: if initial_sig.is_some() { cumulative } else { 0 },
            highest_voucher_signature: initial_sig.map(normalise_signature).unwrap_or_default(),
            min_voucher_delta: self.min_voucher_delta,
            ..ChannelState::new(&channel_id, self.chain_id, self.escrow_text(), payer, &payee)
        };
        if !self.store.put_if_absent(&channel_id, &state).await.map_err(store_failure)? {
            tracing::error!(channel = %channel_id, "mpp session: channel opened on the SA but already in the store");
            return Err(invalid_payload("open: channel already exists"));
        }
        Ok(self.result(&channel_id, 0, STATUS_OPEN, receipt.reference))
    }

    // ---------------------------------------------------------------- topUp

    async fn top_up(&self, credential: &Credential, request: &Map<String, Value>) -> Result<SessionResult, PayError> {
        let p = &credential.payload;
        let (Some(channel), Some(additional_text)) = (text(p, "channelId"), amount_text(p, "additionalDeposit")) else {
            return Err(invalid_payload("topUp: missing required field"));
        };
        let (channel_b256, channel_id) = canonical_channel(channel)?;
        let additional = parse_amount(&additional_text, "additionalDeposit")?;
        let authorization = p.get("authorization").and_then(Value::as_object);
        if let Some(auth) = authorization {
            self.check_deposit_authorization(auth, Some(&additional_text))?;
        }
        let state = self.stored_channel(&channel_id).await?;
        if state.finalized || state.close_requested_at != 0 {
            return Err(method(EvmPaymentError::ChannelClosed("channel is closed".into())));
        }
        check_binding(&state, request)?;
        // A deposit transaction counts at most once per channel, whatever the SA answers to a
        // duplicate (a session challenge may be reused).
        let deposit_key = match (text(p, "hash"), authorization) {
            (Some(hash), _) => Some(format!("mpp:topup:{channel_id}:{}", hash.to_ascii_lowercase())),
            (None, Some(auth)) => text(auth, "nonce").map(|nonce| {
                let from = text(auth, "from").unwrap_or("").to_ascii_lowercase();
                format!("mpp:topup:{channel_id}:{from}:{}", nonce.to_ascii_lowercase())
            }),
            (None, None) => None,
        };
        if let Some(key) = &deposit_key {
            let expires = now_unix().saturating_add(TOP_UP_KEY_TTL_SECONDS);
            let fresh = self
                .replay
                .insert_if_absent(key, expires)
                .await
                .map_err(|e| PayError::Unknown(EvmPaymentError::InternalSA(e.to_string())))?;
            if !fresh {
                tracing::warn!(channel = %channel_id, "mpp session: top-up transaction presented again");
                return Err(invalid_payload("topUp: this deposit was already counted"));
            }
        }
        let req = SessionTopUpRequest {
            challenge: sa_echo(&credential.challenge),
            payload: SessionTopUpPayload {
                payload_type: text(p, "type").unwrap_or("transaction").to_owned(),
                channel_id: channel_id.clone(),
                authorization: authorization.map(transfer),
                signature: text(p, "signature").map(str::to_owned),
                hash: text(p, "hash").map(str::to_owned),
                additional_deposit: additional_text.clone(),
                top_up_salt: text(p, "topUpSalt").map(str::to_owned),
            },
            source: credential.source.clone().unwrap_or_default(),
        };
        let receipt = match crate::metrics::sa_call("session_top_up", self.sa.session_top_up(&req)).await {
            Ok(r) => r,
            Err(e) => {
                let e = sa_failure(e);
                if let (PayError::Method(_), Some(key)) = (&e, &deposit_key) {
                    // A definite refusal: nothing was deposited, the transaction may come again.
                    self.forget(key).await;
                }
                return Err(e);
            }
        };
        check_receipt_channel(&receipt, channel_b256, &channel_id)?;
        let reverted = crate::reverts::is_reverted(crate::reverts::Fix::F1SessionDeposit);
        // The SA reports the channel's total deposit: it must include this top-up on top of
        // what was counted before the call (an idempotent answer to a duplicate does not).
        let reported = if reverted { None } else { Some(receipt_deposit(&receipt, &channel_id)?) };
        if let Some(total) = reported {
            let expected = state.deposit.checked_add(additional);
            if expected.is_none_or(|e| total < e) {
                tracing::error!(
                    channel = %channel_id, before = state.deposit, additional, reported = total,
                    "mpp session: the SA's deposit does not include the top-up; not counted"
                );
                return Err(PayError::Unknown(EvmPaymentError::InternalSA("the SA did not confirm the top-up".into())));
            }
        }
        let outcome = self
            .store
            .update(&channel_id, |s| {
                let mut next = s.clone();
                next.deposit = match reported {
                    // Deposits only grow; a concurrent top-up may already be counted.
                    Some(total) => s.deposit.max(total),
                    None => s.deposit.checked_add(additional).ok_or_else(|| invalid_payload("deposit overflows"))?,
                };
                Ok::<_, PayError>(Some(next))
            })
            .await;
        match outcome {
            Ok(UpdateOutcome::Updated(v) | UpdateOutcome::Unchanged(v)) => {
                Ok(self.result(&channel_id, v.value.highest_voucher_amount, STATUS_OPEN, receipt.reference))
            }
            Ok(UpdateOutcome::Missing) => {
                tracing::error!(channel = %channel_id, "mpp session: topped up on the SA but the channel is gone");
                Err(PayError::Unknown(EvmPaymentError::InternalSA("channel disappeared during top-up".into())))
            }
            Err(e) => {
                tracing::error!(channel = %channel_id, "mpp session: topped up on the SA but the store failed");
                Err(match update_failure(e) {
                    PayError::Method(e) => PayError::Unknown(e),
                    other => other,
                })
            }
        }
    }

    // ---------------------------------------------------------------- voucher

    /// How long a voucher replay key lives: until the challenge expires (+60 s of clock skew;
    /// the coordinator refuses expired challenges), at least [`VOUCHER_KEY_MIN_TTL_SECONDS`]
    /// from now, or [`VOUCHER_KEY_TTL_SECONDS`] when the challenge has no `expires`.
    fn replay_expiry(credential: &Credential) -> u64 {
        let now = now_unix();
        credential
            .challenge
            .expires
            .as_deref()
            .and_then(|e| super::expiry::parse_rfc3339(e).ok())
            .and_then(|at| u64::try_from(at.unix_timestamp()).ok())
            .map_or_else(
                || now.saturating_add(VOUCHER_KEY_TTL_SECONDS),
                |at| at.saturating_add(60).max(now.saturating_add(VOUCHER_KEY_MIN_TTL_SECONDS)),
            )
    }

    async fn forget(&self, key: &str) {
        if let Err(e) = self.replay.remove(key).await {
            tracing::warn!(error = %e, "mpp session: cannot forget a voucher replay key");
        }
    }

    async fn voucher(
        &self,
        credential: &Credential,
        request: &Map<String, Value>,
        cost: U256,
    ) -> Result<SessionGrant, PayError> {
        let p = &credential.payload;
        let (Some(channel), Some(amount_text), Some(signature)) =
            (text(p, "channelId"), amount_text(p, "cumulativeAmount"), text(p, "signature"))
        else {
            return Err(invalid_payload("voucher: missing required fields"));
        };
        let (channel_b256, channel_id) = canonical_channel(channel)?;
        let amount = parse_amount(&amount_text, "cumulativeAmount")?;
        let cost = u128::try_from(self.per_request_cost.unwrap_or(cost))
            .map_err(|_| method(EvmPaymentError::BadRequest("the per-request cost exceeds uint128".into())))?;
        let signature = normalise_signature(signature);
        let key = format!("mpp:voucher:{channel_id}:{}:{amount}", credential.challenge.id);
        let inserted = self
            .replay
            .insert_if_absent(&key, Self::replay_expiry(credential))
            .await
            .map_err(|e| PayError::Unknown(EvmPaymentError::InternalSA(e.to_string())))?;
        let domain = self.channel_domain();
        let configured_min = self.min_voucher_delta;
        // Signature verification result per expected signer (the closure may run again).
        let mut verified: Option<(String, Result<(), PayError>)> = None;
        let outcome = self
            .store
            .update(&channel_id, |s| -> Step {
                if s.finalized || s.close_requested_at != 0 {
                    return Err(method(EvmPaymentError::ChannelClosed("channel is closed".into())));
                }
                if !crate::reverts::is_reverted(crate::reverts::Fix::F9VoucherBinding) {
                    check_binding(s, request)?;
                }
                if amount > s.deposit {
                    return Err(method(EvmPaymentError::AmountExceedsDeposit(format!(
                        "voucher {amount} exceeds the deposit {}",
                        s.deposit
                    ))));
                }
                let replay = amount == s.highest_voucher_amount && signature == s.highest_voucher_signature;
                let mut next = s.clone();
                if !replay {
                    if amount <= s.highest_voucher_amount {
                        return Err(method(EvmPaymentError::DeltaTooSmall(format!(
                            "voucher {amount} is not above the highest voucher {}",
                            s.highest_voucher_amount
                        ))));
                    }
                    let min = if configured_min > 0 { configured_min } else { s.min_voucher_delta };
                    let delta = amount - s.highest_voucher_amount;
                    if min > 0 && delta < min {
                        return Err(method(EvmPaymentError::DeltaTooSmall(format!(
                            "voucher increase {delta} is below the minimum {min}"
                        ))));
                    }
                }
                if !inserted {
                    // This voucher was already presented under this challenge (and is charged,
                    // or being charged, by that request).
                    return Err(invalid_payload("voucher replayed"));
                }
                if !replay {
                    let expected = if s.authorized_signer.is_empty() { &s.payer } else { &s.authorized_signer };
                    let fresh = verified.as_ref().is_none_or(|(who, _)| who != expected);
                    if fresh {
                        let r = evm::parse_address(expected)
                            .map_err(|_| {
                                PayError::Unknown(EvmPaymentError::InternalSA("stored signer is not an address".into()))
                            })
                            .and_then(|a| {
                                verify_voucher_signature(&domain, channel_b256, amount, &signature, a)
                                    .map_err(signature_failure)
                            });
                        verified = Some((expected.clone(), r));
                    }
                    if let Some((_, Err(e))) = &verified {
                        return Err(e.clone());
                    }
                    next.highest_voucher_amount = amount;
                    next.highest_voucher_signature = signature.clone();
                }
                if cost > 0 && !next.reserve(cost) {
                    return Err(method(EvmPaymentError::InsufficientBalance(format!(
                        "available {} is below the price {cost}",
                        next.available()
                    ))));
                }
                Ok((next != *s).then_some(next))
            })
            .await;
        let state = match outcome {
            Ok(UpdateOutcome::Updated(v) | UpdateOutcome::Unchanged(v)) => v.value,
            Ok(UpdateOutcome::Missing) => {
                if inserted {
                    self.forget(&key).await;
                }
                return Err(method(EvmPaymentError::ChannelNotFound("channel not found".into())));
            }
            Err(e) => {
                if inserted {
                    self.forget(&key).await;
                }
                return Err(update_failure(e));
            }
        };
        let mut receipt = Receipt::success(channel_id.clone(), EVM_METHOD, None);
        let mut extra = Map::new();
        extra.insert("intent".into(), Value::String(SESSION_INTENT.into()));
        extra.insert("channelId".into(), Value::String(channel_id.clone()));
        extra.insert("cumulativeAmount".into(), Value::String(state.highest_voucher_amount.to_string()));
        extra.insert("reserved".into(), Value::String(cost.to_string()));
        extra.insert("remainingBalance".into(), Value::String(state.available().to_string()));
        extra.insert("deposit".into(), Value::String(state.deposit.to_string()));
        receipt.extra = Some(extra);
        let pending: Option<Box<dyn PendingCharge>> = (cost > 0).then(|| {
            Box::new(Reservation {
                store: Arc::clone(&self.store),
                replay: Arc::clone(&self.replay),
                channel_id,
                replay_key: key,
                cost,
                finished: false,
            }) as Box<dyn PendingCharge>
        });
        Ok(SessionGrant::Serve { receipt, pending })
    }

    // ---------------------------------------------------------------- settle / close

    /// The stored state of `channel_id` (canonical), or `ChannelNotFoundError`.
    async fn stored_channel(&self, channel_id: &str) -> Result<ChannelState, PayError> {
        let stored = self.store.get(channel_id).await.map_err(store_failure)?;
        Ok(stored.ok_or_else(|| method(EvmPaymentError::ChannelNotFound("channel not found".into())))?.value)
    }

    /// Settles the channel's highest voucher on chain (merchant-initiated; the channel stays
    /// open): signs a `SettleAuthorization` over (channel, highest, nonce, deadline) and posts
    /// `session/settle`. Local state is unchanged. Errors: no signer ⇒ `InvalidPayloadError`
    /// "payee signer not configured"; unknown channel ⇒ `ChannelNotFoundError`; finalized ⇒
    /// `ChannelClosedError`; no voucher yet ⇒ `InvalidPayloadError`.
    pub async fn settle_channel(&self, channel_id: &str) -> Result<SessionResult, PayError> {
        let signer = self.payee_signer()?;
        let (channel_b256, channel_id) = canonical_channel(channel_id)?;
        let state = self.stored_channel(&channel_id).await?;
        if state.finalized {
            return Err(method(EvmPaymentError::ChannelClosed("channel is closed".into())));
        }
        if state.highest_voucher_amount == 0 {
            return Err(invalid_payload("settle: no voucher to settle"));
        }
        let nonce = self.nonces.allocate(self.payee_address(signer.as_ref()), channel_b256);
        let cumulative = state.highest_voucher_amount;
        let payee_signature = sign_settle_authorization(
            signer.as_ref(),
            &self.channel_domain(),
            channel_b256,
            cumulative,
            nonce,
            self.deadline,
        )
        .map_err(|e| PayError::Unknown(EvmPaymentError::InternalSA(format!("cannot sign: {e}"))))?;
        let req = SessionSettleRequest {
            payload: SessionSettlePayload {
                channel_id: channel_id.clone(),
                cumulative_amount: cumulative.to_string(),
                voucher_signature: state.highest_voucher_signature.clone(),
                payee_signature,
                nonce: nonce.to_string(),
                deadline: self.deadline.to_string(),
            },
        };
        let receipt =
            crate::metrics::sa_call("session_settle", self.sa.session_settle(&req)).await.map_err(sa_failure)?;
        check_receipt_channel(&receipt, channel_b256, &channel_id)?;
        Ok(self.result(&channel_id, cumulative, STATUS_OPEN, receipt.reference))
    }

    /// The buyer's `settle` action. Python settles for any `channelId`, so anyone with a free
    /// challenge could make the merchant sign and post settlements at will. Here the credential
    /// must carry the channel's highest voucher (`cumulativeAmount` + `signature`), signed by
    /// the channel's signer, on a route the channel pays for; and each highest voucher is
    /// settled at most once this way (key `mpp:settle:{channel}:{amount}` in the replay store,
    /// forgotten again on a definite SA refusal).
    async fn settle_by_buyer(
        &self,
        credential: &Credential,
        request: &Map<String, Value>,
    ) -> Result<SessionResult, PayError> {
        let FinalVoucher { channel_b256, channel_id, amount, signature } =
            final_voucher(&credential.payload, "settle")?;
        self.payee_signer()?;
        let state = self.stored_channel(&channel_id).await?;
        if state.finalized || state.close_requested_at != 0 {
            return Err(method(EvmPaymentError::ChannelClosed("channel is closed".into())));
        }
        check_binding(&state, request)?;
        if amount == 0 || amount != state.highest_voucher_amount {
            return Err(invalid_payload("settle: the voucher is not the channel's highest"));
        }
        let expected = if state.authorized_signer.is_empty() { &state.payer } else { &state.authorized_signer };
        let signer = evm::parse_address(expected)
            .map_err(|_| PayError::Unknown(EvmPaymentError::InternalSA("stored signer is not an address".into())))?;
        verify_voucher_signature(&self.channel_domain(), channel_b256, amount, signature, signer)
            .map_err(signature_failure)?;
        let key = format!("mpp:settle:{channel_id}:{amount}");
        let fresh = self
            .replay
            .insert_if_absent(&key, now_unix().saturating_add(TOP_UP_KEY_TTL_SECONDS))
            .await
            .map_err(|e| PayError::Unknown(EvmPaymentError::InternalSA(e.to_string())))?;
        if !fresh {
            return Err(invalid_payload("settle: this voucher was already settled"));
        }
        let settled = self.settle_channel(&channel_id).await;
        if let Err(PayError::Method(_)) = &settled {
            self.forget(&key).await;
        }
        settled
    }

    /// Closes the channel at its highest voucher (merchant-initiated): marks it
    /// (`closeRequestedAt`, no more vouchers), signs a `CloseAuthorization`, posts
    /// `session/close` and deletes the channel from the store. Errors as
    /// [`Self::settle_channel`] (a channel without vouchers closes at 0).
    pub async fn close_channel(&self, channel_id: &str) -> Result<SessionResult, PayError> {
        self.payee_signer()?;
        let (channel_b256, channel_id) = canonical_channel(channel_id)?;
        let now = now_unix().max(1);
        let outcome = self
            .store
            .update(&channel_id, |s| -> Step {
                if s.finalized {
                    return Err(method(EvmPaymentError::ChannelClosed("channel is closed".into())));
                }
                let mut next = s.clone();
                next.close_requested_at = now;
                Ok(Some(next))
            })
            .await;
        let state = Self::closing_state(outcome)?;
        self.finish_close(channel_b256, &channel_id, state).await
    }

    fn closing_state(outcome: Result<UpdateOutcome, UpdateError<PayError>>) -> Result<ChannelState, PayError> {
        match outcome {
            Ok(UpdateOutcome::Updated(v) | UpdateOutcome::Unchanged(v)) => Ok(v.value),
            Ok(UpdateOutcome::Missing) => Err(method(EvmPaymentError::ChannelNotFound("channel not found".into()))),
            Err(e) => Err(update_failure(e)),
        }
    }

    async fn finish_close(
        &self,
        channel_b256: B256,
        channel_id: &str,
        state: ChannelState,
    ) -> Result<SessionResult, PayError> {
        let signer = self.payee_signer()?;
        let cumulative = state.highest_voucher_amount;
        let nonce = self.nonces.allocate(self.payee_address(signer.as_ref()), channel_b256);
        let signed = sign_close_authorization(
            signer.as_ref(),
            &self.channel_domain(),
            channel_b256,
            cumulative,
            nonce,
            self.deadline,
        );
        let outcome = match signed {
            Ok(payee_signature) => {
                let req = SessionCloseRequest {
                    payload: SessionClosePayload {
                        channel_id: channel_id.to_owned(),
                        cumulative_amount: cumulative.to_string(),
                        voucher_signature: state.highest_voucher_signature.clone(),
                        payee_signature,
                        nonce: nonce.to_string(),
                        deadline: self.deadline.to_string(),
                    },
                };
                crate::metrics::sa_call("session_close", self.sa.session_close(&req))
                    .await
                    .map_err(sa_failure)
                    .and_then(|r| check_receipt_channel(&r, channel_b256, channel_id).map(|()| r))
            }
            Err(e) => Err(method(EvmPaymentError::InternalSA(format!("cannot sign: {e}")))),
        };
        match outcome {
            Ok(receipt) => {
                if let Err(e) = self.store.delete(channel_id).await {
                    tracing::error!(error = %e, channel = %channel_id, "mpp session: closed on the SA but not deleted");
                }
                Ok(self.result(channel_id, cumulative, STATUS_CLOSED, receipt.reference))
            }
            Err(e @ PayError::Unknown(_)) => Err(e),
            Err(e) => {
                // A definite refusal: the channel is usable again.
                let reopened = self
                    .store
                    .update(channel_id, |s| {
                        let mut next = s.clone();
                        next.close_requested_at = 0;
                        Ok::<_, PayError>(Some(next))
                    })
                    .await;
                if let Err(err) = reopened {
                    tracing::warn!(error = %err, channel = %channel_id, "mpp session: cannot clear the close mark");
                }
                Err(e)
            }
        }
    }

    /// Client-initiated close with a final voucher.
    async fn close(&self, credential: &Credential, request: &Map<String, Value>) -> Result<SessionResult, PayError> {
        let FinalVoucher { channel_b256, channel_id, amount, signature } = final_voucher(&credential.payload, "close")?;
        self.payee_signer()?;
        let signature = normalise_signature(signature);
        let domain = self.channel_domain();
        let configured_min = self.min_voucher_delta;
        let now = now_unix().max(1);
        let mut verified: Option<(String, Result<(), PayError>)> = None;
        let outcome = self
            .store
            .update(&channel_id, |s| -> Step {
                if s.finalized {
                    return Err(method(EvmPaymentError::ChannelClosed("channel is closed".into())));
                }
                check_binding(s, request)?;
                if amount > s.deposit {
                    return Err(method(EvmPaymentError::AmountExceedsDeposit(format!(
                        "voucher {amount} exceeds the deposit {}",
                        s.deposit
                    ))));
                }
                if amount < s.highest_voucher_amount {
                    return Err(method(EvmPaymentError::DeltaTooSmall(format!(
                        "voucher {amount} is below the highest voucher {}",
                        s.highest_voucher_amount
                    ))));
                }
                if amount > s.highest_voucher_amount {
                    let min = if configured_min > 0 { configured_min } else { s.min_voucher_delta };
                    let delta = amount - s.highest_voucher_amount;
                    if min > 0 && delta < min {
                        return Err(method(EvmPaymentError::DeltaTooSmall(format!(
                            "voucher increase {delta} is below the minimum {min}"
                        ))));
                    }
                }
                let expected = if s.authorized_signer.is_empty() { &s.payer } else { &s.authorized_signer };
                if verified.as_ref().is_none_or(|(who, _)| who != expected) {
                    let r = evm::parse_address(expected)
                        .map_err(|_| {
                            PayError::Unknown(EvmPaymentError::InternalSA("stored signer is not an address".into()))
                        })
                        .and_then(|a| {
                            verify_voucher_signature(&domain, channel_b256, amount, &signature, a)
                                .map_err(signature_failure)
                        });
                    verified = Some((expected.clone(), r));
                }
                if let Some((_, Err(e))) = &verified {
                    return Err(e.clone());
                }
                let mut next = s.clone();
                if amount > s.highest_voucher_amount {
                    next.highest_voucher_amount = amount;
                    next.highest_voucher_signature = signature.clone();
                }
                next.close_requested_at = now;
                Ok(Some(next))
            })
            .await;
        let state = Self::closing_state(outcome)?;
        self.finish_close(channel_b256, &channel_id, state).await
    }
}

#[async_trait::async_trait]
impl SessionHandler for SessionIntent {
    fn challenge_method_details(&self) -> Map<String, Value> {
        self.method_details()
    }

    async fn verify(
        &self,
        credential: &Credential,
        request: &Map<String, Value>,
        cost: U256,
    ) -> Result<SessionGrant, PayError> {
        let action = credential.payload.get("action").and_then(Value::as_str).unwrap_or("");
        let result = match action {
            "voucher" => {
                let granted = self.voucher(credential, request, cost).await;
                if let Err(e) = &granted {
                    crate::metrics::record_voucher_rejection(rejection_reason(e));
                }
                return granted;
            }
            "open" => self.open(credential, request).await?,
            "topUp" => self.top_up(credential, request).await?,
            "settle" => self.settle_by_buyer(credential, request).await?,
            "close" => self.close(credential, request).await?,
            other => return Err(invalid_payload(format!("unknown session action {other:?}"))),
        };
        Ok(SessionGrant::Management(result.management_response(&credential.challenge.id)))
    }
}

/// A voucher's reserved price, committed or released after the handler. Dropped without either
/// (its request was dropped before the handler ran, or nobody finished it), it releases itself in
/// a detached task: every reservation ends in exactly one of commit or release (F5).
struct Reservation {
    store: Arc<dyn ChannelStore>,
    replay: Arc<dyn ReplayStore>,
    channel_id: String,
    replay_key: String,
    cost: u128,
    /// Set once [`PendingCharge::commit`] or [`PendingCharge::release`] started.
    finished: bool,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.finished || crate::reverts::is_reverted(crate::reverts::Fix::F5CompletionOnCancel) {
            return;
        }
        tracing::info!(channel = %self.channel_id, "mpp session: reservation dropped unfinished; releasing it");
        let orphan = Box::new(Reservation {
            store: Arc::clone(&self.store),
            replay: Arc::clone(&self.replay),
            channel_id: std::mem::take(&mut self.channel_id),
            replay_key: std::mem::take(&mut self.replay_key),
            cost: self.cost,
            finished: false,
        });
        self.finished = true;
        crate::completion::detach(orphan.release());
    }
}

impl fmt::Debug for Reservation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reservation").field("channel_id", &self.channel_id).field("cost", &self.cost).finish()
    }
}

#[async_trait::async_trait]
impl PendingCharge for Reservation {
    /// `reserved −= cost`, `spent += cost`, `units += 1`. A channel closed (deleted) in the
    /// meantime counts as committed: the close settled the highest voucher, which covers this
    /// request.
    async fn commit(mut self: Box<Self>) -> Result<(), PayError> {
        self.finished = true;
        let cost = self.cost;
        let outcome = self
            .store
            .update(&self.channel_id, |s| {
                let mut next = s.clone();
                if next.commit(cost) {
                    Ok(Some(next))
                } else {
                    Err(PayError::Unknown(EvmPaymentError::InternalSA("reservation not found on the channel".into())))
                }
            })
            .await;
        match outcome {
            Ok(UpdateOutcome::Missing) => {
                tracing::warn!(channel = %self.channel_id, "mpp session: channel closed before a reservation was committed");
                Ok(())
            }
            Ok(_) => Ok(()),
            Err(UpdateError::Rejected(e)) => Err(e),
            Err(UpdateError::Store(e)) => {
                tracing::error!(error = %e, channel = %self.channel_id, "mpp session: cannot commit a reservation");
                Err(PayError::Unknown(EvmPaymentError::InternalSA(format!("channel store unavailable: {e}"))))
            }
        }
    }

    /// `reserved −= cost`, and the voucher's replay key is forgotten (the request may be
    /// retried with the same voucher and challenge). Failures are logged.
    async fn release(mut self: Box<Self>) {
        self.finished = true;
        let cost = self.cost;
        let outcome = self
            .store
            .update(&self.channel_id, |s| {
                let mut next = s.clone();
                Ok::<_, ()>(next.release(cost).then_some(next))
            })
            .await;
        match outcome {
            Ok(UpdateOutcome::Unchanged(_)) => {
                tracing::warn!(channel = %self.channel_id, "mpp session: reservation to release not found");
            }
            Ok(_) => {}
            Err(e) => {
                tracing::error!(error = ?e, channel = %self.channel_id, "mpp session: cannot release a reservation")
            }
        }
        if let Err(e) = self.replay.remove(&self.replay_key).await {
            tracing::warn!(error = %e, "mpp session: cannot forget a voucher replay key");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_json_and_settlement() {
        let r = SessionResult {
            channel_id: format!("0x{}", "ab".repeat(32)),
            cumulative_amount: "0".into(),
            escrow_contract: "0x5E550002e64FaF79B41D89fE8439eEb1be66CE3b".into(),
            status: "open".into(),
            reference: format!("0x{}", "ef".repeat(32)),
        };
        let body = r.management_response("id1");
        assert_eq!(body["receipt"]["intent"], "session");
        let decoded = super::super::encoding::b64url_decode(body["receipt"]["settlement"].as_str().unwrap()).unwrap();
        assert!(String::from_utf8(decoded).unwrap().starts_with(r#"{"channelId":"0xabab"#));
    }

    #[test]
    fn helpers() {
        assert!(parse_amount("12a", "x").is_err());
        assert!(parse_amount("", "x").is_err());
        assert_eq!(parse_amount("340282366920938463463374607431768211455", "x").unwrap(), u128::MAX);
        assert!(parse_amount("340282366920938463463374607431768211456", "x").is_err());
        assert_eq!(normalise_signature("0XABcd"), "0xabcd");
        assert_eq!(canonical_channel("0xAB").unwrap().1, format!("0x{}ab", "00".repeat(31)));
    }
}
