//! The `Payment-Receipt` header (wire facts §8.6): base64url (no padding) of the receipt JSON
//! with sorted keys, compact, ASCII-escaped.

use super::encoding::{b64url_decode, b64url_encode, sorted_compact_ascii};
use super::error::{HeaderError, MppError};
use super::expiry::python_isoformat_z;
use serde_json::{Map, Value};
use time::OffsetDateTime;

/// The header name.
pub const PAYMENT_RECEIPT_HEADER: &str = "Payment-Receipt";
/// Largest encoded receipt decoded (64 KiB).
pub const MAX_RECEIPT_B64_BYTES: usize = 64 * 1024;
/// The only receipt status pympp emits.
pub const RECEIPT_STATUS_SUCCESS: &str = "success";

/// A payment receipt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Receipt {
    /// `success`.
    pub status: String,
    /// RFC 3339 UTC, Python `isoformat()` → `Z` form (see [`python_isoformat_z`]).
    pub timestamp: String,
    /// Method-specific reference (e.g. the transaction hash).
    pub reference: String,
    /// Payment method.
    pub method: String,
    /// Merchant reference (JSON key `externalId`).
    pub external_id: Option<String>,
    /// Extra method-specific data.
    pub extra: Option<Map<String, Value>>,
}

impl Receipt {
    /// A success receipt stamped now.
    pub fn success(reference: impl Into<String>, method: impl Into<String>, external_id: Option<String>) -> Self {
        Self::success_at(reference, method, external_id, OffsetDateTime::now_utc())
    }

    /// A success receipt stamped `at`.
    pub fn success_at(
        reference: impl Into<String>,
        method: impl Into<String>,
        external_id: Option<String>,
        at: OffsetDateTime,
    ) -> Self {
        Self {
            status: RECEIPT_STATUS_SUCCESS.to_owned(),
            timestamp: python_isoformat_z(at),
            reference: reference.into(),
            method: method.into(),
            external_id,
            extra: None,
        }
    }

    /// The JSON object (absent optionals omitted).
    pub fn to_json_value(&self) -> Value {
        let mut m = Map::new();
        m.insert("status".to_owned(), Value::String(self.status.clone()));
        m.insert("timestamp".to_owned(), Value::String(self.timestamp.clone()));
        m.insert("reference".to_owned(), Value::String(self.reference.clone()));
        m.insert("method".to_owned(), Value::String(self.method.clone()));
        if let Some(x) = &self.external_id {
            m.insert("externalId".to_owned(), Value::String(x.clone()));
        }
        if let Some(x) = &self.extra {
            m.insert("extra".to_owned(), Value::Object(x.clone()));
        }
        Value::Object(m)
    }

    /// The JSON bytes: sorted keys, compact, ASCII-escaped.
    pub fn to_json(&self) -> Vec<u8> {
        sorted_compact_ascii(&self.to_json_value())
    }

    /// The `Payment-Receipt` header value.
    pub fn to_payment_receipt(&self) -> String {
        b64url_encode(self.to_json())
    }

    /// Reads a `Payment-Receipt` value (padding optional, surrounding whitespace ignored,
    /// unknown keys ignored, `null` optionals absent).
    pub fn from_payment_receipt(header: &str) -> Result<Self, MppError> {
        let header = header.trim();
        if header.len() > MAX_RECEIPT_B64_BYTES {
            return Err(HeaderError::TooLarge { what: "receipt", len: header.len(), max: MAX_RECEIPT_B64_BYTES }.into());
        }
        let bytes = b64url_decode(header).map_err(|_| HeaderError::Base64 { what: "receipt" })?;
        let value: Value =
            serde_json::from_slice(&bytes).map_err(|e| HeaderError::Json { what: "receipt", reason: e.to_string() })?;
        let m = value
            .as_object()
            .ok_or_else(|| HeaderError::WrongType { field: "receipt".to_owned(), expected: "a JSON object" })?;
        let get = |key: &str| -> Result<Option<String>, HeaderError> {
            match m.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(_) => Err(HeaderError::WrongType { field: key.to_owned(), expected: "a string" }),
            }
        };
        let req = |key: &str| get(key)?.ok_or_else(|| HeaderError::MissingField(key.to_owned()));
        let extra = match m.get("extra") {
            None | Some(Value::Null) => None,
            Some(Value::Object(x)) => Some(x.clone()),
            Some(_) => {
                return Err(HeaderError::WrongType { field: "extra".to_owned(), expected: "a JSON object" }.into());
            }
        };
        Ok(Self {
            status: req("status")?,
            timestamp: req("timestamp")?,
            reference: req("reference")?,
            method: req("method")?,
            external_id: get("externalId")?,
            extra,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use time::macros::datetime;

    #[test]
    fn round_trip() {
        let mut r =
            Receipt::success_at("0xabc", "evm", Some("order-7".into()), datetime!(2026-03-30 10:00:01.123456 UTC));
        assert_eq!(
            String::from_utf8(r.to_json()).unwrap(),
            r#"{"externalId":"order-7","method":"evm","reference":"0xabc","status":"success","timestamp":"2026-03-30T10:00:01.123456Z"}"#
        );
        r.extra = Some(match json!({"z": 1, "a": "₮"}) {
            Value::Object(m) => m,
            _ => unreachable!(),
        });
        assert!(
            String::from_utf8(r.to_json())
                .unwrap()
                .starts_with(r#"{"externalId":"order-7","extra":{"a":"\u20ae","z":1},"#)
        );
        assert_eq!(Receipt::from_payment_receipt(&format!(" {}== ", r.to_payment_receipt())).unwrap(), r);
        let now = Receipt::success("0x1", "evm", None);
        assert!(now.timestamp.ends_with('Z'));
        assert_eq!(now.status, "success");
    }

    #[test]
    fn tolerant_and_strict_parts() {
        let h = b64url_encode(
            r#"{"status":"success","timestamp":"t","reference":"r","method":"evm","externalId":null,"new":1}"#,
        );
        let r = Receipt::from_payment_receipt(&h).unwrap();
        assert_eq!((r.external_id, r.extra), (None, None));
        let h = b64url_encode(r#"{"status":"success","timestamp":"t","method":"evm"}"#);
        assert_eq!(
            Receipt::from_payment_receipt(&h),
            Err(MppError::Header(HeaderError::MissingField("reference".into())))
        );
        let h = b64url_encode(r#"{"status":"success","timestamp":1,"reference":"r","method":"evm"}"#);
        assert!(matches!(Receipt::from_payment_receipt(&h), Err(MppError::Header(HeaderError::WrongType { .. }))));
        assert!(matches!(Receipt::from_payment_receipt("!"), Err(MppError::Header(HeaderError::Base64 { .. }))));
        assert!(matches!(
            Receipt::from_payment_receipt(&"A".repeat(MAX_RECEIPT_B64_BYTES + 4)),
            Err(MppError::Header(HeaderError::TooLarge { .. }))
        ));
    }
}
