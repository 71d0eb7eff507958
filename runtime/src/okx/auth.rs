//! OKX API request signing (`OK-ACCESS-*` headers), shared by the x402 facilitator client and
//! the MPP Settlement-Agent client.
//!
//! `OK-ACCESS-SIGN = base64(HMAC-SHA256(secret, timestamp + METHOD + requestPath + body))`,
//! where `requestPath` includes the base path and the query string, and `body` is exactly the
//! bytes sent (`""` for GET).

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;
use time::OffsetDateTime;
use time::format_description::FormatItem;
use time::macros::format_description;

/// `OK-ACCESS-KEY`.
pub const OK_ACCESS_KEY: &str = "OK-ACCESS-KEY";
/// `OK-ACCESS-SIGN`.
pub const OK_ACCESS_SIGN: &str = "OK-ACCESS-SIGN";
/// `OK-ACCESS-TIMESTAMP`.
pub const OK_ACCESS_TIMESTAMP: &str = "OK-ACCESS-TIMESTAMP";
/// `OK-ACCESS-PASSPHRASE`.
pub const OK_ACCESS_PASSPHRASE: &str = "OK-ACCESS-PASSPHRASE";

/// OKX API credentials. `Debug` never prints the secret or the passphrase.
#[derive(Clone, PartialEq, Eq)]
pub struct OkxCredentials {
    /// API key (`OK-ACCESS-KEY`).
    pub api_key: String,
    /// Secret used for the HMAC.
    pub secret_key: String,
    /// Passphrase (`OK-ACCESS-PASSPHRASE`).
    pub passphrase: String,
}

impl fmt::Debug for OkxCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OkxCredentials")
            .field("api_key", &self.api_key)
            .field("secret_key", &"<redacted>")
            .field("passphrase", &"<redacted>")
            .finish()
    }
}

impl OkxCredentials {
    /// Bundles the three credentials.
    pub fn new(api_key: impl Into<String>, secret_key: impl Into<String>, passphrase: impl Into<String>) -> Self {
        Self { api_key: api_key.into(), secret_key: secret_key.into(), passphrase: passphrase.into() }
    }

    /// Reads `OKX_API_KEY`, `OKX_SECRET_KEY` and `OKX_PASSPHRASE`. `Ok(None)` when none is set;
    /// an error naming the missing variables when only some are.
    pub fn from_env() -> Result<Option<Self>, String> {
        let vars = ["OKX_API_KEY", "OKX_SECRET_KEY", "OKX_PASSPHRASE"];
        let values: Vec<Option<String>> =
            vars.iter().map(|v| std::env::var(v).ok().filter(|s| !s.is_empty())).collect();
        if values.iter().all(Option::is_none) {
            return Ok(None);
        }
        let missing: Vec<&str> = vars.iter().zip(&values).filter(|(_, v)| v.is_none()).map(|(n, _)| *n).collect();
        if !missing.is_empty() {
            return Err(format!("OKX credentials incomplete: {} not set", missing.join(", ")));
        }
        let mut it = values.into_iter().flatten();
        match (it.next(), it.next(), it.next()) {
            (Some(k), Some(s), Some(p)) => Ok(Some(Self::new(k, s, p))),
            _ => Err("OKX credentials incomplete".into()),
        }
    }

    /// Checks that all three are non-empty.
    pub fn validate(&self) -> Result<(), String> {
        let missing: Vec<&str> =
            [("api_key", &self.api_key), ("secret_key", &self.secret_key), ("passphrase", &self.passphrase)]
                .iter()
                .filter(|(_, v)| v.is_empty())
                .map(|(n, _)| *n)
                .collect();
        if missing.is_empty() { Ok(()) } else { Err(format!("OKX {} must not be empty", missing.join(", "))) }
    }
}

/// Timestamp style of `OK-ACCESS-TIMESTAMP`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimestampFormat {
    /// `2026-03-30T10:00:00.123Z` (x402 facilitator; milliseconds truncated).
    Millis,
    /// `2026-03-30T10:00:00Z` (Python MPP SA client).
    Seconds,
}

const MILLIS: &[FormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
const SECONDS: &[FormatItem<'static>] = format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");

/// A source of the current time (injectable for reproducible signatures in tests).
pub type Clock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

/// Signs OKX API requests.
#[derive(Clone)]
pub struct OkxSigner {
    credentials: OkxCredentials,
    format: TimestampFormat,
    clock: Clock,
}

impl fmt::Debug for OkxSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OkxSigner").field("credentials", &self.credentials).field("format", &self.format).finish()
    }
}

impl OkxSigner {
    /// A signer using the system clock.
    pub fn new(credentials: OkxCredentials, format: TimestampFormat) -> Self {
        Self { credentials, format, clock: Arc::new(SystemTime::now) }
    }

    /// Replaces the clock (for reproducing fixed signatures).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// The credentials.
    pub fn credentials(&self) -> &OkxCredentials {
        &self.credentials
    }

    /// Formats a time as an `OK-ACCESS-TIMESTAMP` (UTC).
    pub fn format_timestamp(&self, at: SystemTime) -> String {
        let dt = OffsetDateTime::from(at);
        let fmt = match self.format {
            TimestampFormat::Millis => MILLIS,
            TimestampFormat::Seconds => SECONDS,
        };
        // Formatting a valid UTC date with a static description cannot fail; fall back to the
        // RFC 3339 form rather than panicking.
        dt.format(fmt).unwrap_or_else(|_| dt.unix_timestamp().to_string())
    }

    /// The `OK-ACCESS-SIGN` value for the given prehash parts.
    pub fn sign(&self, timestamp: &str, method: &str, request_path: &str, body: &[u8]) -> String {
        sign(&self.credentials.secret_key, timestamp, method, request_path, body)
    }

    /// The four `OK-ACCESS-*` headers for a request made now.
    pub fn headers(&self, method: &str, request_path: &str, body: &[u8]) -> [(&'static str, String); 4] {
        let timestamp = self.format_timestamp((self.clock)());
        let signature = self.sign(&timestamp, method, request_path, body);
        [
            (OK_ACCESS_KEY, self.credentials.api_key.clone()),
            (OK_ACCESS_SIGN, signature),
            (OK_ACCESS_TIMESTAMP, timestamp),
            (OK_ACCESS_PASSPHRASE, self.credentials.passphrase.clone()),
        ]
    }
}

/// `base64(HMAC-SHA256(secret, timestamp + METHOD + request_path + body))`.
pub fn sign(secret: &str, timestamp: &str, method: &str, request_path: &str, body: &[u8]) -> String {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        unreachable!("HMAC accepts keys of any length")
    };
    mac.update(timestamp.as_bytes());
    mac.update(method.to_ascii_uppercase().as_bytes());
    mac.update(request_path.as_bytes());
    mac.update(body);
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn timestamps_truncate() {
        let s = OkxSigner::new(OkxCredentials::new("k", "s", "p"), TimestampFormat::Millis);
        let t = UNIX_EPOCH + Duration::from_nanos(1_774_864_800_123_999_999);
        assert_eq!(s.format_timestamp(t), "2026-03-30T10:00:00.123Z");
        let s = OkxSigner::new(OkxCredentials::new("k", "s", "p"), TimestampFormat::Seconds);
        assert_eq!(s.format_timestamp(t), "2026-03-30T10:00:00Z");
    }

    #[test]
    fn debug_redacts() {
        let c = OkxCredentials::new("key", "topsecret", "pass-phrase");
        let d = format!("{:?}", OkxSigner::new(c, TimestampFormat::Millis));
        assert!(d.contains("key") && !d.contains("topsecret") && !d.contains("pass-phrase"));
    }
}
