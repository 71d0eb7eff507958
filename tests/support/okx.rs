//! The local OKX stand-ins' own re-check of a signed request: the `OK-ACCESS-*` headers, the
//! timestamp format, and the HMAC recomputed here with hmac/sha2/base64 — never with pay402's
//! own signer, so a bug there cannot hide itself.

use axum::http::{HeaderMap, Method};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The credentials a stand-in expects.
pub(crate) struct OkxKeys<'a> {
    pub(crate) api_key: &'a str,
    pub(crate) secret: &'a str,
    pub(crate) passphrase: &'a str,
}

/// The `OK-ACCESS-TIMESTAMP` format a stand-in expects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TimestampFormat {
    /// `YYYY-MM-DDTHH:MM:SSZ` (OKX's Python SA client sends no fraction).
    Seconds,
    /// `YYYY-MM-DDTHH:MM:SS.mmmZ`.
    Millis,
}

/// `YYYY-MM-DDTHH:MM:SSZ`.
pub(crate) fn is_seconds_timestamp(ts: &str) -> bool {
    has_shape(ts, b"dddd-dd-ddTdd:dd:ddZ")
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub(crate) fn is_millis_timestamp(ts: &str) -> bool {
    has_shape(ts, b"dddd-dd-ddTdd:dd:dd.dddZ")
}

fn has_shape(ts: &str, shape: &[u8]) -> bool {
    ts.len() == shape.len()
        && ts.bytes().zip(shape).all(|(b, &want)| if want == b'd' { b.is_ascii_digit() } else { b == want })
}

/// The stand-in's own `OK-ACCESS-SIGN`: base64(HMAC-SHA256(secret, ts + METHOD + path + body)).
pub(crate) fn okx_signature(secret: &str, timestamp: &str, method: &str, path_and_query: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC key");
    mac.update(timestamp.as_bytes());
    mac.update(method.as_bytes());
    mac.update(path_and_query.as_bytes());
    mac.update(body);
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// Checks the JSON content type, the `OK-ACCESS-*` headers, the timestamp format and the
/// signature; returns the problems found (empty = accepted).
pub(crate) fn check_okx_headers(
    keys: &OkxKeys<'_>,
    format: TimestampFormat,
    method: &Method,
    path_and_query: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Vec<String> {
    let mut problems = Vec::new();
    let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if get("content-type") != Some("application/json") {
        problems.push(format!("Content-Type is {:?}, want application/json", get("content-type")));
    }
    if get("ok-access-key") != Some(keys.api_key) {
        problems.push(format!("OK-ACCESS-KEY is {:?}", get("ok-access-key")));
    }
    if get("ok-access-passphrase") != Some(keys.passphrase) {
        problems.push(format!("OK-ACCESS-PASSPHRASE is {:?}", get("ok-access-passphrase")));
    }
    let timestamp = get("ok-access-timestamp").unwrap_or_default();
    let (well_formed, shape) = match format {
        TimestampFormat::Seconds => (is_seconds_timestamp(timestamp), "YYYY-MM-DDTHH:MM:SSZ"),
        TimestampFormat::Millis => (is_millis_timestamp(timestamp), "YYYY-MM-DDTHH:MM:SS.mmmZ"),
    };
    if !well_formed {
        problems.push(format!("OK-ACCESS-TIMESTAMP `{timestamp}` is not {shape}"));
    }
    let want = okx_signature(keys.secret, timestamp, method.as_str(), path_and_query, body);
    if get("ok-access-sign") != Some(want.as_str()) {
        problems.push(format!("bad OK-ACCESS-SIGN {:?} (want {want})", get("ok-access-sign")));
    }
    problems
}
