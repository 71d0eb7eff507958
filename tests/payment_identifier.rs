//! The x402 `payment-identifier` extension (issue 17; x402-foundation/x402
//! `specs/extensions/payment_identifier.md`) on axum and actix-web sellers, with an embedded
//! facilitator that records every verification and settlement:
//!
//! * the 402 advertises it (`info.required`), pay402's buyer echoes it with an id;
//! * a resend of a settled payment (same id, same payload) gets the response again with the
//!   recorded `PAYMENT-RESPONSE` — no second verification, no second settlement;
//! * the same id with another payload, or on another route, gets `409`;
//! * a required id missing, or a malformed one, gets `400`;
//! * interop: the official x402 Python SDK (PyPI `x402` 2.25, scripts/deps/42-x402-official.sh)
//!   sends the extension with its own helper and recovers a "lost" response by resending.
//!   Without that SDK the test fails; it never skips.

#[path = "interop/peers.rs"]
mod peers;
mod support;

use pay402::chain::X_LAYER_USDT0;
use pay402::evm::{PrivateKeySigner, U256};
use pay402::x402::payment_identifier::{PAYMENT_IDENTIFIER, generate_payment_id};
use pay402::x402::{
    AnyPaymentPayload, AnyPaymentRequired, EmbeddedFacilitator, ExactEvmClientScheme, ExactEvmScheme,
    PAYMENT_ID_CONFLICT_ERROR, PAYMENT_ID_INVALID_ERROR, PAYMENT_ID_REQUIRED_ERROR, PaymentOption, RouteConfig,
    X402Client, X402HttpServer, X402ResourceServer, decode_payment_required_header, decode_payment_response_header,
    encode_payment_signature_header,
};
use peers::Recording;
use serde_json::Value;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use support::{FRAMEWORKS, Framework, Running};

const PAY_TO: &str = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C";
const BUYER_KEY: &str = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";
const BODY: &str = "an order";

struct Shop {
    running: Running,
    facilitator: Recording,
    runs: Arc<AtomicUsize>,
}

impl Shop {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.running.base)
    }

    fn verifications(&self) -> usize {
        self.facilitator.verified().len()
    }

    fn settlements(&self) -> usize {
        self.facilitator.inner.settlement_count()
    }
}

/// `GET /order` and `GET /other` (optional id), `GET /strict` (required id), all $0.001.
async fn shop(fw: Framework) -> Shop {
    let embedded = EmbeddedFacilitator::new();
    let buyer: PrivateKeySigner = BUYER_KEY.parse().expect("key");
    embedded.fund(X_LAYER_USDT0, &buyer.address().to_string(), U256::from(1_000_000u64)).expect("fund");
    let facilitator = Recording::new(embedded);
    let server = X402ResourceServer::new(facilitator.clone()).register("eip155:196", ExactEvmScheme::new());
    let option = || PaymentOption::exact("$0.001", PAY_TO);
    let x402 = X402HttpServer::new(server)
        .route("GET /order", RouteConfig::new(option()).payment_identifier(false))
        .expect("route")
        .route("GET /other", RouteConfig::new(option()).payment_identifier(false))
        .expect("route")
        .route("GET /strict", RouteConfig::new(option()).payment_identifier(true))
        .expect("route");
    let runs = Arc::new(AtomicUsize::new(0));
    let r = Arc::clone(&runs);
    let running = match fw {
        Framework::Axum => {
            let handler = move || {
                r.fetch_add(1, Ordering::SeqCst);
                async { BODY }
            };
            let app = axum::Router::new()
                .route("/order", axum::routing::get(handler.clone()))
                .route("/other", axum::routing::get(handler.clone()))
                .route("/strict", axum::routing::get(handler))
                .layer(pay402::axum::X402Layer::new(x402));
            support::serve_axum(app).await
        }
        Framework::Actix => support::serve_actix(move || {
            let r = Arc::clone(&r);
            let handler = move || {
                r.fetch_add(1, Ordering::SeqCst);
                async { BODY }
            };
            actix_web::App::new()
                .wrap(pay402::actix::X402Middleware::new(x402.clone()))
                .route("/order", actix_web::web::get().to(handler.clone()))
                .route("/other", actix_web::web::get().to(handler.clone()))
                .route("/strict", actix_web::web::get().to(handler))
        }),
    };
    Shop { running, facilitator, runs }
}

async fn challenge(http: &reqwest::Client, url: &str) -> AnyPaymentRequired {
    let unpaid = http.get(url).send().await.expect("unpaid");
    assert_eq!(unpaid.status(), 402);
    decode_payment_required_header(unpaid.headers()["payment-required"].to_str().expect("ascii")).expect("402")
}

fn client() -> X402Client {
    X402Client::new().register("eip155:196", ExactEvmClientScheme::new(BUYER_KEY.parse().expect("key")))
}

fn header_of(payload: &AnyPaymentPayload) -> String {
    let AnyPaymentPayload::V2(p) = payload else { panic!("v2") };
    encode_payment_signature_header(p).expect("encode")
}

async fn error_of(resp: reqwest::Response) -> String {
    resp.json::<Value>().await.expect("json")["error"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn a_resend_of_a_settled_id_gets_the_recorded_settlement_without_paying_again() {
    for fw in FRAMEWORKS {
        let shop = shop(fw).await;
        let http = reqwest::Client::new();
        let required = challenge(&http, &shop.url("/order")).await;
        let AnyPaymentRequired::V2(v2) = &required else { panic!("v2") };
        let declared = &v2.extensions.as_ref().expect("extensions")[PAYMENT_IDENTIFIER];
        assert_eq!(declared["info"]["required"], false, "{fw:?}: {declared}");
        assert_eq!(declared["schema"]["properties"]["id"]["minLength"], 16);

        let payload = client().create_payment_payload(&required).await.expect("payload");
        let AnyPaymentPayload::V2(p) = &payload else { panic!("v2") };
        let id = p.extensions.as_ref().expect("echoed")[PAYMENT_IDENTIFIER]["info"]["id"].as_str().expect("id");
        assert!(id.starts_with("pay_"), "{fw:?}: pay402's buyer sends an id: {id}");
        let header = header_of(&payload);

        let first = http.get(shop.url("/order")).header("PAYMENT-SIGNATURE", &header).send().await.expect("paid");
        assert_eq!(first.status(), 200, "{fw:?}");
        let settled = first.headers()["payment-response"].to_str().expect("ascii").to_owned();
        assert_eq!(first.text().await.expect("body"), BODY);
        assert_eq!((shop.verifications(), shop.settlements()), (1, 1), "{fw:?}");

        for _ in 0..2 {
            let again = http.get(shop.url("/order")).header("PAYMENT-SIGNATURE", &header).send().await.expect("again");
            assert_eq!(again.status(), 200, "{fw:?}: the lost response is recovered");
            assert_eq!(again.headers()["payment-response"].to_str().expect("ascii"), settled, "{fw:?}");
            assert_eq!(again.text().await.expect("body"), BODY);
        }
        assert_eq!((shop.verifications(), shop.settlements()), (1, 1), "{fw:?}: no second verify or settle");
        assert_eq!(shop.runs.load(Ordering::SeqCst), 1, "{fw:?}: the recorded response, not a second run");
        let decoded = decode_payment_response_header(&settled).expect("decodes");
        assert!(decoded.success);
    }
}

#[tokio::test]
async fn the_same_id_for_another_payment_or_route_is_a_conflict() {
    for fw in FRAMEWORKS {
        let shop = shop(fw).await;
        let http = reqwest::Client::new();
        let required = challenge(&http, &shop.url("/order")).await;
        let id = generate_payment_id();
        let first = header_of(&client().create_payment_payload_with_id(&required, &id).await.expect("payload"));
        let paid = http.get(shop.url("/order")).header("PAYMENT-SIGNATURE", &first).send().await.expect("paid");
        assert_eq!(paid.status(), 200, "{fw:?}");

        // Another authorization under the same id.
        let second = header_of(&client().create_payment_payload_with_id(&required, &id).await.expect("payload"));
        assert_ne!(first, second);
        let conflict = http.get(shop.url("/order")).header("PAYMENT-SIGNATURE", &second).send().await.expect("409");
        assert_eq!(conflict.status(), 409, "{fw:?}");
        assert_eq!(error_of(conflict).await, PAYMENT_ID_CONFLICT_ERROR);
        // The same payment on another route (same price and payee, so it matches there).
        let elsewhere = http.get(shop.url("/other")).header("PAYMENT-SIGNATURE", &first).send().await.expect("409");
        assert_eq!(elsewhere.status(), 409, "{fw:?}");
        assert_eq!((shop.verifications(), shop.settlements()), (1, 1), "{fw:?}: nothing verified for a conflict");

        // A fresh id pays normally.
        let fresh = header_of(&client().create_payment_payload(&required).await.expect("payload"));
        let ok = http.get(shop.url("/order")).header("PAYMENT-SIGNATURE", &fresh).send().await.expect("paid");
        assert_eq!(ok.status(), 200, "{fw:?}");
        assert_eq!(shop.settlements(), 2, "{fw:?}");
    }
}

#[tokio::test]
async fn a_required_id_must_be_present_and_well_formed() {
    for fw in FRAMEWORKS {
        let shop = shop(fw).await;
        let http = reqwest::Client::new();
        let required = challenge(&http, &shop.url("/strict")).await;
        let AnyPaymentRequired::V2(v2) = &required else { panic!("v2") };
        assert_eq!(v2.extensions.as_ref().expect("extensions")[PAYMENT_IDENTIFIER]["info"]["required"], true);

        // The buyer strips the extension: no id.
        let AnyPaymentPayload::V2(mut payload) = client().create_payment_payload(&required).await.expect("payload")
        else {
            panic!("v2")
        };
        payload.extensions = None;
        let missing = encode_payment_signature_header(&payload).expect("encode");
        let resp = http.get(shop.url("/strict")).header("PAYMENT-SIGNATURE", missing).send().await.expect("400");
        assert_eq!(resp.status(), 400, "{fw:?}");
        assert_eq!(error_of(resp).await, PAYMENT_ID_REQUIRED_ERROR);

        // A malformed id (too short, a space).
        for bad in ["short_id", "pay_with a space in it"] {
            let AnyPaymentPayload::V2(mut payload) = client().create_payment_payload(&required).await.expect("payload")
            else {
                panic!("v2")
            };
            payload.extensions.as_mut().expect("extensions")[PAYMENT_IDENTIFIER]["info"]["id"] =
                Value::String(bad.into());
            let header = encode_payment_signature_header(&payload).expect("encode");
            let resp = http.get(shop.url("/strict")).header("PAYMENT-SIGNATURE", header).send().await.expect("400");
            assert_eq!(resp.status(), 400, "{fw:?} {bad}");
            assert_eq!(error_of(resp).await, PAYMENT_ID_INVALID_ERROR);
        }
        assert_eq!((shop.verifications(), shop.settlements()), (0, 0), "{fw:?}");
        assert_eq!(shop.runs.load(Ordering::SeqCst), 0, "{fw:?}");
        // pay402's own buyer sends an id: paid.
        let ok = header_of(&client().create_payment_payload(&required).await.expect("payload"));
        let resp = http.get(shop.url("/strict")).header("PAYMENT-SIGNATURE", ok).send().await.expect("paid");
        assert_eq!(resp.status(), 200, "{fw:?}");
    }
}

/// The official x402 Python SDK adds the id with its own helper; pay402 accepts it, settles once,
/// and answers the SDK's identical resend with the recorded settlement.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_python_sdk_sends_the_extension_and_recovers_a_lost_response() {
    for fw in FRAMEWORKS {
        let shop = shop(fw).await;
        let id = "order_2026_12_07_0001";
        let out = peers::official_python("pay_with_id.py", &[&shop.url("/order"), BUYER_KEY, id, X_LAYER_USDT0]).await;
        let json = out.json();
        assert_eq!(json["status"], 200, "{fw:?}: {json}\n{}", out.stderr);
        assert_eq!(json["body"], BODY, "{fw:?}");
        let sent = &json["paymentPayload"]["extensions"][PAYMENT_IDENTIFIER]["info"];
        assert_eq!(sent["id"], id, "{fw:?}: the SDK sent the extension: {json}");
        assert_eq!(json["paymentResponse"]["success"], true, "{fw:?}");
        assert_eq!(json["resendStatus"], 200, "{fw:?}: {json}");
        assert_eq!(json["resendPaymentResponse"], json["paymentResponse"], "{fw:?}");
        assert_eq!((shop.verifications(), shop.settlements()), (1, 1), "{fw:?}: paid once");
    }
}
