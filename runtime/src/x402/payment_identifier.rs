//! The x402 `payment-identifier` extension (x402-foundation/x402
//! `specs/extensions/payment_identifier.md`): a client-chosen `id` that makes a paid request
//! idempotent.
//!
//! A route declares it with [`RouteConfig::payment_identifier`](super::RouteConfig::payment_identifier)
//! (optional or required); its 402 then carries `extensions["payment-identifier"]` =
//! [`payment_identifier_extension`]. A client echoes the declaration in its `PaymentPayload`'s
//! `extensions` with `info.id` added ([`append_payment_identifier`]), 16–128 characters of
//! `[A-Za-z0-9_-]` ([`is_valid_payment_id`], [`generate_payment_id`]).
//!
//! What the seller does with it (see [`X402HttpServer`](super::X402HttpServer)): the id is looked
//! up **before** the payment is verified and bound to the exact payload and the request's method
//! and path. Same id, same binding, settled → the recorded response (or, when none could be
//! recorded, the handler's response produced again) with the recorded `PAYMENT-RESPONSE`,
//! without a second verification or settlement; same id, another
//! payload or request → `409 Conflict`; the original still in flight → `503` with
//! `Retry-After`; `required` and no id, or a malformed id → `400`.

use super::types::{JsonObject, PaymentPayload};
use serde_json::{Value, json};

/// The extension's key in `extensions`.
pub const PAYMENT_IDENTIFIER: &str = "payment-identifier";
/// The shortest id accepted.
pub const MIN_PAYMENT_ID_LEN: usize = 16;
/// The longest id accepted.
pub const MAX_PAYMENT_ID_LEN: usize = 128;

/// The extension's declaration in a 402's `extensions` (`info.required` and its JSON schema).
pub fn payment_identifier_extension(required: bool) -> Value {
    json!({
        "info": { "required": required },
        "schema": {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "type": "object",
            "properties": {
                "required": { "type": "boolean" },
                "id": { "type": "string", "minLength": MIN_PAYMENT_ID_LEN, "maxLength": MAX_PAYMENT_ID_LEN },
            },
            "required": ["required"],
        },
    })
}

/// Whether `id` is a well-formed payment identifier: 16–128 characters of `[A-Za-z0-9_-]`.
pub fn is_valid_payment_id(id: &str) -> bool {
    (MIN_PAYMENT_ID_LEN..=MAX_PAYMENT_ID_LEN).contains(&id.len())
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// A fresh random payment identifier: `pay_` and 32 hex digits (128 random bits).
pub fn generate_payment_id() -> String {
    let random = alloy_primitives::B128::random();
    let hex: String = random.iter().map(|b| format!("{b:02x}")).collect();
    format!("pay_{hex}")
}

/// Adds `id` to a payload's `extensions`: the server's `declaration` (or a fresh optional one)
/// with `info.id` set.
pub fn append_payment_identifier(extensions: &mut JsonObject, declaration: Option<&Value>, id: &str) {
    let mut entry =
        declaration.cloned().filter(Value::is_object).unwrap_or_else(|| payment_identifier_extension(false));
    if !entry.get("info").is_some_and(Value::is_object) {
        entry["info"] = json!({ "required": false });
    }
    entry["info"]["id"] = Value::String(id.to_owned());
    extensions.insert(PAYMENT_IDENTIFIER.to_owned(), entry);
}

/// What a payload says about its payment identifier.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum IdOf<'a> {
    /// No id.
    Absent,
    /// A well-formed id.
    Valid(&'a str),
    /// An id that is not a string of 16–128 `[A-Za-z0-9_-]`.
    Invalid,
}

/// The payment identifier `payload` carries (`extensions["payment-identifier"].info.id`).
pub(crate) fn id_of(payload: &PaymentPayload) -> IdOf<'_> {
    let Some(entry) = payload.extensions.as_ref().and_then(|e| e.get(PAYMENT_IDENTIFIER)) else {
        return IdOf::Absent;
    };
    match entry.get("info").and_then(|i| i.get("id")) {
        None | Some(Value::Null) => IdOf::Absent,
        Some(Value::String(id)) if is_valid_payment_id(id) => IdOf::Valid(id),
        Some(_) => IdOf::Invalid,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        assert!(is_valid_payment_id("pay_7d5d747be160e280504c099d984bcfe0"));
        assert!(is_valid_payment_id(&"a".repeat(16)) && is_valid_payment_id(&"Z-_9".repeat(32)));
        assert!(!is_valid_payment_id(&"a".repeat(15)) && !is_valid_payment_id(&"a".repeat(129)));
        assert!(!is_valid_payment_id("pay_with a space__") && !is_valid_payment_id("pay_ünïcödé_________"));
        let id = generate_payment_id();
        assert!(is_valid_payment_id(&id) && id.starts_with("pay_") && id.len() == 36);
        assert_ne!(generate_payment_id(), id);
    }

    #[test]
    fn echo_and_read_back() {
        let declared = payment_identifier_extension(true);
        let mut extensions = JsonObject::new();
        append_payment_identifier(&mut extensions, Some(&declared), "pay_0123456789abcdef");
        let entry = &extensions[PAYMENT_IDENTIFIER];
        assert_eq!(entry["info"], json!({"required": true, "id": "pay_0123456789abcdef"}));
        assert_eq!(entry["schema"], declared["schema"]);
        let payload = |extensions: Option<JsonObject>| PaymentPayload {
            x402_version: 2,
            payload: JsonObject::new(),
            accepted: serde_json::from_value(json!({
                "scheme": "exact", "network": "eip155:196", "amount": "1", "asset": "0x", "payTo": "0x",
                "maxTimeoutSeconds": 60, "extra": {}
            }))
            .expect("requirements"),
            resource: None,
            extensions,
        };
        assert_eq!(id_of(&payload(Some(extensions))), IdOf::Valid("pay_0123456789abcdef"));
        assert_eq!(id_of(&payload(None)), IdOf::Absent);
        let mut bad = JsonObject::new();
        bad.insert(PAYMENT_IDENTIFIER.into(), json!({"info": {"id": 42}}));
        assert_eq!(id_of(&payload(Some(bad))), IdOf::Invalid);
    }
}
