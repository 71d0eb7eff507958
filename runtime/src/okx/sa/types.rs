//! Wire types of the OKX Settlement Agent API for MPP (wire facts §9.3, §9.5, §9.7).
//!
//! Requests serialise field by field in the order OKX's Python SDK sends them; optional fields
//! are omitted when `None`. The fixed discriminators (`payload.type` of charge payloads,
//! `payload.action` of session payloads) are part of the type and cannot be set wrong. All
//! request types also deserialise, so a body captured on the wire can be replayed.
//!
//! Receipts are lenient like the Python models: every field is a string, a missing or `null`
//! field becomes `""` (or `None`), and numbers (e.g. `chainId: 196`) are accepted as their
//! decimal text. Unknown fields are ignored.

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize};
use std::fmt;

/// The `eip-3009` authorization type, the default of [`ChargeAuthorization::auth_type`].
pub const EIP3009_AUTHORIZATION_TYPE: &str = "eip-3009";
/// The default session payload `type`.
pub const TRANSACTION_PAYLOAD_TYPE: &str = "transaction";

fn eip3009() -> String {
    EIP3009_AUTHORIZATION_TYPE.to_owned()
}

fn transaction() -> String {
    TRANSACTION_PAYLOAD_TYPE.to_owned()
}

/// Python sends `auth.type or "eip-3009"`: an empty type goes out as the default.
fn or_eip3009<S: serde::Serializer>(v: &str, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(if v.is_empty() { EIP3009_AUTHORIZATION_TYPE } else { v })
}

/// Python sends `payload.type or "transaction"`.
fn or_transaction<S: serde::Serializer>(v: &str, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(if v.is_empty() { TRANSACTION_PAYLOAD_TYPE } else { v })
}

/// Declares a payload whose discriminator (`type` or `action`) is fixed by its Rust type.
///
/// `Serialize` is derived with the discriminator written first. On input serde ignores the tag
/// of a struct, so `Deserialize` checks it, then reads the fields through a private mirror.
macro_rules! fixed_tag {
    (
        $(#[$cattr:meta])*
        pub struct $name:ident : $key:tt = $value:tt {
            $( $(#[$fattr:meta])* pub $field:ident : $fty:ty, )*
        }
    ) => {
        $(#[$cattr])*
        #[derive(Serialize)]
        #[serde(tag = $key, rename = $value, rename_all = "camelCase")]
        pub struct $name {
            $( $(#[$fattr])* pub $field: $fty, )*
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                #[derive(Deserialize)]
                #[serde(rename_all = "camelCase")]
                struct Fields {
                    $( $(#[$fattr])* $field: $fty, )*
                }
                let object = serde_json::Map::<String, serde_json::Value>::deserialize(d)?;
                match object.get($key) {
                    Some(serde_json::Value::String(v)) if v == $value => {}
                    Some(other) => {
                        return Err(de::Error::custom(format_args!("`{}` is {other}, expected \"{}\"", $key, $value)));
                    }
                    None => return Err(de::Error::missing_field($key)),
                }
                let fields = Fields::deserialize(serde_json::Value::Object(object)).map_err(de::Error::custom)?;
                Ok(Self { $( $field: fields.$field, )* })
            }
        }
    };
}

/// The `payload` of an SA call that moves a deposit (`session/open`, `session/topUp`): the
/// fields both share (payload type, channel id, and the authorization with its signature, or the
/// transaction hash), then the call's own fields with their defaults. `action` is fixed
/// (see `fixed_tag!`); `Default` has type `transaction`.
macro_rules! deposit_payload {
    (
        $(#[$cattr:meta])*
        $name:ident : $action:tt, $what:tt {
            $( $(#[$fattr:meta])* pub $field:ident : $fty:ty = $default:expr, )*
        }
    ) => {
        fixed_tag! {
            $(#[$cattr])*
            #[derive(Clone, Debug, PartialEq, Eq)]
            pub struct $name: "action" = $action {
                /// Payload type: `transaction` (also when missing or empty) or `hash`.
                #[serde(rename = "type", default = "transaction", serialize_with = "or_transaction")]
                pub payload_type: String,
                /// The channel id (`0x`-hex bytes32).
                #[serde(default)]
                pub channel_id: String,
                #[doc = concat!("The ", $what, " authorization (type `transaction`).")]
                #[serde(default, skip_serializing_if = "Option::is_none")]
                pub authorization: Option<TransferAuthorization>,
                /// Payload signature.
                #[serde(default, skip_serializing_if = "Option::is_none")]
                pub signature: Option<String>,
                #[doc = concat!("The ", $what, " transaction hash (type `hash`).")]
                #[serde(default, skip_serializing_if = "Option::is_none")]
                pub hash: Option<String>,
                $( $(#[$fattr])* pub $field: $fty, )*
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self {
                    payload_type: transaction(),
                    channel_id: String::new(),
                    authorization: None,
                    signature: None,
                    hash: None,
                    $( $field: $default, )*
                }
            }
        }
    };
}

/// An EIP-3009 authorization as the SA receives it: the transfer's fields (type `eip-3009` when
/// missing or empty, the other fields `""`), then the struct's own fields with their defaults.
macro_rules! eip3009_authorization {
    (
        $(#[$cattr:meta])*
        $name:ident {
            $( $(#[$fattr:meta])* pub $field:ident : $fty:ty = $default:expr, )*
        }
    ) => {
        $(#[$cattr])*
        #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(rename_all = "camelCase")]
        pub struct $name {
            /// Authorization type (`eip-3009` when missing or empty).
            #[serde(rename = "type", default = "eip3009", serialize_with = "or_eip3009")]
            pub auth_type: String,
            /// Payer.
            #[serde(default)]
            pub from: String,
            /// Recipient.
            #[serde(default)]
            pub to: String,
            /// Amount in base units.
            #[serde(default)]
            pub value: String,
            /// `validAfter` (unix seconds).
            #[serde(default)]
            pub valid_after: String,
            /// `validBefore` (unix seconds).
            #[serde(default)]
            pub valid_before: String,
            /// The 32-byte nonce, `0x`-hex.
            #[serde(default)]
            pub nonce: String,
            /// The signature, `0x`-hex.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub signature: Option<String>,
            $( $(#[$fattr])* pub $field: $fty, )*
        }

        impl Default for $name {
            fn default() -> Self {
                Self {
                    auth_type: eip3009(),
                    from: String::new(),
                    to: String::new(),
                    value: String::new(),
                    valid_after: String::new(),
                    valid_before: String::new(),
                    nonce: String::new(),
                    signature: None,
                    $( $field: $default, )*
                }
            }
        }
    };
}

/// The body of a client-facing SA session call: the challenge echo, the call's payload, and the
/// credential's `source` (omitted when empty).
macro_rules! client_request {
    ($(#[$cattr:meta])* $name:ident { payload: $payload:ty, $what:literal }) => {
        $(#[$cattr])*
        #[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
        pub struct $name {
            /// The challenge echo.
            pub challenge: SaChallengeEcho,
            #[doc = $what]
            pub payload: $payload,
            /// The credential `source` (omitted when empty).
            #[serde(default, skip_serializing_if = "String::is_empty")]
            pub source: String,
        }
    };
}

/// The `payload` of a merchant-initiated SA session call (`session/settle`, `session/close`):
/// the payee's EIP-712 authorization over the highest voucher. `action` is fixed.
macro_rules! payee_payload {
    ($(#[$cattr:meta])* $name:ident : $action:tt) => {
        fixed_tag! {
            $(#[$cattr])*
            #[derive(Clone, Debug, Default, PartialEq, Eq)]
            pub struct $name: "action" = $action {
                /// The channel id.
                #[serde(default)]
                pub channel_id: String,
                /// Highest voucher amount, base units.
                #[serde(default)]
                pub cumulative_amount: String,
                /// The payer's voucher signature (`0x`-hex, `""` when none).
                #[serde(default)]
                pub voucher_signature: String,
                /// The payee's EIP-712 signature (`0x`-hex).
                #[serde(default)]
                pub payee_signature: String,
                /// Authorization nonce (decimal).
                #[serde(default)]
                pub nonce: String,
                /// Authorization deadline (decimal).
                #[serde(default)]
                pub deadline: String,
            }
        }
    };
}

/// The challenge echo sent to the SA with client-facing calls: only `id`, `realm`, `method`,
/// `intent`, `request` and (when set) `expires`; `digest`, `opaque` and `description` are not
/// forwarded.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SaChallengeEcho {
    /// Challenge id.
    #[serde(default)]
    pub id: String,
    /// Realm.
    #[serde(default)]
    pub realm: String,
    /// Payment method (`evm`).
    #[serde(default)]
    pub method: String,
    /// Intent (`charge` or `session`).
    #[serde(default)]
    pub intent: String,
    /// The base64url `request` parameter, verbatim.
    #[serde(default)]
    pub request: String,
    /// Expiry, verbatim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
}

impl SaChallengeEcho {
    /// An echo without `expires`.
    pub fn new(
        id: impl Into<String>,
        realm: impl Into<String>,
        method: impl Into<String>,
        intent: impl Into<String>,
        request: impl Into<String>,
    ) -> Self {
        Self {
            id: id.into(),
            realm: realm.into(),
            method: method.into(),
            intent: intent.into(),
            request: request.into(),
            expires: None,
        }
    }

    /// Sets `expires`.
    pub fn with_expires(mut self, expires: impl Into<String>) -> Self {
        self.expires = Some(expires.into());
        self
    }
}

eip3009_authorization! {
    /// An EIP-3009 `transferWithAuthorization` as the SA receives it, without splits: a split of a
    /// charge, or the deposit authorization of a session `open`/`topUp`. Missing fields are `""`.
    TransferAuthorization {}
}

eip3009_authorization! {
    /// The authorization of a charge `transaction` payload: [`TransferAuthorization`]'s fields
    /// plus optional `splits` (which carry no nested splits).
    ChargeAuthorization {
        /// Split payments.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub splits: Option<Vec<TransferAuthorization>> = None,
    }
}

fixed_tag! {
    /// `payload` of `charge/settle`: `{"type":"transaction","authorization":{…}}`.
    #[derive(Clone, Debug, Default, PartialEq, Eq)]
    pub struct ChargeTransactionPayload: "type" = "transaction" {
        /// The signed transfer the SA broadcasts.
        pub authorization: ChargeAuthorization,
    }
}

/// Body of `POST charge/settle`. `source` is always sent (`""` when the credential has none).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChargeSettleRequest {
    /// The challenge echo.
    pub challenge: SaChallengeEcho,
    /// The transaction payload.
    pub payload: ChargeTransactionPayload,
    /// The credential `source` (a `did:pkh`), or `""`.
    #[serde(default)]
    pub source: String,
}

fixed_tag! {
    /// `payload` of `charge/verifyHash`: `{"type":"hash","hash":…}`.
    #[derive(Clone, Debug, Default, PartialEq, Eq)]
    pub struct ChargeHashPayload: "type" = "hash" {
        /// The hash of the transaction the client broadcast itself.
        #[serde(default)]
        pub hash: String,
    }
}

/// Body of `POST charge/verifyHash`. `source` is always sent (`""` when absent).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChargeVerifyHashRequest {
    /// The challenge echo.
    pub challenge: SaChallengeEcho,
    /// The hash payload.
    pub payload: ChargeHashPayload,
    /// The credential `source`, or `""`.
    #[serde(default)]
    pub source: String,
}

deposit_payload! {
    /// `payload` of `session/open` (`action` is always `open`). `cumulativeAmount`,
    /// `voucherSignature` and `deposit` of the credential are not forwarded.
    SessionOpenPayload: "open", "deposit" {
        /// Channel salt (`""` when the credential has none; always sent).
        #[serde(default)]
        pub salt: String = String::new(),
        /// Voucher signer authorised by the payer.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub authorized_signer: Option<String> = None,
    }
}

client_request! {
    /// Body of `POST session/open`; `source` is omitted when empty.
    SessionOpenRequest { payload: SessionOpenPayload, "The open payload." }
}

deposit_payload! {
    /// `payload` of `session/topUp` (`action` is always `topUp`).
    SessionTopUpPayload: "topUp", "top-up" {
        /// Amount added to the deposit, base units.
        #[serde(default)]
        pub additional_deposit: String = String::new(),
        /// Top-up salt.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub top_up_salt: Option<String> = None,
    }
}

client_request! {
    /// Body of `POST session/topUp`; `source` is omitted when empty.
    SessionTopUpRequest { payload: SessionTopUpPayload, "The top-up payload." }
}

payee_payload! {
    /// `payload` of `session/settle` (`action` is always `settle`): the payee's
    /// `SettleAuthorization` over the highest voucher.
    SessionSettlePayload: "settle"
}

/// Body of `POST session/settle` (merchant-initiated; no challenge, no source).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionSettleRequest {
    /// The settle payload.
    pub payload: SessionSettlePayload,
}

payee_payload! {
    /// `payload` of `session/close` (`action` is always `close`): the payee's
    /// `CloseAuthorization` over the highest voucher.
    SessionClosePayload: "close"
}

/// Body of `POST session/close` (no challenge, no source).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionCloseRequest {
    /// The close payload.
    pub payload: SessionClosePayload,
}

/// The SA's answer to `charge/settle` and `charge/verifyHash`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ChargeReceipt {
    /// Payment method.
    #[serde(deserialize_with = "lenient_string")]
    pub method: String,
    /// On-chain reference (transaction hash).
    #[serde(deserialize_with = "lenient_string")]
    pub reference: String,
    /// Status.
    #[serde(deserialize_with = "lenient_string")]
    pub status: String,
    /// Timestamp.
    #[serde(deserialize_with = "lenient_string")]
    pub timestamp: String,
    /// Chain id (a JSON number is accepted and kept as its decimal text).
    #[serde(deserialize_with = "lenient_string")]
    pub chain_id: String,
    /// The challenge id.
    #[serde(deserialize_with = "lenient_string")]
    pub challenge_id: String,
    /// Merchant external id.
    #[serde(deserialize_with = "lenient_opt_string", skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
}

/// The SA's answer to `session/open`, `topUp`, `settle` and `close`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct SessionReceipt {
    /// Payment method.
    #[serde(deserialize_with = "lenient_string")]
    pub method: String,
    /// Intent.
    #[serde(deserialize_with = "lenient_string")]
    pub intent: String,
    /// Status.
    #[serde(deserialize_with = "lenient_string")]
    pub status: String,
    /// Timestamp.
    #[serde(deserialize_with = "lenient_string")]
    pub timestamp: String,
    /// The channel id.
    #[serde(deserialize_with = "lenient_string")]
    pub channel_id: String,
    /// Chain id (number or string on the wire).
    #[serde(deserialize_with = "lenient_string")]
    pub chain_id: String,
    /// On-chain reference.
    #[serde(deserialize_with = "lenient_string")]
    pub reference: String,
    /// Channel deposit, base units (`""` when not reported).
    #[serde(deserialize_with = "lenient_string")]
    pub deposit: String,
}

/// The SA's answer to `GET session/status`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct SessionStatus {
    /// The channel id.
    #[serde(deserialize_with = "lenient_string")]
    pub channel_id: String,
    /// Payer.
    #[serde(deserialize_with = "lenient_string")]
    pub payer: String,
    /// Payee.
    #[serde(deserialize_with = "lenient_string")]
    pub payee: String,
    /// Token contract.
    #[serde(deserialize_with = "lenient_string")]
    pub token: String,
    /// Deposit, base units.
    #[serde(deserialize_with = "lenient_string")]
    pub deposit: String,
    /// Highest settled-or-known cumulative amount.
    #[serde(deserialize_with = "lenient_string")]
    pub cumulative_amount: String,
    /// Amount settled on chain.
    #[serde(deserialize_with = "lenient_string")]
    pub settled_on_chain: String,
    /// Deposit not yet paid out.
    #[serde(deserialize_with = "lenient_string")]
    pub remaining_balance: String,
    /// Channel status as the SA reports it (e.g. `OPEN`).
    #[serde(deserialize_with = "lenient_string")]
    pub session_status: String,
}

/// Accepts a string, an integer or float (kept as its JSON text), or `null` (⇒ `""`).
struct LenientString;

impl<'de> Visitor<'de> for LenientString {
    type Value = Option<String>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string, a number or null")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Some(v.to_owned()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Some(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Some(v.to_string()))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Some(v.to_string()))
    }
    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Self::Value, E> {
        Ok(Some(v.to_string()))
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Self::Value, E> {
        Ok(Some(v.to_string()))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Some(serde_json::Number::from_f64(v).map_or_else(|| v.to_string(), |n| n.to_string())))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(LenientString)
    }
}

fn lenient_opt_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    d.deserialize_any(LenientString)
}

fn lenient_string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(lenient_opt_string(d)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_come_first_and_optionals_are_omitted() {
        let req = ChargeVerifyHashRequest {
            challenge: SaChallengeEcho::new("i", "r", "evm", "charge", "e30"),
            payload: ChargeHashPayload { hash: "0xab".into() },
            source: String::new(),
        };
        assert_eq!(
            String::from_utf8(crate::json::compact_ascii(&req).unwrap()).unwrap(),
            r#"{"challenge":{"id":"i","realm":"r","method":"evm","intent":"charge","request":"e30"},"payload":{"type":"hash","hash":"0xab"},"source":""}"#
        );
        let open = SessionOpenRequest {
            challenge: SaChallengeEcho::default().with_expires("x"),
            payload: SessionOpenPayload {
                channel_id: "0x01".into(),
                payload_type: String::new(),
                authorization: Some(TransferAuthorization { auth_type: String::new(), ..Default::default() }),
                ..Default::default()
            },
            source: String::new(),
        };
        assert_eq!(
            String::from_utf8(crate::json::compact_ascii(&open).unwrap()).unwrap(),
            r#"{"challenge":{"id":"","realm":"","method":"","intent":"","request":"","expires":"x"},"payload":{"action":"open","type":"transaction","channelId":"0x01","authorization":{"type":"eip-3009","from":"","to":"","value":"","validAfter":"","validBefore":"","nonce":""},"salt":""}}"#
        );
        let close = SessionCloseRequest { payload: SessionClosePayload { nonce: "1".into(), ..Default::default() } };
        assert_eq!(
            String::from_utf8(crate::json::compact_ascii(&close).unwrap()).unwrap(),
            r#"{"payload":{"action":"close","channelId":"","cumulativeAmount":"","voucherSignature":"","payeeSignature":"","nonce":"1","deadline":""}}"#
        );
    }

    #[test]
    fn wrong_discriminator_is_rejected() {
        let bad = r#"{"payload":{"action":"close","channelId":"0x"}}"#;
        assert!(serde_json::from_str::<SessionSettleRequest>(bad).is_err());
        assert!(serde_json::from_str::<SessionSettleRequest>(r#"{"payload":{"channelId":"0x"}}"#).is_err());
        assert!(serde_json::from_str::<ChargeHashPayload>(r#"{"type":"transaction","hash":"0x"}"#).is_err());
        let open: SessionOpenRequest = serde_json::from_str(r#"{"challenge":{},"payload":{"action":"open"}}"#).unwrap();
        assert_eq!(open.payload, SessionOpenPayload::default());
        let ok = r#"{"payload":{"action":"settle","channelId":"0x"}}"#;
        assert_eq!(serde_json::from_str::<SessionSettleRequest>(ok).unwrap().payload.channel_id, "0x");
    }

    #[test]
    fn receipts_are_lenient() {
        let r: ChargeReceipt =
            serde_json::from_str(r#"{"chainId":196,"reference":null,"externalId":"e","extra":[1]}"#).unwrap();
        assert_eq!(r.chain_id, "196");
        assert_eq!(r.reference, "");
        assert_eq!(r.external_id.as_deref(), Some("e"));
        let r: ChargeReceipt = serde_json::from_str(r#"{"externalId":null}"#).unwrap();
        assert_eq!(r, ChargeReceipt::default());
        assert!(serde_json::from_str::<SessionReceipt>(r#"{"deposit":{}}"#).is_err());
        let s: SessionReceipt = serde_json::from_str(r#"{"chainId":"196","deposit":5000000}"#).unwrap();
        assert_eq!((s.chain_id.as_str(), s.deposit.as_str()), ("196", "5000000"));
    }
}
