//! OKX's web3 payment APIs: the shared HMAC request signer and the x402 facilitator client.

pub mod auth;
pub mod facilitator;

pub use auth::{OkxCredentials, OkxSigner, TimestampFormat};
pub use facilitator::{OKX_DEFAULT_BASE_URL, OKX_X402_BASE_PATH, OkxFacilitatorClient, OkxFacilitatorConfig};
