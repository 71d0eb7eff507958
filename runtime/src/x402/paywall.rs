//! x402's side of the browser paywall: the offers an x402 challenge makes on the page, and the
//! seller's own page (`custom_paywall_html`).
//!
//! The page, who gets it and how a person pays on it are [`crate::web::paywall`]'s (shared with
//! MPP): a request that prefers `text/html` gets the page as the body of the same 402, its
//! `PAYMENT-REQUIRED` header kept. For every accepted option the page shows the price in token
//! units (exact decimal), the asset (its name and contract address), the network (with its name
//! when known), the payee and the scheme; an `exact` option on an EVM network whose `extra`
//! carries the token's EIP-712 `name` and `version` (EIP-3009) gets a wallet button, which signs
//! the `TransferWithAuthorization` of exactly that option and retries the request with
//! `PAYMENT-SIGNATURE` (an x402 v2 `PaymentPayload`, as [`X402Client`](super::X402Client)
//! builds it). The full `PaymentRequired` JSON is carried, HTML-escaped, in the
//! `data-requirements` attribute of `<main id="paywall">` for wallet scripts.
//!
//! A custom page ([`RouteConfig::custom_paywall_html`](super::RouteConfig::custom_paywall_html))
//! is served as written (pay402 adds no `Content-Security-Policy` to it), as the body of the
//! same 402 (its `PAYMENT-REQUIRED` header kept), with these placeholders replaced by the challenge's values
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

use super::headers::decode_payment_required_header;
use super::types::{AnyPaymentRequired, PaymentRequired, PaymentRequirements};
use crate::chain::NetworkRegistry;
pub use crate::web::paywall::{PaywallConfig, display_amount, html_escape, network_name};
use crate::web::paywall::{PaywallOffer, PaywallPage, network_label};
use serde_json::{Value, json};

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

/// What the page's script needs to pay `req` with a wallet: the requirements (echoed as
/// `accepted`), the resource and extensions, and the token's EIP-712 domain. `None` when the page
/// cannot pay it (not `exact` EIP-3009 on an `eip155` network with `extra.name`/`extra.version`).
fn wallet_payment(req: &PaymentRequirements, required: &PaymentRequired) -> Option<Value> {
    if req.scheme != "exact"
        || req.extra.get("assetTransferMethod").and_then(Value::as_str).is_some_and(|m| m != "eip3009")
    {
        return None;
    }
    let chain_id = crate::evm::chain_id_of(req.network.as_str()).ok()?;
    crate::evm::parse_address(&req.asset).ok()?;
    crate::evm::parse_address(&req.pay_to).ok()?;
    crate::evm::parse_uint256(&req.amount).ok()?;
    let text = |key: &str| req.extra.get(key).and_then(Value::as_str).filter(|t| !t.is_empty());
    let (name, version) = (text("name")?, text("version")?);
    Some(json!({
        "requirements": req,
        "resource": required.resource,
        "extensions": required.extensions,
        "domain": {"name": name, "version": version, "chainId": chain_id, "verifyingContract": req.asset},
    }))
}

/// The offers of an x402 challenge: one per accepted option.
pub fn offers(required: &PaymentRequired) -> Vec<PaywallOffer> {
    let registry = NetworkRegistry::global();
    required
        .accepts
        .iter()
        .map(|req| {
            let view = OptionView::of(req, &registry);
            PaywallOffer {
                protocol: "x402",
                price: view.price(),
                facts: vec![
                    ("Asset".into(), format!("{} {}", view.token, view.asset)),
                    ("Network".into(), network_label(&view.network)),
                    ("Pay to".into(), view.pay_to.clone()),
                    ("Scheme".into(), view.scheme.clone()),
                ],
                pay: wallet_payment(req, required),
            }
        })
        .collect()
}

/// The x402 challenge a 402's `PAYMENT-REQUIRED` header carries (v2 only), if any.
pub fn challenge_of(headers: &http::HeaderMap) -> Option<PaymentRequired> {
    let value = headers.get("payment-required")?.to_str().ok()?;
    match decode_payment_required_header(value).ok()? {
        AnyPaymentRequired::V2(required) => Some(required),
        AnyPaymentRequired::V1(_) => None,
    }
}

/// The page of an x402 challenge alone (the resource from its `resource`), repeating `method`.
pub fn page(required: &PaymentRequired, method: &str) -> PaywallPage {
    let (what, url) = resource_of(required);
    PaywallPage {
        description: what,
        url,
        method: method.to_owned(),
        offers: offers(required),
        x402_requirements: Some(requirements_json(required)),
    }
}

/// Renders the default paywall page of an x402 challenge (for a `GET`).
pub fn render(required: &PaymentRequired, config: &PaywallConfig) -> String {
    crate::web::paywall::render(&page(required, "GET"), config)
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
        let mut extra = serde_json::Map::new();
        extra.insert("name".into(), "USD\u{20ae}0".into());
        extra.insert("version".into(), "1".into());
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
                extra,
            }],
            extensions: None,
        }
    }

    #[test]
    fn default_page_shows_the_facts_escaped() {
        let page = render(&required(crate::chain::X_LAYER_USDT0, "<b>Quotes</b>"), &PaywallConfig::default());
        for fact in ["1.5 USD₮0", "X Layer (eip155:196)", "0x209693Bc6afc0C5328bA36FaF03C514EF312287C", "exact"] {
            assert!(page.contains(fact), "{fact}");
        }
        assert!(page.contains("&lt;b&gt;Quotes&lt;/b&gt;") && !page.contains("<b>Quotes"));
        assert!(page.contains("https://api.example/q?a=1&amp;b=&lt;2&gt;"));
        assert!(page.contains("id=\"pay0\""), "an exact EIP-3009 option is payable from the page");
    }

    #[test]
    fn the_wallet_signs_exactly_the_offered_option() {
        let req = required(crate::chain::X_LAYER_USDT0, "x");
        let offer = &offers(&req)[0];
        let pay = offer.pay.as_ref().expect("payable");
        assert_eq!(pay["requirements"], serde_json::to_value(&req.accepts[0]).unwrap());
        assert_eq!(
            pay["domain"],
            json!({"name": "USD₮0", "version": "1", "chainId": 196,
            "verifyingContract": crate::chain::X_LAYER_USDT0})
        );
        let mut permit2 = req.clone();
        permit2.accepts[0].extra.insert("assetTransferMethod".into(), "permit2".into());
        assert!(offers(&permit2)[0].pay.is_none());
        let mut unnamed = req;
        unnamed.accepts[0].extra.remove("version");
        assert!(offers(&unnamed)[0].pay.is_none());
    }

    #[test]
    fn unknown_assets_are_shown_in_base_units() {
        let page = render(&required("0x4444444444444444444444444444444444444444", "x"), &PaywallConfig::default());
        assert!(page.contains("1500000 base units of USD₮0"));
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
