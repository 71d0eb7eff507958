//! The runtime of [pay402](https://docs.rs/pay402): everything the facade re-exports.
//!
//! * [`evm`] — EIP-712 / EIP-3009 typed data, signing and recovery;
//! * [`x402`] — the x402 protocol (types, headers, schemes, facilitator clients, resource server);
//! * [`mpp`] — the MPP protocol (challenges, credentials, the `charge` and `session` intents);
//! * [`okx`] — OKX's HMAC request signer and hosted facilitator client;
//! * [`web`] — framework-free request and response primitives, route keys;
//! * [`gate`] — the [`PaymentGate`](gate::PaymentGate) the framework glue is written over;
//! * [`router`] — one route, both protocols;
//! * `axum` / `actix` — the framework glue (features `axum`, `actix`);
//! * [`json`] — the JSON byte flavours the wire needs.
#![cfg_attr(docsrs, feature(doc_cfg))]

/// The `const fn` setters of a route the attribute macros build in a `static`
/// (`x402::StaticRoute`, `mpp::StaticPaySpec`): one per attribute key, named after its
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
pub mod setup;
pub mod transport;
pub mod web;
pub mod x402;

pub use pay402_core as literal;
/// The `reqwest` pay402's HTTP clients use (re-exported so callers name the same version).
pub use reqwest;

#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
pub mod axum;

#[cfg(feature = "actix")]
#[cfg_attr(docsrs, doc(cfg(feature = "actix")))]
pub mod actix;

#[doc(hidden)]
pub mod __private {
    //! Items named by the attribute macros' expansions (and the test-only revert switches of
    //! the adversarial suite). Not public API. The guard names stay as aliases of the one generic
    //! guard per framework, so expansions (and compile errors quoting them) stay stable.
    pub use crate::mpp::{Credential, Receipt, StaticPaySpec};
    pub use crate::reverts;
    pub use crate::router::{Paid, StaticRouterRoute};
    pub use crate::x402::{StaticRoute, X402Payment};

    /// The route of a handler carrying both `#[x402]` and `#[pay]` (the name the expansions use).
    pub type StaticDualRoute = StaticRouterRoute;

    /// The guard names of a framework's glue (its `Guard` and `Verified` in scope); axum's guards
    /// also take the router state `S` (`$($state)?`).
    #[cfg(any(feature = "axum", feature = "actix"))]
    macro_rules! guard_aliases {
        ($($state:ident)?) => {
            /// `#[x402]`'s guard.
            pub type X402Guard$(<$state>)? = Guard<X402HttpServer $(, $state)?>;
            /// `#[x402]`'s verified payment.
            pub type X402Verified = Verified<X402HttpServer>;
            /// `#[pay]`'s guard.
            pub type MppGuard$(<$state>)? = Guard<Mpp $(, $state)?>;
            /// `#[pay]`'s verified payment.
            pub type MppVerified = Verified<Mpp>;
            /// The guard of a handler carrying both `#[x402]` and `#[pay]`.
            pub type RouterGuard$(<$state>)? = Guard<PaymentRouter $(, $state)?>;
            /// The verified payment of a handler carrying both `#[x402]` and `#[pay]`.
            pub type RouterVerified = Verified<PaymentRouter>;
            /// [`RouterGuard`] (the name the expansions use).
            pub type DualGuard$(<$state>)? = RouterGuard$(<$state>)?;
            /// [`RouterVerified`] (the name the expansions use).
            pub type DualVerified = RouterVerified;
        };
    }

    /// axum glue.
    #[cfg(feature = "axum")]
    pub mod axum {
        pub use crate::axum::{
            Deferred, Guard, RouterState, Unreachable, UntiedGuard, Verified, ViaFromRef, extracted,
        };
        pub use crate::mpp::Mpp;
        pub use crate::router::PaymentRouter;
        pub use crate::x402::X402HttpServer;
        pub use ::axum::response::Response;
        guard_aliases!(S);
    }

    /// actix-web glue.
    #[cfg(feature = "actix")]
    pub mod actix {
        pub use crate::actix::{Deferred, Guard, Response, Verified, extracted};
        use crate::mpp::Mpp;
        use crate::router::PaymentRouter;
        use crate::x402::X402HttpServer;
        guard_aliases!();
    }
}
