//! What pay402 sees of a request: the owned [`RequestContext`], and the [`RequestHead`] the
//! unpaid fast paths read straight from a framework's own request types.

use http::{HeaderMap, HeaderValue, Method};

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
        Self::from_owned_parts(method.clone(), uri, headers.clone())
    }

    /// [`RequestContext::from_parts`] taking the method and headers by value.
    pub(crate) fn from_owned_parts(method: Method, uri: &http::Uri, headers: HeaderMap) -> Self {
        let mut url = String::new();
        if !(HttpHead { method: &method, uri, headers: &headers }).write_url(&mut url) {
            return Self::new(method, uri.to_string(), headers);
        }
        let path = HttpHead { method: &method, uri, headers: &headers }.path_str().to_owned();
        Self { method, path, url, headers }
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

    /// Whether the request prefers an HTML page (and so gets the paywall): `Accept` ranks
    /// `text/html` above `application/json` and `*/*` ([`prefers_html`](super::paywall::prefers_html)).
    pub fn is_browser(&self) -> bool {
        super::paywall::prefers_html(self)
    }
}

/// What the unpaid fast paths read of a request, straight from a framework's own request types
/// (no [`RequestContext`] is built for a request answered with a precomputed 402).
pub trait RequestHead {
    /// The first value of header `name` (lower-case).
    fn header_bytes(&self, name: &str) -> Option<&[u8]>;
    /// Appends the request's URL exactly as [`RequestContext::url`] has it; `false` when that
    /// cannot be done cheaply (the caller takes the full path).
    fn write_url(&self, out: &mut String) -> bool;
    /// The method.
    fn method_str(&self) -> &str;
    /// The path (no query).
    fn path_str(&self) -> &str;

    /// The first value of header `name` as text (visible ASCII only, as `HeaderValue::to_str`).
    fn header_text(&self, name: &str) -> Option<&str> {
        let bytes = self.header_bytes(name)?;
        if bytes.iter().all(|&b| b == b'\t' || (32..127).contains(&b)) { std::str::from_utf8(bytes).ok() } else { None }
    }

    /// Whether header `name` is present with a non-blank value.
    fn has_nonblank(&self, name: &str) -> bool {
        self.header_bytes(name).is_some_and(|v| !v.trim_ascii().is_empty())
    }
}

/// Appends `scheme://host` + `path_and_query`.
pub(crate) fn push_url(out: &mut String, scheme: &str, host: &str, path_and_query: &str) {
    out.reserve(scheme.len() + 3 + host.len() + path_and_query.len());
    out.push_str(scheme);
    out.push_str("://");
    out.push_str(host);
    out.push_str(path_and_query);
}

impl RequestHead for RequestContext {
    fn header_bytes(&self, name: &str) -> Option<&[u8]> {
        self.headers.get(name).map(HeaderValue::as_bytes)
    }
    fn write_url(&self, out: &mut String) -> bool {
        out.push_str(&self.url);
        true
    }
    fn method_str(&self) -> &str {
        self.method.as_str()
    }
    fn path_str(&self) -> &str {
        &self.path
    }
}

/// The head of an `http` 1 request (axum's types).
pub(crate) struct HttpHead<'a> {
    pub(crate) method: &'a Method,
    pub(crate) uri: &'a http::Uri,
    pub(crate) headers: &'a HeaderMap,
}

impl RequestHead for HttpHead<'_> {
    fn header_bytes(&self, name: &str) -> Option<&[u8]> {
        self.headers.get(name).map(HeaderValue::as_bytes)
    }
    /// The URI when absolute, else `X-Forwarded-Proto` (or `http`) + `Host` (or `localhost`).
    fn write_url(&self, out: &mut String) -> bool {
        if self.uri.scheme().is_some() {
            return false;
        }
        let host = self.headers.get(http::header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("localhost");
        let scheme = self.headers.get("x-forwarded-proto").and_then(|h| h.to_str().ok()).unwrap_or("http");
        push_url(out, scheme, host, self.uri.path_and_query().map_or("/", |p| p.as_str()));
        true
    }
    fn method_str(&self) -> &str {
        self.method.as_str()
    }
    fn path_str(&self) -> &str {
        if self.uri.path().is_empty() { "/" } else { self.uri.path() }
    }
}
