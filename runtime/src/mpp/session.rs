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
//! * `voucherCredit` — `highest − spent − reserved` right after this reservation: what the
//!   buyer's vouchers signed so far still cover (0 is normal: each voucher pays one request; it
//!   says nothing about the deposit);
//! * `depositAvailable` — `deposit − spent − reserved`: what the deposit can still pay for with
//!   higher vouchers before a top-up;
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

mod close;
mod config;
mod deposit;
mod reservation;
mod stream;
mod voucher;

use super::credential::Credential;
use super::encoding::b64url_encode;
use super::method::{PayError, SaAnswer, SessionGrant, SessionHandler, sa_failure as sa_failure_with, transfer};
use super::store::{ChannelState, ChannelStore, StoreError, UpdateError};
use super::wire::{EVM_METHOD, SESSION_INTENT};
use crate::evm::{self, Address, B256, Signer, U256};
use crate::evm::{ChannelSignatureError, NonceProvider, channel_id_from_hex};
use crate::okx::sa::{EvmPaymentError, SaClient, SaError, SessionReceipt};
use crate::replay::ReplayStore;
use serde_json::{Map, Value};
use std::fmt;
use std::sync::Arc;

/// Status of an open channel in action results.
pub const STATUS_OPEN: &str = "open";
/// Status of a closed channel in action results.
pub const STATUS_CLOSED: &str = "closed";
/// How long a voucher replay key is kept when the challenge has no `expires` (one day).
pub(crate) const VOUCHER_KEY_TTL_SECONDS: u64 = 86_400;
/// The shortest life of a voucher replay key (5 minutes), also for already expired challenges.
pub(crate) const VOUCHER_KEY_MIN_TTL_SECONDS: u64 = 300;
/// How long a counted top-up deposit (by transaction hash, or by the authorization's payer and
/// nonce) is remembered per channel in the replay store (30 days). After that the SA-reported
/// total still refuses a duplicate that adds nothing.
pub(crate) const TOP_UP_KEY_TTL_SECONDS: u64 = 30 * 86_400;

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
    stream_config: crate::mpp::metering::StreamConfig,
    wakers: Arc<stream::Wakers>,
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

/// An SA failure of a session operation: every SA answer is a definite refusal.
fn sa_failure(e: SaError) -> PayError {
    sa_failure_with(e, SaAnswer::Definite)
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

/// A channel id as its 32 bytes and as lower-case `0x` + 64 hex digits.
fn canonical_channel(text: &str) -> Result<(B256, String), PayError> {
    let id = channel_id_from_hex(text).map_err(|e| invalid_payload(format!("channelId: {e}")))?;
    Ok((id, evm::to_hex(id)))
}

/// A signature as lower-case `0x` hex (so replays compare equal whatever the case).
fn normalise_signature(sig: &str) -> String {
    let digits = sig.strip_prefix("0x").or_else(|| sig.strip_prefix("0X")).unwrap_or(sig);
    format!("0x{}", digits.to_ascii_lowercase())
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

    async fn verify_stream(
        &self,
        credential: &Credential,
        request: &Map<String, Value>,
        price: U256,
        resume: Option<u64>,
    ) -> Result<SessionGrant, PayError> {
        let granted = self.verify_stream_credential(credential, request, price, resume).await;
        if let Err(e) = &granted {
            crate::metrics::record_voucher_rejection(rejection_reason(e));
        }
        granted
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
