//! Sending a request for the middleware: setting a payment header, and following redirects
//! without ever carrying a payment to another URL (finding L7).

use super::{AutoPayError, MwResult, Protocol};
use crate::x402::{PAYMENT_SIGNATURE_HEADER, X_PAYMENT_HEADER};
use http::Extensions;
use http::header::{
    AUTHORIZATION, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, COOKIE, HeaderName, HeaderValue, LOCATION,
    PROXY_AUTHORIZATION, TRANSFER_ENCODING, WWW_AUTHENTICATE,
};
use reqwest::{Method, Request, Response, StatusCode, Url};
use reqwest_middleware::Next;
use std::fmt;

/// Most redirects the middleware follows for one request (reqwest's default limit).
pub const MAX_REDIRECTS: usize = 10;

/// Sends `req`, following redirects itself (finding L7; the client of
/// [`AutoPayMiddleware::client`] follows none): `payment`, the header carrying this
/// request's payment, is removed on every hop (a payment is for the URL it was made for),
/// and credentials and payment headers on a hop to another origin. Returns the final
/// response and a copy of the request that got it (None if the body cannot be cloned).
pub(super) async fn send(
    mut req: Request,
    ext: &mut Extensions,
    next: Next<'_>,
    payment: Option<&HeaderName>,
) -> MwResult<(Response, Option<Request>)> {
    let mut hops = 0;
    loop {
        let copy = req.try_clone();
        let sent = req.url().origin();
        let resp = next.clone().run(req, ext).await?;
        if resp.url().origin() != sent {
            tracing::warn!(
                "pay402 autopay: the HTTP client followed a redirect to another origin itself; build it with \
                 AutoPayMiddleware::client"
            );
        }
        if hops >= MAX_REDIRECTS {
            return Ok((resp, copy));
        }
        let Some(target) = redirect_target(&resp) else { return Ok((resp, copy)) };
        let Some(hop) = copy.as_ref().and_then(Request::try_clone) else { return Ok((resp, copy)) };
        req = redirected(hop, resp.status(), target, payment);
        hops += 1;
    }
}

/// Sets a payment header; returns its name.
pub(super) fn set_header(
    req: &mut Request,
    protocol: Protocol,
    name: &str,
    value: &str,
) -> Result<HeaderName, AutoPayError> {
    let bad = |e: &dyn fmt::Display| AutoPayError::Payment { protocol, reason: e.to_string() };
    let name = HeaderName::from_bytes(name.as_bytes()).map_err(|e| bad(&e))?;
    let value = HeaderValue::from_str(value).map_err(|e| bad(&e))?;
    req.headers_mut().insert(name.clone(), value);
    Ok(name)
}

/// Where a redirect (301, 302, 303, 307, 308 with a `Location` resolving to an http(s) URL)
/// points.
fn redirect_target(resp: &Response) -> Option<Url> {
    let status = resp.status();
    let redirect = [
        StatusCode::MOVED_PERMANENTLY,
        StatusCode::FOUND,
        StatusCode::SEE_OTHER,
        StatusCode::TEMPORARY_REDIRECT,
        StatusCode::PERMANENT_REDIRECT,
    ];
    if !redirect.contains(&status) {
        return None;
    }
    let location = resp.headers().get(LOCATION)?.to_str().ok()?;
    let target = resp.url().join(location).ok()?;
    matches!(target.scheme(), "http" | "https").then_some(target)
}

/// The request of the next hop of a redirect (finding L7): `payment` is removed on every hop;
/// on a hop to another origin so are credentials and every payment header (reqwest alone
/// keeps `PAYMENT-SIGNATURE` and `X-PAYMENT`). 303 (and 301/302 after a POST) turn into a GET
/// without body.
fn redirected(mut req: Request, status: StatusCode, target: Url, payment: Option<&HeaderName>) -> Request {
    let cross_origin = target.origin() != req.url().origin();
    let headers = req.headers_mut();
    if let Some(name) = payment {
        headers.remove(name);
    }
    if cross_origin {
        for name in [AUTHORIZATION, COOKIE, PROXY_AUTHORIZATION, WWW_AUTHENTICATE] {
            headers.remove(name);
        }
        for name in ["cookie2", PAYMENT_SIGNATURE_HEADER, X_PAYMENT_HEADER] {
            headers.remove(name);
        }
    }
    let method = req.method().clone();
    let to_get = (status == StatusCode::SEE_OTHER && method != Method::HEAD)
        || ((status == StatusCode::MOVED_PERMANENTLY || status == StatusCode::FOUND) && method == Method::POST);
    if to_get {
        *req.method_mut() = Method::GET;
        *req.body_mut() = None;
        for name in [CONTENT_TYPE, CONTENT_LENGTH, CONTENT_ENCODING, TRANSFER_ENCODING] {
            req.headers_mut().remove(name);
        }
    }
    *req.url_mut() = target;
    req
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirects_never_carry_a_payment() {
        let url = |u: &str| Url::parse(u).expect("url");
        let mut req = Request::new(Method::POST, url("http://a.test/pay"));
        for (name, value) in [
            ("payment-signature", "signed"),
            ("x-payment", "signed"),
            ("authorization", "Payment x"),
            ("cookie", "c"),
            ("content-type", "application/json"),
            ("x-trace", "t"),
        ] {
            req.headers_mut().insert(HeaderName::from_static(name), HeaderValue::from_static(value));
        }
        *req.body_mut() = Some("{}".into());
        let copy = || req.try_clone().expect("clone");
        let payment = HeaderName::from_static("payment-signature");
        // Same origin, 307: the payment header goes, the rest (method, body, credentials) stays.
        let same = redirected(copy(), StatusCode::TEMPORARY_REDIRECT, url("http://a.test/next"), Some(&payment));
        assert!(!same.headers().contains_key("payment-signature"));
        assert!(same.headers().contains_key("authorization") && same.headers().contains_key("cookie"));
        assert_eq!((same.method(), same.url().path(), same.body().is_some()), (&Method::POST, "/next", true));
        // Another origin (a port is an origin): every credential and payment header goes.
        for target in ["http://b.test/x", "http://a.test:8080/x", "https://a.test/x"] {
            let cross = redirected(copy(), StatusCode::TEMPORARY_REDIRECT, url(target), None);
            for name in ["payment-signature", "x-payment", "authorization", "cookie"] {
                assert!(!cross.headers().contains_key(name), "{target}: {name}");
            }
            assert!(cross.headers().contains_key("x-trace"));
        }
        // 303 turns into a GET without body.
        let see_other = redirected(copy(), StatusCode::SEE_OTHER, url("http://a.test/result"), None);
        assert_eq!((see_other.method(), see_other.body().is_none()), (&Method::GET, true));
        assert!(!see_other.headers().contains_key("content-type"));
    }
}
