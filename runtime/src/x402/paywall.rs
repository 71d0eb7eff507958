//! The browser paywall: the HTML page a browser gets instead of a bare 402 (wire facts §4.5).
//!
//! A request is a browser's when it accepts `text/html` and its `User-Agent` contains
//! `Mozilla`; API clients keep getting the `PAYMENT-REQUIRED` challenge.
//!
//! The default page ([`render`]) is self-contained — inline CSS, no script, no image, no font
//! or stylesheet from a CDN — so it renders offline and under a strict `Content-Security-Policy`.
//! For every accepted option it shows the price in token units (exact decimal), the asset (its
//! name and contract address), the network (with its name when known), the payee and the
//! scheme; above them the resource (description and URL). It is accessible: `lang`, one `h1`,
//! an `h2` per option labelling its section, the facts as a description list (`dt` label, `dd`
//! value), and text colours with a contrast ratio of at least 7:1 on white (WCAG AAA). The
//! full `PaymentRequired` JSON is carried, HTML-escaped, in the `data-requirements` attribute
//! of `<main id="x402-paywall">` for wallet scripts.
//!
//! A custom page ([`RouteConfig::custom_paywall_html`](super::RouteConfig::custom_paywall_html))
//! is served as written, with these placeholders replaced by the challenge's values
//! (HTML-escaped, from the first accepted option), so it can show the same facts:
//!
//! | placeholder | value |
//! |---|---|
//! | `{{price}}` | amount and token, e.g. `0.001 USD₮0` |
//! | `{{amount}}` | amount in token units, e.g. `0.001` |
//! | `{{amount_atomic}}` | amount in base units, e.g. `1000` |
//! | `{{asset}}` | token contract address |
//! | `{{asset_name}}` | token name, e.g. `USD₮0` |
//! | `{{network}}` | CAIP-2 id, e.g. `eip155:196` |
//! | `{{network_name}}` | network name, e.g. `X Layer` (the id when unknown) |
//! | `{{pay_to}}` | payee address |
//! | `{{scheme}}` | scheme, e.g. `exact` |
//! | `{{resource}}` | resource URL |
//! | `{{description}}` | resource description |
//! | `{{requirements}}` | the `PaymentRequired` JSON (HTML-escaped, for an attribute) |
//!
//! ```
//! use pay402_runtime::x402::paywall::{PaywallConfig, render, render_custom};
//! use pay402_runtime::x402::{PaymentRequired, PaymentRequirements, ResourceInfo};
//!
//! let required = PaymentRequired {
//!     x402_version: 2,
//!     error: Some("Payment required".into()),
//!     resource: Some(ResourceInfo {
//!         url: "https://api.example/quote".into(),
//!         description: Some("A stock quote".into()),
//!         mime_type: None,
//!     }),
//!     accepts: vec![PaymentRequirements {
//!         scheme: "exact".into(),
//!         network: "eip155:196".into(),
//!         asset: "0x779ded0c9e1022225f8e0630b35a9b54be713736".into(),
//!         amount: "1000".into(),
//!         pay_to: "0x209693Bc6afc0C5328bA36FaF03C514EF312287C".into(),
//!         max_timeout_seconds: 300,
//!         extra: Default::default(),
//!     }],
//!     extensions: None,
//! };
//! let page = render(&required, &PaywallConfig::default());
//! assert!(page.contains("0.001 USD₮0") && page.contains("X Layer"));
//! assert_eq!(render_custom("<p>{{price}} to {{pay_to}}</p>", &required),
//!            "<p>0.001 USD₮0 to 0x209693Bc6afc0C5328bA36FaF03C514EF312287C</p>");
//! ```

use super::types::{PaymentRequired, PaymentRequirements};
use crate::chain::NetworkRegistry;

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

/// What the page says about one accepted option (unescaped).
struct OptionView {
    amount: String,
    amount_atomic: String,
    token: String,
    asset: String,
    network: String,
    network_name: String,
    pay_to: String,
    scheme: String,
}

impl OptionView {
    fn of(req: &PaymentRequirements, registry: &NetworkRegistry) -> Self {
        let info = registry.asset_info(&req.network, &req.asset);
        let named = req.extra.get("name").and_then(|v| v.as_str()).filter(|n| !n.is_empty());
        // Display units need the token's decimals: known only for the registry's assets.
        let (amount, token) = match info {
            Some(info) => (display_amount(&req.amount, info.decimals), named.unwrap_or(&info.name).to_owned()),
            None => (req.amount.clone(), format!("base units of {}", named.unwrap_or("the token"))),
        };
        let network = req.network.as_str().to_owned();
        Self {
            amount,
            amount_atomic: req.amount.clone(),
            token,
            asset: req.asset.clone(),
            network_name: network_name(&network).map_or_else(|| network.clone(), str::to_owned),
            network,
            pay_to: req.pay_to.clone(),
            scheme: req.scheme.clone(),
        }
    }

    fn price(&self) -> String {
        format!("{} {}", self.amount, self.token)
    }

    fn network_label(&self) -> String {
        if self.network_name == self.network {
            self.network.clone()
        } else {
            format!("{} ({})", self.network_name, self.network)
        }
    }
}

fn requirements_json(required: &PaymentRequired) -> String {
    crate::json::compact(required).ok().and_then(|b| String::from_utf8(b).ok()).unwrap_or_default()
}

/// `(description, url)` of the resource (`description` falls back to the URL).
fn resource_of(required: &PaymentRequired) -> (String, String) {
    let resource = required.resource.as_ref();
    let url = resource.map(|r| r.url.clone()).unwrap_or_default();
    let what = resource.and_then(|r| r.description.clone().filter(|d| !d.is_empty())).unwrap_or_else(|| url.clone());
    (what, url)
}

const STYLE: &str = "\
:root{color-scheme:light}\
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;background:#ffffff;color:#111111;\
max-width:42rem;margin:2rem auto;padding:0 1rem;line-height:1.5}\
h1{font-size:1.6rem;margin-bottom:.25rem}h2{font-size:1.2rem;margin:0 0 .5rem 0}\
section.option{border:2px solid #333333;border-radius:8px;padding:1rem;margin:1rem 0}\
dl{display:grid;grid-template-columns:max-content 1fr;gap:.25rem 1rem;margin:0}\
dt{font-weight:700}dd{margin:0;overflow-wrap:anywhere}\
.price{font-size:1.15rem;font-weight:700}.badge{color:#8a1c00;font-weight:700}\
code{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:.95em;color:#111111;\
background:#f2f2f2;padding:0 .2em;border-radius:3px}.hint{color:#333333}";

/// Renders the default paywall page for a challenge.
pub fn render(required: &PaymentRequired, config: &PaywallConfig) -> String {
    let title = match &config.app_name {
        Some(app) => format!("{} — Payment Required", html_escape(app)),
        None => "Payment Required".to_owned(),
    };
    let registry = NetworkRegistry::global();
    let (what, url) = resource_of(required);
    let mut rows = String::new();
    for (i, req) in required.accepts.iter().enumerate() {
        let view = OptionView::of(req, &registry);
        rows.push_str(&format!(
            "<section class=\"option\" aria-labelledby=\"opt{i}\"><h2 id=\"opt{i}\">Pay {price}</h2><dl>\
<dt>Price</dt><dd class=\"price\">{price}</dd>\
<dt>Asset</dt><dd>{token} <code aria-label=\"token contract address\">{asset}</code></dd>\
<dt>Network</dt><dd>{network}</dd>\
<dt>Pay to</dt><dd><code aria-label=\"payee address\">{pay_to}</code></dd>\
<dt>Scheme</dt><dd>{scheme}</dd></dl></section>",
            price = html_escape(&view.price()),
            token = html_escape(&view.token),
            asset = html_escape(&view.asset),
            network = html_escape(&view.network_label()),
            pay_to = html_escape(&view.pay_to),
            scheme = html_escape(&view.scheme),
        ));
    }
    let badge = if config.testnet { "<p class=\"badge\">Test network: no real funds move.</p>" } else { "" };
    let choice = if required.accepts.len() > 1 { "any one of these options" } else { "this payment" };
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{title}</title>\
<style>{STYLE}</style></head><body>\
<main id=\"x402-paywall\" aria-labelledby=\"paywall-title\" data-requirements=\"{data}\">\
<h1 id=\"paywall-title\">{title}</h1>{badge}\
<p>Access to <strong class=\"resource\">{what}</strong> requires {choice}.</p>\
<p>Resource: <code class=\"resource-url\">{url}</code></p>{rows}\
<p class=\"hint\">Pay with an x402 client or wallet: it signs the payment and sends it in the \
<code>PAYMENT-SIGNATURE</code> header of the same request.</p>\
</main></body></html>",
        data = html_escape(&requirements_json(required)),
        what = html_escape(&what),
        url = html_escape(&url),
    )
}

/// Fills the placeholders of a custom paywall page (see the [module docs](self)) with the
/// challenge's values, HTML-escaped. A page without placeholders is returned unchanged.
pub fn render_custom(template: &str, required: &PaymentRequired) -> String {
    if !template.contains("{{") {
        return template.to_owned();
    }
    let registry = NetworkRegistry::global();
    let view = required.accepts.first().map(|r| OptionView::of(r, &registry));
    let (what, url) = resource_of(required);
    let description = required.resource.as_ref().and_then(|r| r.description.clone()).unwrap_or_default();
    let field = |f: fn(&OptionView) -> String| view.as_ref().map(f).unwrap_or_default();
    let values: [(&str, String); 12] = [
        ("{{price}}", field(OptionView::price)),
        ("{{amount}}", field(|v| v.amount.clone())),
        ("{{amount_atomic}}", field(|v| v.amount_atomic.clone())),
        ("{{asset}}", field(|v| v.asset.clone())),
        ("{{asset_name}}", field(|v| v.token.clone())),
        ("{{network}}", field(|v| v.network.clone())),
        ("{{network_name}}", field(|v| v.network_name.clone())),
        ("{{pay_to}}", field(|v| v.pay_to.clone())),
        ("{{scheme}}", field(|v| v.scheme.clone())),
        ("{{resource}}", url),
        ("{{description}}", if description.is_empty() { what } else { description }),
        ("{{requirements}}", requirements_json(required)),
    ];
    // One left-to-right pass, so a value containing a placeholder is never expanded again.
    let mut out = String::with_capacity(template.len() + 256);
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let tail = &rest[start..];
        match values.iter().find(|(p, _)| tail.starts_with(p)) {
            Some((p, v)) => {
                out.push_str(&html_escape(v));
                rest = &tail[p.len()..];
            }
            None => {
                out.push_str("{{");
                rest = &tail[2..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::x402::ResourceInfo;

    fn required(asset: &str, description: &str) -> PaymentRequired {
        PaymentRequired {
            x402_version: 2,
            error: None,
            resource: Some(ResourceInfo {
                url: "https://api.example/q?a=1&b=<2>".into(),
                description: Some(description.into()),
                mime_type: None,
            }),
            accepts: vec![PaymentRequirements {
                scheme: "exact".into(),
                network: "eip155:196".into(),
                asset: asset.into(),
                amount: "1500000".into(),
                pay_to: "0x209693Bc6afc0C5328bA36FaF03C514EF312287C".into(),
                max_timeout_seconds: 300,
                extra: Default::default(),
            }],
            extensions: None,
        }
    }

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

    #[test]
    fn default_page_shows_the_facts_and_needs_nothing_external() {
        let page = render(&required(crate::chain::X_LAYER_USDT0, "<b>Quotes</b>"), &PaywallConfig::default());
        for fact in ["1.5 USD₮0", "X Layer (eip155:196)", "0x209693Bc6afc0C5328bA36FaF03C514EF312287C", "exact"] {
            assert!(page.contains(fact), "{fact}");
        }
        assert!(page.contains("&lt;b&gt;Quotes&lt;/b&gt;") && !page.contains("<b>Quotes"));
        assert!(page.contains("https://api.example/q?a=1&amp;b=&lt;2&gt;"));
        for external in ["<script", "<link", "<img", "src=", "url(", "@import", "http://", "//cdn"] {
            assert!(!page.contains(external), "{external}");
        }
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
    fn every_text_colour_has_aaa_contrast_on_every_background() {
        let colours = |prop: &str| -> Vec<String> {
            STYLE.match_indices(prop).map(|(i, _)| STYLE[i + prop.len()..i + prop.len() + 7].to_owned()).collect()
        };
        let texts = colours("color:");
        let backgrounds = colours("background:");
        assert!(texts.len() >= 4 && backgrounds.len() >= 2, "{texts:?} {backgrounds:?}");
        for fg in &texts {
            for bg in &backgrounds {
                assert!(contrast(fg, bg) >= 7.0, "{fg} on {bg}: {:.2}", contrast(fg, bg));
            }
        }
    }

    #[test]
    fn unknown_assets_are_shown_in_base_units() {
        let page = render(&required("0x4444444444444444444444444444444444444444", "x"), &PaywallConfig::default());
        assert!(page.contains("1500000 base units of the token"));
    }

    #[test]
    fn custom_pages_get_the_facts_escaped_and_expanded_once() {
        let req = required(crate::chain::X_LAYER_USDT0, "{{price}} <i>");
        let page = render_custom(
            "<p>{{price}}|{{amount_atomic}}|{{network_name}}|{{resource}}|{{description}}|{{unknown}}</p>",
            &req,
        );
        assert_eq!(
            page,
            "<p>1.5 USD₮0|1500000|X Layer|https://api.example/q?a=1&amp;b=&lt;2&gt;|{{price}} &lt;i&gt;|{{unknown}}</p>"
        );
        assert_eq!(render_custom("<html>pay me</html>", &req), "<html>pay me</html>");
    }
}
