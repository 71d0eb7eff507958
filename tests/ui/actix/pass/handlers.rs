//! Handler shapes `#[x402]` must accept on actix-web, compiled warning-free.
#![deny(warnings)]

use actix_web::{App, HttpResponse, Responder, get, post, web};
use pay402::actix::{X402HttpServer, X402Payment, x402};
use pay402::x402::X402ResourceServer;
use pay402::x402::{ExactEvmScheme, HttpFacilitatorClient, HttpFacilitatorConfig};
use serde::Deserialize;

#[derive(Deserialize)]
struct Order {
    item: String,
}

/// `#[get]` above `#[x402]`, a path extractor, `impl Responder`.
#[get("/quote/{symbol}")]
#[x402(price = "$0.001")]
async fn quote(symbol: web::Path<String>) -> impl Responder {
    format!("quote for {symbol}")
}

/// `#[x402]` above `#[post]`, the payment between extractors, a JSON body.
#[x402(price = "0.25", scheme = "aggr_deferred", description = "An order", max_timeout_seconds = 30)]
#[post("/order/{n}")]
pub(crate) async fn order(n: web::Path<u32>, payment: X402Payment, order: web::Json<Order>) -> HttpResponse {
    HttpResponse::Ok().body(format!("{} x{n} for {:?}", order.item, payment.payer()))
}

/// Registered by hand, returning a `Result` and using `?`.
#[x402(price = "$2", pay_to = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed")]
async fn manual(n: web::Query<std::collections::HashMap<String, u32>>) -> Result<String, actix_web::Error> {
    let n = n.get("n").copied().ok_or_else(|| actix_web::error::ErrorBadRequest("missing n"))?;
    Ok(n.to_string())
}

fn main() {
    let facilitator = HttpFacilitatorClient::new(HttpFacilitatorConfig::new("http://127.0.0.1:4022")).unwrap();
    let server = X402ResourceServer::new(facilitator).register("eip155:196", ExactEvmScheme::new());
    let x402 = X402HttpServer::new(server);
    let _app =
        App::new().app_data(web::Data::new(x402)).service(quote).service(order).route("/manual", web::get().to(manual));
}
