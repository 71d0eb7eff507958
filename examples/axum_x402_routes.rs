//! A paid axum API configured by a route table (`X402Layer`), no macro.
//!
//! Run with `cargo run --example axum_x402_routes`. Follows the README's example convention.

mod support;

use pay402::axum::{X402HttpServer, X402Layer, X402Payment};
use pay402::x402::{PaymentOption, RouteConfig};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (server, _embedded) = support::resource_server()?;
    let route = RouteConfig::new(PaymentOption::exact("$0.001", &support::pay_to()))
        .description("A stock quote")
        .mime_type("application/json");
    let x402 = X402HttpServer::new(server).route("GET /quote", route)?;
    x402.initialize().await?;
    let app = axum::Router::new()
        .route(
            "/quote",
            axum::routing::get(|p: X402Payment| async move {
                axum::Json(serde_json::json!({ "symbol": "OKB", "price": "48.20", "paid_by": p.payer() }))
            }),
        )
        .route("/free", axum::routing::get(|| async { "free" }))
        .layer(X402Layer::new(x402));
    let listener = tokio::net::TcpListener::bind(support::addr()).await?;
    support::announce(listener.local_addr()?, "/quote");
    axum::serve(listener, app).await?;
    Ok(())
}
