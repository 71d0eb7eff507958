//! The newcomer demo: a paid axum API and a paying client, end to end, with pay402's embedded
//! development facilitator (no credentials, no network).
//!
//! Run with `cargo run --example demo`. Prints 402 → payment → 200 and the decoded
//! `PAYMENT-RESPONSE`, and exits 0 when the payment settled.
//!
//! `cargo run --example demo -- --anvil` settles on a real chain instead: it starts anvil
//! (chain id 196), deploys Circle's FiatTokenV2_2, runs pay402's on-chain facilitator behind its
//! HTTP API, and the seller verifies and settles through it; the payment is a real
//! `transferWithAuthorization` transaction. Needs anvil and the token artifacts
//! (`source scripts/install-test-deps.sh`).

#[path = "../tests/support/anvil.rs"]
mod anvil;
mod support;

use pay402::axum::{X402HttpServer, X402Layer, X402Payment};
use pay402::chain::X_LAYER_USDT0;
use pay402::evm::U256;
use pay402::x402::EmbeddedFacilitator;
use pay402::x402::ExactEvmScheme;
use pay402::x402::X402ResourceServer;
use pay402::x402::{PaymentOption, RouteConfig};
use std::sync::Arc;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::args().skip(1).any(|a| a == "--anvil") {
        return anvil_demo().await;
    }
    // The seller: a $0.001 route on X Layer, verified and settled by the embedded facilitator.
    let facilitator = EmbeddedFacilitator::new();
    let buyer = support::buyer()?;
    let buyer_address = buyer.address().to_string();
    facilitator.fund(X_LAYER_USDT0, &buyer_address, U256::from(5_000_000u64))?; // 5 USD₮0
    let server = X402ResourceServer::new(facilitator.clone()).register("eip155:196", ExactEvmScheme::new());
    let pay_to = support::pay_to();
    let route = RouteConfig::new(PaymentOption::exact("$0.001", &pay_to)).description("A stock quote");
    let x402 = X402HttpServer::new(server).route("GET /quote", route)?;
    let app = axum::Router::new()
        .route(
            "/quote",
            axum::routing::get(|p: X402Payment| async move {
                axum::Json(serde_json::json!({ "symbol": "OKB", "price": "48.20", "paid_by": p.payer() }))
            }),
        )
        .layer(X402Layer::new(x402));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/quote", listener.local_addr()?);
    println!("listening on {url}");
    tokio::spawn(async move { axum::serve(listener, app).await });

    // The buyer: pay402's x402 client.
    let before = (facilitator.balance(X_LAYER_USDT0, &buyer_address), facilitator.balance(X_LAYER_USDT0, &pay_to));
    let status = support::pay_once(&url, buyer).await?;
    let after = (facilitator.balance(X_LAYER_USDT0, &buyer_address), facilitator.balance(X_LAYER_USDT0, &pay_to));
    println!("ledger: buyer {} -> {}, payee {} -> {} (atomic USD₮0)", before.0, after.0, before.1, after.1);
    if status != 200 || after.1 <= before.1 {
        return Err("the payment did not settle".into());
    }
    println!("402 -> payment -> 200: settled");
    Ok(())
}

/// `--anvil`: the same purchase, settled on a local chain through pay402's on-chain facilitator.
async fn anvil_demo() -> Result<(), Box<dyn std::error::Error>> {
    use pay402::x402::facilitator_evm::{ExactEvmFacilitatorScheme, X402Facilitator, server};
    use pay402::x402::{AssetAmount, HttpFacilitatorClient, HttpFacilitatorConfig};

    let chain = anvil::Chain::start().await;
    eprintln!("anvil at {} (chain {}), {} token at {}", chain.rpc_url, chain.chain_id, anvil::TOKEN_NAME, chain.token);
    let buyer = support::buyer()?;
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
    let pay_to = support::pay_to();
    let client = HttpFacilitatorClient::new(HttpFacilitatorConfig::new(&facilitator_url).bearer_token(&token))?;
    let server = X402ResourceServer::new(client).register("eip155:196", ExactEvmScheme::new());
    let route =
        RouteConfig::new(PaymentOption::new("exact", price, "eip155:196", &pay_to)).description("A stock quote");
    let x402 = X402HttpServer::new(server).route("GET /quote", route)?;
    let app = axum::Router::new()
        .route(
            "/quote",
            axum::routing::get(|p: X402Payment| async move {
                axum::Json(serde_json::json!({ "symbol": "OKB", "price": "48.20", "paid_by": p.payer() }))
            }),
        )
        .layer(X402Layer::new(x402));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/quote", listener.local_addr()?);
    println!("listening on {url}");
    println!("facilitator at {facilitator_url}");
    tokio::spawn(async move { axum::serve(listener, app).await });

    let payee = pay402::evm::parse_address(&pay_to)?;
    let before = (chain.balance(buyer.address()).await, chain.balance(payee).await);
    let status = support::pay_once(&url, buyer.clone()).await?;
    let after = (chain.balance(buyer.address()).await, chain.balance(payee).await);
    println!("on chain: buyer {} -> {}, payee {} -> {} (atomic units)", before.0, after.0, before.1, after.1);
    if status != 200 || after.1 <= before.1 {
        return Err("the payment did not settle on chain".into());
    }
    println!("402 -> payment -> 200: settled on chain");
    Ok(())
}
