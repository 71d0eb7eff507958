//! The `evm` payment method (OKX's `mpp_evm`): [`EvmMethod`] and its `charge` intent
//! ([`ChargeIntent`], wire facts §9.2-9.3).

use super::credential::Credential;
use super::echo::ChallengeEcho;
use super::error::MppError;
use super::metering::StreamStart;
use super::problem::{MppErrorKind, echo};
use super::receipt::Receipt;
use super::wire::EVM_METHOD;
use crate::chain::X_LAYER_CHAIN_ID;
use crate::okx::sa::{
    ChargeAuthorization, ChargeHashPayload, ChargeReceipt, ChargeSettleRequest, ChargeTransactionPayload,
    ChargeVerifyHashRequest, EvmPaymentError, SaChallengeEcho, SaClient, SaError, SaFailureClass, SaOperation,
    TransferAuthorization, classify_sa_code,
};
use crate::reverts::{Fix, is_reverted};
use alloy_primitives::U256;
use serde_json::{Map, Value};
use std::fmt;
use std::sync::Arc;

/// Default token decimals.
pub(crate) const DEFAULT_DECIMALS: u8 = 6;

/// Why a payment was not accepted.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum PayError {
    /// A protocol-level problem (no/malformed credential, forged, expired or reused challenge):
    /// answered with a fresh challenge.
    #[error("{0}")]
    Protocol(MppError),
    /// The method refused the payment (a definite answer: nothing was charged).
    #[error("{0}")]
    Method(EvmPaymentError),
    /// The settlement outcome is unknown (timeout, transport error, malformed answer): the
    /// request is refused and the challenge stays consumed (fail closed).
    #[error("settlement outcome unknown: {0}")]
    Unknown(EvmPaymentError),
}

impl PayError {
    /// The HTTP status of the response.
    pub fn status(&self) -> u16 {
        match self {
            Self::Protocol(e) => e.status(),
            Self::Method(e) | Self::Unknown(e) => e.status(),
        }
    }
}

impl From<MppError> for PayError {
    fn from(e: MppError) -> Self {
        Self::Protocol(e)
    }
}

/// How an SA error code reads for the call that got it.
#[derive(Clone, Copy, Debug)]
pub(super) enum SaAnswer {
    /// Classified by [`classify_sa_code`] for this operation (the charge operations).
    Classified(SaOperation),
    /// Every SA answer is a definite refusal (the session operations, whose deposit or
    /// settlement state the channel store keeps).
    Definite,
}

/// An SA failure as a payment error — the one place the SA's answers become what the buyer
/// sees. The SA's `msg` goes to the logs, never to the buyer (L4); every non-answer (timeout,
/// transport, malformed body) is an unknown outcome. With [`SaAnswer::Classified`], per
/// [`classify_sa_code`]: the buyer's failure is a definite refusal with the class alone, and
/// 70007 on `verifyHash` (an unconfirmed hash the buyer sent) is the buyer's
/// `verification-failed`; a server/configuration failure is a definite 500; a failure where
/// money may have moved is an unknown outcome.
pub(super) fn sa_failure(e: SaError, answer: SaAnswer) -> PayError {
    let SaError::Api { code, error } = &e else {
        tracing::error!(error = %e, ?answer, "mpp: settlement agent call failed; outcome unknown");
        return PayError::Unknown(e.payment_error());
    };
    let SaAnswer::Classified(op) = answer else {
        tracing::info!(code, sa_message = error.message(), "mpp: the settlement agent refused");
        return PayError::Method(e.payment_error());
    };
    let class = classify_sa_code(*code, op);
    match class {
        SaFailureClass::Buyer => {
            tracing::info!(code, sa_message = error.message(), ?op, "mpp: the settlement agent refused the payment");
            if *code == 70007 {
                PayError::Method(EvmPaymentError::VerificationFailed("the transaction is not confirmed".into()))
            } else {
                PayError::Method(e.payment_error())
            }
        }
        SaFailureClass::Server => {
            tracing::error!(
                code,
                sa_message = error.message(),
                ?op,
                "mpp: the settlement agent refused the configuration"
            );
            PayError::Method(EvmPaymentError::InternalSA(format!("SA error code {code}")))
        }
        SaFailureClass::UnknownOutcome => {
            tracing::error!(code, sa_message = error.message(), ?op, "mpp: settlement agent failed; outcome unknown");
            PayError::Unknown(EvmPaymentError::InternalSA(format!("SA error code {code}")))
        }
    }
}

/// F10: a charge receipt is accepted only when it says `success`, names the challenge this
/// credential echoed, and carries a reference. Anything else contradicts the `code: 0`
/// envelope: money may have moved, so the outcome is unknown (reported, challenge consumed)
/// and the handler does not run.
fn accept_receipt(receipt: ChargeReceipt, challenge_id: &str) -> Result<ChargeReceipt, PayError> {
    if !is_reverted(Fix::F10SaFailClosed) {
        let contradiction = if receipt.status != "success" {
            Some("status is not success")
        } else if receipt.challenge_id != challenge_id {
            Some("challengeId is not the echoed challenge")
        } else if receipt.reference.trim().is_empty() {
            Some("reference is empty")
        } else {
            None
        };
        if let Some(why) = contradiction {
            tracing::error!(
                why,
                status = %echo(&receipt.status),
                receipt_challenge = %echo(&receipt.challenge_id),
                challenge = challenge_id,
                reference = %echo(&receipt.reference),
                "mpp: the settlement agent's receipt contradicts a successful charge; outcome unknown"
            );
            return Err(PayError::Unknown(EvmPaymentError::InternalSA(format!("SA receipt refused: {why}"))));
        }
    }
    Ok(receipt)
}

/// The `charge` intent: a one-shot EIP-3009 payment settled (or verified by hash) through the
/// Settlement Agent.
///
/// # Settlement happens before the handler
///
/// As in OKX's SDK, a `transaction` credential is settled (and a `hash` credential verified)
/// before the route's handler runs, so a handler that answers ≥ 400 leaves a buyer who paid and
/// got an error (no `Payment-Receipt` is lost: it is only sent with a success). pay402 offers
/// no "settle after the handler" mode for charges: the `evm` charge draft would allow holding
/// the response until the transfer is confirmed, but OKX's SA has no verify-only charge call —
/// `charge/settle` verifies and broadcasts in one step — so the handler would run for
/// credentials whose signature, balance and nonce nobody had checked, and a `hash` credential
/// has moved the money before the seller sees it. Sellers whose handlers can fail after
/// payment should validate before the payment layer, or use the `session` intent, whose
/// reservations are released when the handler fails.
///
/// # What the SA must answer
///
/// A settlement is accepted only when the SA's receipt says `status: "success"`, names the
/// challenge the credential echoed (`challengeId`) and carries a `reference`; anything else,
/// like an SA error code during `charge/settle` that may hide a broadcast transfer, is an
/// unknown outcome ([`PayError::Unknown`]): refused, reported, the challenge stays consumed.
#[derive(Clone)]
pub struct ChargeIntent {
    sa: Arc<dyn SaClient>,
    chain_id: u64,
    fee_payer: bool,
}

impl fmt::Debug for ChargeIntent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChargeIntent").field("chain_id", &self.chain_id).field("fee_payer", &self.fee_payer).finish()
    }
}

/// Counts a charge settled (or refused) by the Settlement Agent.
fn record_charge_settlement<T>(outcome: &Result<T, PayError>) {
    let outcome = match outcome {
        Ok(_) => crate::metrics::SettlementOutcome::Success,
        Err(PayError::Unknown(_)) => crate::metrics::SettlementOutcome::Unknown,
        Err(_) => crate::metrics::SettlementOutcome::Failed,
    };
    crate::metrics::record_settlement(crate::metrics::PROTOCOL_MPP, "charge", outcome);
}

fn str_field<'a>(obj: &'a Map<String, Value>, key: &str) -> &'a str {
    obj.get(key).and_then(Value::as_str).unwrap_or("")
}

/// A credential's EIP-3009 authorization object as the SA receives it (missing fields `""`, a
/// missing type `eip-3009`).
pub(super) fn transfer(auth: &Map<String, Value>) -> TransferAuthorization {
    TransferAuthorization {
        auth_type: auth.get("type").and_then(Value::as_str).unwrap_or("eip-3009").to_owned(),
        from: str_field(auth, "from").to_owned(),
        to: str_field(auth, "to").to_owned(),
        value: str_field(auth, "value").to_owned(),
        valid_after: str_field(auth, "validAfter").to_owned(),
        valid_before: str_field(auth, "validBefore").to_owned(),
        nonce: str_field(auth, "nonce").to_owned(),
        signature: auth.get("signature").and_then(Value::as_str).map(str::to_owned),
    }
}

fn invalid(detail: impl Into<String>) -> PayError {
    PayError::Method(EvmPaymentError::VerificationFailed(detail.into()))
}

impl ChargeIntent {
    /// A charge intent over a Settlement Agent client, on X Layer, buyer pays gas.
    pub fn new(sa: impl SaClient) -> Self {
        Self::with_sa(Arc::new(sa))
    }

    /// A charge intent over a shared Settlement Agent client.
    pub fn with_sa(sa: Arc<dyn SaClient>) -> Self {
        Self { sa, chain_id: X_LAYER_CHAIN_ID, fee_payer: false }
    }

    /// Sets the chain id.
    pub fn chain_id(mut self, chain_id: u64) -> Self {
        self.chain_id = chain_id;
        self
    }

    /// The seller broadcasts the transfer (`feePayer: true`).
    pub fn fee_payer(mut self, fee_payer: bool) -> Self {
        self.fee_payer = fee_payer;
        self
    }

    /// The chain id.
    pub fn configured_chain_id(&self) -> u64 {
        self.chain_id
    }

    /// `methodDetails` of a charge challenge: `{"chainId", "feePayer"}`.
    pub fn challenge_method_details(&self) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("chainId".into(), Value::from(self.chain_id));
        m.insert("feePayer".into(), Value::Bool(self.fee_payer));
        m
    }

    /// Binds a `transaction` authorization to the request before anything is sent: the payee
    /// must be the request's recipient, the authorization must carry exactly the requested
    /// splits (same count, same order, each to the requested recipient for the requested
    /// amount; none when the request has none), and the authorizations must add up to the
    /// amount exactly (OKX's Python intent checks none of this and trusts the SA alone).
    fn check_authorization(auth: &Map<String, Value>, request: &Map<String, Value>) -> Result<(), PayError> {
        let recipient = str_field(request, "recipient");
        let to = str_field(auth, "to");
        if !to.eq_ignore_ascii_case(recipient) {
            return Err(invalid(format!("authorization pays {}, not the recipient {}", echo(to), echo(recipient))));
        }
        let amount = U256::from_str_radix(str_field(request, "amount"), 10)
            .map_err(|_| invalid("the request amount is not an integer"))?;
        let value = |a: &Map<String, Value>| {
            U256::from_str_radix(str_field(a, "value"), 10)
                .map_err(|_| invalid("authorization value is not an integer"))
        };
        let mut total = value(auth)?;
        let wanted = match request.get("methodDetails").and_then(|d| d.get("splits")) {
            None | Some(Value::Null) => &[][..],
            Some(Value::Array(w)) => w.as_slice(),
            Some(_) => return Err(invalid("the request's splits are not a list")),
        };
        let given = match auth.get("splits") {
            None | Some(Value::Null) => &[][..],
            Some(Value::Array(g)) => g.as_slice(),
            Some(_) => return Err(invalid("authorization splits are not a list")),
        };
        // L2: a split the request did not ask for would divert part of the price.
        if given.len() != wanted.len() {
            return Err(invalid(format!(
                "the authorization carries {} split(s), the request asks for {}",
                given.len(),
                wanted.len()
            )));
        }
        for (i, (split, want)) in given.iter().zip(wanted).enumerate() {
            let split = split.as_object().ok_or_else(|| invalid("a split is not an object"))?;
            total = total.checked_add(value(split)?).ok_or_else(|| invalid("split total overflows"))?;
            let want_to = want.get("recipient").and_then(Value::as_str).unwrap_or("");
            let want_amount = want.get("amount").and_then(Value::as_str).unwrap_or("");
            if want_to.is_empty()
                || want_amount.is_empty()
                || !str_field(split, "to").eq_ignore_ascii_case(want_to)
                || str_field(split, "value") != want_amount
            {
                return Err(invalid(format!("split {i} does not match the requested split")));
            }
        }
        if total != amount {
            return Err(invalid(format!("authorizations total {total}, the request asks {amount}")));
        }
        Ok(())
    }

    /// Verifies (and settles) a charge credential against the request this route asks for.
    pub async fn verify(&self, credential: &Credential, request: &Map<String, Value>) -> Result<Receipt, PayError> {
        let echoed = &credential.challenge;
        let challenge = SaChallengeEcho::from(echoed);
        let source = credential.source.clone().unwrap_or_default();
        let payload = &credential.payload;
        let receipt = match payload.get("type").and_then(Value::as_str) {
            Some("transaction") => {
                let auth = payload.get("authorization").and_then(Value::as_object).ok_or_else(|| {
                    PayError::Protocol(MppError::new(
                        MppErrorKind::InvalidPayload,
                        "transaction payload has no authorization",
                    ))
                })?;
                Self::check_authorization(auth, request)?;
                let t = transfer(auth);
                let splits = auth
                    .get("splits")
                    .and_then(Value::as_array)
                    .map(|s| s.iter().filter_map(Value::as_object).map(transfer).collect::<Vec<_>>());
                let authorization = ChargeAuthorization {
                    auth_type: t.auth_type,
                    from: t.from,
                    to: t.to,
                    value: t.value,
                    valid_after: t.valid_after,
                    valid_before: t.valid_before,
                    nonce: t.nonce,
                    signature: t.signature,
                    splits,
                };
                let req =
                    ChargeSettleRequest { challenge, payload: ChargeTransactionPayload { authorization }, source };
                let settled = crate::metrics::sa_call("charge_settle", self.sa.settle(&req))
                    .await
                    .map_err(|e| sa_failure(e, SaAnswer::Classified(SaOperation::ChargeSettle)))
                    .and_then(|r| accept_receipt(r, &echoed.id));
                record_charge_settlement(&settled);
                settled?
            }
            Some("hash") => {
                let hash = payload.get("hash").and_then(Value::as_str).ok_or_else(|| {
                    PayError::Protocol(MppError::new(MppErrorKind::InvalidPayload, "hash payload has no hash"))
                })?;
                // A buyer-broadcast transfer cannot carry the requested splits (the `evm` charge
                // draft: servers MUST reject `hash` credentials when the request has splits).
                let splits = request.get("methodDetails").and_then(|d| d.get("splits"));
                if splits.and_then(Value::as_array).is_some_and(|s| !s.is_empty())
                    || splits.is_some_and(|s| !s.is_null() && !s.is_array())
                {
                    return Err(invalid("a hash credential cannot pay a request with splits"));
                }
                let req =
                    ChargeVerifyHashRequest { challenge, payload: ChargeHashPayload { hash: hash.to_owned() }, source };
                let verified = crate::metrics::sa_call("charge_verify_hash", self.sa.verify_hash(&req))
                    .await
                    .map_err(|e| sa_failure(e, SaAnswer::Classified(SaOperation::ChargeVerifyHash)))
                    .and_then(|r| accept_receipt(r, &echoed.id));
                record_charge_settlement(&verified);
                verified?
            }
            other => {
                return Err(PayError::Protocol(MppError::new(
                    MppErrorKind::InvalidPayload,
                    format!("unsupported charge payload type {:?}", echo(other.unwrap_or(""))),
                )));
            }
        };
        Ok(Receipt::success(receipt.reference, EVM_METHOD, receipt.external_id))
    }
}

/// A charge reserved before the handler runs, committed only when the handler succeeds
/// (status < 400) and released otherwise — so a failing handler is never charged.
#[async_trait::async_trait]
pub trait PendingCharge: Send + Sync + fmt::Debug {
    /// Makes the reserved amount spent.
    async fn commit(self: Box<Self>) -> Result<(), PayError>;
    /// Returns the reserved amount to the channel.
    async fn release(self: Box<Self>);
}

/// What a verified session credential grants.
#[derive(Debug)]
#[non_exhaustive]
pub enum SessionGrant {
    /// Run the handler: `receipt` goes into `Payment-Receipt`; `pending` is committed or
    /// released after it.
    Serve {
        /// The receipt.
        receipt: Receipt,
        /// The reservation to settle after the handler.
        pending: Option<Box<dyn PendingCharge>>,
    },
    /// A management action (open, topUp, close, settle): answered with this JSON (HTTP 200)
    /// without running the handler.
    Management(Value),
    /// A metered stream may start (or resume): the handler runs and streams through the meter.
    Stream(Box<StreamStart>),
    /// A companion request of an active stream (a voucher raising the channel's balance):
    /// answered with this JSON and `receipt` (HTTP 200) without running the handler.
    Companion {
        /// The receipt (`Payment-Receipt`).
        receipt: Receipt,
        /// The JSON answer.
        body: Value,
    },
}

/// The `session` intent, as the coordinator drives it (implemented by the session module's
/// `SessionIntent`).
#[async_trait::async_trait]
pub trait SessionHandler: Send + Sync + fmt::Debug {
    /// `methodDetails` of a session challenge.
    fn challenge_method_details(&self) -> Map<String, Value>;

    /// Verifies a session credential against the route's request; `cost` is the route's
    /// per-request price in base units.
    async fn verify(
        &self,
        credential: &Credential,
        request: &Map<String, Value>,
        cost: U256,
    ) -> Result<SessionGrant, PayError>;

    /// Verifies a session credential on a route charging `price` per event of a metered
    /// stream ([`Per::Event`](super::Per::Event)): a voucher starts the stream (or resumes it,
    /// `resume` = the buyer's `Last-Event-ID`), or is a companion voucher of the stream its
    /// challenge started; management actions are answered as by [`SessionHandler::verify`].
    /// Default: refused (the handler does not meter streams).
    async fn verify_stream(
        &self,
        credential: &Credential,
        request: &Map<String, Value>,
        price: U256,
        resume: Option<u64>,
    ) -> Result<SessionGrant, PayError> {
        let _ = (credential, request, price, resume);
        Err(PayError::Method(EvmPaymentError::BadRequest("this session handler does not meter streams".into())))
    }
}

/// The `evm` method: the token, payee, decimals and chain a seller charges in, and its intents.
#[derive(Clone, Debug)]
pub struct EvmMethod {
    /// Token contract (`currency`).
    pub currency: String,
    /// Payee (`recipient`).
    pub recipient: String,
    /// Token decimals (human amount → base units).
    pub decimals: u8,
    /// Chain id.
    pub chain_id: u64,
    /// The `charge` intent.
    pub charge: Option<ChargeIntent>,
    /// The `session` intent.
    pub session: Option<Arc<dyn SessionHandler>>,
}

impl EvmMethod {
    /// X Layer USD₮0 (6 decimals), paying `recipient`, with no intents yet.
    pub fn x_layer(recipient: impl Into<String>) -> Self {
        Self {
            currency: crate::chain::X_LAYER_USDT0.to_owned(),
            recipient: recipient.into(),
            decimals: DEFAULT_DECIMALS,
            chain_id: X_LAYER_CHAIN_ID,
            charge: None,
            session: None,
        }
    }

    /// Adds the charge intent.
    pub fn with_charge(mut self, intent: ChargeIntent) -> Self {
        self.charge = Some(intent);
        self
    }

    /// Adds the session intent.
    pub fn with_session(mut self, intent: impl SessionHandler + 'static) -> Self {
        self.session = Some(Arc::new(intent));
        self
    }

    /// The method name (`evm`).
    pub fn name(&self) -> &'static str {
        EVM_METHOD
    }

    /// The intent names this method serves.
    pub fn intents(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        if self.charge.is_some() {
            v.push("charge");
        }
        if self.session.is_some() {
            v.push("session");
        }
        v
    }
}

/// The challenge echo as the SA receives it: `digest`, `opaque` and `description` are not
/// forwarded.
impl From<&ChallengeEcho> for SaChallengeEcho {
    fn from(c: &ChallengeEcho) -> Self {
        SaChallengeEcho {
            id: c.id.clone(),
            realm: c.realm.clone(),
            method: c.method.clone(),
            intent: c.intent.clone(),
            request: c.request.clone(),
            expires: c.expires.clone(),
        }
    }
}
