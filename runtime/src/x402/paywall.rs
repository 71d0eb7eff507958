//! The browser paywall: the HTML page a browser gets instead of a bare 402 (wire facts §4.5).
//!
//! Self-contained (no external resources): it shows the price, asset, network, payee and
//! resource, and carries the full `PaymentRequired` JSON (HTML-escaped) in a
//! `data-requirements` attribute for wallet scripts.

use super::types::PaymentRequired;

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

/// Renders the default paywall page for a challenge.
pub fn render(required: &PaymentRequired, config: &PaywallConfig) -> String {
    let title = match &config.app_name {
        Some(app) => format!("{} — Payment Required", html_escape(app)),
        None => "Payment Required".to_owned(),
    };
    let resource = required.resource.as_ref();
    let what = resource
        .and_then(|r| r.description.clone().filter(|d| !d.is_empty()))
        .or_else(|| resource.map(|r| r.url.clone()))
        .unwrap_or_default();
    let url = resource.map(|r| r.url.clone()).unwrap_or_default();
    let mut rows = String::new();
    for (i, req) in required.accepts.iter().enumerate() {
        let token = req.extra.get("name").and_then(|v| v.as_str()).unwrap_or("tokens");
        let amount = display_amount(&req.amount, 6);
        rows.push_str(&format!(
            "<section class=\"option\" aria-labelledby=\"opt{i}\"><h2 id=\"opt{i}\">Pay {amount} {token}</h2><dl>\
<dt>Price</dt><dd class=\"price\">{amount} {token}</dd>\
<dt>Asset</dt><dd><code>{asset}</code></dd>\
<dt>Network</dt><dd>{network}</dd>\
<dt>Pay to</dt><dd><code>{pay_to}</code></dd>\
<dt>Scheme</dt><dd>{scheme}</dd></dl></section>",
            amount = html_escape(&amount),
            token = html_escape(token),
            asset = html_escape(&req.asset),
            network = html_escape(req.network.as_str()),
            pay_to = html_escape(&req.pay_to),
            scheme = html_escape(&req.scheme),
        ));
    }
    let json = String::from_utf8(crate::json::compact(required).unwrap_or_default()).unwrap_or_default();
    let badge = if config.testnet { "<p class=\"badge\">Test network</p>" } else { "" };
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{title}</title>\
<style>body{{font-family:system-ui,sans-serif;background:#ffffff;color:#111111;max-width:40rem;margin:2rem auto;padding:0 1rem;line-height:1.5}}\
h1{{font-size:1.6rem}}section.option{{border:1px solid #444444;border-radius:8px;padding:1rem;margin:1rem 0}}\
dt{{font-weight:700}}dd{{margin:0 0 .5rem 0;word-break:break-all}}.badge{{color:#8a1c00;font-weight:700}}code{{font-size:.95em}}</style>\
</head><body><main id=\"x402-paywall\" data-requirements=\"{data}\"><h1>{title}</h1>{badge}\
<p>Access to <strong class=\"resource\">{what}</strong> requires a payment.</p>\
<p>Resource: <code>{url}</code></p>{rows}\
<p>Pay with an x402 client: send the signed payment in the <code>PAYMENT-SIGNATURE</code> header.</p>\
</main></body></html>",
        data = html_escape(&json),
        what = html_escape(&what),
        url = html_escape(&url),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts() {
        assert_eq!(display_amount("1000", 6), "0.001");
        assert_eq!(display_amount("1500000", 6), "1.5");
        assert_eq!(display_amount("2000000", 6), "2");
        assert_eq!(display_amount("0", 6), "0");
        assert_eq!(display_amount("1", 6), "0.000001");
    }

    #[test]
    fn escapes() {
        assert_eq!(html_escape("<a href=\"x\">&'"), "&lt;a href=&quot;x&quot;&gt;&amp;&#x27;");
    }
}
