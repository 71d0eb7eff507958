//! The x402 protocol: wire types, headers, money and schemes, facilitator clients and the
//! resource server.

#[cfg(feature = "client")]
#[cfg_attr(docsrs, doc(cfg(feature = "client")))]
pub mod client;
pub mod embedded;
pub mod facilitator;
#[cfg(feature = "chain")]
pub mod facilitator_evm;
pub mod headers;
pub mod http;
pub mod paywall;
pub mod scheme;
pub mod server;
pub mod types;
mod unpaid_cache;

pub use embedded::EmbeddedFacilitator;
pub use facilitator::{FacilitatorClient, FacilitatorError, HttpFacilitatorClient, HttpFacilitatorConfig};
#[cfg(feature = "chain")]
pub use facilitator_evm::{ExactEvmFacilitatorScheme, SchemeNetworkFacilitator, X402Facilitator};
pub use headers::*;
pub use scheme::{AggrDeferredEvmScheme, ExactEvmScheme, MoneyParser, PriceError, SchemeNetworkServer};
pub use server::{
    AbortResult, RequirementsSpec, ServerError, SettleContext, SettleFailure, VerifyContext, VerifyFailure,
    X402ResourceServer,
};
pub use types::*;
