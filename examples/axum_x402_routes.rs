//! A paid axum API configured by a route table (`X402Layer`), no macro.
//!
//! Run with `cargo run --example axum_x402_routes`. Follows the README's example convention.

use pay402::axum::{X402Layer, X402Payment};
use pay402::setup::Setup;
use pay402::x402::{PaymentOption, RouteConfig};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Logs (RUST_LOG=pay402=debug for more): pay402 reports misconfiguration here.
    tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).init();
    let setup = Setup::from_env()?;
    let route = RouteConfig::new(PaymentOption::exact("$0.001", setup.pay_to()))
        .description("A stock quote")
        .mime_type("application/json");
    let x402 = setup.x402().await?.route("GET /quote", route)?;
    let app = axum::Router::new()
        .route(
            "/quote",
            axum::routing::get(|p: X402Payment| async move {
                axum::Json(serde_json::json!({ "symbol": "OKB", "price": "48.20", "paid_by": p.payer() }))
            }),
        )
        .route("/free", axum::routing::get(|| async { "free" }))
        .layer(X402Layer::new(x402));
    let listener = tokio::net::TcpListener::bind(pay402::setup::listen_addr()).await?;
    println!("listening on http://{}/quote", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
