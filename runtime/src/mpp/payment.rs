//! [`MppPayment`]: a verified MPP payment handed to the handler, and its completion after the
//! handler answered (a session reservation committed or released; a metered stream started by the
//! handler, or charged one event when it answered without streaming).

use super::credential::Credential;
use super::idempotency::{KeyHold, MPP_RETRY_AFTER_SECONDS};
use super::metering::{MeterStep, StreamStart};
use super::method::{PayError, PendingCharge};
use super::receipt::{PAYMENT_RECEIPT_HEADER, Receipt};
use super::stream::PaidStream;
use crate::completion::CancelPolicy;
use crate::metrics::SettlementOutcome;
use crate::okx::sa::EvmPaymentError;
use crate::web::PaymentHttpResponse;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use std::fmt;
use std::sync::Arc;

/// Headers a browser may read on MPP responses.
pub const MPP_EXPOSED_HEADERS: &str = "WWW-Authenticate, Payment-Receipt";

pub(super) type UnknownHook = Arc<dyn Fn(&Credential, &PayError) + Send + Sync>;

/// The `on_settlement_unknown` hooks, carried by [`MppPayment`] to its commit.
#[derive(Clone, Default)]
pub(super) struct UnknownHooks(pub(super) Vec<UnknownHook>);

impl UnknownHooks {
    pub(super) fn fire(&self, credential: &Credential, error: &PayError) {
        if matches!(error, PayError::Unknown(_)) {
            tracing::warn!(error = %error, "mpp: settlement outcome unknown; reported for reconciliation");
            for hook in &self.0 {
                hook(credential, error);
            }
        }
    }
}

impl fmt::Debug for UnknownHooks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} settlement-unknown hook(s)", self.0.len())
    }
}

/// A verified payment, handed to the handler.
#[derive(Debug)]
pub struct MppPayment {
    /// The buyer's credential.
    pub credential: Credential,
    /// The receipt (`Payment-Receipt`).
    pub receipt: Receipt,
    pending: Option<Box<dyn PendingCharge>>,
    unknown: UnknownHooks,
    cancel: CancelPolicy,
    /// The `Idempotency-Key` this request holds until its voucher is committed or released.
    hold: Option<KeyHold>,
    /// A per-event route's stream, for the handler ([`MppPayment::paid_stream`]).
    stream: Option<PaidStream>,
}

impl MppPayment {
    /// A charge paid before the handler: nothing to commit or release.
    pub(super) fn charged(credential: Credential, receipt: Receipt, cancel: CancelPolicy) -> Self {
        Self { credential, receipt, pending: None, unknown: UnknownHooks::default(), cancel, hold: None, stream: None }
    }

    /// A served session voucher: `pending` is committed or released after the handler.
    pub(super) fn reserved(
        credential: Credential,
        receipt: Receipt,
        pending: Option<Box<dyn PendingCharge>>,
        unknown: UnknownHooks,
        cancel: CancelPolicy,
    ) -> Self {
        Self { credential, receipt, pending, unknown, cancel, hold: None, stream: None }
    }

    /// A per-event route's verified stream request: the handler streams through `start`'s meter.
    pub(super) fn streaming(credential: Credential, start: StreamStart, cancel: CancelPolicy) -> Self {
        let receipt = start.receipt.clone();
        let stream = Some(PaidStream::new(start));
        Self { credential, receipt, pending: None, unknown: UnknownHooks::default(), cancel, hold: None, stream }
    }

    /// Whether a reservation waits for the handler's outcome.
    pub(super) fn has_pending(&self) -> bool {
        self.pending.is_some()
    }

    /// Whether this is a metered stream's request.
    pub(super) fn is_stream(&self) -> bool {
        self.stream.is_some()
    }

    /// Keeps the request's `Idempotency-Key` until the reservation is committed or released.
    pub(super) fn hold_key(&mut self, hold: KeyHold) {
        self.hold = Some(hold);
    }

    /// The stream of a per-event route ([`Per::Event`](super::Per::Event)), for the handler;
    /// `None` on other routes.
    pub fn paid_stream(&self) -> Option<PaidStream> {
        self.stream.clone()
    }

    /// What happens to this payment when its request is cancelled while the handler runs (the
    /// coordinator's [`Mpp::cancel_policy`](super::Mpp::cancel_policy)). A session reservation of an `MppPayment` dropped without
    /// [`MppPayment::finish`] is released.
    pub fn cancel_policy(&self) -> CancelPolicy {
        self.cancel
    }

    /// Settles the reservation after the handler answered `status`: below 400 it is committed
    /// and the `Payment-Receipt` headers are returned; otherwise it is released (the buyer is
    /// not charged) and no receipt is sent. A commit that fails leaves the outcome unknown, and
    /// the handler's response is replaced by the returned error (fail closed).
    pub async fn finish(mut self, status: StatusCode) -> Result<HeaderMap, PaymentHttpResponse> {
        if let Some(stream) = self.stream.take() {
            return finish_stream(&self.receipt, &stream, status).await;
        }
        if !crate::web::settles(status) {
            if let Some(hold) = &self.hold {
                hold.forget().await;
            }
            if let Some(p) = self.pending {
                p.release().await;
                crate::metrics::record_settlement(crate::metrics::PROTOCOL_MPP, "session", SettlementOutcome::Released);
            }
            return Ok(HeaderMap::new());
        }
        let committed = match self.pending {
            Some(p) => Some(p.commit().await),
            None => None,
        };
        match &committed {
            Some(Ok(())) => {
                crate::metrics::record_settlement(crate::metrics::PROTOCOL_MPP, "session", SettlementOutcome::Success);
            }
            Some(Err(_)) => {
                crate::metrics::record_settlement(crate::metrics::PROTOCOL_MPP, "session", SettlementOutcome::Unknown);
            }
            None => {}
        }
        if let Some(Err(e)) = committed {
            tracing::error!(error = %e, "mpp: cannot commit a reserved charge");
            self.unknown.fire(&self.credential, &e);
            if let Some(hold) = &self.hold {
                hold.pending(false).await;
            }
            let unknown = matches!(e, PayError::Unknown(_));
            let err = match e {
                PayError::Method(e) | PayError::Unknown(e) => e,
                PayError::Protocol(e) => EvmPaymentError::InternalSA(e.to_string()),
            };
            if unknown {
                // Not known to be committed, nor released: never a new challenge (F-issue 17).
                return Err(PaymentHttpResponse::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "application/json",
                    unknown_problem(&err),
                )
                .with_header("retry-after", &MPP_RETRY_AFTER_SECONDS.to_string()));
            }
            let status = StatusCode::from_u16(err.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return Err(PaymentHttpResponse::new(status, "application/json", err.problem().to_compact_json()));
        }
        if let Some(hold) = &self.hold {
            hold.settled(&self.receipt).await;
        }
        Ok(receipt_headers(&self.receipt))
    }
}

/// The headers added to a successful handler response: `Payment-Receipt`.
pub(super) fn receipt_headers(receipt: &Receipt) -> HeaderMap {
    let mut h = HeaderMap::new();
    if let (Ok(n), Ok(v)) = (
        HeaderName::from_bytes(PAYMENT_RECEIPT_HEADER.as_bytes()),
        HeaderValue::from_str(&receipt.to_payment_receipt()),
    ) {
        h.insert(n, v);
    }
    h.insert(http::header::ACCESS_CONTROL_EXPOSE_HEADERS, HeaderValue::from_static(MPP_EXPOSED_HEADERS));
    h
}

/// The problem of an unknown outcome: the SA's problem, with the `503` it is answered with.
pub(super) fn unknown_problem(e: &EvmPaymentError) -> Vec<u8> {
    let mut problem = e.problem();
    problem.status = 503;
    problem.to_compact_json()
}

/// Completes a per-event route's request: a handler that streamed owns its meter (each event is
/// charged as it is sent); one that answered below 400 without streaming is charged one event
/// (never served free), refused when the channel's vouchers do not cover it.
async fn finish_stream(
    receipt: &Receipt,
    stream: &PaidStream,
    status: StatusCode,
) -> Result<HeaderMap, PaymentHttpResponse> {
    let Some(start) = stream.take() else { return Ok(receipt_headers(receipt)) };
    if !crate::web::settles(status) {
        start.meter.abandon().await;
        return Ok(HeaderMap::new());
    }
    tracing::warn!(channel = %start.channel_id, "mpp stream: a per-event route answered without streaming; charging one event");
    let refused = |e: EvmPaymentError| {
        let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::PAYMENT_REQUIRED);
        PaymentHttpResponse::new(status, "application/json", e.problem().to_compact_json())
    };
    let unknown = |why: String| {
        tracing::error!(error = %why, "mpp stream: cannot charge the one event");
        PaymentHttpResponse::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "application/json",
            unknown_problem(&EvmPaymentError::InternalSA("the charge could not be recorded".into())),
        )
        .with_header("retry-after", &MPP_RETRY_AFTER_SECONDS.to_string())
    };
    let index = start.resume_from + 1;
    match start.meter.step(None, Some(index)).await {
        Ok(MeterStep::Reserved(_)) => {}
        Ok(MeterStep::Free(_)) => return Ok(receipt_headers(receipt)),
        Ok(MeterStep::NeedVoucher(b)) => {
            return Err(refused(EvmPaymentError::InsufficientBalance(format!(
                "the vouchers cover {} of the price {}",
                b.highest.saturating_sub(b.spent).saturating_sub(b.reserved),
                start.price
            ))));
        }
        Ok(_) => return Err(refused(EvmPaymentError::ChannelClosed("channel is closed".into()))),
        Err(e) => return Err(unknown(e.to_string())),
    }
    match start.meter.step(Some(index), None).await {
        Ok(_) => Ok(receipt_headers(receipt)),
        Err(e) => Err(unknown(e.to_string())),
    }
}
