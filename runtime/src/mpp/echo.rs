//! The challenge's identity, shared by the challenge a server issues, the echo a credential
//! carries and the parsed `WWW-Authenticate` header: the HMAC input, the challenge id and its
//! constant-time check, and the echo itself. The bottom of the MPP wire: it imports no other
//! message module, so `challenge`, `credential` and `header` all build on it without a cycle.

use super::encoding::{b64url_encode, canonical_b64url};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde_json::{Map, Value};
use sha2::Sha256;
use std::collections::BTreeMap;

/// The challenge as a client echoes it in its credential.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChallengeEcho {
    /// Challenge id.
    pub id: String,
    /// Realm.
    pub realm: String,
    /// Payment method.
    pub method: String,
    /// Intent.
    pub intent: String,
    /// The challenge's `request` parameter (base64url), verbatim.
    pub request: String,
    /// Expiry, verbatim.
    pub expires: Option<String>,
    /// Body digest.
    pub digest: Option<String>,
    /// The challenge's `opaque` parameter (base64url), verbatim.
    pub opaque: Option<String>,
    /// Description (sent by pympp ≥ 0.15 only; not bound into the id).
    pub description: Option<String>,
}

/// base64url (no padding) of the canonical JSON of an opaque map.
pub fn opaque_b64(opaque: &BTreeMap<String, String>) -> String {
    let map: Map<String, Value> = opaque.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect();
    canonical_b64url(&map)
}

/// `realm|method|intent|request_b64|expires|digest|opaque_b64`, absent optionals empty.
pub fn challenge_hmac_input(
    realm: &str,
    method: &str,
    intent: &str,
    request_b64: &str,
    expires: Option<&str>,
    digest: Option<&str>,
    opaque_b64: Option<&str>,
) -> String {
    [realm, method, intent, request_b64, expires.unwrap_or(""), digest.unwrap_or(""), opaque_b64.unwrap_or("")]
        .join("|")
}

/// The challenge id: `base64url_nopad(HMAC-SHA256(secret_key, challenge_hmac_input(…)))`.
#[allow(clippy::too_many_arguments)]
pub fn compute_challenge_id(
    secret_key: &str,
    realm: &str,
    method: &str,
    intent: &str,
    request_b64: &str,
    expires: Option<&str>,
    digest: Option<&str>,
    opaque_b64: Option<&str>,
) -> String {
    let input = challenge_hmac_input(realm, method, intent, request_b64, expires, digest, opaque_b64);
    b64url_encode(mac(secret_key, &input).finalize().into_bytes())
}

fn mac(secret_key: &str, input: &str) -> Hmac<Sha256> {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret_key.as_bytes()) else {
        unreachable!("HMAC accepts keys of any length")
    };
    mac.update(input.as_bytes());
    mac
}

/// Whether `id` is the HMAC of `input`, compared in constant time.
///
/// The id is decoded strictly (URL-safe alphabet, no padding, zero trailing bits), so exactly
/// one string matches: a lenient decode would accept e.g. `…AuN` for `…AuM`, and a
/// single-use store keyed by the id string could then be bypassed.
pub(crate) fn id_matches(secret_key: &str, input: &str, id: &str) -> bool {
    match URL_SAFE_NO_PAD.decode(id) {
        Ok(tag) => mac(secret_key, input).verify_slice(&tag).is_ok(),
        Err(_) => false,
    }
}
