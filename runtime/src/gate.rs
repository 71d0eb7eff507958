//! The framework-agnostic core of the route-table middlewares: a [`PaymentGate`] decides which
//! requests need a payment, verifies it, hands it to the handler and completes it afterwards.
//! The axum layer and the actix-web middleware are written once over this trait.
#![allow(clippy::result_large_err)] // the Err side is the HTTP response itself, built once per request

use crate::completion::CancelPolicy;
#[cfg(any(feature = "axum", feature = "actix"))]
use crate::completion::FinishGuard;
use crate::mpp::{Mpp, Paid as MppPaid, PaySpec};
use crate::router::{Paid as RouterPaid, PaymentRouter, RouteProtocols, RouterPayment};
use crate::web::{PaymentHttpResponse, PreparedResponse, RequestContext, RequestHead};
use crate::x402::{RouteConfig, X402HttpServer, X402Payment};
use http::{HeaderMap, StatusCode};
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

/// A route table protecting requests with a payment protocol.
pub trait PaymentGate: Clone + Send + Sync + 'static {
    /// What protects a matched route.
    type Route: Send + Sync + 'static;
    /// A verified payment, to complete after the handler.
    type Payment: Send + 'static;

    /// Whether the responses of [`PaymentGate::process`] may carry several lines of one header
    /// (the merged 402's `WWW-Authenticate` challenges), which conversions must then all keep.
    const MULTI_VALUED_HEADERS: bool = false;

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

#[cfg(any(feature = "axum", feature = "actix"))]
/// Guards a dual-protocol payment of a macro-protected handler like [`payment_guard`]: its
/// completion runs the accepting protocol's finish, under that protocol's cancel policy.
pub(crate) fn router_guard(payment: RouterPayment) -> FinishGuard {
    FinishGuard::verified(payment.cancel_policy(), Box::new(move |status| Box::pin(payment.finish(status))))
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
}

impl PaymentGate for Mpp {
    type Route = Arc<PaySpec>;
    type Payment = MppPaid;

    fn route_for(&self, method: &str, path: &str) -> Option<Self::Route> {
        Mpp::route_for(self, method, path)
    }

    async fn process(&self, ctx: &RequestContext, route: &Self::Route) -> Result<MppPaid, PaymentHttpResponse> {
        Mpp::process(self, ctx, route).await
    }

    fn insert_extensions(paid: &MppPaid, ext: &mut impl ExtensionSink) {
        ext.insert(paid.credential.clone());
        ext.insert(paid.receipt.clone());
    }

    async fn finish(
        &self,
        _: &RequestContext,
        paid: MppPaid,
        status: StatusCode,
    ) -> Result<HeaderMap, PaymentHttpResponse> {
        paid.finish(status).await
    }

    fn cancel_policy(&self, _: &MppPaid) -> CancelPolicy {
        self.cancellation()
    }
}

impl PaymentGate for PaymentRouter {
    type Route = Arc<RouteProtocols>;
    type Payment = RouterPayment;
    const MULTI_VALUED_HEADERS: bool = true;

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
            RouterPaid::X402(p) => ext.insert(p.clone()),
            RouterPaid::Mpp { credential, receipt } => {
                ext.insert(credential.clone());
                ext.insert(receipt.clone());
            }
            RouterPaid::Other { .. } => {}
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
