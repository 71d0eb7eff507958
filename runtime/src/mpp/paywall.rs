//! MPP's side of the browser paywall: the offers a 402's `WWW-Authenticate: Payment` challenges
//! make on the page ([`crate::web::paywall`] renders it and decides who gets it).
//!
//! An `evm` `charge` challenge whose token the [`NetworkRegistry`]
//! knows (its EIP-712 `name` and `version`) gets a wallet button. The page then builds the
//! credential exactly as [`MppChargeClient`](super::MppChargeClient) does: one EIP-3009
//! `TransferWithAuthorization` of `amount − Σ splits` to the recipient and one per split, all valid
//! from now − 600 s until max(`expires` + 120 s, now + 300 s), the challenge echoed verbatim
//! (no `description`), `source` = `did:pkh:eip155:<chainId>:<address>`, sent as `Authorization:
//! Payment <base64url(sorted, compact, ASCII JSON)>`. Other challenges (sessions, other methods,
//! unknown tokens) are listed, payable with an MPP client.

use super::charge_request::ChargeRequest;
use super::header::{ParsedChallenge, parse_www_authenticate};
use super::wire::{CHARGE_INTENT, EVM_METHOD, MAX_SPLITS};
use crate::chain::NetworkRegistry;
use crate::web::paywall::{PaywallConfig, PaywallOffer, PaywallPage, display_amount, network_label, prefers_html};
use crate::web::{PaymentHttpResponse, RequestContext};
use http::StatusCode;
use serde_json::{Value, json};

/// An MPP route's answer to `ctx`: a 402 with the paywall page as its body when the request
/// prefers HTML (every `WWW-Authenticate` challenge kept); any other answer unchanged.
pub fn for_request(ctx: &RequestContext, answer: PaymentHttpResponse, config: &PaywallConfig) -> PaymentHttpResponse {
    if answer.status != StatusCode::PAYMENT_REQUIRED || !prefers_html(ctx) {
        return answer;
    }
    let challenges = challenges_of(&answer.headers);
    if challenges.is_empty() {
        return answer;
    }
    let page = PaywallPage {
        description: challenges.iter().find_map(|c| c.description.clone()).unwrap_or_default(),
        url: ctx.url.clone(),
        method: ctx.method.to_string(),
        offers: offers(&challenges),
        x402_requirements: None,
    };
    crate::web::paywall::respond(answer, &page, config)
}

/// The MPP challenges of a 402 (its `WWW-Authenticate` lines; unparseable lines are skipped).
pub fn challenges_of(headers: &http::HeaderMap) -> Vec<ParsedChallenge> {
    headers
        .get_all(http::header::WWW_AUTHENTICATE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| parse_www_authenticate(&[v]).ok())
        .flatten()
        .collect()
}

/// The offers of MPP challenges: one per challenge.
pub fn offers(challenges: &[ParsedChallenge]) -> Vec<PaywallOffer> {
    let registry = NetworkRegistry::global();
    challenges.iter().map(|c| offer(c, &registry)).collect()
}

fn offer(challenge: &ParsedChallenge, registry: &NetworkRegistry) -> PaywallOffer {
    let method = format!("{} {}", challenge.method, challenge.intent);
    let request = ChargeRequest::from_request(&challenge.request).ok();
    let Some(request) = request.filter(|_| challenge.method == EVM_METHOD && challenge.intent == CHARGE_INTENT) else {
        let amount = challenge.request.get("amount").and_then(Value::as_str).unwrap_or("?");
        return PaywallOffer {
            protocol: "mpp",
            price: format!("{amount} base units"),
            facts: vec![("Method".into(), method)],
            pay: None,
        };
    };
    let network = request.network();
    let token = request.token_info(registry);
    let price = match token {
        Some(t) => format!("{} {}", display_amount(&request.amount.to_string(), t.decimals), t.name),
        None => format!("{} base units of the token", request.amount),
    };
    let asset = match token {
        Some(t) => format!("{} {}", t.name, request.currency_text),
        None => request.currency_text.clone(),
    };
    let mut facts = vec![
        ("Asset".to_owned(), asset),
        ("Network".to_owned(), network_label(network.as_str())),
        ("Pay to".to_owned(), request.recipient_text.clone()),
    ];
    for split in &request.splits {
        let amount = match token {
            Some(t) => format!("{} {}", display_amount(&split.amount.to_string(), t.decimals), t.name),
            None => format!("{} base units", split.amount),
        };
        facts.push(("Of which to".to_owned(), format!("{} {amount}", split.recipient_text)));
    }
    facts.push(("Method".to_owned(), method));
    if let Some(expires) = &challenge.expires {
        facts.push(("Offer expires".to_owned(), expires.clone()));
    }
    PaywallOffer { protocol: "mpp", price, facts, pay: wallet_payment(challenge, &request, registry) }
}

/// What the page's script signs and sends: the challenge echo, the token's EIP-712 domain and
/// the transfers (recipient first, then each split). `None` when the page cannot pay it.
fn wallet_payment(challenge: &ParsedChallenge, request: &ChargeRequest, registry: &NetworkRegistry) -> Option<Value> {
    if request.splits.len() > MAX_SPLITS {
        return None;
    }
    let primary = request.amount.checked_sub(request.splits_total()?)?;
    let token = request.token_info(registry)?;
    let mut transfers = vec![json!({"to": request.recipient_text, "value": primary.to_string()})];
    transfers.extend(request.splits.iter().map(|s| json!({"to": s.recipient_text, "value": s.amount.to_string()})));
    let echo = challenge.to_echo();
    let mut echo_json = serde_json::Map::new();
    for (k, v) in [("id", &echo.id), ("realm", &echo.realm), ("method", &echo.method), ("intent", &echo.intent)] {
        echo_json.insert(k.to_owned(), json!(v));
    }
    echo_json.insert("request".to_owned(), json!(echo.request));
    for (k, v) in [("expires", &echo.expires), ("digest", &echo.digest), ("opaque", &echo.opaque)] {
        if let Some(v) = v {
            echo_json.insert(k.to_owned(), json!(v));
        }
    }
    Some(json!({
        "echo": echo_json,
        "domain": {"name": token.name, "version": token.version, "chainId": request.chain_id,
            "verifyingContract": request.currency_text},
        "transfers": transfers,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mpp::Challenge;

    const USDT0: &str = "0x779ded0c9e1022225f8e0630b35a9b54be713736";
    const PAY_TO: &str = "0x1111111111111111111111111111111111111111";

    fn headers(challenges: &[Challenge]) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        for c in challenges {
            h.append(http::header::WWW_AUTHENTICATE, c.to_www_authenticate().unwrap().parse().unwrap());
        }
        h
    }

    fn challenge(intent: &str, request: Value) -> Challenge {
        let Value::Object(request) = request else { unreachable!() };
        Challenge::new("s", "api.example.com", "evm", intent, request, None, Some("<b>quote</b>".into()), None, None)
    }

    #[test]
    fn a_charge_is_offered_with_its_splits_and_a_session_is_listed() {
        let charge = challenge(
            "charge",
            json!({"amount": "10000", "currency": USDT0, "recipient": PAY_TO,
                "methodDetails": {"chainId": 196, "splits": [{"amount": "1000", "recipient": "0x2222222222222222222222222222222222222222"}]}}),
        );
        let session = challenge("session", json!({"amount": "5", "currency": USDT0, "recipient": PAY_TO}));
        let offers = offers(&challenges_of(&headers(&[charge.clone(), session])));
        assert_eq!(offers.len(), 2);
        assert_eq!(offers[0].price, "0.01 USD₮0");
        assert!(offers[0].facts.contains(&("Pay to".into(), PAY_TO.into())));
        assert!(offers[0].facts.contains(&("Network".into(), "X Layer (eip155:196)".into())));
        let pay = offers[0].pay.as_ref().expect("payable");
        assert_eq!(pay["transfers"][0], json!({"to": PAY_TO, "value": "9000"}));
        assert_eq!(pay["transfers"][1]["value"], "1000");
        assert_eq!(pay["echo"]["id"], charge.id.as_str());
        assert!(pay["echo"].get("description").is_none(), "the echo carries no description");
        assert_eq!(pay["domain"]["chainId"], 196);
        assert!(offers[1].pay.is_none());
        assert_eq!(offers[1].facts, vec![("Method".to_owned(), "evm session".to_owned())]);
    }

    #[test]
    fn an_unknown_token_is_shown_but_not_signed() {
        let other = challenge(
            "charge",
            json!({"amount": "7", "currency": "0x4444444444444444444444444444444444444444", "recipient": PAY_TO}),
        );
        let offers = offers(&challenges_of(&headers(&[other])));
        assert_eq!(offers[0].price, "7 base units of the token");
        assert!(offers[0].pay.is_none());
    }
}
