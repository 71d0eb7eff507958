//! The auto-paying client ([`pay402::autopay`]) paying x402 `upto` offers, against a small axum
//! seller stand-in on 127.0.0.1 that answers crafted 402s (an `upto` maximum) and, to the paid
//! retry, a crafted `PAYMENT-RESPONSE` whose settled `amount` the test chooses — honest, zero,
//! above the maximum (a lying seller), missing or unreadable. The stand-in checks each payment's
//! Permit2 signature and that it authorises exactly the maximum, and counts what it saw. Two
//! tests hand the payment to the development set-up's embedded facilitator instead, which
//! verifies and settles it (`upto` for the reported amount, Permit2 `exact` at its price).

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use pay402::autopay::{Amount, AssetId, AutoPay, AutoPayError, AutoPayOutcome};
use pay402::chain::X_LAYER_USDT0;
use pay402::evm::permit2::{Permit2Authorization, UPTO_PERMIT2_PROXY};
use pay402::evm::{PrivateKeySigner, U256};
use pay402::x402::{
    AnyPaymentPayload, EMBEDDED_FACILITATOR_ADDRESS, EmbeddedFacilitator, FacilitatorClient, PaymentRequirements,
    decode_payment_signature_header, encode_payment_required_header, encode_payment_response_header,
};
use serde_json::json;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const PAY_TO: &str = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8";
/// The maximum every route asks: 0.10 USD₮0.
const MAX: u64 = 100_000;

/// What the stand-in saw: paid requests (valid Permit2 `upto` authorisations of `MAX`).
#[derive(Clone, Default)]
struct Seen {
    paid: Arc<AtomicUsize>,
    payers: Arc<Mutex<Vec<String>>>,
    /// Delay before answering a paid request (concurrency test).
    delay: Duration,
    /// When set, payments are verified and settled (for the reported amount) by this embedded
    /// facilitator, whose `/supported` names the `facilitatorAddress`, and its settle answer is
    /// the `PAYMENT-RESPONSE`.
    facilitator: Option<EmbeddedFacilitator>,
}

fn requirements(max: u64) -> serde_json::Value {
    json!({
        "scheme": "upto",
        "network": "eip155:196",
        "asset": X_LAYER_USDT0,
        "amount": max.to_string(),
        "payTo": PAY_TO,
        "maxTimeoutSeconds": 300,
        "extra": {
            "name": "USD\u{20ae}0",
            "version": "1",
            "assetTransferMethod": "permit2",
            "facilitatorAddress": pay402::evm::checksum(&EMBEDDED_FACILITATOR_ADDRESS),
        },
    })
}

/// `/settle/{amount}` (the settled amount as sent, `-` for none) and `/max/{max}/settle/{amount}`.
async fn route(State(seen): State<Seen>, Path(amount): Path<String>, headers: HeaderMap) -> Response {
    answer(seen, MAX, amount, headers).await
}

async fn route_max(State(seen): State<Seen>, Path((max, amount)): Path<(u64, String)>, headers: HeaderMap) -> Response {
    answer(seen, max, amount, headers).await
}

async fn answer(seen: Seen, max: u64, amount: String, headers: HeaderMap) -> Response {
    let mut offer = requirements(max);
    if let Some(f) = &seen.facilitator {
        let supported = f.supported().await.expect("supported");
        let kind = supported.kinds.iter().find(|k| k.scheme == "upto").expect("the facilitator serves upto");
        offer["extra"]["facilitatorAddress"] = kind.extra.as_ref().expect("extra")["facilitatorAddress"].clone();
    }
    let Some(payment) = headers.get("payment-signature").and_then(|v| v.to_str().ok()) else {
        let required = serde_json::from_value(json!({
            "x402Version": 2,
            "error": "Payment required",
            "resource": {"url": "http://seller.test/", "description": "", "mimeType": ""},
            "accepts": [offer],
        }))
        .expect("a payment-required");
        let header = encode_payment_required_header(&required).expect("header");
        return (StatusCode::PAYMENT_REQUIRED, [("payment-required", header)], "{}").into_response();
    };
    let AnyPaymentPayload::V2(payload) = decode_payment_signature_header(payment).expect("a v2 payment") else {
        panic!("not a v2 payment")
    };
    let (auth, signature) = Permit2Authorization::from_payload(&payload.payload).expect("a Permit2 payload");
    assert!(auth.verify_signature(&signature, 196), "the buyer's Permit2 signature verifies");
    assert_eq!((auth.amount, auth.spender), (U256::from(max), UPTO_PERMIT2_PROXY), "the maximum, to the upto proxy");
    assert_eq!(auth.facilitator, Some(EMBEDDED_FACILITATOR_ADDRESS));
    seen.paid.fetch_add(1, Ordering::SeqCst);
    if let Some(f) = &seen.facilitator {
        let offered: PaymentRequirements = serde_json::from_value(offer).expect("requirements");
        let verified = f.verify(&payload, &offered).await.expect("verify");
        assert!(verified.is_valid, "{verified:?}");
        let used = PaymentRequirements { amount, ..offered };
        let settled = f.settle(&payload, &used).await.expect("settle");
        let header = encode_payment_response_header(&settled).expect("header");
        return (StatusCode::OK, [("payment-response", header)], "the resource").into_response();
    }
    seen.payers.lock().expect("payers").push(pay402::evm::checksum(&auth.from));
    tokio::time::sleep(seen.delay).await;
    let mut settled = json!({
        "success": true,
        "status": "success",
        "transaction": format!("0x{}", "ab".repeat(32)),
        "network": "eip155:196",
        "payer": pay402::evm::checksum(&auth.from),
    });
    if amount != "-" {
        settled["amount"] = json!(amount);
    }
    let header =
        encode_payment_response_header(&serde_json::from_value(settled).expect("a settle response")).expect("header");
    (StatusCode::OK, [("payment-response", header)], "the resource").into_response()
}

/// `/exact/{price}`: an `exact` offer over Permit2, verified and settled by the facilitator.
async fn exact_route(State(seen): State<Seen>, Path(price): Path<u64>, headers: HeaderMap) -> Response {
    let mut offer = requirements(price);
    offer["scheme"] = json!("exact");
    offer["extra"].as_object_mut().expect("extra").remove("facilitatorAddress");
    let offered: PaymentRequirements = serde_json::from_value(offer.clone()).expect("requirements");
    let Some(payment) = headers.get("payment-signature").and_then(|v| v.to_str().ok()) else {
        let required = serde_json::from_value(json!({"x402Version": 2, "accepts": [offer]})).expect("required");
        let header = encode_payment_required_header(&required).expect("header");
        return (StatusCode::PAYMENT_REQUIRED, [("payment-required", header)], "{}").into_response();
    };
    let AnyPaymentPayload::V2(payload) = decode_payment_signature_header(payment).expect("a v2 payment") else {
        panic!("not a v2 payment")
    };
    let f = seen.facilitator.as_ref().expect("a facilitator");
    let verified = f.verify(&payload, &offered).await.expect("verify");
    assert!(verified.is_valid, "{verified:?}");
    seen.paid.fetch_add(1, Ordering::SeqCst);
    let settled = f.settle(&payload, &offered).await.expect("settle");
    let header = encode_payment_response_header(&settled).expect("header");
    (StatusCode::OK, [("payment-response", header)], "the resource").into_response()
}

async fn seller(seen: Seen) -> String {
    let app = axum::Router::new()
        .route("/exact/{price}", axum::routing::get(exact_route))
        .route("/settle/{amount}", axum::routing::get(route))
        .route("/max/{max}/settle/{amount}", axum::routing::get(route_max))
        .with_state(seen);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
    format!("http://{addr}")
}

fn usdt0() -> AssetId {
    AssetId::x_layer_usdt0()
}

fn autopay(per_request: &str, total: &str) -> pay402::autopay::AutoPayMiddleware {
    AutoPay::new(PrivateKeySigner::random())
        .max_per_request(usdt0(), per_request.parse::<Amount>().expect("amount"))
        .max_total(usdt0(), total.parse::<Amount>().expect("amount"))
        .build()
        .expect("autopay")
}

fn refusal(err: reqwest_middleware::Error) -> AutoPayError {
    AutoPayError::from_middleware(&err).cloned().unwrap_or_else(|| panic!("not an autopay error: {err}"))
}

#[tokio::test]
async fn the_budget_keeps_what_settled_and_frees_the_rest_of_the_maximum() {
    let seen = Seen::default();
    let base = seller(seen.clone()).await;
    let pay = autopay("0.1", "1");
    let http = pay.client(reqwest::Client::builder()).expect("client");
    let resp = http.get(format!("{base}/settle/34700")).send().await.expect("paid");
    assert_eq!(resp.status(), 200);
    let outcome = resp.extensions().get::<AutoPayOutcome>().cloned().expect("an outcome");
    assert_eq!((outcome.amount, outcome.authorized), (U256::from(34_700u64), U256::from(MAX)));
    assert!(outcome.to_string().starts_with("0.0347 USD\u{20ae}0 (34700 atomic units)"), "{outcome}");
    // Total 1 USD₮0 − 0.0347 settled.
    assert_eq!(pay.spent(&usdt0()), U256::from(34_700u64));
    assert_eq!(pay.reserved(&usdt0()), U256::ZERO);
    assert_eq!(pay.remaining(&usdt0()), Some(U256::from(1_000_000u64 - 34_700)));
    // Zero settled: nothing counted.
    let resp = http.get(format!("{base}/settle/0")).send().await.expect("paid");
    assert_eq!(resp.extensions().get::<AutoPayOutcome>().map(|o| o.amount), Some(U256::ZERO));
    assert_eq!(pay.spent(&usdt0()), U256::from(34_700u64));
    assert_eq!(seen.paid.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_maximum_over_the_cap_is_refused_before_signing() {
    let seen = Seen::default();
    let base = seller(seen.clone()).await;
    // The seller would settle 0.001, but authorises up to 0.10: above the 0.05 cap.
    let pay = autopay("0.05", "1");
    let http = pay.client(reqwest::Client::builder()).expect("client");
    let err = http.get(format!("{base}/settle/1000")).send().await.expect_err("refused");
    match refusal(err) {
        AutoPayError::OverCap { requested, cap, .. } => {
            assert_eq!((requested, cap), (U256::from(MAX), U256::from(50_000u64)))
        }
        other => panic!("expected OverCap, got {other}"),
    }
    assert_eq!(seen.paid.load(Ordering::SeqCst), 0, "nothing signed, nothing sent");
    assert_eq!((pay.spent(&usdt0()), pay.reserved(&usdt0())), (U256::ZERO, U256::ZERO));
    // No per-request cap, but the total cannot hold the maximum: refused too.
    let pay = AutoPay::new(PrivateKeySigner::random())
        .max_total(usdt0(), "0.09".parse::<Amount>().expect("amount"))
        .build()
        .expect("autopay");
    let http = pay.client(reqwest::Client::builder()).expect("client");
    let err = http.get(format!("{base}/settle/1000")).send().await.expect_err("refused");
    assert!(matches!(refusal(err), AutoPayError::TotalCapExceeded { requested, .. } if requested == U256::from(MAX)));
    assert_eq!(seen.paid.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_lying_or_silent_seller_frees_nothing() {
    let seen = Seen::default();
    let base = seller(seen.clone()).await;
    let pay = autopay("0.1", "1");
    let http = pay.client(reqwest::Client::builder()).expect("client");
    let mut spent = 0u64;
    // Above the maximum, missing, unreadable, negative, fractional: the maximum stays counted.
    for amount in ["100001", "-", "lots", "-5", "34700.5", "0x10"] {
        let resp = http.get(format!("{base}/settle/{amount}")).send().await.expect("answered");
        assert_eq!(resp.status(), 200, "{amount}");
        let outcome = resp.extensions().get::<AutoPayOutcome>().cloned().expect("an outcome");
        assert_eq!(outcome.amount, U256::from(MAX), "{amount}");
        spent += MAX;
        assert_eq!(pay.spent(&usdt0()), U256::from(spent), "{amount}");
    }
    assert_eq!(pay.reserved(&usdt0()), U256::ZERO);
    // Exactly the maximum is honest.
    let resp = http.get(format!("{base}/settle/{MAX}")).send().await.expect("answered");
    assert_eq!(resp.extensions().get::<AutoPayOutcome>().map(|o| o.amount), Some(U256::from(MAX)));
}

#[tokio::test]
async fn concurrent_upto_requests_each_reserve_the_maximum() {
    let seen = Seen { delay: Duration::from_millis(800), ..Seen::default() };
    let base = seller(seen.clone()).await;
    // Room for one maximum (0.10) but not two, although each settles only 0.0347.
    let pay = autopay("0.1", "0.15");
    let http = pay.client(reqwest::Client::builder()).expect("client");
    let (a, b) =
        tokio::join!(http.get(format!("{base}/settle/34700")).send(), http.get(format!("{base}/settle/34700")).send());
    let (ok, err) = match (a, b) {
        (Ok(ok), Err(err)) | (Err(err), Ok(ok)) => (ok, err),
        (a, b) => panic!("expected one paid and one refused, got {:?} and {:?}", a.map(|r| r.status()), b.err()),
    };
    assert_eq!(ok.status(), 200);
    assert!(matches!(refusal(err), AutoPayError::TotalCapExceeded { requested, .. } if requested == U256::from(MAX)));
    assert_eq!(seen.paid.load(Ordering::SeqCst), 1);
    assert_eq!((pay.spent(&usdt0()), pay.reserved(&usdt0())), (U256::from(34_700u64), U256::ZERO));
    // Once settled, the difference is free again: the next request fits.
    let resp = http.get(format!("{base}/max/{MAX}/settle/100")).send().await.expect("paid");
    assert_eq!(resp.status(), 200);
    assert_eq!(pay.spent(&usdt0()), U256::from(34_800u64));
    assert_eq!(seen.payers.lock().expect("payers").len(), 2);
}

/// The development set-up's embedded facilitator serves `upto` (its `/supported` names its
/// `facilitatorAddress`; its faucet approves Permit2 for every account): the buyer's payment
/// verifies, settles for the reported 0.0347 of the 0.10 maximum, and exactly that moves.
#[tokio::test]
async fn the_development_facilitator_settles_what_was_used() {
    let setup = pay402::setup::Setup::development().expect("development set-up");
    let facilitator = setup.embedded_facilitator().expect("an embedded facilitator").clone();
    let seen = Seen { facilitator: Some(facilitator.clone()), ..Seen::default() };
    let base = seller(seen.clone()).await;
    let pay = autopay("0.1", "1");
    let http = pay.client(reqwest::Client::builder()).expect("client");
    let before = facilitator.balance(X_LAYER_USDT0, PAY_TO);
    let resp = http.get(format!("{base}/settle/34700")).send().await.expect("paid");
    assert_eq!(resp.status(), 200);
    let outcome = resp.extensions().get::<AutoPayOutcome>().cloned().expect("an outcome");
    assert_eq!((outcome.amount, outcome.authorized), (U256::from(34_700u64), U256::from(MAX)));
    assert_eq!(facilitator.balance(X_LAYER_USDT0, PAY_TO) - before, U256::from(34_700u64));
    assert_eq!(pay.spent(&usdt0()), U256::from(34_700u64));
    // Zero: success, no transaction, nothing moves, nothing counted.
    let resp = http.get(format!("{base}/settle/0")).send().await.expect("paid");
    let outcome = resp.extensions().get::<AutoPayOutcome>().cloned().expect("an outcome");
    assert_eq!(outcome.amount, U256::ZERO);
    assert_eq!(facilitator.balance(X_LAYER_USDT0, PAY_TO) - before, U256::from(34_700u64));
    assert_eq!(pay.spent(&usdt0()), U256::from(34_700u64));
}

/// An `exact` offer over Permit2 (`assetTransferMethod: "permit2"`) is paid with a Permit2
/// signature of the price, which the development facilitator verifies and settles.
#[tokio::test]
async fn permit2_exact_is_paid_at_its_price() {
    let setup = pay402::setup::Setup::development().expect("development set-up");
    let facilitator = setup.embedded_facilitator().expect("an embedded facilitator").clone();
    let seen = Seen { facilitator: Some(facilitator.clone()), ..Seen::default() };
    let base = seller(seen.clone()).await;
    let pay = autopay("0.1", "1");
    let http = pay.client(reqwest::Client::builder()).expect("client");
    let before = facilitator.balance(X_LAYER_USDT0, PAY_TO);
    let resp = http.get(format!("{base}/exact/2500")).send().await.expect("paid");
    assert_eq!(resp.status(), 200);
    let outcome = resp.extensions().get::<AutoPayOutcome>().cloned().expect("an outcome");
    assert_eq!((outcome.amount, outcome.authorized), (U256::from(2_500u64), U256::from(2_500u64)));
    assert_eq!(facilitator.balance(X_LAYER_USDT0, PAY_TO) - before, U256::from(2_500u64));
    assert_eq!((pay.spent(&usdt0()), seen.paid.load(Ordering::SeqCst)), (U256::from(2_500u64), 1));
}
