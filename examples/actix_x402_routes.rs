//! A paid actix-web API configured by a route table (`X402Middleware`), no macro.
//!
//! Run with `cargo run --example actix_x402_routes`. Follows the README's example convention.

mod support;

use actix_web::{App, HttpServer, web};
use pay402::actix::{X402HttpServer, X402Middleware, X402Payment};
use pay402::x402::{PaymentOption, RouteConfig};

#[actix_web::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (server, _embedded) = support::resource_server()?;
    let route = RouteConfig::new(PaymentOption::exact("$0.001", &support::pay_to()))
        .description("A stock quote")
        .mime_type("application/json");
    let x402 = X402HttpServer::new(server).route("GET /quote", route)?;
    x402.initialize().await?;
    let listener = std::net::TcpListener::bind(support::addr())?;
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
    support::announce(local, "/quote");
    http.run().await?;
    Ok(())
}
