//! The [`SaClient`] trait and [`OkxSaClient`], the HMAC-authenticated client of OKX's
//! Settlement Agent for MPP (`/api/v6/pay/mpp/*`, wire facts §9.7).

use super::errors::{SaError, map_sa_error};
use super::types::{
    ChargeReceipt, ChargeSettleRequest, ChargeVerifyHashRequest, SessionCloseRequest, SessionOpenRequest,
    SessionReceipt, SessionSettleRequest, SessionStatus, SessionTopUpRequest,
};
use crate::okx::auth::{Clock, OkxSigner, TimestampFormat};
use crate::okx::transport::{Endpoint, OkxTransport, okx_config};
use crate::transport::truncate;
use async_trait::async_trait;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tracing::Instrument as _;

/// Base path of the SA API.
pub const OKX_MPP_BASE_PATH: &str = "/api/v6/pay/mpp";

/// The seven SA operations (Python `mpp_evm.saclient.SAClient`).
///
/// `settle`/`verify_hash` serve the charge intent, `session_open`/`session_top_up` pass a
/// client's session credential through, `session_settle`/`session_close` are built by the
/// merchant, and `session_status` is a read-only query.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a Settlement-Agent client",
    label = "this does not implement `SaClient`",
    note = "implement `pay402::okx::sa::SaClient` (one method per SA endpoint; with `#[async_trait]`) for it, or use a built-in one: `okx::sa::OkxSaClient` (OKX's SA) or `mpp::EmbeddedSa` (in-process, for tests)"
)]
#[async_trait]
pub trait SaClient: Send + Sync + 'static {
    /// `POST charge/settle`: the SA broadcasts the EIP-3009 transfer.
    async fn settle(&self, req: &ChargeSettleRequest) -> Result<ChargeReceipt, SaError>;
    /// `POST charge/verifyHash`: the SA verifies a transaction the client broadcast.
    async fn verify_hash(&self, req: &ChargeVerifyHashRequest) -> Result<ChargeReceipt, SaError>;
    /// `POST session/open`.
    async fn session_open(&self, req: &SessionOpenRequest) -> Result<SessionReceipt, SaError>;
    /// `POST session/topUp`.
    async fn session_top_up(&self, req: &SessionTopUpRequest) -> Result<SessionReceipt, SaError>;
    /// `POST session/settle`.
    async fn session_settle(&self, req: &SessionSettleRequest) -> Result<SessionReceipt, SaError>;
    /// `POST session/close`.
    async fn session_close(&self, req: &SessionCloseRequest) -> Result<SessionReceipt, SaError>;
    /// `GET session/status?channelId=<id>`.
    async fn session_status(&self, channel_id: &str) -> Result<SessionStatus, SaError>;
}

okx_config! {
    /// Configuration of [`OkxSaClient`]. `Debug` redacts the secret and passphrase.
    pub struct OkxSaConfig for SaError {}
}

/// Client of OKX's Settlement Agent for MPP.
///
/// Like OKX's Python `OKXSAClient`: bodies are compact, ASCII-escaped JSON in the documented key
/// order ([`crate::json::compact_ascii`]); `OK-ACCESS-TIMESTAMP` has no fractional seconds
/// (`2026-03-30T10:00:00Z`); the signed path includes the query; every request (GET too)
/// carries `Content-Type: application/json`.
///
/// Answers: HTTP status ≠ 200 ⇒ [`SaError::Http`]; the body must be a JSON object
/// `{code, msg, data}` whose `code` is an integer or a string of ASCII digits (anything else,
/// including a missing `code`, ⇒ [`SaError::Malformed`] — OKX's Python client treats a
/// non-numeric string code as success, pay402 fails closed); `code ≠ 0` ⇒ [`SaError::Api`]
/// mapped by [`map_sa_error`] with `msg` as detail (kept for the logs; buyers get the class
/// only, [`SaError::payment_error`]); `code = 0` ⇒ `data`, which must be a JSON object, is
/// deserialised as the receipt; `data` missing, `null` or not an object, or a receipt that does
/// not deserialise ⇒ [`SaError::Malformed`]. OKX's Python client turns a missing or `null`
/// `data` into `{}`; pay402 fails closed (a proxy's bare `{"code":0}` is not a settlement).
/// Whether a receipt's content is acceptable (status, challenge id, reference) is decided by
/// its caller (the charge intent checks charge receipts). Bodies larger than 1 MiB are
/// refused.
#[derive(Clone, Debug)]
pub struct OkxSaClient {
    transport: OkxTransport,
    charge_settle: Endpoint,
    charge_verify_hash: Endpoint,
    session_open: Endpoint,
    session_top_up: Endpoint,
    session_settle: Endpoint,
    session_close: Endpoint,
}

impl OkxSaClient {
    /// Builds a client; fails when a credential is empty or the base URL is not a URL.
    pub fn new(config: OkxSaConfig) -> Result<Self, SaError> {
        let transport =
            OkxTransport::new(config.into_transport_settings(), OKX_MPP_BASE_PATH, TimestampFormat::Seconds)
                .map_err(SaError::Config)?;
        Ok(Self {
            charge_settle: transport.endpoint("/charge/settle"),
            charge_verify_hash: transport.endpoint("/charge/verifyHash"),
            session_open: transport.endpoint("/session/open"),
            session_top_up: transport.endpoint("/session/topUp"),
            session_settle: transport.endpoint("/session/settle"),
            session_close: transport.endpoint("/session/close"),
            transport,
        })
    }

    /// Replaces the clock used for `OK-ACCESS-TIMESTAMP` (reproducible signatures in tests).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.transport = self.transport.with_clock(clock);
        self
    }

    /// The request signer.
    pub fn signer(&self) -> &OkxSigner {
        self.transport.signer()
    }

    async fn post<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        endpoint: &Endpoint,
        body: &B,
    ) -> Result<T, SaError> {
        let body = crate::json::compact_ascii(body).map_err(|e| SaError::Config(format!("request body: {e}")))?;
        self.call(reqwest::Method::POST, endpoint, body).await
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        endpoint: &Endpoint,
        body: Vec<u8>,
    ) -> Result<T, SaError> {
        let (status, bytes) = self.transport.send(method, endpoint, body).await?;
        let result = parse_sa_body(status, &bytes);
        if let Err(e) = &result {
            tracing::debug!(error = %e, "SA call failed");
        }
        result
    }
}

fn truncate_value(v: &Value) -> String {
    truncate(v.to_string().as_bytes())
}

/// Interprets an SA answer (see [`OkxSaClient`]).
fn parse_sa_body<T: DeserializeOwned>(status: u16, body: &[u8]) -> Result<T, SaError> {
    if status != 200 {
        return Err(SaError::Http { status, body: truncate(body) });
    }
    let value: Value =
        serde_json::from_slice(body).map_err(|e| SaError::Malformed(format!("not JSON ({e}): {}", truncate(body))))?;
    let Value::Object(mut envelope) = value else {
        return Err(SaError::Malformed(format!("not a JSON object: {}", truncate(body))));
    };
    let code = match envelope.get("code") {
        Some(Value::Number(n)) => n.as_i64(),
        Some(Value::String(s)) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => s.parse::<i64>().ok(),
        _ => None,
    };
    let Some(code) = code else {
        let shown = envelope.get("code").map_or_else(|| "missing".to_owned(), Value::to_string);
        return Err(SaError::Malformed(format!("envelope code {shown} is not an integer")));
    };
    if code != 0 {
        let msg = match envelope.get("msg") {
            Some(Value::String(s)) => s.clone(),
            None | Some(Value::Null) => String::new(),
            Some(other) => other.to_string(),
        };
        return Err(SaError::Api { code, error: map_sa_error(code, &msg) });
    }
    let data = match envelope.remove("data") {
        // F10: an envelope that claims success without data is not a settlement.
        None | Some(Value::Null) if crate::reverts::is_reverted(crate::reverts::Fix::F10SaFailClosed) => {
            Value::Object(serde_json::Map::new())
        }
        None | Some(Value::Null) => return Err(SaError::Malformed("code 0 without data".to_owned())),
        Some(d @ Value::Object(_)) => d,
        Some(other) => return Err(SaError::Malformed(format!("data is not an object: {}", truncate_value(&other)))),
    };
    serde_json::from_value(data).map_err(|e| SaError::Malformed(format!("data: {e}")))
}

/// `application/x-www-form-urlencoded` query from parameters sorted by name, like Python's
/// `urlencode(sorted(params.items()))`: `A-Z a-z 0-9 _ . - ~` are kept, space is `+`,
/// everything else `%XX`.
fn sorted_query(params: &[(&str, &str)]) -> String {
    fn encode(s: &str, out: &mut String) {
        for b in s.bytes() {
            match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'.' | b'-' | b'~' => out.push(char::from(b)),
                b' ' => out.push('+'),
                _ => out.push_str(&format!("%{b:02X}")),
            }
        }
    }
    let mut sorted = params.to_vec();
    sorted.sort_unstable();
    let mut out = String::new();
    for (i, (k, v)) in sorted.into_iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        encode(k, &mut out);
        out.push('=');
        encode(v, &mut out);
    }
    out
}

/// `impl SaClient for OkxSaClient`: each POST method sends its request to the endpoint of the
/// same name, in a debug span keyed by the challenge or channel; `session_status` is given as is.
macro_rules! sa_client_impl {
    (
        post { $( $method:ident($request:ty) -> $receipt:ty => $endpoint:ident, $span:literal, $key:ident = $($field:ident).+; )* }
        $($rest:tt)*
    ) => {
        #[async_trait]
        impl SaClient for OkxSaClient {
            $(
                async fn $method(&self, req: &$request) -> Result<$receipt, SaError> {
                    self.post(&self.$endpoint, req).instrument(tracing::debug_span!($span, $key = %req.$($field).+)).await
                }
            )*
            $($rest)*
        }
    };
}

sa_client_impl! {
    post {
        settle(ChargeSettleRequest) -> ChargeReceipt => charge_settle, "okx.mpp.charge_settle", challenge = challenge.id;
        verify_hash(ChargeVerifyHashRequest) -> ChargeReceipt
            => charge_verify_hash, "okx.mpp.charge_verify_hash", challenge = challenge.id;
        session_open(SessionOpenRequest) -> SessionReceipt
            => session_open, "okx.mpp.session_open", channel = payload.channel_id;
        session_top_up(SessionTopUpRequest) -> SessionReceipt
            => session_top_up, "okx.mpp.session_top_up", channel = payload.channel_id;
        session_settle(SessionSettleRequest) -> SessionReceipt
            => session_settle, "okx.mpp.session_settle", channel = payload.channel_id;
        session_close(SessionCloseRequest) -> SessionReceipt
            => session_close, "okx.mpp.session_close", channel = payload.channel_id;
    }

    async fn session_status(&self, channel_id: &str) -> Result<SessionStatus, SaError> {
        let endpoint =
            self.transport.endpoint(&format!("/session/status?{}", sorted_query(&[("channelId", channel_id)])));
        self.call(reqwest::Method::GET, &endpoint, Vec::new())
            .instrument(tracing::debug_span!("okx.mpp.session_status", channel = channel_id))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::okx::OkxCredentials;
    use crate::okx::sa::EvmPaymentError;

    fn creds() -> OkxCredentials {
        OkxCredentials::new("k", "s", "p")
    }

    #[test]
    fn endpoints_and_base_url() {
        let c = OkxSaClient::new(OkxSaConfig::new(creds()).base_url("http://127.0.0.1:9/")).unwrap();
        assert_eq!(c.session_top_up.url, "http://127.0.0.1:9/api/v6/pay/mpp/session/topUp");
        assert_eq!(c.charge_verify_hash.signed_path, "/api/v6/pay/mpp/charge/verifyHash");
        let d = OkxSaClient::new(OkxSaConfig::new(creds()).base_url("  ")).unwrap();
        assert_eq!(d.charge_settle.url, "https://web3.okx.com/api/v6/pay/mpp/charge/settle");
        let p = OkxSaClient::new(OkxSaConfig::new(creds()).base_url("https://gw.example/okx/")).unwrap();
        assert_eq!(p.session_close.url, "https://gw.example/okx/api/v6/pay/mpp/session/close");
        assert_eq!(p.session_close.signed_path, "/okx/api/v6/pay/mpp/session/close");
        assert!(matches!(OkxSaClient::new(OkxSaConfig::new(creds()).base_url("nope")), Err(SaError::Config(_))));
        assert!(matches!(
            OkxSaClient::new(OkxSaConfig::new(OkxCredentials::new("k", "", "p"))),
            Err(SaError::Config(ref m)) if m.contains("secret_key")
        ));
    }

    #[test]
    fn query_is_sorted_and_python_encoded() {
        assert_eq!(sorted_query(&[("channelId", "0xab")]), "channelId=0xab");
        assert_eq!(sorted_query(&[("b", "a b~*/"), ("a", "1")]), "a=1&b=a+b~%2A%2F");
    }

    #[test]
    fn envelopes() {
        let ok: ChargeReceipt = parse_sa_body(200, br#"{"code":"0","msg":"","data":{"reference":"0x1"}}"#).unwrap();
        assert_eq!(ok.reference, "0x1");
        for no_data in [&br#"{"code":0,"data":null}"#[..], br#"{"code":0}"#, br#"{"code":"0","msg":"ok"}"#] {
            assert!(matches!(parse_sa_body::<ChargeReceipt>(200, no_data), Err(SaError::Malformed(_))));
        }
        let e = parse_sa_body::<ChargeReceipt>(200, br#"{"code":"70010","msg":"gone"}"#).unwrap_err();
        assert_eq!(e, SaError::Api { code: 70010, error: EvmPaymentError::ChannelNotFound("gone".into()) });
        for bad in [&br#"{"code":"ok"}"#[..], br#"{"msg":""}"#, br#"{"code":""}"#, br#"{"code":1.5}"#, b"[]", b"x"] {
            assert!(matches!(parse_sa_body::<ChargeReceipt>(200, bad), Err(SaError::Malformed(_))));
        }
        assert!(matches!(parse_sa_body::<ChargeReceipt>(200, br#"{"code":0,"data":[1]}"#), Err(SaError::Malformed(_))));
        assert!(matches!(parse_sa_body::<ChargeReceipt>(201, b"{}"), Err(SaError::Http { status: 201, .. })));
    }
}
