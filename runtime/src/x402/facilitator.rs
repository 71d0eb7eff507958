//! The [`FacilitatorClient`] trait, its typed errors, and the plain HTTP x402 facilitator client.
//!
//! A facilitator verifies and settles payments for the seller. pay402 ships:
//! * [`HttpFacilitatorClient`] — the standard x402 facilitator API (`/verify`, `/settle`,
//!   `/supported`), e.g. a self-hosted facilitator;
//! * [`crate::okx::OkxFacilitatorClient`] — OKX's hosted facilitator (HMAC-authenticated).

use super::types::{
    PaymentPayload, PaymentRequirements, SettleResponse, SettleStatusResponse, SupportedResponse, VerifyResponse,
    X402_VERSION,
};
use crate::transport::{TransportError, map_reqwest, read_capped, truncate};
use async_trait::async_trait;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::time::Duration;

/// Why a facilitator call failed. Every variant means "the outcome is not a valid answer": a
/// caller settling a payment must treat it as *unknown* and fail closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FacilitatorError {
    /// The facilitator answered with a non-2xx HTTP status.
    #[error("facilitator answered HTTP {status}: {body}")]
    Http {
        /// HTTP status.
        status: u16,
        /// Body text (truncated to 512 bytes).
        body: String,
    },
    /// OKX envelope with a non-zero `code`.
    #[error("facilitator error code {code}: {msg}")]
    Api {
        /// The code, as text (OKX sends numbers or numeric strings).
        code: String,
        /// `msg` (or `error_message`, or "unknown error").
        msg: String,
    },
    /// No answer within the configured timeout.
    #[error("facilitator did not answer within {0:?}")]
    Timeout(Duration),
    /// Connection-level failure (refused, reset, TLS, DNS).
    #[error("cannot reach the facilitator: {0}")]
    Transport(String),
    /// The body is not the JSON expected.
    #[error("facilitator sent a malformed body: {0}")]
    MalformedBody(String),
    /// The operation is not offered by this facilitator.
    #[error("facilitator does not support {0}")]
    Unsupported(&'static str),
    /// Bad client configuration (missing credential, bad URL).
    #[error("facilitator client misconfigured: {0}")]
    Config(String),
}

impl From<TransportError> for FacilitatorError {
    fn from(e: TransportError) -> Self {
        match e {
            TransportError::Timeout(d) => Self::Timeout(d),
            TransportError::Unreachable(m) => Self::Transport(m),
            TransportError::Config(m) => Self::Config(m),
            other => Self::MalformedBody(other.to_string()),
        }
    }
}

impl FacilitatorError {
    /// The HTTP status a seller should answer with when this error stops a request:
    /// 504 for timeouts, 502 for everything the facilitator did wrong, 500 for configuration.
    pub fn http_status(&self) -> u16 {
        match self {
            Self::Timeout(_) => 504,
            Self::Config(_) => 500,
            _ => 502,
        }
    }
}

/// A facilitator: verifies and settles x402 payments.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an x402 facilitator client",
    label = "this does not implement `FacilitatorClient`",
    note = "implement `pay402::x402::FacilitatorClient` (`verify`, `settle`, `supported`; with `#[async_trait]`) for it, or use a built-in one: `x402::HttpFacilitatorClient` (any facilitator's HTTP API), `okx::OkxFacilitatorClient` (OKX's), `x402::EmbeddedFacilitator` (in-process, for tests) or `x402::facilitator_evm::X402Facilitator` (on chain, feature `chain`)"
)]
#[async_trait]
pub trait FacilitatorClient: Send + Sync + 'static {
    /// Verifies `payload` against the seller's `requirements`.
    async fn verify(
        &self,
        payload: &PaymentPayload,
        requirements: &PaymentRequirements,
    ) -> Result<VerifyResponse, FacilitatorError>;

    /// Settles `payload` against the seller's `requirements`.
    async fn settle(
        &self,
        payload: &PaymentPayload,
        requirements: &PaymentRequirements,
    ) -> Result<SettleResponse, FacilitatorError>;

    /// Lists supported (version, scheme, network) kinds.
    async fn supported(&self) -> Result<SupportedResponse, FacilitatorError>;

    /// Queries a settlement's status by transaction hash (OKX `GET /settle/status`).
    async fn settle_status(&self, tx_hash: &str) -> Result<SettleStatusResponse, FacilitatorError> {
        let _ = tx_hash;
        Err(FacilitatorError::Unsupported("settle status queries"))
    }

    /// A short name for logs and errors.
    fn name(&self) -> &str {
        "facilitator"
    }
}

/// Body of `/verify`. Key order: `x402Version`, `paymentPayload`, `paymentRequirements`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct VerifyRequest<'a> {
    pub(crate) x402_version: u32,
    pub(crate) payment_payload: &'a PaymentPayload,
    pub(crate) payment_requirements: &'a PaymentRequirements,
}

/// Body of `/settle`; `syncSettle` only for OKX.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SettleRequest<'a> {
    pub(crate) x402_version: u32,
    pub(crate) payment_payload: &'a PaymentPayload,
    pub(crate) payment_requirements: &'a PaymentRequirements,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) sync_settle: Option<bool>,
}

/// Interprets a facilitator HTTP answer (wire facts §5 "Response handling"): non-2xx ⇒
/// [`FacilitatorError::Http`]; the body must be a JSON object; an OKX envelope
/// `{code, data, msg}` with non-zero `code` (number or numeric string) ⇒
/// [`FacilitatorError::Api`]; `code` 0 with non-null `data` ⇒ `data` is the result; otherwise
/// the whole body is the result. The result must deserialise as `T`.
pub(crate) fn parse_facilitator_body<T: DeserializeOwned>(status: u16, body: &[u8]) -> Result<T, FacilitatorError> {
    if !(200..300).contains(&status) {
        return Err(FacilitatorError::Http { status, body: truncate(body) });
    }
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| FacilitatorError::MalformedBody(format!("not JSON ({e}): {}", truncate(body))))?;
    let serde_json::Value::Object(mut obj) = value else {
        return Err(FacilitatorError::MalformedBody(format!("not a JSON object: {}", truncate(body))));
    };
    let result = match obj.get("code") {
        Some(code) => {
            let code_num = match code {
                serde_json::Value::Number(n) => n.as_i64(),
                serde_json::Value::String(s) => s.trim().parse::<i64>().ok(),
                _ => None,
            };
            let Some(code_num) = code_num else {
                return Err(FacilitatorError::MalformedBody(format!("envelope code `{code}` is not a number")));
            };
            if code_num != 0 {
                let msg = ["msg", "error_message"]
                    .iter()
                    .find_map(|k| obj.get(*k).and_then(|v| v.as_str()).filter(|s| !s.is_empty()))
                    .unwrap_or("unknown error")
                    .to_owned();
                return Err(FacilitatorError::Api { code: code_num.to_string(), msg });
            }
            match obj.remove("data") {
                Some(data) if !data.is_null() => data,
                _ => serde_json::Value::Object(obj),
            }
        }
        None => serde_json::Value::Object(obj),
    };
    serde_json::from_value(result).map_err(|e| FacilitatorError::MalformedBody(e.to_string()))
}

/// Configuration of [`HttpFacilitatorClient`]. `Debug` shows header names, never their values
/// (they usually carry an API key).
#[derive(Clone)]
pub struct HttpFacilitatorConfig {
    /// Base URL; `/verify`, `/settle`, `/supported` are appended.
    pub url: String,
    /// Static headers sent on every request (e.g. an API key).
    pub headers: Vec<(String, String)>,
    /// Per-request timeout (default 30 s).
    pub timeout: Duration,
}

impl std::fmt::Debug for HttpFacilitatorConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let headers: Vec<(&str, &str)> = self.headers.iter().map(|(k, _)| (k.as_str(), "<redacted>")).collect();
        f.debug_struct("HttpFacilitatorConfig")
            .field("url", &self.url)
            .field("headers", &headers)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl HttpFacilitatorConfig {
    /// A config for `url` with no extra headers and a 30 s timeout.
    pub fn new(url: impl Into<String>) -> Self {
        Self { url: url.into(), headers: Vec::new(), timeout: Duration::from_secs(30) }
    }

    /// Adds `Authorization: Bearer <token>` to every request, e.g. for a self-hosted facilitator
    /// served with `x402::facilitator_evm::server::router_with_token` (feature `chain`).
    pub fn bearer_token(mut self, token: &str) -> Self {
        self.headers.push(("Authorization".to_owned(), format!("Bearer {token}")));
        self
    }
}

/// A client for any standard x402 facilitator (`POST /verify`, `POST /settle`, `GET /supported`),
/// plus `GET /settle/status?txHash=` for facilitators that serve it (OKX's, and pay402's own
/// `x402::facilitator_evm` server, feature `chain`), so a seller can recover a settlement that was still
/// pending when `/settle` answered.
#[derive(Clone, Debug)]
pub struct HttpFacilitatorClient {
    /// `/verify`, `/settle`, `/supported` and `/settle/status`, parsed once (not per call).
    verify_url: url::Url,
    settle_url: url::Url,
    supported_url: url::Url,
    settle_status_url: url::Url,
    headers: reqwest::header::HeaderMap,
    timeout: Duration,
    http: reqwest::Client,
}

impl HttpFacilitatorClient {
    /// Builds a client. Fails on an unparsable URL or header.
    pub fn new(config: HttpFacilitatorConfig) -> Result<Self, FacilitatorError> {
        Self::with_http_client(config, reqwest::Client::new())
    }

    /// Builds a client sharing an existing `reqwest::Client` (connection pool).
    pub fn with_http_client(config: HttpFacilitatorConfig, http: reqwest::Client) -> Result<Self, FacilitatorError> {
        let base = config.url.trim_end_matches('/').to_owned();
        let parse = |path: &str| {
            url::Url::parse(&format!("{base}{path}"))
                .map_err(|e| FacilitatorError::Config(format!("facilitator URL `{base}`: {e}")))
        };
        url::Url::parse(&base).map_err(|e| FacilitatorError::Config(format!("facilitator URL `{base}`: {e}")))?;
        let (verify_url, settle_url, supported_url) = (parse("/verify")?, parse("/settle")?, parse("/supported")?);
        let settle_status_url = parse("/settle/status")?;
        let mut headers = reqwest::header::HeaderMap::new();
        for (k, v) in &config.headers {
            let name = reqwest::header::HeaderName::from_bytes(k.as_bytes())
                .map_err(|e| FacilitatorError::Config(format!("header name `{k}`: {e}")))?;
            let mut value = reqwest::header::HeaderValue::from_str(v)
                .map_err(|e| FacilitatorError::Config(format!("header `{k}` value: {e}")))?;
            // Static headers usually carry credentials: keep them out of `Debug` output.
            value.set_sensitive(true);
            headers.insert(name, value);
        }
        Ok(Self { verify_url, settle_url, supported_url, settle_status_url, headers, timeout: config.timeout, http })
    }

    async fn send<T: DeserializeOwned>(&self, mut req: reqwest::RequestBuilder) -> Result<T, FacilitatorError> {
        if !self.headers.is_empty() {
            req = req.headers(self.headers.clone());
        }
        let resp = req.timeout(self.timeout).send().await.map_err(|e| map_reqwest(e, self.timeout))?;
        let (status, body) = read_capped(resp, self.timeout).await?;
        parse_facilitator_body(status, &body)
    }

    async fn post<B: Serialize, T: DeserializeOwned>(&self, url: &url::Url, body: &B) -> Result<T, FacilitatorError> {
        let bytes = crate::json::compact(body).map_err(|e| FacilitatorError::Config(e.to_string()))?;
        let req = self.http.post(url.clone()).header(reqwest::header::CONTENT_TYPE, "application/json").body(bytes);
        self.send(req).await
    }
}

#[async_trait]
impl FacilitatorClient for HttpFacilitatorClient {
    async fn verify(
        &self,
        payload: &PaymentPayload,
        requirements: &PaymentRequirements,
    ) -> Result<VerifyResponse, FacilitatorError> {
        let body =
            VerifyRequest { x402_version: X402_VERSION, payment_payload: payload, payment_requirements: requirements };
        self.post(&self.verify_url, &body).await
    }

    async fn settle(
        &self,
        payload: &PaymentPayload,
        requirements: &PaymentRequirements,
    ) -> Result<SettleResponse, FacilitatorError> {
        let body = SettleRequest {
            x402_version: X402_VERSION,
            payment_payload: payload,
            payment_requirements: requirements,
            sync_settle: None,
        };
        self.post(&self.settle_url, &body).await
    }

    async fn supported(&self) -> Result<SupportedResponse, FacilitatorError> {
        self.send(self.http.get(self.supported_url.clone())).await
    }

    /// `GET /settle/status?txHash=…`. A facilitator that does not serve it answers an error
    /// (e.g. 404), which the resource server treats as an unknown outcome: it fails closed.
    async fn settle_status(&self, tx_hash: &str) -> Result<SettleStatusResponse, FacilitatorError> {
        let mut url = self.settle_status_url.clone();
        url.query_pairs_mut().append_pair("txHash", tx_hash);
        self.send(self.http.get(url)).await
    }

    fn name(&self) -> &str {
        "http"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_rules() {
        let ok: VerifyResponse =
            parse_facilitator_body(200, br#"{"code":0,"data":{"isValid":true},"msg":""}"#).unwrap();
        assert!(ok.is_valid);
        let ok: VerifyResponse = parse_facilitator_body(200, br#"{"code":"0","data":{"isValid":true}}"#).unwrap();
        assert!(ok.is_valid);
        let raw: VerifyResponse = parse_facilitator_body(200, br#"{"isValid":false,"invalidReason":"x"}"#).unwrap();
        assert_eq!(raw.invalid_reason.as_deref(), Some("x"));
        let e = parse_facilitator_body::<VerifyResponse>(200, br#"{"code":"50001","msg":"bad"}"#).unwrap_err();
        assert_eq!(e, FacilitatorError::Api { code: "50001".into(), msg: "bad".into() });
        let e = parse_facilitator_body::<VerifyResponse>(200, br#"{"code":7,"error_message":"em"}"#).unwrap_err();
        assert_eq!(e, FacilitatorError::Api { code: "7".into(), msg: "em".into() });
        let e = parse_facilitator_body::<VerifyResponse>(200, br#"{"code":7}"#).unwrap_err();
        assert_eq!(e, FacilitatorError::Api { code: "7".into(), msg: "unknown error".into() });
        assert!(matches!(
            parse_facilitator_body::<VerifyResponse>(500, b"oops"),
            Err(FacilitatorError::Http { status: 500, .. })
        ));
        assert!(matches!(
            parse_facilitator_body::<VerifyResponse>(200, b"<html>"),
            Err(FacilitatorError::MalformedBody(_))
        ));
        assert!(matches!(
            parse_facilitator_body::<VerifyResponse>(200, b"[1]"),
            Err(FacilitatorError::MalformedBody(_))
        ));
        assert!(matches!(
            parse_facilitator_body::<VerifyResponse>(200, br#"{"code":0,"data":{"x":1}}"#),
            Err(FacilitatorError::MalformedBody(_))
        ));
    }
}
