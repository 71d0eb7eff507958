//! A paid actix-web API configured by a route table (`X402Middleware`), no macro.
//!
//! Run with `cargo run --example actix_x402_routes`. Follows the README's example convention.

use actix_web::{App, HttpServer, web};
use pay402::actix::{X402Middleware, X402Payment};
use pay402::setup::Setup;
use pay402::x402::{PaymentOption, RouteConfig};

#[actix_web::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Logs (RUST_LOG=pay402=debug for more): pay402 reports misconfiguration here.
    tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).init();
    let setup = Setup::from_env()?;
    let route = RouteConfig::new(PaymentOption::exact("$0.001", setup.pay_to()))
        .description("A stock quote")
        .mime_type("application/json");
    let x402 = setup.x402().await?.route("GET /quote", route)?;
    let listener = std::net::TcpListener::bind(pay402::setup::listen_addr())?;
    let local = listener.local_addr()?;
    let http = HttpServer::new(move || {
        App::new()
            .wrap(X402Middleware::new(x402.clone()))
            .route(
                "/quote",
                web::get().to(|p: X402Payment| async move {
                    web::Json(serde_json::json!({ "symbol": "OKB", "price": "48.20", "paid_by": p.payer() }))
                }),
            )
            .route("/free", web::get().to(|| async { "free" }))
    })
    .workers(2)
    .listen(listener)?;
    println!("listening on http://{local}/quote");
    http.run().await?;
    Ok(())
}
