//! OKX's Settlement Agent (SA) for MPP: the API the `evm` payment method calls to settle
//! charges and to open, top up, settle, close and query payment-channel sessions
//! (wire facts §9.7, §9.8).
//!
//! * [`SaClient`] — the seven operations, as a trait (swap in a fake for tests);
//! * [`OkxSaClient`] / [`OkxSaConfig`] — the HMAC-authenticated HTTP client;
//! * the request bodies and receipts ([`ChargeSettleRequest`], [`SessionReceipt`], …), byte-compatible with OKX's Python SDK;
//! * [`EvmPaymentError`] / [`map_sa_error`] — the `mpp_evm` error classes and the SA code
//!   table; [`SaError`] — why an SA call failed; [`classify_sa_code`] — whose failure a code
//!   is (buyer, server, or an unknown outcome where money may have moved).
//!
//! ```
//! use pay402_runtime::okx::sa::{EvmPaymentError, map_sa_error};
//!
//! let e = map_sa_error(70010, "channel not found");
//! assert!(matches!(e, EvmPaymentError::ChannelNotFound(_)));
//! assert_eq!(e.status(), 410);
//! ```

mod client;
mod errors;
mod types;

pub use client::{OKX_MPP_BASE_PATH, OkxSaClient, OkxSaConfig, SaClient};
pub use errors::{EvmPaymentError, SaError, SaFailureClass, SaOperation, classify_sa_code, map_sa_error};
pub use types::{
    ChargeAuthorization, ChargeHashPayload, ChargeReceipt, ChargeSettleRequest, ChargeTransactionPayload,
    ChargeVerifyHashRequest, EIP3009_AUTHORIZATION_TYPE, SaChallengeEcho, SessionClosePayload, SessionCloseRequest,
    SessionOpenPayload, SessionOpenRequest, SessionReceipt, SessionSettlePayload, SessionSettleRequest, SessionStatus,
    SessionTopUpPayload, SessionTopUpRequest, TRANSACTION_PAYLOAD_TYPE, TransferAuthorization,
};
