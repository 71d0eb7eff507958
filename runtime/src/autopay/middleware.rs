//! [`AutoPayMiddleware`]'s loop: send unpaid, read the 402, choose an offer, pay it and retry
//! once; the [`Middleware`] entry point.

use super::budget::{AssetId, Reservation};
use super::offers::{
    Offer, OfferKind, SessionTerms, body_reason, receipt_of, settlement_reason, small_json_body, x402_body,
    x402_refusal,
};
use super::send::{send, set_header};
use super::session_book::{Ahead, RouteKey};
use super::{AutoPayError, AutoPayMiddleware, AutoPayOutcome, MwResult, PaymentDetail, Protocol, mw, payment_error};
use crate::x402::{
    PAYMENT_RESPONSE_HEADER, PaymentRequirements, SettleResponse, X_PAYMENT_RESPONSE_HEADER,
    decode_payment_response_header, parse_atomic,
};
use http::Extensions;
use reqwest::{Request, Response, StatusCode};
use reqwest_middleware::{ClientBuilder, ClientWithMiddleware, Middleware, Next};
use tracing::Instrument as _;

impl AutoPayMiddleware {
    /// A client running this middleware over a client built from `http`, with reqwest's own
    /// redirect following switched off: the middleware follows redirects itself (at most
    /// [`MAX_REDIRECTS`](super::MAX_REDIRECTS)), never sends a payment header to a redirect target, removes
    /// credentials on a hop to another origin, and pays a 402 only when it comes from the
    /// origin the request was sent to.
    ///
    /// Composing [`AutoPayMiddleware`] into a client that follows redirects itself defeats this
    /// (reqwest keeps the `PAYMENT-SIGNATURE` header across hosts): use this method.
    pub fn client(&self, http: reqwest::ClientBuilder) -> Result<ClientWithMiddleware, reqwest::Error> {
        let http = http.redirect(reqwest::redirect::Policy::none()).build()?;
        Ok(ClientBuilder::new(http).with(self.clone()).build())
    }

    async fn run(&self, req: Request, ext: &mut Extensions, next: Next<'_>) -> MwResult<Response> {
        let route = RouteKey::of(&req);
        if self.enabled(Protocol::MppSession)
            && let Some(rs) = self.route_session(&route)
        {
            match self.session_ahead(rs, route, req, ext, next.clone()).await? {
                Ahead::Answered(resp) => return Ok(resp),
                Ahead::StartOver(req) => return self.unpaid_first(req, ext, next).await,
            }
        }
        self.unpaid_first(req, ext, next).await
    }

    /// Sends `req` as is (following redirects); pays a 402 of the origin `req` was sent to and
    /// retries once, at the URL that answered 402.
    async fn unpaid_first(&self, req: Request, ext: &mut Extensions, next: Next<'_>) -> MwResult<Response> {
        let origin = req.url().origin();
        let (resp, last) = send(req, ext, next.clone(), None).await?;
        if resp.status() != StatusCode::PAYMENT_REQUIRED {
            return Ok(resp);
        }
        let answered = resp.url().origin();
        let mut offers = self.offers(resp.headers());
        let resp = if offers.offered.is_empty() && small_json_body(&resp) {
            // No challenge in the headers: an x402 challenge may be the JSON body (v1).
            let (status, version, headers) = (resp.status(), resp.version(), resp.headers().clone());
            let body = resp.bytes().await?;
            if let Some(required) = x402_body(&body) {
                self.x402_offers(&required, &mut offers.payable, &mut offers.offered);
                offers.payable.sort_by_key(|o| self.rank(o.protocol));
            }
            let mut rebuilt = http::Response::new(body);
            *rebuilt.status_mut() = status;
            *rebuilt.version_mut() = version;
            *rebuilt.headers_mut() = headers;
            Response::from(rebuilt)
        } else {
            resp
        };
        if offers.offered.is_empty() {
            // A 402 without payment challenges: not ours to answer.
            return Ok(resp);
        }
        // The 402 must come from the origin the request was sent to (finding L7).
        if answered != origin {
            let e = AutoPayError::CrossOriginChallenge { origin: answered.ascii_serialization() };
            tracing::warn!(error = %e, "pay402 autopay: not paying");
            return Err(mw(e));
        }
        let (offer, reservation) = match self.choose(offers).await {
            Ok(chosen) => chosen,
            Err(e) => {
                tracing::warn!(error = %e, "pay402 autopay: not paying");
                return Err(mw(e));
            }
        };
        let Some(retry) = last else { return Err(mw(AutoPayError::BodyNotCloneable)) };
        let route = RouteKey::of(&retry);
        let span = tracing::Span::current();
        span.record("protocol", tracing::field::display(offer.protocol));
        span.record("amount", tracing::field::display(offer.amount));
        span.record("asset", tracing::field::display(&offer.asset));
        let units = self.inner.budget.units(&offer.asset);
        span.record("value", tracing::field::display(units.show(offer.amount)));
        let Offer { protocol, asset, amount, kind } = offer;
        match kind {
            OfferKind::X402 { requirements, header: Some(header), .. } => {
                self.pay_x402(header, *requirements, asset, reservation, retry, ext, next).await
            }
            OfferKind::Charge { challenge, header: Some(header) } => {
                self.pay_charge(header, challenge.id, asset, reservation, retry, ext, next).await
            }
            OfferKind::X402 { header: None, .. } | OfferKind::Charge { header: None, .. } => {
                Err(mw(payment_error(protocol, "the payment was not prepared")))
            }
            OfferKind::Session { challenge, key, suggested_deposit } => {
                let terms = SessionTerms { asset, price: amount, suggested_deposit };
                self.pay_session(route, *challenge, key, terms, reservation, retry, ext, next).await
            }
        }
        .inspect(|_| tracing::info!(%protocol, %amount, value = %units.show(amount), "pay402 autopay: paid"))
    }

    #[allow(clippy::too_many_arguments)]
    async fn pay_x402(
        &self,
        (name, value): (&'static str, String),
        requirements: PaymentRequirements,
        asset: AssetId,
        reservation: Reservation,
        mut retry: Request,
        ext: &mut Extensions,
        next: Next<'_>,
    ) -> MwResult<Response> {
        let header = set_header(&mut retry, Protocol::X402, name, &value).map_err(mw)?;
        // From here on the signed authorization has left the process: whoever holds it can
        // execute it until its `validBefore`, whatever the server answers (finding F8). It is
        // counted as spent in every outcome.
        let resp = match self.send_paid(retry, ext, next, &header).await {
            Ok(r) => r,
            Err(e) => {
                reservation.commit();
                return Err(e);
            }
        };
        let settlement = resp
            .headers()
            .get(PAYMENT_RESPONSE_HEADER)
            .or_else(|| resp.headers().get(X_PAYMENT_RESPONSE_HEADER))
            .and_then(|v| v.to_str().ok())
            .and_then(|v| decode_payment_response_header(v).ok());
        let authorized = reservation.amount();
        let amount = if requirements.scheme == UPTO {
            upto_settled(authorized, resp.status(), settlement.as_ref())
        } else {
            authorized
        };
        reservation.commit_settled(amount);
        let refused_settlement = settlement.as_ref().filter(|s| !s.success).map(settlement_reason);
        if resp.status() == StatusCode::PAYMENT_REQUIRED || refused_settlement.is_some() {
            let status = resp.status().as_u16();
            let reason = match refused_settlement {
                Some(r) => r,
                None => x402_refusal(resp).await,
            };
            tracing::warn!(%status, %reason, "pay402 autopay: the x402 payment was refused; it stays counted");
            return Err(mw(AutoPayError::PaymentRejected { protocol: Protocol::X402, status, reason }));
        }
        let mut resp = resp;
        resp.extensions_mut().insert(AutoPayOutcome {
            protocol: Protocol::X402,
            units: self.inner.budget.units(&asset),
            asset,
            amount,
            authorized,
            detail: PaymentDetail::X402 { requirements: Box::new(requirements), settlement },
        });
        Ok(resp)
    }

    #[allow(clippy::too_many_arguments)]
    async fn pay_charge(
        &self,
        authorization: String,
        challenge_id: String,
        asset: AssetId,
        reservation: Reservation,
        mut retry: Request,
        ext: &mut Extensions,
        next: Next<'_>,
    ) -> MwResult<Response> {
        let header = set_header(&mut retry, Protocol::MppCharge, "authorization", &authorization).map_err(mw)?;
        // One key per logical request: a retry of an unknown outcome is answered from the
        // seller's record, never charged twice (a caller's own key is kept).
        if !retry.headers().contains_key(crate::mpp::IDEMPOTENCY_KEY_HEADER) {
            let key = crate::x402::payment_identifier::generate_payment_id();
            set_header(&mut retry, Protocol::MppCharge, crate::mpp::IDEMPOTENCY_KEY_HEADER, &key).map_err(mw)?;
        }
        // The signed transfer has left the process: counted in every outcome (finding F8).
        let resp = match self.send_paid(retry, ext, next, &header).await {
            Ok(r) => r,
            Err(e) => {
                reservation.commit();
                return Err(e);
            }
        };
        let amount = reservation.amount();
        reservation.commit();
        if resp.status() == StatusCode::PAYMENT_REQUIRED {
            let status = resp.status().as_u16();
            let reason = body_reason(resp).await;
            tracing::warn!(%status, %reason, "pay402 autopay: the MPP charge was refused; it stays counted");
            return Err(mw(AutoPayError::PaymentRejected { protocol: Protocol::MppCharge, status, reason }));
        }
        let mut resp = resp;
        let receipt = receipt_of(&resp);
        resp.extensions_mut().insert(AutoPayOutcome {
            protocol: Protocol::MppCharge,
            units: self.inner.budget.units(&asset),
            asset,
            amount,
            authorized: amount,
            detail: PaymentDetail::MppCharge { challenge_id, receipt },
        });
        Ok(resp)
    }
}

impl AutoPayMiddleware {
    /// Sends a paid request. While its outcome is unknown — the seller answers `503` with
    /// `Retry-After` (its settlement is pending), or the connection fails after the payment was
    /// sent — it resends the **same** request, with the **same** signed payment (never a new one
    /// while the first may still settle), after the wait the seller asked for, until
    /// [`AutoPay::unknown_outcome_wait`](super::AutoPay::unknown_outcome_wait) is used up. Then
    /// the last answer (or error) is returned.
    async fn send_paid(
        &self,
        mut req: Request,
        ext: &mut Extensions,
        next: Next<'_>,
        header: &http::HeaderName,
    ) -> MwResult<Response> {
        let deadline = tokio::time::Instant::now() + self.inner.unknown_outcome_wait;
        loop {
            let copy = req.try_clone();
            let answer = send(req, ext, next.clone(), Some(header)).await.map(|(r, _)| r);
            let wait = match &answer {
                Ok(resp) if resp.status() == StatusCode::SERVICE_UNAVAILABLE => retry_after(resp),
                Ok(_) => None,
                Err(_) => Some(std::time::Duration::from_secs(1)),
            };
            let (Some(wait), Some(again)) = (wait, copy) else { return answer };
            if tokio::time::Instant::now() + wait > deadline {
                return answer;
            }
            match &answer {
                Ok(_) => {
                    tracing::info!(?wait, "pay402 autopay: payment outcome pending; retrying with the same payment")
                }
                Err(e) => {
                    tracing::info!(error = %e, ?wait, "pay402 autopay: no answer to a paid request; retrying with the same payment")
                }
            }
            drop(answer);
            tokio::time::sleep(wait).await;
            req = again;
        }
    }
}

/// The x402 scheme whose settled amount may be below the authorised maximum.
const UPTO: &str = "upto";

/// What an `upto` payment authorised up to `max` counts as spent: the settled `amount` of a
/// successful `PAYMENT-RESPONSE` when it is at most `max`; otherwise `max` — a refusal, no
/// answer, a missing or unreadable amount, or an amount above the maximum (a seller that claims
/// more than it was allowed is not believed either way: it never frees budget).
fn upto_settled(max: crate::evm::U256, status: StatusCode, settlement: Option<&SettleResponse>) -> crate::evm::U256 {
    let Some(s) = settlement.filter(|s| s.success && status != StatusCode::PAYMENT_REQUIRED) else {
        return max;
    };
    match s.amount.as_deref().map(|text| (text, parse_atomic(text))) {
        Some((_, Some(settled))) if settled <= max => settled,
        Some((text, Some(_))) => {
            tracing::error!(settled = %text, %max, "pay402 autopay: the seller reports settling an upto payment above the authorised maximum; the maximum stays counted");
            max
        }
        Some((text, None)) => {
            tracing::error!(settled = %text.chars().take(80).collect::<String>(), %max, "pay402 autopay: unreadable settled amount of an upto payment; the maximum stays counted");
            max
        }
        None => {
            tracing::error!(%max, "pay402 autopay: the PAYMENT-RESPONSE of an upto payment has no amount; the maximum stays counted");
            max
        }
    }
}

/// `Retry-After` in seconds (the HTTP-date form is not followed), at least 1 s.
fn retry_after(resp: &Response) -> Option<std::time::Duration> {
    let secs: u64 = resp.headers().get(http::header::RETRY_AFTER)?.to_str().ok()?.trim().parse().ok()?;
    Some(std::time::Duration::from_secs(secs.max(1)))
}

#[async_trait::async_trait]
impl Middleware for AutoPayMiddleware {
    async fn handle(&self, req: Request, extensions: &mut Extensions, next: Next<'_>) -> MwResult<Response> {
        let span = tracing::info_span!(
            "pay402.autopay",
            method = %req.method(),
            url = %format_args!("{}{}", req.url().origin().ascii_serialization(), req.url().path()),
            protocol = tracing::field::Empty,
            amount = tracing::field::Empty,
            asset = tracing::field::Empty,
            value = tracing::field::Empty,
        );
        self.run(req, extensions, next).instrument(span).await
    }
}
