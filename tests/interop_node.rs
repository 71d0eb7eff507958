//! Interop with the official Node x402 client (`@x402/fetch` + `@x402/evm` 2.27.0 with viem,
//! installed from npm by scripts/deps/41-node-peers.sh) run as a real `node` process
//! (tests/interop/node/x402_fetch_pay.cjs) against pay402 actix-web servers: an in-test one
//! whose embedded facilitator is inspected, the `actix_x402` example binary, and one settling on
//! anvil through pay402's HTTP facilitator example; it also decodes pay402's
//! settlement-failure answer.
//!
//! The Node client's spend controls only accept its built-in default assets, and X Layer's USD₮0
//! is not among them: the buyer must allow it explicitly (`allowedAssets`, capped per payment),
//! which these tests do — and they check that without it nothing is signed or paid.
//!
//! Missing Node peers fail these tests with the install command; they are never skipped.

#[path = "interop/peers.rs"]
mod peers;
mod support;

use pay402::chain::X_LAYER_USDT0;
use pay402::evm::U256;
use pay402::x402::EmbeddedFacilitator;
use pay402::x402::ExactEvmScheme;
use pay402::x402::X402ResourceServer;
use pay402::x402::{PaymentOption, RouteConfig, X402HttpServer, X402Payment};
use peers::{OnChain, Recording, eq_addr, start_example};
use serde_json::json;

/// The merchant of the in-test server (Anvil test account 5).
const PAY_TO: &str = "0x9965507D1a55bcC2695C58ba16FB37d819B0A4dc";
/// The Node buyer: Anvil test account 4 (a well-known test key, never funded anywhere real).
const NODE_BUYER_KEY: &str = "0x47e179ec197488593b187f80a00eb0da91f1b9d0b13f8733639f19c30a34926a";
const NODE_BUYER: &str = "0x15d34AAf54267DB7D7c367839AAf71A00a2C6A65";

/// The spend-control argument allowing X Layer's USD₮0 up to `cap` atomic units per payment.
fn allow(cap: u64) -> String {
    format!("allow:eip155:196:{X_LAYER_USDT0}:{cap}")
}

/// An actix server selling `GET /quote` for $0.0042 (4200 atomic USD₮0) through `facilitator`.
fn actix_server(facilitator: &Recording) -> support::Running {
    let server = X402ResourceServer::new(facilitator.clone()).register("eip155:196", ExactEvmScheme::new());
    let x402 = X402HttpServer::new(server)
        .route(
            "GET /quote",
            RouteConfig::new(PaymentOption::exact("$0.0042", PAY_TO))
                .description("A stock quote")
                .mime_type("application/json"),
        )
        .expect("route");
    support::serve_actix(move || {
        actix_web::App::new().wrap(pay402::actix::X402Middleware::new(x402.clone())).route(
            "/quote",
            actix_web::web::get().to(|p: X402Payment| async move {
                actix_web::HttpResponse::Ok().json(json!({ "symbol": "OKB", "paid_by": p.payer() }))
            }),
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_node_x402_client_pays_a_pay402_actix_server() {
    let embedded = EmbeddedFacilitator::new();
    embedded.fund(X_LAYER_USDT0, NODE_BUYER, U256::from(10_000u64)).expect("fund");
    let facilitator = Recording::new(embedded.clone());
    let running = actix_server(&facilitator);
    let url = format!("{}/quote", running.base);

    let out = peers::node("x402_fetch_pay.cjs", &[&url, NODE_BUYER_KEY, &allow(4200)]).await.json();

    // What @x402/fetch parsed from pay402's 402 and signed.
    assert_eq!(out["error"], serde_json::Value::Null, "{out}");
    assert!(eq_addr(&out["payer"], NODE_BUYER), "{out}");
    let accepted = &out["paymentRequired"]["accepts"][0];
    assert_eq!(accepted["scheme"], "exact", "{out}");
    assert_eq!(accepted["network"], "eip155:196", "{out}");
    assert_eq!(accepted["asset"], X_LAYER_USDT0, "{out}");
    assert_eq!(accepted["amount"], "4200", "{out}");
    assert_eq!(accepted["extra"]["name"], "USD₮0", "{out}");
    let authorization = &out["paymentPayload"]["payload"]["authorization"];
    assert_eq!(authorization["value"], "4200", "{out}");
    assert!(eq_addr(&authorization["to"], PAY_TO), "{out}");

    // Served, and the PAYMENT-RESPONSE as @x402/fetch decoded it; verified and settled once.
    peers::assert_paid_and_settled(&out, &facilitator, &embedded, (NODE_BUYER, PAY_TO), (10_000, 4_200));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_spend_controls_refuse_the_x_layer_asset_unless_allowed_within_the_cap() {
    let embedded = EmbeddedFacilitator::new();
    embedded.fund(X_LAYER_USDT0, NODE_BUYER, U256::from(10_000u64)).expect("fund");
    let facilitator = Recording::new(embedded.clone());
    let running = actix_server(&facilitator);
    let url = format!("{}/quote", running.base);

    // Built-in spend controls: USD₮0 on X Layer is not a default asset.
    let out = peers::node("x402_fetch_pay.cjs", &[&url, NODE_BUYER_KEY, "default"]).await.json();
    assert!(out["error"].as_str().is_some_and(|e| e.contains("spendControls")), "{out}");
    assert_eq!(out["paymentPayload"], serde_json::Value::Null, "{out}");
    // Allowed, but capped below the price.
    let out = peers::node("x402_fetch_pay.cjs", &[&url, NODE_BUYER_KEY, &allow(4199)]).await.json();
    assert!(out["error"].as_str().is_some_and(|e| e.contains("maxAmountPerPayment")), "{out}");
    assert_eq!(out["paymentPayload"], serde_json::Value::Null, "{out}");
    // Nothing reached the facilitator.
    assert!(facilitator.verified().is_empty());
    assert!(embedded.settlements().is_empty());
    assert_eq!(embedded.balance(X_LAYER_USDT0, NODE_BUYER), U256::from(10_000u64));

    // Allowed with a cap at the price: paid.
    let out = peers::node("x402_fetch_pay.cjs", &[&url, NODE_BUYER_KEY, &allow(4200)]).await.json();
    assert_eq!(out["status"], 200, "{out}");
    assert_eq!(out["paymentResponse"]["success"], true, "{out}");
    assert_eq!(embedded.settlements().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_node_x402_client_pays_the_actix_x402_example() {
    let (_server, url) = start_example("actix_x402", &[]);
    let out = peers::node("x402_fetch_pay.cjs", &[&url, NODE_BUYER_KEY, &allow(1000)]).await.json();
    assert_eq!(out["error"], serde_json::Value::Null, "{out}");
    assert_eq!(out["status"], 200, "{out}");
    assert!(eq_addr(&out["body"]["paid_by"], NODE_BUYER), "{out}");
    assert_eq!(out["paymentRequired"]["accepts"][0]["amount"], "1000", "{out}");
    let settled = &out["paymentResponse"];
    assert_eq!(settled["success"], true, "{out}");
    assert!(eq_addr(&settled["payer"], NODE_BUYER), "{out}");
    assert!(settled["transaction"].as_str().is_some_and(|t| t.starts_with("0x") && t.len() == 66), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_node_x402_client_pays_a_pay402_actix_server_settled_on_chain() {
    use support::anvil;
    let on_chain = OnChain::start().await;
    let buyer = anvil::fresh_key();
    on_chain.chain.mint(buyer.address(), U256::from(10_000u64)).await;
    let pay_to = anvil::fresh_key().address();
    let x402 = X402HttpServer::new(on_chain.resource_server())
        .route("GET /quote", RouteConfig::new(on_chain.option(4200, &pay_to.to_checksum(None))))
        .expect("route");
    let running = support::serve_actix(move || {
        actix_web::App::new().wrap(pay402::actix::X402Middleware::new(x402.clone())).route(
            "/quote",
            actix_web::web::get().to(|p: X402Payment| async move {
                actix_web::HttpResponse::Ok().json(json!({ "paid_by": p.payer() }))
            }),
        )
    });

    let key = alloy::hex::encode_prefixed(buyer.to_bytes());
    let allow = format!("allow:eip155:196:{}:4200", on_chain.token());
    let out = peers::node("x402_fetch_pay.cjs", &[&format!("{}/quote", running.base), &key, &allow]).await.json();
    assert_eq!(out["status"], 200, "{out}\n--- facilitator\n{}", on_chain.log());
    let settled = &out["paymentResponse"];
    assert_eq!(settled["success"], true, "{out}");
    assert!(eq_addr(&settled["payer"], &buyer.address().to_string()), "{out}");
    on_chain.assert_mined_ok(settled["transaction"].as_str().expect("transaction")).await;
    let nonce: alloy::primitives::B256 =
        out["paymentPayload"]["payload"]["authorization"]["nonce"].as_str().expect("nonce").parse().expect("bytes32");
    assert!(on_chain.chain.nonce_used(buyer.address(), nonce).await);
    assert_eq!(on_chain.chain.balance(buyer.address()).await, U256::from(5_800u64));
    assert_eq!(on_chain.chain.balance(pay_to).await, U256::from(4_200u64));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_node_x402_client_decodes_a_pay402_settlement_failure() {
    let embedded = EmbeddedFacilitator::new();
    embedded.fund(X_LAYER_USDT0, NODE_BUYER, U256::from(10_000u64)).expect("fund");
    let facilitator = support::FlakyFacilitator::new(embedded.clone());
    facilitator.set(support::SettleMode::Fail);
    let server = X402ResourceServer::new(facilitator).register("eip155:196", ExactEvmScheme::new());
    let x402 = X402HttpServer::new(server)
        .route("GET /quote", RouteConfig::new(PaymentOption::exact("$0.0042", PAY_TO)))
        .expect("route");
    let running = support::serve_actix(move || {
        actix_web::App::new()
            .wrap(pay402::actix::X402Middleware::new(x402.clone()))
            .route("/quote", actix_web::web::get().to(|| async { "delivered" }))
    });

    let url = format!("{}/quote", running.base);
    let out = peers::node("x402_fetch_pay.cjs", &[&url, NODE_BUYER_KEY, &allow(4200)]).await.json();
    // pay402 answers a failed settlement with 402 and a failure PAYMENT-RESPONSE, which
    // @x402/fetch decodes.
    assert_eq!(out["status"], 402, "{out}");
    let failed = &out["paymentResponse"];
    assert_eq!(failed["success"], false, "{out}");
    assert_eq!(failed["errorReason"], "insufficient_funds", "{out}");
    assert!(embedded.settlements().is_empty());
    assert_eq!(embedded.balance(X_LAYER_USDT0, NODE_BUYER), U256::from(10_000u64));
}
