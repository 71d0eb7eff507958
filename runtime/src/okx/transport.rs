//! What the OKX clients share: the config type, its builder methods and `from_env`
//! ([`okx_config!`]), base-URL normalisation, and the signed, time-bounded,
//! size-capped HTTP exchange ([`OkxTransport`]). Each client keeps its own answer
//! interpretation, error type and timestamp format.

use super::auth::{Clock, OkxCredentials, OkxSigner, TimestampFormat};
use crate::transport::{TransportError, map_reqwest, read_capped};
use std::time::Duration;

/// OKX's API host, the default of both clients' `base_url`.
pub const OKX_DEFAULT_BASE_URL: &str = "https://web3.okx.com";

/// Defines an OKX client's config: the fields both clients share (`credentials`, `base_url`,
/// `timeout`, `http_client`) plus the client's own (`$field: $ty = $default`, after
/// `base_url`), a redacting `Debug`, `new` with the defaults (OKX host, 30 s timeout), the shared
/// builder methods (`from_env`, `base_url`, `timeout`, `http_client`) and the conversion into
/// [`TransportSettings`]. `$err` is the client's error type, whose `Config(String)` variant
/// carries configuration errors.
macro_rules! okx_config {
    (
        $(#[$meta:meta])*
        pub struct $name:ident for $err:ident {
            $( $(#[$field_meta:meta])* pub $field:ident: $ty:ty = $default:expr, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone)]
        pub struct $name {
            /// API credentials (all three are required).
            pub credentials: $crate::okx::OkxCredentials,
            /// API host (default [`OKX_DEFAULT_BASE_URL`](crate::okx::OKX_DEFAULT_BASE_URL); a
            /// trailing `/` is ignored, blank = default).
            pub base_url: String,
            $( $(#[$field_meta])* pub $field: $ty, )*
            /// Per-request timeout (default 30 s).
            pub timeout: std::time::Duration,
            /// A shared HTTP client (connection pool); a new one is made when `None`.
            pub http_client: Option<reqwest::Client>,
        }

        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($name))
                    .field("credentials", &self.credentials)
                    .field("base_url", &self.base_url)
                    $( .field(stringify!($field), &self.$field) )*
                    .field("timeout", &self.timeout)
                    .finish_non_exhaustive()
            }
        }

        impl $name {
            /// A config with the defaults (OKX host, 30 s timeout, and the client's own
            /// defaults).
            pub fn new(credentials: $crate::okx::OkxCredentials) -> Self {
                Self {
                    credentials,
                    base_url: $crate::okx::OKX_DEFAULT_BASE_URL.to_owned(),
                    $( $field: $default, )*
                    timeout: std::time::Duration::from_secs(30),
                    http_client: None,
                }
            }

            /// Reads `OKX_API_KEY`, `OKX_SECRET_KEY`, `OKX_PASSPHRASE` and optional `OKX_BASE_URL`.
            /// `Ok(None)` when no credential is set; an error naming the missing variables otherwise.
            pub fn from_env() -> Result<Option<Self>, $err> {
                let Some(creds) = $crate::okx::OkxCredentials::from_env().map_err($err::Config)? else {
                    return Ok(None);
                };
                let mut cfg = Self::new(creds);
                if let Ok(url) = std::env::var("OKX_BASE_URL") {
                    cfg.base_url = url;
                }
                Ok(Some(cfg))
            }

            /// Sets the API host.
            pub fn base_url(mut self, url: impl Into<String>) -> Self {
                self.base_url = url.into();
                self
            }

            /// Sets the per-request timeout.
            pub fn timeout(mut self, timeout: std::time::Duration) -> Self {
                self.timeout = timeout;
                self
            }

            /// Shares an HTTP client. pay402's own client follows no redirects (a 3xx answer is an
            /// HTTP error, so the signed `OK-ACCESS-*` headers never reach another host); build a
            /// shared client with `redirect(reqwest::redirect::Policy::none())` to keep that.
            pub fn http_client(mut self, client: reqwest::Client) -> Self {
                self.http_client = Some(client);
                self
            }

            /// The shared part, for the client's `OkxTransport`.
            fn into_transport_settings(self) -> $crate::okx::transport::TransportSettings {
                $crate::okx::transport::TransportSettings {
                    credentials: self.credentials,
                    base_url: self.base_url,
                    timeout: self.timeout,
                    http_client: self.http_client,
                }
            }
        }
    };
}
pub(crate) use okx_config;

/// The settings an [`OkxTransport`] is built from (the shared part of both configs).
pub(crate) struct TransportSettings {
    pub(crate) credentials: OkxCredentials,
    pub(crate) base_url: String,
    pub(crate) timeout: Duration,
    pub(crate) http_client: Option<reqwest::Client>,
}

/// One endpoint: its full URL and the path that is signed (base path + endpoint + query).
#[derive(Clone, Debug)]
pub(crate) struct Endpoint {
    pub(crate) url: String,
    pub(crate) signed_path: String,
}

/// The signed HTTP exchange with one OKX API (host + API base path).
#[derive(Clone, Debug)]
pub(crate) struct OkxTransport {
    signer: OkxSigner,
    timeout: Duration,
    http: reqwest::Client,
    origin: String,
    path_prefix: String,
}

impl OkxTransport {
    /// Validates the credentials and the base URL (blank = [`OKX_DEFAULT_BASE_URL`], a trailing
    /// `/` is ignored, must be `http(s)://host` without query or fragment) and builds the HTTP
    /// client. Errors are configuration messages.
    pub(crate) fn new(settings: TransportSettings, api_path: &str, format: TimestampFormat) -> Result<Self, String> {
        settings.credentials.validate()?;
        let base = settings.base_url.trim();
        let base = if base.is_empty() { OKX_DEFAULT_BASE_URL } else { base.trim_end_matches('/') };
        let parsed = url::Url::parse(base).map_err(|e| format!("OKX base URL `{base}`: {e}"))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
            return Err(format!("OKX base URL `{base}` must be http(s)://host"));
        }
        if parsed.query().is_some() || parsed.fragment().is_some() {
            return Err(format!("OKX base URL `{base}` must not have a query or fragment"));
        }
        let base_path = parsed.path().trim_end_matches('/');
        let origin = base.strip_suffix(base_path).unwrap_or(base).to_owned();
        let path_prefix = format!("{base_path}{api_path}");
        let http = match settings.http_client {
            Some(c) => c,
            // OKX never redirects its API: a 3xx is refused as an HTTP error rather than followed,
            // so the signed `OK-ACCESS-*` headers never reach another host.
            None => reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .map_err(|e| format!("HTTP client: {e}"))?,
        };
        Ok(Self {
            signer: OkxSigner::new(settings.credentials, format),
            timeout: settings.timeout,
            http,
            origin,
            path_prefix,
        })
    }

    /// The endpoint at `path` (endpoint + query) below the API base path.
    pub(crate) fn endpoint(&self, path: &str) -> Endpoint {
        let signed_path = format!("{}{path}", self.path_prefix);
        Endpoint { url: format!("{}{signed_path}", self.origin), signed_path }
    }

    /// Replaces the clock used for `OK-ACCESS-TIMESTAMP`.
    pub(crate) fn with_clock(mut self, clock: Clock) -> Self {
        self.signer = self.signer.with_clock(clock);
        self
    }

    /// The request signer.
    pub(crate) fn signer(&self) -> &OkxSigner {
        &self.signer
    }

    /// Signs and sends one request (`Content-Type: application/json` and the four
    /// `OK-ACCESS-*` headers; the signature covers exactly `body`), bounded by the timeout
    /// (including a body that drips in slowly), and reads at most
    /// [`MAX_RESPONSE_BYTES`](crate::transport::MAX_RESPONSE_BYTES) of the answer.
    pub(crate) async fn send(
        &self,
        method: reqwest::Method,
        endpoint: &Endpoint,
        body: Vec<u8>,
    ) -> Result<(u16, Vec<u8>), TransportError> {
        let headers = self.signer.headers(method.as_str(), &endpoint.signed_path, &body);
        let mut req = self
            .http
            .request(method, &endpoint.url)
            .timeout(self.timeout)
            .header(reqwest::header::CONTENT_TYPE, "application/json");
        for (name, value) in headers {
            req = req.header(name, value);
        }
        if !body.is_empty() {
            req = req.body(body);
        }
        let send = async {
            let resp = req.send().await.map_err(|e| map_reqwest(e, self.timeout))?;
            read_capped(resp, self.timeout).await
        };
        // reqwest's timeout covers the exchange; this outer bound also covers a dripping body.
        tokio::time::timeout(self.timeout, send).await.map_err(|_| TransportError::Timeout(self.timeout))?
    }
}
