//! x402 over HTTP, independent of the web framework: the route table, the 402 challenge, payment
//! verification with a replay guard, and settlement after the handler (wire facts §4).
//!
//! [`X402HttpServer`] is what the axum layer, the actix-web middleware and the `#[x402]` macro
//! all drive, so the three give identical responses:
//!
//! 1. [`X402HttpServer::route_for`] finds the protected route (or none: pass through);
//! 2. [`X402HttpServer::process`] answers the request itself (402 challenge, paywall, invalid
//!    payment, replay, facilitator failure) or returns the verified [`X402Payment`];
//! 3. the handler runs;
//! 4. [`X402HttpServer::settle`] settles when the handler's status is below 400 and returns the
//!    `PAYMENT-RESPONSE` headers — or the 402 that replaces the handler's response when
//!    settlement fails or its outcome is unknown (fail closed: the handler's body is dropped);
//!    [`X402HttpServer::release`] is called instead when the handler failed.
#![allow(clippy::result_large_err)] // the Err side is the HTTP response itself, built once per request

use super::facilitator::FacilitatorError;
use super::headers::{
    ACCESS_CONTROL_EXPOSE_HEADERS, EXPOSED_HEADERS, HeaderError, PAYMENT_REQUIRED_HEADER, PAYMENT_RESPONSE_HEADER,
    X_PAYMENT_RESPONSE_HEADER, carries_payment, decode_payment_signature_header, encode_payment_required_header,
    encode_payment_response_header, payment_header,
};
use super::payment::{IdEnd, Identified, Identify, PaymentParts, X402Payment};
use super::paywall::{self, PaywallConfig};
use super::pending::{PendingSettlements, SweepReport};
use super::replay_key::replay_key;
use super::route::{PayToSource, PaymentOption, PriceSource, RouteConfig};
use super::server::{Initialized, RequirementsSpec, ResourceServerError, X402ResourceServer};
use super::types::{
    AnyPaymentPayload, PaymentPayload, PaymentRequired, PaymentRequirements, ResourceInfo, SettleResponse,
    settle_status,
};
use super::upto::Plan;
use crate::completion::{CancelPolicy, KeyReservation};
use crate::metrics::{PaymentOutcome, SettlementOutcome};
use crate::replay::{InMemoryRecordStore, InMemoryReplayStore, RecordStore, ReplayStore, ReplayStoreError, unix_now};
use crate::web::{Misconfigured, RouteKeyError, RoutePattern, find_route};
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument as _;

use crate::web::paywall::prefers_html;
use crate::web::{BoxFuture, HttpBody, PaymentHttpResponse, PreparedResponse, RequestContext, RequestHead};

/// The reason sent when a payment (payer + nonce) was already used.
pub const REPLAYED_PAYMENT_REASON: &str = "invalid_exact_evm_nonce_already_used";
/// The reason sent when a payment's authorization does not have the expected shape (`from`:
/// 20 bytes of `0x` hex; `nonce`: 32 bytes of `0x` hex, or a decimal uint256 for Permit2). It
/// is refused before its replay key is reserved and before any facilitator call.
pub const INVALID_PAYLOAD_REASON: &str = "invalid_payload";
/// The `error` sent to buyers when the facilitator or a store cannot decide a payment; the
/// details go to the `tracing` logs, never to the buyer.
pub const PAYMENT_UNAVAILABLE_ERROR: &str = "Payment processing is temporarily unavailable";
/// The `error` sent to buyers when the seller's configuration stops a payment (details in the
/// `tracing` logs).
pub const PAYMENT_CONFIGURATION_ERROR: &str = "Payment processing failed";
/// `error` of the challenge when no payment was sent (or it could not be decoded).
pub const PAYMENT_REQUIRED_ERROR: &str = "Payment required";
/// `error` of the challenge when the payment matches none of the requirements.
pub const NO_MATCHING_REQUIREMENTS_ERROR: &str = "No matching payment requirements";

#[derive(Clone)]
pub(super) struct Inner {
    pub(super) server: X402ResourceServer,
    pub(super) routes: Vec<(RoutePattern, Arc<RouteConfig>)>,
    pub(super) replay: Arc<dyn ReplayStore>,
    /// The replay store is the default per-process [`InMemoryReplayStore`].
    pub(super) replay_in_memory: bool,
    pub(super) paywall: PaywallConfig,
    pub(super) pay_to: Option<String>,
    pub(super) init_lock: Arc<tokio::sync::Mutex<()>>,
    pub(super) cancel_policy: CancelPolicy,
    /// Settlements whose outcome was unknown ([`super::pending`]).
    pub(super) pending: PendingSettlements,
    /// Routes that cannot build their requirements: logged once, explained in development.
    pub(super) misconfigured: Misconfigured,
}

/// The x402 seller over HTTP. Cheap to clone.
#[derive(Clone)]
pub struct X402HttpServer {
    pub(super) inner: Arc<Inner>,
}

impl fmt::Debug for X402HttpServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("X402HttpServer")
            .field("routes", &self.inner.routes.iter().map(|(p, _)| p.key()).collect::<Vec<_>>())
            .field("pay_to", &self.inner.pay_to)
            .finish_non_exhaustive()
    }
}

/// Why a request could not get a payment decision: the status of the error and a generic
/// message (the error itself, which may carry upstream bodies, URLs or transport chains, is
/// logged by the caller, never sent to the buyer).
fn server_error_response(e: &ResourceServerError) -> PaymentHttpResponse {
    let status = StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let message = if status.is_server_error() && status != StatusCode::INTERNAL_SERVER_ERROR {
        PAYMENT_UNAVAILABLE_ERROR
    } else {
        PAYMENT_CONFIGURATION_ERROR
    };
    PaymentHttpResponse::json_error(status, message)
}

impl X402HttpServer {
    /// A server with no routes (the macros and [`X402HttpServer::process`] need none), an
    /// in-memory replay guard and the default paywall.
    pub fn new(server: X402ResourceServer) -> Self {
        Self {
            inner: Arc::new(Inner {
                server,
                routes: Vec::new(),
                replay: Arc::new(InMemoryReplayStore::new()),
                replay_in_memory: true,
                paywall: PaywallConfig::default(),
                pay_to: None,
                init_lock: Arc::new(tokio::sync::Mutex::new(())),
                cancel_policy: CancelPolicy::default(),
                pending: PendingSettlements::new(Arc::new(InMemoryRecordStore::new())),
                misconfigured: Misconfigured::default(),
            }),
        }
    }

    fn edit(mut self, f: impl FnOnce(&mut Inner)) -> Self {
        f(Arc::make_mut(&mut self.inner));
        self
    }

    /// Protects the routes matching `key` (`"GET /weather/*"`). Routes are tried in the order
    /// they were added.
    pub fn route(self, key: &str, config: RouteConfig) -> Result<Self, RouteKeyError> {
        let pattern = RoutePattern::parse(key)?;
        Ok(self.edit(|i| i.routes.push((pattern, Arc::new(config)))))
    }

    /// The payee used by options with [`PayToSource::Default`] (and by the macros when they
    /// have no `pay_to`).
    pub fn pay_to(self, address: impl Into<String>) -> Self {
        let address = address.into();
        self.edit(|i| i.pay_to = Some(address))
    }

    /// Replaces the replay guard's store. The default [`InMemoryReplayStore`] protects one
    /// process only: several instances behind a load balancer must share one store (Redis),
    /// or a payment may be accepted once per instance — in particular while its settlement is
    /// `pending` with [`X402ResourceServer::deliver_on_pending`] (pay402 logs a warning, once,
    /// for that combination).
    pub fn replay_store(self, store: Arc<dyn ReplayStore>) -> Self {
        self.edit(|i| {
            i.replay = store;
            i.replay_in_memory = false;
        })
    }

    /// Replaces the store of settlement records: payments whose settlement outcome was unknown
    /// and what became of them (see [`SettlementRecord`](super::SettlementRecord)). The default [`InMemoryRecordStore`]
    /// serves one instance: with several behind a load balancer share a
    /// [`RedisRecordStore`](crate::replay::RedisRecordStore) (with a shared replay store), so
    /// a buyer's retry that lands on another instance finds its payment's record.
    pub fn settlement_records(self, store: Arc<dyn RecordStore>) -> Self {
        self.edit(|i| i.pending = i.pending.clone().with_store(store))
    }

    /// The `Retry-After` (whole seconds, at least 1; default
    /// [`DEFAULT_RETRY_AFTER`](super::DEFAULT_RETRY_AFTER)) of the `503` sent while a
    /// settlement's outcome is unknown.
    pub fn retry_after(self, retry_after: Duration) -> Self {
        self.edit(|i| i.pending = i.pending.clone().with_retry_after(retry_after))
    }

    /// How long settlement records are kept at least (default
    /// [`DEFAULT_RECORD_RETENTION`](super::DEFAULT_RECORD_RETENTION), at least a minute): a
    /// buyer retrying within it gets its payment's outcome.
    pub fn settlement_record_retention(self, retention: Duration) -> Self {
        self.edit(|i| i.pending = i.pending.clone().with_retention(retention))
    }

    /// One reconciliation sweep over the pending settlements of the record store (up to
    /// `limit` records; status queries only, never a re-submission). Records with a known
    /// transaction are also reconciled in the background; call this periodically (or after a
    /// restart) to resolve records left by other or earlier instances.
    pub async fn reconcile_pending(&self, limit: usize) -> Result<SweepReport, ReplayStoreError> {
        self.inner.pending.sweep(&self.inner.server, limit).await
    }

    /// Whether a route that cannot build its payment requirements says why in its 500 body
    /// (default `false`: a generic body; the reason is always logged, once per reason, at error
    /// level). [`Setup`](crate::setup::Setup) turns it on in development only.
    pub fn explain_errors(self, explain: bool) -> Self {
        self.edit(|i| i.misconfigured = Misconfigured::new(explain))
    }

    /// Sets paywall options.
    pub fn paywall(self, config: PaywallConfig) -> Self {
        self.edit(|i| i.paywall = config)
    }

    /// What happens to a verified payment when its request is cancelled while the handler runs
    /// (the client disconnected, or a timeout layer — which counts as a cancellation — gave up):
    /// [`CancelPolicy::Complete`] (the default) settles it as if the handler had succeeded,
    /// [`CancelPolicy::Release`] releases it. A panicking handler always releases; a settlement
    /// already in flight always runs to its end. See [`crate::completion`].
    pub fn cancel_policy(self, policy: CancelPolicy) -> Self {
        self.edit(|i| i.cancel_policy = policy)
    }

    /// The configured [`CancelPolicy`].
    pub fn cancellation(&self) -> CancelPolicy {
        self.inner.cancel_policy
    }

    /// The resource server (facilitators, schemes, hooks).
    pub fn resource_server(&self) -> &X402ResourceServer {
        &self.inner.server
    }

    /// The configured default payee.
    pub fn default_pay_to(&self) -> Option<&str> {
        self.inner.pay_to.as_deref()
    }

    /// The route protecting `method` + the raw request `path`, if any (first match in insertion
    /// order; see [`find_route`] for how a raw path is matched: `GET` keys cover `HEAD`, `%2F`
    /// stays inside its segment, and every form of the path is tried, failing closed).
    pub fn route_for(&self, method: &str, path: &str) -> Option<Arc<RouteConfig>> {
        find_route(&self.inner.routes, method, path).map(Arc::clone)
    }

    /// The bytes the routes' remembered unpaid 402s cost (URL keys and headers). Diagnostics for
    /// tests and memory monitoring; bounded per route.
    #[doc(hidden)]
    pub fn unpaid_cache_bytes(&self) -> usize {
        self.inner.routes.iter().map(|(_, route)| route.unpaid_challenge.cached_bytes()).sum()
    }

    /// Synchronises with the facilitators (`/supported`) now. Otherwise it happens on the first
    /// protected request, which gets a 502 if it fails (and the next request retries).
    ///
    /// A registered (scheme, network) that no facilitator supports does not fail it: the
    /// returned [`Initialized`] (and [`unsupported_kinds`](Self::unsupported_kinds)) lists it, it
    /// is logged at error level, and only the routes selling it answer 500 (logged once, at error
    /// level, with the kind); the other routes work.
    pub async fn initialize(&self) -> Result<Initialized, ResourceServerError> {
        let report = || Initialized { unsupported: self.inner.server.unsupported_kinds() };
        if self.inner.server.is_initialized() {
            return Ok(report());
        }
        let _guard = self.inner.init_lock.lock().await;
        if self.inner.server.is_initialized() {
            return Ok(report());
        }
        self.inner.server.initialize().await
    }

    /// The registered (scheme, network) pairs no facilitator supports (empty before
    /// initialisation).
    pub fn unsupported_kinds(&self) -> Vec<(String, String)> {
        self.inner.server.unsupported_kinds()
    }

    async fn resolve_option(
        &self,
        ctx: &RequestContext,
        option: &PaymentOption,
        timeout: Option<Duration>,
    ) -> Result<PaymentRequirements, PaymentHttpResponse> {
        let timed_out =
            || PaymentHttpResponse::json_error(StatusCode::INTERNAL_SERVER_ERROR, "Hook execution timed out");
        let failed = |why: &dyn fmt::Display| self.inner.misconfigured.respond("x402", why);
        let price = match &option.price {
            PriceSource::Static(p) => p.clone(),
            PriceSource::Dynamic(f) => bounded(timeout, f(ctx)).await.ok_or_else(timed_out)?.map_err(|e| failed(&e))?,
        };
        let pay_to = match &option.pay_to {
            PayToSource::Static(p) => p.clone(),
            PayToSource::Default => {
                self.inner.pay_to.clone().ok_or_else(|| failed(&"no payee: configure X402HttpServer::pay_to"))?
            }
            PayToSource::Dynamic(f) => bounded(timeout, f(ctx)).await.ok_or_else(timed_out)?.map_err(|e| failed(&e))?,
        };
        let spec = RequirementsSpec {
            scheme: option.scheme.clone(),
            network: option.network.clone(),
            pay_to,
            price,
            max_timeout_seconds: option.max_timeout_seconds,
            extra: option.extra.clone(),
        };
        // An unsupported kind, like every other reason, is logged once and explained in
        // development (`Misconfigured`); the route's 500 never affects other routes.
        self.inner.server.build_payment_requirements(&spec).map_err(|e| failed(&e))
    }

    /// The route's requirements for this request: borrowed from the route when static (built
    /// once), else resolved now.
    async fn build_accepts<'r>(
        &self,
        ctx: &RequestContext,
        route: &'r RouteConfig,
    ) -> Result<Cow<'r, [PaymentRequirements]>, PaymentHttpResponse> {
        if let Some(cached) = route.static_accepts.get() {
            return Ok(Cow::Borrowed(cached.as_slice()));
        }
        if let Some(cached) = route.unpaid_challenge.accepts(self.inner.pay_to.as_deref()) {
            return Ok(Cow::Borrowed(cached));
        }
        let mut accepts = Vec::with_capacity(route.accepts.len());
        for option in &route.accepts {
            accepts.push(self.resolve_option(ctx, option, route.hook_timeout).await?);
        }
        if route.accepts.iter().all(PaymentOption::is_static) {
            let _ = route.static_accepts.set(accepts.clone());
        }
        let fixed = |o: &PaymentOption| {
            matches!(o.price, PriceSource::Static(_)) && !matches!(o.pay_to, PayToSource::Dynamic(_))
        };
        if route.accepts.iter().all(fixed) {
            // Static requirements (the default payee included): built and the unpaid 402
            // serialised once, here, for this server's payee.
            route.unpaid_challenge.fill(
                self.inner.pay_to.as_deref(),
                &accepts,
                route.resource.as_deref(),
                || schemes_label(&accepts),
                |url| self.payment_required_for(url, route, accepts.clone(), Some(PAYMENT_REQUIRED_ERROR.into())),
            );
        }
        Ok(Cow::Owned(accepts))
    }

    fn payment_required(
        &self,
        ctx: &RequestContext,
        route: &RouteConfig,
        accepts: Vec<PaymentRequirements>,
        error: Option<String>,
    ) -> PaymentRequired {
        let url = route.resource.clone().unwrap_or_else(|| ctx.url.clone());
        self.payment_required_for(url, route, accepts, error)
    }

    fn payment_required_for(
        &self,
        url: String,
        route: &RouteConfig,
        accepts: Vec<PaymentRequirements>,
        error: Option<String>,
    ) -> PaymentRequired {
        let resource = ResourceInfo {
            url,
            description: Some(route.description.clone().unwrap_or_default()),
            mime_type: Some(route.mime_type.clone().unwrap_or_default()),
        };
        self.inner.server.build_payment_required(resource, accepts, error, route.extensions.clone())
    }

    /// The route's precomputed unpaid 402 for a request carrying no payment (not from a
    /// browser), with the metrics label of its challenge. `None` when the route has no
    /// precomputed challenge (yet) or the request needs the full path.
    fn precomputed(
        &self,
        route: &RouteConfig,
        head: &impl RequestHead,
    ) -> Option<(Arc<PreparedResponse>, metrics::SharedString)> {
        if carries_payment(head) || prefers_html(head) {
            return None;
        }
        let challenge = route.unpaid_challenge.get(self.inner.pay_to.as_deref())?;
        Some((challenge.prepared(head)?, challenge.scheme_label()))
    }

    /// The unpaid fast path, run before any [`RequestContext`] is built: the route's
    /// precomputed 402 (no requirement rebuilt, nothing serialised or formatted), with the same
    /// `x402.request` span and challenge counter as [`X402HttpServer::process`]. `None`: take
    /// `process` (a payment, a browser, a custom unpaid body, dynamic requirements, or the
    /// route's first request).
    pub(crate) fn precomputed_unpaid(
        &self,
        route: &RouteConfig,
        head: &impl RequestHead,
    ) -> Option<Arc<PreparedResponse>> {
        if route.unpaid_response_body.is_some() {
            return None;
        }
        let start = std::time::Instant::now();
        let (prepared, label) = self.precomputed(route, head)?;
        crate::metrics::record_challenge_shared(crate::metrics::PROTOCOL_X402, label);
        let span = request_span(head.method_str(), head.path_str(), route);
        if !span.is_disabled() {
            span.record("outcome", "challenge");
            span.record("latency_ms", crate::metrics::millis_since(start));
        }
        Some(prepared)
    }

    /// The unpaid 402 for an API client from the route's precomputed challenge (static
    /// requirements only), inside `process`: nothing is rebuilt or re-serialised; a custom unpaid
    /// body is rendered for the request.
    fn cached_unpaid(&self, ctx: &RequestContext, route: &RouteConfig) -> Option<PaymentHttpResponse> {
        let (prepared, label) = self.precomputed(route, ctx)?;
        crate::metrics::record_challenge_shared(crate::metrics::PROTOCOL_X402, label);
        tracing::Span::current().record("outcome", "challenge");
        let mut resp = prepared.to_response();
        if let Some(f) = &route.unpaid_response_body {
            let body = f(ctx);
            match HeaderValue::from_str(&body.content_type) {
                Ok(ct) => resp.headers.insert(http::header::CONTENT_TYPE, ct),
                Err(_) => resp.headers.remove(http::header::CONTENT_TYPE),
            };
            resp.body = body.body;
        }
        Some(resp)
    }

    /// The 402 challenge for API clients: `PAYMENT-REQUIRED` + `{}` (or the route's body).
    fn challenge(
        &self,
        ctx: &RequestContext,
        route: &RouteConfig,
        required: &PaymentRequired,
        custom_body: bool,
    ) -> PaymentHttpResponse {
        let header = match encode_payment_required_header(required) {
            Ok(h) => h,
            Err(e) => return PaymentHttpResponse::json_error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
        };
        let body = match (&route.unpaid_response_body, custom_body) {
            (Some(f), true) => f(ctx),
            _ => HttpBody { content_type: "application/json".into(), body: Bytes::from_static(b"{}") },
        };
        PaymentHttpResponse::new(StatusCode::PAYMENT_REQUIRED, &body.content_type, body.body)
            .with_header(PAYMENT_REQUIRED_HEADER, &header)
            .with_header(ACCESS_CONTROL_EXPOSE_HEADERS, EXPOSED_HEADERS)
    }

    /// The unpaid answer: the challenge, with the paywall page as its body for a request that
    /// prefers HTML (its `PAYMENT-REQUIRED` header kept).
    fn unpaid(
        &self,
        ctx: &RequestContext,
        route: &RouteConfig,
        accepts: Vec<PaymentRequirements>,
    ) -> PaymentHttpResponse {
        crate::metrics::record_challenge(crate::metrics::PROTOCOL_X402, &schemes_label(&accepts));
        tracing::Span::current().record("outcome", "challenge");
        let required = self.payment_required(ctx, route, accepts, Some(PAYMENT_REQUIRED_ERROR.into()));
        if prefers_html(ctx) {
            let challenge = self.challenge(ctx, route, &required, false);
            if challenge.status != StatusCode::PAYMENT_REQUIRED {
                return challenge;
            }
            return match &route.custom_paywall_html {
                Some(page) => crate::web::paywall::respond_custom(challenge, paywall::render_custom(page, &required)),
                None => crate::web::paywall::respond(
                    challenge,
                    &paywall::page(&required, ctx.method.as_str()),
                    &self.inner.paywall,
                ),
            };
        }
        self.challenge(ctx, route, &required, true)
    }

    pub(super) fn rechallenge(
        &self,
        ctx: &RequestContext,
        route: &RouteConfig,
        accepts: Vec<PaymentRequirements>,
        error: Option<String>,
    ) -> PaymentHttpResponse {
        crate::metrics::record_challenge(crate::metrics::PROTOCOL_X402, &schemes_label(&accepts));
        // A Permit2 payment whose owner never approved Permit2: 412 Precondition Failed (the
        // x402 Permit2 specs; @x402/core does the same), with the same PAYMENT-REQUIRED.
        let precondition = error.as_deref() == Some(super::permit2_reasons::ALLOWANCE_REQUIRED);
        let required = self.payment_required(ctx, route, accepts, error);
        let mut response = self.challenge(ctx, route, &required, false);
        if precondition {
            response.status = StatusCode::PRECONDITION_FAILED;
        }
        response
    }

    /// Decides a request to a protected route: `Ok` with the verified payment (run the handler,
    /// then [`X402HttpServer::settle`]), or `Err` with the response to send instead.
    pub async fn process(
        &self,
        ctx: &RequestContext,
        route: &Arc<RouteConfig>,
    ) -> Result<X402Payment, PaymentHttpResponse> {
        let span = request_span(ctx.method.as_str(), &ctx.path, route);
        let start = std::time::Instant::now();
        let result = self.process_inner(ctx, route).instrument(span.clone()).await;
        span.record("latency_ms", crate::metrics::millis_since(start));
        result
    }

    async fn process_inner(
        &self,
        ctx: &RequestContext,
        route: &Arc<RouteConfig>,
    ) -> Result<X402Payment, PaymentHttpResponse> {
        if self.inner.replay_in_memory && self.inner.server.delivers_on_pending() {
            warn_in_memory_replay_with_pending();
        }
        if let Err(e) = self.initialize().await {
            tracing::warn!(error = %e, "x402: facilitator synchronisation failed");
            return Err(PaymentHttpResponse::json_error(StatusCode::BAD_GATEWAY, PAYMENT_UNAVAILABLE_ERROR));
        }
        if let Some(challenge) = self.cached_unpaid(ctx, route) {
            return Err(challenge);
        }
        let accepts = self.build_accepts(ctx, route).await?;
        let Some((raw, from_x_payment)) = payment_header(ctx) else {
            return Err(self.unpaid(ctx, route, accepts.into_owned()));
        };
        let decoded = match decode_payment_signature_header(raw) {
            Ok(d) => d,
            Err(e @ HeaderError::TooLarge { .. }) => {
                // Oversize: refused outright (no challenge, no facilitator call), see SECURITY.md.
                tracing::debug!(error = %e, "x402: oversize payment header refused");
                return Err(PaymentHttpResponse::json_error(
                    StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                    &e.to_string(),
                ));
            }
            Err(e) => {
                tracing::debug!(error = %e, "x402: undecodable payment header, treated as no payment");
                return Err(self.unpaid(ctx, route, accepts.into_owned()));
            }
        };
        let (payload, version) = match decoded {
            AnyPaymentPayload::V2(p) => (p, 2),
            AnyPaymentPayload::V1(v1) if from_x_payment => {
                let Some(matched) = accepts.iter().find(|a| a.scheme == v1.scheme && a.network == v1.network) else {
                    return Err(self.rechallenge(
                        ctx,
                        route,
                        accepts.into_owned(),
                        Some(NO_MATCHING_REQUIREMENTS_ERROR.into()),
                    ));
                };
                let payload = PaymentPayload {
                    x402_version: 2,
                    payload: v1.payload,
                    accepted: matched.clone(),
                    resource: None,
                    extensions: None,
                };
                (payload, 1)
            }
            AnyPaymentPayload::V1(_) => return Err(self.unpaid(ctx, route, accepts.into_owned())),
        };
        let Some(requirements) = X402ResourceServer::find_matching_requirements(&accepts, &payload).cloned() else {
            observe_payment(&payload.accepted.scheme, PaymentOutcome::NoMatch);
            return Err(self.rechallenge(
                ctx,
                route,
                accepts.into_owned(),
                Some(NO_MATCHING_REQUIREMENTS_ERROR.into()),
            ));
        };
        let span = tracing::Span::current();
        span.record("scheme", requirements.scheme.as_str());
        span.record("network", requirements.network.as_str());
        span.record("amount", requirements.amount.as_str());
        if let Some(payer) = payload.claimed_payer() {
            span.record("payer", payer);
        }
        // A payment identifier is looked up before the payment is verified (a resend of a
        // settled one may no longer verify).
        let (identified, fresh) = match self.identify(ctx, route, &payload, &requirements).await? {
            Identify::No => (None, false),
            Identify::Replay(response) => {
                return self.replay_identified(route, payload, requirements, version, response).await;
            }
            Identify::Fresh(i) => (Some(i), true),
            Identify::Resume(i) => (Some(i), false),
        };
        let admitted = self.admit(ctx, route, accepts, payload, requirements, version, identified.as_ref()).await;
        match (admitted, identified) {
            (Ok(mut payment), Some(identified)) => {
                if let Some(parts) = Arc::get_mut(&mut payment.0) {
                    parts.identified = Some(identified);
                }
                Ok(payment)
            }
            (Err(answer), Some(identified)) if fresh => {
                self.end_identified(&identified, None).await;
                Err(answer)
            }
            (admitted, _) => admitted,
        }
    }

    /// Reserves the payment's replay key and verifies it (or answers a retry of it).
    #[allow(clippy::too_many_arguments)]
    async fn admit(
        &self,
        ctx: &RequestContext,
        route: &Arc<RouteConfig>,
        accepts: Cow<'_, [PaymentRequirements]>,
        payload: PaymentPayload,
        requirements: PaymentRequirements,
        version: u32,
        identified: Option<&Identified>,
    ) -> Result<X402Payment, PaymentHttpResponse> {
        let Some((replay_key, expires_at)) = replay_key(&payload, &requirements, unix_now()) else {
            // An attacker-shaped `from`/`nonce` never reaches the replay store (F6).
            tracing::debug!("x402: authorization of an unexpected shape refused before reserving");
            observe_payment(&requirements.scheme, PaymentOutcome::Invalid);
            return Err(self.rechallenge(ctx, route, accepts.into_owned(), Some(INVALID_PAYLOAD_REASON.into())));
        };
        match self.inner.replay.insert_if_absent(&replay_key, expires_at).await {
            Ok(true) => {}
            Ok(false) => {
                // A retry of a payment whose settlement outcome was unknown is answered from its
                // record; anything else is a replay.
                return self
                    .on_replay(
                        ctx,
                        route,
                        accepts.into_owned(),
                        &replay_key,
                        payload,
                        requirements,
                        version,
                        identified,
                    )
                    .await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "x402: replay store refused the reservation; payment refused");
                observe_payment(&requirements.scheme, PaymentOutcome::Error);
                return Err(PaymentHttpResponse::json_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    PAYMENT_UNAVAILABLE_ERROR,
                ));
            }
        }
        // Released if this request is dropped before the verification is decided (F5).
        let reservation = KeyReservation::new(Arc::clone(&self.inner.replay), replay_key.clone());
        let release = || async {
            if let Err(e) = self.inner.replay.remove(&replay_key).await {
                tracing::warn!(error = %e, "x402: cannot release a replay reservation");
            }
            reservation.disarm();
        };
        let verified = self.inner.server.verify(&payload, &requirements).await;
        let outcome = match &verified {
            Ok(v) if v.is_valid => PaymentOutcome::Verified,
            Ok(_) | Err(ResourceServerError::Aborted { .. }) => PaymentOutcome::Invalid,
            Err(ResourceServerError::RequirementsMismatch { .. }) => PaymentOutcome::NoMatch,
            Err(_) => PaymentOutcome::Error,
        };
        observe_payment(&requirements.scheme, outcome);
        match verified {
            Ok(v) if v.is_valid => Ok(X402Payment(Arc::new(PaymentParts {
                // The key now belongs to the payment (released or kept by its completion).
                replay_key: Some({
                    reservation.disarm();
                    replay_key
                }),
                payer: v.payer.or_else(|| payload.claimed_payer().map(str::to_owned)),
                upto: super::upto::UptoCharge::for_requirements(&requirements),
                payload,
                requirements,
                version,
                route: Arc::clone(route),
                claim: None,
                identified: None,
                recorded: None,
                keep_response: Default::default(),
            }))),
            Ok(v) => {
                release().await;
                Err(self.rechallenge(ctx, route, accepts.into_owned(), v.invalid_reason))
            }
            Err(ResourceServerError::Aborted { reason }) => {
                release().await;
                Err(self.rechallenge(ctx, route, accepts.into_owned(), Some(reason)))
            }
            Err(ResourceServerError::RequirementsMismatch { .. }) => {
                release().await;
                Err(self.rechallenge(ctx, route, accepts.into_owned(), Some(NO_MATCHING_REQUIREMENTS_ERROR.into())))
            }
            Err(e) => {
                release().await;
                tracing::warn!(error = %e, "x402: verification could not complete");
                Err(server_error_response(&e))
            }
        }
    }

    /// Completes `payment` after its handler answered `status` ([`crate::web::settles`]): settles
    /// it ([`X402HttpServer::settle`]) or releases it ([`X402HttpServer::release`]). `Ok` carries
    /// the headers to add to the handler's response; `Err` is the response replacing it.
    pub async fn finish(
        &self,
        ctx: &RequestContext,
        payment: &X402Payment,
        status: StatusCode,
    ) -> Result<HeaderMap, PaymentHttpResponse> {
        if let Some(headers) = self.finish_settled_before(payment, crate::web::settles(status)).await {
            return Ok(headers);
        }
        if crate::web::settles(status) {
            self.settle(ctx, payment).await
        } else {
            self.release(payment).await;
            Ok(HeaderMap::new())
        }
    }

    /// The handler failed (status ≥ 400): nothing is settled and the payment's replay
    /// reservation is released, so the buyer may retry with the same authorization.
    pub async fn release(&self, payment: &X402Payment) {
        if self.finish_settled_before(payment, false).await.is_some() {
            return;
        }
        self.end_identified_of(payment, None).await;
        crate::metrics::record_settlement(
            crate::metrics::PROTOCOL_X402,
            &payment.0.requirements.scheme,
            SettlementOutcome::Released,
        );
        if let Some(key) = &payment.0.replay_key
            && let Err(e) = self.inner.replay.remove(key).await
        {
            tracing::warn!(error = %e, "x402: cannot release a replay reservation");
        }
    }

    /// Settles after a successful handler. `Ok` carries the headers to add to the handler's
    /// response (`PAYMENT-RESPONSE`); `Err` is the 402 that replaces it (settlement failed or
    /// its outcome is unknown).
    pub async fn settle(&self, ctx: &RequestContext, payment: &X402Payment) -> Result<HeaderMap, PaymentHttpResponse> {
        let header_name = if payment.0.version == 1 { X_PAYMENT_RESPONSE_HEADER } else { PAYMENT_RESPONSE_HEADER };
        // `upto`: what the handler reported (see `upto.rs`); other schemes settle as matched.
        let parts = &payment.0;
        let plan =
            super::upto::plan(&parts.requirements, &parts.payload.accepted.amount, &parts.upto, parts.payer.as_deref());
        let requirements = match plan {
            Plan::Fixed => Cow::Borrowed(&payment.0.requirements),
            Plan::Settle(requirements) => Cow::Owned(requirements),
            Plan::Zero(resp) => {
                crate::metrics::record_settlement(crate::metrics::PROTOCOL_X402, "upto", SettlementOutcome::Success);
                return Ok(self.settled_headers(payment, header_name, &resp).await);
            }
            Plan::Refuse(e) => {
                tracing::error!(error = %e, payer = ?payment.0.payer, "x402 upto: charge refused; response withheld, nothing settled");
                self.release(payment).await;
                return Err(PaymentHttpResponse::json_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    PAYMENT_CONFIGURATION_ERROR,
                ));
            }
        };
        let outcome = self.inner.server.settle(&payment.0.payload, &requirements).await;
        let outcome = outcome.map(|resp| super::upto::check_settled(&requirements, resp));
        let settled = match &outcome {
            Ok(r) if r.success && r.status.as_deref() == Some(settle_status::PENDING) => SettlementOutcome::Pending,
            Ok(r) if r.success && r.status.as_deref().is_none_or(|s| s == settle_status::SUCCESS) => {
                SettlementOutcome::Success
            }
            Ok(_) => SettlementOutcome::Failed,
            Err(_) => SettlementOutcome::Unknown,
        };
        crate::metrics::record_settlement(crate::metrics::PROTOCOL_X402, &payment.0.requirements.scheme, settled);
        let failure = match outcome {
            Ok(resp)
                if resp.success
                    && resp
                        .status
                        .as_deref()
                        .is_none_or(|s| s == settle_status::SUCCESS || s == settle_status::PENDING) =>
            {
                return Ok(self.settled_headers(payment, header_name, &resp).await);
            }
            Ok(resp) if resp.error_reason.as_deref() == Some(super::settlement::SETTLEMENT_TIMEOUT) => {
                return Err(self.settlement_unknown(payment, &requirements, Some(resp.transaction)).await);
            }
            Err(ResourceServerError::Facilitator(e))
                if !matches!(e, FacilitatorError::Config(_) | FacilitatorError::Unsupported(_)) =>
            {
                tracing::error!(error = %e, payer = ?payment.0.payer, "x402: settlement outcome unknown");
                return Err(self.settlement_unknown(payment, &requirements, None).await);
            }
            Ok(mut resp) => {
                resp.success = false;
                if resp.error_reason.is_none() {
                    resp.error_reason = Some(resp.status.clone().unwrap_or_else(|| "settlement_failed".into()));
                }
                resp
            }
            Err(e) => {
                tracing::error!(error = %e, payer = ?payment.0.payer, "x402: settlement not attempted; refusing the response");
                let mut resp = SettleResponse::failure(
                    "settlement_error",
                    payment.0.requirements.network.clone(),
                    payment.0.payer.clone(),
                    String::new(),
                );
                resp.error_message = Some(PAYMENT_UNAVAILABLE_ERROR.to_owned());
                resp
            }
        };
        // A definite failure: the identifier is free for a new payment.
        self.end_identified_of(payment, None).await;
        let body = match &payment.0.route.settlement_failed_response_body {
            Some(f) => f(ctx, &failure),
            None => HttpBody { content_type: "application/json".into(), body: Bytes::from_static(b"{}") },
        };
        let mut out = PaymentHttpResponse::new(StatusCode::PAYMENT_REQUIRED, &body.content_type, body.body);
        if let Ok(v) = encode_payment_response_header(&failure) {
            out = out.with_header(header_name, &v);
        }
        Err(out.with_header(ACCESS_CONTROL_EXPOSE_HEADERS, EXPOSED_HEADERS))
    }

    /// The headers of a successful settlement (`PAYMENT-RESPONSE`); its payment identifier is
    /// settled too.
    async fn settled_headers(&self, payment: &X402Payment, header_name: &str, resp: &SettleResponse) -> HeaderMap {
        let mut headers = HeaderMap::new();
        match encode_payment_response_header(resp) {
            Ok(v) => insert_header(&mut headers, header_name, &v),
            Err(e) => tracing::error!(error = %e, "x402: cannot encode PAYMENT-RESPONSE"),
        }
        insert_header(&mut headers, ACCESS_CONTROL_EXPOSE_HEADERS, EXPOSED_HEADERS);
        self.end_identified_of(payment, Some(IdEnd::Settled(resp))).await;
        headers
    }
}

/// Warns once per process that `deliver_on_pending` is combined with the per-process replay store.
/// Awaits a dynamic route callback, bounded by the route's hook timeout (`None`: timed out).
async fn bounded<T>(timeout: Option<Duration>, fut: BoxFuture<T>) -> Option<T> {
    match timeout {
        Some(t) => tokio::time::timeout(t, fut).await.ok(),
        None => Some(fut.await),
    }
}

fn warn_in_memory_replay_with_pending() {
    static WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if !WARNED.swap(true, std::sync::atomic::Ordering::Relaxed) {
        tracing::warn!(
            "x402: deliver_on_pending is on with the in-memory replay store: with several instances a \
             buyer can replay one pending authorization to each of them; share a replay store (Redis)"
        );
    }
}

/// The span of one request to an x402-protected route (full path and fast path alike).
fn request_span(method: &str, path: &str, route: &RouteConfig) -> tracing::Span {
    tracing::info_span!(
        "x402.request",
        method = %method,
        path = %path,
        route = route.description.as_deref().unwrap_or_default(),
        scheme = tracing::field::Empty,
        network = tracing::field::Empty,
        amount = tracing::field::Empty,
        payer = tracing::field::Empty,
        outcome = tracing::field::Empty,
        latency_ms = tracing::field::Empty,
    )
}

/// The `scheme` label of a challenge: the distinct schemes it offers, comma-separated.
fn schemes_label(accepts: &[PaymentRequirements]) -> String {
    let mut schemes: Vec<&str> = accepts.iter().map(|a| a.scheme.as_str()).collect();
    schemes.dedup();
    schemes.join(",")
}

/// Counts a payment attempt and records its outcome on the current `x402.request` span.
pub(super) fn observe_payment(scheme: &str, outcome: PaymentOutcome) {
    crate::metrics::record_payment(crate::metrics::PROTOCOL_X402, scheme, outcome);
    tracing::Span::current().record("outcome", outcome.as_str());
}

pub(super) fn insert_header(headers: &mut HeaderMap, name: &str, value: &str) {
    if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(value)) {
        headers.insert(n, v);
    }
}
