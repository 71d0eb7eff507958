//! The framework-agnostic core of the glue: a [`PaymentGate`] decides which requests need a
//! payment, verifies it, hands it to the handler and completes it afterwards.
//!
//! * The route-table layers (axum's `GateLayer`, actix-web's `GateMiddleware`) are written once
//!   over [`PaymentGate`]; a custom route table plugs into them by implementing it (the official
//!   extension point, next to the router's `PaymentAdapter`).
//! * The guards the attribute macros expand to are written once per framework over
//!   [`GuardGate`] (a gate built from the app's state) and [`StaticGateRoute`] (the macro-made
//!   route statics); what they hand the handler derefs to a `Guarded` payment, whose getters read
//!   what [`GuardedPayment`] kept.
//! * The handlers' payment extractors read a [`GateExtension`], or are rejected with
//!   [`NotProtected`].
#![allow(clippy::result_large_err)] // the Err side is the HTTP response itself, built once per request

use crate::completion::CancelPolicy;
#[cfg(any(feature = "axum", feature = "actix"))]
use crate::completion::FinishGuard;
use crate::mpp::{Credential, Mpp, MppPayment, PaidStream, PaySpec, Receipt, StaticPaySpec};
use crate::web::{PaymentHttpResponse, PreparedResponse, RequestContext, RequestHead, ResponseSink};
use crate::x402::{RouteConfig, StaticRoute, X402HttpServer, X402Payment};
use http::{HeaderMap, StatusCode};
use std::fmt;
use std::future::Future;
use std::sync::Arc;

/// Where a [`PaymentGate`] puts what the handler's extractors read (a framework's request
/// extensions).
pub trait ExtensionSink {
    /// Stores `value`, replacing any earlier value of the same type.
    fn insert<T: Clone + Send + Sync + 'static>(&mut self, value: T);
}

impl ExtensionSink for http::Extensions {
    fn insert<T: Clone + Send + Sync + 'static>(&mut self, value: T) {
        http::Extensions::insert(self, value);
    }
}

/// A route table protecting requests with a payment protocol: what the route-table layers (axum's
/// `GateLayer`, actix-web's `GateMiddleware`) are written over. Implemented by the x402 server,
/// the MPP coordinator and the dual-protocol `PaymentRouter`; implement it to put a route table
/// of your own behind the same layers.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a pay402 payment gate",
    label = "the route-table layer needs a `PaymentGate`",
    note = "use an `X402HttpServer`, an `Mpp` or a `PaymentRouter`, or implement `pay402::gate::PaymentGate` for `{Self}` (route_for, process, insert_extensions, finish)"
)]
pub trait PaymentGate: Clone + Send + Sync + 'static {
    /// What protects a matched route.
    type Route: Send + Sync + 'static;
    /// A verified payment, to complete after the handler.
    type Payment: Send + 'static;

    /// What protects `method` + `path`, if anything.
    fn route_for(&self, method: &str, path: &str) -> Option<Self::Route>;

    /// The unpaid fast path: a response prepared in advance for this route, decided from the
    /// request head alone (before any [`RequestContext`] is built). `None` (the default): take
    /// [`PaymentGate::process`].
    fn precomputed_unpaid(&self, route: &Self::Route, head: &impl RequestHead) -> Option<Arc<PreparedResponse>> {
        let _ = (route, head);
        None
    }

    /// Decides a request to a protected route: the verified payment, or the response to send.
    fn process(
        &self,
        ctx: &RequestContext,
        route: &Self::Route,
    ) -> impl Future<Output = Result<Self::Payment, PaymentHttpResponse>> + Send;

    /// Makes the payment available to the handler's extractors.
    fn insert_extensions(payment: &Self::Payment, ext: &mut impl ExtensionSink);

    /// Completes the payment after the handler answered `status`: the headers to add to its
    /// response, or the response replacing it.
    fn finish(
        &self,
        ctx: &RequestContext,
        payment: Self::Payment,
        status: StatusCode,
    ) -> impl Future<Output = Result<HeaderMap, PaymentHttpResponse>> + Send;

    /// What happens to `payment` when its request is cancelled while the handler runs (see
    /// [`crate::completion`]). Default: [`CancelPolicy::Complete`].
    fn cancel_policy(&self, payment: &Self::Payment) -> CancelPolicy {
        let _ = payment;
        CancelPolicy::Complete
    }

    /// Where the handler's response to `payment` is recorded, so that a retry of the same
    /// payment gets it without running the handler again (`None`, the default: not recorded).
    /// The glue calls it with responses below 400 whose body has a known size up to
    /// [`MAX_RECORDED_BODY_BYTES`](crate::web::MAX_RECORDED_BODY_BYTES), before completing
    /// the payment.
    fn response_sink(&self, payment: &Self::Payment) -> Option<ResponseSink> {
        let _ = payment;
        None
    }
}

#[cfg(any(feature = "axum", feature = "actix"))]
/// Guards a verified `payment` until it is completed by [`FinishGuard::finish`] with the
/// handler's status. Dropped before that, it is released — or, once [`FinishGuard::start`]ed (the
/// handler runs), completed per the gate's [`CancelPolicy`] (released if the handler panicked).
pub(crate) fn payment_guard<G: PaymentGate>(gate: G, ctx: RequestContext, payment: G::Payment) -> FinishGuard {
    let policy = gate.cancel_policy(&payment);
    FinishGuard::verified(
        policy,
        Box::new(move |status| Box::pin(async move { gate.finish(&ctx, payment, status).await })),
    )
}

impl PaymentGate for X402HttpServer {
    type Route = Arc<RouteConfig>;
    type Payment = X402Payment;

    fn route_for(&self, method: &str, path: &str) -> Option<Self::Route> {
        X402HttpServer::route_for(self, method, path)
    }

    fn precomputed_unpaid(&self, route: &Self::Route, head: &impl RequestHead) -> Option<Arc<PreparedResponse>> {
        X402HttpServer::precomputed_unpaid(self, route, head)
    }

    async fn process(&self, ctx: &RequestContext, route: &Self::Route) -> Result<X402Payment, PaymentHttpResponse> {
        X402HttpServer::process(self, ctx, route).await
    }

    fn insert_extensions(payment: &X402Payment, ext: &mut impl ExtensionSink) {
        ext.insert(payment.clone());
    }

    async fn finish(
        &self,
        ctx: &RequestContext,
        payment: X402Payment,
        status: StatusCode,
    ) -> Result<HeaderMap, PaymentHttpResponse> {
        X402HttpServer::finish(self, ctx, &payment, status).await
    }

    fn cancel_policy(&self, _: &X402Payment) -> CancelPolicy {
        self.cancellation()
    }

    fn response_sink(&self, payment: &X402Payment) -> Option<ResponseSink> {
        X402HttpServer::response_sink(self, payment)
    }
}

impl PaymentGate for Mpp {
    type Route = Arc<PaySpec>;
    type Payment = MppPayment;

    fn route_for(&self, method: &str, path: &str) -> Option<Self::Route> {
        Mpp::route_for(self, method, path)
    }

    async fn process(&self, ctx: &RequestContext, route: &Self::Route) -> Result<MppPayment, PaymentHttpResponse> {
        self.process_route(ctx, route).await
    }

    fn insert_extensions(paid: &MppPayment, ext: &mut impl ExtensionSink) {
        ext.insert(paid.credential.clone());
        ext.insert(paid.receipt.clone());
        if let Some(stream) = paid.paid_stream() {
            ext.insert(stream);
        }
    }

    async fn finish(
        &self,
        _: &RequestContext,
        paid: MppPayment,
        status: StatusCode,
    ) -> Result<HeaderMap, PaymentHttpResponse> {
        paid.finish(status).await
    }

    /// The coordinator's policy, as the payment recorded it.
    fn cancel_policy(&self, paid: &MppPayment) -> CancelPolicy {
        paid.cancel_policy()
    }
}

/// The rejection of a payment extractor (`X402Payment`, `Credential`, `Receipt`, the router's
/// `Paid`) on a route no pay402 layer or attribute macro protects: a server misconfiguration,
/// answered 500. Its message names the requested type and what protects it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("this route is not protected by pay402: add {protect} before extracting {type_name}")]
pub struct NotProtected {
    type_name: &'static str,
    protect: &'static str,
}

impl NotProtected {
    /// The rejection of the extractor of `type_name`, which `protect` (a layer, a middleware, an
    /// attribute) makes available.
    pub const fn new(type_name: &'static str, protect: &'static str) -> Self {
        Self { type_name, protect }
    }

    /// The type the handler asked for.
    pub fn type_name(&self) -> &'static str {
        self.type_name
    }
}

/// A value a [`PaymentGate`] (or a macro's guard) puts in the request extensions for the
/// handler's extractor of that type.
pub trait GateExtension: Clone + Send + Sync + 'static {
    /// The rejection when a handler extracts it on a route nothing protects.
    const NOT_PROTECTED: NotProtected;
}

impl GateExtension for X402Payment {
    const NOT_PROTECTED: NotProtected = NotProtected::new("X402Payment", "the x402 layer/middleware (or #[x402])");
}

impl GateExtension for Credential {
    const NOT_PROTECTED: NotProtected = NotProtected::new("Credential", "the MPP layer/middleware (or #[pay])");
}

impl GateExtension for Receipt {
    const NOT_PROTECTED: NotProtected = NotProtected::new("Receipt", "the MPP layer/middleware (or #[pay])");
}

impl GateExtension for PaidStream {
    const NOT_PROTECTED: NotProtected = NotProtected::new(
        "PaidStream",
        "an MPP route priced per event (PaySpec::session(..).per_event(), or #[pay(intent = \"session\", per = \"event\")])",
    );
}

#[cfg(any(feature = "axum", feature = "actix"))]
/// What a handler's extractor of `T` answers, given the request extensions' `T` (if any).
pub(crate) fn from_extensions<T: GateExtension>(value: Option<&T>) -> Result<T, NotProtected> {
    value.cloned().ok_or(T::NOT_PROTECTED)
}

/// What a guarded handler's injected parameters are read from: the part of a verified payment
/// the handler sees, kept by `Guarded` while the payment itself waits in its completion guard.
pub trait GuardedPayment: Send + 'static {
    /// The handler-visible part (cheap to clone).
    type Seen: Clone + fmt::Debug + Send + Sync + 'static;
    /// Takes it from the payment.
    fn seen(&self) -> Self::Seen;
}

impl GuardedPayment for X402Payment {
    type Seen = X402Payment;
    fn seen(&self) -> X402Payment {
        self.clone()
    }
}

impl GuardedPayment for MppPayment {
    type Seen = (Credential, Receipt, Option<PaidStream>);
    fn seen(&self) -> (Credential, Receipt, Option<PaidStream>) {
        (self.credential.clone(), self.receipt.clone(), self.paid_stream())
    }
}

/// A [`PaymentGate`] the attribute macros' guards build per request from the app's state.
pub trait GuardGate: PaymentGate<Payment: GuardedPayment> {
    /// What the guard takes from the app's state (axum's router state, actix-web's app data):
    /// the gate itself for x402 and MPP; the x402 server and the MPP coordinator for the router.
    type State: Send + Sync + 'static;
    /// The gate over that state.
    fn from_state(state: Self::State) -> Self;
    /// Whether a request carries a payment this gate reads (decided from the head alone). A
    /// guarded handler answers a request that carries none with the route's 402 before it
    /// looks at its other extractors, so an unpaid request is challenged even when its body
    /// would be rejected.
    fn carries_payment(head: &impl RequestHead) -> bool;
}

/// Whether a request carries an MPP credential (`Authorization: Payment …`).
pub(crate) fn carries_mpp_credential(head: &impl RequestHead) -> bool {
    head.header_text("authorization").is_some_and(crate::mpp::carries_credential)
}

impl GuardGate for X402HttpServer {
    type State = Self;
    fn from_state(state: Self) -> Self {
        state
    }
    fn carries_payment(head: &impl RequestHead) -> bool {
        crate::x402::carries_payment(head)
    }
}

impl GuardGate for Mpp {
    type State = Self;
    fn from_state(state: Self) -> Self {
        state
    }
    fn carries_payment(head: &impl RequestHead) -> bool {
        carries_mpp_credential(head)
    }
}

/// A route described by an attribute macro's literals (a `static` in the handler): the gate that
/// protects it, and how it becomes that gate's route.
pub trait StaticGateRoute: Sync + 'static {
    /// The gate protecting it.
    type Gate: GuardGate;
    /// The route, built once on first use; `Err` is the response to send (misconfigured).
    #[allow(clippy::result_large_err)] // the Err side is the HTTP response itself
    fn route(
        &self,
        state: &<Self::Gate as GuardGate>::State,
    ) -> Result<<Self::Gate as PaymentGate>::Route, PaymentHttpResponse>;
}

impl StaticGateRoute for StaticRoute {
    type Gate = X402HttpServer;
    fn route(&self, _: &X402HttpServer) -> Result<Arc<RouteConfig>, PaymentHttpResponse> {
        self.config()
    }
}

impl StaticGateRoute for StaticPaySpec {
    type Gate = Mpp;
    fn route(&self, _: &Mpp) -> Result<Arc<PaySpec>, PaymentHttpResponse> {
        Ok(self.spec())
    }
}

#[cfg(any(feature = "axum", feature = "actix"))]
/// A payment verified by a macro's guard, framework-free: the part the handler sees, with the
/// getters the expansions call (`payment()`, `credential()`, `receipt()`, `paid()`, per gate),
/// and the guard that completes it. Each framework's `Verified` derefs to it and adds `finish`,
/// which runs the handler body and then completes the payment with its status
/// ([`crate::web::settles`]).
///
/// Dropped before `finish` the payment is released; dropped while the handler runs (client
/// disconnect, timeout layer) it is completed per the gate's [`CancelPolicy`], or released if
/// the handler panicked.
pub struct Guarded<G: GuardGate> {
    seen: <G::Payment as GuardedPayment>::Seen,
    pub(crate) guard: FinishGuard,
    /// Where the handler's response is recorded ([`PaymentGate::response_sink`]).
    pub(crate) sink: Option<ResponseSink>,
}

#[cfg(any(feature = "axum", feature = "actix"))]
impl<G: GuardGate> fmt::Debug for Guarded<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Guarded")
            .field("seen", &self.seen)
            .field("guard", &self.guard)
            .field("records_response", &self.sink.is_some())
            .finish()
    }
}

#[cfg(any(feature = "axum", feature = "actix"))]
impl<G: GuardGate> Guarded<G> {
    /// Decides `ctx` on `route` with `gate`: the verified payment guarded until `finish`, or the
    /// response to send.
    pub(crate) async fn admit(gate: G, ctx: RequestContext, route: &G::Route) -> Result<Self, PaymentHttpResponse> {
        let payment = Box::pin(gate.process(&ctx, route)).await?;
        let sink = gate.response_sink(&payment);
        Ok(Self { seen: payment.seen(), guard: payment_guard(gate, ctx, payment), sink })
    }

    /// What the handler sees of the payment.
    pub(crate) fn seen(&self) -> &<G::Payment as GuardedPayment>::Seen {
        &self.seen
    }
}

#[cfg(any(feature = "axum", feature = "actix"))]
impl Guarded<X402HttpServer> {
    /// The payment, for the handler's `X402Payment` parameter.
    pub fn payment(&self) -> X402Payment {
        self.seen.clone()
    }

    /// The payment's `upto` charge, for the handler's `UptoCharge` parameter.
    pub fn upto_charge(&self) -> crate::x402::UptoCharge {
        self.seen.upto_charge()
    }
}

#[cfg(any(feature = "axum", feature = "actix"))]
impl Guarded<Mpp> {
    /// The credential, for the handler's `Credential` parameter.
    pub fn credential(&self) -> Credential {
        self.seen.0.clone()
    }

    /// The receipt, for the handler's `Receipt` parameter.
    pub fn receipt(&self) -> Receipt {
        self.seen.1.clone()
    }

    /// The metered stream of a per-event route, for the handler's `PaidStream` parameter (on
    /// another route, one whose `sse` answers only a `payment-error`).
    pub fn paid_stream(&self) -> PaidStream {
        self.seen.2.clone().unwrap_or_else(PaidStream::unavailable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::Paid as RouterPaid;

    #[test]
    fn the_not_protected_rejection_names_the_requested_type() {
        // The x402 message is the one `MissingPayment` had.
        assert_eq!(
            X402Payment::NOT_PROTECTED.to_string(),
            "this route is not protected by pay402: add the x402 layer/middleware (or #[x402]) before extracting \
             X402Payment"
        );
        assert_eq!(
            Receipt::NOT_PROTECTED.to_string(),
            "this route is not protected by pay402: add the MPP layer/middleware (or #[pay]) before extracting Receipt"
        );
        assert_eq!(Credential::NOT_PROTECTED.type_name(), "Credential");
        assert_eq!(RouterPaid::NOT_PROTECTED.type_name(), "Paid");
    }

    #[test]
    fn each_guard_gate_sees_its_own_payment() {
        use crate::router::PaymentRouter;
        let request = |headers: &[(&'static str, &'static str)]| {
            let mut map = HeaderMap::new();
            for (name, value) in headers {
                map.append(*name, http::HeaderValue::from_static(value));
            }
            RequestContext::new(http::Method::POST, "http://api.example/order".into(), map)
        };
        let seen = |ctx: &RequestContext| {
            (X402HttpServer::carries_payment(ctx), Mpp::carries_payment(ctx), PaymentRouter::carries_payment(ctx))
        };
        assert_eq!(seen(&request(&[])), (false, false, false));
        assert_eq!(seen(&request(&[("payment-signature", " ")])), (false, false, false), "blank");
        assert_eq!(seen(&request(&[("authorization", "Bearer t")])), (false, false, false));
        assert_eq!(seen(&request(&[("payment-signature", "abc")])), (true, false, true));
        assert_eq!(seen(&request(&[("x-payment", "abc")])), (true, false, true));
        assert_eq!(seen(&request(&[("authorization", "Bearer t, payment abc")])), (false, true, true));
    }
}
