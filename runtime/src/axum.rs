//! axum integration (feature `axum`): the route-table [`X402Layer`], the [`X402Payment`]
//! extractor for handlers behind it, and the guard the `#[x402]` macro expands to.
//!
//! ```no_run
//! # use pay402_runtime::x402::{X402HttpServer, RouteConfig, PaymentOption, X402Payment, X402ResourceServer, ExactEvmScheme, HttpFacilitatorClient, HttpFacilitatorConfig};
//! # use pay402_runtime::axum::X402Layer;
//! # fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let facilitator = HttpFacilitatorClient::new(HttpFacilitatorConfig::new("http://127.0.0.1:4022"))?;
//! let server = X402ResourceServer::new(facilitator).register("eip155:196", ExactEvmScheme::new());
//! let x402 = X402HttpServer::new(server)
//!     .route("GET /weather", RouteConfig::new(PaymentOption::exact("$0.001", "0x1111111111111111111111111111111111111111")))?;
//! let app: axum::Router = axum::Router::new()
//!     .route("/weather", axum::routing::get(|p: X402Payment| async move { format!("paid by {:?}", p.payer()) }))
//!     .layer(X402Layer::new(x402));
//! # Ok(()) }
//! ```
#![allow(clippy::result_large_err)] // the Err side is the HTTP response itself, built once per request

use crate::completion::FinishGuard;
use crate::gate::PaymentGate;
use crate::web::{HttpHead, PaymentHttpResponse, PreparedResponse, RequestContext};
use crate::x402::{MissingPayment, RouteConfig, StaticRoute, X402HttpServer, X402Payment};
use ::axum::body::Body;
use ::axum::extract::{FromRef, FromRequestParts};
use ::axum::response::{IntoResponse, Response};
use http::request::Parts;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

/// Converts a pay402 response into an axum response.
pub fn into_response(r: PaymentHttpResponse) -> Response {
    let mut resp = Response::new(Body::from(r.body));
    *resp.status_mut() = r.status;
    *resp.headers_mut() = r.headers;
    resp
}

impl IntoResponse for PaymentHttpResponse {
    fn into_response(self) -> Response {
        into_response(self)
    }
}

/// Answers a prepared response (reference counts only).
fn prepared_response(p: &PreparedResponse) -> Response {
    let mut resp = Response::new(Body::from(p.body.clone()));
    *resp.status_mut() = p.status;
    *resp.headers_mut() = p.headers.clone();
    resp
}

/// Completes a payment once the handler answered: adds its headers to `resp`, or replaces `resp`
/// with the failure response.
async fn complete<F>(mut resp: Response, finish: impl FnOnce(http::StatusCode) -> F) -> Response
where
    F: Future<Output = Result<http::HeaderMap, PaymentHttpResponse>>,
{
    match finish(resp.status()).await {
        Ok(headers) => {
            resp.headers_mut().extend(headers);
            resp
        }
        Err(failure) => into_response(failure),
    }
}

/// Tower layer protecting the routes of a [`PaymentGate`]'s route table; see the aliases
/// [`X402Layer`], [`MppLayer`] and [`PaymentRouterLayer`].
#[derive(Clone, Debug)]
pub struct GateLayer<G> {
    gate: G,
}

impl<G> GateLayer<G> {
    /// Protects `gate`'s routes; other requests pass through untouched.
    pub fn new(gate: G) -> Self {
        Self { gate }
    }
}

impl<S, G: Clone> tower::Layer<S> for GateLayer<G> {
    type Service = GateService<S, G>;
    fn layer(&self, inner: S) -> Self::Service {
        GateService { inner, gate: self.gate.clone() }
    }
}

/// The service made by [`GateLayer`].
#[derive(Clone, Debug)]
pub struct GateService<S, G> {
    inner: S,
    gate: G,
}

impl<S, G> tower::Service<axum::extract::Request> for GateService<S, G>
where
    S: tower::Service<axum::extract::Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
    G: PaymentGate,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: axum::extract::Request) -> Self::Future {
        let Some(route) = self.gate.route_for(req.method().as_str(), req.uri().path()) else {
            return Box::pin(self.inner.call(req));
        };
        let head = HttpHead { method: req.method(), uri: req.uri(), headers: req.headers() };
        if let Some(prepared) = self.gate.precomputed_unpaid(&route, &head) {
            return Box::pin(std::future::ready(Ok(prepared_response(&prepared))));
        }
        // Take the service that was driven to readiness; leave a clone in its place.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let gate = self.gate.clone();
        Box::pin(async move {
            let ctx = RequestContext::from_parts(req.method(), req.uri(), req.headers());
            let payment = match gate.process(&ctx, &route).await {
                Ok(p) => p,
                Err(r) => return Ok(into_response(r)),
            };
            G::insert_extensions(&payment, req.extensions_mut());
            // Completes the payment per the cancel policy if this future is dropped while the
            // handler runs (client disconnect, timeout layer), and releases it on a panic (F5).
            let mut guard = crate::gate::payment_guard(gate, ctx, payment);
            guard.start();
            let resp = crate::metrics::handler(inner.call(req)).await?;
            Ok(complete(resp, |status| guard.finish(status)).await)
        })
    }
}

/// Tower layer protecting the routes of an [`X402HttpServer`]'s route table.
pub type X402Layer = GateLayer<X402HttpServer>;

/// The service made by [`X402Layer`].
pub type X402Service<S> = GateService<S, X402HttpServer>;

impl IntoResponse for MissingPayment {
    fn into_response(self) -> Response {
        (http::StatusCode::INTERNAL_SERVER_ERROR, self.to_string()).into_response()
    }
}

impl<S: Send + Sync> FromRequestParts<S> for X402Payment {
    type Rejection = MissingPayment;
    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<X402Payment>().cloned().ok_or(MissingPayment)
    }
}

/// What `#[x402]` puts first in a handler's arguments: captures the request and the
/// [`X402HttpServer`] from the router state (`X402HttpServer: FromRef<S>`).
#[derive(Debug)]
pub struct X402Guard {
    server: X402HttpServer,
    method: http::Method,
    uri: http::Uri,
    headers: http::HeaderMap,
}

impl<S> FromRequestParts<S> for X402Guard
where
    X402HttpServer: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Infallible;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Ok(Self {
            server: X402HttpServer::from_ref(state),
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            headers: parts.headers.clone(),
        })
    }
}

impl X402Guard {
    /// Verifies the request's payment for `route`; `Err` is the response to return at once (the
    /// route's precomputed 402 when the request carries no payment).
    pub async fn verify(self, route: &'static StaticRoute) -> Result<X402Verified, Response> {
        let config: Arc<RouteConfig> = route.config().map_err(into_response)?;
        let head = HttpHead { method: &self.method, uri: &self.uri, headers: &self.headers };
        if let Some(prepared) = self.server.precomputed_unpaid(&config, &head) {
            return Err(prepared_response(&prepared));
        }
        let ctx = RequestContext::from_owned_parts(self.method, &self.uri, self.headers);
        match Box::pin(self.server.process(&ctx, &config)).await {
            Ok(payment) => {
                let guard = crate::gate::payment_guard(self.server, ctx, payment.clone());
                Ok(X402Verified { payment, guard })
            }
            Err(r) => Err(into_response(r)),
        }
    }
}

/// A verified payment inside a `#[x402]` handler. Dropped before [`X402Verified::finish`] it is
/// released; dropped while the handler runs (client disconnect, timeout layer) it is completed
/// per [`X402HttpServer::cancel_policy`], or released if the handler panicked.
#[derive(Debug)]
pub struct X402Verified {
    payment: X402Payment,
    guard: FinishGuard,
}

impl X402Verified {
    /// The payment, for the handler's `X402Payment` parameter.
    pub fn payment(&self) -> X402Payment {
        self.payment.clone()
    }

    /// Runs the handler body, then settles (status < 400) or releases the payment.
    pub async fn finish<R: IntoResponse>(self, body: impl Future<Output = R>) -> Response {
        let mut guard = self.guard;
        guard.start();
        let resp = crate::metrics::handler(body).await.into_response();
        complete(resp, |status| guard.finish(status)).await
    }
}

// ---------------------------------------------------------------------------------------------
// MPP
// ---------------------------------------------------------------------------------------------

use crate::mpp::{Credential, Mpp, Paid, Receipt, StaticPaySpec};

/// Tower layer protecting the routes of an [`Mpp`] route table (`Mpp::route`).
pub type MppLayer = GateLayer<Mpp>;

/// The service made by [`MppLayer`].
pub type MppService<S> = GateService<S, Mpp>;

impl<S: Send + Sync> FromRequestParts<S> for Credential {
    type Rejection = MissingPayment;
    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<Credential>().cloned().ok_or(MissingPayment)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Receipt {
    type Rejection = MissingPayment;
    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<Receipt>().cloned().ok_or(MissingPayment)
    }
}

/// What `#[pay]` puts first in a handler's arguments: the request and the [`Mpp`] from the
/// router state (`Mpp: FromRef<S>`).
#[derive(Debug)]
pub struct MppGuard {
    mpp: Mpp,
    ctx: RequestContext,
}

impl<S> FromRequestParts<S> for MppGuard
where
    Mpp: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Infallible;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Ok(Self {
            mpp: Mpp::from_ref(state),
            ctx: RequestContext::from_parts(&parts.method, &parts.uri, &parts.headers),
        })
    }
}

impl MppGuard {
    /// Verifies the request's credential for `spec`; `Err` is the response to return at once.
    pub async fn verify(self, spec: &'static StaticPaySpec) -> Result<MppVerified, Response> {
        let spec = spec.spec();
        match Box::pin(self.mpp.process(&self.ctx, &spec)).await {
            Ok(paid) => Ok(MppVerified::new(self.mpp, self.ctx, paid)),
            Err(r) => Err(into_response(r)),
        }
    }
}

/// A verified MPP payment inside a `#[pay]` handler. Dropped before [`MppVerified::finish`] its
/// reservation is released; dropped while the handler runs (client disconnect, timeout layer) it
/// is committed per [`Mpp::cancel_policy`], or released if the handler panicked.
#[derive(Debug)]
pub struct MppVerified {
    credential: Credential,
    receipt: Receipt,
    guard: FinishGuard,
}

impl MppVerified {
    fn new(mpp: Mpp, ctx: RequestContext, paid: Paid) -> Self {
        let (credential, receipt) = (paid.credential.clone(), paid.receipt.clone());
        Self { credential, receipt, guard: crate::gate::payment_guard(mpp, ctx, paid) }
    }

    /// The credential, for the handler's `Credential` parameter.
    pub fn credential(&self) -> Credential {
        self.credential.clone()
    }

    /// The receipt, for the handler's `Receipt` parameter.
    pub fn receipt(&self) -> Receipt {
        self.receipt.clone()
    }

    /// Runs the handler body, then commits (status < 400, adding `Payment-Receipt`) or
    /// releases the payment.
    pub async fn finish<R: IntoResponse>(self, body: impl Future<Output = R>) -> Response {
        let mut guard = self.guard;
        guard.start();
        let resp = crate::metrics::handler(body).await.into_response();
        complete(resp, |status| guard.finish(status)).await
    }
}

// ---------------------------------------------------------------------------------------------
// Dual-protocol router
// ---------------------------------------------------------------------------------------------

use crate::router::{Paid as RouterPaid, PaymentRouter};

/// Tower layer protecting the routes of a [`PaymentRouter`] (x402 and MPP on one URL).
pub type PaymentRouterLayer = GateLayer<PaymentRouter>;

/// The service made by [`PaymentRouterLayer`].
pub type PaymentRouterService<S> = GateService<S, PaymentRouter>;

impl<S: Send + Sync> FromRequestParts<S> for RouterPaid {
    type Rejection = MissingPayment;
    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<RouterPaid>().cloned().ok_or(MissingPayment)
    }
}

use crate::router::StaticDualRoute;

/// What a handler carrying both `#[x402]` and `#[pay]` puts first in its arguments: the request,
/// and the [`X402HttpServer`] and the [`Mpp`] from the router state (`X402HttpServer: FromRef<S>`
/// and `Mpp: FromRef<S>`).
#[derive(Debug)]
pub struct DualGuard {
    server: X402HttpServer,
    mpp: Mpp,
    ctx: RequestContext,
}

impl<S> FromRequestParts<S> for DualGuard
where
    X402HttpServer: FromRef<S>,
    Mpp: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Infallible;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Ok(Self {
            server: X402HttpServer::from_ref(state),
            mpp: Mpp::from_ref(state),
            ctx: RequestContext::from_parts(&parts.method, &parts.uri, &parts.headers),
        })
    }
}

impl DualGuard {
    /// Verifies the request's x402 payment or MPP credential for `route` (MPP first when both
    /// are present); `Err` is the response to return at once (the merged 402 when unpaid).
    pub async fn verify(self, route: &'static StaticDualRoute) -> Result<DualVerified, Response> {
        match Box::pin(route.process(&self.ctx, &self.server, &self.mpp)).await {
            Ok(payment) => Ok(DualVerified { paid: payment.paid(), guard: crate::gate::router_guard(payment) }),
            Err(r) => Err(into_response(r)),
        }
    }
}

/// A verified payment inside a handler carrying both `#[x402]` and `#[pay]`. Dropped before
/// [`DualVerified::finish`] it is released; dropped while the handler runs it is completed per
/// the accepting protocol's cancel policy, or released if the handler panicked.
#[derive(Debug)]
pub struct DualVerified {
    paid: RouterPaid,
    guard: FinishGuard,
}

impl DualVerified {
    /// How the request was paid, for the handler's `Paid` parameter.
    pub fn paid(&self) -> RouterPaid {
        self.paid.clone()
    }

    /// Runs the handler body, then completes the payment with the protocol that accepted it
    /// (adding `PAYMENT-RESPONSE` or `Payment-Receipt`), or releases it (status >= 400).
    pub async fn finish<R: IntoResponse>(self, body: impl Future<Output = R>) -> Response {
        let mut guard = self.guard;
        guard.start();
        let resp = crate::metrics::handler(body).await.into_response();
        complete(resp, |status| guard.finish(status)).await
    }
}
