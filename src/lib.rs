//! # pay402
//!
//! Charge per request over HTTP 402, with the two payment protocols OKX runs on X Layer
//! (`eip155:196`): **x402** (schemes `exact` and `aggr_deferred`, verified and settled by a
//! facilitator such as OKX's) and **MPP** (the `Payment` HTTP authentication scheme).
//!
//! This crate is the facade: it re-exports the runtime (`pay402-runtime`) and the attribute
//! macros (`pay402-macros`). Depend on `pay402` only.
//!
//! ## Modules
//!
//! * [`x402`] — wire types, header encoding, prices and schemes, facilitator clients, and the
//!   [`x402::server::X402ResourceServer`] that builds 402 challenges and verifies and settles
//!   payments;
//! * [`okx`] — the OKX request signer and [`okx::OkxFacilitatorClient`];
//! * [`json`] — the JSON byte flavours used on the wire;
//! * [`literal`] — the literal validators shared with the macros (exact decimals, EIP-55,
//!   CAIP-2).
//!
//! ## Quick look
//!
//! ```
//! use pay402::x402::{ExactEvmScheme, SchemeNetworkServer, Network};
//!
//! let scheme = ExactEvmScheme::new();
//! let amount = scheme.parse_price(&"$0.001".into(), &Network::from("eip155:196")).unwrap();
//! assert_eq!(amount.amount, "1000"); // USD₮0 has 6 decimals
//! assert_eq!(amount.asset, "0x779ded0c9e1022225f8e0630b35a9b54be713736");
//! ```
#![cfg_attr(docsrs, feature(doc_cfg))]

pub use pay402_runtime::{evm, json, literal, metrics, mpp, okx, replay, router, web, x402};

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
    pub use pay402_runtime::x402::http::{MissingPayment, X402HttpServer, X402Payment};

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
    pub use pay402_runtime::x402::http::{MissingPayment, X402HttpServer, X402Payment};

    #[doc = include_str!("../docs/actix_pay.md")]
    pub use pay402_macros::pay_actix as pay;
    #[doc = include_str!("../docs/actix_x402.md")]
    pub use pay402_macros::x402_actix as x402;
}

#[doc(hidden)]
pub mod __private {
    //! Paths named by macro expansions. Not public API.
    pub use pay402_runtime::__private::*;
}
