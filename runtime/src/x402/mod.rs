//! The x402 protocol: wire types, headers, money and schemes, facilitator clients and the
//! resource server.
//!
//! Every item has one path, here at `x402::…`; the real namespaces are [`paywall`] (the browser
//! page), [`reasons`] (the `exact` facilitators' reason strings), [`settle_status`] and, with
//! feature `chain`, `facilitator_evm` (the self-hosted on-chain facilitator).
//!
//! Where things are: `types.rs` (wire types), `headers.rs` (header codecs), `scheme.rs`
//! (seller schemes, prices), `facilitator.rs` (the [`FacilitatorClient`] trait and the HTTP
//! client), `exact.rs` (the `exact` verify checklist), `embedded.rs` (the in-process
//! facilitator), `server.rs` (the [`X402ResourceServer`]) with `hooks.rs` and `settlement.rs`,
//! `route.rs` (route configuration), `http.rs` (the [`X402HttpServer`]), `unpaid_cache.rs` (the
//! precomputed unpaid 402), `upto.rs` (the `upto` seller scheme and the handler's [`UptoCharge`]),
//! `client.rs` (the buyer), `aggr_client.rs` (the `aggr_deferred` buyer scheme), `permit2_client.rs`
//! (the `upto` buyer scheme and Permit2 `exact` signing) and `session_cert.rs` (pay402's
//! development session certificates).

#[cfg(feature = "client")]
mod aggr_client;
#[cfg(feature = "client")]
mod client;
mod embedded;
mod exact;
mod facilitator;
#[cfg(feature = "chain")]
pub mod facilitator_evm;
mod headers;
mod hooks;
mod http;
mod idempotency;
mod payment;
pub mod payment_identifier;
pub mod paywall;
mod pending;
#[cfg(feature = "client")]
mod permit2_client;
mod replay_key;
mod route;
mod scheme;
mod server;
mod session_cert;
mod settlement;
mod types;
mod unpaid_cache;
mod upto;

#[cfg(feature = "client")]
#[cfg_attr(docsrs, doc(cfg(feature = "client")))]
pub use aggr_client::{AGGR_DEFERRED_VALID_AFTER_SKEW_SECONDS, AggrDeferredEvmClientScheme, DEV_SESSION_CERT_LIFETIME};
#[cfg(feature = "client")]
#[cfg_attr(docsrs, doc(cfg(feature = "client")))]
pub use client::{
    ClientError, ExactEvmClientScheme, PaymentSelector, PickFn, SchemeNetworkClient, SchemePayment, X402Client,
    default_payment_selector, max_amount, merge_extensions, prefer_network, prefer_scheme,
};
pub use embedded::{DEFAULT_DEFERRED_BATCH_AGE, DEFAULT_DEFERRED_BATCH_SIZE, DeferredBatch, EmbeddedFacilitator};
pub use embedded::{EMBEDDED_FACILITATOR_ADDRESS, permit2_reasons};
pub use exact::{DEFAULT_CLOCK_SKEW, VALID_BEFORE_BUFFER_SECONDS, reasons};
pub use facilitator::{FacilitatorClient, FacilitatorError, HttpFacilitatorClient, HttpFacilitatorConfig};
pub(crate) use facilitator::{SettleRequest, VerifyRequest, parse_facilitator_body};
pub use headers::{
    ACCESS_CONTROL_EXPOSE_HEADERS, EXPOSED_HEADERS, HTTP_STATUS_PAYMENT_REQUIRED, HeaderError, MAX_HEADER_BYTES,
    MAX_JSON_DEPTH, PAYMENT_REQUIRED_HEADER, PAYMENT_RESPONSE_HEADER, PAYMENT_SIGNATURE_HEADER, X_PAYMENT_HEADER,
    X_PAYMENT_RESPONSE_HEADER, carries_payment, decode_payment_required_header, decode_payment_response_header,
    decode_payment_signature_header, detect_payment_required_version, encode_payment_required_header,
    encode_payment_required_header_v1, encode_payment_response_header, encode_payment_signature_header,
    encode_x_payment_header, payment_header, safe_base64_decode, safe_base64_encode,
};
pub use hooks::{AbortResult, SettleContext, SettleFailure, VerifyContext, VerifyFailure};
pub use http::{
    INVALID_PAYLOAD_REASON, NO_MATCHING_REQUIREMENTS_ERROR, PAYMENT_CONFIGURATION_ERROR, PAYMENT_REQUIRED_ERROR,
    PAYMENT_UNAVAILABLE_ERROR, REPLAYED_PAYMENT_REASON, X402HttpServer,
};
pub use idempotency::{PAYMENT_ID_CONFLICT_ERROR, PAYMENT_ID_INVALID_ERROR, PAYMENT_ID_REQUIRED_ERROR};
pub use payment::X402Payment;
pub use pending::{
    DEFAULT_RECORD_RETENTION, DEFAULT_RETRY_AFTER, SETTLEMENT_PENDING_ERROR, SettlementRecord, SweepReport,
};
#[cfg(feature = "client")]
#[cfg_attr(docsrs, doc(cfg(feature = "client")))]
pub use permit2_client::UptoEvmClientScheme;
pub use replay_key::REPLAY_SKEW_SECONDS;
pub use route::{
    DynamicPayTo, DynamicPrice, DynamicRouteError, PayToSource, PaymentOption, PriceSource, RetryDelivery, RouteConfig,
    SettleFailedBodyFn, StaticRoute, UnpaidBodyFn,
};
pub use scheme::{
    ASSET_TRANSFER_METHOD_EXTRA, AggrDeferredEvmScheme, ExactEvmScheme, MoneyParser, PriceError, SchemeNetworkServer,
};
pub use server::{
    DEFAULT_HOOK_TIMEOUT, DEFAULT_MAX_TIMEOUT_SECONDS, DEFAULT_POLL_DEADLINE, DEFAULT_POLL_INTERVAL, Initialized,
    RequirementsSpec, ResourceServerError, X402ResourceServer,
};
pub use session_cert::{DEV_SESSION_CERT_VERSION, DevSessionCert, SessionCertError};
pub use settlement::Reconciled;
pub use types::{
    AnyPaymentPayload, AnyPaymentRequired, AssetAmount, JsonObject, Money, PaymentPayload, PaymentPayloadV1,
    PaymentRequired, PaymentRequiredV1, PaymentRequirements, PaymentRequirementsV1, Price, ResourceInfo,
    SettleResponse, SettleStatusResponse, SupportedKind, SupportedResponse, SupportedResponseV1, VerifyResponse,
    X402_VERSION, parse_atomic, settle_status,
};
pub use upto::{
    FACILITATOR_ADDRESS_EXTRA, SETTLED_AMOUNT_MISMATCH, UPTO_SCHEME, UptoCharge, UptoChargeError, UptoEvmScheme,
};
