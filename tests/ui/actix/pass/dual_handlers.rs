//! Handlers carrying both `#[x402]` and `#[pay]` (accepting either protocol) on actix-web, in
//! either order and around `#[get]`, compiled warning-free.
#![deny(warnings)]

use actix_web::{App, HttpResponse, Responder, get, web};
use pay402::actix::{Mpp, Paid, X402HttpServer, pay, x402};
use pay402::mpp::{ChargeIntent, EmbeddedSa, EvmMethod};
use pay402::x402::ExactEvmScheme;
use pay402::x402::EmbeddedFacilitator;
use pay402::x402::X402ResourceServer;

/// `#[get]` above both, `#[x402]` above `#[pay]`, matching on how it was paid.
#[get("/quote/{symbol}")]
#[x402(price = "$0.01", description = "A quote")]
#[pay(amount = "0.01", description = "A quote")]
async fn quote(symbol: web::Path<String>, paid: Paid) -> impl Responder {
    match paid {
        Paid::X402(payment) => format!("{symbol} paid over x402 by {:?}", payment.payer()),
        Paid::Mpp { credential, .. } => format!("{symbol} paid over MPP by {:?}", credential.source),
        Paid::Other { adapter } => format!("{symbol} paid over {adapter}"),
    }
}

/// `#[pay]` above `#[get]` above `#[x402]`.
#[pay(amount = "0.25", recipient = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed")]
#[get("/order")]
#[x402(price = "$0.25", pay_to = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed")]
pub(crate) async fn order() -> HttpResponse {
    HttpResponse::Ok().body("ordered")
}

/// Registered by hand, `?` on a `Result`.
#[pay(amount = "1")]
#[x402(price = "$1")]
async fn manual(n: web::Query<std::collections::HashMap<String, u32>>) -> Result<String, actix_web::Error> {
    let n = n.get("n").copied().ok_or_else(|| actix_web::error::ErrorBadRequest("missing n"))?;
    Ok(n.to_string())
}

fn main() {
    let facilitator = EmbeddedFacilitator::new();
    let server = X402ResourceServer::new(facilitator).register("eip155:196", ExactEvmScheme::new());
    let method = EvmMethod::x_layer("0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed")
        .with_charge(ChargeIntent::new(EmbeddedSa::new()));
    let mpp = Mpp::new(method, "api.example.com", "secret-at-least-32-bytes-long-hmac-key").unwrap();
    let _app = App::new()
        .app_data(web::Data::new(X402HttpServer::new(server)))
        .app_data(web::Data::new(mpp))
        .service(quote)
        .service(order)
        .route("/manual", web::get().to(manual));
}
