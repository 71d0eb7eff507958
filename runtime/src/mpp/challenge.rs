//! The MPP challenge (wire facts §8.1-§8.3, §8.7): fields, the HMAC-bound id, the
//! `WWW-Authenticate: Payment` rendering and the 402 problem body.

use super::echo::{ChallengeEcho, challenge_hmac_input, compute_challenge_id, id_matches, opaque_b64};
use super::encoding::canonical_b64url;
use super::error::MppError;
use super::header::write_param;
use super::problem::{MppErrorKind, ProblemDetails, payment_required_detail};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// An MPP challenge as a server issues it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Challenge {
    /// `base64url_nopad(HMAC-SHA256(secret, realm|method|intent|request_b64|expires|digest|opaque_b64))`.
    pub id: String,
    /// Protection space (the server's realm).
    pub realm: String,
    /// Payment method id (`evm` for OKX).
    pub method: String,
    /// Intent (`charge` or `session`).
    pub intent: String,
    /// The request object (serialised canonically on the wire).
    pub request: Map<String, Value>,
    /// RFC 3339 expiry.
    pub expires: Option<String>,
    /// Human-readable description (not bound into the id).
    pub description: Option<String>,
    /// Body digest (e.g. `sha-256=:…:`).
    pub digest: Option<String>,
    /// Server-defined string map echoed back by the client (pympp `meta`).
    pub opaque: Option<BTreeMap<String, String>>,
}

impl Challenge {
    /// Builds a challenge and computes its id with `secret_key`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        secret_key: &str,
        realm: impl Into<String>,
        method: impl Into<String>,
        intent: impl Into<String>,
        request: Map<String, Value>,
        expires: Option<String>,
        description: Option<String>,
        digest: Option<String>,
        opaque: Option<BTreeMap<String, String>>,
    ) -> Self {
        let mut challenge = Self {
            id: String::new(),
            realm: realm.into(),
            method: method.into(),
            intent: intent.into(),
            request,
            expires,
            description,
            digest,
            opaque,
        };
        challenge.id = compute_challenge_id(
            secret_key,
            &challenge.realm,
            &challenge.method,
            &challenge.intent,
            &challenge.request_b64(),
            challenge.expires.as_deref(),
            challenge.digest.as_deref(),
            challenge.opaque_b64().as_deref(),
        );
        challenge
    }

    /// The `request` parameter: base64url (no padding) of the RFC 8785 canonical request.
    pub fn request_b64(&self) -> String {
        canonical_b64url(&self.request)
    }

    /// The `opaque` parameter: base64url (no padding) of the canonical opaque map.
    pub fn opaque_b64(&self) -> Option<String> {
        self.opaque.as_ref().map(opaque_b64)
    }

    /// The exact string the id is the HMAC of.
    pub fn hmac_input(&self) -> String {
        challenge_hmac_input(
            &self.realm,
            &self.method,
            &self.intent,
            &self.request_b64(),
            self.expires.as_deref(),
            self.digest.as_deref(),
            self.opaque_b64().as_deref(),
        )
    }

    /// Whether `id` is the HMAC of this challenge under `secret_key` (constant-time).
    pub fn verify_id(&self, secret_key: &str) -> bool {
        id_matches(secret_key, &self.hmac_input(), &self.id)
    }

    /// The `WWW-Authenticate` value: `Payment id="…", realm="…", method="…", intent="…",
    /// request="…"`, then `digest`, `expires`, `description`, `opaque` when set (pympp order).
    ///
    /// Values are quoted (`\` → `\\`, `"` → `\"`); a value containing CR or LF is
    /// [`HeaderError::InvalidParamValue`](super::HeaderError::InvalidParamValue).
    pub fn to_www_authenticate(&self) -> Result<String, MppError> {
        let request_b64 = self.request_b64();
        let opaque_b64 = self.opaque_b64();
        let mut out = String::from("Payment ");
        let params: [(&str, Option<&str>); 9] = [
            ("id", Some(&self.id)),
            ("realm", Some(&self.realm)),
            ("method", Some(&self.method)),
            ("intent", Some(&self.intent)),
            ("request", Some(&request_b64)),
            ("digest", self.digest.as_deref()),
            ("expires", self.expires.as_deref()),
            ("description", self.description.as_deref()),
            ("opaque", opaque_b64.as_deref()),
        ];
        let mut first = true;
        for (name, value) in params {
            if let Some(value) = value {
                if !first {
                    out.push_str(", ");
                }
                first = false;
                write_param(&mut out, name, value)?;
            }
        }
        Ok(out)
    }

    /// The body of the 402 answer (pympp `make_challenge_response`): `payment-required`, detail
    /// `Payment is required for "<realm>" (<description>).`, this challenge's id. Send it with
    /// [`ProblemDetails::to_python_json`] as `application/problem+json`.
    pub fn problem_details(&self) -> ProblemDetails {
        MppErrorKind::PaymentRequired
            .problem(payment_required_detail(&self.realm, self.description.as_deref()), Some(self.id.clone()))
    }

    /// What a client echoes in its credential (`description` is not echoed, as pympp 0.8.2
    /// expects).
    pub fn to_echo(&self) -> ChallengeEcho {
        ChallengeEcho {
            id: self.id.clone(),
            realm: self.realm.clone(),
            method: self.method.clone(),
            intent: self.intent.clone(),
            request: self.request_b64(),
            expires: self.expires.clone(),
            digest: self.digest.clone(),
            opaque: self.opaque_b64(),
            description: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn request() -> Map<String, Value> {
        let Value::Object(m) = json!({
            "amount": "10",
            "currency": "0x779ded0c9e1022225f8e0630b35a9b54be713736",
            "recipient": "0x1111111111111111111111111111111111111111",
            "methodDetails": {"chainId": 196, "feePayer": false}
        }) else {
            unreachable!()
        };
        m
    }

    #[test]
    fn golden_charge_id() {
        let c = Challenge::new(
            "test-mpp-secret",
            "api.example.com",
            "evm",
            "charge",
            request(),
            Some("2026-03-30T10:05:00Z".into()),
            None,
            None,
            None,
        );
        assert_eq!(c.id, "Nq9__nZ5IwYUW5g-ufO4EQNrj74QkopYc0nM4AuOAuM");
        assert!(c.hmac_input().ends_with("|2026-03-30T10:05:00Z||"));
        assert!(c.verify_id("test-mpp-secret"));
        assert!(!c.verify_id("other"));
        let mut forged = c.clone();
        forged.id = "Nq9__nZ5IwYUW5g-ufO4EQNrj74QkopYc0nM4AuOAuN".into();
        assert!(!forged.verify_id("test-mpp-secret"));
        forged.id = "!!".into();
        assert!(!forged.verify_id("test-mpp-secret"));
        // Same bytes under a lenient decoder (trailing bits / padding): still refused.
        for alias in ["Nq9__nZ5IwYUW5g-ufO4EQNrj74QkopYc0nM4AuOAuN", "Nq9__nZ5IwYUW5g-ufO4EQNrj74QkopYc0nM4AuOAuM="] {
            forged.id = alias.into();
            assert!(!forged.verify_id("test-mpp-secret"), "{alias}");
        }
    }

    #[test]
    fn www_authenticate_quotes_and_rejects_crlf() {
        let mut c = Challenge::new("k", "r", "evm", "charge", request(), None, None, None, None);
        c.description = Some("say \"hi\" \\o/".into());
        let h = c.to_www_authenticate().unwrap();
        assert!(h.ends_with(r#", description="say \"hi\" \\o/""#), "{h}");
        c.description = Some("a\r\nb".into());
        assert!(matches!(
            c.to_www_authenticate(),
            Err(MppError::Header(crate::mpp::HeaderError::InvalidParamValue(p))) if p == "description"
        ));
        c.description = None;
        c.realm = "x\ny".into();
        assert!(c.to_www_authenticate().is_err());
    }
}
