//! The `mpp_evm` error family (wire facts §9.8) and the errors of the SA client.
//!
//! [`EvmPaymentError`] is what a seller answers the client with (an RFC 9457 problem with the
//! class's status, rendered by the MPP side: `crate::mpp`'s problem module); [`SaError`] is why an SA call failed. Every failure that is not an SA
//! answer (HTTP status, timeout, transport, malformed body, configuration) is an
//! [`EvmPaymentError::InternalSA`] (500) towards the client, with a generic detail that does
//! not leak internals.
//!
//! Buyers never see upstream text: the SA's `msg` stays in [`SaError::Api`] (and the logs),
//! [`SaError::payment_error`] answers with the class alone, and the problem of an
//! [`EvmPaymentError::InternalSA`] always has the generic detail `InternalSAError`, whatever
//! message it carries (store, signer or SA details go to `tracing` only).
//!
//! [`classify_sa_code`] says whose failure an SA error code is — the buyer's, the server's, or
//! an unknown outcome where money may have moved.

use std::fmt;
use std::time::Duration;

/// An `mpp_evm` payment error: the class, its HTTP status and problem type, and a detail.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum EvmPaymentError {
    /// 402, `malformed-credential`.
    MalformedCredential(String),
    /// 402, `invalid-challenge`.
    InvalidChallenge(String),
    /// 402, `verification-failed`.
    VerificationFailed(String),
    /// 402, `payment-expired`.
    PaymentExpired(String),
    /// 402, `invalid-payload`.
    InvalidPayload(String),
    /// 400, `bad-request`.
    BadRequest(String),
    /// 400, `invalid-split`.
    InvalidSplit(String),
    /// 402, `session/insufficient-balance`.
    InsufficientBalance(String),
    /// 402, `session/invalid-signature`.
    InvalidSignature(String),
    /// 402, `session/signer-mismatch`.
    SignerMismatch(String),
    /// 402, `session/amount-exceeds-deposit`.
    AmountExceedsDeposit(String),
    /// 402, `session/delta-too-small`.
    DeltaTooSmall(String),
    /// 410, `session/channel-not-found`.
    ChannelNotFound(String),
    /// 410, `session/channel-finalized`.
    ChannelClosed(String),
    /// 500, `internal-error`.
    InternalSA(String),
}

impl EvmPaymentError {
    /// The detail message as given (may be empty; [`Self::problem`] then uses the title).
    pub fn message(&self) -> &str {
        match self {
            Self::MalformedCredential(m)
            | Self::InvalidChallenge(m)
            | Self::VerificationFailed(m)
            | Self::PaymentExpired(m)
            | Self::InvalidPayload(m)
            | Self::BadRequest(m)
            | Self::InvalidSplit(m)
            | Self::InsufficientBalance(m)
            | Self::InvalidSignature(m)
            | Self::SignerMismatch(m)
            | Self::AmountExceedsDeposit(m)
            | Self::DeltaTooSmall(m)
            | Self::ChannelNotFound(m)
            | Self::ChannelClosed(m)
            | Self::InternalSA(m) => m,
        }
    }

    /// The problem `detail`: the message, or the title when the message is empty.
    pub fn detail(&self) -> &str {
        let m = self.message();
        if m.is_empty() { self.title() } else { m }
    }

    /// The HTTP status.
    pub fn status(&self) -> u16 {
        match self {
            Self::BadRequest(_) | Self::InvalidSplit(_) => 400,
            Self::ChannelNotFound(_) | Self::ChannelClosed(_) => 410,
            Self::InternalSA(_) => 500,
            _ => 402,
        }
    }

    /// The problem type suffix after [`PROBLEM_BASE`](crate::mpp::PROBLEM_BASE) (e.g. `session/channel-not-found`).
    pub fn slug(&self) -> &'static str {
        match self {
            Self::MalformedCredential(_) => "malformed-credential",
            Self::InvalidChallenge(_) => "invalid-challenge",
            Self::VerificationFailed(_) => "verification-failed",
            Self::PaymentExpired(_) => "payment-expired",
            Self::InvalidPayload(_) => "invalid-payload",
            Self::BadRequest(_) => "bad-request",
            Self::InvalidSplit(_) => "invalid-split",
            Self::InsufficientBalance(_) => "session/insufficient-balance",
            Self::InvalidSignature(_) => "session/invalid-signature",
            Self::SignerMismatch(_) => "session/signer-mismatch",
            Self::AmountExceedsDeposit(_) => "session/amount-exceeds-deposit",
            Self::DeltaTooSmall(_) => "session/delta-too-small",
            Self::ChannelNotFound(_) => "session/channel-not-found",
            Self::ChannelClosed(_) => "session/channel-finalized",
            Self::InternalSA(_) => "internal-error",
        }
    }

    /// The problem title: the Python class name (e.g. `ChannelNotFoundError`).
    pub fn title(&self) -> &'static str {
        match self {
            Self::MalformedCredential(_) => "MalformedCredentialError",
            Self::InvalidChallenge(_) => "InvalidChallengeError",
            Self::VerificationFailed(_) => "VerificationFailedError",
            Self::PaymentExpired(_) => "PaymentExpiredError",
            Self::InvalidPayload(_) => "InvalidPayloadError",
            Self::BadRequest(_) => "BadRequestError",
            Self::InvalidSplit(_) => "InvalidSplitError",
            Self::InsufficientBalance(_) => "InsufficientBalanceError",
            Self::InvalidSignature(_) => "InvalidSignatureError",
            Self::SignerMismatch(_) => "SignerMismatchError",
            Self::AmountExceedsDeposit(_) => "AmountExceedsDepositError",
            Self::DeltaTooSmall(_) => "DeltaTooSmallError",
            Self::ChannelNotFound(_) => "ChannelNotFoundError",
            Self::ChannelClosed(_) => "ChannelClosedError",
            Self::InternalSA(_) => "InternalSAError",
        }
    }

    /// The same class with an empty message (its detail is then the title): what a buyer may
    /// see of an error whose message came from upstream.
    pub fn generic(&self) -> Self {
        let m = String::new();
        match self {
            Self::MalformedCredential(_) => Self::MalformedCredential(m),
            Self::InvalidChallenge(_) => Self::InvalidChallenge(m),
            Self::VerificationFailed(_) => Self::VerificationFailed(m),
            Self::PaymentExpired(_) => Self::PaymentExpired(m),
            Self::InvalidPayload(_) => Self::InvalidPayload(m),
            Self::BadRequest(_) => Self::BadRequest(m),
            Self::InvalidSplit(_) => Self::InvalidSplit(m),
            Self::InsufficientBalance(_) => Self::InsufficientBalance(m),
            Self::InvalidSignature(_) => Self::InvalidSignature(m),
            Self::SignerMismatch(_) => Self::SignerMismatch(m),
            Self::AmountExceedsDeposit(_) => Self::AmountExceedsDeposit(m),
            Self::DeltaTooSmall(_) => Self::DeltaTooSmall(m),
            Self::ChannelNotFound(_) => Self::ChannelNotFound(m),
            Self::ChannelClosed(_) => Self::ChannelClosed(m),
            Self::InternalSA(_) => Self::InternalSA(m),
        }
    }
}

impl fmt::Display for EvmPaymentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.title(), self.detail())
    }
}

impl std::error::Error for EvmPaymentError {}

/// Maps an SA error `code` to its error class (`mpp_evm.errors.map_sa_error`), with `msg` as
/// the detail. Unknown codes are [`EvmPaymentError::InternalSA`].
pub fn map_sa_error(code: i64, msg: &str) -> EvmPaymentError {
    let m = msg.to_owned();
    match code {
        70000 => EvmPaymentError::BadRequest(m),
        70002 | 70003 => EvmPaymentError::MalformedCredential(m),
        70004 => EvmPaymentError::InvalidSignature(m),
        70005 | 70006 => EvmPaymentError::InvalidSplit(m),
        70008 | 70014 => EvmPaymentError::ChannelClosed(m),
        70009 => EvmPaymentError::InvalidChallenge(m),
        70010 => EvmPaymentError::ChannelNotFound(m),
        70012 => EvmPaymentError::AmountExceedsDeposit(m),
        70013 => EvmPaymentError::DeltaTooSmall(m),
        // 70001 chain unsupported, 70007 tx not confirmed, 70011 grace period too short,
        // 8000 API internal error, and anything unknown.
        _ => EvmPaymentError::InternalSA(m),
    }
}

/// An SA operation, as far as [`classify_sa_code`] needs to know it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SaOperation {
    /// `charge/settle`: the SA broadcasts the buyer's EIP-3009 transfer.
    ChargeSettle,
    /// `charge/verifyHash`: the SA looks up a transfer the buyer broadcast.
    ChargeVerifyHash,
    /// `session/open`: the SA may broadcast the deposit.
    SessionOpen,
    /// `session/topUp`: the SA may broadcast the additional deposit.
    SessionTopUp,
    /// `session/settle`: the SA broadcasts the merchant's settlement.
    SessionSettle,
    /// `session/close`: the SA broadcasts the close.
    SessionClose,
    /// `session/status`: a read-only query.
    SessionStatus,
}

impl SaOperation {
    /// Whether the SA may move money during this operation (it broadcasts a transaction).
    pub fn may_move_money(self) -> bool {
        !matches!(self, Self::ChargeVerifyHash | Self::SessionStatus)
    }
}

/// Whose failure an SA error code is ([`classify_sa_code`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SaFailureClass {
    /// The buyer's credential or payment is at fault: a definite refusal, nothing was charged;
    /// the buyer gets the mapped class (402 with a fresh challenge, or 400/410) and may retry.
    Buyer,
    /// The seller's configuration or the SA is at fault and nothing was charged: 500.
    Server,
    /// The SA failed during an operation that may have moved money: 500, the outcome must be
    /// reconciled (`Mpp::on_settlement_unknown`) and the challenge stays consumed.
    UnknownOutcome,
}

/// Classifies an SA error `code` answered to `op`:
///
/// | code | meaning | class |
/// |---|---|---|
/// | 70000 | bad parameter | buyer (400) |
/// | 70001 | chain unsupported | server (500) |
/// | 70002, 70003 | payer blacklisted, malformed credential | buyer (402) |
/// | 70004 | invalid signature | buyer (402) |
/// | 70005, 70006 | invalid splits | buyer (400) |
/// | 70007 | transaction not confirmed | `verifyHash`/`status`: buyer (402 `verification-failed`); operations that broadcast: unknown outcome |
/// | 70008, 70014 | channel closed / closing | buyer (410) |
/// | 70009 | invalid challenge | buyer (402) |
/// | 70010 | channel not found | buyer (410) |
/// | 70011 | grace period too short | server (500) |
/// | 70012, 70013 | amount exceeds deposit, delta too small | buyer (402) |
/// | 8000 and any other code | SA internal error | unknown outcome when `op` may move money, else server (500) |
pub fn classify_sa_code(code: i64, op: SaOperation) -> SaFailureClass {
    match code {
        70000 | 70002..=70006 | 70008..=70010 | 70012..=70014 => SaFailureClass::Buyer,
        70001 | 70011 => SaFailureClass::Server,
        70007 if !op.may_move_money() => SaFailureClass::Buyer,
        _ if op.may_move_money() => SaFailureClass::UnknownOutcome,
        _ => SaFailureClass::Server,
    }
}

/// Why an SA call failed. Only [`SaError::Api`] is an answer of the SA; every other variant
/// means the outcome is unknown and the caller must fail closed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SaError {
    /// The SA answered with an envelope whose `code` is not 0.
    #[error("SA error code {code}: {error}")]
    Api {
        /// The SA code.
        code: i64,
        /// The mapped error, `msg` as its detail.
        error: EvmPaymentError,
    },
    /// The SA answered with an HTTP status other than 200.
    #[error("SA answered HTTP {status}: {body}")]
    Http {
        /// HTTP status.
        status: u16,
        /// Body text (truncated to 512 bytes).
        body: String,
    },
    /// No answer within the configured timeout.
    #[error("SA did not answer within {0:?}")]
    Timeout(Duration),
    /// Connection-level failure (refused, reset, TLS, DNS).
    #[error("cannot reach the SA: {0}")]
    Transport(String),
    /// The answer is not a valid envelope or the data does not fit the receipt. This includes
    /// a `code` that is a non-numeric string, which OKX's Python client treats as success
    /// (wire facts §12.5); pay402 fails closed instead.
    #[error("SA sent a malformed response: {0}")]
    Malformed(String),
    /// Bad client configuration (missing credential, bad URL, unserialisable request).
    #[error("SA client misconfigured: {0}")]
    Config(String),
}

impl From<crate::transport::TransportError> for SaError {
    fn from(e: crate::transport::TransportError) -> Self {
        use crate::transport::TransportError;
        match e {
            TransportError::Timeout(d) => Self::Timeout(d),
            TransportError::Unreachable(m) => Self::Transport(m),
            TransportError::Config(m) => Self::Config(m),
            other => Self::Malformed(other.to_string()),
        }
    }
}

impl SaError {
    /// The error to answer the paying client with: the mapped class for [`SaError::Api`]
    /// without the SA's `msg` ([`EvmPaymentError::generic`]: upstream text never reaches
    /// buyers), otherwise [`EvmPaymentError::InternalSA`] with a generic detail.
    pub fn payment_error(&self) -> EvmPaymentError {
        let generic = match self {
            Self::Api { error, .. } => return error.generic(),
            Self::Http { status, .. } => format!("SA API answered HTTP {status}"),
            Self::Timeout(_) => "SA API timed out".to_owned(),
            Self::Transport(_) => "SA API unreachable".to_owned(),
            Self::Malformed(_) => "SA API sent a malformed response".to_owned(),
            Self::Config(_) => "SA client misconfigured".to_owned(),
        };
        EvmPaymentError::InternalSA(generic)
    }

    /// The HTTP status of [`Self::payment_error`].
    pub fn status(&self) -> u16 {
        match self {
            Self::Api { error, .. } => error.status(),
            _ => 500,
        }
    }
}

impl From<SaError> for EvmPaymentError {
    /// [`SaError::payment_error`].
    fn from(e: SaError) -> Self {
        e.payment_error()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_table() {
        let cases: &[(i64, &str, u16)] = &[
            (70000, "BadRequestError", 400),
            (70001, "InternalSAError", 500),
            (70002, "MalformedCredentialError", 402),
            (70003, "MalformedCredentialError", 402),
            (70004, "InvalidSignatureError", 402),
            (70005, "InvalidSplitError", 400),
            (70006, "InvalidSplitError", 400),
            (70007, "InternalSAError", 500),
            (70008, "ChannelClosedError", 410),
            (70009, "InvalidChallengeError", 402),
            (70010, "ChannelNotFoundError", 410),
            (70011, "InternalSAError", 500),
            (70012, "AmountExceedsDepositError", 402),
            (70013, "DeltaTooSmallError", 402),
            (70014, "ChannelClosedError", 410),
            (8000, "InternalSAError", 500),
            (1, "InternalSAError", 500),
        ];
        for &(code, title, status) in cases {
            let e = map_sa_error(code, "m");
            assert_eq!((e.title(), e.status(), e.message()), (title, status, "m"), "code {code}");
        }
    }

    #[test]
    fn non_api_errors_are_internal() {
        let e = SaError::Transport("connect 10.0.0.1: refused".into());
        assert_eq!(e.status(), 500);
        let p = e.payment_error();
        assert!(matches!(p, EvmPaymentError::InternalSA(ref m) if !m.contains("10.0.0.1")));
        let api = SaError::Api { code: 70013, error: map_sa_error(70013, "small") };
        assert_eq!(api.status(), 402);
        assert_eq!(EvmPaymentError::from(api), EvmPaymentError::DeltaTooSmall(String::new()));
    }

    #[test]
    fn every_code_has_a_class() {
        use SaFailureClass::{Buyer, Server, UnknownOutcome};
        // (code, class on charge/settle, class on charge/verifyHash)
        let table: &[(i64, SaFailureClass, SaFailureClass)] = &[
            (70000, Buyer, Buyer),
            (70001, Server, Server),
            (70002, Buyer, Buyer),
            (70003, Buyer, Buyer),
            (70004, Buyer, Buyer),
            (70005, Buyer, Buyer),
            (70006, Buyer, Buyer),
            (70007, UnknownOutcome, Buyer),
            (70008, Buyer, Buyer),
            (70009, Buyer, Buyer),
            (70010, Buyer, Buyer),
            (70011, Server, Server),
            (70012, Buyer, Buyer),
            (70013, Buyer, Buyer),
            (70014, Buyer, Buyer),
            (8000, UnknownOutcome, Server),
            (1, UnknownOutcome, Server),
            (-1, UnknownOutcome, Server),
        ];
        for &(code, settle, verify) in table {
            assert_eq!(classify_sa_code(code, SaOperation::ChargeSettle), settle, "settle {code}");
            assert_eq!(classify_sa_code(code, SaOperation::ChargeVerifyHash), verify, "verifyHash {code}");
            assert_eq!(classify_sa_code(code, SaOperation::SessionStatus), verify, "status {code}");
            assert_eq!(classify_sa_code(code, SaOperation::SessionOpen), settle, "open {code}");
        }
    }
}
