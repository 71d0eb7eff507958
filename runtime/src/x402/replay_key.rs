//! The replay key of an x402 payment: payer + nonce for EVM authorizations, a digest of the
//! canonical payload otherwise, and when it expires.

use super::types::{PaymentPayload, PaymentRequirements};
use sha2::Digest as _;

/// Seconds a replay key outlives the route's `maxTimeoutSeconds` (clock skew between seller,
/// facilitator and chain).
pub const REPLAY_SKEW_SECONDS: u64 = 60;

/// The replay key of a payment and when it expires, or `None` when its authorization does not
/// have the expected shape (refused before anything is reserved).
///
/// EVM authorizations (`authorization`, `permit2Authorization`) are keyed by payer + nonce,
/// which must be 20 and 32 bytes of `0x` hex (a Permit2 nonce may also be a decimal uint256):
/// nothing attacker-sized enters the store. Anything else is keyed by a SHA-256 of the payload's
/// canonical JSON (sorted keys, no whitespace, integral numbers written as integers), so
/// reordering fields or re-spelling numbers does not give a new key. Keys expire at
/// `min(validBefore, now + maxTimeoutSeconds + REPLAY_SKEW_SECONDS)`: an authorization dated a
/// year ahead does not hold a key for a year (a later replay still meets the facilitator's
/// on-chain nonce check).
pub(super) fn replay_key(payload: &PaymentPayload, req: &PaymentRequirements, now: u64) -> Option<(String, u64)> {
    let ceiling = now.saturating_add(req.max_timeout_seconds.max(60)).saturating_add(REPLAY_SKEW_SECONDS);
    let (auth, permit2) = match (payload.payload.get("authorization"), payload.payload.get("permit2Authorization")) {
        (Some(a), _) => (Some(a), false),
        (None, Some(a)) => (Some(a), true),
        (None, None) => (None, false),
    };
    if let Some(auth) = auth {
        let auth = auth.as_object()?;
        let from = auth.get("from")?.as_str().filter(|f| is_hex_bytes(f, 20))?;
        let nonce =
            auth.get("nonce")?.as_str().filter(|n| is_hex_bytes(n, 32) || (permit2 && is_uint256_decimal(n)))?;
        let expiry = auth
            .get("validBefore")
            .or_else(|| auth.get("deadline"))
            .and_then(|v| v.as_str().and_then(|s| s.parse::<u64>().ok()).or_else(|| v.as_u64()))
            .map_or(ceiling, |valid_before| valid_before.min(ceiling));
        let key = format!("x402:{}:{}:{}", req.network, from.to_ascii_lowercase(), nonce.to_ascii_lowercase());
        return Some((key, expiry));
    }
    let mut canonical = String::new();
    canonical_json(&serde_json::Value::Object(payload.payload.clone()), &mut canonical);
    let digest = sha2::Sha256::digest(canonical.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    Some((format!("x402:{}:sha256:{hex}", req.network), ceiling))
}

/// `0x` followed by exactly `bytes` bytes of hex.
fn is_hex_bytes(s: &str, bytes: usize) -> bool {
    s.len() == 2 + 2 * bytes
        && s.get(..2).is_some_and(|p| p.eq_ignore_ascii_case("0x"))
        && s.bytes().skip(2).all(|b| b.is_ascii_hexdigit())
}

/// A decimal number of at most 78 digits (the width of a uint256).
fn is_uint256_decimal(s: &str) -> bool {
    !s.is_empty() && s.len() <= 78 && s.bytes().all(|b| b.is_ascii_digit())
}

/// Canonical JSON: object keys sorted, no whitespace, integral numbers without a fraction.
fn canonical_json(value: &serde_json::Value, out: &mut String) {
    use serde_json::Value;
    use std::fmt::Write as _;
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&serde_json::to_string(k).unwrap_or_default());
                out.push(':');
                if let Some(v) = map.get(k) {
                    canonical_json(v, out);
                }
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical_json(v, out);
            }
            out.push(']');
        }
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                let _ = write!(out, "{i}");
            } else if let Some(u) = n.as_u64() {
                let _ = write!(out, "{u}");
            } else {
                match n.as_f64() {
                    Some(f) if f.fract() == 0.0 && f.abs() < 9.007_199_254_740_992e15 => {
                        let _ = write!(out, "{f:.0}");
                    }
                    _ => out.push_str(&n.to_string()),
                }
            }
        }
        other => out.push_str(&other.to_string()),
    }
}
