//! The newcomer demo: a paid axum API and a paying client, end to end, with pay402's embedded
//! development facilitator (no credentials, no network).
//!
//! Run with `cargo run --example demo`. Prints 402 → payment → 200 and the decoded
//! `PAYMENT-RESPONSE`, and exits 0 when the payment settled.

mod support;

use pay402::axum::{X402HttpServer, X402Layer, X402Payment};
use pay402::evm::U256;
use pay402::x402::embedded::EmbeddedFacilitator;
use pay402::x402::http::{PaymentOption, RouteConfig};
use pay402::x402::server::X402ResourceServer;
use pay402::x402::{ExactEvmScheme, X_LAYER_USDT0};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
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
