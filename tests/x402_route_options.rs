//! Route-table options of the x402 HTTP layer: custom paywall, unpaid and settlement-failure
//! bodies, extensions, dynamic-callback time-outs and errors, and lazy facilitator sync.

mod support;

use pay402::chain::X_LAYER_USDT0;
use pay402::evm::{PrivateKeySigner, U256};
use pay402::web::HttpBody;
use pay402::web::RequestContext;
use pay402::x402::EmbeddedFacilitator;
use pay402::x402::X402Client;
use pay402::x402::X402ResourceServer;
use pay402::x402::{
    AnyPaymentRequired, ExactEvmClientScheme, ExactEvmScheme, HttpFacilitatorClient, HttpFacilitatorConfig, Price,
    decode_payment_required_header, decode_payment_response_header,
};
use pay402::x402::{PaymentOption, RouteConfig, X402HttpServer};
use std::time::Duration;
use support::{FlakyFacilitator, SettleMode};

const PAY_TO: &str = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C";
const KEY: &str = "0x2a871d0798f97d79848a013d4936a73bf4cc922c825d33c1cf7073dff6d409c6";

fn ctx(path: &str, headers: &[(&str, &str)]) -> RequestContext {
    let mut map = http::HeaderMap::new();
    for (k, v) in headers {
        map.insert(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
    }
    RequestContext::new(http::Method::GET, format!("https://api.example.com{path}"), map)
}

fn server(facilitator: &FlakyFacilitator) -> X402HttpServer {
    let resource = X402ResourceServer::new(facilitator.clone()).register("eip155:196", ExactEvmScheme::new());
    let mut ext = serde_json::Map::new();
    ext.insert("bazaar".into(), serde_json::json!({ "discoverable": true }));
    let custom = RouteConfig::new(PaymentOption::exact("$0.001", PAY_TO))
        .custom_paywall_html("<html>pay me</html>")
        .unpaid_response_body(|_| HttpBody::json(&serde_json::json!({ "hint": "pay" })))
        .settlement_failed_response_body(|_, failure| {
            HttpBody::json(&serde_json::json!({ "settlement": failure.error_reason }))
        })
        .extensions(ext);
    let slow = RouteConfig::new(PaymentOption::exact("$0.001", PAY_TO).dynamic_price(|_| async {
        tokio::time::sleep(Duration::from_secs(5)).await;
        Ok(Price::from("$1"))
    }))
    .hook_timeout(Duration::from_millis(50));
    let failing = RouteConfig::new(
        PaymentOption::exact("$0.001", PAY_TO).dynamic_pay_to(|_| async { Err("no merchant".into()) }),
    );
    X402HttpServer::new(resource)
        .route("GET /custom", custom)
        .and_then(|s| s.route("GET /slow", slow))
        .and_then(|s| s.route("GET /failing", failing))
        .expect("routes")
}

#[tokio::test]
async fn custom_bodies_paywall_and_extensions() {
    let embedded = EmbeddedFacilitator::new();
    let buyer: PrivateKeySigner = KEY.parse().unwrap();
    embedded.fund(X_LAYER_USDT0, &buyer.address().to_string(), U256::from(1_000_000u64)).unwrap();
    let facilitator = FlakyFacilitator::new(embedded);
    let x402 = server(&facilitator);
    let route = x402.route_for("GET", "/custom").unwrap();

    let unpaid = x402.process(&ctx("/custom", &[]), &route).await.unwrap_err();
    assert_eq!(unpaid.status, 402);
    assert_eq!(&unpaid.body[..], br#"{"hint":"pay"}"#);
    let header = unpaid.headers["payment-required"].to_str().unwrap();
    let AnyPaymentRequired::V2(required) = decode_payment_required_header(header).unwrap() else { panic!("v2") };
    assert_eq!(required.extensions.as_ref().unwrap()["bazaar"]["discoverable"], true);

    let browser = x402
        .process(&ctx("/custom", &[("accept", "text/html"), ("user-agent", "Mozilla/5.0")]), &route)
        .await
        .unwrap_err();
    assert_eq!(&browser.body[..], b"<html>pay me</html>");
    // The seller's page is the body of the same 402: the challenge header stays, no CSP is added.
    assert_eq!(browser.status, 402);
    assert!(browser.headers.contains_key("payment-required"));
    assert!(!browser.headers.contains_key("content-security-policy"));

    // Settlement fails → the custom failure body, with the failure PAYMENT-RESPONSE.
    facilitator.set(SettleMode::Fail);
    let client = X402Client::new().register("eip155:196", ExactEvmClientScheme::new(buyer));
    let (name, value) = client.create_payment_header(&AnyPaymentRequired::V2(required)).await.unwrap();
    let paid_ctx = ctx("/custom", &[(name, &value)]);
    let payment = x402.process(&paid_ctx, &route).await.expect("verified");
    let failed = x402.settle(&paid_ctx, &payment).await.unwrap_err();
    assert_eq!(failed.status, 402);
    assert_eq!(&failed.body[..], br#"{"settlement":"insufficient_funds"}"#);
    let settle = decode_payment_response_header(failed.headers["payment-response"].to_str().unwrap()).unwrap();
    assert!(!settle.success);
}

#[tokio::test]
async fn callback_timeouts_and_errors_are_500s() {
    let facilitator = FlakyFacilitator::new(EmbeddedFacilitator::new());
    let x402 = server(&facilitator);
    let slow = x402.process(&ctx("/slow", &[]), &x402.route_for("GET", "/slow").unwrap()).await.unwrap_err();
    assert_eq!(slow.status, 500);
    assert_eq!(&slow.body[..], br#"{"error":"Hook execution timed out"}"#);
    let failing = x402.process(&ctx("/failing", &[]), &x402.route_for("GET", "/failing").unwrap()).await.unwrap_err();
    assert_eq!(failing.status, 500);
    assert_eq!(&failing.body[..], br#"{"error":"Failed to process request"}"#);
    assert!(x402.route_for("POST", "/custom").is_none(), "unknown routes pass through");
}

#[tokio::test]
async fn an_unreachable_facilitator_gives_502_and_is_retried() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let client = HttpFacilitatorClient::new(HttpFacilitatorConfig::new(format!("http://127.0.0.1:{port}"))).unwrap();
    let resource = X402ResourceServer::new(client).register("eip155:196", ExactEvmScheme::new());
    let x402 = X402HttpServer::new(resource)
        .route("GET /x", RouteConfig::new(PaymentOption::exact("$0.001", PAY_TO)))
        .unwrap();
    let route = x402.route_for("GET", "/x").unwrap();
    for _ in 0..2 {
        let resp = x402.process(&ctx("/x", &[]), &route).await.unwrap_err();
        assert_eq!(resp.status, 502, "start-up sync failure is a 502, and the next request retries");
    }
    assert!(!x402.resource_server().is_initialized());
}
