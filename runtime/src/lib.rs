//! The runtime of [pay402](https://docs.rs/pay402): everything the facade re-exports.
//!
//! * [`evm`] — EIP-712 / EIP-3009 typed data, signing and recovery;
//! * [`x402`] — the x402 protocol (types, headers, schemes, facilitator clients, resource server);
//! * [`okx`] — OKX's HMAC request signer and hosted facilitator client;
//! * [`json`] — the JSON byte flavours the wire needs.
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod autopay;
pub mod chain;
pub mod completion;
pub mod evm;
pub mod gate;
pub mod json;
pub mod metrics;
pub mod mpp;
pub mod okx;
pub mod replay;
#[doc(hidden)]
pub mod reverts;
pub mod router;
pub mod transport;
pub mod web;
pub mod x402;

pub use pay402_core as literal;

#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
pub mod axum;

#[cfg(feature = "actix")]
#[cfg_attr(docsrs, doc(cfg(feature = "actix")))]
pub mod actix;

#[doc(hidden)]
pub mod __private {
    //! Items named by the attribute macros' expansions (and the test-only revert switches of
    //! the adversarial suite). Not public API.
    pub use crate::mpp::{Credential, Receipt, StaticPaySpec};
    pub use crate::reverts;
    pub use crate::router::{Paid, StaticDualRoute};
    pub use crate::x402::{StaticRoute, X402Payment};

    /// axum glue.
    #[cfg(feature = "axum")]
    pub mod axum {
        pub use crate::axum::{DualGuard, DualVerified, MppGuard, MppVerified, X402Guard, X402Verified};
        pub use ::axum::response::Response;
    }

    /// actix-web glue.
    #[cfg(feature = "actix")]
    pub mod actix {
        pub use crate::actix::{DualGuard, DualVerified, MppGuard, MppVerified, Response, X402Guard, X402Verified};
    }
}
