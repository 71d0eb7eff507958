//! actix-web integration (feature `actix`): the route-table [`X402Middleware`], the
//! [`X402Payment`] extractor for handlers behind it, and the guard the `#[x402]` macro expands
//! to. Configuration reaches handlers through `web::Data<X402HttpServer>`.
//!
//! ```no_run
//! # use pay402_runtime::x402::{X402HttpServer, RouteConfig, PaymentOption, X402Payment, X402ResourceServer, ExactEvmScheme, HttpFacilitatorClient, HttpFacilitatorConfig};
//! # use pay402_runtime::actix::X402Middleware;
//! # fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let facilitator = HttpFacilitatorClient::new(HttpFacilitatorConfig::new("http://127.0.0.1:4022"))?;
//! let server = X402ResourceServer::new(facilitator).register("eip155:196", ExactEvmScheme::new());
//! let x402 = X402HttpServer::new(server)
//!     .route("GET /weather", RouteConfig::new(PaymentOption::exact("$0.001", "0x1111111111111111111111111111111111111111")))?;
//! let app = actix_web::App::new()
//!     .wrap(X402Middleware::new(x402))
//!     .route("/weather", actix_web::web::get().to(|p: X402Payment| async move { format!("paid by {:?}", p.payer()) }));
//! # Ok(()) }
//! ```
#![allow(clippy::result_large_err)] // the Err side is the HTTP response itself, built once per request

use crate::completion::FinishGuard;
use crate::gate::{ExtensionSink, PaymentGate};
use crate::web::{PaymentHttpResponse, PreparedResponse, RequestContext, RequestHead, push_url};
use crate::x402::{MissingPayment, RouteConfig, StaticRoute, X402HttpServer, X402Payment};
use ::actix_web::body::{EitherBody, MessageBody};
use ::actix_web::dev::{Payload, Service, ServiceRequest, ServiceResponse, Transform, forward_ready};
use ::actix_web::http::StatusCode;
use ::actix_web::http::header::{HeaderName, HeaderValue};
use ::actix_web::{FromRequest, HttpMessage, HttpRequest, HttpResponse, Responder, ResponseError, web};
use futures::future::{LocalBoxFuture, Ready, ready};
use std::convert::Infallible;
use std::future::Future;
use std::rc::Rc;
use std::sync::Arc;

/// The response type `#[x402]` handlers return on actix-web.
pub type Response = HttpResponse;

/// Converts a pay402 response into an actix-web response.
pub fn into_response(r: PaymentHttpResponse) -> HttpResponse {
    let status = StatusCode::from_u16(r.status.as_u16()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = HttpResponse::with_body(status, r.body).map_into_boxed_body();
    copy_headers(&r.headers, resp.headers_mut());
    resp
}

fn copy_headers(from: &http::HeaderMap, to: &mut ::actix_web::http::header::HeaderMap) {
    for (name, value) in from {
        if let (Ok(n), Ok(v)) =
            (HeaderName::from_bytes(name.as_str().as_bytes()), HeaderValue::from_bytes(value.as_bytes()))
        {
            to.insert(n, v);
        }
    }
}

/// `http` 1 headers as actix-web's (`http` 0.2) name/value pairs, every line kept.
pub(crate) fn convert_headers(from: &http::HeaderMap) -> Vec<(HeaderName, HeaderValue)> {
    from.iter()
        .filter_map(|(name, value)| {
            Some((
                HeaderName::from_bytes(name.as_str().as_bytes()).ok()?,
                HeaderValue::from_bytes(value.as_bytes()).ok()?,
            ))
        })
        .collect()
}

/// Answers a prepared response (its headers were converted to actix-web's types once).
fn prepared_response(p: &PreparedResponse) -> HttpResponse {
    let status = StatusCode::from_u16(p.status.as_u16()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = HttpResponse::with_body(status, p.body.clone()).map_into_boxed_body();
    let headers = resp.headers_mut();
    for (name, value) in &p.actix_headers {
        headers.append(name.clone(), value.clone());
    }
    resp
}

/// What the unpaid fast path reads of an actix request, without converting anything.
struct ActixHead<'a>(&'a HttpRequest);

impl RequestHead for ActixHead<'_> {
    fn header_bytes(&self, name: &str) -> Option<&[u8]> {
        self.0.headers().get(name).map(HeaderValue::as_bytes)
    }

    /// As [`request_context`] (actix-web's `ConnectionInfo`): without `Forwarded` /
    /// `X-Forwarded-*` headers that is the URI's scheme (else `https` when the app is configured
    /// secure, else `http`) and `Host` (else the URI's authority, else the app's host); with
    /// them, the connection info itself.
    fn write_url(&self, out: &mut String) -> bool {
        let req = self.0;
        let pq = req.uri().path_and_query().map_or("/", |p| p.as_str());
        let headers = req.headers();
        if headers.contains_key("forwarded")
            || headers.contains_key("x-forwarded-proto")
            || headers.contains_key("x-forwarded-host")
        {
            let info = req.connection_info();
            push_url(out, info.scheme(), info.host(), pq);
            return true;
        }
        let config = req.app_config();
        let scheme = req.uri().scheme_str().unwrap_or(if config.secure() { "https" } else { "http" });
        let host = headers
            .get("host")
            .and_then(|h| h.to_str().ok())
            .or_else(|| req.uri().authority().map(|a| a.as_str()))
            .unwrap_or_else(|| config.host());
        push_url(out, scheme, host, pq);
        true
    }

    fn method_str(&self) -> &str {
        self.0.method().as_str()
    }

    fn path_str(&self) -> &str {
        self.0.path()
    }
}

/// The [`RequestContext`] of an actix request (URL from the connection info).
pub fn request_context(req: &HttpRequest) -> RequestContext {
    let mut url = String::new();
    ActixHead(req).write_url(&mut url);
    let mut headers = http::HeaderMap::with_capacity(req.headers().len());
    for (name, value) in req.headers() {
        if let (Ok(n), Ok(v)) =
            (http::HeaderName::from_bytes(name.as_str().as_bytes()), http::HeaderValue::from_bytes(value.as_bytes()))
        {
            headers.append(n, v);
        }
    }
    let method = http::Method::from_bytes(req.method().as_str().as_bytes()).unwrap_or(http::Method::GET);
    RequestContext::new(method, url, headers)
}

impl ResponseError for MissingPayment {
    fn status_code(&self) -> StatusCode {
        StatusCode::INTERNAL_SERVER_ERROR
    }
}

impl FromRequest for X402Payment {
    type Error = MissingPayment;
    type Future = Ready<Result<Self, MissingPayment>>;
    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(req.extensions().get::<X402Payment>().cloned().ok_or(MissingPayment))
    }
}

impl ExtensionSink for ::actix_web::dev::Extensions {
    fn insert<T: Clone + Send + Sync + 'static>(&mut self, value: T) {
        ::actix_web::dev::Extensions::insert(self, value);
    }
}

/// Completes a payment once the handler answered `status`: `Ok` after adding its headers to
/// `headers`, `Err` with the response to send instead.
async fn complete<F>(
    status: StatusCode,
    headers: &mut ::actix_web::http::header::HeaderMap,
    finish: impl FnOnce(http::StatusCode) -> F,
) -> Result<(), PaymentHttpResponse>
where
    F: Future<Output = Result<http::HeaderMap, PaymentHttpResponse>>,
{
    // actix-web speaks `http` 0.2; pay402's rule takes the `http` 1 status.
    let status = http::StatusCode::from_u16(status.as_u16()).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    let added = finish(status).await?;
    copy_headers(&added, headers);
    Ok(())
}

/// Turns a guarded handler's answer into the final response: completes the payment (see
/// [`complete`]), or sends the failure converted by `on_failure`.
async fn finish_handler<R: Responder, F>(
    req: &HttpRequest,
    answer: R,
    finish: impl FnOnce(http::StatusCode) -> F,
    on_failure: fn(PaymentHttpResponse) -> HttpResponse,
) -> HttpResponse
where
    F: Future<Output = Result<http::HeaderMap, PaymentHttpResponse>>,
{
    let mut resp = answer.respond_to(req).map_into_boxed_body();
    let status = resp.status();
    match complete(status, resp.headers_mut(), finish).await {
        Ok(()) => resp,
        Err(failure) => on_failure(failure),
    }
}

/// The app's `web::Data<T>`, if configured.
fn app_data<T: Clone + 'static>(req: &HttpRequest) -> Option<T> {
    req.app_data::<web::Data<T>>().map(|d| d.get_ref().clone())
}

/// The 500 sent (and logged) when a guarded handler runs without its configuration.
fn missing_config(message: &'static str) -> HttpResponse {
    tracing::error!("{message}");
    HttpResponse::InternalServerError().body(message)
}

/// actix-web middleware protecting the routes of a [`PaymentGate`]'s route table; see the
/// aliases [`X402Middleware`], [`MppMiddleware`] and [`PaymentRouterMiddleware`].
#[derive(Clone, Debug)]
pub struct GateMiddleware<G> {
    gate: G,
}

impl<G> GateMiddleware<G> {
    /// Protects `gate`'s routes; other requests pass through untouched.
    pub fn new(gate: G) -> Self {
        Self { gate }
    }
}

impl<S, B, G> Transform<S, ServiceRequest> for GateMiddleware<G>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = ::actix_web::Error> + 'static,
    B: MessageBody + 'static,
    G: PaymentGate,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = ::actix_web::Error;
    type Transform = GateMiddlewareService<S, G>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, ()>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(GateMiddlewareService { service: Rc::new(service), gate: self.gate.clone() }))
    }
}

/// The service made by [`GateMiddleware`].
#[derive(Debug)]
pub struct GateMiddlewareService<S, G> {
    service: Rc<S>,
    gate: G,
}

impl<S, B, G> Service<ServiceRequest> for GateMiddlewareService<S, G>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = ::actix_web::Error> + 'static,
    B: MessageBody + 'static,
    G: PaymentGate,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = ::actix_web::Error;
    type Future = LocalBoxFuture<'static, Result<Self::Response, Self::Error>>;

    forward_ready!(service);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        let service = Rc::clone(&self.service);
        let Some(route) = self.gate.route_for(req.method().as_str(), req.path()) else {
            return Box::pin(async move { service.call(req).await.map(ServiceResponse::map_into_left_body) });
        };
        if let Some(prepared) = self.gate.precomputed_unpaid(&route, &ActixHead(req.request())) {
            let (http_req, _) = req.into_parts();
            let resp = ServiceResponse::new(http_req, prepared_response(&prepared)).map_into_right_body();
            return Box::pin(std::future::ready(Ok(resp)));
        }
        let gate = self.gate.clone();
        Box::pin(async move {
            let ctx = request_context(req.request());
            let payment = match gate.process(&ctx, &route).await {
                Ok(p) => p,
                Err(r) => {
                    let r = if G::MULTI_VALUED_HEADERS { into_response_all(r) } else { into_response(r) };
                    let (http_req, _) = req.into_parts();
                    return Ok(ServiceResponse::new(http_req, r).map_into_right_body());
                }
            };
            G::insert_extensions(&payment, &mut *req.extensions_mut());
            // Completes the payment per the cancel policy if this future is dropped while the
            // handler runs (client disconnect, timeout), and releases it on a panic (F5).
            let mut guard = crate::gate::payment_guard(gate, ctx, payment);
            guard.start();
            let mut res = crate::metrics::handler(service.call(req)).await?;
            let status = res.status();
            match complete(status, res.headers_mut(), |status| guard.finish(status)).await {
                Ok(()) => Ok(res.map_into_left_body()),
                Err(failure) => {
                    let (http_req, _) = res.into_parts();
                    Ok(ServiceResponse::new(http_req, into_response(failure)).map_into_right_body())
                }
            }
        })
    }
}

/// actix-web middleware protecting the routes of an [`X402HttpServer`]'s route table.
pub type X402Middleware = GateMiddleware<X402HttpServer>;

/// The service made by [`X402Middleware`].
pub type X402MiddlewareService<S> = GateMiddlewareService<S, X402HttpServer>;

/// The message of the 500 sent when a `#[x402]` handler runs without configuration.
pub const MISSING_SERVER_MESSAGE: &str =
    "pay402: no X402HttpServer in the app data; add `.app_data(web::Data::new(x402_server))` to the App";

/// What `#[x402]` puts first in a handler's arguments: the request and the
/// `web::Data<X402HttpServer>` of the app.
#[derive(Debug)]
pub struct X402Guard {
    server: Option<X402HttpServer>,
    req: HttpRequest,
}

impl FromRequest for X402Guard {
    type Error = Infallible;
    type Future = Ready<Result<Self, Infallible>>;
    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let server = app_data::<X402HttpServer>(req);
        ready(Ok(Self { server, req: req.clone() }))
    }
}

impl X402Guard {
    /// Verifies the request's payment for `route`; `Err` is the response to return at once.
    pub async fn verify(self, route: &'static StaticRoute) -> Result<X402Verified, HttpResponse> {
        let Some(server) = self.server else {
            return Err(missing_config(MISSING_SERVER_MESSAGE));
        };
        let config: Arc<RouteConfig> = route.config().map_err(into_response)?;
        if let Some(prepared) = server.precomputed_unpaid(&config, &ActixHead(&self.req)) {
            return Err(prepared_response(&prepared));
        }
        let ctx = request_context(&self.req);
        match Box::pin(server.process(&ctx, &config)).await {
            Ok(payment) => {
                let guard = crate::gate::payment_guard(server, ctx, payment.clone());
                Ok(X402Verified { req: self.req, payment, guard })
            }
            Err(r) => Err(into_response(r)),
        }
    }
}

/// A verified payment inside a `#[x402]` handler. Dropped before [`X402Verified::finish`] it is
/// released; dropped while the handler runs (client disconnect, timeout) it is completed per
/// [`X402HttpServer::cancel_policy`], or released if the handler panicked.
#[derive(Debug)]
pub struct X402Verified {
    req: HttpRequest,
    payment: X402Payment,
    guard: FinishGuard,
}

impl X402Verified {
    /// The payment, for the handler's `X402Payment` parameter.
    pub fn payment(&self) -> X402Payment {
        self.payment.clone()
    }

    /// Runs the handler body, then settles (status < 400) or releases the payment.
    pub async fn finish<R: Responder>(self, body: impl Future<Output = R>) -> HttpResponse {
        let mut guard = self.guard;
        guard.start();
        finish_handler(&self.req, crate::metrics::handler(body).await, |status| guard.finish(status), into_response)
            .await
    }
}

// ---------------------------------------------------------------------------------------------
// MPP
// ---------------------------------------------------------------------------------------------

use crate::mpp::{Credential, Mpp, Receipt, StaticPaySpec};

/// The message of the 500 sent when a `#[pay]` handler runs without configuration.
pub const MISSING_MPP_MESSAGE: &str = "pay402: no Mpp in the app data; add `.app_data(web::Data::new(mpp))` to the App";

impl FromRequest for Credential {
    type Error = MissingPayment;
    type Future = Ready<Result<Self, MissingPayment>>;
    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(req.extensions().get::<Credential>().cloned().ok_or(MissingPayment))
    }
}

impl FromRequest for Receipt {
    type Error = MissingPayment;
    type Future = Ready<Result<Self, MissingPayment>>;
    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(req.extensions().get::<Receipt>().cloned().ok_or(MissingPayment))
    }
}

/// actix-web middleware protecting the routes of an [`Mpp`] route table.
pub type MppMiddleware = GateMiddleware<Mpp>;

/// The service made by [`MppMiddleware`].
pub type MppMiddlewareService<S> = GateMiddlewareService<S, Mpp>;

/// What `#[pay]` puts first in a handler's arguments: the request and the app's
/// `web::Data<Mpp>`.
#[derive(Debug)]
pub struct MppGuard {
    mpp: Option<Mpp>,
    req: HttpRequest,
}

impl FromRequest for MppGuard {
    type Error = Infallible;
    type Future = Ready<Result<Self, Infallible>>;
    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let mpp = app_data::<Mpp>(req);
        ready(Ok(Self { mpp, req: req.clone() }))
    }
}

impl MppGuard {
    /// Verifies the request's credential for `spec`; `Err` is the response to return at once.
    pub async fn verify(self, spec: &'static StaticPaySpec) -> Result<MppVerified, HttpResponse> {
        let Some(mpp) = self.mpp else {
            return Err(missing_config(MISSING_MPP_MESSAGE));
        };
        let spec = spec.spec();
        let ctx = request_context(&self.req);
        match Box::pin(mpp.process(&ctx, &spec)).await {
            Ok(paid) => {
                let (credential, receipt) = (paid.credential.clone(), paid.receipt.clone());
                let guard = crate::gate::payment_guard(mpp, ctx, paid);
                Ok(MppVerified { req: self.req, credential, receipt, guard })
            }
            Err(r) => Err(into_response(r)),
        }
    }
}

/// A verified MPP payment inside a `#[pay]` handler. Dropped before [`MppVerified::finish`] its
/// reservation is released; dropped while the handler runs (client disconnect, timeout) it is
/// committed per [`Mpp::cancel_policy`], or released if the handler panicked.
#[derive(Debug)]
pub struct MppVerified {
    req: HttpRequest,
    credential: Credential,
    receipt: Receipt,
    guard: FinishGuard,
}

impl MppVerified {
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
    pub async fn finish<R: Responder>(self, body: impl Future<Output = R>) -> HttpResponse {
        let mut guard = self.guard;
        guard.start();
        finish_handler(&self.req, crate::metrics::handler(body).await, |status| guard.finish(status), into_response)
            .await
    }
}

// ---------------------------------------------------------------------------------------------
// Dual-protocol router
// ---------------------------------------------------------------------------------------------

use crate::router::{Paid as RouterPaid, PaymentRouter};

impl FromRequest for RouterPaid {
    type Error = MissingPayment;
    type Future = Ready<Result<Self, MissingPayment>>;
    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(req.extensions().get::<RouterPaid>().cloned().ok_or(MissingPayment))
    }
}

/// actix-web middleware protecting the routes of a [`PaymentRouter`] (x402 and MPP on one URL).
pub type PaymentRouterMiddleware = GateMiddleware<PaymentRouter>;

/// The service made by [`PaymentRouterMiddleware`].
pub type PaymentRouterMiddlewareService<S> = GateMiddlewareService<S, PaymentRouter>;

use crate::router::StaticDualRoute;

/// Like [`into_response`], keeping every line of a multi-valued header (the merged 402 may carry
/// several `WWW-Authenticate` challenges).
fn into_response_all(r: PaymentHttpResponse) -> HttpResponse {
    let status = StatusCode::from_u16(r.status.as_u16()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = HttpResponse::with_body(status, r.body).map_into_boxed_body();
    let to = resp.headers_mut();
    for (name, value) in &r.headers {
        if let (Ok(n), Ok(v)) =
            (HeaderName::from_bytes(name.as_str().as_bytes()), HeaderValue::from_bytes(value.as_bytes()))
        {
            to.append(n, v);
        }
    }
    resp
}

/// The message of the 500 sent when a handler carrying both `#[x402]` and `#[pay]` runs without
/// its configuration.
pub const MISSING_DUAL_MESSAGE: &str = "pay402: a handler with #[x402] and #[pay] needs both an X402HttpServer and an \
                                        Mpp in the app data; add `.app_data(web::Data::new(x402_server))` and \
                                        `.app_data(web::Data::new(mpp))` to the App";

/// What a handler carrying both `#[x402]` and `#[pay]` puts first in its arguments: the request,
/// and the app's `web::Data<X402HttpServer>` and `web::Data<Mpp>`.
#[derive(Debug)]
pub struct DualGuard {
    server: Option<X402HttpServer>,
    mpp: Option<Mpp>,
    req: HttpRequest,
}

impl FromRequest for DualGuard {
    type Error = Infallible;
    type Future = Ready<Result<Self, Infallible>>;
    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let server = app_data::<X402HttpServer>(req);
        let mpp = app_data::<Mpp>(req);
        ready(Ok(Self { server, mpp, req: req.clone() }))
    }
}

impl DualGuard {
    /// Verifies the request's x402 payment or MPP credential for `route` (MPP first when both
    /// are present); `Err` is the response to return at once (the merged 402 when unpaid).
    pub async fn verify(self, route: &'static StaticDualRoute) -> Result<DualVerified, HttpResponse> {
        let (Some(server), Some(mpp)) = (self.server, self.mpp) else {
            return Err(missing_config(MISSING_DUAL_MESSAGE));
        };
        let ctx = request_context(&self.req);
        match Box::pin(route.process(&ctx, &server, &mpp)).await {
            Ok(payment) => {
                Ok(DualVerified { req: self.req, paid: payment.paid(), guard: crate::gate::router_guard(payment) })
            }
            Err(r) => Err(into_response_all(r)),
        }
    }
}

/// A verified payment inside a handler carrying both `#[x402]` and `#[pay]`. Dropped before
/// [`DualVerified::finish`] it is released; dropped while the handler runs it is completed per
/// the accepting protocol's cancel policy, or released if the handler panicked.
#[derive(Debug)]
pub struct DualVerified {
    req: HttpRequest,
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
    pub async fn finish<R: Responder>(self, body: impl Future<Output = R>) -> HttpResponse {
        let mut guard = self.guard;
        guard.start();
        finish_handler(&self.req, crate::metrics::handler(body).await, |status| guard.finish(status), into_response_all)
            .await
    }
}
