//! The `Authorization: Payment <base64url(JSON)>` credential (wire facts §8.5) and the
//! server-side verification of its challenge echo.

use super::echo::{ChallengeEcho, challenge_hmac_input, id_matches, opaque_b64};
use super::encoding::{b64url_decode, b64url_encode, canonical_b64url, canonical_json_object, sorted_compact_ascii};
use super::error::{HeaderError, MppError};
use super::expiry::parse_rfc3339;
use super::header::{PAYMENT_SCHEME, decode_json_object, decode_string_map};
use alloy_primitives::Address;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::str::FromStr;
use time::OffsetDateTime;

/// Largest encoded credential decoded (64 KiB, pympp ≥ 0.15).
pub const MAX_CREDENTIAL_B64_BYTES: usize = 64 * 1024;

/// A payment credential.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credential {
    /// The challenge being answered.
    pub challenge: ChallengeEcho,
    /// Method-specific proof (for `evm` charge e.g. `{"type":"hash","hash":"0x…"}`).
    pub payload: Map<String, Value>,
    /// The payer as a DID (`did:pkh:eip155:<chainId>:<address>`).
    pub source: Option<String>,
}

impl Credential {
    /// A credential.
    pub fn new(challenge: ChallengeEcho, payload: Map<String, Value>, source: Option<String>) -> Self {
        Self { challenge, payload, source }
    }

    /// The JSON object (absent optionals omitted).
    pub fn to_json_value(&self) -> Value {
        let e = &self.challenge;
        let mut ch = Map::new();
        for (k, v) in
            [("id", &e.id), ("realm", &e.realm), ("method", &e.method), ("intent", &e.intent), ("request", &e.request)]
        {
            ch.insert(k.to_owned(), Value::String(v.clone()));
        }
        for (k, v) in
            [("expires", &e.expires), ("digest", &e.digest), ("opaque", &e.opaque), ("description", &e.description)]
        {
            if let Some(v) = v {
                ch.insert(k.to_owned(), Value::String(v.clone()));
            }
        }
        let mut root = Map::new();
        root.insert("challenge".to_owned(), Value::Object(ch));
        root.insert("payload".to_owned(), Value::Object(self.payload.clone()));
        if let Some(s) = &self.source {
            root.insert("source".to_owned(), Value::String(s.clone()));
        }
        Value::Object(root)
    }

    /// The JSON bytes: sorted keys, compact, ASCII-escaped.
    pub fn to_json(&self) -> Vec<u8> {
        sorted_compact_ascii(&self.to_json_value())
    }

    /// base64url (no padding) of [`Credential::to_json`] — the part after `Payment `.
    pub fn encode(&self) -> String {
        b64url_encode(self.to_json())
    }

    /// The `Authorization` header value: `Payment <base64url>`.
    pub fn to_authorization_header(&self) -> String {
        format!("{PAYMENT_SCHEME} {}", self.encode())
    }

    /// Reads a credential from an `Authorization` header value. The `Payment` scheme is found
    /// among comma-separated schemes (case-insensitive); its token is base64url (padding
    /// optional, at most [`MAX_CREDENTIAL_B64_BYTES`]) of the credential JSON.
    ///
    /// No `Payment` scheme is [`HeaderError::NoPaymentScheme`] (kind `PaymentRequired`); every
    /// other failure is kind `MalformedCredential`.
    pub fn from_authorization_header(value: &str) -> Result<Self, MppError> {
        let token = payment_token(value).ok_or(HeaderError::NoPaymentScheme)?;
        if token.is_empty() {
            return Err(HeaderError::MissingField("credential".to_owned()).into());
        }
        if token.len() > MAX_CREDENTIAL_B64_BYTES {
            return Err(
                HeaderError::TooLarge { what: "credential", len: token.len(), max: MAX_CREDENTIAL_B64_BYTES }.into()
            );
        }
        let bytes = b64url_decode(token).map_err(|_| HeaderError::Base64 { what: "credential" })?;
        Self::from_json(&bytes)
    }

    /// Parses the credential JSON.
    pub fn from_json(bytes: &[u8]) -> Result<Self, MppError> {
        let value: Value = serde_json::from_slice(bytes)
            .map_err(|e| HeaderError::Json { what: "credential", reason: e.to_string() })?;
        Self::from_json_value(&value)
    }

    /// Reads the credential from its JSON value. Unknown keys are ignored; `null` counts as
    /// absent for optional fields.
    pub fn from_json_value(value: &Value) -> Result<Self, MppError> {
        let root = as_object(value, "credential")?;
        let ch = as_object(root.get("challenge").ok_or_else(|| missing("challenge"))?, "challenge")?;
        let challenge = ChallengeEcho {
            id: req_str(ch, "challenge.id", "id")?,
            realm: req_str(ch, "challenge.realm", "realm")?,
            method: req_str(ch, "challenge.method", "method")?,
            intent: req_str(ch, "challenge.intent", "intent")?,
            request: req_str(ch, "challenge.request", "request")?,
            expires: opt_str(ch, "challenge.expires", "expires")?,
            digest: opt_str(ch, "challenge.digest", "digest")?,
            opaque: opt_str(ch, "challenge.opaque", "opaque")?,
            description: opt_str(ch, "challenge.description", "description")?,
        };
        let payload = as_object(root.get("payload").ok_or_else(|| missing("payload"))?, "payload")?.clone();
        let source = opt_str(root, "source", "source")?;
        Ok(Self { challenge, payload, source })
    }

    /// The payer from [`Credential::source`], when it is a `did:pkh:eip155` DID.
    pub fn payer(&self) -> Option<PayerDid> {
        self.source.as_deref().and_then(payer_from_did)
    }
}

/// The token after the `Payment` scheme in a (possibly multi-scheme) `Authorization` value.
fn payment_token(value: &str) -> Option<&str> {
    value.split(',').find_map(|part| {
        let part = part.trim_start();
        let (scheme, rest) = part.split_once([' ', '\t']).unwrap_or((part, ""));
        scheme.eq_ignore_ascii_case(PAYMENT_SCHEME).then(|| rest.trim())
    })
}

fn missing(field: &str) -> HeaderError {
    HeaderError::MissingField(field.to_owned())
}

fn as_object<'a>(v: &'a Value, field: &str) -> Result<&'a Map<String, Value>, HeaderError> {
    v.as_object().ok_or_else(|| HeaderError::WrongType { field: field.to_owned(), expected: "a JSON object" })
}

fn req_str(m: &Map<String, Value>, path: &str, key: &str) -> Result<String, HeaderError> {
    opt_str(m, path, key)?.ok_or_else(|| missing(path))
}

fn opt_str(m: &Map<String, Value>, path: &str, key: &str) -> Result<Option<String>, HeaderError> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(HeaderError::WrongType { field: path.to_owned(), expected: "a string" }),
    }
}

/// A payer identified by a `did:pkh:eip155:<chainId>:<address>` DID.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PayerDid {
    /// EIP-155 chain id.
    pub chain_id: u64,
    /// The account.
    pub address: Address,
}

/// Parses `did:pkh:eip155:<chainId>:<address>` (address in any case, `0x` prefix required).
pub fn payer_from_did(did: &str) -> Option<PayerDid> {
    let rest = did.trim().strip_prefix("did:pkh:eip155:")?;
    let (chain, addr) = rest.split_once(':')?;
    if chain.is_empty() || !chain.bytes().all(|b| b.is_ascii_digit()) || !addr.starts_with("0x") {
        return None;
    }
    Some(PayerDid { chain_id: chain.parse().ok()?, address: Address::from_str(addr).ok()? })
}

/// `did:pkh:eip155:<chainId>:<EIP-55 address>`.
pub fn did_pkh(chain_id: u64, address: &Address) -> String {
    format!("did:pkh:eip155:{chain_id}:{}", address.to_checksum(None))
}

/// A challenge echo that passed [`verify_echo`], decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodedEcho {
    /// Challenge id (verified).
    pub id: String,
    /// Realm.
    pub realm: String,
    /// Payment method.
    pub method: String,
    /// Intent.
    pub intent: String,
    /// The decoded request (equal to the route's expectation).
    pub request: Map<String, Value>,
    /// Expiry as echoed.
    pub expires: String,
    /// Expiry, parsed.
    pub expires_at: OffsetDateTime,
    /// Body digest.
    pub digest: Option<String>,
    /// The decoded opaque map (bound into the id; compare it with the route's own if it sets one).
    pub opaque: Option<BTreeMap<String, String>>,
}

/// Verifies a credential's challenge echo against this server's secret and the route's
/// current expectation, at the current time. See [`verify_echo_at`].
pub fn verify_echo(
    echo: &ChallengeEcho,
    secret_key: &str,
    realm: &str,
    method: &str,
    intent: &str,
    expected_request: &Map<String, Value>,
) -> Result<DecodedEcho, MppError> {
    verify_echo_at(echo, secret_key, realm, method, intent, expected_request, OffsetDateTime::now_utc())
}

/// Verifies a challenge echo as pympp 0.8.2 does, in its order:
///
/// 1. the echoed `request` (and `opaque`) must decode to JSON objects — else
///    `MalformedCredential`;
/// 2. the id is recomputed from the echoed realm/method/intent, the decoded and
///    **re-canonicalised** request, the echoed expires/digest and the re-canonicalised opaque,
///    and compared in constant time — mismatch ⇒ `InvalidChallenge`;
/// 3. realm, method and intent must equal the route's ⇒ else `InvalidChallenge`;
/// 4. the echoed request must deep-equal `expected_request` (compared canonically) ⇒ else
///    `InvalidChallenge` "credential was issued for a different request" — this binds a
///    payment to its route and price;
/// 5. `expires` must be present and RFC 3339 — a missing or unparsable expiry is
///    `InvalidChallenge` (this server never issues challenges without one); an expiry
///    before `now` is `PaymentExpired`.
///
/// Single use of challenge ids is not checked here.
pub fn verify_echo_at(
    echo: &ChallengeEcho,
    secret_key: &str,
    realm: &str,
    method: &str,
    intent: &str,
    expected_request: &Map<String, Value>,
    now: OffsetDateTime,
) -> Result<DecodedEcho, MppError> {
    verify_echo_canonical_at(echo, secret_key, realm, method, intent, &canonical_json_object(expected_request), now)
}

/// [`verify_echo_at`] against the canonical JSON of the expected request (a route's, computed once).
pub(crate) fn verify_echo_canonical_at(
    echo: &ChallengeEcho,
    secret_key: &str,
    realm: &str,
    method: &str,
    intent: &str,
    expected_canonical: &str,
    now: OffsetDateTime,
) -> Result<DecodedEcho, MppError> {
    let id = echo.id.clone();
    let invalid = |detail: String| MppError::InvalidChallenge { detail, challenge_id: Some(id.clone()) };

    let request = decode_json_object(&echo.request, "challenge.request")?;
    let opaque = match &echo.opaque {
        Some(o) => Some(decode_string_map(o, "challenge.opaque")?),
        None => None,
    };
    let opaque_b64 = opaque.as_ref().map(opaque_b64);
    let input = challenge_hmac_input(
        &echo.realm,
        &echo.method,
        &echo.intent,
        &canonical_b64url(&request),
        echo.expires.as_deref(),
        echo.digest.as_deref(),
        opaque_b64.as_deref(),
    );
    if !id_matches(secret_key, &input, &echo.id) {
        return Err(invalid("challenge id does not match: not issued by this server".to_owned()));
    }
    for (what, echoed, expected) in
        [("realm", &echo.realm, realm), ("method", &echo.method, method), ("intent", &echo.intent, intent)]
    {
        if echoed != expected {
            return Err(invalid(format!("credential was issued for {what} \"{echoed}\", expected \"{expected}\"")));
        }
    }
    if canonical_json_object(&request) != expected_canonical {
        return Err(invalid("credential was issued for a different request".to_owned()));
    }
    let Some(expires) = echo.expires.clone() else {
        return Err(invalid("challenge has no expiry".to_owned()));
    };
    let expires_at =
        parse_rfc3339(&expires).map_err(|_| invalid(format!("challenge expiry \"{expires}\" is not RFC 3339")))?;
    if expires_at < now {
        return Err(MppError::PaymentExpired {
            detail: format!("challenge expired at {expires}"),
            challenge_id: Some(id),
        });
    }
    Ok(DecodedEcho {
        id: echo.id.clone(),
        realm: echo.realm.clone(),
        method: echo.method.clone(),
        intent: echo.intent.clone(),
        request,
        expires,
        expires_at,
        digest: echo.digest.clone(),
        opaque,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mpp::Challenge;
    use crate::mpp::problem::MppErrorKind;
    use serde_json::json;
    use time::macros::datetime;

    const SECRET: &str = "test-mpp-secret";

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!(),
        }
    }

    fn route_request(amount: &str) -> Map<String, Value> {
        obj(json!({
            "amount": amount,
            "currency": "0x779ded0c9e1022225f8e0630b35a9b54be713736",
            "recipient": "0x1111111111111111111111111111111111111111",
            "methodDetails": {"chainId": 196, "feePayer": false}
        }))
    }

    fn challenge() -> Challenge {
        Challenge::new(
            SECRET,
            "api.example.com",
            "evm",
            "charge",
            route_request("10"),
            Some("2026-03-30T10:05:00Z".into()),
            Some("desc".into()),
            None,
            Some(BTreeMap::from([("orderId".to_owned(), "42".to_owned())])),
        )
    }

    const BEFORE: OffsetDateTime = datetime!(2026-03-30 10:00:00 UTC);

    fn verify(
        echo: &ChallengeEcho,
        expected: &Map<String, Value>,
        now: OffsetDateTime,
    ) -> Result<DecodedEcho, MppError> {
        verify_echo_at(echo, SECRET, "api.example.com", "evm", "charge", expected, now)
    }

    #[test]
    fn valid_echo() {
        let c = challenge();
        let d = verify(&c.to_echo(), &route_request("10"), BEFORE).unwrap();
        assert_eq!(d.id, c.id);
        assert_eq!(d.request, c.request);
        assert_eq!(d.expires_at, datetime!(2026-03-30 10:05:00 UTC));
        assert_eq!(d.opaque, c.opaque);
        // Exactly at expiry is still valid (pympp: expired iff expires < now).
        assert!(verify(&c.to_echo(), &route_request("10"), datetime!(2026-03-30 10:05:00 UTC)).is_ok());
    }

    #[test]
    fn echo_with_non_canonical_request_is_recanonicalised() {
        let c = challenge();
        let mut echo = c.to_echo();
        // Same object, insertion order instead of sorted keys.
        echo.request = b64url_encode(serde_json::to_vec(&route_request("10")).unwrap());
        assert_ne!(echo.request, c.request_b64());
        assert!(verify(&echo, &route_request("10"), BEFORE).is_ok());
    }

    #[test]
    fn forged_id() {
        let mut echo = challenge().to_echo();
        echo.id = crate::mpp::compute_challenge_id(
            "wrong-secret",
            &echo.realm,
            &echo.method,
            &echo.intent,
            &echo.request,
            echo.expires.as_deref(),
            None,
            echo.opaque.as_deref(),
        );
        let e = verify(&echo, &route_request("10"), BEFORE).unwrap_err();
        assert_eq!(e.kind(), MppErrorKind::InvalidChallenge);
        assert_eq!(e.challenge_id(), Some(echo.id.as_str()));
        echo.id = "not base64!".into();
        assert_eq!(verify(&echo, &route_request("10"), BEFORE).unwrap_err().kind(), MppErrorKind::InvalidChallenge);
    }

    #[test]
    fn altered_fields_break_the_id() {
        let c = challenge();
        let mut echo = c.to_echo();
        echo.request = canonical_b64url(&route_request("1"));
        assert_eq!(verify(&echo, &route_request("1"), BEFORE).unwrap_err().kind(), MppErrorKind::InvalidChallenge);
        let mut echo = c.to_echo();
        echo.expires = Some("2027-03-30T10:05:00Z".into());
        assert_eq!(verify(&echo, &route_request("10"), BEFORE).unwrap_err().kind(), MppErrorKind::InvalidChallenge);
        let mut echo = c.to_echo();
        echo.opaque = None;
        assert_eq!(verify(&echo, &route_request("10"), BEFORE).unwrap_err().kind(), MppErrorKind::InvalidChallenge);
    }

    #[test]
    fn different_request_is_rejected() {
        // A genuine challenge for amount 10 presented on a route that now charges 11.
        let e = verify(&challenge().to_echo(), &route_request("11"), BEFORE).unwrap_err();
        assert_eq!(e.kind(), MppErrorKind::InvalidChallenge);
        assert_eq!(e.detail(), "credential was issued for a different request");
    }

    #[test]
    fn other_realm_method_intent() {
        let echo = challenge().to_echo();
        let r = &route_request("10");
        for (realm, method, intent) in
            [("other", "evm", "charge"), ("api.example.com", "tempo", "charge"), ("api.example.com", "evm", "session")]
        {
            let e = verify_echo_at(&echo, SECRET, realm, method, intent, r, BEFORE).unwrap_err();
            assert_eq!(e.kind(), MppErrorKind::InvalidChallenge, "{realm} {method} {intent}");
        }
    }

    #[test]
    fn expiry() {
        let c = challenge();
        let e = verify(&c.to_echo(), &route_request("10"), datetime!(2026-03-30 10:05:00.000001 UTC)).unwrap_err();
        assert_eq!(e.kind(), MppErrorKind::PaymentExpired);
        assert!(matches!(e, MppError::PaymentExpired { .. }));

        // Without expires (a validly signed one): InvalidChallenge.
        let mut no_exp = c.clone();
        no_exp.expires = None;
        let no_exp = Challenge::new(SECRET, "api.example.com", "evm", "charge", no_exp.request, None, None, None, None);
        let e = verify(&no_exp.to_echo(), &route_request("10"), BEFORE).unwrap_err();
        assert_eq!((e.kind(), e.detail().as_str()), (MppErrorKind::InvalidChallenge, "challenge has no expiry"));

        // Unparsable (validly signed) expiry: InvalidChallenge.
        let bad = Challenge::new(
            SECRET,
            "api.example.com",
            "evm",
            "charge",
            route_request("10"),
            Some("soon".into()),
            None,
            None,
            None,
        );
        assert_eq!(
            verify(&bad.to_echo(), &route_request("10"), BEFORE).unwrap_err().kind(),
            MppErrorKind::InvalidChallenge
        );

        // `+00:00` offsets are accepted.
        let off = Challenge::new(
            SECRET,
            "api.example.com",
            "evm",
            "charge",
            route_request("10"),
            Some("2026-03-30T10:05:00.5+00:00".into()),
            None,
            None,
            None,
        );
        assert!(verify(&off.to_echo(), &route_request("10"), BEFORE).is_ok());
    }

    #[test]
    fn undecodable_echo_request_is_malformed() {
        let mut echo = challenge().to_echo();
        echo.request = "%%%".into();
        assert_eq!(verify(&echo, &route_request("10"), BEFORE).unwrap_err().kind(), MppErrorKind::MalformedCredential);
    }

    fn cred() -> Credential {
        Credential::new(
            challenge().to_echo(),
            obj(json!({"type": "hash", "hash": "0xcd"})),
            Some("did:pkh:eip155:196:0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266".into()),
        )
    }

    #[test]
    fn header_round_trip_and_scheme_search() {
        let c = cred();
        let h = c.to_authorization_header();
        assert!(h.starts_with("Payment ey"));
        assert_eq!(Credential::from_authorization_header(&h).unwrap(), c);
        let token = c.encode();
        for v in [
            format!("payment {token}"),
            format!("Bearer abc, PAYMENT  {token} "),
            format!("Basic dXNlcjpwYXNz,Payment {token}=="),
        ] {
            assert_eq!(Credential::from_authorization_header(&v).unwrap(), c, "{v}");
        }
        let json = String::from_utf8(c.to_json()).unwrap();
        assert!(json.starts_with("{\"challenge\":{\"expires\":\"2026-03-30T10:05:00Z\",\"id\":"), "{json}");
        assert!(json.ends_with(",\"payload\":{\"hash\":\"0xcd\",\"type\":\"hash\"},\"source\":\"did:pkh:eip155:196:0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266\"}"));
    }

    #[test]
    fn decode_errors() {
        let err = |v: &str| Credential::from_authorization_header(v).unwrap_err();
        assert_eq!(err("Bearer abc"), MppError::Header(HeaderError::NoPaymentScheme));
        assert_eq!(err("Bearer abc").kind(), MppErrorKind::PaymentRequired);
        assert_eq!(err(""), MppError::Header(HeaderError::NoPaymentScheme));
        assert!(matches!(err("Payment"), MppError::Header(HeaderError::MissingField(_))));
        assert!(matches!(err("Payment !!!"), MppError::Header(HeaderError::Base64 { .. })));
        assert!(matches!(
            err(&format!("Payment {}", b64url_encode("{no"))),
            MppError::Header(HeaderError::Json { .. })
        ));
        assert!(matches!(
            err(&format!("Payment {}", b64url_encode("[]"))),
            MppError::Header(HeaderError::WrongType { .. })
        ));
        let big = "A".repeat(MAX_CREDENTIAL_B64_BYTES + 1);
        assert!(matches!(err(&format!("Payment {big}")), MppError::Header(HeaderError::TooLarge { .. })));

        let mut v = cred().to_json_value();
        v["challenge"].as_object_mut().unwrap().remove("intent");
        let e = err(&format!("Payment {}", b64url_encode(v.to_string())));
        assert_eq!(e, MppError::Header(HeaderError::MissingField("challenge.intent".into())));
        assert_eq!(e.kind(), MppErrorKind::MalformedCredential);
        assert_eq!(e.status(), 402);

        let mut v = cred().to_json_value();
        v["challenge"]["expires"] = json!(5);
        assert!(matches!(
            err(&format!("Payment {}", b64url_encode(v.to_string()))),
            MppError::Header(HeaderError::WrongType { field, .. }) if field == "challenge.expires"
        ));
        let mut v = cred().to_json_value();
        v["payload"] = json!("x");
        assert!(matches!(
            err(&format!("Payment {}", b64url_encode(v.to_string()))),
            MppError::Header(HeaderError::WrongType { .. })
        ));
        let mut v = cred().to_json_value();
        v.as_object_mut().unwrap().remove("payload");
        assert!(matches!(
            err(&format!("Payment {}", b64url_encode(v.to_string()))),
            MppError::Header(HeaderError::MissingField(_))
        ));
        let mut v = cred().to_json_value();
        v["challenge"] = json!(null);
        assert!(matches!(
            err(&format!("Payment {}", b64url_encode(v.to_string()))),
            MppError::Header(HeaderError::WrongType { .. })
        ));

        // Tolerated: null optionals, unknown keys.
        let mut v = cred().to_json_value();
        v["source"] = json!(null);
        v["challenge"]["header"] = json!("x");
        let c = Credential::from_json(v.to_string().as_bytes()).unwrap();
        assert_eq!(c.source, None);
    }

    #[test]
    fn dids() {
        let p = cred().payer().unwrap();
        assert_eq!(p.chain_id, 196);
        assert_eq!(p.address, Address::from_str("0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266").unwrap());
        assert_eq!(did_pkh(196, &p.address), "did:pkh:eip155:196:0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266");
        for bad in [
            "did:pkh:eip155:196",
            "did:pkh:eip155::0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266",
            "did:pkh:solana:1:abc",
            "did:pkh:eip155:x:0x00",
            "did:pkh:eip155:1:f39fd6e51aad88f6f4ce6ab8827279cfffb92266",
            "did:pkh:eip155:1:0x12",
        ] {
            assert_eq!(payer_from_did(bad), None, "{bad}");
        }
    }
}
