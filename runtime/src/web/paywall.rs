//! The browser paywall, shared by both protocols: the page a person can pay on, and the one rule
//! of who gets it.
//!
//! **Who gets it** ([`prefers_html`]): a request whose `Accept` header ranks `text/html` above
//! `application/json` and above `*/*` (q-values, the most specific range deciding), whatever its
//! `User-Agent`. A browser's navigation (`text/html,…,*/*;q=0.8`) and `curl -H 'Accept:
//! text/html'` get the page; API clients (`application/json`, `*/*`, no `Accept`) keep the
//! protocol's own 402 body. The page is the *body* of the same 402: every challenge header of the
//! protocols (`PAYMENT-REQUIRED` for x402, `WWW-Authenticate: Payment` for MPP) stays on it.
//!
//! **What it shows**: every payable offer of the route (x402 `exact` options, MPP `evm` charge
//! challenges: the protocols build them, [`PaywallOffer`]) with the price, asset, network, payee
//! and protocol, above them the resource (description and URL). It is accessible (`lang`, one
//! `h1`, an `h2` per offer labelling its section, facts as a description list, text contrast
//! ≥ 7:1) and self-contained: its one stylesheet and one script are inline, nothing comes from a
//! CDN. It is served with a strict `Content-Security-Policy` (`default-src 'none'`, the style and
//! the script allowed by their SHA-256 hashes, `connect-src 'self'`, no inline event handlers).
//! Every value from the route, the challenge or the request (the path is reflected) is
//! HTML-escaped in the markup; the offers' data for the script is JSON with `<`, `>`, `&` and the
//! line separators escaped, in a `<script type="application/json">` data block the script parses
//! (never evaluates).
//!
//! **How a person pays** (the inline script): a button per offer connects an EIP-1193 wallet
//! (`window.ethereum`: `eth_requestAccounts`; `eth_chainId` and `wallet_switchEthereumChain` when
//! the wallet is on another chain), asks it to sign the EIP-3009 `TransferWithAuthorization`
//! (`eth_signTypedData_v4`) for exactly the offer shown — amount, payee, asset and chain come from
//! the offer, never from elsewhere — then repeats the same request with `fetch` carrying the
//! credential (`PAYMENT-SIGNATURE` for x402 v2, `Authorization: Payment …` for MPP, built as
//! pay402's own buyers build them) and shows the paid resource as text (never as markup) with
//! the settlement (`PAYMENT-RESPONSE`) or receipt (`Payment-Receipt`).

use super::{PaymentHttpResponse, RequestHead};
use http::{HeaderValue, StatusCode};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::sync::OnceLock;

/// Paywall options.
#[derive(Clone, Debug, Default)]
pub struct PaywallConfig {
    /// App name shown in the title (`"<app> — Payment Required"`).
    pub app_name: Option<String>,
    /// Whether the network is a test network (shown as a badge).
    pub testnet: bool,
}

/// Escapes text for HTML content and attribute values.
pub fn html_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#x27;"),
            _ => out.push(c),
        }
    }
    out
}

/// JSON text made safe inside an HTML `<script>` data block: `<`, `>`, `&`, U+2028 and U+2029
/// as `\u` escapes (the JSON value is unchanged; no `</script>` can close the block).
pub fn json_for_script(value: &Value) -> String {
    let text = value.to_string();
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            _ => out.push(c),
        }
    }
    out
}

/// Formats an atomic amount in display units: ≤ `decimals` decimals, trailing zeros stripped.
pub fn display_amount(atomic: &str, decimals: u8) -> String {
    let digits = atomic.trim_start_matches('0');
    let d = usize::from(decimals);
    if digits.is_empty() {
        return "0".into();
    }
    let (int, frac) = if digits.len() > d { digits.split_at(digits.len() - d) } else { ("0", digits) };
    let frac = format!("{frac:0>d$}");
    let frac = frac.trim_end_matches('0');
    if frac.is_empty() { int.to_owned() } else { format!("{int}.{frac}") }
}

/// A human name for well-known networks (`X Layer` for `eip155:196`).
pub fn network_name(network: &str) -> Option<&'static str> {
    Some(match network {
        "eip155:196" => "X Layer",
        "eip155:195" | "eip155:1952" => "X Layer Testnet",
        "eip155:1" => "Ethereum",
        "eip155:8453" => "Base",
        "eip155:84532" => "Base Sepolia",
        _ => return None,
    })
}

/// `X Layer (eip155:196)`, or the id alone when its name is unknown.
pub fn network_label(network: &str) -> String {
    match network_name(network) {
        Some(name) => format!("{name} ({network})"),
        None => network.to_owned(),
    }
}

/// The q-value of the most specific range of `accept` matching `ty/subtype` (`None`: no range
/// matches). Specificity: `ty/subtype` over `ty/*` over `*/*`.
fn quality(accept: &str, ty: &str, subtype: &str) -> Option<(u8, u16)> {
    let mut best: Option<(u8, u16)> = None;
    for range in accept.split(',') {
        let mut parts = range.split(';');
        let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let Some((t, s)) = media.split_once('/') else { continue };
        let specificity = match (t, s) {
            (t, s) if t == ty && s == subtype => 2,
            (t, "*") if t == ty => 1,
            ("*", "*") => 0,
            _ => continue,
        };
        let q = parts
            .filter_map(|p| p.split_once('='))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case("q"))
            .map_or(Some(1000), |(_, v)| parse_q(v.trim()));
        let Some(q) = q else { continue };
        if best.is_none_or(|(s, _)| specificity > s) {
            best = Some((specificity, q));
        }
    }
    best
}

/// A q-value (`0` … `1`, up to three decimals) in thousandths; `None` when malformed.
fn parse_q(text: &str) -> Option<u16> {
    let (int, frac) = text.split_once('.').unwrap_or((text, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let frac_value = format!("{frac:0<3}").parse::<u16>().ok()?;
    match int {
        "0" => Some(frac_value),
        "1" if frac_value == 0 => Some(1000),
        _ => None,
    }
}

/// Whether the request prefers an HTML page to the protocol's JSON: `Accept` names `text/html`
/// (or `text/*`) with a q-value above that of `application/json` and above that of `*/*`. The one
/// rule of who gets the paywall; `User-Agent` plays no part.
pub fn prefers_html(head: &(impl RequestHead + ?Sized)) -> bool {
    let Some(accept) = head.header_text("accept") else { return false };
    let Some((specificity, html)) = quality(accept, "text", "html") else { return false };
    if specificity == 0 || html == 0 {
        return false;
    }
    let json = quality(accept, "application", "json").map_or(0, |(_, q)| q);
    let any = quality(accept, "*", "*").map_or(0, |(_, q)| q);
    html > json && html > any
}

/// One way to pay shown on the page, built by its protocol (x402's `exact` options, MPP's `evm`
/// charge challenges).
#[derive(Clone, Debug, PartialEq)]
pub struct PaywallOffer {
    /// `x402` or `mpp`: which credential the page builds.
    pub protocol: &'static str,
    /// The price, e.g. `0.001 USD₮0`.
    pub price: String,
    /// The facts shown, in order (label, value), e.g. `("Pay to", "0x…")`.
    pub facts: Vec<(String, String)>,
    /// What the page's script signs and sends for this offer (protocol-specific JSON; see the
    /// protocols' `paywall` modules); everything signed comes from here. `None`: shown, but
    /// payable only with a client (no wallet button).
    pub pay: Option<Value>,
}

/// A paywall page to render: the resource and the offers.
#[derive(Clone, Debug, Default)]
pub struct PaywallPage {
    /// The resource's description (the URL when empty).
    pub description: String,
    /// The resource URL shown.
    pub url: String,
    /// The request method the page repeats with the credential.
    pub method: String,
    /// The offers.
    pub offers: Vec<PaywallOffer>,
    /// The x402 `PaymentRequired` JSON, carried in `data-requirements` for wallet scripts.
    pub x402_requirements: Option<String>,
}

const STYLE: &str = "\
:root{color-scheme:light}\
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;background:#ffffff;color:#111111;\
max-width:42rem;margin:2rem auto;padding:0 1rem;line-height:1.5}\
h1{font-size:1.6rem;margin-bottom:.25rem}h2{font-size:1.2rem;margin:0 0 .5rem 0}\
section.option,section.result{border:2px solid #333333;border-radius:8px;padding:1rem;margin:1rem 0}\
dl{display:grid;grid-template-columns:max-content 1fr;gap:.25rem 1rem;margin:0}\
dt{font-weight:700}dd{margin:0;overflow-wrap:anywhere}\
.price{font-size:1.15rem;font-weight:700}.badge{color:#8a1c00;font-weight:700}\
code,pre{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:.95em;color:#111111;\
background:#f2f2f2;padding:0 .2em;border-radius:3px}pre{white-space:pre-wrap;overflow-wrap:anywhere;padding:.5rem}\
button{font:inherit;font-weight:700;margin-top:.75rem;padding:.5rem 1rem;border:2px solid #111111;border-radius:6px;\
color:#ffffff;background:#0b3d91;cursor:pointer}button:disabled{color:#111111;background:#f2f2f2;cursor:wait}\
.hint{color:#333333}.status{color:#111111;font-weight:700}";

/// The page's script (no `</script>` inside).
const SCRIPT: &str = include_str!("paywall.js");

fn sha256_source(text: &str) -> String {
    use base64::Engine as _;
    format!("'sha256-{}'", base64::engine::general_purpose::STANDARD.encode(Sha256::digest(text.as_bytes())))
}

/// The `Content-Security-Policy` of the default page (its style and script allowed by hash).
pub fn content_security_policy() -> &'static str {
    static CSP: OnceLock<String> = OnceLock::new();
    CSP.get_or_init(|| {
        format!(
            "default-src 'none'; script-src {}; style-src {}; connect-src 'self'; img-src 'none'; \
base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
            sha256_source(SCRIPT),
            sha256_source(STYLE)
        )
    })
}

/// Renders the default paywall page.
pub fn render(page: &PaywallPage, config: &PaywallConfig) -> String {
    let title = match &config.app_name {
        Some(app) => format!("{} — Payment Required", html_escape(app)),
        None => "Payment Required".to_owned(),
    };
    let what = if page.description.is_empty() { &page.url } else { &page.description };
    let mut sections = String::new();
    let mut data = Vec::with_capacity(page.offers.len());
    for (i, offer) in page.offers.iter().enumerate() {
        let protocol = if offer.protocol == "mpp" { "MPP" } else { "x402" };
        let mut rows = format!("<dt>Price</dt><dd class=\"price\">{}</dd>", html_escape(&offer.price));
        for (label, value) in &offer.facts {
            rows.push_str(&format!("<dt>{}</dt><dd>{}</dd>", html_escape(label), html_escape(value)));
        }
        let price = html_escape(&offer.price);
        let action = if offer.pay.is_some() {
            format!(
                "<button type=\"button\" class=\"pay\" id=\"pay{i}\" data-offer=\"{i}\" disabled>\
Pay {price} with a wallet ({protocol})</button>"
            )
        } else {
            format!("<p class=\"hint\">Pay this one with an {protocol} client.</p>")
        };
        sections.push_str(&format!(
            "<section class=\"option\" aria-labelledby=\"opt{i}\"><h2 id=\"opt{i}\">Pay {price} with {protocol}</h2>\
<dl>{rows}</dl>{action}</section>"
        ));
        let payee = offer.facts.iter().find(|(l, _)| l == "Pay to").map_or("", |(_, v)| v.as_str());
        data.push(serde_json::json!({
            "protocol": offer.protocol,
            "summary": format!("{} to {payee}", offer.price),
            "pay": offer.pay,
        }));
    }
    let badge = if config.testnet { "<p class=\"badge\">Test network: no real funds move.</p>" } else { "" };
    let choice = match page.offers.len() {
        0 => "a payment this page cannot make (use an x402 or MPP client)",
        1 => "this payment",
        _ => "any one of these payments",
    };
    let data_attr = page
        .x402_requirements
        .as_ref()
        .map(|r| format!(" data-requirements=\"{}\"", html_escape(r)))
        .unwrap_or_default();
    let offers = json_for_script(&serde_json::json!({ "method": page.method, "offers": data }));
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{title}</title>\
<style>{STYLE}</style></head><body>\
<main id=\"paywall\" aria-labelledby=\"paywall-title\"{data_attr}>\
<h1 id=\"paywall-title\">{title}</h1>{badge}\
<p>Access to <strong class=\"resource\">{what}</strong> requires {choice}.</p>\
<p>Resource: <code class=\"resource-url\">{url}</code></p>{sections}\
<p id=\"pay402-status\" class=\"status\" role=\"status\" aria-live=\"polite\"></p>\
<section id=\"pay402-result\" class=\"result\" aria-labelledby=\"result-title\" hidden>\
<h2 id=\"result-title\">Paid resource</h2><dl id=\"pay402-receipt\"></dl><pre id=\"pay402-body\"></pre></section>\
<noscript><p class=\"hint\">Paying here needs JavaScript and a browser wallet.</p></noscript>\
<p class=\"hint\">Pay with a browser wallet (the button signs the payment shown, nothing else), or with an \
x402 client (it sends the <code>PAYMENT-SIGNATURE</code> header) or an MPP client (it sends \
<code>Authorization: Payment</code>) on the same request.</p>\
<script type=\"application/json\" id=\"pay402-offers\">{offers}</script>\
<script>{SCRIPT}</script></main></body></html>",
        what = html_escape(what),
        url = html_escape(&page.url),
    )
}

/// The same 402 with the default page as its body: every header of `challenge` (the protocols'
/// challenge headers among them) kept, `Content-Type: text/html`, the strict
/// [`content_security_policy`], `X-Content-Type-Options: nosniff` and `Referrer-Policy:
/// no-referrer`.
pub fn respond(challenge: PaymentHttpResponse, page: &PaywallPage, config: &PaywallConfig) -> PaymentHttpResponse {
    let mut resp = with_html(challenge, render(page, config));
    resp.headers.insert(http::header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(content_security_policy()));
    resp
}

/// The same 402 with a seller's own page (`custom_paywall_html`) as its body: the challenge
/// headers kept, `Content-Type: text/html`; no `Content-Security-Policy` is imposed on a page
/// pay402 did not write.
pub fn respond_custom(challenge: PaymentHttpResponse, html: String) -> PaymentHttpResponse {
    with_html(challenge, html)
}

fn with_html(mut resp: PaymentHttpResponse, html: String) -> PaymentHttpResponse {
    resp.status = StatusCode::PAYMENT_REQUIRED;
    resp.headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    resp.headers.insert(http::header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    resp.headers.insert(http::header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    resp.headers.insert(http::header::VARY, HeaderValue::from_static("Accept"));
    resp.body = html.into();
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::web::RequestContext;

    fn accepting(accept: Option<&str>, agent: &str) -> bool {
        let mut headers = http::HeaderMap::new();
        if let Some(a) = accept {
            headers.insert("accept", a.parse().unwrap());
        }
        headers.insert("user-agent", agent.parse().unwrap());
        prefers_html(&RequestContext::new(http::Method::GET, "http://h/x".into(), headers))
    }

    #[test]
    fn html_is_served_to_requests_that_prefer_it() {
        let browser = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8";
        assert!(accepting(Some(browser), "Mozilla/5.0"));
        assert!(accepting(Some("text/html"), "curl/8.5.0"));
        assert!(accepting(Some("text/html"), ""));
        assert!(accepting(Some("application/json;q=0.5, text/html"), "x"));
        assert!(accepting(Some("TEXT/HTML;Q=0.9, */*;q=0.1"), "x"));
        assert!(accepting(Some("text/*"), "x"));
        for api in [
            None,
            Some("*/*"),
            Some("application/json"),
            Some("application/json, text/html"),
            Some("text/html;q=0.5, */*"),
            Some("text/html;q=0, */*;q=0.1"),
            Some("text/html;q=bad"),
            Some("text/plain"),
            Some("text/html;q=0.8, application/*;q=0.9"),
        ] {
            assert!(!accepting(api, "Mozilla/5.0"), "{api:?}");
        }
    }

    #[test]
    fn amounts_and_escapes() {
        assert_eq!(display_amount("1000", 6), "0.001");
        assert_eq!(display_amount("1500000", 6), "1.5");
        assert_eq!(display_amount("2000000", 6), "2");
        assert_eq!(display_amount("0", 6), "0");
        assert_eq!(display_amount("1", 6), "0.000001");
        assert_eq!(html_escape("<a href=\"x\">&'"), "&lt;a href=&quot;x&quot;&gt;&amp;&#x27;");
        let json = json_for_script(&serde_json::json!({"a": "</script><b>&\u{2028}"}));
        assert_eq!(json, r#"{"a":"\u003c/script\u003e\u003cb\u003e\u0026\u2028"}"#);
        assert_eq!(serde_json::from_str::<Value>(&json).unwrap()["a"], "</script><b>&\u{2028}");
    }

    fn page() -> PaywallPage {
        PaywallPage {
            description: "<b>Quotes</b>".into(),
            url: "https://api.example/q?a=1&b=<script>alert(1)</script>".into(),
            method: "GET".into(),
            offers: vec![PaywallOffer {
                protocol: "mpp",
                price: "1.5 USD₮0".into(),
                facts: vec![("Pay to".into(), "0x209693Bc6afc0C5328bA36FaF03C514EF312287C".into())],
                pay: Some(serde_json::json!({"echo": {"realm": "</script><script>alert(2)</script>"}})),
            }],
            x402_requirements: Some("{\"a\":\"<'>\"}".into()),
        }
    }

    #[test]
    fn the_page_escapes_everything_and_needs_nothing_external() {
        let html = render(&page(), &PaywallConfig { app_name: Some("<Shop>".into()), testnet: true });
        assert!(html.contains("&lt;b&gt;Quotes&lt;/b&gt;") && !html.contains("<b>Quotes"));
        assert!(html.contains("a=1&amp;b=&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(html.contains("&lt;Shop&gt; — Payment Required"));
        assert!(html.contains("data-requirements=\"{&quot;a&quot;:&quot;&lt;&#x27;&gt;&quot;}\""));
        // Two script elements: the data block and the page's own script, and nothing else.
        assert_eq!(html.matches("<script").count(), 2);
        assert_eq!(html.matches("</script>").count(), 2);
        assert!(html.contains("\\u003c/script\\u003e\\u003cscript\\u003ealert(2)"));
        for external in ["<link", "<img", "<iframe", " src=", "@import", "http://", "//cdn", "eval("] {
            assert!(!html.contains(external), "{external}");
        }
        assert!(!STYLE.contains("url(") && !SCRIPT.contains("import"), "no resource from a stylesheet or script");
        let handlers = regex::Regex::new(r"(?i)<[^>]*[ \t\r\n/]on[a-z]+[ \t\r\n]*=").unwrap();
        assert!(
            handlers.is_match("<b class=x onclick=\"f()\">") && !handlers.is_match(&html),
            "no inline event handler"
        );
        assert!(!SCRIPT.contains("</script") && !SCRIPT.contains("innerHTML") && !SCRIPT.contains("eval("));
    }

    #[test]
    fn the_policy_allows_exactly_the_inline_style_and_script() {
        let csp = content_security_policy();
        assert!(csp.starts_with("default-src 'none'; "), "{csp}");
        assert!(csp.contains("connect-src 'self'") && !csp.contains("unsafe"), "{csp}");
        let html = render(&page(), &PaywallConfig::default());
        let between = |open: &str| {
            let start = html.find(open).unwrap() + open.len();
            html[start..start + html[start..].find('<').unwrap()].to_owned()
        };
        assert!(csp.contains(&sha256_source(&between("<style>"))));
        let script = &html[html.rfind("<script>").unwrap() + 8..html.rfind("</script>").unwrap()];
        assert!(csp.contains(&sha256_source(script)));
        let resp = respond(
            PaymentHttpResponse::new(StatusCode::PAYMENT_REQUIRED, "application/json", "{}")
                .with_header("payment-required", "abc"),
            &page(),
            &PaywallConfig::default(),
        );
        assert_eq!(resp.headers["payment-required"], "abc");
        assert_eq!(resp.headers["content-security-policy"], csp);
        assert!(resp.headers["content-type"].to_str().unwrap().starts_with("text/html"));
    }

    /// WCAG relative luminance of `#rrggbb`.
    fn luminance(hex: &str) -> f64 {
        let channel = |i: usize| {
            let c = f64::from(u8::from_str_radix(&hex[i..i + 2], 16).unwrap()) / 255.0;
            if c <= 0.03928 { c / 12.92 } else { ((c + 0.055) / 1.055).powf(2.4) }
        };
        0.2126 * channel(1) + 0.7152 * channel(3) + 0.0722 * channel(5)
    }

    fn contrast(a: &str, b: &str) -> f64 {
        let (la, lb) = (luminance(a), luminance(b));
        (la.max(lb) + 0.05) / (la.min(lb) + 0.05)
    }

    #[test]
    fn every_text_colour_has_aaa_contrast_on_its_background() {
        // Each rule's own text colour on its own background, or on the page's white.
        let mut pairs = 0;
        for rule in STYLE.split('}') {
            let value = |prop: &str| {
                rule.match_indices(prop)
                    .find(|(i, _)| *i == 0 || matches!(rule.as_bytes()[i - 1], b'{' | b';'))
                    .map(|(i, _)| rule[i + prop.len()..i + prop.len() + 7].to_owned())
            };
            let Some(fg) = value("color:") else { continue };
            let bg = value("background:").unwrap_or_else(|| "#ffffff".to_owned());
            assert!(contrast(&fg, &bg) >= 7.0, "{rule}: {fg} on {bg}: {:.2}", contrast(&fg, &bg));
            pairs += 1;
        }
        assert!(pairs >= 6, "{pairs}");
    }
}
