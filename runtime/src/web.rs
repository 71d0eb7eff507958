//! Framework-independent HTTP primitives shared by the x402 and MPP layers and the axum /
//! actix-web glue: what pay402 sees of a request ([`RequestContext`]) and the responses it
//! sends in place of a handler's ([`PaymentHttpResponse`]).
#![allow(clippy::result_large_err)]

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use std::future::Future;
use std::pin::Pin;

/// A boxed, sendable future.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// What a handler-side callback sees of the request.
#[derive(Clone, Debug)]
pub struct RequestContext {
    /// HTTP method.
    pub method: Method,
    /// Path as received (no query).
    pub path: String,
    /// Full URL as received: scheme, host, path and query.
    pub url: String,
    /// Request headers.
    pub headers: HeaderMap,
}

impl RequestContext {
    /// Builds a context from the method, the full URL and the headers.
    pub fn new(method: Method, url: String, headers: HeaderMap) -> Self {
        let path = match url.find("://") {
            Some(i) => {
                let rest = &url[i + 3..];
                let start = rest.find('/').unwrap_or(rest.len());
                let rest = &rest[start..];
                rest[..rest.find(['?', '#']).unwrap_or(rest.len())].to_owned()
            }
            None => url[..url.find(['?', '#']).unwrap_or(url.len())].to_owned(),
        };
        let path = if path.is_empty() { "/".to_owned() } else { path };
        Self { method, path, url, headers }
    }

    /// Builds a context from a request's method, URI and headers. The URL's scheme and host
    /// come from the URI when absolute, else from `X-Forwarded-Proto` / `Host`.
    pub fn from_parts(method: &Method, uri: &http::Uri, headers: &HeaderMap) -> Self {
        let url = if uri.scheme().is_some() {
            uri.to_string()
        } else {
            let host = headers.get(http::header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("localhost");
            let scheme = headers.get("x-forwarded-proto").and_then(|h| h.to_str().ok()).unwrap_or("http");
            let pq = uri.path_and_query().map_or("/", |p| p.as_str());
            format!("{scheme}://{host}{pq}")
        };
        Self::new(method.clone(), url, headers.clone())
    }

    /// A header's value as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// A query parameter (first occurrence, percent-decoded).
    pub fn query(&self, name: &str) -> Option<String> {
        let q = self.url.split_once('?')?.1;
        let q = q.split('#').next().unwrap_or("");
        url::form_urlencoded::parse(q.as_bytes()).find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
    }

    /// A browser: `Accept` contains `text/html` and `User-Agent` contains `Mozilla`.
    pub fn is_browser(&self) -> bool {
        self.header("accept").is_some_and(|a| a.contains("text/html"))
            && self.header("user-agent").is_some_and(|u| u.contains("Mozilla"))
    }
}

/// A response body with its content type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpBody {
    /// `Content-Type`.
    pub content_type: String,
    /// Bytes.
    pub body: Bytes,
}

impl HttpBody {
    /// A JSON body.
    pub fn json(value: &serde_json::Value) -> Self {
        Self { content_type: "application/json".into(), body: Bytes::from(value.to_string()) }
    }
}

/// A response pay402 sends instead of (or in place of) the handler's.
#[derive(Clone, Debug)]
pub struct PaymentHttpResponse {
    /// Status.
    pub status: StatusCode,
    /// Headers.
    pub headers: HeaderMap,
    /// Body.
    pub body: Bytes,
}

impl PaymentHttpResponse {
    /// A response with a `Content-Type` and `Cache-Control: no-store`.
    pub fn new(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Self {
        let mut headers = HeaderMap::new();
        if let Ok(ct) = HeaderValue::from_str(content_type) {
            headers.insert(http::header::CONTENT_TYPE, ct);
        }
        headers.insert(http::header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        Self { status, headers, body: body.into() }
    }

    /// `{"error": message}` as JSON.
    pub fn json_error(status: StatusCode, message: &str) -> Self {
        Self::new(status, "application/json", serde_json::json!({ "error": message }).to_string())
    }

    /// Adds (replaces) a header; invalid values are skipped.
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(value)) {
            self.headers.insert(n, v);
        }
        self
    }

    /// Appends a header line (several lines of one name are kept).
    pub fn append_header(mut self, name: &str, value: &str) -> Self {
        if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(value)) {
            self.headers.append(n, v);
        }
        self
    }
}
