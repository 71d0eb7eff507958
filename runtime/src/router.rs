//! One route, both protocols: the [`PaymentRouter`] (the seed's `PaymentGate`).
//!
//! * **No credential** → ONE 402 carrying every configured protocol's challenge: x402's
//!   `PAYMENT-REQUIRED` and MPP's `WWW-Authenticate` (each value on its own header line), a
//!   single `Content-Type`, `Cache-Control: no-store`. The body is MPP's
//!   `application/problem+json` challenge document: x402 clients read only the
//!   `PAYMENT-REQUIRED` header (x402's own body is `{}`), while MPP clients can use the problem's
//!   `challengeId`. A request that prefers HTML gets the paywall page instead of that body
//!   (every challenge header kept), offering both protocols ([`crate::web::paywall`]).
//! * **A credential** → the adapter that detects it, lowest priority number first (MPP 10,
//!   x402 20): a request carrying both is handled by MPP only. That protocol's full semantics
//!   and error format apply, and exactly one protocol settles.
//!
//! Custom protocols plug in through [`PaymentAdapter`].

use crate::completion::CancelPolicy;
#[cfg(any(feature = "axum", feature = "actix"))]
use crate::gate::Guarded;
use crate::gate::{
    ExtensionSink, GateExtension, GuardGate, GuardedPayment, NotProtected, PaymentGate, StaticGateRoute,
    carries_mpp_credential,
};
use crate::mpp::{Credential, Mpp, MppPayment, PaySpec, Receipt, StaticPaySpec};
use crate::web::paywall::{self, PaywallConfig, PaywallPage, prefers_html};
use crate::web::{PaymentHttpResponse, RequestContext, RequestHead};
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

/// A protocol the router offers through its own [`PaymentGate`] (x402's server, MPP's
/// coordinator): how the router names it, ranks it, detects its credential and shows its payment.
pub trait RouterProtocol: PaymentGate<Payment: Sync> {
    /// The adapter's name, the key of its entry in [`RouteProtocols`].
    const NAME: &'static str;
    /// The default priority (lower runs first).
    const PRIORITY: i32;
    /// The request headers carrying this protocol's credential (removed to ask for its 402).
    const CREDENTIAL_HEADERS: &'static [&'static str];
    /// True when the request carries this protocol's credential.
    fn detect(ctx: &RequestContext) -> bool;
    /// What the handler sees of a payment.
    fn paid(payment: &Self::Payment) -> Paid;
}

impl RouterProtocol for X402HttpServer {
    const NAME: &'static str = "x402";
    const PRIORITY: i32 = 20;
    const CREDENTIAL_HEADERS: &'static [&'static str] = &["payment-signature", "x-payment"];
    fn detect(ctx: &RequestContext) -> bool {
        carries_x402_payment(ctx)
    }
    fn paid(payment: &X402Payment) -> Paid {
        Paid::X402(payment.clone())
    }
}

impl RouterProtocol for Mpp {
    const NAME: &'static str = "mpp";
    const PRIORITY: i32 = 10;
    const CREDENTIAL_HEADERS: &'static [&'static str] = &["authorization"];
    fn detect(ctx: &RequestContext) -> bool {
        carries_mpp_credential(ctx)
    }
    fn paid(paid: &MppPayment) -> Paid {
        Paid::Mpp { credential: paid.credential.clone(), receipt: paid.receipt.clone() }
    }
}

/// The adapter offering a [`RouterProtocol`]'s gate (its own route table is not used; routes
/// come from the router): [`X402Adapter`] and [`MppAdapter`].
#[derive(Clone, Debug)]
pub struct GateAdapter<G> {
    gate: G,
    priority: i32,
}

/// The x402 adapter (name `x402`, priority 20): detects a non-empty `PAYMENT-SIGNATURE` or
/// `X-PAYMENT`; settles after the handler and adds `PAYMENT-RESPONSE`.
pub type X402Adapter = GateAdapter<X402HttpServer>;

/// The MPP adapter (name `mpp`, priority 10): detects `Authorization: Payment …` (scheme
/// case-insensitive, also among comma-separated schemes); adds `Payment-Receipt`.
pub type MppAdapter = GateAdapter<Mpp>;

impl<G: RouterProtocol> GateAdapter<G> {
    /// An adapter over `gate` (an x402 server, an MPP coordinator), at the protocol's default
    /// priority.
    pub fn new(gate: G) -> Self {
        Self { gate, priority: G::PRIORITY }
    }

    /// Overrides the priority.
    pub fn priority(mut self, priority: i32) -> Self {
        self.priority = priority;
        self
    }
}

/// A payment accepted through a [`GateAdapter`], completed by its gate.
struct GatePending<G: PaymentGate> {
    gate: G,
    payment: G::Payment,
}

#[async_trait]
impl<G: RouterProtocol> AdapterPayment for GatePending<G> {
    fn paid(&self) -> Paid {
        G::paid(&self.payment)
    }
    async fn finish(
        self: Box<Self>,
        ctx: &RequestContext,
        status: StatusCode,
    ) -> Result<HeaderMap, PaymentHttpResponse> {
        let GatePending { gate, payment } = *self;
        gate.finish(ctx, payment, status).await
    }
    fn cancel_policy(&self) -> CancelPolicy {
        self.gate.cancel_policy(&self.payment)
    }
}

#[async_trait]
impl<G: RouterProtocol> PaymentAdapter for GateAdapter<G> {
    fn name(&self) -> &str {
        G::NAME
    }
    fn priority(&self) -> i32 {
        self.priority
    }
    fn detect(&self, ctx: &RequestContext) -> bool {
        G::detect(ctx)
    }
    async fn challenge(&self, ctx: &RequestContext, config: &(dyn Any + Send + Sync)) -> PaymentHttpResponse {
        let Some(route) = config.downcast_ref::<G::Route>() else { return misconfigured(G::NAME) };
        let mut unpaid = ctx.clone();
        for name in G::CREDENTIAL_HEADERS {
            unpaid.headers.remove(*name);
        }
        match self.gate.process(&unpaid, route).await {
            Err(resp) => resp,
            Ok(_) => misconfigured(G::NAME),
        }
    }
    async fn handle(
        &self,
        ctx: &RequestContext,
        config: &(dyn Any + Send + Sync),
    ) -> Result<Box<dyn AdapterPayment>, PaymentHttpResponse> {
        let Some(route) = config.downcast_ref::<G::Route>() else { return Err(misconfigured(G::NAME)) };
        let payment = self.gate.process(ctx, route).await?;
        Ok(Box::new(GatePending { gate: self.gate.clone(), payment }))
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
        self.with(X402HttpServer::NAME, Arc::new(config))
    }

    /// Offers MPP with this spec.
    pub fn mpp(self, spec: PaySpec) -> Self {
        self.with(Mpp::NAME, Arc::new(spec))
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
    paywall: Arc<PaywallConfig>,
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
        Self { adapters: Arc::new(Vec::new()), routes: Arc::new(Vec::new()), paywall: Arc::default() }
    }

    /// Sets the paywall options of the page offering the route's protocols.
    pub fn paywall(mut self, config: PaywallConfig) -> Self {
        self.paywall = Arc::new(config);
        self
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
    /// A request that prefers HTML gets it with the paywall page offering every protocol as its
    /// body (the adapters are asked for their API answers, which the page is built from).
    pub async fn challenge(&self, ctx: &RequestContext, route: &RouteProtocols) -> PaymentHttpResponse {
        if prefers_html(ctx) {
            let mut api = ctx.clone();
            api.headers.insert(http::header::ACCEPT, http::HeaderValue::from_static("application/json"));
            let merged = self.merged_challenge(&api, route).await;
            return self.paywall_page(ctx, route, merged);
        }
        self.merged_challenge(ctx, route).await
    }

    /// The merged 402 as the paywall page: a route's `custom_paywall_html` (x402) when set, else
    /// the default page with the x402 options and the MPP challenges the headers carry.
    fn paywall_page(
        &self,
        ctx: &RequestContext,
        route: &RouteProtocols,
        merged: PaymentHttpResponse,
    ) -> PaymentHttpResponse {
        if merged.status != StatusCode::PAYMENT_REQUIRED {
            return merged;
        }
        let x402 = crate::x402::paywall::challenge_of(&merged.headers);
        let custom = route
            .get(X402HttpServer::NAME)
            .and_then(|c| c.downcast_ref::<Arc<RouteConfig>>())
            .and_then(|r| r.custom_paywall_html.as_deref());
        if let (Some(custom), Some(required)) = (custom, &x402) {
            return paywall::respond_custom(merged, crate::x402::paywall::render_custom(custom, required));
        }
        let mpp = crate::mpp::paywall::challenges_of(&merged.headers);
        let mut page = match &x402 {
            Some(required) => crate::x402::paywall::page(required, ctx.method.as_str()),
            None => PaywallPage { url: ctx.url.clone(), method: ctx.method.to_string(), ..PaywallPage::default() },
        };
        if page.description.is_empty() || page.description == page.url {
            page.description = mpp.iter().find_map(|c| c.description.clone()).unwrap_or(page.description);
        }
        page.offers.extend(crate::mpp::paywall::offers(&mpp));
        paywall::respond(merged, &page, &self.paywall)
    }

    async fn merged_challenge(&self, ctx: &RequestContext, route: &RouteProtocols) -> PaymentHttpResponse {
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
pub struct StaticRouterRoute {
    route: &'static StaticRoute,
    spec: &'static StaticPaySpec,
    protocols: OnceLock<Arc<RouteProtocols>>,
}

impl StaticRouterRoute {
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
        let protocols = RouteProtocols::new().with(X402HttpServer::NAME, config).with(Mpp::NAME, self.spec.spec());
        Ok(Arc::clone(self.protocols.get_or_init(|| Arc::new(protocols))))
    }
}

impl PaymentGate for PaymentRouter {
    type Route = Arc<RouteProtocols>;
    type Payment = RouterPayment;

    fn route_for(&self, method: &str, path: &str) -> Option<Self::Route> {
        PaymentRouter::route_for(self, method, path)
    }

    async fn process(&self, ctx: &RequestContext, route: &Self::Route) -> Result<RouterPayment, PaymentHttpResponse> {
        PaymentRouter::process(self, ctx, route).await
    }

    /// `Paid`, and the protocol's own `X402Payment` or `Credential` + `Receipt`.
    fn insert_extensions(payment: &RouterPayment, ext: &mut impl ExtensionSink) {
        let paid = payment.paid();
        match &paid {
            Paid::X402(p) => ext.insert(p.clone()),
            Paid::Mpp { credential, receipt } => {
                ext.insert(credential.clone());
                ext.insert(receipt.clone());
            }
            Paid::Other { .. } => {}
        }
        ext.insert(paid);
    }

    async fn finish(
        &self,
        _: &RequestContext,
        payment: RouterPayment,
        status: StatusCode,
    ) -> Result<HeaderMap, PaymentHttpResponse> {
        payment.finish(status).await
    }

    /// The policy of the protocol that accepted the payment.
    fn cancel_policy(&self, payment: &RouterPayment) -> CancelPolicy {
        payment.cancel_policy()
    }
}

/// A stacked `#[x402]` + `#[pay]` handler's router: the [`X402Adapter`] and the [`MppAdapter`]
/// over the state's (cheap to clone) server and coordinator, so one handler mounted in apps with
/// different state uses each app's own.
impl GuardGate for PaymentRouter {
    type State = (X402HttpServer, Mpp);
    fn from_state((server, mpp): (X402HttpServer, Mpp)) -> Self {
        PaymentRouter::new().adapter(X402Adapter::new(server)).adapter(MppAdapter::new(mpp))
    }
    /// Either protocol's payment (the two adapters' detections).
    fn carries_payment(head: &impl RequestHead) -> bool {
        carries_x402_payment(head) || carries_mpp_credential(head)
    }
}

impl StaticGateRoute for StaticRouterRoute {
    type Gate = PaymentRouter;
    fn route(&self, _: &(X402HttpServer, Mpp)) -> Result<Arc<RouteProtocols>, PaymentHttpResponse> {
        self.protocols()
    }
}

impl GuardedPayment for RouterPayment {
    type Seen = Paid;
    fn seen(&self) -> Paid {
        self.paid()
    }
}

impl GateExtension for Paid {
    const NOT_PROTECTED: NotProtected =
        NotProtected::new("Paid", "the payment router layer/middleware (or #[x402] with #[pay])");
}

#[cfg(any(feature = "axum", feature = "actix"))]
impl Guarded<PaymentRouter> {
    /// How the request was paid, for the handler's `Paid` parameter.
    pub fn paid(&self) -> Paid {
        self.seen().clone()
    }
}
