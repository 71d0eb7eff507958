//! A paid axum API using the `#[x402]` attribute macro.
//!
//! Run with `cargo run --example axum_x402`, then pay it with `cargo run --example x402_client`.
//! Follows the README's example convention (`PAY402_ADDR`, `PAY402_PAY_TO`, OKX credentials).

mod support;

use axum::Json;
use axum::extract::Query;
use pay402::axum::{X402HttpServer, X402Payment, x402};
use serde::Deserialize;

#[derive(Deserialize)]
struct QuoteQuery {
    symbol: Option<String>,
}

/// One stock quote for $0.001, paid in USD₮0 on X Layer.
#[x402(price = "$0.001", description = "A stock quote", mime_type = "application/json")]
async fn quote(payment: X402Payment, Query(q): Query<QuoteQuery>) -> Json<serde_json::Value> {
    let symbol = q.symbol.unwrap_or_else(|| "OKB".into());
    Json(serde_json::json!({ "symbol": symbol, "price": "48.20", "paid_by": payment.payer() }))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (server, _embedded) = support::resource_server()?;
    let x402 = X402HttpServer::new(server).pay_to(support::pay_to());
    x402.initialize().await?;
    let app = axum::Router::new().route("/quote", axum::routing::get(quote)).with_state(x402);
    let addr = support::addr();
    let listener = tokio::net::TcpListener::bind(addr).await?;
    support::announce(listener.local_addr()?, "/quote");
    axum::serve(listener, app).await?;
    Ok(())
}
