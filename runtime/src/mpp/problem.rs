//! RFC 9457 problem details as MPP uses them (wire facts §8.7, §9.8), and the pympp error
//! family.
//!
//! Two renderings exist on the wire and both are reproduced:
//! * the 402 challenge body (pympp `make_challenge_response`): `application/problem+json`,
//!   Python default JSON spacing (`", "`, `": "`), keys `type, title, status, detail,
//!   challengeId`;
//! * errors raised by the EVM method (OKX's patched decorator): `application/json`, compact,
//!   keys `type, title, status, detail`.

use crate::okx::sa::EvmPaymentError;
use serde::Serialize;

/// Base of every MPP problem type URI.
pub const PROBLEM_BASE: &str = "https://paymentauth.org/problems/";

/// The most characters of one buyer-supplied value that a problem `detail` echoes
/// ([`echo`]).
pub(crate) const MAX_ECHO_CHARS: usize = 64;

/// The most characters of a whole problem `detail` sent to a buyer; longer details are cut
/// (with `…`) when the problem is built, whatever produced them.
pub const MAX_DETAIL_CHARS: usize = 256;

/// A buyer-supplied value as a problem detail may echo it: at most [`MAX_ECHO_CHARS`]
/// characters, cut on a character boundary and marked with `…` when longer.
pub(crate) fn echo(value: &str) -> String {
    cap_chars(value, MAX_ECHO_CHARS)
}

/// `text` cut to at most `max` characters (UTF-8 safe); a cut text ends with `…` (which
/// counts as one of the `max`).
pub(crate) fn cap_chars(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        None => text.to_owned(),
        Some(_) if max == 0 => String::new(),
        Some(_) => {
            let keep = max - 1;
            let end = text.char_indices().nth(keep).map_or(text.len(), |(i, _)| i);
            format!("{}…", &text[..end])
        }
    }
}

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

    /// A problem of this kind; the detail is capped at [`MAX_DETAIL_CHARS`] characters.
    pub fn problem(self, detail: impl Into<String>, challenge_id: Option<String>) -> ProblemDetails {
        ProblemDetails {
            type_uri: self.type_uri(),
            title: self.title().to_owned(),
            status: self.status(),
            detail: cap_chars(&detail.into(), MAX_DETAIL_CHARS),
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

/// The buyer's view of an `mpp_evm` payment error: the problem the seller answers with. Rendered
/// here, beside the other MPP problems, so the SA client (a floor below) names no MPP type.
impl EvmPaymentError {
    /// The problem type URI.
    pub fn type_uri(&self) -> String {
        format!("{PROBLEM_BASE}{}", self.slug())
    }

    /// The problem details sent to the buyer (`type`, `title`, `status`, `detail`; no
    /// `challengeId`). Its [`ProblemDetails::to_compact_json`] gives the bytes OKX's decorator
    /// answers with. The detail is capped at [`MAX_DETAIL_CHARS`] characters, and an
    /// [`EvmPaymentError::InternalSA`] always has the generic detail (its title): its message
    /// (store, signer, SA or transport details) is for the logs ([`Display`](std::fmt::Display)) only.
    pub fn problem(&self) -> ProblemDetails {
        let detail = match self {
            Self::InternalSA(_) => self.title().to_owned(),
            _ => cap_chars(self.detail(), MAX_DETAIL_CHARS),
        };
        ProblemDetails {
            type_uri: self.type_uri(),
            title: self.title().to_owned(),
            status: self.status(),
            detail,
            challenge_id: None,
        }
    }

    /// The compact problem JSON: `{"type":…,"title":…,"status":…,"detail":…}`.
    pub fn to_problem_json(&self) -> Vec<u8> {
        self.problem().to_compact_json()
    }
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

    #[test]
    fn echoed_values_are_capped_on_char_boundaries() {
        assert_eq!(echo("0xabc"), "0xabc");
        let exact = "a".repeat(MAX_ECHO_CHARS);
        assert_eq!(echo(&exact), exact);
        let long = "é".repeat(MAX_ECHO_CHARS + 1);
        let capped = echo(&long);
        assert_eq!(capped.chars().count(), MAX_ECHO_CHARS);
        assert!(capped.ends_with('…'));
        assert_eq!(cap_chars("abc", 0), "");
        assert_eq!(cap_chars("abc", 1), "…");
        let p = MppErrorKind::InvalidPayload.problem("x".repeat(10_000), None);
        assert_eq!(p.detail.chars().count(), MAX_DETAIL_CHARS);
    }

    #[test]
    fn problem_bytes() {
        let e = crate::okx::sa::map_sa_error(70010, "channel not found");
        assert_eq!(
            String::from_utf8(e.to_problem_json()).unwrap(),
            r#"{"type":"https://paymentauth.org/problems/session/channel-not-found","title":"ChannelNotFoundError","status":410,"detail":"channel not found"}"#
        );
        let e = EvmPaymentError::InvalidSplit(String::new());
        assert_eq!(e.detail(), "InvalidSplitError");
        assert_eq!(e.type_uri(), "https://paymentauth.org/problems/invalid-split");
        assert_eq!(e.to_string(), "InvalidSplitError: InvalidSplitError");
    }

    #[test]
    fn internal_details_never_reach_the_problem() {
        let e = EvmPaymentError::InternalSA("redis://user:hunter2@10.0.0.7 refused".into());
        let body = String::from_utf8(e.to_problem_json()).unwrap();
        assert!(!body.contains("hunter2"), "{body}");
        assert!(e.to_string().contains("hunter2"), "the logs keep the detail");
        let long = EvmPaymentError::VerificationFailed("x".repeat(5000));
        assert_eq!(long.problem().detail.chars().count(), MAX_DETAIL_CHARS);
    }
}
