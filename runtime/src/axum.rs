//! axum integration (feature `axum`): the route-table layers ([`X402Layer`], [`MppLayer`],
//! [`PaymentRouterLayer`], all one [`GateLayer`]), the payment extractors for handlers behind
//! them (`X402Payment`, `Credential`, `Receipt`, the router's `Paid`), and the [`Guard`] the
//! attribute macros expand to (an [`UntiedGuard`] for a handler with generics of its own), with
//! the [`Deferred`] wrapper of the handler's own arguments and the [`RouterState`] bound they put
//! on the router state.
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

use crate::gate::{GuardGate, Guarded, NotProtected, PaymentGate, StaticGateRoute, from_extensions};
use crate::mpp::{Credential, EVENT_STREAM_CONTENT_TYPE, EventStream, Mpp, PaidStream, Receipt};
use crate::router::{Paid, PaymentRouter};
use crate::web::{
    HttpHead, MAX_RECORDED_BODY_BYTES, PaymentHttpResponse, PreparedResponse, RecordedResponse, RequestContext,
    ResponseSink,
};
use crate::x402::{X402HttpServer, X402Payment};
use ::axum::body::Body;
use ::axum::extract::{FromRef, FromRequest, FromRequestParts, Request};
use ::axum::response::{IntoResponse, Response};
use http::request::Parts;
use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::ops::Deref;
use std::pin::Pin;
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

/// Completes a payment once the handler answered: records the response first when the gate
/// asked for it (`sink`), then adds the payment's headers to `resp`, or replaces `resp` with the
/// failure response.
async fn complete<F>(resp: Response, sink: Option<ResponseSink>, finish: impl FnOnce(http::StatusCode) -> F) -> Response
where
    F: Future<Output = Result<http::HeaderMap, PaymentHttpResponse>>,
{
    let (mut resp, recorded) = match &sink {
        Some(_) if resp.status().as_u16() < 400 => buffer(resp).await,
        _ => (resp, None),
    };
    let finished = finish(resp.status()).await;
    // Offered once the payment's fate is known: the gate keeps it only when a retry may need it.
    if let (Some(sink), Some(recorded)) = (sink, recorded) {
        sink(recorded).await;
    }
    match finished {
        Ok(headers) => {
            resp.headers_mut().extend(headers);
            resp
        }
        Err(failure) => into_response(failure),
    }
}

/// Buffers `resp` when its body has a known size up to [`MAX_RECORDED_BODY_BYTES`]: the response
/// (sent as is) and its record; other responses pass untouched, unrecorded.
async fn buffer(resp: Response) -> (Response, Option<RecordedResponse>) {
    use ::axum::body::HttpBody as _;
    let fits = resp.body().size_hint().exact().is_some_and(|n| n <= MAX_RECORDED_BODY_BYTES as u64);
    if !fits {
        return (resp, None);
    }
    let (parts, body) = resp.into_parts();
    match ::axum::body::to_bytes(body, MAX_RECORDED_BODY_BYTES).await {
        Ok(bytes) => {
            let content_type = parts.headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
            let recorded = RecordedResponse::new(parts.status, content_type, &bytes);
            (Response::from_parts(parts, Body::from(bytes)), Some(recorded))
        }
        Err(e) => {
            tracing::warn!(error = %e, "pay402: the handler's response body failed");
            let failed =
                PaymentHttpResponse::json_error(http::StatusCode::INTERNAL_SERVER_ERROR, "the response body failed");
            (into_response(failed), None)
        }
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
            let sink = gate.response_sink(&payment);
            // Completes the payment per the cancel policy if this future is dropped while the
            // handler runs (client disconnect, timeout layer), and releases it on a panic (F5).
            let mut guard = crate::gate::payment_guard(gate, ctx, payment);
            guard.start();
            let resp = crate::metrics::handler(inner.call(req)).await?;
            Ok(complete(resp, sink, |status| guard.finish(status)).await)
        })
    }
}

/// Tower layer protecting the routes of an [`X402HttpServer`]'s route table.
pub type X402Layer = GateLayer<X402HttpServer>;

/// The service made by [`X402Layer`].
pub type X402Service<S> = GateService<S, X402HttpServer>;

/// Tower layer protecting the routes of an [`Mpp`] route table (`Mpp::route`).
pub type MppLayer = GateLayer<Mpp>;

/// The service made by [`MppLayer`].
pub type MppService<S> = GateService<S, Mpp>;

/// Tower layer protecting the routes of a [`PaymentRouter`] (x402 and MPP on one URL).
pub type PaymentRouterLayer = GateLayer<PaymentRouter>;

/// The service made by [`PaymentRouterLayer`].
pub type PaymentRouterService<S> = GateService<S, PaymentRouter>;

impl IntoResponse for NotProtected {
    fn into_response(self) -> Response {
        (http::StatusCode::INTERNAL_SERVER_ERROR, self.to_string()).into_response()
    }
}

/// The handlers' payment extractors: each reads what the gate put in the request extensions.
macro_rules! extension_extractors {
    ($($t:ty),* $(,)?) => {$(
        impl<S: Send + Sync> FromRequestParts<S> for $t {
            type Rejection = NotProtected;
            async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, NotProtected> {
                from_extensions(parts.extensions.get::<$t>())
            }
        }
    )*};
}

extension_extractors!(X402Payment, Credential, Receipt, Paid, PaidStream);

/// A metered (or unmetered) event stream, served as `text/event-stream`, `Cache-Control:
/// no-cache`, unbuffered by proxies (`X-Accel-Buffering: no`).
impl IntoResponse for EventStream {
    fn into_response(self) -> Response {
        use futures::StreamExt as _;
        let body = Body::from_stream(self.into_frames().map(Ok::<_, Infallible>));
        let mut resp = Response::new(body);
        let h = resp.headers_mut();
        h.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static(EVENT_STREAM_CONTENT_TYPE));
        h.insert(http::header::CACHE_CONTROL, http::HeaderValue::from_static("no-cache"));
        h.insert("x-accel-buffering", http::HeaderValue::from_static("no"));
        resp
    }
}

/// The `upto` charge of the verified x402 payment ([`X402Payment::upto_charge`]).
impl<S: Send + Sync> FromRequestParts<S> for crate::x402::UptoCharge {
    type Rejection = NotProtected;
    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, NotProtected> {
        from_extensions(parts.extensions.get::<X402Payment>()).map(|p| p.upto_charge())
    }
}

/// How a [`Guard`] finds its gate's state in the router state `S`.
pub trait FromState<S>: Sized {
    /// Takes it from `state`.
    fn from_state(state: &S) -> Self;
}

impl<S> FromState<S> for X402HttpServer
where
    X402HttpServer: FromRef<S>,
{
    fn from_state(state: &S) -> Self {
        X402HttpServer::from_ref(state)
    }
}

impl<S> FromState<S> for Mpp
where
    Mpp: FromRef<S>,
{
    fn from_state(state: &S) -> Self {
        Mpp::from_ref(state)
    }
}

impl<S> FromState<S> for (X402HttpServer, Mpp)
where
    X402HttpServer: FromRef<S>,
    Mpp: FromRef<S>,
{
    fn from_state(state: &S) -> Self {
        (X402HttpServer::from_ref(state), Mpp::from_ref(state))
    }
}

/// What a paid handler requires of the router state `S`: `Self` (the `X402HttpServer` of
/// `#[x402]`, the `Mpp` of `#[pay]`; both for the two stacked) must implement `FromRef<S>`.
///
/// The attribute macros make the handler generic over the router state and put this bound on it
/// (`X402HttpServer: RouterState<S, _>`), so that a router whose state does not provide the
/// server is reported on the handler's registration (`get(handler)`), in these words, instead of
/// as a mismatch of axum's router types. It holds exactly when `Self: FromRef<S>`; `M` is only a
/// marker inferred by the compiler: with two candidate impls, a state lacking the `FromRef` fails
/// both and is reported on this trait, with its message (and the guard's own `FromRef` bound,
/// implied by this trait's, is not reported again). Not to be implemented or named by
/// applications.
#[diagnostic::on_unimplemented(
    message = "the router state `{S}` does not provide the `{Self}` this paid handler needs",
    label = "the router state must provide `{Self}`: `FromRef<{S}>` is not implemented for `{Self}`",
    note = "implement `FromRef<{S}>` for `{Self}` (or `#[derive(FromRef)]` on a state struct with a field of \
            type `{Self}`), or pass the `{Self}` itself as the state: `.with_state(..)`",
    note = "a router that never gets `.with_state(..)` has the state `()`"
)]
pub trait RouterState<S, M>: FromRef<S> {}

/// The marker of [`RouterState`]'s impl that applies (`Self: FromRef<S>`).
#[derive(Debug)]
pub enum ViaFromRef {}

/// The marker of [`RouterState`]'s impl that never applies (no state is `Unreachable`).
#[derive(Debug)]
pub enum Unreachable {}

mod sealed {
    /// No type implements it: the second impl of `RouterState` exists only so that a state
    /// lacking the `FromRef` fails both candidates and the failure is reported on the trait.
    pub trait NoState {}
}

#[diagnostic::do_not_recommend]
impl<S, T: FromRef<S>> RouterState<S, ViaFromRef> for T {}

#[diagnostic::do_not_recommend]
impl<S: sealed::NoState, T: FromRef<S>> RouterState<S, Unreachable> for T {}

/// A router state that cannot exist. `X402HttpServer` and `Mpp` implement `FromRef` of it (beside
/// axum's `FromRef<T> for T`), so that a paid handler's router state is not inferred to be the
/// server itself: it is then the state of the router the handler is registered on, and a state
/// lacking the server is reported by [`RouterState`] on that registration.
#[doc(hidden)]
#[derive(Clone, Copy, Debug)]
pub enum NoRouterState {}

impl FromRef<NoRouterState> for X402HttpServer {
    fn from_ref(state: &NoRouterState) -> Self {
        match *state {}
    }
}

impl FromRef<NoRouterState> for Mpp {
    fn from_ref(state: &NoRouterState) -> Self {
        match *state {}
    }
}

/// What an attribute macro puts first in a handler's arguments: the request head and the gate's
/// state from the router state `S` (`X402HttpServer: FromRef<S>` for `#[x402]`, `Mpp: FromRef<S>`
/// for `#[pay]`, both for the two stacked). Made only by the macros' expansions; the request
/// context is built only once the unpaid fast path has passed. `S` only ties the handler's
/// [`RouterState`] bound to the router it is registered on (a zero-sized marker).
pub struct Guard<G: GuardGate, S> {
    request: GuardRequest<G>,
    state_type: PhantomData<fn(&S)>,
}

impl<G: GuardGate, S> fmt::Debug for Guard<G, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Guard").field("method", &self.request.method).field("uri", &self.request.uri).finish()
    }
}

/// A [`Guard`]'s request head and gate state.
struct GuardRequest<G: GuardGate> {
    state: G::State,
    method: http::Method,
    uri: http::Uri,
    headers: http::HeaderMap,
}

impl<S, G> FromRequestParts<S> for Guard<G, S>
where
    G: GuardGate,
    G::State: FromState<S>,
    S: Send + Sync,
{
    type Rejection = Infallible;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Ok(Self { request: GuardRequest::new(parts, state), state_type: PhantomData })
    }
}

/// The guard of a handler that has generic parameters of its own: `#[x402]` / `#[pay]` leave its
/// generics as written (so `get(handler::<T>)` keeps working), and so do not tie it to the router
/// state: a router state lacking the server is then reported by axum, as a `Handler` bound not
/// satisfied on `get(handler::<T>)`. Otherwise as [`Guard`].
pub struct UntiedGuard<G: GuardGate> {
    request: GuardRequest<G>,
}

impl<G: GuardGate> fmt::Debug for UntiedGuard<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UntiedGuard").field("method", &self.request.method).field("uri", &self.request.uri).finish()
    }
}

impl<S, G> FromRequestParts<S> for UntiedGuard<G>
where
    G: GuardGate,
    G::State: FromState<S>,
    S: Send + Sync,
{
    type Rejection = Infallible;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Ok(Self { request: GuardRequest::new(parts, state) })
    }
}

/// [`Guard`]'s and [`UntiedGuard`]'s methods.
macro_rules! guard_methods {
    () => {
        /// The handler's first step, before it looks at its other arguments ([`Deferred`]): a
        /// request carrying no payment ([`GuardGate::carries_payment`]) is verified at once, so
        /// it gets the route's 402 even when another extractor rejected it; a paying request
        /// waits in the [`Screened`] guard until every other argument was extracted, so a
        /// rejected request is never verified and moves no money. `Err` is the response to
        /// return at once.
        pub async fn screen<R: StaticGateRoute<Gate = G>>(self, route: &'static R) -> Result<Screened<G>, Response> {
            let request = self.request;
            let head = HttpHead { method: &request.method, uri: &request.uri, headers: &request.headers };
            if G::carries_payment(&head) {
                return Ok(Screened(Screening::Paying(request)));
            }
            request.verify(route).await.map(|verified| Screened(Screening::Verified(verified)))
        }

        /// Verifies the request's payment for `route`; `Err` is the response to return at once
        /// (the route's precomputed 402 when the request carries no payment and the gate has one).
        pub async fn verify<R: StaticGateRoute<Gate = G>>(self, route: &'static R) -> Result<Verified<G>, Response> {
            self.request.verify(route).await
        }
    };
}

impl<G: GuardGate, S> Guard<G, S> {
    guard_methods!();
}

impl<G: GuardGate> UntiedGuard<G> {
    guard_methods!();
}

impl<G: GuardGate> GuardRequest<G> {
    /// The request head, and the gate's state taken from the router state.
    fn new<S>(parts: &Parts, state: &S) -> Self
    where
        G::State: FromState<S>,
    {
        Self {
            state: G::State::from_state(state),
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            headers: parts.headers.clone(),
        }
    }

    /// [`Guard::verify`].
    async fn verify<R: StaticGateRoute<Gate = G>>(self, route: &'static R) -> Result<Verified<G>, Response> {
        let route = route.route(&self.state).map_err(into_response)?;
        let gate = G::from_state(self.state);
        let head = HttpHead { method: &self.method, uri: &self.uri, headers: &self.headers };
        if let Some(prepared) = gate.precomputed_unpaid(&route, &head) {
            return Err(prepared_response(&prepared));
        }
        let ctx = RequestContext::from_owned_parts(self.method, &self.uri, self.headers);
        Guarded::admit(gate, ctx, &route).await.map(Verified).map_err(into_response)
    }
}

/// A [`Guard`] past [`Guard::screen`]: the request carries a payment, not verified yet (or, for
/// a gate that admits a request without one, already verified).
pub struct Screened<G: GuardGate>(Screening<G>);

/// Where a [`Screened`] guard stands.
enum Screening<G: GuardGate> {
    /// Carries a payment: verified by [`Screened::verify`].
    Paying(GuardRequest<G>),
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

impl<G: GuardGate> Screened<G> {
    /// Verifies the payment for `route` (once every other argument was extracted), as
    /// [`Guard::verify`].
    pub async fn verify<R: StaticGateRoute<Gate = G>>(self, route: &'static R) -> Result<Verified<G>, Response> {
        match self.0 {
            Screening::Paying(request) => request.verify(route).await,
            Screening::Verified(verified) => Ok(verified),
        }
    }
}

/// One of a guarded handler's own arguments, as the attribute macros take it: extracted like
/// `T`, but never rejected, so that the handler decides which answer comes first (an unpaid
/// request's 402 before `T`'s rejection; `T`'s rejection before a payment is verified).
/// [`extracted`] gives back `T`, or its rejection as a response.
///
/// Extracts from the request parts when `T` does (any position), and from the whole request
/// when `T` does (the last argument).
#[derive(Debug)]
pub struct Deferred<T>(Result<T, Response>);

impl<S, T> FromRequestParts<S> for Deferred<T>
where
    T: FromRequestParts<S>,
    S: Send + Sync,
{
    type Rejection = Infallible;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Infallible> {
        Ok(Self(T::from_request_parts(parts, state).await.map_err(IntoResponse::into_response)))
    }
}

// `FromRequest<S>` (axum's default marker, "via the request"), so it does not overlap the
// blanket `FromRequest<S, ViaParts>` that the `FromRequestParts` impl above brings.
impl<S, T> FromRequest<S> for Deferred<T>
where
    T: FromRequest<S>,
    S: Send + Sync,
{
    type Rejection = Infallible;
    async fn from_request(req: Request, state: &S) -> Result<Self, Infallible> {
        Ok(Self(T::from_request(req, state).await.map_err(IntoResponse::into_response)))
    }
}

/// A [`Deferred`] argument's value, or the response of its extractor's rejection.
pub fn extracted<T>(arg: Deferred<T>) -> Result<T, Response> {
    arg.0
}

/// A payment verified by [`Guard`], inside the handler: the getters of [`Guarded`] (through
/// `Deref`), and `finish`.
#[derive(Debug)]
pub struct Verified<G: GuardGate>(Guarded<G>);

impl<G: GuardGate> Deref for Verified<G> {
    type Target = Guarded<G>;
    fn deref(&self) -> &Guarded<G> {
        &self.0
    }
}

impl<G: GuardGate> Verified<G> {
    /// Runs the handler body, then completes the payment with the handler's status (settles or
    /// commits below 400, adding `PAYMENT-RESPONSE` or `Payment-Receipt`; releases otherwise).
    pub async fn finish<R: IntoResponse>(self, body: impl Future<Output = R>) -> Response {
        let Guarded { mut guard, sink, .. } = self.0;
        guard.start();
        let resp = crate::metrics::handler(body).await.into_response();
        complete(resp, sink, |status| guard.finish(status)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `S` costs nothing: a tied guard is exactly the untied one's size, for any state.
    #[test]
    fn the_router_state_is_a_zero_sized_marker() {
        #[allow(dead_code)]
        #[derive(Clone)]
        struct Big([u8; 4096]);
        let untied = size_of::<UntiedGuard<X402HttpServer>>();
        assert_eq!(size_of::<Guard<X402HttpServer, Big>>(), untied);
        assert_eq!(size_of::<Guard<X402HttpServer, X402HttpServer>>(), untied);
        assert_eq!(size_of::<PhantomData<fn(&Big)>>(), 0);
    }

    /// `RouterState` holds through `FromRef` alone, with the marker the compiler infers.
    #[test]
    fn router_state_holds_for_a_state_providing_the_server() {
        #[derive(Clone)]
        struct AppState;
        impl FromRef<AppState> for Mpp {
            fn from_ref(_: &AppState) -> Self {
                unreachable!("only the bound is checked")
            }
        }
        fn provided<T: RouterState<S, M>, S, M>(_: PhantomData<(T, S)>) -> &'static str {
            std::any::type_name::<M>()
        }
        assert!(provided(PhantomData::<(X402HttpServer, X402HttpServer)>).ends_with("ViaFromRef"));
        assert!(provided(PhantomData::<(Mpp, AppState)>).ends_with("ViaFromRef"));
    }
}
