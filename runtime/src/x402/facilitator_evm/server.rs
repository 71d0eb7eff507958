//! The standard x402 facilitator HTTP API over any [`FacilitatorClient`] (typically an
//! [`X402Facilitator`](super::X402Facilitator)), as an axum router (features `chain` + `axum`).
//!
//! | Method | Path | Body | Answer |
//! |---|---|---|---|
//! | POST | `/verify` | `{"x402Version", "paymentPayload", "paymentRequirements"}` | `VerifyResponse` |
//! | POST | `/settle` | the same, plus an optional `"syncSettle"` (ignored: settlement always waits for the receipt, up to the scheme's timeout) | `SettleResponse` |
//! | GET | `/supported` | — | `SupportedResponse` |
//! | GET | `/settle/status?txHash=0x…` | — | `SettleStatusResponse` |
//!
//! [`router`] has no authentication: anyone who reaches it can make the facilitator's key pay
//! the gas of valid settlements. [`router_with_token`] requires `Authorization: Bearer <token>`
//! on `/verify`, `/settle` and `/settle/status` (401 `unauthorized` otherwise; `/supported`
//! stays public); sellers send it with
//! [`HttpFacilitatorConfig::bearer_token`](crate::x402::HttpFacilitatorConfig::bearer_token).
//!
//! These are the bodies [`HttpFacilitatorClient`](crate::x402::HttpFacilitatorClient) and the
//! Python SDK's HTTP facilitator client send. A rejected payment is a normal `200` answer
//! (`isValid: false` / `success: false` with the reason); errors are JSON
//! `{"error": "<code>", "message": "<text>"}` with status 400 (bad body), 401 (missing or wrong
//! bearer token, [`router_with_token`] only), 413 (body larger than
//! [`MAX_BODY_BYTES`]), 415 (a `Content-Type` other than JSON), 404 (unknown transaction),
//! 502/504 (the chain could not be asked) or 500.

use crate::x402::{FacilitatorClient, FacilitatorError};
use crate::x402::{PaymentPayload, PaymentRequirements, X402_VERSION};
use axum::Json;
use axum::body::Bytes;
use axum::extract::Request;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::fmt;
use std::sync::Arc;

/// Largest request body accepted (64 KiB; an x402 payment is well under 4 KiB).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The body of `POST /verify`.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VerifyRequestBody {
    /// The protocol version (2).
    pub x402_version: u32,
    /// The buyer's payment.
    pub payment_payload: PaymentPayload,
    /// The seller's requirements.
    pub payment_requirements: PaymentRequirements,
}

/// The body of `POST /settle`.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SettleRequestBody {
    /// The protocol version (2).
    pub x402_version: u32,
    /// The buyer's payment.
    pub payment_payload: PaymentPayload,
    /// The seller's requirements.
    pub payment_requirements: PaymentRequirements,
    /// OKX's synchronous-settlement flag; accepted and ignored.
    #[serde(default)]
    pub sync_settle: Option<bool>,
}

/// Why a facilitator HTTP request failed; answered as `{"error", "message"}` JSON.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FacilitatorServerError {
    /// The body is not the expected JSON (400).
    #[error("invalid request body: {0}")]
    InvalidBody(String),
    /// The body is not declared as JSON (415).
    #[error("the body must be application/json")]
    NotJson,
    /// The body exceeds [`MAX_BODY_BYTES`] or could not be read (413 / 400).
    #[error("{message}")]
    BodyRejected {
        /// HTTP status.
        status: StatusCode,
        /// Why.
        message: String,
    },
    /// The body's `x402Version` is not served (400).
    #[error("x402Version {0} is not supported (only {X402_VERSION})")]
    UnsupportedVersion(u32),
    /// `txHash` is missing (400).
    #[error("query parameter txHash is required")]
    MissingTxHash,
    /// The bearer token is missing or wrong (401; [`router_with_token`] only).
    #[error("a valid `Authorization: Bearer <token>` header is required")]
    Unauthorized,
    /// The facilitator failed (unsupported: 404; chain unreachable: 502/504; misconfigured: 500).
    #[error(transparent)]
    Facilitator(#[from] FacilitatorError),
}

impl FacilitatorServerError {
    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::InvalidBody(_) | Self::UnsupportedVersion(_) | Self::MissingTxHash => StatusCode::BAD_REQUEST,
            Self::NotJson => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::BodyRejected { status, .. } => *status,
            Self::Facilitator(FacilitatorError::Unsupported(_)) => StatusCode::NOT_FOUND,
            Self::Facilitator(e) => StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::BAD_GATEWAY),
        }
    }

    /// The machine-readable `error` code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidBody(_) => "invalid_request",
            Self::NotJson => "unsupported_media_type",
            Self::Unauthorized => "unauthorized",
            Self::BodyRejected { status, .. } if *status == StatusCode::PAYLOAD_TOO_LARGE => "body_too_large",
            Self::BodyRejected { .. } => "invalid_request",
            Self::UnsupportedVersion(_) => "invalid_x402_version",
            Self::MissingTxHash => "invalid_request",
            Self::Facilitator(FacilitatorError::Unsupported(_)) => "not_found",
            Self::Facilitator(FacilitatorError::Timeout(_)) => "upstream_timeout",
            Self::Facilitator(FacilitatorError::Config(_)) => "facilitator_misconfigured",
            Self::Facilitator(_) => "upstream_unavailable",
        }
    }
}

impl IntoResponse for FacilitatorServerError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!(error = %self, "x402 facilitator server: request failed");
        }
        let mut response =
            (status, Json(serde_json::json!({ "error": self.code(), "message": self.to_string() }))).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// Shortest bearer token [`BearerToken::new`] accepts.
pub const MIN_TOKEN_CHARS: usize = 16;

/// Why a bearer token was refused by [`BearerToken::new`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// Fewer than [`MIN_TOKEN_CHARS`] characters.
    #[error("the facilitator token must have at least {MIN_TOKEN_CHARS} characters")]
    TooShort,
    /// A character that is not visible ASCII (spaces and control characters included).
    #[error("the facilitator token must be visible ASCII without spaces")]
    InvalidCharacter,
}

/// The shared secret [`router_with_token`] requires as `Authorization: Bearer <token>`.
///
/// Only its SHA-256 digest is kept; presented tokens are hashed and compared in constant time,
/// so neither the token's bytes nor its length leak through timing. `Debug` shows nothing.
#[derive(Clone)]
pub struct BearerToken {
    digest: [u8; 32],
}

impl fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BearerToken(<redacted>)")
    }
}

impl BearerToken {
    /// A token of at least [`MIN_TOKEN_CHARS`] visible ASCII characters (e.g. 32 random bytes
    /// in hex: `openssl rand -hex 32`).
    pub fn new(token: &str) -> Result<Self, TokenError> {
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(TokenError::InvalidCharacter);
        }
        if token.len() < MIN_TOKEN_CHARS {
            return Err(TokenError::TooShort);
        }
        Ok(Self { digest: Sha256::digest(token.as_bytes()).into() })
    }

    /// Whether `presented` is this token, compared in constant time over the digests.
    pub fn matches(&self, presented: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let difference = self.digest.iter().zip(digest.iter()).fold(0u8, |acc, (a, b)| acc | (a ^ b));
        std::hint::black_box(difference) == 0
    }

    /// Whether `headers` carry `Authorization: Bearer <this token>` (scheme case-insensitive).
    fn authorizes(&self, headers: &HeaderMap) -> bool {
        let mut values = headers.get_all(header::AUTHORIZATION).iter();
        let (Some(value), None) = (values.next(), values.next()) else {
            return false;
        };
        let Ok(value) = value.to_str() else {
            return false;
        };
        match value.split_once(' ') {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => self.matches(token.trim()),
            _ => false,
        }
    }
}

/// Refuses requests without the bearer token, before their body is read.
async fn require_token(
    State(token): State<Arc<BearerToken>>,
    request: Request,
    next: Next,
) -> Result<Response, FacilitatorServerError> {
    if token.authorizes(request.headers()) {
        Ok(next.run(request).await)
    } else {
        tracing::debug!(path = %request.uri().path(), "x402 facilitator server: request without a valid token refused");
        Err(FacilitatorServerError::Unauthorized)
    }
}

impl From<BytesRejection> for FacilitatorServerError {
    fn from(rejection: BytesRejection) -> Self {
        Self::BodyRejected { status: rejection.status(), message: rejection.body_text() }
    }
}

/// Parses a JSON body. A `Content-Type`, when present, must be `application/json` (parameters
/// allowed); a missing one is read as JSON, as other x402 facilitators do.
fn parse_body<T: for<'de> Deserialize<'de>>(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<T, FacilitatorServerError> {
    let body = body?;
    let is_json = headers.get(header::CONTENT_TYPE).is_none_or(|v| {
        v.to_str()
            .ok()
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"))
    });
    if !is_json {
        return Err(FacilitatorServerError::NotJson);
    }
    serde_json::from_slice(&body).map_err(|e| FacilitatorServerError::InvalidBody(e.to_string()))
}

fn check_version(version: u32) -> Result<(), FacilitatorServerError> {
    if version == X402_VERSION { Ok(()) } else { Err(FacilitatorServerError::UnsupportedVersion(version)) }
}

async fn verify<F: FacilitatorClient>(
    State(facilitator): State<Arc<F>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, FacilitatorServerError> {
    let request: VerifyRequestBody = parse_body(&headers, body)?;
    check_version(request.x402_version)?;
    let answer = facilitator.verify(&request.payment_payload, &request.payment_requirements).await?;
    Ok(Json(answer).into_response())
}

async fn settle<F: FacilitatorClient>(
    State(facilitator): State<Arc<F>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, FacilitatorServerError> {
    let request: SettleRequestBody = parse_body(&headers, body)?;
    check_version(request.x402_version)?;
    let answer = facilitator.settle(&request.payment_payload, &request.payment_requirements).await?;
    Ok(Json(answer).into_response())
}

async fn supported<F: FacilitatorClient>(
    State(facilitator): State<Arc<F>>,
) -> Result<Response, FacilitatorServerError> {
    Ok(Json(facilitator.supported().await?).into_response())
}

/// `?txHash=` of `GET /settle/status`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct StatusQuery {
    tx_hash: Option<String>,
}

async fn settle_status<F: FacilitatorClient>(
    State(facilitator): State<Arc<F>>,
    query: Result<Query<StatusQuery>, QueryRejection>,
) -> Result<Response, FacilitatorServerError> {
    let Query(query) = query.map_err(|e| FacilitatorServerError::InvalidBody(e.body_text()))?;
    let tx_hash = query.tx_hash.filter(|t| !t.is_empty()).ok_or(FacilitatorServerError::MissingTxHash)?;
    Ok(Json(facilitator.settle_status(&tx_hash).await?).into_response())
}

/// The facilitator HTTP API over `facilitator` (see the module docs), with a
/// [`MAX_BODY_BYTES`] body limit and **no authentication**: anyone who can reach it can make
/// the facilitator's key pay gas. Serve it only on a private network or behind an
/// authenticating proxy, or use [`router_with_token`]. Mount it at the root, or nest it under a
/// prefix.
pub fn router<F: FacilitatorClient>(facilitator: Arc<F>) -> axum::Router {
    paying_routes::<F>()
        .route("/supported", get(supported::<F>))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(facilitator)
}

/// [`router`] requiring `Authorization: Bearer <token>` on `POST /verify`, `POST /settle` and
/// `GET /settle/status`: without it (or with another token) they answer 401 `unauthorized`
/// before reading the body. `GET /supported` stays public.
pub fn router_with_token<F: FacilitatorClient>(facilitator: Arc<F>, token: BearerToken) -> axum::Router {
    let guarded =
        paying_routes::<F>().route_layer(axum::middleware::from_fn_with_state(Arc::new(token), require_token));
    guarded
        .route("/supported", get(supported::<F>))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(facilitator)
}

/// The routes that can spend the facilitator's gas or reveal its settlements.
fn paying_routes<F: FacilitatorClient>() -> axum::Router<Arc<F>> {
    axum::Router::new()
        .route("/verify", post(verify::<F>))
        .route("/settle", post(settle::<F>))
        .route("/settle/status", get(settle_status::<F>))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::x402::{SettleResponse, SupportedResponse, VerifyResponse};
    use async_trait::async_trait;
    use std::time::Duration;

    /// A facilitator whose every call fails with the given error.
    struct Failing(FacilitatorError);

    #[async_trait]
    impl FacilitatorClient for Failing {
        async fn verify(
            &self,
            _: &PaymentPayload,
            _: &PaymentRequirements,
        ) -> Result<VerifyResponse, FacilitatorError> {
            Err(self.0.clone())
        }
        async fn settle(
            &self,
            _: &PaymentPayload,
            _: &PaymentRequirements,
        ) -> Result<SettleResponse, FacilitatorError> {
            Err(self.0.clone())
        }
        async fn supported(&self) -> Result<SupportedResponse, FacilitatorError> {
            Err(self.0.clone())
        }
    }

    async fn serve<F: FacilitatorClient>(f: F) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, router(Arc::new(f))).await });
        base
    }

    const BODY: &str = r#"{"x402Version":2,"paymentPayload":{"x402Version":2,"payload":{},"accepted":{"scheme":"exact","network":"eip155:196","asset":"0x779ded0c9e1022225f8e0630b35a9b54be713736","amount":"1","payTo":"0x1111111111111111111111111111111111111111","maxTimeoutSeconds":60,"extra":{}}},"paymentRequirements":{"scheme":"exact","network":"eip155:196","asset":"0x779ded0c9e1022225f8e0630b35a9b54be713736","amount":"1","payTo":"0x1111111111111111111111111111111111111111","maxTimeoutSeconds":60,"extra":{}},"syncSettle":true}"#;

    async fn call(base: &str, method: &str, path: &str) -> (u16, serde_json::Value) {
        let http = reqwest::Client::new();
        let req = match method {
            "GET" => http.get(format!("{base}{path}")),
            _ => http.post(format!("{base}{path}")).header("content-type", "application/json").body(BODY),
        };
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        (status, serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap())
    }

    #[tokio::test]
    async fn facilitator_errors_map_to_statuses_and_codes() {
        let cases = [
            (FacilitatorError::Transport("rpc down".into()), 502, "upstream_unavailable"),
            (FacilitatorError::Timeout(Duration::from_secs(1)), 504, "upstream_timeout"),
            (FacilitatorError::Config("bad key".into()), 500, "facilitator_misconfigured"),
            (FacilitatorError::Unsupported("that"), 404, "not_found"),
        ];
        for (error, status, code) in cases {
            let base = serve(Failing(error.clone())).await;
            for (method, path) in [("POST", "/verify"), ("POST", "/settle"), ("GET", "/supported")] {
                let (got, body) = call(&base, method, path).await;
                assert_eq!((got, body["error"].as_str()), (status, Some(code)), "{method} {path}: {body}");
                assert_eq!(body["message"], error.to_string());
            }
        }
    }

    #[test]
    fn bearer_tokens_are_validated_matched_exactly_and_redacted() {
        assert_eq!(BearerToken::new("short").unwrap_err(), TokenError::TooShort);
        assert_eq!(BearerToken::new("has a space in it!!").unwrap_err(), TokenError::InvalidCharacter);
        assert_eq!(BearerToken::new("tab\tin-the-token-0123").unwrap_err(), TokenError::InvalidCharacter);
        let token = BearerToken::new("0123456789abcdef").unwrap();
        assert!(token.matches("0123456789abcdef"));
        for other in ["", "0123456789abcde", "0123456789abcdef0", "0123456789ABCDEF"] {
            assert!(!token.matches(other), "{other}");
        }
        assert_eq!(format!("{token:?}"), "BearerToken(<redacted>)");
        let headers = |values: &[&str]| {
            let mut map = HeaderMap::new();
            for v in values {
                map.append(header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
            }
            map
        };
        assert!(token.authorizes(&headers(&["Bearer 0123456789abcdef"])));
        assert!(token.authorizes(&headers(&["bearer 0123456789abcdef"])));
        for refused in
            [&[][..], &["Basic 0123456789abcdef"], &["0123456789abcdef"], &["Bearer x", "Bearer 0123456789abcdef"]]
        {
            assert!(!token.authorizes(&headers(refused)), "{refused:?}");
        }
    }

    #[tokio::test]
    async fn router_with_token_guards_all_but_supported() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let token = BearerToken::new("0123456789abcdef").unwrap();
        let app = router_with_token(Arc::new(crate::x402::EmbeddedFacilitator::new()), token);
        tokio::spawn(async move { axum::serve(listener, app).await });
        for (method, path) in [("POST", "/verify"), ("POST", "/settle"), ("GET", "/settle/status?txHash=0xdead")] {
            let (status, body) = call(&base, method, path).await;
            assert_eq!((status, body["error"].as_str()), (401, Some("unauthorized")), "{method} {path}: {body}");
        }
        assert_eq!(call(&base, "GET", "/supported").await.0, 200);
        let http = reqwest::Client::new();
        let authorized = http
            .post(format!("{base}/verify"))
            .bearer_auth("0123456789abcdef")
            .header("content-type", "application/json")
            .body(BODY)
            .send()
            .await
            .unwrap();
        assert_eq!(authorized.status().as_u16(), 200);
    }

    #[tokio::test]
    async fn serves_any_facilitator_client() {
        let base = serve(crate::x402::EmbeddedFacilitator::new()).await;
        // No Content-Type: read as JSON; another type: 415.
        let http = reqwest::Client::new();
        let bare = http.post(format!("{base}/verify")).body(BODY).send().await.unwrap();
        assert_eq!(bare.status().as_u16(), 200);
        let text = http.post(format!("{base}/verify")).header("content-type", "text/plain").body(BODY).send();
        assert_eq!(text.await.unwrap().status().as_u16(), 415);
        let (status, body) = call(&base, "POST", "/verify").await;
        assert_eq!((status, body["isValid"].as_bool()), (200, Some(false)), "{body}");
        let (status, body) = call(&base, "POST", "/settle").await;
        assert_eq!((status, body["success"].as_bool()), (200, Some(false)), "{body}");
        let (status, body) = call(&base, "GET", "/supported").await;
        assert_eq!((status, body["kinds"][0]["network"].as_str()), (200, Some("eip155:196")), "{body}");
        let (status, body) = call(&base, "GET", "/settle/status?txHash=0xdead").await;
        assert_eq!((status, body["success"].as_bool()), (200, Some(false)), "{body}");
    }
}
