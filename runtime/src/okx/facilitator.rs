//! OKX's hosted x402 facilitator (`/api/v6/pay/x402/*`, wire facts §5).

use super::auth::{Clock, OkxSigner, TimestampFormat};
use super::transport::{Endpoint, OkxTransport, okx_config};
use crate::x402::{FacilitatorClient, FacilitatorError, SettleRequest, VerifyRequest, parse_facilitator_body};
use crate::x402::{
    PaymentPayload, PaymentRequirements, SettleResponse, SettleStatusResponse, SupportedResponse, VerifyResponse,
    X402_VERSION,
};
use async_trait::async_trait;
use serde::de::DeserializeOwned;
use tracing::Instrument as _;

/// OKX's API host.
/// Base path of the x402 facilitator API.
pub const OKX_X402_BASE_PATH: &str = "/api/v6/pay/x402";

okx_config! {
    /// Configuration of [`OkxFacilitatorClient`]. `Debug` redacts the secret and passphrase.
    pub struct OkxFacilitatorConfig for FacilitatorError {
        /// Sent as `syncSettle` on every settle: `true` waits for the chain (answers `success` or
        /// `timeout`), `false` answers at once with `pending`. Default `true`.
        pub sync_settle: bool = true,
    }
}

impl OkxFacilitatorConfig {
    /// Sets `syncSettle`.
    pub fn sync_settle(mut self, sync: bool) -> Self {
        self.sync_settle = sync;
        self
    }
}

/// Client for OKX's hosted x402 facilitator.
///
/// Every request carries `Content-Type: application/json` and the four `OK-ACCESS-*` headers.
/// Bodies are serialised like OKX's Python SDK (`json.dumps` defaults: `", "`, `": "`,
/// ASCII-escaped) and the signature covers exactly the bytes sent.
#[derive(Clone, Debug)]
pub struct OkxFacilitatorClient {
    transport: OkxTransport,
    sync_settle: bool,
    verify: Endpoint,
    settle: Endpoint,
    supported: Endpoint,
}

impl OkxFacilitatorClient {
    /// Builds a client; fails when a credential is empty or the base URL is not a URL.
    pub fn new(config: OkxFacilitatorConfig) -> Result<Self, FacilitatorError> {
        let sync_settle = config.sync_settle;
        let transport =
            OkxTransport::new(config.into_transport_settings(), OKX_X402_BASE_PATH, TimestampFormat::Millis)
                .map_err(FacilitatorError::Config)?;
        Ok(Self {
            sync_settle,
            verify: transport.endpoint("/verify"),
            settle: transport.endpoint("/settle"),
            supported: transport.endpoint("/supported"),
            transport,
        })
    }

    /// Replaces the clock used for `OK-ACCESS-TIMESTAMP` (reproducible signatures in tests).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.transport = self.transport.with_clock(clock);
        self
    }

    /// The request signer (shared with other OKX clients).
    pub fn signer(&self) -> &OkxSigner {
        self.transport.signer()
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        endpoint: &Endpoint,
        body: Vec<u8>,
    ) -> Result<T, FacilitatorError> {
        let (status, bytes) = self.transport.send(method, endpoint, body).await?;
        parse_facilitator_body(status, &bytes)
    }
}

/// Percent-encodes everything outside `A-Z a-z 0-9 - _ . ~` (a no-op for `0x…` hashes).
fn encode_query_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[async_trait]
impl FacilitatorClient for OkxFacilitatorClient {
    async fn verify(
        &self,
        payload: &PaymentPayload,
        requirements: &PaymentRequirements,
    ) -> Result<VerifyResponse, FacilitatorError> {
        let body = crate::json::python(&VerifyRequest {
            x402_version: X402_VERSION,
            payment_payload: payload,
            payment_requirements: requirements,
        })
        .map_err(|e| FacilitatorError::Config(e.to_string()))?;
        self.call(reqwest::Method::POST, &self.verify, body).instrument(tracing::debug_span!("okx.x402.verify")).await
    }

    async fn settle(
        &self,
        payload: &PaymentPayload,
        requirements: &PaymentRequirements,
    ) -> Result<SettleResponse, FacilitatorError> {
        let body = crate::json::python(&SettleRequest {
            x402_version: X402_VERSION,
            payment_payload: payload,
            payment_requirements: requirements,
            sync_settle: Some(self.sync_settle),
        })
        .map_err(|e| FacilitatorError::Config(e.to_string()))?;
        self.call(reqwest::Method::POST, &self.settle, body)
            .instrument(tracing::debug_span!("okx.x402.settle", sync = self.sync_settle))
            .await
    }

    async fn supported(&self) -> Result<SupportedResponse, FacilitatorError> {
        self.call(reqwest::Method::GET, &self.supported, Vec::new())
            .instrument(tracing::debug_span!("okx.x402.supported"))
            .await
    }

    async fn settle_status(&self, tx_hash: &str) -> Result<SettleStatusResponse, FacilitatorError> {
        let endpoint = self.transport.endpoint(&format!("/settle/status?txHash={}", encode_query_value(tx_hash)));
        self.call(reqwest::Method::GET, &endpoint, Vec::new())
            .instrument(tracing::debug_span!("okx.x402.settle_status", tx = tx_hash))
            .await
    }

    fn name(&self) -> &str {
        "okx"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::okx::OkxCredentials;

    #[test]
    fn config_errors_are_typed() {
        let e = OkxFacilitatorClient::new(OkxFacilitatorConfig::new(OkxCredentials::new("k", "", "p"))).unwrap_err();
        assert!(matches!(e, FacilitatorError::Config(ref m) if m.contains("secret_key")));
        let e =
            OkxFacilitatorClient::new(OkxFacilitatorConfig::new(OkxCredentials::new("k", "s", "p")).base_url("nope"))
                .unwrap_err();
        assert!(matches!(e, FacilitatorError::Config(_)));
        let e = OkxFacilitatorClient::new(
            OkxFacilitatorConfig::new(OkxCredentials::new("k", "s", "p")).base_url("https://h/?a=1"),
        )
        .unwrap_err();
        assert!(matches!(e, FacilitatorError::Config(ref m) if m.contains("query")));
    }

    #[test]
    fn endpoints_include_base_path() {
        let c = OkxFacilitatorClient::new(
            OkxFacilitatorConfig::new(OkxCredentials::new("k", "s", "p")).base_url("http://127.0.0.1:9/"),
        )
        .unwrap();
        assert_eq!(c.verify.url, "http://127.0.0.1:9/api/v6/pay/x402/verify");
        assert_eq!(c.verify.signed_path, "/api/v6/pay/x402/verify");
        let d = OkxFacilitatorClient::new(OkxFacilitatorConfig::new(OkxCredentials::new("k", "s", "p")).base_url(""))
            .unwrap();
        assert_eq!(d.settle.url, "https://web3.okx.com/api/v6/pay/x402/settle");
        assert_eq!(encode_query_value("0xab&x=1"), "0xab%26x%3D1");
    }
}
