//! The responses pay402 sends in place of a handler's: [`PaymentHttpResponse`], built per
//! request, and [`PreparedResponse`], built once and answered to many requests.

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use std::any::Any;
use std::fmt;
use std::sync::OnceLock;

/// A complete response built once and answered to many requests (the precomputed unpaid 402s):
/// answering it costs reference-count increments, nothing is formatted or serialised.
pub struct PreparedResponse {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
    /// The headers in a framework's own types (actix-web's `http` 0.2 ones), converted by the
    /// framework glue on first use and kept: this module names no framework.
    converted: OnceLock<Box<dyn Any + Send + Sync>>,
}

impl fmt::Debug for PreparedResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PreparedResponse")
            .field("status", &self.status)
            .field("headers", &self.headers)
            .field("body", &self.body)
            .finish_non_exhaustive()
    }
}

impl PreparedResponse {
    pub(crate) fn new(r: PaymentHttpResponse) -> Self {
        Self { status: r.status, headers: r.headers, body: r.body, converted: OnceLock::new() }
    }

    /// A copy as a [`PaymentHttpResponse`] (reference counts only).
    pub(crate) fn to_response(&self) -> PaymentHttpResponse {
        PaymentHttpResponse { status: self.status, headers: self.headers.clone(), body: self.body.clone() }
    }

    /// The headers as `convert` turns them into a framework's own type `T`, converted once (on
    /// first use) and kept. `None` when the slot already holds another type (one framework per
    /// response: the caller converts on the spot).
    #[cfg_attr(not(feature = "actix"), allow(dead_code))]
    pub(crate) fn converted_headers<T: Any + Send + Sync>(&self, convert: impl FnOnce(&HeaderMap) -> T) -> Option<&T> {
        self.converted.get_or_init(|| Box::new(convert(&self.headers))).downcast_ref()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prepared_response_converts_its_headers_once() {
        let prepared = PreparedResponse::new(
            PaymentHttpResponse::new(StatusCode::PAYMENT_REQUIRED, "application/json", "{}")
                .append_header("www-authenticate", "Payment a")
                .append_header("www-authenticate", "Payment b"),
        );
        let mut calls = 0;
        let mut lines = |h: &HeaderMap| {
            calls += 1;
            h.get_all("www-authenticate").iter().count()
        };
        assert_eq!(prepared.converted_headers(&mut lines), Some(&2));
        assert_eq!(prepared.converted_headers(&mut lines), Some(&2));
        assert_eq!(calls, 1);
        // The slot holds one framework's type; another gets `None` (and converts on the spot).
        assert_eq!(prepared.converted_headers(|_| "other"), None);
        assert_eq!(prepared.to_response().headers.get_all("www-authenticate").iter().count(), 2);
    }
}

/// The most bytes of a handler's response body pay402 records for a later delivery
/// ([`ResponseSink`]); larger (or streamed, unsized) bodies are not recorded.
pub const MAX_RECORDED_BODY_BYTES: usize = 256 * 1024;

/// A handler's response as it was produced, kept so that a retry of the same payment gets it
/// without running the handler again (its side effects happened once).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecordedResponse {
    /// The status.
    pub status: u16,
    /// `Content-Type`, if any.
    pub content_type: Option<String>,
    /// The body, standard base64.
    pub body: String,
}

impl RecordedResponse {
    /// Records `status`, `content_type` and `body`.
    pub fn new(status: StatusCode, content_type: Option<&str>, body: &[u8]) -> Self {
        use base64::Engine as _;
        Self {
            status: status.as_u16(),
            content_type: content_type.map(str::to_owned),
            body: base64::engine::general_purpose::STANDARD.encode(body),
        }
    }

    /// The recorded response, to send (`None` when the record is damaged).
    pub fn to_response(&self) -> Option<PaymentHttpResponse> {
        use base64::Engine as _;
        let body = base64::engine::general_purpose::STANDARD.decode(&self.body).ok()?;
        let status = StatusCode::from_u16(self.status).ok()?;
        let mut headers = HeaderMap::new();
        if let Some(ct) = self.content_type.as_deref().and_then(|c| HeaderValue::from_str(c).ok()) {
            headers.insert(http::header::CONTENT_TYPE, ct);
        }
        Some(PaymentHttpResponse { status, headers, body: Bytes::from(body) })
    }
}

/// Where the framework glue hands a handler's response for recording
/// ([`crate::gate::PaymentGate::response_sink`]): called once, before the payment completes,
/// with responses below 400 whose body has a known size up to [`MAX_RECORDED_BODY_BYTES`].
pub type ResponseSink = Box<dyn FnOnce(RecordedResponse) -> super::BoxFuture<()> + Send>;
