//! A paid axum API: one `#[x402]` route, development mode (no setup) unless `PAY402_ENV=production`.

use axum::{Json, Router, routing::get};
use pay402::axum::{X402Payment, x402};
use pay402::setup::Setup;

/// One stock quote for $0.001, paid in USD₮0 on X Layer and settled after the handler succeeds.
#[x402(price = "$0.001", description = "A stock quote", mime_type = "application/json")]
async fn quote(payment: X402Payment) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "symbol": "OKB", "price": "48.20", "paid_by": payment.payer() }))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Logs (RUST_LOG=pay402=debug for more): pay402 reports misconfiguration here.
    tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).init();

    // Development unless PAY402_ENV=production: embedded facilitator, play money, no setup.
    let setup = Setup::from_env()?;
    let x402 = setup.x402().await?; // the state `#[x402]` handlers need

    let app = Router::new().route("/quote", get(quote)).with_state(x402);
    let listener = tokio::net::TcpListener::bind(pay402::setup::listen_addr()).await?;
    println!("listening on http://{}/quote", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
