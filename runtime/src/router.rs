//! One route, both protocols: the [`PaymentRouter`] (the seed's `PaymentGate`).
//!
//! * **No credential** → ONE 402 carrying every configured protocol's challenge: x402's
//!   `PAYMENT-REQUIRED` and MPP's `WWW-Authenticate` (each value on its own header line), a
//!   single `Content-Type`, `Cache-Control: no-store`. The body is MPP's
//!   `application/problem+json` challenge document: x402 clients read only the
//!   `PAYMENT-REQUIRED` header (x402's own body is `{}`), while MPP clients can use the problem's
//!   `challengeId`. Browsers get the x402 paywall page (with the MPP challenge header too).
//! * **A credential** → the adapter that detects it, lowest priority number first (MPP 10,
//!   x402 20): a request carrying both is handled by MPP only. That protocol's full semantics
//!   and error format apply, and exactly one protocol settles.
//!
//! Custom protocols plug in through [`PaymentAdapter`].

use crate::completion::CancelPolicy;
use crate::mpp::carries_credential;
use crate::mpp::{Credential, Mpp, PaySpec, Receipt, StaticPaySpec};
use crate::web::{PaymentHttpResponse, RequestContext};
use crate::web::{RouteKeyError, RoutePattern, find_route};
use crate::x402::carries_payment as carries_x402_payment;
use crate::x402::{RouteConfig, StaticRoute, X402HttpServer, X402Payment};
use async_trait::async_trait;
use http::{HeaderMap, StatusCode};
use std::any::Any;
use std::fmt;
use std::sync::{Arc, OnceLock};

/// How a request was paid; handlers behind the router can take it to know which protocol paid.
#[derive(Clone, Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Paid {
    /// Paid with x402 (settled after the handler).
    X402(X402Payment),
    /// Paid with MPP.
    Mpp {
        /// The credential.
        credential: Credential,
        /// The receipt (also sent as `Payment-Receipt`).
        receipt: Receipt,
    },
    /// Paid through a custom adapter.
    Other {
        /// The adapter's name.
        adapter: String,
    },
}

/// A verified payment that still has to be completed after the handler.
#[async_trait]
pub trait AdapterPayment: Send + Sync {
    /// What the handler sees.
    fn paid(&self) -> Paid;
    /// Completes the payment after the handler answered `status`: the headers to add, or the
    /// response that replaces the handler's (settlement failed).
    async fn finish(
        self: Box<Self>,
        ctx: &RequestContext,
        status: StatusCode,
    ) -> Result<HeaderMap, PaymentHttpResponse>;
    /// What happens to the payment when its request is cancelled while the handler runs (see
    /// [`crate::completion`]). Default: [`CancelPolicy::Complete`].
    fn cancel_policy(&self) -> CancelPolicy {
        CancelPolicy::Complete
    }
}

/// A payment protocol the router can offer. `config` is the adapter's entry of the route's
/// [`RouteProtocols`] (an `Arc<RouteConfig>` for x402, an `Arc<PaySpec>` for MPP, or anything a
/// custom adapter defines).
#[async_trait]
pub trait PaymentAdapter: Send + Sync + 'static {
    /// Unique name (`"x402"`, `"mpp"`).
    fn name(&self) -> &str;
    /// Lower runs first.
    fn priority(&self) -> i32;
    /// True when the request carries this protocol's credential.
    fn detect(&self, ctx: &RequestContext) -> bool;
    /// This protocol's 402 for an unpaid request.
    async fn challenge(&self, ctx: &RequestContext, config: &(dyn Any + Send + Sync)) -> PaymentHttpResponse;
    /// Verifies the request's credential: the payment, or the protocol's own error response.
    async fn handle(
        &self,
        ctx: &RequestContext,
        config: &(dyn Any + Send + Sync),
    ) -> Result<Box<dyn AdapterPayment>, PaymentHttpResponse>;
}

fn misconfigured(adapter: &str) -> PaymentHttpResponse {
    tracing::error!(adapter, "payment router: route config has the wrong type for this adapter");
    PaymentHttpResponse::json_error(StatusCode::INTERNAL_SERVER_ERROR, "Failed to process request")
}

/// The x402 adapter (name `x402`, priority 20): detects a non-empty `PAYMENT-SIGNATURE` or
/// `X-PAYMENT`; settles after the handler and adds `PAYMENT-RESPONSE`.
#[derive(Clone, Debug)]
pub struct X402Adapter {
    server: X402HttpServer,
    priority: i32,
}

impl X402Adapter {
    /// An adapter over an x402 server (its route table is not used; routes come from the router).
    pub fn new(server: X402HttpServer) -> Self {
        Self { server, priority: 20 }
    }

    /// Overrides the priority.
    pub fn priority(mut self, priority: i32) -> Self {
        self.priority = priority;
        self
    }
}

struct X402Pending {
    server: X402HttpServer,
    payment: X402Payment,
}

#[async_trait]
impl AdapterPayment for X402Pending {
    fn paid(&self) -> Paid {
        Paid::X402(self.payment.clone())
    }
    async fn finish(
        self: Box<Self>,
        ctx: &RequestContext,
        status: StatusCode,
    ) -> Result<HeaderMap, PaymentHttpResponse> {
        self.server.finish(ctx, &self.payment, status).await
    }
    fn cancel_policy(&self) -> CancelPolicy {
        self.server.cancellation()
    }
}

#[async_trait]
impl PaymentAdapter for X402Adapter {
    fn name(&self) -> &str {
        "x402"
    }
    fn priority(&self) -> i32 {
        self.priority
    }
    fn detect(&self, ctx: &RequestContext) -> bool {
        carries_x402_payment(ctx)
    }
    async fn challenge(&self, ctx: &RequestContext, config: &(dyn Any + Send + Sync)) -> PaymentHttpResponse {
        let Some(route) = config.downcast_ref::<Arc<RouteConfig>>() else { return misconfigured("x402") };
        let mut unpaid = ctx.clone();
        unpaid.headers.remove("payment-signature");
        unpaid.headers.remove("x-payment");
        match self.server.process(&unpaid, route).await {
            Err(resp) => resp,
            Ok(_) => misconfigured("x402"),
        }
    }
    async fn handle(
        &self,
        ctx: &RequestContext,
        config: &(dyn Any + Send + Sync),
    ) -> Result<Box<dyn AdapterPayment>, PaymentHttpResponse> {
        let Some(route) = config.downcast_ref::<Arc<RouteConfig>>() else { return Err(misconfigured("x402")) };
        let payment = self.server.process(ctx, route).await?;
        Ok(Box::new(X402Pending { server: self.server.clone(), payment }))
    }
}

/// The MPP adapter (name `mpp`, priority 10): detects `Authorization: Payment …` (scheme
/// case-insensitive, also among comma-separated schemes); adds `Payment-Receipt`.
#[derive(Clone, Debug)]
pub struct MppAdapter {
    mpp: Mpp,
    priority: i32,
}

impl MppAdapter {
    /// An adapter over an MPP coordinator.
    pub fn new(mpp: Mpp) -> Self {
        Self { mpp, priority: 10 }
    }

    /// Overrides the priority.
    pub fn priority(mut self, priority: i32) -> Self {
        self.priority = priority;
        self
    }
}

struct MppPending(crate::mpp::Paid);

#[async_trait]
impl AdapterPayment for MppPending {
    fn paid(&self) -> Paid {
        Paid::Mpp { credential: self.0.credential.clone(), receipt: self.0.receipt.clone() }
    }
    async fn finish(
        self: Box<Self>,
        _ctx: &RequestContext,
        status: StatusCode,
    ) -> Result<HeaderMap, PaymentHttpResponse> {
        self.0.finish(status).await
    }
    fn cancel_policy(&self) -> CancelPolicy {
        self.0.cancel_policy()
    }
}

#[async_trait]
impl PaymentAdapter for MppAdapter {
    fn name(&self) -> &str {
        "mpp"
    }
    fn priority(&self) -> i32 {
        self.priority
    }
    fn detect(&self, ctx: &RequestContext) -> bool {
        ctx.header("authorization").is_some_and(carries_credential)
    }
    async fn challenge(&self, ctx: &RequestContext, config: &(dyn Any + Send + Sync)) -> PaymentHttpResponse {
        let Some(spec) = config.downcast_ref::<Arc<PaySpec>>() else { return misconfigured("mpp") };
        let mut unpaid = ctx.clone();
        unpaid.headers.remove("authorization");
        match self.mpp.process(&unpaid, spec).await {
            Err(resp) => resp,
            Ok(_) => misconfigured("mpp"),
        }
    }
    async fn handle(
        &self,
        ctx: &RequestContext,
        config: &(dyn Any + Send + Sync),
    ) -> Result<Box<dyn AdapterPayment>, PaymentHttpResponse> {
        let Some(spec) = config.downcast_ref::<Arc<PaySpec>>() else { return Err(misconfigured("mpp")) };
        let paid = self.mpp.process(ctx, spec).await?;
        Ok(Box::new(MppPending(paid)))
    }
}

/// A route's configuration per adapter name.
#[derive(Clone, Default)]
pub struct RouteProtocols {
    entries: Vec<(String, Arc<dyn Any + Send + Sync>)>,
}

impl fmt::Debug for RouteProtocols {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.entries.iter().map(|(n, _)| n)).finish()
    }
}

impl RouteProtocols {
    /// No protocols yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Offers x402 with this route configuration.
    pub fn x402(self, config: RouteConfig) -> Self {
        self.with("x402", Arc::new(config))
    }

    /// Offers MPP with this spec.
    pub fn mpp(self, spec: PaySpec) -> Self {
        self.with("mpp", Arc::new(spec))
    }

    /// Offers a custom adapter's protocol (`config` is what that adapter downcasts to).
    pub fn with<T: Any + Send + Sync>(mut self, adapter: &str, config: T) -> Self {
        self.entries.push((adapter.to_owned(), Arc::new(config)));
        self
    }

    fn get(&self, adapter: &str) -> Option<&(dyn Any + Send + Sync)> {
        self.entries.iter().find(|(n, _)| n == adapter).map(|(_, c)| c.as_ref())
    }
}

/// The dual-protocol router. Cheap to clone.
#[derive(Clone)]
pub struct PaymentRouter {
    adapters: Arc<Vec<Arc<dyn PaymentAdapter>>>,
    routes: Arc<Vec<(RoutePattern, Arc<RouteProtocols>)>>,
}

impl fmt::Debug for PaymentRouter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PaymentRouter")
            .field("adapters", &self.adapters.iter().map(|a| (a.name().to_owned(), a.priority())).collect::<Vec<_>>())
            .field("routes", &self.routes.iter().map(|(p, _)| p.key()).collect::<Vec<_>>())
            .finish()
    }
}

/// A payment accepted by the router, to complete after the handler.
pub struct RouterPayment {
    inner: Box<dyn AdapterPayment>,
    ctx: RequestContext,
}

impl fmt::Debug for RouterPayment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RouterPayment").field("paid", &self.inner.paid()).finish()
    }
}

impl RouterPayment {
    /// What the handler sees.
    pub fn paid(&self) -> Paid {
        self.inner.paid()
    }

    /// Completes the payment after the handler answered `status` (see [`AdapterPayment::finish`]).
    pub async fn finish(self, status: StatusCode) -> Result<HeaderMap, PaymentHttpResponse> {
        self.inner.finish(&self.ctx, status).await
    }

    /// What happens to the payment when its request is cancelled while the handler runs: the
    /// policy of the protocol that accepted it ([`AdapterPayment::cancel_policy`]).
    pub fn cancel_policy(&self) -> CancelPolicy {
        self.inner.cancel_policy()
    }
}

impl Default for PaymentRouter {
    fn default() -> Self {
        Self::new()
    }
}

impl PaymentRouter {
    /// A router with no adapters.
    pub fn new() -> Self {
        Self { adapters: Arc::new(Vec::new()), routes: Arc::new(Vec::new()) }
    }

    /// Adds an adapter (kept sorted by priority, stable for equal priorities).
    pub fn adapter(mut self, adapter: impl PaymentAdapter) -> Self {
        let list = Arc::make_mut(&mut self.adapters);
        list.push(Arc::new(adapter));
        list.sort_by_key(|a| a.priority());
        self
    }

    /// Protects the routes matching `key` with these protocols.
    pub fn route(mut self, key: &str, protocols: RouteProtocols) -> Result<Self, RouteKeyError> {
        let pattern = RoutePattern::parse(key)?;
        Arc::make_mut(&mut self.routes).push((pattern, Arc::new(protocols)));
        Ok(self)
    }

    /// The protocols protecting `method` + the raw request `path`, if any (matched like
    /// [`X402HttpServer::route_for`](crate::x402::X402HttpServer::route_for)).
    pub fn route_for(&self, method: &str, path: &str) -> Option<Arc<RouteProtocols>> {
        find_route(&self.routes, method, path).map(Arc::clone)
    }

    /// Decides a request to a protected route: the accepted payment, or the response to send.
    pub async fn process(
        &self,
        ctx: &RequestContext,
        route: &RouteProtocols,
    ) -> Result<RouterPayment, PaymentHttpResponse> {
        for adapter in self.adapters.iter() {
            let Some(config) = route.get(adapter.name()) else { continue };
            if adapter.detect(ctx) {
                let inner = adapter.handle(ctx, config).await?;
                return Ok(RouterPayment { inner, ctx: ctx.clone() });
            }
        }
        Err(self.challenge(ctx, route).await)
    }

    /// The merged 402 of every protocol the route offers.
    pub async fn challenge(&self, ctx: &RequestContext, route: &RouteProtocols) -> PaymentHttpResponse {
        let offered: Vec<_> =
            self.adapters.iter().filter_map(|a| route.get(a.name()).map(|c| (Arc::clone(a), c))).collect();
        let answers = futures::future::join_all(offered.iter().map(|(a, c)| a.challenge(ctx, *c))).await;
        if let Some(failed) = answers.iter().find(|r| r.status != StatusCode::PAYMENT_REQUIRED) {
            return failed.clone();
        }
        // The body: MPP's problem document if offered, else the first answer's; a browser gets
        // the first HTML page.
        let html = answers.iter().find(|r| {
            r.headers
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|c| c.starts_with("text/html"))
        });
        let problem = answers.iter().find(|r| {
            r.headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) == Some("application/problem+json")
        });
        let Some(base) = html.or(problem).or_else(|| answers.first()) else {
            return PaymentHttpResponse::json_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "no payment protocol configured",
            );
        };
        let mut merged = base.clone();
        let mut exposed: Vec<String> = Vec::new();
        for answer in &answers {
            for (name, value) in &answer.headers {
                if name == http::header::CONTENT_TYPE || name == http::header::CACHE_CONTROL {
                    continue;
                }
                if name == http::header::ACCESS_CONTROL_EXPOSE_HEADERS {
                    for h in value.to_str().unwrap_or("").split(',').map(str::trim).filter(|h| !h.is_empty()) {
                        if !exposed.iter().any(|e| e.eq_ignore_ascii_case(h)) {
                            exposed.push(h.to_owned());
                        }
                    }
                    continue;
                }
                if std::ptr::eq(answer, base) {
                    continue;
                }
                merged.headers.append(name.clone(), value.clone());
            }
        }
        merged.headers.remove(http::header::ACCESS_CONTROL_EXPOSE_HEADERS);
        if !exposed.is_empty()
            && let Ok(v) = http::HeaderValue::from_str(&exposed.join(", "))
        {
            merged.headers.insert(http::header::ACCESS_CONTROL_EXPOSE_HEADERS, v);
        }
        merged
    }
}

/// The route of a handler carrying both `#[x402(...)]` and `#[pay(...)]` (what the stacked
/// attributes expand to): the two protocols' statics, and the [`RouteProtocols`] built from them
/// once, on first use.
#[derive(Debug)]
pub struct StaticDualRoute {
    route: &'static StaticRoute,
    spec: &'static StaticPaySpec,
    protocols: OnceLock<Arc<RouteProtocols>>,
}

impl StaticDualRoute {
    /// Offers x402 per `route` and MPP per `spec`.
    pub const fn new(route: &'static StaticRoute, spec: &'static StaticPaySpec) -> Self {
        Self { route, spec, protocols: OnceLock::new() }
    }

    /// The route's protocols (x402 and MPP); `Err` is the response to send (the x402 route is
    /// misconfigured).
    #[allow(clippy::result_large_err)] // the Err side is the HTTP response itself
    pub fn protocols(&self) -> Result<Arc<RouteProtocols>, PaymentHttpResponse> {
        if let Some(p) = self.protocols.get() {
            return Ok(Arc::clone(p));
        }
        let config = self.route.config()?;
        let protocols = RouteProtocols::new().with("x402", config).with("mpp", self.spec.spec());
        Ok(Arc::clone(self.protocols.get_or_init(|| Arc::new(protocols))))
    }

    /// Decides a request with the state's x402 server and MPP coordinator (a [`PaymentRouter`]
    /// with the [`X402Adapter`] and the [`MppAdapter`]): the accepted payment, or the response
    /// to send.
    pub async fn process(
        &self,
        ctx: &RequestContext,
        server: &X402HttpServer,
        mpp: &Mpp,
    ) -> Result<RouterPayment, PaymentHttpResponse> {
        let protocols = self.protocols()?;
        // The adapters wrap the state's (cheap to clone) server and coordinator, so one handler
        // mounted in apps with different state uses each app's own.
        let router =
            PaymentRouter::new().adapter(X402Adapter::new(server.clone())).adapter(MppAdapter::new(mpp.clone()));
        router.process(ctx, &protocols).await
    }
}
