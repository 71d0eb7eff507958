//! A paid actix-web API using the `#[x402]` attribute macro.
//!
//! Run with `cargo run --example actix_x402`. Follows the README's example convention.

use actix_web::{App, HttpServer, Responder, get, web};
use pay402::actix::{X402Payment, x402};
use pay402::setup::Setup;

/// One stock quote for $0.001, paid in USD₮0 on X Layer.
#[get("/quote")]
#[x402(price = "$0.001", description = "A stock quote", mime_type = "application/json")]
async fn quote(payment: X402Payment) -> impl Responder {
    web::Json(serde_json::json!({ "symbol": "OKB", "price": "48.20", "paid_by": payment.payer() }))
}

#[actix_web::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Logs (RUST_LOG=pay402=debug for more): pay402 reports misconfiguration here.
    tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).init();
    let setup = Setup::from_env()?;
    let x402 = setup.x402().await?;
    let data = web::Data::new(x402);
    let listener = std::net::TcpListener::bind(pay402::setup::listen_addr())?;
    let local = listener.local_addr()?;
    let http = HttpServer::new(move || App::new().app_data(data.clone()).service(quote)).workers(2).listen(listener)?;
    println!("listening on http://{local}/quote");
    http.run().await?;
    Ok(())
}
