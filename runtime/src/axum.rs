//! axum integration (feature `axum`): the route-table [`X402Layer`], the [`X402Payment`]
//! extractor for handlers behind it, and the guard the `#[x402]` macro expands to.
//!
//! ```no_run
//! # use pay402_runtime::x402::{http::{X402HttpServer, RouteConfig, PaymentOption, X402Payment}, server::X402ResourceServer, ExactEvmScheme, HttpFacilitatorClient, HttpFacilitatorConfig};
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

use crate::x402::http::{
    MissingPayment, PaymentHttpResponse, RequestContext, RouteConfig, StaticRoute, X402HttpServer, X402Payment,
};
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

/// Settles (or releases) after the handler and returns the final response.
async fn finish_response(
    server: &X402HttpServer,
    ctx: &RequestContext,
    payment: &X402Payment,
    mut resp: Response,
) -> Response {
    if resp.status().as_u16() >= 400 {
        server.release(payment).await;
        return resp;
    }
    match server.settle(ctx, payment).await {
        Ok(headers) => {
            resp.headers_mut().extend(headers);
            resp
        }
        Err(failure) => into_response(failure),
    }
}

/// Tower layer protecting the routes of an [`X402HttpServer`]'s route table.
#[derive(Clone, Debug)]
pub struct X402Layer {
    server: X402HttpServer,
}

impl X402Layer {
    /// Protects `server`'s routes; other requests pass through untouched.
    pub fn new(server: X402HttpServer) -> Self {
        Self { server }
    }
}

impl<S> tower::Layer<S> for X402Layer {
    type Service = X402Service<S>;
    fn layer(&self, inner: S) -> Self::Service {
        X402Service { inner, server: self.server.clone() }
    }
}

/// The service made by [`X402Layer`].
#[derive(Clone, Debug)]
pub struct X402Service<S> {
    inner: S,
    server: X402HttpServer,
}

impl<S> tower::Service<axum::extract::Request> for X402Service<S>
where
    S: tower::Service<axum::extract::Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: axum::extract::Request) -> Self::Future {
        let Some(route) = self.server.route_for(req.method().as_str(), req.uri().path()) else {
            return Box::pin(self.inner.call(req));
        };
        // Take the service that was driven to readiness; leave a clone in its place.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let server = self.server.clone();
        Box::pin(async move {
            let ctx = RequestContext::from_parts(req.method(), req.uri(), req.headers());
            let payment = match server.process(&ctx, &route).await {
                Ok(p) => p,
                Err(r) => return Ok(into_response(r)),
            };
            req.extensions_mut().insert(payment.clone());
            let resp = inner.call(req).await?;
            Ok(finish_response(&server, &ctx, &payment, resp).await)
        })
    }
}

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
    ctx: RequestContext,
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
            ctx: RequestContext::from_parts(&parts.method, &parts.uri, &parts.headers),
        })
    }
}

impl X402Guard {
    /// Verifies the request's payment for `route`; `Err` is the response to return at once.
    pub async fn verify(self, route: &'static StaticRoute) -> Result<X402Verified, Response> {
        let config: Arc<RouteConfig> = route.config(&self.server).map_err(into_response)?;
        match self.server.process(&self.ctx, &config).await {
            Ok(payment) => Ok(X402Verified { server: self.server, ctx: self.ctx, payment }),
            Err(r) => Err(into_response(r)),
        }
    }
}

/// A verified payment inside a `#[x402]` handler.
#[derive(Debug)]
pub struct X402Verified {
    server: X402HttpServer,
    ctx: RequestContext,
    payment: X402Payment,
}

impl X402Verified {
    /// The payment, for the handler's `X402Payment` parameter.
    pub fn payment(&self) -> X402Payment {
        self.payment.clone()
    }

    /// Runs the handler body, then settles (status < 400) or releases the payment.
    pub async fn finish<R: IntoResponse>(self, body: impl Future<Output = R>) -> Response {
        let resp = body.await.into_response();
        finish_response(&self.server, &self.ctx, &self.payment, resp).await
    }
}

// ---------------------------------------------------------------------------------------------
// MPP
// ---------------------------------------------------------------------------------------------

use crate::mpp::{Credential, Mpp, Paid, Receipt, StaticPaySpec};

/// Commits (status < 400, adding `Payment-Receipt`) or releases the payment after the handler.
async fn settle_mpp(paid: Paid, mut resp: Response) -> Response {
    match paid.finish(resp.status().as_u16()).await {
        Ok(headers) => {
            resp.headers_mut().extend(headers);
            resp
        }
        Err(failure) => into_response(failure),
    }
}

/// Tower layer protecting the routes of an [`Mpp`] route table (`Mpp::route`).
#[derive(Clone, Debug)]
pub struct MppLayer {
    mpp: Mpp,
}

impl MppLayer {
    /// Protects `mpp`'s routes; other requests pass through untouched.
    pub fn new(mpp: Mpp) -> Self {
        Self { mpp }
    }
}

impl<S> tower::Layer<S> for MppLayer {
    type Service = MppService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        MppService { inner, mpp: self.mpp.clone() }
    }
}

/// The service made by [`MppLayer`].
#[derive(Clone, Debug)]
pub struct MppService<S> {
    inner: S,
    mpp: Mpp,
}

impl<S> tower::Service<::axum::extract::Request> for MppService<S>
where
    S: tower::Service<::axum::extract::Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: ::axum::extract::Request) -> Self::Future {
        let Some(spec) = self.mpp.route_for(req.method().as_str(), req.uri().path()) else {
            return Box::pin(self.inner.call(req));
        };
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let mpp = self.mpp.clone();
        Box::pin(async move {
            let ctx = RequestContext::from_parts(req.method(), req.uri(), req.headers());
            let paid = match mpp.process(&ctx, &spec).await {
                Ok(paid) => paid,
                Err(r) => return Ok(into_response(r)),
            };
            req.extensions_mut().insert(paid.credential.clone());
            req.extensions_mut().insert(paid.receipt.clone());
            let resp = inner.call(req).await?;
            Ok(settle_mpp(paid, resp).await)
        })
    }
}

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
        match self.mpp.process(&self.ctx, &spec).await {
            Ok(paid) => Ok(MppVerified { paid }),
            Err(r) => Err(into_response(r)),
        }
    }
}

/// A verified MPP payment inside a `#[pay]` handler.
#[derive(Debug)]
pub struct MppVerified {
    paid: Paid,
}

impl MppVerified {
    /// The credential, for the handler's `Credential` parameter.
    pub fn credential(&self) -> Credential {
        self.paid.credential.clone()
    }

    /// The receipt, for the handler's `Receipt` parameter.
    pub fn receipt(&self) -> Receipt {
        self.paid.receipt.clone()
    }

    /// Runs the handler body, then commits (status < 400, adding `Payment-Receipt`) or
    /// releases the payment.
    pub async fn finish<R: IntoResponse>(self, body: impl Future<Output = R>) -> Response {
        let resp = body.await.into_response();
        settle_mpp(self.paid, resp).await
    }
}

// ---------------------------------------------------------------------------------------------
// Dual-protocol router
// ---------------------------------------------------------------------------------------------

use crate::router::{Paid as RouterPaid, PaymentRouter};

/// Tower layer protecting the routes of a [`PaymentRouter`] (x402 and MPP on one URL).
#[derive(Clone, Debug)]
pub struct PaymentRouterLayer {
    router: PaymentRouter,
}

impl PaymentRouterLayer {
    /// Protects `router`'s routes; other requests pass through untouched.
    pub fn new(router: PaymentRouter) -> Self {
        Self { router }
    }
}

impl<S> tower::Layer<S> for PaymentRouterLayer {
    type Service = PaymentRouterService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        PaymentRouterService { inner, router: self.router.clone() }
    }
}

/// The service made by [`PaymentRouterLayer`].
#[derive(Clone, Debug)]
pub struct PaymentRouterService<S> {
    inner: S,
    router: PaymentRouter,
}

impl<S> tower::Service<::axum::extract::Request> for PaymentRouterService<S>
where
    S: tower::Service<::axum::extract::Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: ::axum::extract::Request) -> Self::Future {
        let Some(route) = self.router.route_for(req.method().as_str(), req.uri().path()) else {
            return Box::pin(self.inner.call(req));
        };
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let router = self.router.clone();
        Box::pin(async move {
            let ctx = RequestContext::from_parts(req.method(), req.uri(), req.headers());
            let payment = match router.process(&ctx, &route).await {
                Ok(p) => p,
                Err(r) => return Ok(into_response(r)),
            };
            insert_paid(req.extensions_mut(), payment.paid());
            let mut resp = inner.call(req).await?;
            match payment.finish(resp.status().as_u16()).await {
                Ok(headers) => {
                    resp.headers_mut().extend(headers);
                    Ok(resp)
                }
                Err(failure) => Ok(into_response(failure)),
            }
        })
    }
}

/// Makes the payment available to the handler's extractors (`Paid`, and the protocol's own
/// `X402Payment` or `Credential` + `Receipt`).
fn insert_paid(ext: &mut http::Extensions, paid: RouterPaid) {
    match &paid {
        RouterPaid::X402(p) => {
            ext.insert(p.clone());
        }
        RouterPaid::Mpp { credential, receipt } => {
            ext.insert(credential.clone());
            ext.insert(receipt.clone());
        }
        RouterPaid::Other { .. } => {}
    }
    ext.insert(paid);
}

impl<S: Send + Sync> FromRequestParts<S> for RouterPaid {
    type Rejection = MissingPayment;
    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<RouterPaid>().cloned().ok_or(MissingPayment)
    }
}

use crate::router::{RouterPayment, StaticDualRoute};

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
        match route.process(&self.ctx, &self.server, &self.mpp).await {
            Ok(payment) => Ok(DualVerified { payment }),
            Err(r) => Err(into_response(r)),
        }
    }
}

/// A verified payment inside a handler carrying both `#[x402]` and `#[pay]`.
#[derive(Debug)]
pub struct DualVerified {
    payment: RouterPayment,
}

impl DualVerified {
    /// How the request was paid, for the handler's `Paid` parameter.
    pub fn paid(&self) -> RouterPaid {
        self.payment.paid()
    }

    /// Runs the handler body, then completes the payment with the protocol that accepted it
    /// (adding `PAYMENT-RESPONSE` or `Payment-Receipt`), or releases it (status >= 400).
    pub async fn finish<R: IntoResponse>(self, body: impl Future<Output = R>) -> Response {
        let mut resp = body.await.into_response();
        match self.payment.finish(resp.status().as_u16()).await {
            Ok(headers) => {
                resp.headers_mut().extend(headers);
                resp
            }
            Err(failure) => into_response(failure),
        }
    }
}
