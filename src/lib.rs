#![doc = include_str!("../docs/overview.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub use pay402_runtime::{
    chain, completion, evm, json, literal, metrics, mpp, okx, replay, router, setup, transport, web, x402,
};

/// The one-call development/production set-up ([`setup::Setup`]).
pub use pay402_runtime::setup::Setup;

/// The `reqwest` version pay402's clients are built on: name its types through this path
/// (`pay402::reqwest::Client::builder()`) so they always match.
pub use pay402_runtime::reqwest;

#[cfg(feature = "client")]
#[cfg_attr(docsrs, doc(cfg(feature = "client")))]
pub use pay402_runtime::autopay;

/// axum integration: the route-table layers, the payment extractors and the attribute macros.
///
/// [`Guard`](crate::axum::Guard), [`UntiedGuard`](crate::axum::UntiedGuard),
/// [`Screened`](crate::axum::Screened), [`Verified`](crate::axum::Verified),
/// [`Deferred`](crate::axum::Deferred) and [`extracted`](crate::axum::extracted) are what the
/// attribute macros expand to (compile errors about a handler name them); they are made only by
/// the expansions, with the route statics the macros build. [`RouterState`](crate::axum::RouterState)
/// is the bound a paid handler puts on the router state: a state that does not provide the
/// server is reported with its message. A route table of your own plugs in through
/// [`GateLayer`](crate::axum::GateLayer) and [`gate::PaymentGate`].
#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
pub mod axum {
    pub use pay402_runtime::axum::{
        Deferred, GateLayer, GateService, Guard, MppLayer, MppService, PaymentRouterLayer, PaymentRouterService,
        RouterState, Screened, UntiedGuard, Verified, X402Layer, X402Service, extracted, into_response,
    };
    pub use pay402_runtime::mpp::{Credential, EventStream, Mpp, PaidStream, Receipt, SseEvent};
    pub use pay402_runtime::router::{Paid, PaymentRouter};
    pub use pay402_runtime::x402::{UptoCharge, X402HttpServer, X402Payment};

    #[doc = include_str!("../docs/axum_pay.md")]
    pub use pay402_macros::pay_axum as pay;
    #[doc = include_str!("../docs/axum_x402.md")]
    pub use pay402_macros::x402_axum as x402;
}

/// actix-web integration: the route-table middlewares, the payment extractors and the attribute
/// macros.
///
/// [`Guard`](crate::actix::Guard), [`Screened`](crate::actix::Screened),
/// [`Verified`](crate::actix::Verified), [`Deferred`](crate::actix::Deferred),
/// [`Extractor`](crate::actix::Extractor) and [`extracted`](crate::actix::extracted) are what the
/// attribute macros expand to (compile errors about a handler name them); they are made only by
/// the expansions, with the route statics the macros build. A route table of your own plugs in
/// through [`GateMiddleware`](crate::actix::GateMiddleware) and [`gate::PaymentGate`].
#[cfg(feature = "actix")]
#[cfg_attr(docsrs, doc(cfg(feature = "actix")))]
pub mod actix {
    pub use pay402_runtime::actix::{
        Deferred, Extractor, GateMiddleware, GateMiddlewareService, Guard, MISSING_MPP_MESSAGE, MISSING_ROUTER_MESSAGE,
        MISSING_SERVER_MESSAGE, MppMiddleware, MppMiddlewareService, PaymentRouterMiddleware,
        PaymentRouterMiddlewareService, Screened, Verified, X402Middleware, X402MiddlewareService, extracted,
        into_response, request_context,
    };
    pub use pay402_runtime::mpp::{Credential, EventStream, Mpp, PaidStream, Receipt, SseEvent};
    pub use pay402_runtime::router::{Paid, PaymentRouter};
    pub use pay402_runtime::x402::{UptoCharge, X402HttpServer, X402Payment};

    #[doc = include_str!("../docs/actix_pay.md")]
    pub use pay402_macros::pay_actix as pay;
    #[doc = include_str!("../docs/actix_x402.md")]
    pub use pay402_macros::x402_actix as x402;
}

/// The extension point of the framework glue: a [`PaymentGate`](gate::PaymentGate) is a route
/// table the route-table layers (axum's `GateLayer`, actix-web's `GateMiddleware`) protect
/// requests with. x402's `X402HttpServer`, MPP's `Mpp` and the dual-protocol `PaymentRouter`
/// implement it; so can a protocol of your own. A handler extracting a payment on a route nothing
/// protects is rejected with [`NotProtected`](gate::NotProtected) (a 500).
pub mod gate {
    pub use pay402_runtime::gate::{ExtensionSink, GateExtension, NotProtected, PaymentGate};
}

/// Guides: longer walk-throughs, each a page (every code block in them is compiled by
/// `cargo test --doc`).
///
/// * [`production`](guides::production) — going to production with OKX credentials;
/// * [`sessions`](guides::sessions) — MPP sessions and choosing a channel store (in-memory, file, Redis);
/// * [`scaling`](guides::scaling) — running several instances;
/// * [`exactly_once`](guides::exactly_once) — unknown settlement outcomes, retries, idempotency ids;
/// * [`dual_protocol`](guides::dual_protocol) — one route accepting x402 or MPP;
/// * [`facilitator`](guides::facilitator) — self-hosting the x402 facilitator;
/// * [`pay_per_use`](guides::pay_per_use) — x402 `upto` and `exact` over Permit2, and when to use
///   `exact`, `upto` or an MPP session;
/// * [`streams`](guides::streams) — MPP session streams metered per event over Server-Sent
///   Events;
/// * [`client`](guides::client) — paying from Rust;
/// * [`observability`](guides::observability) — tracing spans and metrics.
pub mod guides {
    #[doc = include_str!("../docs/guides/production.md")]
    pub mod production {}
    #[doc = include_str!("../docs/guides/sessions.md")]
    pub mod sessions {}
    #[doc = include_str!("../docs/guides/scaling.md")]
    pub mod scaling {}
    #[doc = include_str!("../docs/guides/exactly_once.md")]
    pub mod exactly_once {}
    #[doc = include_str!("../docs/guides/dual_protocol.md")]
    pub mod dual_protocol {}
    #[doc = include_str!("../docs/guides/facilitator.md")]
    pub mod facilitator {}
    #[doc = include_str!("../docs/guides/pay_per_use.md")]
    pub mod pay_per_use {}
    #[doc = include_str!("../docs/guides/streams.md")]
    pub mod streams {}
    #[doc = include_str!("../docs/guides/client.md")]
    pub mod client {}
    #[doc = include_str!("../docs/guides/observability.md")]
    pub mod observability {}
}

/// The README's code blocks, compiled by `cargo test --doc`.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

#[doc(hidden)]
pub mod __private {
    //! Paths named by macro expansions. Not public API.
    pub use pay402_runtime::__private::*;
    /// `#[pay(per = ..)]`'s value, given to `StaticPaySpec::per`.
    pub use pay402_runtime::mpp::Per;
}
