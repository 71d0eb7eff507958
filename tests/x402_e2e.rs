//! x402 end to end on axum and actix-web: real servers on 127.0.0.1, real HTTP, real EIP-3009
//! signatures from pay402's client, the embedded facilitator's ledger.

mod support;

use pay402::chain::X_LAYER_USDT0;
use pay402::evm::{PrivateKeySigner, U256};
use pay402::x402::EmbeddedFacilitator;
use pay402::x402::X402Client;
use pay402::x402::X402ResourceServer;
use pay402::x402::{
    AnyPaymentPayload, AnyPaymentRequired, ExactEvmClientScheme, ExactEvmScheme, PaymentPayload, PaymentPayloadV1,
    PaymentRequired, Price, SettleResponse, decode_payment_required_header, decode_payment_response_header,
    decode_payment_signature_header, encode_payment_signature_header, encode_x_payment_header,
};
use pay402::x402::{PaymentOption, REPLAYED_PAYMENT_REASON, RouteConfig, X402HttpServer};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use support::{FRAMEWORKS, FlakyFacilitator, Framework, Running, SettleMode};

const PAY_TO: &str = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C";
const MERCHANT_B: &str = "0x3333333333333333333333333333333333333333";
const BUYER_KEY: &str = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d";

/// One server with the test routes, its facilitator and a handler-call counter.
struct Fixture {
    running: Running,
    facilitator: FlakyFacilitator,
    calls: Arc<AtomicUsize>,
    buyer: PrivateKeySigner,
    http: reqwest::Client,
}

fn x402_server(facilitator: &FlakyFacilitator) -> X402HttpServer {
    let server = X402ResourceServer::new(facilitator.clone())
        .register("eip155:196", ExactEvmScheme::new())
        .settlement_poll(Duration::from_millis(10), Duration::from_millis(60));
    let dynamic = PaymentOption::exact("$0.001", PAY_TO)
        .dynamic_price(|ctx| {
            let gold = ctx.query("tier").as_deref() == Some("gold");
            async move { Ok(Price::from(if gold { "$0.01" } else { "$0.001" })) }
        })
        .dynamic_pay_to(|ctx| {
            let merchant = ctx.header("x-merchant").unwrap_or(PAY_TO).to_owned();
            async move { Ok(merchant) }
        });
    let route = |price: &str| RouteConfig::new(PaymentOption::exact(price, PAY_TO)).description("Premium data");
    X402HttpServer::new(server)
        .route("GET /paid", route("$0.001").mime_type("application/json"))
        .and_then(|s| s.route("GET /dynamic", RouteConfig::new(dynamic)))
        .and_then(|s| s.route("GET /fails", route("$0.001")))
        .and_then(|s| s.route("GET /missing", route("$0.001")))
        .expect("routes")
}

async fn start(fw: Framework) -> Fixture {
    let embedded = EmbeddedFacilitator::new();
    let buyer: PrivateKeySigner = BUYER_KEY.parse().expect("key");
    embedded.fund(X_LAYER_USDT0, &buyer.address().to_string(), U256::from(1_000_000u64)).expect("fund");
    let facilitator = FlakyFacilitator::new(embedded);
    let x402 = x402_server(&facilitator);
    let calls = Arc::new(AtomicUsize::new(0));
    let running = match fw {
        Framework::Axum => {
            use axum::http::StatusCode;
            use axum::routing::get;
            let c = Arc::clone(&calls);
            let ok = move || {
                c.fetch_add(1, Ordering::SeqCst);
                async { axum::Json(serde_json::json!({ "data": "secret" })) }
            };
            let c2 = Arc::clone(&calls);
            let fails = move || {
                c2.fetch_add(1, Ordering::SeqCst);
                async { (StatusCode::INTERNAL_SERVER_ERROR, "handler failed") }
            };
            let app = axum::Router::new()
                .route("/paid", get(ok.clone()))
                .route("/dynamic", get(ok))
                .route("/fails", get(fails))
                .route("/free", get(|| async { "free" }))
                .layer(pay402::axum::X402Layer::new(x402));
            support::serve_axum(app).await
        }
        Framework::Actix => {
            use actix_web::{HttpResponse, web};
            let c = Arc::clone(&calls);
            support::serve_actix(move || {
                let (c1, c2) = (Arc::clone(&c), Arc::clone(&c));
                actix_web::App::new()
                    .wrap(pay402::actix::X402Middleware::new(x402.clone()))
                    .route(
                        "/paid",
                        web::get().to(move || {
                            c1.fetch_add(1, Ordering::SeqCst);
                            async { HttpResponse::Ok().json(serde_json::json!({ "data": "secret" })) }
                        }),
                    )
                    .route(
                        "/dynamic",
                        web::get().to({
                            let c = Arc::clone(&c);
                            move || {
                                c.fetch_add(1, Ordering::SeqCst);
                                async { HttpResponse::Ok().json(serde_json::json!({ "data": "secret" })) }
                            }
                        }),
                    )
                    .route(
                        "/fails",
                        web::get().to(move || {
                            c2.fetch_add(1, Ordering::SeqCst);
                            async { HttpResponse::InternalServerError().body("handler failed") }
                        }),
                    )
                    .route("/free", web::get().to(|| async { "free" }))
                    .default_service(web::to(HttpResponse::NotFound))
            })
        }
    };
    Fixture { running, facilitator, calls, buyer, http: reqwest::Client::new() }
}

impl Fixture {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.running.base)
    }

    fn client(&self) -> X402Client {
        X402Client::new().register("eip155:196", ExactEvmClientScheme::new(self.buyer.clone()))
    }

    fn balance(&self, who: &str) -> U256 {
        self.facilitator.inner.balance(X_LAYER_USDT0, who)
    }

    fn buyer_balance(&self) -> U256 {
        self.balance(&self.buyer.address().to_string())
    }

    async fn get(&self, path: &str, headers: &[(&str, &str)]) -> reqwest::Response {
        let mut req = self.http.get(self.url(path));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.send().await.expect("request")
    }

    /// GET → 402 → the decoded challenge.
    async fn challenge(&self, path: &str, headers: &[(&str, &str)]) -> PaymentRequired {
        let resp = self.get(path, headers).await;
        assert_eq!(resp.status(), 402, "{path}");
        required_of(&resp)
    }

    /// A valid PAYMENT-SIGNATURE for `path`.
    async fn payment(&self, path: &str, headers: &[(&str, &str)]) -> PaymentPayload {
        let required = self.challenge(path, headers).await;
        let payload = self.client().create_payment_payload(&AnyPaymentRequired::V2(required)).await.expect("pays");
        let AnyPaymentPayload::V2(p) = payload else { panic!("v2") };
        p
    }
}

fn required_of(resp: &reqwest::Response) -> PaymentRequired {
    let header = resp.headers().get("payment-required").expect("PAYMENT-REQUIRED").to_str().expect("ascii");
    match decode_payment_required_header(header).expect("decodes") {
        AnyPaymentRequired::V2(r) => r,
        AnyPaymentRequired::V1(_) => panic!("v2 expected"),
    }
}

fn settle_of(resp: &reqwest::Response, name: &str) -> SettleResponse {
    decode_payment_response_header(resp.headers().get(name).expect(name).to_str().expect("ascii")).expect("decodes")
}

fn header(p: &PaymentPayload) -> String {
    encode_payment_signature_header(p).expect("encodes")
}

fn auth_mut(p: &mut PaymentPayload) -> &mut serde_json::Map<String, serde_json::Value> {
    p.payload.get_mut("authorization").and_then(|a| a.as_object_mut()).expect("authorization")
}

#[tokio::test]
async fn unpaid_gets_a_402_with_the_expected_requirements() {
    for fw in FRAMEWORKS {
        let f = start(fw).await;
        let resp = f.get("/paid", &[]).await;
        assert_eq!(resp.status(), 402, "{fw:?}");
        assert_eq!(resp.headers()["cache-control"], "no-store", "{fw:?}");
        assert!(resp.headers()["access-control-expose-headers"].to_str().unwrap().contains("PAYMENT-REQUIRED"));
        assert_eq!(resp.headers()["content-type"], "application/json");
        let required = required_of(&resp);
        assert_eq!(resp.text().await.unwrap(), "{}");
        assert_eq!(required.x402_version, 2);
        assert_eq!(required.error.as_deref(), Some("Payment required"));
        let resource = required.resource.expect("resource");
        assert_eq!(resource.url, f.url("/paid"));
        assert_eq!(resource.description.as_deref(), Some("Premium data"));
        assert_eq!(resource.mime_type.as_deref(), Some("application/json"));
        let a = &required.accepts[0];
        assert_eq!((a.scheme.as_str(), a.network.as_str(), a.amount.as_str()), ("exact", "eip155:196", "1000"));
        assert_eq!((a.asset.as_str(), a.pay_to.as_str(), a.max_timeout_seconds), (X_LAYER_USDT0, PAY_TO, 300));
        assert_eq!(serde_json::to_string(&a.extra).unwrap(), r#"{"name":"USD₮0","version":"1"}"#);
        // Unprotected routes are untouched.
        assert_eq!(f.get("/free", &[]).await.text().await.unwrap(), "free");
        assert_eq!(f.calls.load(Ordering::SeqCst), 0);
    }
}

#[tokio::test]
async fn paid_request_settles_and_moves_the_ledger() {
    for fw in FRAMEWORKS {
        let f = start(fw).await;
        let payment = f.payment("/paid", &[]).await;
        let before = (f.buyer_balance(), f.balance(PAY_TO));
        let resp = f.get("/paid", &[("PAYMENT-SIGNATURE", &header(&payment))]).await;
        assert_eq!(resp.status(), 200, "{fw:?}");
        let settled = settle_of(&resp, "payment-response");
        assert!(settled.success);
        assert_eq!(settled.payer.as_deref(), Some(f.buyer.address().to_string().as_str()));
        assert!(settled.transaction.starts_with("0x") && settled.transaction.len() == 66);
        let body: serde_json::Value = serde_json::from_str(&resp.text().await.unwrap()).unwrap();
        assert_eq!(body["data"], "secret");
        assert_eq!(f.buyer_balance(), before.0 - U256::from(1000u64), "{fw:?}");
        assert_eq!(f.balance(PAY_TO), before.1 + U256::from(1000u64));
        assert_eq!(f.calls.load(Ordering::SeqCst), 1);
    }
}

#[tokio::test]
async fn tampered_or_expired_payments_are_refused_with_the_reason() {
    for fw in FRAMEWORKS {
        let f = start(fw).await;
        let mut cases: Vec<(&str, PaymentPayload)> = Vec::new();
        let mut p = f.payment("/paid", &[]).await;
        auth_mut(&mut p).insert("value".into(), "999".into());
        cases.push(("invalid_exact_evm_payload_authorization_value_mismatch", p));
        let mut p = f.payment("/paid", &[]).await;
        auth_mut(&mut p).insert("to".into(), MERCHANT_B.into());
        cases.push(("invalid_exact_evm_payload_recipient_mismatch", p));
        let mut p = f.payment("/paid", &[]).await;
        let sig = p.payload["signature"].as_str().unwrap().to_owned();
        let flipped = format!("{}{}", &sig[..10], if &sig[10..11] == "a" { "b" } else { "a" }) + &sig[11..];
        p.payload.insert("signature".into(), flipped.into());
        cases.push(("invalid_exact_evm_payload_signature", p));
        // An authorization that expired long ago (signed with a clock in the past).
        let required = f.challenge("/paid", &[]).await;
        let past = ExactEvmClientScheme::new(f.buyer.clone()).with_clock(|| 1_000_000);
        let AnyPaymentPayload::V2(p) = X402Client::new()
            .register("eip155:196", past)
            .create_payment_payload(&AnyPaymentRequired::V2(required))
            .await
            .unwrap()
        else {
            panic!("v2")
        };
        cases.push(("invalid_exact_evm_payload_authorization_valid_before", p));
        // A buyer who claims a cheaper price than the route's.
        let mut p = f.payment("/paid", &[]).await;
        p.accepted.amount = "1".into();
        auth_mut(&mut p).insert("value".into(), "1".into());
        cases.push(("No matching payment requirements", p));

        let before = f.buyer_balance();
        for (reason, payload) in cases {
            let resp = f.get("/paid", &[("PAYMENT-SIGNATURE", &header(&payload))]).await;
            assert_eq!(resp.status(), 402, "{fw:?} {reason}");
            assert_eq!(required_of(&resp).error.as_deref(), Some(reason), "{fw:?}");
            assert!(resp.headers().get("payment-response").is_none());
        }
        assert_eq!(f.calls.load(Ordering::SeqCst), 0, "{fw:?}: the handler never ran");
        assert_eq!(f.buyer_balance(), before);
        // Garbage is treated as no payment.
        let resp = f.get("/paid", &[("PAYMENT-SIGNATURE", "not base64 at all!")]).await;
        assert_eq!(required_of(&resp).error.as_deref(), Some("Payment required"));
    }
}

#[tokio::test]
async fn a_replayed_payment_is_refused_before_the_handler() {
    for fw in FRAMEWORKS {
        let f = start(fw).await;
        let h = header(&f.payment("/paid", &[]).await);
        assert_eq!(f.get("/paid", &[("PAYMENT-SIGNATURE", &h)]).await.status(), 200);
        let again = f.get("/paid", &[("PAYMENT-SIGNATURE", &h)]).await;
        assert_eq!(again.status(), 402, "{fw:?}");
        assert_eq!(required_of(&again).error.as_deref(), Some(REPLAYED_PAYMENT_REASON));
        assert_eq!(f.calls.load(Ordering::SeqCst), 1, "{fw:?}: handler ran once");
        assert_eq!(f.facilitator.inner.settlement_count(), 1);
    }
}

#[tokio::test]
async fn failing_handlers_are_not_charged() {
    for fw in FRAMEWORKS {
        let f = start(fw).await;
        let before = f.buyer_balance();
        let resp = f.get("/fails", &[("PAYMENT-SIGNATURE", &header(&f.payment("/fails", &[]).await))]).await;
        assert_eq!(resp.status(), 500, "{fw:?}");
        assert!(resp.headers().get("payment-response").is_none());
        // A protected path with no handler: 404 passes through, nothing settles.
        let resp = f.get("/missing", &[("PAYMENT-SIGNATURE", &header(&f.payment("/missing", &[]).await))]).await;
        assert_eq!(resp.status(), 404, "{fw:?}");
        assert_eq!(f.buyer_balance(), before, "{fw:?}");
        assert_eq!(f.facilitator.inner.settlement_count(), 0);
    }
}

#[tokio::test]
async fn settlement_failure_timeout_or_unknown_outcome_hides_the_handler_body() {
    for fw in FRAMEWORKS {
        // A definite failure: a fresh 402 with the failure in PAYMENT-RESPONSE.
        let f = start(fw).await;
        f.facilitator.set(SettleMode::Fail);
        let resp = f.get("/paid", &[("PAYMENT-SIGNATURE", &header(&f.payment("/paid", &[]).await))]).await;
        assert_eq!(resp.status(), 402, "{fw:?}");
        let settled = settle_of(&resp, "payment-response");
        assert!(!settled.success);
        assert_eq!(settled.error_reason.as_deref(), Some("insufficient_funds"), "{fw:?}");
        assert_eq!(resp.text().await.unwrap(), "{}", "{fw:?}: no handler body");
        // An unknown outcome (timeout, transport error): never a new challenge (it would invite a
        // second payment) — 503 with Retry-After, the handler's body withheld.
        for mode in [SettleMode::Timeout, SettleMode::Error] {
            let f = start(fw).await;
            f.facilitator.set(mode);
            let resp = f.get("/paid", &[("PAYMENT-SIGNATURE", &header(&f.payment("/paid", &[]).await))]).await;
            assert_eq!(resp.status(), 503, "{fw:?} {mode:?}");
            assert!(resp.headers().get("payment-required").is_none(), "{fw:?} {mode:?}: no new challenge");
            assert!(resp.headers().get("retry-after").is_some(), "{fw:?} {mode:?}");
            let body: serde_json::Value = resp.json().await.unwrap();
            assert_eq!(body["status"], "pending", "{fw:?} {mode:?}: {body}");
            assert_eq!(body["error"], pay402::x402::SETTLEMENT_PENDING_ERROR, "{fw:?} {mode:?}");
        }
    }
}

#[tokio::test]
async fn browsers_get_the_paywall() {
    for fw in FRAMEWORKS {
        let f = start(fw).await;
        let resp =
            f.get("/paid", &[("accept", "text/html,application/xhtml+xml"), ("user-agent", "Mozilla/5.0")]).await;
        assert_eq!(resp.status(), 402);
        assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
        // The page is the body of the same 402: the challenge header stays for clients.
        assert!(resp.headers().get("payment-required").is_some(), "{fw:?}");
        assert!(resp.headers()["content-security-policy"].to_str().unwrap().starts_with("default-src 'none'"));
        let html = resp.text().await.unwrap();
        assert!(html.contains("Payment Required") && html.contains("0.001") && html.contains("USD₮0"), "{fw:?}");
        assert!(html.contains(PAY_TO) && html.contains("data-requirements"));
        // Whatever the User-Agent: a request preferring HTML gets the page, an API client JSON.
        let curl = f.get("/paid", &[("accept", "text/html"), ("user-agent", "curl/8.5.0")]).await;
        assert!(curl.headers()["content-type"].to_str().unwrap().starts_with("text/html"), "{fw:?}");
        let api = f.get("/paid", &[("accept", "application/json"), ("user-agent", "Mozilla/5.0")]).await;
        assert_eq!(api.headers()["content-type"], "application/json", "{fw:?}");
    }
}

#[tokio::test]
async fn dynamic_price_and_pay_to() {
    for fw in FRAMEWORKS {
        let f = start(fw).await;
        let h = [("x-merchant", MERCHANT_B)];
        let required = f.challenge("/dynamic?tier=gold", &h).await;
        assert_eq!(required.accepts[0].amount, "10000");
        assert_eq!(required.accepts[0].pay_to, MERCHANT_B);
        assert_eq!(f.challenge("/dynamic", &[]).await.accepts[0].amount, "1000");
        let payment = header(&f.payment("/dynamic?tier=gold", &h).await);
        let resp = f.get("/dynamic?tier=gold", &[h[0], ("PAYMENT-SIGNATURE", &payment)]).await;
        assert_eq!(resp.status(), 200, "{fw:?}");
        assert_eq!(f.balance(MERCHANT_B), U256::from(10_000u64));
    }
}

#[tokio::test]
async fn v1_x_payment_is_accepted() {
    for fw in FRAMEWORKS {
        let f = start(fw).await;
        let v2 = f.payment("/paid", &[]).await;
        let v1 = PaymentPayloadV1 {
            x402_version: 1,
            scheme: v2.accepted.scheme.clone(),
            network: v2.accepted.network.clone(),
            payload: v2.payload.clone(),
        };
        let resp = f.get("/paid", &[("X-PAYMENT", &encode_x_payment_header(&v1).unwrap())]).await;
        assert_eq!(resp.status(), 200, "{fw:?}");
        assert!(settle_of(&resp, "x-payment-response").success);
        // The v1 header decodes as v1.
        assert!(matches!(
            decode_payment_signature_header(&encode_x_payment_header(&v1).unwrap()).unwrap(),
            AnyPaymentPayload::V1(_)
        ));
    }
}
