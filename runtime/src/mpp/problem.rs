//! RFC 9457 problem details as MPP uses them (wire facts §8.7, §9.8), and the pympp error
//! family.
//!
//! Two renderings exist on the wire and both are reproduced:
//! * the 402 challenge body (pympp `make_challenge_response`): `application/problem+json`,
//!   Python default JSON spacing (`", "`, `": "`), keys `type, title, status, detail,
//!   challengeId`;
//! * errors raised by the EVM method (OKX's patched decorator): `application/json`, compact,
//!   keys `type, title, status, detail`.

use serde::Serialize;

/// Base of every MPP problem type URI.
pub const PROBLEM_BASE: &str = "https://paymentauth.org/problems/";

/// A problem details object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ProblemDetails {
    /// Type URI.
    #[serde(rename = "type")]
    pub type_uri: String,
    /// Short title.
    pub title: String,
    /// HTTP status.
    pub status: u16,
    /// Human-readable detail.
    pub detail: String,
    /// The challenge the problem relates to.
    #[serde(rename = "challengeId", skip_serializing_if = "Option::is_none")]
    pub challenge_id: Option<String>,
}

impl ProblemDetails {
    /// Bytes as pympp sends them (Python `json.dumps` defaults).
    pub fn to_python_json(&self) -> Vec<u8> {
        crate::json::python(self).unwrap_or_default()
    }

    /// Compact bytes (Starlette `JSONResponse`).
    pub fn to_compact_json(&self) -> Vec<u8> {
        crate::json::compact(self).unwrap_or_default()
    }
}

/// The pympp error family (`mpp.errors`), with their slugs, titles and statuses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MppErrorKind {
    /// 402, `payment-required`.
    PaymentRequired,
    /// 402, `malformed-credential`.
    MalformedCredential,
    /// 402, `invalid-challenge`.
    InvalidChallenge,
    /// 402, `verification-failed`.
    VerificationFailed,
    /// 402, `payment-expired`.
    PaymentExpired,
    /// 402, `invalid-payload`.
    InvalidPayload,
    /// 402, `payment-insufficient`.
    PaymentInsufficient,
    /// 402, `payment-action-required`.
    PaymentActionRequired,
    /// 400, `bad-request`.
    BadRequest,
    /// 400, `method-unsupported`.
    PaymentMethodUnsupported,
}

impl MppErrorKind {
    /// The type URI slug.
    pub fn slug(self) -> &'static str {
        match self {
            Self::PaymentRequired => "payment-required",
            Self::MalformedCredential => "malformed-credential",
            Self::InvalidChallenge => "invalid-challenge",
            Self::VerificationFailed => "verification-failed",
            Self::PaymentExpired => "payment-expired",
            Self::InvalidPayload => "invalid-payload",
            Self::PaymentInsufficient => "payment-insufficient",
            Self::PaymentActionRequired => "payment-action-required",
            Self::BadRequest => "bad-request",
            Self::PaymentMethodUnsupported => "method-unsupported",
        }
    }

    /// The title (class name without `Error`, words split).
    pub fn title(self) -> &'static str {
        match self {
            Self::PaymentRequired => "Payment Required",
            Self::MalformedCredential => "Malformed Credential",
            Self::InvalidChallenge => "Invalid Challenge",
            Self::VerificationFailed => "Verification Failed",
            Self::PaymentExpired => "Payment Expired",
            Self::InvalidPayload => "Invalid Payload",
            Self::PaymentInsufficient => "Payment Insufficient",
            Self::PaymentActionRequired => "Payment Action Required",
            Self::BadRequest => "Bad Request",
            Self::PaymentMethodUnsupported => "Method Unsupported",
        }
    }

    /// The HTTP status.
    pub fn status(self) -> u16 {
        match self {
            Self::BadRequest | Self::PaymentMethodUnsupported => 400,
            _ => 402,
        }
    }

    /// The type URI.
    pub fn type_uri(self) -> String {
        format!("{PROBLEM_BASE}{}", self.slug())
    }

    /// A problem of this kind.
    pub fn problem(self, detail: impl Into<String>, challenge_id: Option<String>) -> ProblemDetails {
        ProblemDetails {
            type_uri: self.type_uri(),
            title: self.title().to_owned(),
            status: self.status(),
            detail: detail.into(),
            challenge_id,
        }
    }
}

/// The `detail` of the 402 challenge: `Payment is required[ for "<realm>"][ (<description>)].`
pub fn payment_required_detail(realm: &str, description: Option<&str>) -> String {
    let mut s = String::from("Payment is required");
    if !realm.is_empty() {
        s.push_str(&format!(" for \"{realm}\""));
    }
    if let Some(d) = description.filter(|d| !d.is_empty()) {
        s.push_str(&format!(" ({d})"));
    }
    s.push('.');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenge_body_bytes() {
        let p = MppErrorKind::PaymentRequired.problem(
            payment_required_detail("api.example.com", None),
            Some("Nq9__nZ5IwYUW5g-ufO4EQNrj74QkopYc0nM4AuOAuM".into()),
        );
        assert_eq!(
            String::from_utf8(p.to_python_json()).unwrap(),
            r#"{"type": "https://paymentauth.org/problems/payment-required", "title": "Payment Required", "status": 402, "detail": "Payment is required for \"api.example.com\".", "challengeId": "Nq9__nZ5IwYUW5g-ufO4EQNrj74QkopYc0nM4AuOAuM"}"#
        );
        assert_eq!(payment_required_detail("r", Some("Metered API")), "Payment is required for \"r\" (Metered API).");
        assert_eq!(MppErrorKind::PaymentMethodUnsupported.status(), 400);
    }
}
