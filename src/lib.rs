#![doc = include_str!("../docs/overview.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub use pay402_runtime::{
    chain, completion, evm, json, literal, metrics, mpp, okx, replay, router, transport, web, x402,
};

#[cfg(feature = "client")]
#[cfg_attr(docsrs, doc(cfg(feature = "client")))]
pub use pay402_runtime::autopay;

/// axum integration: the route-table layer, the payment extractor and the attribute macros.
#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
pub mod axum {
    pub use pay402_runtime::axum::{
        DualGuard, DualVerified, MppGuard, MppLayer, MppService, MppVerified, PaymentRouterLayer, PaymentRouterService,
        X402Guard, X402Layer, X402Service, X402Verified, into_response,
    };
    pub use pay402_runtime::mpp::{Credential, Mpp, Receipt};
    pub use pay402_runtime::router::{Paid, PaymentRouter};
    pub use pay402_runtime::x402::{MissingPayment, X402HttpServer, X402Payment};

    #[doc = include_str!("../docs/axum_pay.md")]
    pub use pay402_macros::pay_axum as pay;
    #[doc = include_str!("../docs/axum_x402.md")]
    pub use pay402_macros::x402_axum as x402;
}

/// actix-web integration: the route-table middleware, the payment extractor and the attribute
/// macros.
#[cfg(feature = "actix")]
#[cfg_attr(docsrs, doc(cfg(feature = "actix")))]
pub mod actix {
    pub use pay402_runtime::actix::{
        DualGuard, DualVerified, MISSING_DUAL_MESSAGE, MISSING_MPP_MESSAGE, MISSING_SERVER_MESSAGE, MppGuard,
        MppMiddleware, MppMiddlewareService, MppVerified, PaymentRouterMiddleware, PaymentRouterMiddlewareService,
        X402Guard, X402Middleware, X402MiddlewareService, X402Verified, into_response, request_context,
    };
    pub use pay402_runtime::mpp::{Credential, Mpp, Receipt};
    pub use pay402_runtime::router::{Paid, PaymentRouter};
    pub use pay402_runtime::x402::{MissingPayment, X402HttpServer, X402Payment};

    #[doc = include_str!("../docs/actix_pay.md")]
    pub use pay402_macros::pay_actix as pay;
    #[doc = include_str!("../docs/actix_x402.md")]
    pub use pay402_macros::x402_actix as x402;
}

/// Guides: longer walk-throughs, each a page (every code block in them is compiled by
/// `cargo test --doc`).
///
/// * [`production`](guides::production) — going to production with OKX credentials;
/// * [`sessions`](guides::sessions) — MPP sessions and choosing a channel store (in-memory, file, Redis);
/// * [`scaling`](guides::scaling) — running several instances;
/// * [`dual_protocol`](guides::dual_protocol) — one route accepting x402 or MPP;
/// * [`facilitator`](guides::facilitator) — self-hosting the x402 facilitator;
/// * [`client`](guides::client) — paying from Rust;
/// * [`observability`](guides::observability) — tracing spans and metrics.
pub mod guides {
    #[doc = include_str!("../docs/guides/production.md")]
    pub mod production {}
    #[doc = include_str!("../docs/guides/sessions.md")]
    pub mod sessions {}
    #[doc = include_str!("../docs/guides/scaling.md")]
    pub mod scaling {}
    #[doc = include_str!("../docs/guides/dual_protocol.md")]
    pub mod dual_protocol {}
    #[doc = include_str!("../docs/guides/facilitator.md")]
    pub mod facilitator {}
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
}
