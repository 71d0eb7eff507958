//! OKX's web3 payment APIs: the shared HMAC request signer, the x402 facilitator client and the
//! MPP Settlement-Agent client ([`sa`]).

pub mod auth;
pub mod facilitator;
pub mod sa;
mod transport;

pub use auth::{OkxCredentials, OkxSigner, TimestampFormat};
pub use facilitator::{OKX_X402_BASE_PATH, OkxFacilitatorClient, OkxFacilitatorConfig};
pub use sa::{OkxSaClient, OkxSaConfig, SaClient};
pub use transport::OKX_DEFAULT_BASE_URL;
