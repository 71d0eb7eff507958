//! OKX's web3 payment APIs: the shared HMAC request signer, the x402 facilitator client and the
//! MPP Settlement-Agent client ([`sa`], a namespace of its own).

mod auth;
mod facilitator;
pub mod sa;
mod transport;

pub use auth::{
    Clock, OK_ACCESS_KEY, OK_ACCESS_PASSPHRASE, OK_ACCESS_SIGN, OK_ACCESS_TIMESTAMP, OkxCredentials, OkxSigner,
    TimestampFormat, sign,
};
pub use facilitator::{OKX_X402_BASE_PATH, OkxFacilitatorClient, OkxFacilitatorConfig};
pub use transport::OKX_DEFAULT_BASE_URL;
