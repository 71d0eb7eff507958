//! The runtime of [pay402](https://docs.rs/pay402): everything the facade re-exports.
//!
//! * [`evm`] — EIP-712 / EIP-3009 typed data, signing and recovery;
//! * [`x402`] — the x402 protocol (types, headers, schemes, facilitator clients, resource server);
//! * [`okx`] — OKX's HMAC request signer and hosted facilitator client;
//! * [`json`] — the JSON byte flavours the wire needs.
#![cfg_attr(docsrs, feature(doc_cfg))]

/// The `const fn` setters of a route the attribute macros build in a `static`
/// (`x402::http::StaticRoute`, `mpp::StaticPaySpec`): one per attribute key, named after its
/// field, `#[must_use]`. `name: Option<T>` sets the field to `Some(value)`, `name: T` to `value`.
/// Defined before the modules so that both protocols' static routes use it without importing
/// each other.
macro_rules! const_setters {
    () => {};
    ($(#[$doc:meta])* $name:ident: Option<$ty:ty>, $($rest:tt)*) => {
        $(#[$doc])*
        #[must_use]
        pub const fn $name(mut self, $name: $ty) -> Self {
            self.$name = ::core::option::Option::Some($name);
            self
        }
        const_setters!($($rest)*);
    };
    ($(#[$doc:meta])* $name:ident: $ty:ty, $($rest:tt)*) => {
        $(#[$doc])*
        #[must_use]
        pub const fn $name(mut self, $name: $ty) -> Self {
            self.$name = $name;
            self
        }
        const_setters!($($rest)*);
    };
}

#[cfg(feature = "client")]
#[cfg_attr(docsrs, doc(cfg(feature = "client")))]
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
