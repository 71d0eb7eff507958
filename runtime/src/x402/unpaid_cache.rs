//! The precomputed unpaid 402 of a route whose payment requirements are static.
//!
//! The `PAYMENT-REQUIRED` header of an unpaid request is base64 of the compact JSON of the
//! challenge, and everything in it but the resource URL (the request's own URL unless the route
//! fixes one) is the same for every request to the route. [`UnpaidChallenge`] serialises the
//! challenge once, keeps the JSON before and after the URL string, and builds the header of a
//! URL by splicing in the URL's JSON string — byte-identical to serialising the whole challenge —
//! then remembers it for that URL (a bounded map), so a repeated unpaid request costs a hash
//! lookup and a reference-count increment instead of rebuilding and re-serialising the
//! requirements.

use super::headers::EXPOSED_HEADERS;
use super::headers::safe_base64_encode;
use super::types::{PaymentRequired, PaymentRequirements};
use crate::web::{PaymentHttpResponse, PreparedResponse, RequestHead};
use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode};
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::{Arc, OnceLock, PoisonError, RwLock};

/// Stands for the resource URL while the challenge is serialised once; a challenge whose other
/// fields contain it is not cached (served the slow way).
const URL_PLACEHOLDER: &str = "pay402:resource-url:0b6f2d8e4c1a";

/// The most distinct URLs remembered per route; the map is emptied when full (a flood of
/// distinct URLs or `Host` values costs memory no more than this).
const MAX_CACHED_URLS: usize = 256;

/// The most bytes (URLs and headers, see [`entry_bytes`]) remembered per route; the map is
/// emptied when an entry would pass it. Distinct query strings cannot multiply memory beyond it.
pub(crate) const MAX_CACHED_BYTES: usize = 1 << 20;

/// URLs longer than this are answered without being remembered (their 402 is built per request:
/// a long query string is the attacker's choice, not a repeat visit).
const MAX_CACHED_URL_BYTES: usize = 2048;

/// What one remembered URL costs: the key, the `PAYMENT-REQUIRED` value twice (the `http` and
/// the actix copies of the headers) and a fixed allowance for the map entry and response.
fn entry_bytes(url: &str, header_len: usize) -> usize {
    url.len().saturating_add(header_len.saturating_mul(2)).saturating_add(256)
}

/// The remembered 402s of one route, by URL, and their cost in bytes.
#[derive(Debug, Default)]
struct UrlCache {
    map: HashMap<Box<str>, Arc<PreparedResponse>>,
    bytes: usize,
}

thread_local! {
    /// The request URL of a fast-path lookup, formatted without allocating.
    static URL: RefCell<String> = const { RefCell::new(String::new()) };
}

/// The whole unpaid 402 answering API clients for one `PAYMENT-REQUIRED` value: that header,
/// `Content-Type: application/json`, `Cache-Control: no-store`,
/// `Access-Control-Expose-Headers` and the body `{}`.
fn prepare(header: HeaderValue) -> Arc<PreparedResponse> {
    let mut resp =
        PaymentHttpResponse::new(StatusCode::PAYMENT_REQUIRED, "application/json", Bytes::from_static(b"{}"));
    resp.headers.insert(HeaderName::from_static("payment-required"), header);
    resp.headers.insert(http::header::ACCESS_CONTROL_EXPOSE_HEADERS, HeaderValue::from_static(EXPOSED_HEADERS));
    Arc::new(PreparedResponse::new(resp))
}

/// The precomputed unpaid challenge of one route.
#[derive(Debug)]
pub(crate) struct UnpaidChallenge {
    /// The whole response, when the route fixes its resource URL.
    fixed: Option<Arc<PreparedResponse>>,
    /// The JSON before and after the URL's JSON string.
    prefix: Vec<u8>,
    suffix: Vec<u8>,
    /// The metrics `scheme` label.
    scheme_label: metrics::SharedString,
    by_url: RwLock<UrlCache>,
}

impl UnpaidChallenge {
    /// `required` is the unpaid challenge with [`URL_PLACEHOLDER`] as its resource URL (when
    /// `url_from_request`), or with the route's fixed URL. `None` when it cannot be split.
    fn new(required: &PaymentRequired, url_from_request: bool, scheme_label: String) -> Option<Self> {
        let json = crate::json::compact(required).ok()?;
        let scheme_label = metrics::SharedString::from_shared(Arc::<str>::from(scheme_label));
        if !url_from_request {
            let fixed = prepare(HeaderValue::try_from(safe_base64_encode(&json)).ok()?);
            let by_url = RwLock::new(UrlCache::default());
            return Some(Self { fixed: Some(fixed), prefix: Vec::new(), suffix: Vec::new(), scheme_label, by_url });
        }
        let needle = crate::json::compact(URL_PLACEHOLDER).ok()?;
        let mut hits = json.windows(needle.len()).enumerate().filter(|(_, w)| *w == needle.as_slice());
        let (at, _) = hits.next()?;
        if hits.next().is_some() {
            return None;
        }
        let (prefix, rest) = json.split_at(at);
        let suffix = rest.get(needle.len()..)?;
        Some(Self {
            fixed: None,
            prefix: prefix.to_vec(),
            suffix: suffix.to_vec(),
            scheme_label,
            by_url: RwLock::new(UrlCache::default()),
        })
    }

    /// The unpaid 402 for a request: its URL is formatted into a per-thread buffer, looked up,
    /// and built (then remembered) on a miss. `None` when the URL cannot be derived cheaply.
    pub(crate) fn prepared(&self, head: &impl RequestHead) -> Option<Arc<PreparedResponse>> {
        if let Some(fixed) = &self.fixed {
            return Some(Arc::clone(fixed));
        }
        URL.with(|buf| {
            let mut url = buf.try_borrow_mut().ok()?;
            url.clear();
            if !head.write_url(&mut url) {
                return None;
            }
            self.prepared_for(&url)
        })
    }

    /// The unpaid 402 for a request to `url`.
    fn prepared_for(&self, url: &str) -> Option<Arc<PreparedResponse>> {
        if let Some(v) = self.by_url.read().unwrap_or_else(PoisonError::into_inner).map.get(url) {
            return Some(Arc::clone(v));
        }
        let url_json = crate::json::compact(url).ok()?;
        let mut json = Vec::with_capacity(self.prefix.len() + url_json.len() + self.suffix.len());
        json.extend_from_slice(&self.prefix);
        json.extend_from_slice(&url_json);
        json.extend_from_slice(&self.suffix);
        let header = HeaderValue::try_from(safe_base64_encode(&json)).ok()?;
        let cost = entry_bytes(url, header.len());
        let value = prepare(header);
        if url.len() > MAX_CACHED_URL_BYTES {
            return Some(value);
        }
        let mut cache = self.by_url.write().unwrap_or_else(PoisonError::into_inner);
        if cache.map.len() >= MAX_CACHED_URLS || cache.bytes.saturating_add(cost) > MAX_CACHED_BYTES {
            cache.map.clear();
            cache.bytes = 0;
        }
        if cache.map.insert(url.into(), Arc::clone(&value)).is_none() {
            cache.bytes = cache.bytes.saturating_add(cost);
        }
        Some(value)
    }

    /// The bytes the remembered URLs cost, counted from the entries themselves ([`entry_bytes`]).
    pub(crate) fn cached_bytes(&self) -> usize {
        let cache = self.by_url.read().unwrap_or_else(PoisonError::into_inner);
        cache
            .map
            .iter()
            .map(|(url, prepared)| {
                entry_bytes(url, prepared.headers.get("payment-required").map_or(0, HeaderValue::len))
            })
            .sum()
    }

    /// The `PAYMENT-REQUIRED` value for a request to `url`.
    #[cfg(test)]
    fn header(&self, url: &str) -> Option<HeaderValue> {
        let prepared = match &self.fixed {
            Some(fixed) => Arc::clone(fixed),
            None => self.prepared_for(url)?,
        };
        prepared.headers.get("payment-required").cloned()
    }

    /// The metrics `scheme` label of the challenge.
    pub(crate) fn scheme_label(&self) -> metrics::SharedString {
        self.scheme_label.clone()
    }
}

/// A route's slot for its [`UnpaidChallenge`], filled on first use, with the server's default
/// payee it was built with (a `#[x402]` route without `pay_to` is shared by every server in the
/// process: the challenge only serves the server whose payee it names). Cloning a route's
/// configuration gives an empty slot: the copy may be edited before it is used.
#[derive(Debug, Default)]
pub(crate) struct UnpaidSlot(OnceLock<Entry>);

/// What a slot holds: the payee it was built for, the route's requirements (so a paid request
/// does not rebuild them either) and the challenge (`None` if it could not be split).
#[derive(Debug)]
struct Entry {
    payee: Option<String>,
    accepts: Vec<PaymentRequirements>,
    challenge: Option<UnpaidChallenge>,
}

impl Clone for UnpaidSlot {
    fn clone(&self) -> Self {
        Self::default()
    }
}

impl UnpaidSlot {
    /// The challenge, once built (and if it could be) for a server whose default payee is
    /// `payee`.
    pub(crate) fn get(&self, payee: Option<&str>) -> Option<&UnpaidChallenge> {
        self.entry(payee).and_then(|e| e.challenge.as_ref())
    }

    /// The route's payment requirements, once built for a server whose default payee is
    /// `payee`.
    pub(crate) fn accepts(&self, payee: Option<&str>) -> Option<&[PaymentRequirements]> {
        self.entry(payee).map(|e| e.accepts.as_slice())
    }

    fn entry(&self, payee: Option<&str>) -> Option<&Entry> {
        self.0.get().filter(|e| e.payee.as_deref() == payee)
    }

    /// Records the route's static `accepts` and builds its challenge, once. `build(url)` returns
    /// the unpaid challenge for resource URL `url`; `fixed_url` is the route's own resource URL,
    /// if it sets one.
    pub(crate) fn fill(
        &self,
        payee: Option<&str>,
        accepts: &[PaymentRequirements],
        fixed_url: Option<&str>,
        scheme_label: impl FnOnce() -> String,
        build: impl FnOnce(String) -> PaymentRequired,
    ) {
        self.0.get_or_init(|| {
            let required = build(fixed_url.unwrap_or(URL_PLACEHOLDER).to_owned());
            Entry {
                payee: payee.map(str::to_owned),
                accepts: accepts.to_vec(),
                challenge: UnpaidChallenge::new(&required, fixed_url.is_none(), scheme_label()),
            }
        });
    }

    /// The bytes the slot's remembered 402s cost (0 before the challenge is built).
    pub(crate) fn cached_bytes(&self) -> usize {
        self.0.get().and_then(|e| e.challenge.as_ref()).map_or(0, UnpaidChallenge::cached_bytes)
    }

    /// A placeholder-free check used by tests: the header built for `url`.
    #[cfg(test)]
    pub(crate) fn header_for(&self, url: &str) -> Option<HeaderValue> {
        self.get(None)?.header(url)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::x402::ResourceInfo;
    use crate::x402::encode_payment_required_header;

    fn required(url: &str, description: &str) -> PaymentRequired {
        let req: PaymentRequirements = serde_json::from_value(serde_json::json!({
            "scheme": "exact", "network": "eip155:196", "asset": "0x779ded0c9e1022225f8e0630b35a9b54be713736",
            "amount": "1000", "payTo": "0x1111111111111111111111111111111111111111", "maxTimeoutSeconds": 300,
            "extra": {"name": "USD\u{20ae}0", "version": "1"}
        }))
        .unwrap();
        PaymentRequired {
            x402_version: 2,
            error: Some("Payment required".into()),
            resource: Some(ResourceInfo {
                url: url.to_owned(),
                description: Some(description.to_owned()),
                mime_type: Some(String::new()),
            }),
            accepts: vec![req],
            extensions: None,
        }
    }

    #[test]
    fn spliced_headers_equal_full_serialisation() {
        let slot = UnpaidSlot::default();
        slot.fill(None, &[], None, || "exact".into(), |url| required(&url, "weather \"now\" ☀"));
        for url in [
            "http://127.0.0.1:8080/weather",
            "http://h/x?q=\"quoted\"&u=ünïcode",
            "https://api.example.com/a/b?c=d#frag",
            "http://h/weather",
        ] {
            let expected = encode_payment_required_header(&required(url, "weather \"now\" ☀")).unwrap();
            assert_eq!(slot.header_for(url).unwrap(), expected.as_str(), "{url}");
            assert_eq!(slot.header_for(url).unwrap(), expected.as_str(), "{url} (cached)");
        }
        assert_eq!(&*slot.get(None).unwrap().scheme_label(), "exact");
        assert!(slot.clone().get(None).is_none(), "a cloned route starts without a cache");
        let payee = UnpaidSlot::default();
        payee.fill(Some("0xA"), &[], None, String::new, |url| required(&url, ""));
        assert!(payee.get(Some("0xA")).is_some() && payee.accepts(Some("0xA")).is_some());
        assert!(payee.accepts(Some("0xB")).is_none());
        assert!(payee.get(Some("0xB")).is_none(), "built for another server's payee");
        assert!(payee.get(None).is_none());
    }

    #[test]
    fn fixed_resource_and_bounded_map() {
        let slot = UnpaidSlot::default();
        slot.fill(None, &[], Some("https://fixed.example/r"), String::new, |url| required(&url, ""));
        let expected = encode_payment_required_header(&required("https://fixed.example/r", "")).unwrap();
        assert_eq!(slot.header_for("http://anything/else").unwrap(), expected.as_str());

        let slot = UnpaidSlot::default();
        slot.fill(None, &[], None, String::new, |url| required(&url, ""));
        for i in 0..(MAX_CACHED_URLS * 2 + 3) {
            let url = format!("http://h/{i}");
            let expected = encode_payment_required_header(&required(&url, "")).unwrap();
            assert_eq!(slot.header_for(&url).unwrap(), expected.as_str());
        }
        let len = slot.get(None).unwrap().by_url.read().unwrap().map.len();
        assert!(len <= MAX_CACHED_URLS, "{len}");

        let slot = UnpaidSlot::default();
        slot.fill(None, &[], None, String::new, |url| required(&url, ""));
        for i in 0..40 {
            let url = format!("http://h/q?q={}&n={i}", "x".repeat(60_000));
            let expected = encode_payment_required_header(&required(&url, "")).unwrap();
            assert_eq!(slot.header_for(&url).unwrap(), expected.as_str(), "long URLs are still answered");
        }
        for i in 0..300 {
            let _ = slot.header_for(&format!("http://h/q?q={}&n={i}", "y".repeat(2000)));
        }
        assert!(slot.cached_bytes() <= MAX_CACHED_BYTES, "{}", slot.cached_bytes());
    }

    #[test]
    fn a_placeholder_elsewhere_disables_the_cache() {
        let slot = UnpaidSlot::default();
        slot.fill(None, &[], None, String::new, |url| required(&url, URL_PLACEHOLDER));
        assert!(slot.get(None).is_none());
    }
}
