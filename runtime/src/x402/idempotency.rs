//! Exactly once at the x402 seller: what [`X402HttpServer`] answers to the retries of a payment
//! (after an unknown settlement outcome, see [`super::pending`]) and to a repeated
//! `payment-identifier` ([`super::payment_identifier`]), and how those payments complete.

use super::headers::{
    ACCESS_CONTROL_EXPOSE_HEADERS, EXPOSED_HEADERS, PAYMENT_RESPONSE_HEADER, X_PAYMENT_RESPONSE_HEADER,
    encode_payment_response_header,
};
use super::http::{PAYMENT_UNAVAILABLE_ERROR, REPLAYED_PAYMENT_REASON, X402HttpServer, insert_header, observe_payment};
use super::payment::{IdEnd, Identified, Identify, PaymentParts, X402Payment};
use super::payment_identifier::{IdOf, id_of};
use super::pending::Retry;
use super::replay_key::replay_key;
use super::route::{RetryDelivery, RouteConfig};
use super::types::{PaymentPayload, PaymentRequirements, SettleResponse};
use crate::metrics::{PaymentOutcome, SettlementOutcome};
use crate::replay::{RecordStore, unix_now};
use crate::web::{PaymentHttpResponse, RequestContext, ResponseSink};
use http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};
use sha2::Digest as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// How long a payment identifier's first request holds it before a resend may proceed.
const IN_FLIGHT_LEASE_SECONDS: u64 = 300;

/// The `error` of the `409` sent when a payment identifier is reused for another payment or
/// request.
pub const PAYMENT_ID_CONFLICT_ERROR: &str = "This payment identifier was used for another payment or request";
/// The `error` of the `400` sent when a route requires a payment identifier and none was sent.
pub const PAYMENT_ID_REQUIRED_ERROR: &str = "A payment identifier is required (extension `payment-identifier`)";
/// The `error` of the `400` sent when a payment identifier is malformed.
pub const PAYMENT_ID_INVALID_ERROR: &str = "The payment identifier must be 16-128 characters of [A-Za-z0-9_-]";

/// A payment identifier's record (JSON in the record store).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "camelCase")]
enum IdRecord {
    /// Its first request is being processed (until `lease_until`).
    #[serde(rename_all = "camelCase")]
    InFlight { binding: String, lease_until: u64 },
    /// Its settlement outcome is unknown: the payment's own record decides its retries.
    #[serde(rename_all = "camelCase")]
    Pending { binding: String },
    /// Settled: the recorded settlement answers every resend.
    #[serde(rename_all = "camelCase")]
    Settled { binding: String, response: SettleResponse },
}

impl IdRecord {
    fn binding(&self) -> &str {
        match self {
            Self::InFlight { binding, .. } | Self::Pending { binding } | Self::Settled { binding, .. } => binding,
        }
    }
}

impl X402HttpServer {
    fn records(&self) -> &Arc<dyn RecordStore> {
        self.inner.pending.store()
    }

    /// The payment identifier of a paid request to `route` (before verification): see
    /// [`Identify`]; `Err` is the answer (400, 409, 503).
    pub(super) async fn identify(
        &self,
        ctx: &RequestContext,
        route: &RouteConfig,
        payload: &PaymentPayload,
        requirements: &PaymentRequirements,
    ) -> Result<Identify, PaymentHttpResponse> {
        let Some(required) = route.payment_identifier else { return Ok(Identify::No) };
        let id = match id_of(payload) {
            IdOf::Valid(id) => id,
            IdOf::Absent if !required => return Ok(Identify::No),
            IdOf::Absent => {
                return Err(PaymentHttpResponse::json_error(StatusCode::BAD_REQUEST, PAYMENT_ID_REQUIRED_ERROR));
            }
            IdOf::Invalid => {
                return Err(PaymentHttpResponse::json_error(StatusCode::BAD_REQUEST, PAYMENT_ID_INVALID_ERROR));
            }
        };
        // Scoped by the merchant; bound to the exact payload and the request's method and path.
        let key = format!("x402:pid:{}:{id}", requirements.pay_to.to_ascii_lowercase());
        let binding = binding_of(ctx, payload);
        let identified = Identified { key, binding: binding.clone() };
        let unavailable = |e: &dyn std::fmt::Display| {
            tracing::warn!(error = %e, "x402: payment identifier store failed");
            PaymentHttpResponse::json_error(StatusCode::SERVICE_UNAVAILABLE, PAYMENT_UNAVAILABLE_ERROR)
        };
        let expiry = self.inner.pending.expiry(0);
        for _ in 0..3 {
            let current = self.records().get(&identified.key).await.map_err(|e| unavailable(&e))?;
            let Some(bytes) = current else {
                let fresh =
                    IdRecord::InFlight { binding: binding.clone(), lease_until: unix_now() + IN_FLIGHT_LEASE_SECONDS };
                let held = serde_json::to_vec(&fresh).unwrap_or_default();
                match self.records().swap(&identified.key, None, Some(&held), expiry).await {
                    Ok(true) => return Ok(Identify::Fresh(identified)),
                    Ok(false) => continue,
                    Err(e) => return Err(unavailable(&e)),
                }
            };
            let Ok(record) = serde_json::from_slice::<IdRecord>(&bytes) else {
                return Err(unavailable(&"undecodable payment identifier record"));
            };
            if record.binding() != binding {
                tracing::info!(id, "x402: payment identifier reused for another payment or request");
                return Err(PaymentHttpResponse::json_error(StatusCode::CONFLICT, PAYMENT_ID_CONFLICT_ERROR));
            }
            return match record {
                IdRecord::Settled { response, .. } => Ok(Identify::Replay(response)),
                IdRecord::Pending { .. } => Ok(Identify::Resume(identified)),
                IdRecord::InFlight { lease_until, .. } if lease_until >= unix_now() => {
                    Err(self.inner.pending.unknown_response(None))
                }
                IdRecord::InFlight { .. } => {
                    // The first request's instance gave up or died: this one takes it over.
                    let fresh = IdRecord::InFlight {
                        binding: binding.clone(),
                        lease_until: unix_now() + IN_FLIGHT_LEASE_SECONDS,
                    };
                    let held = serde_json::to_vec(&fresh).unwrap_or_default();
                    match self.records().swap(&identified.key, Some(&bytes), Some(&held), expiry).await {
                        Ok(true) => Ok(Identify::Fresh(identified)),
                        Ok(false) => continue,
                        Err(e) => Err(unavailable(&e)),
                    }
                }
            };
        }
        Err(self.inner.pending.unknown_response(None))
    }

    /// Where the handler's response to `payment` goes (see
    /// [`PaymentGate::response_sink`](crate::gate::PaymentGate::response_sink)): kept only when a
    /// retry may need it — its settlement became unknown, or it settled under a payment
    /// identifier — on routes answering retries with the recorded response
    /// ([`RetryDelivery::RecordedResponse`], the default).
    pub fn response_sink(&self, payment: &X402Payment) -> Option<ResponseSink> {
        if payment.0.route.retry_delivery != RetryDelivery::RecordedResponse || payment.0.recorded.is_some() {
            return None;
        }
        let key =
            payment.0.replay_key.clone().or_else(|| payment.0.claim.as_ref().map(|c| c.replay_key().to_owned()))?;
        let (pending, payment) = (self.inner.pending.clone(), payment.clone());
        Some(Box::new(move |response| {
            Box::pin(async move {
                if payment.0.keep_response.load(Ordering::Acquire) {
                    pending.store_response(&key, &response).await;
                }
            })
        }))
    }

    /// A resend of a settled payment identifier: its recorded response when there is one
    /// (`Err`, sent without running the handler), else the payment to run the handler again
    /// with the recorded `PAYMENT-RESPONSE`. Nothing is verified or settled.
    pub(super) async fn replay_identified(
        &self,
        route: &Arc<RouteConfig>,
        payload: PaymentPayload,
        requirements: PaymentRequirements,
        version: u32,
        response: SettleResponse,
    ) -> Result<X402Payment, PaymentHttpResponse> {
        if route.retry_delivery == RetryDelivery::RecordedResponse
            && let Some((key, _)) = replay_key(&payload, &requirements, unix_now())
            && let Some(answer) = self.recorded_answer(&key, &response, version).await
        {
            observe_payment(&requirements.scheme, PaymentOutcome::Verified);
            return Err(answer);
        }
        Ok(Self::replayed(route, payload, requirements, version, response))
    }

    /// The recorded response to the payment `replay_key` names, with its settlement header.
    async fn recorded_answer(
        &self,
        replay_key: &str,
        settled: &SettleResponse,
        version: u32,
    ) -> Option<PaymentHttpResponse> {
        let recorded = self.inner.pending.recorded_response(replay_key).await?;
        let mut answer = recorded.to_response()?;
        if let Ok(v) = encode_payment_response_header(settled) {
            answer = answer.with_header(response_header(version), &v);
        }
        Some(answer.with_header(ACCESS_CONTROL_EXPOSE_HEADERS, EXPOSED_HEADERS))
    }

    /// The payment a resend of a settled payment identifier gets: the handler runs again and its
    /// response carries the recorded `PAYMENT-RESPONSE`; nothing is verified or settled.
    pub(super) fn replayed(
        route: &Arc<RouteConfig>,
        payload: PaymentPayload,
        requirements: PaymentRequirements,
        version: u32,
        response: SettleResponse,
    ) -> X402Payment {
        observe_payment(&requirements.scheme, PaymentOutcome::Verified);
        X402Payment(Arc::new(PaymentParts {
            payer: response.payer.clone().or_else(|| payload.claimed_payer().map(str::to_owned)),
            upto: super::upto::UptoCharge::for_requirements(&requirements),
            payload,
            requirements,
            version,
            replay_key: None,
            route: Arc::clone(route),
            claim: None,
            identified: None,
            recorded: Some(response),
            keep_response: Default::default(),
        }))
    }

    /// Moves the payment identifier `payment` holds (if any) to `next` (`None`: forgets it, so
    /// the client may use it again for a new payment).
    pub(super) async fn end_identified_of(&self, payment: &X402Payment, next: Option<IdEnd<'_>>) {
        if let Some(identified) = &payment.0.identified {
            if matches!(next, Some(IdEnd::Settled(_))) {
                // A resend under the identifier will need the handler's response.
                payment.0.keep_response.store(true, Ordering::Release);
            }
            self.end_identified(identified, next).await;
        }
    }

    /// Moves the payment identifier `identified` to `next` (`None`: forgets it).
    pub(super) async fn end_identified(&self, identified: &Identified, next: Option<IdEnd<'_>>) {
        let record = next.map(|end| match end {
            IdEnd::Pending => IdRecord::Pending { binding: identified.binding.clone() },
            IdEnd::Settled(response) => {
                IdRecord::Settled { binding: identified.binding.clone(), response: response.clone() }
            }
        });
        let store = self.records();
        for _ in 0..3 {
            let current = match store.get(&identified.key).await {
                Ok(Some(c)) => c,
                Ok(None) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "x402: cannot update a payment identifier");
                    return;
                }
            };
            // Only this payment's own record is changed.
            let ours = serde_json::from_slice::<IdRecord>(&current).is_ok_and(|r| r.binding() == identified.binding);
            if !ours {
                return;
            }
            let new = record.as_ref().map(|r| serde_json::to_vec(r).unwrap_or_default());
            match store.swap(&identified.key, Some(&current), new.as_deref(), self.inner.pending.expiry(0)).await {
                Ok(true) => return,
                Ok(false) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "x402: cannot update a payment identifier");
                    return;
                }
            }
        }
    }

    /// A retry of the payment `replay_key` names (its replay key is taken): answered from its
    /// settlement record — delivered once settled, 503 while unknown, a fresh 402 with the failure
    /// once proven failed — or refused as a replay.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn on_replay(
        &self,
        ctx: &RequestContext,
        route: &Arc<RouteConfig>,
        accepts: Vec<PaymentRequirements>,
        replay_key: &str,
        payload: PaymentPayload,
        requirements: PaymentRequirements,
        version: u32,
        identified: Option<&Identified>,
    ) -> Result<X402Payment, PaymentHttpResponse> {
        let failure = match self.inner.pending.on_retry(&self.inner.server, replay_key, &payload).await {
            Retry::NotRecorded => None,
            Retry::Deliver(claim) => {
                tracing::info!(key = %replay_key, "x402: delivering a payment settled earlier");
                observe_payment(&requirements.scheme, PaymentOutcome::Verified);
                // The response the handler produced the first time, when it was recorded: the
                // handler does not run again.
                if route.retry_delivery == RetryDelivery::RecordedResponse
                    && let Some(answer) = self.recorded_answer(replay_key, claim.response(), version).await
                {
                    self.inner.pending.delivered(&claim).await;
                    if let Some(identified) = identified {
                        self.end_identified(identified, Some(IdEnd::Settled(claim.response()))).await;
                    }
                    return Err(answer);
                }
                return Ok(X402Payment(Arc::new(PaymentParts {
                    payer: claim.response().payer.clone().or_else(|| payload.claimed_payer().map(str::to_owned)),
                    upto: super::upto::UptoCharge::for_requirements(&requirements),
                    payload,
                    requirements,
                    version,
                    // Never released: the payment is spent.
                    replay_key: None,
                    route: Arc::clone(route),
                    claim: Some(claim),
                    identified: None,
                    recorded: None,
                    keep_response: Default::default(),
                })));
            }
            Retry::Unknown(tx) => return Err(self.inner.pending.unknown_response(tx.as_deref())),
            Retry::Busy => return Err(self.inner.pending.unknown_response(None)),
            Retry::Unavailable => {
                return Err(PaymentHttpResponse::json_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    PAYMENT_UNAVAILABLE_ERROR,
                ));
            }
            Retry::Failed(failure) => Some(failure),
        };
        let reason =
            failure.as_ref().and_then(|f| f.error_reason.clone()).unwrap_or_else(|| REPLAYED_PAYMENT_REASON.into());
        tracing::info!(key = %replay_key, %reason, "x402: payment refused (replayed, or its settlement failed)");
        observe_payment(&requirements.scheme, PaymentOutcome::Replayed);
        let mut challenge = self.rechallenge(ctx, route, accepts, Some(reason));
        if let Some(failure) = failure
            && let Ok(v) = encode_payment_response_header(&failure)
        {
            challenge = challenge
                .with_header(response_header(version), &v)
                .with_header(ACCESS_CONTROL_EXPOSE_HEADERS, EXPOSED_HEADERS);
        }
        Err(challenge)
    }

    /// Completes a payment settled before this request (a retry holding its delivery, or a
    /// resend of a settled payment identifier): `Some` with the headers to add, `None` for an
    /// ordinary payment. Nothing is settled.
    pub(super) async fn finish_settled_before(&self, payment: &X402Payment, delivered: bool) -> Option<HeaderMap> {
        let response = match (&payment.0.claim, &payment.0.recorded) {
            (Some(claim), _) => {
                if !delivered {
                    self.inner.pending.undeliver(claim).await;
                    return Some(HeaderMap::new());
                }
                self.inner.pending.delivered(claim).await;
                // A payment identifier waiting on this payment is settled too.
                self.end_identified_of(payment, Some(IdEnd::Settled(claim.response()))).await;
                claim.response()
            }
            (None, Some(recorded)) => recorded,
            (None, None) => return None,
        };
        let mut headers = HeaderMap::new();
        if !delivered {
            return Some(headers);
        }
        crate::metrics::record_settlement(
            crate::metrics::PROTOCOL_X402,
            &payment.0.requirements.scheme,
            SettlementOutcome::Success,
        );
        if let Ok(v) = encode_payment_response_header(response) {
            insert_header(&mut headers, response_header(payment.0.version), &v);
        }
        insert_header(&mut headers, ACCESS_CONTROL_EXPOSE_HEADERS, EXPOSED_HEADERS);
        Some(headers)
    }

    /// A settlement of unknown outcome, with the `requirements` it was sent (for `upto`, the
    /// reported amount: a reconciliation re-settles that, never the maximum): recorded as pending (its replay key held as long as the
    /// record), answered `503` with `Retry-After` — never a fresh 402, which would invite a
    /// second payment while the first may still move money.
    pub(super) async fn settlement_unknown(
        &self,
        payment: &X402Payment,
        requirements: &PaymentRequirements,
        transaction: Option<String>,
    ) -> PaymentHttpResponse {
        self.end_identified_of(payment, Some(IdEnd::Pending)).await;
        // A retry will need the handler's response.
        payment.0.keep_response.store(true, Ordering::Release);
        let Some(key) = &payment.0.replay_key else {
            return self.inner.pending.unknown_response(transaction.as_deref());
        };
        let pending = &self.inner.pending;
        let response =
            pending.record_unknown(&self.inner.server, key, &payment.0.payload, requirements, transaction).await;
        // The replay key must outlive the record: a retry is recognised by it.
        let expiry = pending.expiry(0);
        if let Err(e) = self.inner.replay.remove(key).await {
            tracing::warn!(error = %e, "x402: cannot extend a pending payment's replay key");
        } else if let Err(e) = self.inner.replay.insert_if_absent(key, expiry).await {
            tracing::warn!(error = %e, "x402: cannot extend a pending payment's replay key");
        }
        response
    }
}

/// The name of the settlement response header for an x402 `version`.
fn response_header(version: u32) -> &'static str {
    if version == 1 { X_PAYMENT_RESPONSE_HEADER } else { PAYMENT_RESPONSE_HEADER }
}

/// What a payment identifier is bound to: a digest of the request's method and path (with its
/// query) and the exact payload (its authorization, signature, accepted requirements and payer).
fn binding_of(ctx: &RequestContext, payload: &PaymentPayload) -> String {
    let mut hasher = sha2::Sha256::new();
    hasher.update(ctx.method.as_str().as_bytes());
    hasher.update(b" ");
    hasher.update(ctx.path.as_bytes());
    if let Some((_, query)) = ctx.url.split_once('?') {
        hasher.update(b"?");
        hasher.update(query.split('#').next().unwrap_or_default().as_bytes());
    }
    hasher.update(b"\n");
    hasher.update(serde_json::to_vec(payload).unwrap_or_default());
    hasher.finalize().iter().map(|b| format!("{b:02x}")).collect()
}
