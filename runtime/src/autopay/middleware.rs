//! [`AutoPayMiddleware`]: the 402 → choose → pay → retry-once loop, and the MPP session book.

use super::budget::{AssetId, Budget, Reservation};
use super::{AutoPayError, DEFAULT_DEPOSIT_REQUESTS, MAX_REFUSAL_BODY_BYTES, PaymentDetail, PaymentOutcome, Protocol};
use crate::chain::NetworkRegistry;
use crate::evm::{Address, PrivateKeySigner, U256};
use crate::mpp::charge_client::{ChargeRequest, MppChargeClient};
use crate::mpp::encoding::b64url_decode;
use crate::mpp::expiry::parse_rfc3339;
use crate::mpp::header::{ParsedChallenge, parse_www_authenticate};
use crate::mpp::receipt::{PAYMENT_RECEIPT_HEADER, Receipt};
use crate::mpp::session_client::SessionClient;
use crate::mpp::{CHARGE_INTENT, EVM_METHOD, SESSION_INTENT};
use crate::reverts::{Fix, is_reverted};
use crate::x402::{AnyPaymentRequired, PaymentRequired, PaymentRequiredV1, PaymentRequirements, SettleResponse};
use crate::x402::{ExactEvmClientScheme, X402Client};
use crate::x402::{
    MAX_HEADER_BYTES, PAYMENT_REQUIRED_HEADER, PAYMENT_RESPONSE_HEADER, PAYMENT_SIGNATURE_HEADER, X_PAYMENT_HEADER,
    X_PAYMENT_RESPONSE_HEADER, decode_payment_required_header, decode_payment_response_header,
};
use http::header::{
    AUTHORIZATION, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, COOKIE, HeaderName, HeaderValue, LOCATION,
    PROXY_AUTHORIZATION, TRANSFER_ENCODING, WWW_AUTHENTICATE,
};
use http::{Extensions, HeaderMap};
use reqwest::{Method, Request, Response, StatusCode, Url};
use reqwest_middleware::{ClientBuilder, ClientWithMiddleware, Middleware, Next};
use serde_json::Value;
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use tracing::Instrument as _;

/// A challenge is not used for a voucher sent ahead when it expires within this margin.
const EXPIRY_MARGIN_SECONDS: i64 = 5;

/// Most redirects the middleware follows for one request (reqwest's default limit).
pub const MAX_REDIRECTS: usize = 10;

type MwResult<T> = Result<T, reqwest_middleware::Error>;

fn mw(e: AutoPayError) -> reqwest_middleware::Error {
    reqwest_middleware::Error::middleware(e)
}

/// One of a channel's facts, as [`AutoPayMiddleware::channels`] and
/// [`AutoPayMiddleware::close_channels`] report them.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ChannelSummary {
    /// The channel id.
    pub channel_id: String,
    /// The highest cumulative voucher signed.
    pub cumulative: U256,
    /// The deposit.
    pub deposit: U256,
}

/// What identifies a channel: the terms a session challenge names.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct ChannelKey {
    realm: String,
    recipient: String,
    currency: String,
    chain_id: u64,
    escrow: String,
}

/// A route: origin, method and path (no query).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct RouteKey {
    origin: String,
    method: String,
    path: String,
}

impl RouteKey {
    fn of(req: &Request) -> Self {
        Self {
            origin: req.url().origin().ascii_serialization(),
            method: req.method().as_str().to_owned(),
            path: req.url().path().to_owned(),
        }
    }
}

#[derive(Debug)]
struct Channel {
    id: String,
    deposit: U256,
    cumulative: U256,
    /// The latest challenge and route, for closing.
    challenge: ParsedChallenge,
    url: Url,
    method: Method,
}

type Slot = Arc<tokio::sync::Mutex<Option<Channel>>>;

#[derive(Clone, Debug)]
struct RouteSession {
    challenge: ParsedChallenge,
    key: ChannelKey,
}

#[derive(Default)]
struct SessionBook {
    channels: HashMap<ChannelKey, Slot>,
    routes: HashMap<RouteKey, RouteSession>,
}

enum OfferKind {
    /// `header`: the signed payment, once prepared.
    X402 {
        required: AnyPaymentRequired,
        requirements: Box<PaymentRequirements>,
        header: Option<(&'static str, String)>,
    },
    /// `header`: the signed credential, once prepared.
    Charge {
        challenge: Box<ParsedChallenge>,
        header: Option<String>,
    },
    Session {
        challenge: Box<ParsedChallenge>,
        key: ChannelKey,
        suggested_deposit: Option<U256>,
    },
}

struct Offer {
    protocol: Protocol,
    asset: AssetId,
    amount: U256,
    kind: OfferKind,
}

struct Offers {
    payable: Vec<Offer>,
    /// Every challenge seen, described.
    offered: Vec<String>,
}

struct Inner {
    preference: Vec<Protocol>,
    budget: Arc<Budget>,
    x402: X402Client,
    charge: MppChargeClient,
    session: SessionClient,
    registry: Arc<NetworkRegistry>,
    /// The trusted session escrows: (chain id, contract).
    escrows: Vec<(u64, Address)>,
    book: Mutex<SessionBook>,
}

/// The auto-paying middleware (see the [module docs](super)). Cheap to clone; clones share the
/// caps, the ledger and the session channels.
#[derive(Clone)]
pub struct AutoPayMiddleware {
    inner: Arc<Inner>,
}

impl fmt::Debug for AutoPayMiddleware {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AutoPayMiddleware")
            .field("payer", &self.inner.charge.address())
            .field("preference", &self.inner.preference)
            .field("budget", &self.inner.budget)
            .finish_non_exhaustive()
    }
}

impl AutoPayMiddleware {
    pub(super) fn new(
        signer: PrivateKeySigner,
        preference: Vec<Protocol>,
        budget: Budget,
        registry: Arc<NetworkRegistry>,
        escrows: Vec<(u64, Address)>,
    ) -> Self {
        let x402 = X402Client::new().register("eip155:*", ExactEvmClientScheme::new(signer.clone()));
        let charge = MppChargeClient::new(signer.clone()).with_registry((*registry).clone());
        let session = SessionClient::new(signer).with_registry((*registry).clone());
        Self {
            inner: Arc::new(Inner {
                preference,
                budget: Arc::new(budget),
                x402,
                charge,
                session,
                registry,
                escrows,
                book: Mutex::new(SessionBook::default()),
            }),
        }
    }

    /// A client running this middleware over a client built from `http`, with reqwest's own
    /// redirect following switched off: the middleware follows redirects itself (at most
    /// [`MAX_REDIRECTS`]), never sends a payment header to a redirect target, removes
    /// credentials on a hop to another origin, and pays a 402 only when it comes from the
    /// origin the request was sent to.
    ///
    /// Composing [`AutoPayMiddleware`] into a client that follows redirects itself defeats this
    /// (reqwest keeps the `PAYMENT-SIGNATURE` header across hosts): use this method.
    pub fn client(&self, http: reqwest::ClientBuilder) -> Result<ClientWithMiddleware, reqwest::Error> {
        let http = http.redirect(reqwest::redirect::Policy::none()).build()?;
        Ok(ClientBuilder::new(http).with(self.clone()).build())
    }

    /// Atomic units of `asset` spent so far: payments (every signed payment that left the
    /// process, including ones the server then refused) and session voucher increments.
    pub fn spent(&self, asset: &AssetId) -> U256 {
        self.inner.budget.spent(asset)
    }

    /// Atomic units of `asset` deposited into session escrows and not (yet) spent by a
    /// voucher. They count against the total cap, also after the channel is closed: the
    /// escrow's refund cannot be verified by this client.
    pub fn escrowed(&self, asset: &AssetId) -> U256 {
        self.inner.budget.escrowed(asset)
    }

    /// Atomic units of `asset` held by payments in flight.
    pub fn reserved(&self, asset: &AssetId) -> U256 {
        self.inner.budget.reserved(asset)
    }

    /// What may still be paid or deposited in `asset` under its total cap (None: no total
    /// cap).
    pub fn remaining(&self, asset: &AssetId) -> Option<U256> {
        self.inner.budget.headroom(asset).ok().flatten()
    }

    /// The open MPP session channels.
    pub async fn channels(&self) -> Vec<ChannelSummary> {
        let mut out = Vec::new();
        for slot in self.slots() {
            if let Some(c) = slot.lock().await.as_ref() {
                out.push(ChannelSummary { channel_id: c.id.clone(), cumulative: c.cumulative, deposit: c.deposit });
            }
        }
        out
    }

    /// Closes every open MPP session channel with its highest voucher (a management request
    /// to the route that last used it; re-signed once under a fresh challenge if the stored
    /// one is refused). The escrow pays the payee the vouched amount and returns the rest of
    /// the deposit. Stops at the first failure (the channels not closed stay usable).
    pub async fn close_channels(&self, http: &reqwest::Client) -> Result<Vec<ChannelSummary>, AutoPayError> {
        let mut closed = Vec::new();
        for slot in self.slots() {
            let mut guard = slot.lock().await;
            let Some(channel) = guard.as_ref() else { continue };
            let mut challenge = channel.challenge.clone();
            let mut attempt = 0;
            loop {
                attempt += 1;
                let header = self
                    .inner
                    .session
                    .close_header(&challenge, &channel.id, channel.cumulative)
                    .map_err(|e| payment_error(Protocol::MppSession, e))?;
                let resp = http
                    .request(channel.method.clone(), channel.url.clone())
                    .header(AUTHORIZATION, header)
                    .send()
                    .await
                    .map_err(|e| AutoPayError::Transport { action: "close", reason: e.to_string() })?;
                if resp.status() == StatusCode::PAYMENT_REQUIRED
                    && attempt == 1
                    && let Some(fresh) = self.session_challenge(resp.headers(), &key_of(&challenge))
                {
                    challenge = fresh;
                    continue;
                }
                check_management(resp, "close", &channel.id).await?;
                break;
            }
            closed.push(ChannelSummary {
                channel_id: channel.id.clone(),
                cumulative: channel.cumulative,
                deposit: channel.deposit,
            });
            let id = channel.id.clone();
            *guard = None;
            drop(guard);
            tracing::info!(channel = %id, "pay402 autopay: channel closed");
        }
        let mut book = self.book();
        book.routes.clear();
        Ok(closed)
    }

    fn slots(&self) -> Vec<Slot> {
        self.book().channels.values().cloned().collect()
    }

    fn book(&self) -> MutexGuard<'_, SessionBook> {
        self.inner.book.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn slot(&self, key: &ChannelKey) -> Slot {
        Arc::clone(self.book().channels.entry(key.clone()).or_default())
    }

    fn enabled(&self, p: Protocol) -> bool {
        self.inner.preference.contains(&p)
    }

    fn rank(&self, p: Protocol) -> usize {
        self.inner.preference.iter().position(|q| *q == p).unwrap_or(usize::MAX)
    }

    /// The cached session of `route`, if its challenge is still fresh.
    fn route_session(&self, route: &RouteKey) -> Option<RouteSession> {
        let mut book = self.book();
        let rs = book.routes.get(route)?.clone();
        let fresh = match &rs.challenge.expires {
            None => true,
            Some(text) => parse_rfc3339(text).is_ok_and(|at| {
                at.unix_timestamp() > time::OffsetDateTime::now_utc().unix_timestamp() + EXPIRY_MARGIN_SECONDS
            }),
        };
        if !fresh {
            book.routes.remove(route);
            return None;
        }
        Some(rs)
    }

    fn forget_channel(&self, key: &ChannelKey) {
        self.book().routes.retain(|_, rs| &rs.key != key);
    }

    /// Every challenge of a 402, the payable ones ranked by preference (stable).
    fn offers(&self, headers: &HeaderMap) -> Offers {
        let mut payable = Vec::new();
        let mut offered = Vec::new();
        if let Some(required) = headers.get(PAYMENT_REQUIRED_HEADER).and_then(|v| v.to_str().ok()) {
            match decode_payment_required_header(required) {
                Ok(required) => self.x402_offers(&required, &mut payable, &mut offered),
                Err(e) => offered.push(format!("x402 (unreadable PAYMENT-REQUIRED: {e})")),
            }
        }
        let www: Vec<&str> = headers.get_all(WWW_AUTHENTICATE).iter().filter_map(|v| v.to_str().ok()).collect();
        if !www.is_empty() {
            match parse_www_authenticate(&www) {
                Ok(challenges) => {
                    for c in challenges {
                        offered.push(format!("mpp {}/{}", c.method, c.intent));
                        if let Some(offer) = self.mpp_offer(c) {
                            payable.push(offer);
                        }
                    }
                }
                Err(e) => offered.push(format!("mpp (unreadable WWW-Authenticate: {e})")),
            }
        }
        payable.sort_by_key(|o| self.rank(o.protocol));
        Offers { payable, offered }
    }

    fn x402_offers(&self, required: &AnyPaymentRequired, payable: &mut Vec<Offer>, offered: &mut Vec<String>) {
        let options: Vec<(PaymentRequirements, AnyPaymentRequired)> = match required {
            AnyPaymentRequired::V2(c) => c
                .accepts
                .iter()
                .map(|r| (r.clone(), AnyPaymentRequired::V2(PaymentRequired { accepts: vec![r.clone()], ..c.clone() })))
                .collect(),
            AnyPaymentRequired::V1(c) => c
                .accepts
                .iter()
                .map(|r| {
                    let single = PaymentRequiredV1 { accepts: vec![r.clone()], ..c.clone() };
                    (PaymentRequirements::from(r.clone()), AnyPaymentRequired::V1(single))
                })
                .collect(),
        };
        for (requirements, single) in options {
            offered.push(format!("x402 {}@{}", requirements.scheme, requirements.network));
            if !self.enabled(Protocol::X402) || !self.inner.x402.supports(&requirements.scheme, &requirements.network) {
                continue;
            }
            let Some(amount) = requirements.amount_atomic() else { continue };
            payable.push(Offer {
                protocol: Protocol::X402,
                asset: AssetId::new(requirements.network.clone(), &requirements.asset),
                amount,
                kind: OfferKind::X402 { required: single, requirements: Box::new(requirements), header: None },
            });
        }
    }

    fn mpp_offer(&self, c: ParsedChallenge) -> Option<Offer> {
        if c.method != EVM_METHOD {
            return None;
        }
        let protocol = match c.intent.as_str() {
            CHARGE_INTENT => Protocol::MppCharge,
            SESSION_INTENT => Protocol::MppSession,
            _ => return None,
        };
        if !self.enabled(protocol) {
            return None;
        }
        let request = ChargeRequest::from_request(&c.request).ok()?;
        let asset = AssetId::new(request.network(), &request.currency_text);
        let kind = match protocol {
            Protocol::MppSession => OfferKind::Session {
                key: key_of(&c),
                suggested_deposit: c
                    .request
                    .get("suggestedDeposit")
                    .and_then(Value::as_str)
                    .and_then(|s| crate::evm::parse_uint256(s).ok()),
                challenge: Box::new(c),
            },
            _ => OfferKind::Charge { challenge: Box::new(c), header: None },
        };
        Some(Offer { protocol, asset, amount: request.amount, kind })
    }

    /// A session challenge for the channel `key` among a 402's challenges.
    fn session_challenge(&self, headers: &HeaderMap, key: &ChannelKey) -> Option<ParsedChallenge> {
        let www: Vec<&str> = headers.get_all(WWW_AUTHENTICATE).iter().filter_map(|v| v.to_str().ok()).collect();
        parse_www_authenticate(&www)
            .ok()?
            .into_iter()
            .find(|c| c.method == EVM_METHOD && c.intent == SESSION_INTENT && &key_of(c) == key)
    }

    /// The first offer, in preference order, that the caps allow and that can be signed
    /// (x402, charge) or opened (session: a token the registry knows); otherwise the most
    /// preferred offer's refusal. Nothing is sent here.
    async fn choose(&self, offers: Offers) -> Result<(Offer, Reservation), AutoPayError> {
        let mut first_refusal = None;
        for mut offer in offers.payable {
            let reserved = match offer.kind {
                // A voucher is covered by the channel's deposit, which is counted when signed.
                OfferKind::Session { .. } => self.inner.budget.reserve_voucher(&offer.asset, offer.amount),
                _ => self.inner.budget.reserve(&offer.asset, offer.amount),
            };
            let prepared = match reserved {
                Ok(reservation) => self.prepare(&mut offer).await.map(|()| reservation),
                Err(e) => Err(e),
            };
            match prepared {
                Ok(reservation) => return Ok((offer, reservation)),
                Err(e) => {
                    tracing::debug!(protocol = %offer.protocol, error = %e, "pay402 autopay: offer refused");
                    first_refusal.get_or_insert(e);
                }
            }
        }
        Err(first_refusal.unwrap_or(AutoPayError::NoAcceptableChallenge { offered: offers.offered }))
    }

    async fn prepare(&self, offer: &mut Offer) -> Result<(), AutoPayError> {
        match &mut offer.kind {
            OfferKind::X402 { required, header, .. } => {
                let signed = self.inner.x402.create_payment_header(required).await;
                *header = Some(signed.map_err(|e| payment_error(Protocol::X402, e))?);
            }
            OfferKind::Charge { challenge, header } => {
                let credential =
                    self.inner.charge.credential_for(challenge).map_err(|e| payment_error(Protocol::MppCharge, e))?;
                *header = Some(credential.to_authorization_header());
            }
            OfferKind::Session { challenge, .. } => {
                self.check_escrow(challenge)?;
                if !is_reverted(Fix::F2EscrowAllowlist) && self.inner.budget.caps(&offer.asset)?.max_deposit.is_none() {
                    return Err(AutoPayError::NoMaxDeposit { asset: offer.asset.clone() });
                }
                let request = ChargeRequest::from_request(&challenge.request)
                    .map_err(|e| payment_error(Protocol::MppSession, e))?;
                if request.token_info(&self.inner.registry).is_none() {
                    return Err(payment_error(
                        Protocol::MppSession,
                        format!("unsupported token {} on chain {}", request.currency_text, request.chain_id),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Refuses a session challenge whose deposits would go to an escrow this client does not
    /// trust (finding F2): nothing is signed for it.
    fn check_escrow(&self, challenge: &ParsedChallenge) -> Result<(), AutoPayError> {
        let (chain_id, escrow) =
            SessionClient::escrow_of(challenge).map_err(|e| payment_error(Protocol::MppSession, e))?;
        if !is_reverted(Fix::F2EscrowAllowlist) && !self.inner.escrows.contains(&(chain_id, escrow)) {
            tracing::warn!(chain_id, %escrow, "pay402 autopay: session escrow not trusted");
            return Err(AutoPayError::UntrustedEscrow { chain_id, escrow: crate::evm::checksum(&escrow) });
        }
        Ok(())
    }

    async fn run(&self, req: Request, ext: &mut Extensions, next: Next<'_>) -> MwResult<Response> {
        let route = RouteKey::of(&req);
        if self.enabled(Protocol::MppSession)
            && let Some(rs) = self.route_session(&route)
        {
            return self.session_ahead(rs, route, req, ext, next).await;
        }
        self.unpaid_first(req, ext, next).await
    }

    /// Sends `req`, following redirects itself (finding L7; the client of
    /// [`AutoPayMiddleware::client`] follows none): `payment`, the header carrying this
    /// request's payment, is removed on every hop (a payment is for the URL it was made for),
    /// and credentials and payment headers on a hop to another origin. Returns the final
    /// response and a copy of the request that got it (None if the body cannot be cloned).
    async fn send(
        &self,
        mut req: Request,
        ext: &mut Extensions,
        next: Next<'_>,
        payment: Option<&HeaderName>,
    ) -> MwResult<(Response, Option<Request>)> {
        let mut hops = 0;
        loop {
            let copy = req.try_clone();
            let sent = req.url().origin();
            let resp = next.clone().run(req, ext).await?;
            if resp.url().origin() != sent {
                tracing::warn!(
                    "pay402 autopay: the HTTP client followed a redirect to another origin itself; build it with \
                     AutoPayMiddleware::client"
                );
            }
            if hops >= MAX_REDIRECTS {
                return Ok((resp, copy));
            }
            let Some(target) = redirect_target(&resp) else { return Ok((resp, copy)) };
            let Some(hop) = copy.as_ref().and_then(Request::try_clone) else { return Ok((resp, copy)) };
            req = redirected(hop, resp.status(), target, payment);
            hops += 1;
        }
    }

    /// Sends `req` as is (following redirects); pays a 402 of the origin `req` was sent to and
    /// retries once, at the URL that answered 402.
    async fn unpaid_first(&self, req: Request, ext: &mut Extensions, next: Next<'_>) -> MwResult<Response> {
        let origin = req.url().origin();
        let (resp, last) = self.send(req, ext, next.clone(), None).await?;
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
        .inspect(|_| tracing::info!(%protocol, %amount, "pay402 autopay: paid"))
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
        let resp = match self.send(retry, ext, next, Some(&header)).await {
            Ok((r, _)) => r,
            Err(e) => {
                reservation.commit();
                return Err(e);
            }
        };
        let amount = reservation.amount();
        reservation.commit();
        let settlement = resp
            .headers()
            .get(PAYMENT_RESPONSE_HEADER)
            .or_else(|| resp.headers().get(X_PAYMENT_RESPONSE_HEADER))
            .and_then(|v| v.to_str().ok())
            .and_then(|v| decode_payment_response_header(v).ok());
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
        resp.extensions_mut().insert(PaymentOutcome {
            protocol: Protocol::X402,
            asset,
            amount,
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
        // The signed transfer has left the process: counted in every outcome (finding F8).
        let resp = match self.send(retry, ext, next, Some(&header)).await {
            Ok((r, _)) => r,
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
        resp.extensions_mut().insert(PaymentOutcome {
            protocol: Protocol::MppCharge,
            asset,
            amount,
            detail: PaymentDetail::MppCharge { challenge_id, receipt },
        });
        Ok(resp)
    }

    /// After a 402 chose a session: open the channel if there is none, top it up if needed,
    /// then retry with a voucher.
    #[allow(clippy::too_many_arguments)]
    async fn pay_session(
        &self,
        route: RouteKey,
        challenge: ParsedChallenge,
        key: ChannelKey,
        terms: SessionTerms,
        reservation: Reservation,
        retry: Request,
        ext: &mut Extensions,
        next: Next<'_>,
    ) -> MwResult<Response> {
        let slot = self.slot(&key);
        let mut guard = slot.lock().await;
        let mut opened = false;
        if guard.is_none() {
            self.check_escrow(&challenge).map_err(mw)?;
            let deposit = self.deposit(&terms, U256::ZERO).map_err(mw)?;
            let hold = self.inner.budget.reserve_deposit(&terms.asset, deposit).map_err(mw)?;
            let (channel_id, header) = self
                .inner
                .session
                .open_header(&challenge, deposit)
                .map_err(|e| mw(payment_error(Protocol::MppSession, e)))?;
            let open = retry.try_clone().ok_or_else(|| mw(AutoPayError::BodyNotCloneable))?;
            let sent = self.manage(open, &header, "open", &channel_id, ext, next.clone()).await;
            // The deposit authorization has left the process, accepted or not: it stays
            // counted (a refused open leaves no channel to spend it).
            hold.commit();
            sent?;
            tracing::info!(channel = %channel_id, %deposit, "pay402 autopay: channel opened");
            *guard = Some(Channel {
                id: channel_id,
                deposit,
                cumulative: U256::ZERO,
                challenge: challenge.clone(),
                url: retry.url().clone(),
                method: retry.method().clone(),
            });
            opened = true;
        }
        let Some(channel) = guard.as_mut() else {
            return Err(mw(AutoPayError::Config("the session channel vanished".into())));
        };
        channel.challenge = challenge.clone();
        channel.url = retry.url().clone();
        channel.method = retry.method().clone();
        let topped_up = self.top_up_if_needed(channel, &terms, &retry, ext, next.clone()).await?;
        let (resp, cumulative) = self.send_voucher(channel, &challenge, reservation, retry, ext, next).await?;
        self.book().routes.insert(route, RouteSession { challenge, key: key.clone() });
        self.session_answer(resp, &mut guard, &key, &terms, terms.price, cumulative, opened, topped_up).await
    }

    /// A request to a route with a fresh cached session challenge: the voucher goes with the
    /// first send; a 402 for the same channel re-signs it once under the fresh challenge.
    async fn session_ahead(
        &self,
        rs: RouteSession,
        route: RouteKey,
        req: Request,
        ext: &mut Extensions,
        next: Next<'_>,
    ) -> MwResult<Response> {
        let Some(terms) = SessionTerms::of(&rs.challenge) else {
            self.book().routes.remove(&route);
            return self.unpaid_first(req, ext, next).await;
        };
        let reservation = self.inner.budget.reserve_voucher(&terms.asset, terms.price).map_err(|e| {
            tracing::warn!(error = %e, "pay402 autopay: not paying");
            mw(e)
        })?;
        let span = tracing::Span::current();
        span.record("protocol", tracing::field::display(Protocol::MppSession));
        span.record("amount", tracing::field::display(terms.price));
        span.record("asset", tracing::field::display(&terms.asset));
        let slot = self.slot(&rs.key);
        let mut guard = slot.lock().await;
        let Some(channel) = guard.as_mut() else {
            // Closed meanwhile: start over.
            drop(guard);
            reservation.release();
            self.book().routes.remove(&route);
            return self.unpaid_first(req, ext, next).await;
        };
        let backup = req.try_clone();
        let url = req.url().clone();
        let topped_up = self.top_up_if_needed(channel, &terms, &req, ext, next.clone()).await?;
        let (resp, mut cumulative) =
            self.send_voucher(channel, &rs.challenge, reservation, req, ext, next.clone()).await?;
        let mut amount = terms.price;
        let same_url = resp.url().origin() == url.origin() && resp.url().path() == url.path();
        let resp = match (resp.status(), backup) {
            (StatusCode::PAYMENT_REQUIRED, Some(mut retry)) if same_url => {
                let Some(fresh) = self.session_challenge(resp.headers(), &rs.key) else {
                    self.book().routes.remove(&route);
                    return self
                        .session_answer(resp, &mut guard, &rs.key, &terms, amount, cumulative, false, topped_up)
                        .await;
                };
                // The refused voucher stays counted (it was signed and sent); it still covers
                // `price`. A higher fresh price needs the difference on top, and the fresh
                // price itself must fit the per-request cap (finding L8).
                let Some(fresh_terms) = SessionTerms::of(&fresh) else {
                    self.book().routes.remove(&route);
                    return Err(mw(payment_error(Protocol::MppSession, "the fresh session challenge is malformed")));
                };
                self.inner.budget.check_request(&terms.asset, fresh_terms.price).map_err(mw)?;
                channel.challenge = fresh.clone();
                if let Some(extra) = fresh_terms.price.checked_sub(terms.price).filter(|e| !e.is_zero()) {
                    let more = self.inner.budget.reserve_voucher(&terms.asset, extra).map_err(mw)?;
                    let extra_terms = SessionTerms { price: extra, ..fresh_terms };
                    self.top_up_if_needed(channel, &extra_terms, &retry, ext, next.clone()).await?;
                    more.commit();
                    amount += extra;
                    cumulative += extra;
                }
                let header = self
                    .inner
                    .session
                    .voucher_header(&fresh, &channel.id, cumulative)
                    .map_err(|e| mw(payment_error(Protocol::MppSession, e)))?;
                channel.cumulative = cumulative;
                let name = set_header(&mut retry, Protocol::MppSession, "authorization", &header).map_err(mw)?;
                self.book().routes.insert(route, RouteSession { challenge: fresh, key: rs.key.clone() });
                self.send(retry, ext, next, Some(&name)).await?.0
            }
            _ => resp,
        };
        self.session_answer(resp, &mut guard, &rs.key, &terms, amount, cumulative, false, topped_up).await
    }

    /// Signs and sends the next voucher (cumulative + price). The reservation is committed as
    /// the voucher leaves: a signed voucher is claimable.
    async fn send_voucher(
        &self,
        channel: &mut Channel,
        challenge: &ParsedChallenge,
        reservation: Reservation,
        mut req: Request,
        ext: &mut Extensions,
        next: Next<'_>,
    ) -> MwResult<(Response, U256)> {
        let cumulative = channel.cumulative.saturating_add(reservation.amount());
        if cumulative > channel.deposit {
            return Err(mw(payment_error(Protocol::MppSession, "the voucher would exceed the channel's deposit")));
        }
        let header = self
            .inner
            .session
            .voucher_header(challenge, &channel.id, cumulative)
            .map_err(|e| mw(payment_error(Protocol::MppSession, e)))?;
        let name = set_header(&mut req, Protocol::MppSession, "authorization", &header).map_err(mw)?;
        channel.cumulative = cumulative;
        reservation.commit();
        Ok((self.send(req, ext, next, Some(&name)).await?.0, cumulative))
    }

    #[allow(clippy::too_many_arguments)]
    async fn session_answer(
        &self,
        mut resp: Response,
        guard: &mut Option<Channel>,
        key: &ChannelKey,
        terms: &SessionTerms,
        amount: U256,
        cumulative: U256,
        opened: bool,
        topped_up: bool,
    ) -> MwResult<Response> {
        let status = resp.status();
        if status == StatusCode::GONE {
            // The server no longer knows the channel: forget it (a later 402 opens a new one).
            *guard = None;
            self.forget_channel(key);
        }
        if status == StatusCode::PAYMENT_REQUIRED || status == StatusCode::GONE {
            let reason = body_reason(resp).await;
            return Err(mw(AutoPayError::PaymentRejected {
                protocol: Protocol::MppSession,
                status: status.as_u16(),
                reason,
            }));
        }
        let (channel_id, deposit) = guard.as_ref().map(|c| (c.id.clone(), c.deposit)).unwrap_or_default();
        let receipt = receipt_of(&resp);
        resp.extensions_mut().insert(PaymentOutcome {
            protocol: Protocol::MppSession,
            asset: terms.asset.clone(),
            amount,
            detail: PaymentDetail::MppSession { channel_id, cumulative, deposit, opened, topped_up, receipt },
        });
        Ok(resp)
    }

    /// Tops the deposit up when the next voucher would exceed it.
    async fn top_up_if_needed(
        &self,
        channel: &mut Channel,
        terms: &SessionTerms,
        req: &Request,
        ext: &mut Extensions,
        next: Next<'_>,
    ) -> MwResult<bool> {
        let needed = channel.cumulative.saturating_add(terms.price);
        if needed <= channel.deposit {
            return Ok(false);
        }
        let unspent = channel.deposit.saturating_sub(channel.cumulative);
        self.check_escrow(&channel.challenge).map_err(mw)?;
        let amount = self.deposit(terms, unspent).map_err(mw)?;
        let hold = self.inner.budget.reserve_deposit(&terms.asset, amount).map_err(mw)?;
        let header = self
            .inner
            .session
            .top_up_header(&channel.challenge, &channel.id, amount)
            .map_err(|e| mw(payment_error(Protocol::MppSession, e)))?;
        let top_up = req.try_clone().ok_or_else(|| mw(AutoPayError::BodyNotCloneable))?;
        let sent = self.manage(top_up, &header, "topUp", &channel.id, ext, next).await;
        // The top-up authorization has left the process: counted whatever the answer.
        hold.commit();
        sent?;
        channel.deposit = channel.deposit.saturating_add(amount);
        tracing::info!(channel = %channel.id, %amount, "pay402 autopay: channel topped up");
        Ok(true)
    }

    /// The deposit (or top-up) for a channel with `unspent` vouchable deposit left: the
    /// configured one, else `suggestedDeposit`, else [`DEFAULT_DEPOSIT_REQUESTS`] × price;
    /// at most the maximum deposit and the remaining total budget, at least what the next
    /// voucher needs (when that does not fit, [`Budget::reserve_deposit`] refuses it).
    fn deposit(&self, terms: &SessionTerms, unspent: U256) -> Result<U256, AutoPayError> {
        let caps = self.inner.budget.caps(&terms.asset)?;
        let needed = terms.price.saturating_sub(unspent).max(U256::from(1u8));
        let wanted = caps
            .session_deposit
            .or(terms.suggested_deposit)
            .unwrap_or_else(|| terms.price.saturating_mul(U256::from(DEFAULT_DEPOSIT_REQUESTS)));
        if is_reverted(Fix::F2EscrowAllowlist) {
            return Ok(wanted.max(needed));
        }
        let max = caps.max_deposit.ok_or_else(|| AutoPayError::NoMaxDeposit { asset: terms.asset.clone() })?;
        let mut amount = wanted.min(max);
        if let Some(room) = self.inner.budget.headroom(&terms.asset)? {
            amount = amount.min(room);
        }
        Ok(amount.max(needed))
    }

    /// Sends a management action (open, topUp) and checks the 200 JSON answer.
    async fn manage(
        &self,
        mut req: Request,
        header: &str,
        action: &'static str,
        channel_id: &str,
        ext: &mut Extensions,
        next: Next<'_>,
    ) -> MwResult<()> {
        set_header(&mut req, Protocol::MppSession, "authorization", header).map_err(mw)?;
        let resp =
            next.run(req, ext).await.map_err(|e| mw(AutoPayError::Transport { action, reason: e.to_string() }))?;
        check_management(resp, action, channel_id).await.map_err(mw)
    }
}

/// What a session voucher needs from its challenge.
struct SessionTerms {
    asset: AssetId,
    price: U256,
    suggested_deposit: Option<U256>,
}

impl SessionTerms {
    fn of(c: &ParsedChallenge) -> Option<Self> {
        let request = ChargeRequest::from_request(&c.request).ok()?;
        Some(Self {
            asset: AssetId::new(request.network(), &request.currency_text),
            price: request.amount,
            suggested_deposit: c
                .request
                .get("suggestedDeposit")
                .and_then(Value::as_str)
                .and_then(|s| crate::evm::parse_uint256(s).ok()),
        })
    }
}

fn key_of(c: &ParsedChallenge) -> ChannelKey {
    let text = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or_default().to_ascii_lowercase();
    let details = c.request.get("methodDetails");
    ChannelKey {
        realm: c.realm.clone(),
        recipient: text(c.request.get("recipient")),
        currency: text(c.request.get("currency")),
        chain_id: ChargeRequest::from_request(&c.request).map_or(0, |r| r.chain_id),
        escrow: text(details.and_then(|d| d.get("escrowContract"))),
    }
}

/// A JSON body of known length within [`MAX_HEADER_BYTES`].
fn small_json_body(resp: &Response) -> bool {
    let json = resp
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.to_ascii_lowercase().contains("json"));
    json && resp.content_length().is_some_and(|n| usize::try_from(n).is_ok_and(|n| n <= MAX_HEADER_BYTES))
}

/// An x402 challenge carried in a 402 body (`x402Version` 1 or 2).
fn x402_body(body: &[u8]) -> Option<AnyPaymentRequired> {
    let value: Value = serde_json::from_slice(body).ok()?;
    match value.get("x402Version").and_then(Value::as_u64)? {
        1 => serde_json::from_value(value).ok().map(AnyPaymentRequired::V1),
        2 => serde_json::from_value(value).ok().map(AnyPaymentRequired::V2),
        _ => None,
    }
}

fn payment_error(protocol: Protocol, e: impl fmt::Display) -> AutoPayError {
    AutoPayError::Payment { protocol, reason: e.to_string() }
}

/// Sets a payment header; returns its name.
fn set_header(req: &mut Request, protocol: Protocol, name: &str, value: &str) -> Result<HeaderName, AutoPayError> {
    let bad = |e: &dyn fmt::Display| AutoPayError::Payment { protocol, reason: e.to_string() };
    let name = HeaderName::from_bytes(name.as_bytes()).map_err(|e| bad(&e))?;
    let value = HeaderValue::from_str(value).map_err(|e| bad(&e))?;
    req.headers_mut().insert(name.clone(), value);
    Ok(name)
}

/// Where a redirect (301, 302, 303, 307, 308 with a `Location` resolving to an http(s) URL)
/// points.
fn redirect_target(resp: &Response) -> Option<Url> {
    let status = resp.status();
    let redirect = [
        StatusCode::MOVED_PERMANENTLY,
        StatusCode::FOUND,
        StatusCode::SEE_OTHER,
        StatusCode::TEMPORARY_REDIRECT,
        StatusCode::PERMANENT_REDIRECT,
    ];
    if !redirect.contains(&status) {
        return None;
    }
    let location = resp.headers().get(LOCATION)?.to_str().ok()?;
    let target = resp.url().join(location).ok()?;
    matches!(target.scheme(), "http" | "https").then_some(target)
}

/// The request of the next hop of a redirect (finding L7): `payment` is removed on every hop;
/// on a hop to another origin so are credentials and every payment header (reqwest alone
/// keeps `PAYMENT-SIGNATURE` and `X-PAYMENT`). 303 (and 301/302 after a POST) turn into a GET
/// without body.
fn redirected(mut req: Request, status: StatusCode, target: Url, payment: Option<&HeaderName>) -> Request {
    let cross_origin = target.origin() != req.url().origin();
    let headers = req.headers_mut();
    if let Some(name) = payment {
        headers.remove(name);
    }
    if cross_origin {
        for name in [AUTHORIZATION, COOKIE, PROXY_AUTHORIZATION, WWW_AUTHENTICATE] {
            headers.remove(name);
        }
        for name in ["cookie2", PAYMENT_SIGNATURE_HEADER, X_PAYMENT_HEADER] {
            headers.remove(name);
        }
    }
    let method = req.method().clone();
    let to_get = (status == StatusCode::SEE_OTHER && method != Method::HEAD)
        || ((status == StatusCode::MOVED_PERMANENTLY || status == StatusCode::FOUND) && method == Method::POST);
    if to_get {
        *req.method_mut() = Method::GET;
        *req.body_mut() = None;
        for name in [CONTENT_TYPE, CONTENT_LENGTH, CONTENT_ENCODING, TRANSFER_ENCODING] {
            req.headers_mut().remove(name);
        }
    }
    *req.url_mut() = target;
    req
}

fn receipt_of(resp: &Response) -> Option<Receipt> {
    let value = resp.headers().get(PAYMENT_RECEIPT_HEADER)?.to_str().ok()?;
    Receipt::from_payment_receipt(value).ok()
}

fn settlement_reason(s: &SettleResponse) -> String {
    s.error_reason.clone().or_else(|| s.error_message.clone()).unwrap_or_else(|| "settlement failed".to_owned())
}

/// Up to [`MAX_REFUSAL_BODY_BYTES`] of the body.
async fn body_prefix(mut resp: Response) -> Vec<u8> {
    let mut buf = Vec::new();
    while buf.len() < MAX_REFUSAL_BODY_BYTES {
        match resp.chunk().await {
            Ok(Some(chunk)) => buf.extend_from_slice(&chunk),
            _ => break,
        }
    }
    buf.truncate(MAX_REFUSAL_BODY_BYTES);
    buf
}

/// The reason of a refusal: a problem `detail`/`type`, an `error`, or the status text.
async fn body_reason(resp: Response) -> String {
    let status = resp.status();
    let body = body_prefix(resp).await;
    let json: Option<Value> = serde_json::from_slice(&body).ok();
    let field = |k: &str| json.as_ref().and_then(|j| j.get(k)).and_then(Value::as_str).map(str::to_owned);
    field("detail")
        .or_else(|| field("error"))
        .or_else(|| field("errorReason"))
        .or_else(|| field("type"))
        .unwrap_or_else(|| status.canonical_reason().unwrap_or("refused").to_owned())
}

/// The reason of an x402 refusal: the new challenge's `error`, else the body's.
async fn x402_refusal(resp: Response) -> String {
    let from_header = resp
        .headers()
        .get(PAYMENT_REQUIRED_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| decode_payment_required_header(v).ok())
        .and_then(|r| match r {
            AnyPaymentRequired::V2(c) => c.error,
            AnyPaymentRequired::V1(c) => c.error,
        });
    match from_header {
        Some(reason) => reason,
        None => body_reason(resp).await,
    }
}

/// A management answer must be 200 `{"status":"ok","receipt":{…,"settlement":…}}` naming
/// `channel_id`.
async fn check_management(resp: Response, action: &'static str, channel_id: &str) -> Result<(), AutoPayError> {
    let status = resp.status();
    if status != StatusCode::OK {
        let reason = body_reason(resp).await;
        return Err(AutoPayError::SessionRefused { action, status: status.as_u16(), reason });
    }
    let body = body_prefix(resp).await;
    let refused =
        |reason: &str| AutoPayError::SessionRefused { action, status: status.as_u16(), reason: reason.into() };
    let json: Value = serde_json::from_slice(&body).map_err(|_| refused("the answer is not JSON"))?;
    if json.get("status").and_then(Value::as_str) != Some("ok") {
        return Err(refused("the answer's status is not \"ok\""));
    }
    let named = json
        .pointer("/receipt/settlement")
        .and_then(Value::as_str)
        .and_then(|s| b64url_decode(s).ok())
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .and_then(|v| v.get("channelId").and_then(Value::as_str).map(str::to_ascii_lowercase));
    match named {
        Some(id) if id == channel_id.to_ascii_lowercase() => Ok(()),
        Some(id) => Err(refused(&format!("the server answered for channel {id}, not {channel_id}"))),
        None => Err(refused("the answer names no channel")),
    }
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
        );
        self.run(req, extensions, next).instrument(span).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mpp::encoding::b64url_encode;
    use serde_json::json;

    const CHANNEL: &str = "0x7b78d732ee7330a986edd91299622d8d10be37ef355bb1df0008e52126182d3d";

    fn response(status: u16, body: &str) -> Response {
        let resp = http::Response::builder().status(status).body(body.to_owned()).expect("response");
        Response::from(resp)
    }

    fn management(channel: &str) -> String {
        let settlement = b64url_encode(json!({"channelId": channel, "status": "open"}).to_string());
        json!({"status": "ok", "receipt": {"id": "c", "status": "success", "settlement": settlement}}).to_string()
    }

    #[tokio::test]
    async fn management_answers_are_checked() {
        assert_eq!(check_management(response(200, &management(CHANNEL)), "open", CHANNEL).await, Ok(()));
        let upper = CHANNEL.to_ascii_uppercase().replacen("0X", "0x", 1);
        assert_eq!(check_management(response(200, &management(&upper)), "open", CHANNEL).await, Ok(()));
        let refused = |status: u16, body: &str| {
            let resp = response(status, body);
            async move { check_management(resp, "open", CHANNEL).await.expect_err("refused") }
        };
        let other = format!("0x{}", "11".repeat(32));
        for (status, body, want) in [
            (402, r#"{"detail":"insufficient funds"}"#.to_owned(), "insufficient funds"),
            (500, "oops".to_owned(), "Internal Server Error"),
            (200, "not json".to_owned(), "not JSON"),
            (200, r#"{"status":"error"}"#.to_owned(), "not \"ok\""),
            (200, r#"{"status":"ok","receipt":{}}"#.to_owned(), "names no channel"),
            (200, management(&other), "not 0x7b78"),
        ] {
            let AutoPayError::SessionRefused { action, status: got, reason } = refused(status, &body).await else {
                panic!("{body}")
            };
            assert_eq!((action, got), ("open", status));
            assert!(reason.contains(want), "{reason} should contain {want}");
        }
    }

    #[tokio::test]
    async fn refusal_reasons_are_bounded_and_readable() {
        assert_eq!(body_reason(response(402, r#"{"type":"t","detail":"d"}"#)).await, "d");
        assert_eq!(body_reason(response(402, r#"{"errorReason":"insufficient_funds"}"#)).await, "insufficient_funds");
        assert_eq!(body_reason(response(410, "gone")).await, "Gone");
        let huge = "x".repeat(10 * MAX_REFUSAL_BODY_BYTES);
        assert_eq!(body_prefix(response(402, &huge)).await.len(), MAX_REFUSAL_BODY_BYTES);
    }

    #[test]
    fn redirects_never_carry_a_payment() {
        let url = |u: &str| Url::parse(u).expect("url");
        let mut req = Request::new(Method::POST, url("http://a.test/pay"));
        for (name, value) in [
            ("payment-signature", "signed"),
            ("x-payment", "signed"),
            ("authorization", "Payment x"),
            ("cookie", "c"),
            ("content-type", "application/json"),
            ("x-trace", "t"),
        ] {
            req.headers_mut().insert(HeaderName::from_static(name), HeaderValue::from_static(value));
        }
        *req.body_mut() = Some("{}".into());
        let copy = || req.try_clone().expect("clone");
        let payment = HeaderName::from_static("payment-signature");
        // Same origin, 307: the payment header goes, the rest (method, body, credentials) stays.
        let same = redirected(copy(), StatusCode::TEMPORARY_REDIRECT, url("http://a.test/next"), Some(&payment));
        assert!(!same.headers().contains_key("payment-signature"));
        assert!(same.headers().contains_key("authorization") && same.headers().contains_key("cookie"));
        assert_eq!((same.method(), same.url().path(), same.body().is_some()), (&Method::POST, "/next", true));
        // Another origin (a port is an origin): every credential and payment header goes.
        for target in ["http://b.test/x", "http://a.test:8080/x", "https://a.test/x"] {
            let cross = redirected(copy(), StatusCode::TEMPORARY_REDIRECT, url(target), None);
            for name in ["payment-signature", "x-payment", "authorization", "cookie"] {
                assert!(!cross.headers().contains_key(name), "{target}: {name}");
            }
            assert!(cross.headers().contains_key("x-trace"));
        }
        // 303 turns into a GET without body.
        let see_other = redirected(copy(), StatusCode::SEE_OTHER, url("http://a.test/result"), None);
        assert_eq!((see_other.method(), see_other.body().is_none()), (&Method::GET, true));
        assert!(!see_other.headers().contains_key("content-type"));
    }

    #[test]
    fn channel_keys_ignore_address_case_but_not_realm() {
        let challenge = |recipient: &str, realm: &str| {
            let request = json!({
                "amount": "1000",
                "currency": "0x779ded0c9e1022225f8e0630b35a9b54be713736",
                "recipient": recipient,
                "methodDetails": {"chainId": 196, "escrowContract": "0x5E550002e64FaF79B41D89fE8439eEb1be66CE3b"},
            });
            let Value::Object(request) = request else { unreachable!() };
            let c = crate::mpp::Challenge::new("s", realm, "evm", "session", request, None, None, None, None);
            parse_www_authenticate(&[&c.to_www_authenticate().expect("header")]).expect("parse").remove(0)
        };
        let a = key_of(&challenge("0x70997970C51812dc3A010C7d01b50e0d17dc79C8", "r"));
        assert_eq!(a, key_of(&challenge("0x70997970c51812dc3a010c7d01b50e0d17dc79c8", "r")));
        assert_ne!(a, key_of(&challenge("0x70997970c51812dc3a010c7d01b50e0d17dc79c8", "other")));
        assert_eq!((a.chain_id, a.escrow.as_str()), (196, "0x5e550002e64faf79b41d89fe8439eeb1be66ce3b"));
    }
}
