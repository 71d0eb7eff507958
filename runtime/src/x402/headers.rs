//! x402 HTTP headers: names, status, and the encode/decode helpers (wire facts §1.1, §2.3, §3).
//!
//! Every x402 header is standard base64 (with `=` padding) of compact JSON in raw UTF-8.
//! Decoding accepts missing padding, and refuses oversize input, bad base64, non-UTF-8,
//! non-JSON and wrongly typed JSON with a typed [`HeaderError`] — never a panic.

use super::types::{
    AnyPaymentPayload, AnyPaymentRequired, PaymentPayload, PaymentPayloadV1, PaymentRequired, PaymentRequiredV1,
    SettleResponse,
};
use crate::web::RequestHead;
use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// v2 client → server payment header.
pub const PAYMENT_SIGNATURE_HEADER: &str = "PAYMENT-SIGNATURE";
/// Server → client 402 challenge header.
pub const PAYMENT_REQUIRED_HEADER: &str = "PAYMENT-REQUIRED";
/// Server → client settlement result header.
pub const PAYMENT_RESPONSE_HEADER: &str = "PAYMENT-RESPONSE";
/// v1 client → server payment header.
pub const X_PAYMENT_HEADER: &str = "X-PAYMENT";
/// v1 settlement result header.
pub const X_PAYMENT_RESPONSE_HEADER: &str = "X-PAYMENT-RESPONSE";
/// The x402 payment a request carries: the first non-blank of `PAYMENT-SIGNATURE` (v2) and
/// `X-PAYMENT` (v1), with `true` when it came from `X-PAYMENT`. The one predicate of "this
/// request pays with x402", used by the unpaid fast path, the resource server and the router.
pub fn payment_header<H: RequestHead + ?Sized>(head: &H) -> Option<(&str, bool)> {
    let nonblank = |name: &str| head.header_text(name).filter(|v| !v.trim().is_empty());
    match nonblank("payment-signature") {
        Some(v) => Some((v, false)),
        None => nonblank("x-payment").map(|v| (v, true)),
    }
}

/// Whether a request carries an x402 payment (see [`payment_header`]).
pub fn carries_payment<H: RequestHead + ?Sized>(head: &H) -> bool {
    payment_header(head).is_some()
}

/// The value of `Access-Control-Expose-Headers` on payment responses.
pub const EXPOSED_HEADERS: &str = "PAYMENT-REQUIRED, PAYMENT-RESPONSE, X-PAYMENT-RESPONSE";
/// CORS header through which browsers may read the payment headers.
pub const ACCESS_CONTROL_EXPOSE_HEADERS: &str = "Access-Control-Expose-Headers";
/// `402 Payment Required`.
pub const HTTP_STATUS_PAYMENT_REQUIRED: u16 = 402;
/// Largest encoded header pay402 decodes (64 KiB); larger input is [`HeaderError::TooLarge`].
pub const MAX_HEADER_BYTES: usize = 64 * 1024;
/// Deepest JSON nesting accepted in a decoded header.
pub const MAX_JSON_DEPTH: usize = 32;

/// Why an x402 header could not be decoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HeaderError {
    /// The header is empty.
    #[error("payment header is empty")]
    Empty,
    /// The header exceeds [`MAX_HEADER_BYTES`].
    #[error("payment header is {len} bytes, more than the {max}-byte limit")]
    TooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Not standard base64.
    #[error("payment header is not valid base64: {0}")]
    Base64(#[from] base64::DecodeError),
    /// Decoded bytes are not UTF-8.
    #[error("payment header does not decode to UTF-8 text")]
    Utf8,
    /// JSON nested deeper than [`MAX_JSON_DEPTH`].
    #[error("payment header JSON is nested more than {MAX_JSON_DEPTH} levels deep")]
    TooDeep,
    /// Not JSON, or JSON of the wrong shape.
    #[error("payment header JSON is invalid: {0}")]
    Json(#[from] serde_json::Error),
    /// `x402Version` present but not 1 or 2.
    #[error("unsupported x402Version {0}")]
    UnsupportedVersion(u64),
    /// JSON could not be produced (encoding side).
    #[error("cannot encode payment header: {0}")]
    Encode(String),
}

const STANDARD_INDIFFERENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Standard base64 with padding.
pub fn safe_base64_encode(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Standard base64, padding optional; surrounding whitespace ignored.
pub fn safe_base64_decode(text: &str) -> Result<Vec<u8>, HeaderError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(HeaderError::Empty);
    }
    if text.len() > MAX_HEADER_BYTES {
        return Err(HeaderError::TooLarge { len: text.len(), max: MAX_HEADER_BYTES });
    }
    Ok(STANDARD_INDIFFERENT.decode(text)?)
}

fn encode_json<T: Serialize>(value: &T) -> Result<String, HeaderError> {
    let json = crate::json::compact(value).map_err(|e| HeaderError::Encode(e.to_string()))?;
    Ok(safe_base64_encode(&json))
}

fn json_depth_ok(bytes: &[u8]) -> bool {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in bytes {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > MAX_JSON_DEPTH {
                    return false;
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    true
}

/// Decodes base64 → UTF-8 JSON text, with the size and depth limits.
fn decode_text(header: &str) -> Result<String, HeaderError> {
    let bytes = safe_base64_decode(header)?;
    let text = String::from_utf8(bytes).map_err(|_| HeaderError::Utf8)?;
    if !json_depth_ok(text.as_bytes()) {
        return Err(HeaderError::TooDeep);
    }
    Ok(text)
}

/// Decodes a header straight into its type (no intermediate `serde_json::Value`).
fn decode_typed<T: DeserializeOwned>(header: &str) -> Result<T, HeaderError> {
    Ok(serde_json::from_str(&decode_text(header)?)?)
}

/// Just the version of a decoded header; every other field is skipped without being built.
#[derive(serde::Deserialize)]
struct VersionProbe {
    #[serde(rename = "x402Version")]
    x402_version: Option<serde_json::Value>,
}

/// `x402Version` of a decoded header: 1 → v1, anything else (or missing) → v2 (§2.3).
fn version_of(text: &str) -> Result<u32, HeaderError> {
    let probe: VersionProbe = serde_json::from_str(text)?;
    match probe.x402_version {
        Some(v) => match v.as_u64() {
            Some(1) => Ok(1),
            Some(2) => Ok(2),
            Some(n) => Err(HeaderError::UnsupportedVersion(n)),
            None => Err(HeaderError::Json(serde::de::Error::custom("x402Version must be an integer"))),
        },
        None => Ok(2),
    }
}

/// Encodes a 402 challenge for `PAYMENT-REQUIRED`.
pub fn encode_payment_required_header(value: &PaymentRequired) -> Result<String, HeaderError> {
    encode_json(value)
}

/// Encodes a v1 402 challenge.
pub fn encode_payment_required_header_v1(value: &PaymentRequiredV1) -> Result<String, HeaderError> {
    encode_json(value)
}

/// Decodes `PAYMENT-REQUIRED` (v1 or v2 by `x402Version`).
pub fn decode_payment_required_header(header: &str) -> Result<AnyPaymentRequired, HeaderError> {
    let text = decode_text(header)?;
    Ok(match version_of(&text)? {
        1 => AnyPaymentRequired::V1(serde_json::from_str(&text)?),
        _ => AnyPaymentRequired::V2(serde_json::from_str(&text)?),
    })
}

/// Encodes a v2 payment for `PAYMENT-SIGNATURE`.
pub fn encode_payment_signature_header(value: &PaymentPayload) -> Result<String, HeaderError> {
    encode_json(value)
}

/// Encodes a v1 payment for `X-PAYMENT`.
pub fn encode_x_payment_header(value: &PaymentPayloadV1) -> Result<String, HeaderError> {
    encode_json(value)
}

/// Decodes `PAYMENT-SIGNATURE` / `X-PAYMENT` (v1 or v2 by `x402Version`).
pub fn decode_payment_signature_header(header: &str) -> Result<AnyPaymentPayload, HeaderError> {
    let text = decode_text(header)?;
    Ok(match version_of(&text)? {
        1 => AnyPaymentPayload::V1(serde_json::from_str(&text)?),
        _ => AnyPaymentPayload::V2(serde_json::from_str(&text)?),
    })
}

/// Encodes a settlement result for `PAYMENT-RESPONSE` / `X-PAYMENT-RESPONSE`.
pub fn encode_payment_response_header(value: &SettleResponse) -> Result<String, HeaderError> {
    encode_json(value)
}

/// Decodes `PAYMENT-RESPONSE` / `X-PAYMENT-RESPONSE`.
pub fn decode_payment_response_header(header: &str) -> Result<SettleResponse, HeaderError> {
    decode_typed(header)
}

/// Detects the x402 version of a 402 response, client side (§2.3): a `PAYMENT-REQUIRED`
/// header ⇒ 2; else an `X-PAYMENT` header ⇒ 1; else the body's `x402Version` ∈ {1, 2}.
/// `header` looks a header up case-insensitively.
pub fn detect_payment_required_version<'a>(
    header: impl Fn(&str) -> Option<&'a str>,
    body: &[u8],
) -> Result<u32, HeaderError> {
    if header(PAYMENT_REQUIRED_HEADER).is_some() {
        return Ok(2);
    }
    if header(X_PAYMENT_HEADER).is_some() {
        return Ok(1);
    }
    if body.len() > MAX_HEADER_BYTES {
        return Err(HeaderError::TooLarge { len: body.len(), max: MAX_HEADER_BYTES });
    }
    let value: serde_json::Value = serde_json::from_slice(body)?;
    match value.get("x402Version").and_then(serde_json::Value::as_u64) {
        Some(1) => Ok(1),
        Some(2) => Ok(2),
        Some(n) => Err(HeaderError::UnsupportedVersion(n)),
        None => Err(HeaderError::Json(serde::de::Error::custom("no x402 version in the 402 response"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_input_is_typed() {
        assert!(matches!(decode_payment_signature_header(""), Err(HeaderError::Empty)));
        assert!(matches!(decode_payment_signature_header("!!!"), Err(HeaderError::Base64(_))));
        assert!(matches!(decode_payment_signature_header(&safe_base64_encode(&[0xff, 0xfe])), Err(HeaderError::Utf8)));
        assert!(matches!(decode_payment_signature_header(&safe_base64_encode(b"not json")), Err(HeaderError::Json(_))));
        assert!(matches!(
            decode_payment_signature_header(&safe_base64_encode(br#"{"x402Version":2,"payload":1}"#)),
            Err(HeaderError::Json(_))
        ));
        assert!(matches!(
            decode_payment_signature_header(&safe_base64_encode(br#"{"x402Version":7}"#)),
            Err(HeaderError::UnsupportedVersion(7))
        ));
        let deep = format!("{}{}", "[".repeat(100), "]".repeat(100));
        assert!(matches!(
            decode_payment_required_header(&safe_base64_encode(deep.as_bytes())),
            Err(HeaderError::TooDeep)
        ));
        let big = "A".repeat(MAX_HEADER_BYTES + 4);
        assert!(matches!(decode_payment_signature_header(&big), Err(HeaderError::TooLarge { .. })));
        // x402Version present but not an integer.
        for json in [r#"{"x402Version":"2"}"#, r#"{"x402Version":2.5}"#, r#"{"x402Version":-1}"#] {
            assert!(
                matches!(
                    decode_payment_signature_header(&safe_base64_encode(json.as_bytes())),
                    Err(HeaderError::Json(_))
                ),
                "{json}"
            );
        }
    }

    #[test]
    fn version_detection() {
        let none = |_: &str| None;
        assert_eq!(detect_payment_required_version(|h| (h == "PAYMENT-REQUIRED").then_some("x"), b"").unwrap(), 2);
        assert_eq!(detect_payment_required_version(|h| (h == "X-PAYMENT").then_some("x"), b"").unwrap(), 1);
        assert_eq!(detect_payment_required_version(none, br#"{"x402Version":1}"#).unwrap(), 1);
        assert!(detect_payment_required_version(none, b"{}").is_err());
    }
}
