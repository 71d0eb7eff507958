//! The newcomer demo: a paid axum API and a paying client, end to end, in pay402's development
//! mode (embedded facilitator, play money; no credentials, no network).
//!
//! Run with `cargo run --example demo`. Prints the 402, what the client paid and the decoded
//! `PAYMENT-RESPONSE`, and exits 0 when the payment settled.
//!
//! `cargo run --example demo -- --anvil` settles on a real chain instead: it starts anvil
//! (chain id 196), deploys Circle's FiatTokenV2_2, runs pay402's on-chain facilitator behind its
//! HTTP API, and the seller verifies and settles through it; the payment is a real
//! `transferWithAuthorization` transaction. Needs anvil and the token artifacts
//! (`source scripts/install-test-deps.sh`); the chain helpers are the test suite's
//! (`tests/support/anvil.rs`).

#[path = "../tests/support/anvil.rs"]
mod anvil;

use axum::{Json, Router, routing::get};
use pay402::autopay::{AssetId, AutoPay, AutoPayOutcome, PaymentDetail};
use pay402::axum::{X402HttpServer, X402Payment, x402};
use pay402::chain::X_LAYER_USDT0;
use pay402::evm::{PrivateKeySigner, U256};
use pay402::setup::Setup;
use pay402::x402::{AnyPaymentRequired, decode_payment_required_header};
use std::sync::Arc;

/// One stock quote for $0.001 (or 0.001 of the anvil token), settled after the handler.
#[x402(price = "$0.001", description = "A stock quote", mime_type = "application/json")]
async fn quote(payment: X402Payment) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "symbol": "OKB", "price": "48.20", "paid_by": payment.payer() }))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::args().skip(1).any(|a| a == "--anvil") {
        return anvil_demo().await;
    }
    // The seller, in development mode: the embedded facilitator settles in an in-memory ledger.
    let setup = Setup::development()?;
    let url = serve(setup.x402().await?).await?;

    // The buyer: pay402's AutoPay, capped at 0.01 USD₮0 per request.
    let buyer = setup.buyer()?;
    let usdt0 = AssetId::x_layer_usdt0();
    let autopay = AutoPay::new(buyer.clone()).max_per_request(usdt0.clone(), "0.01".parse()?).build()?;
    let paid = buy(&url, &autopay).await?;

    let ledger = setup.embedded_facilitator().ok_or("development mode has an embedded facilitator")?;
    let payee = ledger.balance(X_LAYER_USDT0, setup.pay_to());
    println!(
        "ledger: payee {} received {payee} atomic USD₮0; buyer {} has {} left",
        setup.pay_to(),
        buyer.address(),
        ledger.balance(X_LAYER_USDT0, &buyer.address().to_string())
    );
    if !paid || payee.is_zero() {
        return Err("the payment did not settle".into());
    }
    println!("402 -> payment -> 200: settled");
    Ok(())
}

/// Serves `GET /quote` on a free port; returns its URL.
async fn serve(x402: X402HttpServer) -> Result<String, Box<dyn std::error::Error>> {
    let app = Router::new().route("/quote", get(quote)).with_state(x402);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/quote", listener.local_addr()?);
    println!("listening on {url}");
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(url)
}

/// Shows the 402, then pays with `autopay` and shows what was paid. True when it settled.
async fn buy(url: &str, autopay: &pay402::autopay::AutoPayMiddleware) -> Result<bool, Box<dyn std::error::Error>> {
    let unpaid = pay402::reqwest::get(url).await?;
    println!("GET {url} -> {}", unpaid.status());
    if let Some(header) = unpaid.headers().get("payment-required")
        && let AnyPaymentRequired::V2(required) = decode_payment_required_header(header.to_str()?)?
    {
        for a in &required.accepts {
            println!(
                "  accepts: {} {} atomic units of {} on {} to {}",
                a.scheme, a.amount, a.asset, a.network, a.pay_to
            );
        }
    }
    let http = autopay.client(pay402::reqwest::Client::builder())?;
    let paid = http.get(url).send().await?;
    println!("GET {url} paying with AutoPay -> {}", paid.status());
    let outcome = paid.extensions().get::<AutoPayOutcome>().cloned();
    let status = paid.status();
    println!("body: {}", paid.text().await?);
    let Some(outcome) = outcome else { return Ok(false) };
    println!("paid {outcome}");
    let PaymentDetail::X402 { settlement: Some(settled), .. } = &outcome.detail else { return Ok(false) };
    println!("PAYMENT-RESPONSE: {}", serde_json::to_string_pretty(settled)?);
    Ok(status.is_success() && settled.success)
}

/// `--anvil`: the same purchase, settled on a local chain through pay402's on-chain facilitator.
async fn anvil_demo() -> Result<(), Box<dyn std::error::Error>> {
    use pay402::x402::facilitator_evm::{ExactEvmFacilitatorScheme, X402Facilitator, server};
    use pay402::x402::{AssetAmount, ExactEvmScheme, HttpFacilitatorClient, HttpFacilitatorConfig, X402ResourceServer};
    use pay402::x402::{PaymentOption, RouteConfig};

    let chain = anvil::Chain::start().await;
    eprintln!("anvil at {} (chain {}), {} token at {}", chain.rpc_url, chain.chain_id, anvil::TOKEN_NAME, chain.token);
    let buyer: PrivateKeySigner = pay402::setup::buyer_key()?;
    chain.mint(buyer.address(), U256::from(5_000_000u64)).await; // 5 tokens

    // The facilitator: settles from anvil's dev account 9 in the local token only, served over
    // HTTP behind a bearer token (32 random bytes, hex) that only this seller knows.
    let exact =
        ExactEvmFacilitatorScheme::connect_http(&chain.rpc_url, chain.dev_key(9)).await?.with_asset(chain.token);
    let facilitator = X402Facilitator::new().register([exact.network().clone()], exact);
    let token = pay402::evm::to_hex(anvil::fresh_key().to_bytes());
    let router = server::router_with_token(Arc::new(facilitator), server::BearerToken::new(&token)?);
    let facilitator_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let facilitator_url = format!("http://{}", facilitator_listener.local_addr()?);
    tokio::spawn(async move { axum::serve(facilitator_listener, router).await });

    // The seller: 0.001 token per quote, verified and settled by that facilitator over HTTP.
    let mut extra = serde_json::Map::new();
    extra.insert("name".into(), anvil::TOKEN_NAME.into());
    extra.insert("version".into(), anvil::TOKEN_VERSION.into());
    let price = AssetAmount { amount: "1000".into(), asset: chain.token.to_checksum(None), extra };
    let pay_to = pay402::setup::DEVELOPMENT_PAY_TO;
    let client = HttpFacilitatorClient::new(HttpFacilitatorConfig::new(&facilitator_url).bearer_token(&token))?;
    let server = X402ResourceServer::new(client).register("eip155:196", ExactEvmScheme::new());
    let route = RouteConfig::new(PaymentOption::new("exact", price, "eip155:196", pay_to)).description("A stock quote");
    let x402 = X402HttpServer::new(server).route("GET /quote", route)?;
    let app = Router::new()
        .route("/quote", get(|p: X402Payment| async move { Json(serde_json::json!({ "paid_by": p.payer() })) }))
        .layer(pay402::axum::X402Layer::new(x402));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/quote", listener.local_addr()?);
    println!("listening on {url}");
    println!("facilitator at {facilitator_url}");
    tokio::spawn(async move { axum::serve(listener, app).await });

    // The buyer pays in the local token: its decimals are given, never taken from the seller.
    let asset = AssetId::new("eip155:196", &chain.token.to_string());
    let autopay =
        AutoPay::new(buyer.clone()).decimals(asset.clone(), 6).max_per_request(asset, "0.01".parse()?).build()?;
    let payee = pay402::evm::parse_address(pay_to)?;
    let before = (chain.balance(buyer.address()).await, chain.balance(payee).await);
    let paid = buy(&url, &autopay).await?;
    let after = (chain.balance(buyer.address()).await, chain.balance(payee).await);
    println!("on chain: buyer {} -> {}, payee {} -> {} (atomic units)", before.0, after.0, before.1, after.1);
    if !paid || after.1 <= before.1 {
        return Err("the payment did not settle on chain".into());
    }
    println!("402 -> payment -> 200: settled on chain");
    Ok(())
}
