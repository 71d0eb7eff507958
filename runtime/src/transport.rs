//! The outbound HTTP exchange every remote call shares — the x402 facilitator clients and OKX's
//! APIs: a body read capped at [`MAX_RESPONSE_BYTES`], reqwest errors mapped to one typed
//! [`TransportError`], and error-message truncation. Each client turns a [`TransportError`] into
//! its own error type (`From` impls) and keeps its own answer interpretation.

use std::time::Duration;

/// Largest response body pay402 reads from a facilitator or an OKX API (1 MiB).
pub const MAX_RESPONSE_BYTES: usize = 1024 * 1024;

/// Why an outbound HTTP exchange produced no answer to interpret. Every variant leaves the
/// remote outcome unknown: a caller settling a payment must fail closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// No (complete) answer within the timeout.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// Connection-level failure (refused, reset, TLS, DNS), with reqwest's source chain.
    #[error("cannot reach the remote: {0}")]
    Unreachable(String),
    /// The request could not be built (bad URL or header).
    #[error("bad request configuration: {0}")]
    Config(String),
    /// The answer is larger than [`MAX_RESPONSE_BYTES`].
    #[error("response larger than {MAX_RESPONSE_BYTES} bytes")]
    TooLarge,
}

/// Reads a response: its status and its body, at most [`MAX_RESPONSE_BYTES`].
pub(crate) async fn read_capped(
    mut resp: reqwest::Response,
    timeout: Duration,
) -> Result<(u16, Vec<u8>), TransportError> {
    let status = resp.status().as_u16();
    let mut body = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                    return Err(TransportError::TooLarge);
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok((status, body)),
            Err(e) => return Err(map_reqwest(e, timeout)),
        }
    }
}

/// Maps a reqwest error to a [`TransportError`] (`timeout` is the bound that was applied).
pub(crate) fn map_reqwest(e: reqwest::Error, timeout: Duration) -> TransportError {
    if e.is_timeout() {
        TransportError::Timeout(timeout)
    } else if e.is_builder() {
        TransportError::Config(e.to_string())
    } else {
        // Include the source chain: reqwest's top-level message alone is vague.
        let mut msg = e.to_string();
        let mut src = std::error::Error::source(&e);
        while let Some(s) = src {
            msg.push_str(": ");
            msg.push_str(&s.to_string());
            src = s.source();
        }
        TransportError::Unreachable(msg)
    }
}

/// `text` as (lossy) UTF-8, cut to 512 bytes with `…` appended when longer.
pub(crate) fn truncate(text: &[u8]) -> String {
    let s = String::from_utf8_lossy(text);
    if s.len() > 512 {
        let mut end = 512;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}…", &s[..end])
    } else {
        s.into_owned()
    }
}
