//! x402 `upto` when the buyer disconnects while the handler runs (SECURITY.md invariants 5 and 17:
//! every reservation ends in exactly one commit or release, and the settled amount never exceeds
//! what was reported / authorized).
//!
//! The client closes its TCP connection (RST) after the handler reported its usage and while it
//! still runs. Under the default `CancelPolicy::Complete` pay402 settles exactly what was
//! reported — once, never the maximum; under `CancelPolicy::Release` nothing moves and the
//! authorization can be used again.

mod support;

use pay402::chain::X_LAYER_USDT0;
use pay402::completion::CancelPolicy;
use pay402::evm::{PrivateKeySigner, U256};
use pay402::x402::{
    AnyPaymentPayload, EmbeddedFacilitator, PaymentOption, RouteConfig, UptoCharge, UptoEvmClientScheme, UptoEvmScheme,
    X402Client, X402HttpServer, X402ResourceServer, decode_payment_required_header, encode_payment_signature_header,
};
use std::sync::Arc;
use std::time::Duration;

const PAY_TO: &str = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C";
/// The buyer's starting balance (the embedded facilitator's faucet; it also approves Permit2).
const FUNDS: u64 = 1_000_000;
/// What the handler reports before the buyer disconnects: 0.0347 of the 0.10 maximum.
const USED: u64 = 34_700;

struct Shop {
    running: support::Running,
    embedded: EmbeddedFacilitator,
    reported: Arc<tokio::sync::Notify>,
}

/// `/work` reports [`USED`], signals it, then never answers (the buyer hangs up).
async fn shop(policy: CancelPolicy) -> Shop {
    let embedded = EmbeddedFacilitator::new().with_faucet(U256::from(FUNDS));
    let server = X402ResourceServer::new(embedded.clone()).register("eip155:196", UptoEvmScheme::new());
    let x402 = X402HttpServer::new(server)
        .cancel_policy(policy)
        .route("GET /work", RouteConfig::new(PaymentOption::upto("$0.10", PAY_TO)))
        .expect("route");
    x402.initialize().await.expect("initialize");
    let reported = Arc::new(tokio::sync::Notify::new());
    let signal = Arc::clone(&reported);
    let handler = move |charge: UptoCharge| {
        let signal = Arc::clone(&signal);
        async move {
            charge.set_atomic(U256::from(USED)).expect("within the maximum");
            signal.notify_one();
            std::future::pending::<()>().await;
            "never sent"
        }
    };
    let app = axum::Router::new().route("/work", axum::routing::get(handler)).layer(pay402::axum::X402Layer::new(x402));
    Shop { running: support::serve_axum(app).await, embedded, reported }
}

async fn payment(shop: &Shop, buyer: &PrivateKeySigner) -> String {
    let resp = reqwest::get(format!("{}/work", shop.running.base)).await.expect("GET");
    assert_eq!(resp.status(), 402);
    let required =
        decode_payment_required_header(resp.headers()["payment-required"].to_str().expect("ascii")).expect("402");
    let client = X402Client::new().register("eip155:196", UptoEvmClientScheme::new(buyer.clone()));
    let AnyPaymentPayload::V2(p) = client.create_payment_payload(&required).await.expect("signs") else { panic!("v2") };
    encode_payment_signature_header(&p).expect("encodes")
}

/// Sends the paid request and hangs up once the handler reported its usage.
async fn pay_and_hang_up(shop: &Shop, payment: &str) {
    let reported = shop.reported.notified();
    let conn = support::send_raw(&shop.running.base, "/work", &[("PAYMENT-SIGNATURE", payment)]).await;
    tokio::time::timeout(Duration::from_secs(15), reported).await.expect("the handler reported");
    support::disconnect(conn);
}

async fn eventually(what: &str, check: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disconnect_settles_what_was_reported_once_never_the_maximum() {
    let shop = shop(CancelPolicy::Complete).await;
    let buyer = PrivateKeySigner::random();
    let me = buyer.address().to_string();
    let payment = payment(&shop, &buyer).await;
    pay_and_hang_up(&shop, &payment).await;
    eventually("the cancelled request's payment is settled", || shop.embedded.settlement_count() == 1).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(shop.embedded.settlement_count(), 1, "settled once");
    assert_eq!(shop.embedded.settlements()[0].amount.as_deref(), Some("34700"), "what was reported");
    assert_eq!(shop.embedded.balance(X_LAYER_USDT0, &me), U256::from(FUNDS - USED), "never the maximum");
    assert_eq!(shop.embedded.balance(X_LAYER_USDT0, PAY_TO), U256::from(FUNDS + USED));
    // The settled authorization is spent: resending it is refused and moves nothing.
    let again = reqwest::Client::new()
        .get(format!("{}/work", shop.running.base))
        .header("PAYMENT-SIGNATURE", &payment)
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .expect("resend");
    assert_eq!(again.status(), 402);
    assert_eq!(shop.embedded.balance(X_LAYER_USDT0, &me), U256::from(FUNDS - USED));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disconnect_under_the_release_policy_moves_nothing() {
    let shop = shop(CancelPolicy::Release).await;
    let buyer = PrivateKeySigner::random();
    let payment = payment(&shop, &buyer).await;
    pay_and_hang_up(&shop, &payment).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(shop.embedded.settlement_count(), 0, "nothing settled");
    // Released: the same authorization is admitted again (the handler runs and reports again;
    // a kept reservation would answer 402 and the handler would never report).
    pay_and_hang_up(&shop, &payment).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(shop.embedded.settlement_count(), 0, "still nothing: the policy releases every cancelled request");
}
