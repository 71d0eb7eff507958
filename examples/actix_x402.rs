//! A paid actix-web API using the `#[x402]` attribute macro.
//!
//! Run with `cargo run --example actix_x402`. Follows the README's example convention.

mod support;

use actix_web::{App, HttpServer, Responder, get, web};
use pay402::actix::{X402HttpServer, X402Payment, x402};

/// One stock quote for $0.001, paid in USD₮0 on X Layer.
#[get("/quote")]
#[x402(price = "$0.001", description = "A stock quote", mime_type = "application/json")]
async fn quote(payment: X402Payment) -> impl Responder {
    web::Json(serde_json::json!({ "symbol": "OKB", "price": "48.20", "paid_by": payment.payer() }))
}

#[actix_web::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (server, _embedded) = support::resource_server()?;
    let x402 = X402HttpServer::new(server).pay_to(support::pay_to());
    x402.initialize().await?;
    let data = web::Data::new(x402);
    let listener = std::net::TcpListener::bind(support::addr())?;
    let local = listener.local_addr()?;
    let http = HttpServer::new(move || App::new().app_data(data.clone()).service(quote)).workers(2).listen(listener)?;
    support::announce(local, "/quote");
    http.run().await?;
    Ok(())
}
