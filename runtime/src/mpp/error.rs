//! Typed MPP errors, each mapped onto the pympp error family ([`MppErrorKind`]) so a server can
//! answer with the right problem details.

use super::problem::{MppErrorKind, ProblemDetails};

/// Why an MPP header (`WWW-Authenticate: Payment`, `Authorization: Payment`,
/// `Payment-Receipt`) could not be parsed or produced.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HeaderError {
    /// No `Payment` scheme in the header.
    #[error("no Payment scheme in the header")]
    NoPaymentScheme,
    /// The encoded value is larger than allowed.
    #[error("{what} is {len} bytes, more than the {max}-byte limit")]
    TooLarge {
        /// What was too large.
        what: &'static str,
        /// Its encoded length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Not base64url.
    #[error("{what} is not valid base64url")]
    Base64 {
        /// What was being decoded.
        what: &'static str,
    },
    /// Not JSON (or not UTF-8).
    #[error("{what} is not valid JSON: {reason}")]
    Json {
        /// What was being decoded.
        what: &'static str,
        /// The parser's message.
        reason: String,
    },
    /// A required field or parameter is missing.
    #[error("missing required field `{0}`")]
    MissingField(String),
    /// A field has the wrong JSON type.
    #[error("field `{field}` must be {expected}")]
    WrongType {
        /// The field.
        field: String,
        /// The expected type.
        expected: &'static str,
    },
    /// An auth-param appears twice in one challenge.
    #[error("duplicate parameter `{0}` in a Payment challenge")]
    DuplicateParam(String),
    /// More `Payment` challenges in one header value than parsed.
    #[error("more than {max} Payment challenges in one header")]
    TooManyChallenges {
        /// The limit.
        max: usize,
    },
    /// The header does not follow the auth-scheme / auth-param grammar.
    #[error("malformed header at byte {at}: {reason}")]
    Syntax {
        /// Byte offset of the problem.
        at: usize,
        /// What was wrong.
        reason: &'static str,
    },
    /// A value cannot be written into a header (it contains CR or LF).
    #[error("parameter `{0}` contains CR or LF")]
    InvalidParamValue(String),
}

impl HeaderError {
    /// The pympp kind: [`MppErrorKind::PaymentRequired`] when there is no credential at all,
    /// [`MppErrorKind::BadRequest`] for a value that cannot be serialised, otherwise
    /// [`MppErrorKind::MalformedCredential`].
    pub fn kind(&self) -> MppErrorKind {
        match self {
            Self::NoPaymentScheme => MppErrorKind::PaymentRequired,
            Self::InvalidParamValue(_) => MppErrorKind::BadRequest,
            _ => MppErrorKind::MalformedCredential,
        }
    }
}

/// An MPP failure, carrying its [`MppErrorKind`], a detail text and the challenge id when
/// known.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MppError {
    /// A header could not be parsed or produced (kind from [`HeaderError::kind`]).
    #[error(transparent)]
    Header(#[from] HeaderError),
    /// The echoed challenge was not issued by this server for this route
    /// ([`MppErrorKind::InvalidChallenge`]).
    #[error("invalid challenge: {detail}")]
    InvalidChallenge {
        /// What did not match.
        detail: String,
        /// The echoed challenge id.
        challenge_id: Option<String>,
    },
    /// The echoed challenge has expired ([`MppErrorKind::PaymentExpired`]).
    #[error("payment expired: {detail}")]
    PaymentExpired {
        /// When it expired.
        detail: String,
        /// The echoed challenge id.
        challenge_id: Option<String>,
    },
    /// Any other pympp error.
    #[error("{}: {detail}", kind.title())]
    Problem {
        /// The kind.
        kind: MppErrorKind,
        /// Human-readable detail.
        detail: String,
        /// The challenge id, when known.
        challenge_id: Option<String>,
    },
}

impl MppError {
    /// An error of any kind.
    pub fn new(kind: MppErrorKind, detail: impl Into<String>) -> Self {
        match kind {
            MppErrorKind::InvalidChallenge => Self::InvalidChallenge { detail: detail.into(), challenge_id: None },
            MppErrorKind::PaymentExpired => Self::PaymentExpired { detail: detail.into(), challenge_id: None },
            kind => Self::Problem { kind, detail: detail.into(), challenge_id: None },
        }
    }

    /// Attaches the challenge id (no effect on [`MppError::Header`]).
    pub fn with_challenge_id(mut self, id: impl Into<String>) -> Self {
        match &mut self {
            Self::Header(_) => {}
            Self::InvalidChallenge { challenge_id, .. }
            | Self::PaymentExpired { challenge_id, .. }
            | Self::Problem { challenge_id, .. } => *challenge_id = Some(id.into()),
        }
        self
    }

    /// The pympp error kind.
    pub fn kind(&self) -> MppErrorKind {
        match self {
            Self::Header(e) => e.kind(),
            Self::InvalidChallenge { .. } => MppErrorKind::InvalidChallenge,
            Self::PaymentExpired { .. } => MppErrorKind::PaymentExpired,
            Self::Problem { kind, .. } => *kind,
        }
    }

    /// The detail text.
    pub fn detail(&self) -> String {
        match self {
            Self::Header(e) => e.to_string(),
            Self::InvalidChallenge { detail, .. }
            | Self::PaymentExpired { detail, .. }
            | Self::Problem { detail, .. } => detail.clone(),
        }
    }

    /// The challenge id, when known.
    pub fn challenge_id(&self) -> Option<&str> {
        match self {
            Self::Header(_) => None,
            Self::InvalidChallenge { challenge_id, .. }
            | Self::PaymentExpired { challenge_id, .. }
            | Self::Problem { challenge_id, .. } => challenge_id.as_deref(),
        }
    }

    /// The HTTP status of [`MppError::kind`].
    pub fn status(&self) -> u16 {
        self.kind().status()
    }

    /// The problem details body.
    pub fn problem(&self) -> ProblemDetails {
        self.kind().problem(self.detail(), self.challenge_id().map(str::to_owned))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_problem() {
        let e = MppError::from(HeaderError::Base64 { what: "credential" });
        assert_eq!(e.kind(), MppErrorKind::MalformedCredential);
        assert_eq!(e.status(), 402);
        assert_eq!(e.problem().type_uri, "https://paymentauth.org/problems/malformed-credential");
        assert_eq!(MppError::from(HeaderError::NoPaymentScheme).kind(), MppErrorKind::PaymentRequired);

        let e = MppError::new(MppErrorKind::PaymentExpired, "expired at x").with_challenge_id("abc");
        assert!(matches!(e, MppError::PaymentExpired { .. }));
        let p = e.problem();
        assert_eq!((p.title.as_str(), p.status, p.challenge_id.as_deref()), ("Payment Expired", 402, Some("abc")));
        assert_eq!(MppError::new(MppErrorKind::BadRequest, "x").status(), 400);
        assert_eq!(MppError::new(MppErrorKind::InvalidPayload, "bad").to_string(), "Invalid Payload: bad");
    }
}
