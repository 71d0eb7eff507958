//! A paid axum API using the `#[x402]` attribute macro.
//!
//! Run with `cargo run --example axum_x402`, then pay it with `cargo run --example autopay_client`.
//! Follows the README's example convention (`PAY402_ADDR`; development unless `PAY402_ENV=production`:
//! see `pay402::setup`).

use axum::Json;
use axum::extract::Query;
use pay402::axum::{X402Payment, x402};
use pay402::setup::Setup;
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
    // Logs (RUST_LOG=pay402=debug for more): pay402 reports misconfiguration here.
    tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).init();
    let x402 = Setup::from_env()?.x402().await?;
    let app = axum::Router::new().route("/quote", axum::routing::get(quote)).with_state(x402);
    let listener = tokio::net::TcpListener::bind(pay402::setup::listen_addr()).await?;
    println!("listening on http://{}/quote", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
