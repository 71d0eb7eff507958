//! actix-web integration (feature `actix`): the route-table middlewares ([`X402Middleware`],
//! [`MppMiddleware`], [`PaymentRouterMiddleware`], all one [`GateMiddleware`]), the payment
//! extractors for handlers behind them (`X402Payment`, `Credential`, `Receipt`, the router's
//! `Paid`), and the one [`Guard`] the attribute macros expand to, with the [`Deferred`] wrapper
//! of the handler's own arguments. Configuration reaches guarded handlers through
//! `web::Data<X402HttpServer>` / `web::Data<Mpp>`.
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

use crate::gate::{ExtensionSink, GuardGate, Guarded, NotProtected, PaymentGate, StaticGateRoute, from_extensions};
use crate::mpp::{Credential, EVENT_STREAM_CONTENT_TYPE, EventStream, Mpp, PaidStream, Receipt};
use crate::router::{Paid, PaymentRouter};
use crate::web::{
    MAX_RECORDED_BODY_BYTES, PaymentHttpResponse, PreparedResponse, RecordedResponse, RequestContext, RequestHead,
    ResponseSink, push_url,
};
use crate::x402::{X402HttpServer, X402Payment};
use ::actix_web::body::{EitherBody, MessageBody};
use ::actix_web::dev::{Payload, Service, ServiceRequest, ServiceResponse, Transform, forward_ready};
use ::actix_web::http::StatusCode;
use ::actix_web::http::header::{HeaderName, HeaderValue};
use ::actix_web::{FromRequest, HttpMessage, HttpRequest, HttpResponse, Responder, ResponseError, web};
use futures::future::{LocalBoxFuture, Ready, ready};
use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::ops::Deref;
use std::rc::Rc;

/// The response type `#[x402]` handlers return on actix-web.
pub type Response = HttpResponse;

/// Converts a pay402 response into an actix-web response (every header line kept: the router's
/// merged 402 carries several `WWW-Authenticate` challenges).
pub fn into_response(r: PaymentHttpResponse) -> HttpResponse {
    let mut resp = HttpResponse::with_body(actix_status(r.status), r.body).map_into_boxed_body();
    copy_headers(&r.headers, resp.headers_mut());
    resp
}

/// An `http` 1 status as actix-web's (`http` 0.2).
fn actix_status(status: http::StatusCode) -> StatusCode {
    StatusCode::from_u16(status.as_u16()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// Adds `from`'s headers to `to` as `http::HeaderMap::extend` does (axum's completion): each
/// name's lines replace `to`'s lines of that name, and every line of `from` is kept.
fn copy_headers(from: &http::HeaderMap, to: &mut ::actix_web::http::header::HeaderMap) {
    for name in from.keys() {
        let Ok(n) = HeaderName::from_bytes(name.as_str().as_bytes()) else { continue };
        to.remove(&n);
        for value in from.get_all(name) {
            if let Ok(v) = HeaderValue::from_bytes(value.as_bytes()) {
                to.append(n.clone(), v);
            }
        }
    }
}

/// `http` 1 headers as actix-web's (`http` 0.2) name/value pairs, every line kept.
fn convert_headers(from: &http::HeaderMap) -> Vec<(HeaderName, HeaderValue)> {
    from.iter()
        .filter_map(|(name, value)| {
            Some((
                HeaderName::from_bytes(name.as_str().as_bytes()).ok()?,
                HeaderValue::from_bytes(value.as_bytes()).ok()?,
            ))
        })
        .collect()
}

/// Answers a prepared response (its headers converted to actix-web's types once, on first use).
fn prepared_response(p: &PreparedResponse) -> HttpResponse {
    let mut resp = HttpResponse::with_body(actix_status(p.status), p.body.clone()).map_into_boxed_body();
    let headers = resp.headers_mut();
    match p.converted_headers(convert_headers) {
        Some(lines) => {
            for (name, value) in lines {
                headers.append(name.clone(), value.clone());
            }
        }
        None => copy_headers(&p.headers, headers),
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

impl ResponseError for NotProtected {
    fn status_code(&self) -> StatusCode {
        StatusCode::INTERNAL_SERVER_ERROR
    }
}

/// The handlers' payment extractors: each reads what the gate put in the request extensions.
macro_rules! extension_extractors {
    ($($t:ty),* $(,)?) => {$(
        impl FromRequest for $t {
            type Error = NotProtected;
            type Future = Ready<Result<Self, NotProtected>>;
            fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
                ready(from_extensions(req.extensions().get::<$t>()))
            }
        }
    )*};
}

extension_extractors!(X402Payment, Credential, Receipt, Paid, PaidStream);

/// A metered (or unmetered) event stream, served as `text/event-stream`, `Cache-Control:
/// no-cache`, unbuffered by proxies (`X-Accel-Buffering: no`).
impl Responder for EventStream {
    type Body = ::actix_web::body::BoxBody;
    fn respond_to(self, _: &HttpRequest) -> HttpResponse {
        use futures::StreamExt as _;
        HttpResponse::Ok()
            .content_type(EVENT_STREAM_CONTENT_TYPE)
            .insert_header(("cache-control", "no-cache"))
            .insert_header(("x-accel-buffering", "no"))
            .streaming(self.into_frames().map(Ok::<_, Infallible>))
    }
}

/// The `upto` charge of the verified x402 payment ([`X402Payment::upto_charge`]).
impl FromRequest for crate::x402::UptoCharge {
    type Error = NotProtected;
    type Future = Ready<Result<Self, NotProtected>>;
    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(from_extensions(req.extensions().get::<X402Payment>()).map(|p| p.upto_charge()))
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

/// Buffers `resp` when it is below 400 and its body has a known size up to
/// [`MAX_RECORDED_BODY_BYTES`]: `Ok` with the buffered response (sent as is) and its record;
/// `Err` gives the response back untouched.
async fn buffer<B: MessageBody>(
    resp: HttpResponse<B>,
) -> Result<(HttpResponse, Option<RecordedResponse>), HttpResponse<B>> {
    let fits =
        matches!(resp.body().size(), ::actix_web::body::BodySize::Sized(n) if n <= MAX_RECORDED_BODY_BYTES as u64);
    if !fits || resp.status().as_u16() >= 400 {
        return Err(resp);
    }
    let (head, body) = resp.into_parts();
    let Ok(bytes) = ::actix_web::body::to_bytes(body).await else {
        tracing::warn!("pay402: the handler's response body failed");
        return Ok((HttpResponse::InternalServerError().body("the response body failed"), None));
    };
    let content_type = head.headers().get(::actix_web::http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
    let status = http::StatusCode::from_u16(head.status().as_u16()).unwrap_or(http::StatusCode::OK);
    let recorded = RecordedResponse::new(status, content_type, &bytes);
    Ok((head.set_body(bytes).map_into_boxed_body(), Some(recorded)))
}

/// Offers a buffered response to the gate once the payment's fate is known.
async fn offer(sink: Option<ResponseSink>, recorded: Option<RecordedResponse>) {
    if let (Some(sink), Some(recorded)) = (sink, recorded) {
        sink(recorded).await;
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
                    let (http_req, _) = req.into_parts();
                    return Ok(ServiceResponse::new(http_req, into_response(r)).map_into_right_body());
                }
            };
            G::insert_extensions(&payment, &mut *req.extensions_mut());
            let sink = gate.response_sink(&payment);
            // Completes the payment per the cancel policy if this future is dropped while the
            // handler runs (client disconnect, timeout), and releases it on a panic (F5).
            let mut guard = crate::gate::payment_guard(gate, ctx, payment);
            guard.start();
            let res = crate::metrics::handler(service.call(req)).await?;
            let (mut res, recorded) = match &sink {
                Some(_) => {
                    let (http_req, resp) = res.into_parts();
                    match buffer(resp).await {
                        Ok((buffered, recorded)) => {
                            (ServiceResponse::new(http_req, buffered).map_into_right_body(), recorded)
                        }
                        Err(resp) => (ServiceResponse::new(http_req, resp).map_into_left_body(), None),
                    }
                }
                None => (res.map_into_left_body(), None),
            };
            let status = res.status();
            let finished = complete(status, res.headers_mut(), |status| guard.finish(status)).await;
            offer(sink, recorded).await;
            match finished {
                Ok(()) => Ok(res),
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

/// actix-web middleware protecting the routes of an [`Mpp`] route table.
pub type MppMiddleware = GateMiddleware<Mpp>;

/// The service made by [`MppMiddleware`].
pub type MppMiddlewareService<S> = GateMiddlewareService<S, Mpp>;

/// actix-web middleware protecting the routes of a [`PaymentRouter`] (x402 and MPP on one URL).
pub type PaymentRouterMiddleware = GateMiddleware<PaymentRouter>;

/// The service made by [`PaymentRouterMiddleware`].
pub type PaymentRouterMiddlewareService<S> = GateMiddlewareService<S, PaymentRouter>;

/// The message of the 500 sent when a `#[x402]` handler runs without configuration.
pub const MISSING_SERVER_MESSAGE: &str =
    "pay402: no X402HttpServer in the app data; add `.app_data(web::Data::new(x402_server))` to the App";

/// The message of the 500 sent when a `#[pay]` handler runs without configuration.
pub const MISSING_MPP_MESSAGE: &str = "pay402: no Mpp in the app data; add `.app_data(web::Data::new(mpp))` to the App";

/// The message of the 500 sent when a handler carrying both `#[x402]` and `#[pay]` runs without
/// its configuration.
pub const MISSING_ROUTER_MESSAGE: &str = "pay402: a handler with #[x402] and #[pay] needs both an X402HttpServer and \
                                          an Mpp in the app data; add `.app_data(web::Data::new(x402_server))` and \
                                          `.app_data(web::Data::new(mpp))` to the App";

/// How a [`Guard`] finds its gate's state in the app data (`web::Data<…>`).
pub trait FromAppData: Sized {
    /// The message of the 500 sent (and logged) when the app data lacks it.
    const MISSING: &'static str;
    /// Takes it from the request's app data.
    fn from_app_data(req: &HttpRequest) -> Option<Self>;
}

impl FromAppData for X402HttpServer {
    const MISSING: &'static str = MISSING_SERVER_MESSAGE;
    fn from_app_data(req: &HttpRequest) -> Option<Self> {
        app_data(req)
    }
}

impl FromAppData for Mpp {
    const MISSING: &'static str = MISSING_MPP_MESSAGE;
    fn from_app_data(req: &HttpRequest) -> Option<Self> {
        app_data(req)
    }
}

impl FromAppData for (X402HttpServer, Mpp) {
    const MISSING: &'static str = MISSING_ROUTER_MESSAGE;
    fn from_app_data(req: &HttpRequest) -> Option<Self> {
        Some((app_data(req)?, app_data(req)?))
    }
}

/// What an attribute macro puts first in a handler's arguments: the request and the gate's state
/// from the app data (`web::Data<X402HttpServer>` for `#[x402]`, `web::Data<Mpp>` for `#[pay]`,
/// both for the two stacked). Made only by the macros' expansions; the request context is built
/// only once the unpaid fast path has passed.
#[derive(Debug)]
pub struct Guard<G: GuardGate> {
    state: Option<G::State>,
    req: HttpRequest,
}

impl<G: GuardGate> FromRequest for Guard<G>
where
    G::State: FromAppData,
{
    type Error = Infallible;
    type Future = Ready<Result<Self, Infallible>>;
    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(Ok(Self { state: G::State::from_app_data(req), req: req.clone() }))
    }
}

impl<G: GuardGate> Guard<G>
where
    G::State: FromAppData,
{
    /// The handler's first step, before it looks at its other arguments ([`Deferred`]): a
    /// request carrying no payment ([`GuardGate::carries_payment`]) is verified at once, so it
    /// gets the route's 402 even when another extractor rejected it; a paying request waits in
    /// the [`Screened`] guard until every other argument was extracted, so a rejected request is
    /// never verified and moves no money. `Err` is the response to return at once.
    pub async fn screen<R: StaticGateRoute<Gate = G>>(self, route: &'static R) -> Result<Screened<G>, HttpResponse> {
        if G::carries_payment(&ActixHead(&self.req)) {
            return Ok(Screened(Screening::Paying(self)));
        }
        self.verify(route).await.map(|verified| Screened(Screening::Verified(verified)))
    }

    /// Verifies the request's payment for `route`; `Err` is the response to return at once (the
    /// route's precomputed 402 when the request carries no payment and the gate has one).
    pub async fn verify<R: StaticGateRoute<Gate = G>>(self, route: &'static R) -> Result<Verified<G>, HttpResponse> {
        let state = self.state.ok_or_else(|| missing_config(G::State::MISSING))?;
        let route = route.route(&state).map_err(into_response)?;
        let gate = G::from_state(state);
        if let Some(prepared) = gate.precomputed_unpaid(&route, &ActixHead(&self.req)) {
            return Err(prepared_response(&prepared));
        }
        let ctx = request_context(&self.req);
        let paid = Guarded::admit(gate, ctx, &route).await.map_err(into_response)?;
        Ok(Verified { paid, req: self.req })
    }
}

/// A [`Guard`] past [`Guard::screen`]: the request carries a payment, not verified yet (or, for
/// a gate that admits a request without one, already verified).
pub struct Screened<G: GuardGate>(Screening<G>);

/// Where a [`Screened`] guard stands.
enum Screening<G: GuardGate> {
    /// Carries a payment: verified by [`Screened::verify`].
    Paying(Guard<G>),
    /// Verified by the screen itself.
    Verified(Verified<G>),
}

impl<G: GuardGate> fmt::Debug for Screened<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let stage = match self.0 {
            Screening::Paying(_) => "paying",
            Screening::Verified(_) => "verified",
        };
        f.debug_tuple("Screened").field(&stage).finish()
    }
}

impl<G: GuardGate> Screened<G>
where
    G::State: FromAppData,
{
    /// Verifies the payment for `route` (once every other argument was extracted), as
    /// [`Guard::verify`].
    pub async fn verify<R: StaticGateRoute<Gate = G>>(self, route: &'static R) -> Result<Verified<G>, HttpResponse> {
        match self.0 {
            Screening::Paying(guard) => guard.verify(route).await,
            Screening::Verified(verified) => Ok(verified),
        }
    }
}

/// One of a guarded handler's own arguments, as the attribute macros take it: extracted like
/// `T`, but never rejected, so that the handler decides which answer comes first (an unpaid
/// request's 402 before `T`'s rejection; `T`'s rejection before a payment is verified).
/// [`extracted`] gives back `T`, or its rejection as a response.
#[derive(Debug)]
pub struct Deferred<T>(Result<T, HttpResponse>);

/// What a [`Deferred`] becomes once `T`'s extraction finished.
type Defer<T> = fn(Result<T, <T as FromRequest>::Error>) -> Result<Deferred<T>, Infallible>;

impl<T: FromRequest> FromRequest for Deferred<T> {
    type Error = Infallible;
    type Future = futures::future::Map<T::Future, Defer<T>>;
    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let defer: Defer<T> = |result| Ok(Deferred(result.map_err(|e| HttpResponse::from_error(e.into()))));
        futures::FutureExt::map(T::from_request(req, payload), defer)
    }
}

/// What an argument of a `#[x402]` / `#[pay]` handler must be on actix-web: an extractor. The
/// attribute macros check each argument against it, so that a type that is not one is reported
/// on that argument.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an actix-web extractor, so it cannot be an argument of a paid handler",
    label = "not an extractor: `{Self}` does not implement `actix_web::FromRequest`",
    note = "the arguments of a #[x402] / #[pay] handler are extractors (`web::Json<T>`, `web::Path<T>`, `HttpRequest`, …) or the payment (`X402Payment`, `Credential`, `Receipt`, `Paid`)"
)]
pub trait Extractor: FromRequest {}

impl<T: FromRequest> Extractor for T {}

/// A [`Deferred`] argument's value, or the response of its extractor's rejection.
pub fn extracted<T: Extractor>(arg: Deferred<T>) -> Result<T, HttpResponse> {
    arg.0
}

/// A payment verified by [`Guard`], inside the handler: the getters of [`Guarded`] (through
/// `Deref`), and `finish` (which answers through the kept request).
#[derive(Debug)]
pub struct Verified<G: GuardGate> {
    paid: Guarded<G>,
    req: HttpRequest,
}

impl<G: GuardGate> Deref for Verified<G> {
    type Target = Guarded<G>;
    fn deref(&self) -> &Guarded<G> {
        &self.paid
    }
}

impl<G: GuardGate> Verified<G> {
    /// Runs the handler body, then completes the payment with the handler's status (settles or
    /// commits below 400, adding `PAYMENT-RESPONSE` or `Payment-Receipt`; releases otherwise).
    pub async fn finish<R: Responder>(self, body: impl Future<Output = R>) -> HttpResponse {
        let Guarded { mut guard, sink, .. } = self.paid;
        guard.start();
        let answer = crate::metrics::handler(body).await;
        let resp = answer.respond_to(&self.req).map_into_boxed_body();
        let (mut resp, recorded) = match &sink {
            Some(_) => buffer(resp).await.unwrap_or_else(|untouched| (untouched, None)),
            None => (resp, None),
        };
        let status = resp.status();
        let finished = complete(status, resp.headers_mut(), |status| guard.finish(status)).await;
        offer(sink, recorded).await;
        match finished {
            Ok(()) => resp,
            Err(failure) => into_response(failure),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_header_line_reaches_the_actix_response() {
        let r = PaymentHttpResponse::new(http::StatusCode::PAYMENT_REQUIRED, "application/json", "{}")
            .append_header("www-authenticate", "Payment a")
            .append_header("www-authenticate", "Payment b");
        let prepared = PreparedResponse::new(r.clone());
        for resp in [into_response(r), prepared_response(&prepared), prepared_response(&prepared)] {
            assert_eq!(resp.status(), StatusCode::PAYMENT_REQUIRED);
            assert_eq!(resp.headers().get_all("www-authenticate").count(), 2);
        }
    }

    #[test]
    fn completion_headers_replace_the_handlers_lines_of_their_name() {
        let mut to = ::actix_web::http::header::HeaderMap::new();
        to.append(HeaderName::from_static("payment-receipt"), HeaderValue::from_static("handler's"));
        to.append(HeaderName::from_static("x-kept"), HeaderValue::from_static("kept"));
        let mut from = http::HeaderMap::new();
        from.insert("payment-receipt", http::HeaderValue::from_static("pay402's"));
        copy_headers(&from, &mut to);
        let receipts: Vec<_> = to.get_all("payment-receipt").map(|v| v.to_str().unwrap_or("")).collect();
        assert_eq!(receipts, ["pay402's"]);
        assert!(to.contains_key("x-kept"));
    }
}
