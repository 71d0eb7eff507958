//! MPP — the `Payment` HTTP authentication scheme (wire facts §8): challenges and their
//! HMAC-bound ids, `WWW-Authenticate` rendering and parsing, `Authorization: Payment`
//! credentials and server-side echo verification, `Payment-Receipt`, timestamps, and the pympp
//! error family as problem details.
//!
//! * [`Challenge`] — issue a challenge (`id` = HMAC over the canonical fields), render
//!   [`Challenge::to_www_authenticate`] and [`Challenge::problem_details`];
//! * [`parse_www_authenticate`] — read challenges on the client side ([`ParsedChallenge`]);
//! * [`Credential`] — the client's answer; [`verify_echo`] checks its challenge echo on the
//!   server;
//! * [`Receipt`] — the `Payment-Receipt` header;
//! * [`MppError`] — typed failures mapped onto [`MppErrorKind`] / [`ProblemDetails`];
//! * [`PaidStream`] — a `session` route priced per event ([`PaySpec::per_event`]) streams
//!   Server-Sent Events metered per event over the buyer's channel (the MPP SSE transport:
//!   `402-need-voucher`, companion vouchers, `payment-receipt`, `Last-Event-ID` resume).

mod challenge;
mod charge;
#[cfg(feature = "client")]
mod charge_client;
mod charge_request;
mod credential;
mod echo;
mod embedded_sa;
mod encoding;
mod error;
mod expiry;
mod header;
mod idempotency;
mod metering;
mod method;
mod payment;
pub mod paywall;
mod problem;
mod receipt;
mod route;
mod server;
mod session;
#[cfg(feature = "client")]
mod session_client;
mod store;
mod stream;
mod wire;
// buyer side of SSE streams
#[cfg(feature = "client")]
pub mod stream_client;

pub use challenge::Challenge;
pub use charge::{ChargeOptions, ChargeOutcome, Split};
#[cfg(feature = "client")]
#[cfg_attr(docsrs, doc(cfg(feature = "client")))]
pub use charge_client::{ChargeClientError, MppChargeClient};
pub use charge_request::{ChargeRequest, ChargeRequestError, ChargeSplit, DEFAULT_CHARGE_CHAIN_ID};
pub use credential::{
    Credential, DecodedEcho, MAX_CREDENTIAL_B64_BYTES, PayerDid, did_pkh, payer_from_did, verify_echo, verify_echo_at,
};
pub use echo::{ChallengeEcho, challenge_hmac_input, compute_challenge_id, opaque_b64};
pub use embedded_sa::EmbeddedSa;
pub use encoding::{b64url_decode, b64url_encode, canonical_json};
pub use error::{HeaderError, MppError};
pub use expiry::{DEFAULT_CHALLENGE_TTL, default_expires, parse_rfc3339, python_isoformat_z};
pub use header::{
    MAX_CHALLENGES_PER_HEADER, MAX_REQUEST_B64_BYTES, PAYMENT_SCHEME, ParsedChallenge, carries_credential,
    parse_www_authenticate,
};
pub use idempotency::{
    IDEMPOTENCY_CONFLICT_ERROR, IDEMPOTENCY_KEY_HEADER, IDEMPOTENCY_KEY_INVALID_ERROR, MAX_IDEMPOTENCY_KEY_LEN,
    MPP_RETRY_AFTER_SECONDS, PAYMENT_PENDING_ERROR,
};
pub use metering::{Books, EventMeter, MeterError, MeterStep, StreamConfig, StreamStart};
pub use method::{ChargeIntent, EvmMethod, PayError, PendingCharge, SessionGrant, SessionHandler};
pub use payment::{MPP_EXPOSED_HEADERS, MppPayment};
pub use problem::{MAX_DETAIL_CHARS, MppErrorKind, PROBLEM_BASE, ProblemDetails, payment_required_detail};
pub use receipt::{MAX_RECEIPT_B64_BYTES, PAYMENT_RECEIPT_HEADER, RECEIPT_STATUS_SUCCESS, Receipt};
pub use route::{Intent, PaySpec, Per, RouteTerms, STREAM_CHALLENGE_TTL, StaticPaySpec};
pub use server::{Granted, MIN_SECRET_BYTES, Mpp, MppConfigError, Rejection};
pub use session::{STATUS_CLOSED, STATUS_OPEN, SessionIntent, SessionResult};
#[cfg(feature = "client")]
#[cfg_attr(docsrs, doc(cfg(feature = "client")))]
pub use session_client::{SessionClient, SessionClientError};
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use store::RedisChannelStore;
pub use store::{
    CasOutcome, ChannelState, ChannelStateError, ChannelStore, DEFAULT_REMEMBERED_STATES, FileStore,
    InMemoryChannelStore, RetryPolicy, StoreError, StreamCounts, StreamRecord, UpdateCoordinator, UpdateError,
    UpdateOutcome, Versioned,
};
pub use stream::{
    EVENT_STREAM_CONTENT_TYPE, EventStream, NEED_VOUCHER_EVENT, PAYMENT_ERROR_EVENT, PAYMENT_RECEIPT_EVENT, PaidStream,
    SseEvent,
};
pub use wire::{CHARGE_INTENT, EVM_METHOD, MAX_SPLITS, SESSION_INTENT};
// buyer side of SSE streams
#[cfg(feature = "client")]
#[cfg_attr(docsrs, doc(cfg(feature = "client")))]
pub use stream_client::{
    DataEvent, NeedVoucher, SseMessage, SseParser, StreamBinding, StreamClientError, StreamFrame, StreamProblem,
    StreamReceipt, VoucherDecision, VoucherPosition, decide_need_voucher, voucher_step_limit,
};

/// `WWW-Authenticate`.
pub const WWW_AUTHENTICATE_HEADER: &str = "WWW-Authenticate";
/// `Authorization`.
pub const AUTHORIZATION_HEADER: &str = "Authorization";
