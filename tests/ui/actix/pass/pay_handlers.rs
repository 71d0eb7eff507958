//! Handler shapes `#[pay]` (MPP) must accept on actix-web, compiled warning-free.
#![deny(warnings)]

use actix_web::{App, HttpResponse, Responder, get, post, web};
use pay402::actix::{Credential, Mpp, Receipt, pay};
use pay402::mpp::{ChargeIntent, EmbeddedSa, EvmMethod};
use serde::Deserialize;

#[derive(Deserialize)]
struct Order {
    item: String,
}

/// `#[get]` above `#[pay]`, a path extractor, `impl Responder`.
#[get("/quote/{symbol}")]
#[pay(amount = "0.01")]
async fn quote(symbol: web::Path<String>) -> impl Responder {
    format!("quote for {symbol}")
}

/// `#[pay]` above `#[post]`, the credential and receipt between extractors, a JSON body.
#[pay(amount = "0.25", description = "An order", expires_in = "2m")]
#[post("/order/{n}")]
pub(crate) async fn order(
    n: web::Path<u32>,
    credential: Credential,
    order: web::Json<Order>,
    receipt: pay402::actix::Receipt,
) -> HttpResponse {
    HttpResponse::Ok().body(format!("{} x{n} for {:?} ({})", order.item, credential.source, receipt.reference))
}

/// Registered by hand, returning a `Result` and using `?`; a session route.
#[pay(amount = "0.000001", intent = "session", unit_type = "request", suggested_deposit = "1000000")]
async fn manual(
    n: web::Query<std::collections::HashMap<String, u32>>,
    _receipt: Receipt,
) -> Result<String, actix_web::Error> {
    let n = n.get("n").copied().ok_or_else(|| actix_web::error::ErrorBadRequest("missing n"))?;
    Ok(n.to_string())
}

fn main() {
    let method = EvmMethod::x_layer("0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed")
        .with_charge(ChargeIntent::new(EmbeddedSa::new()));
    let mpp = Mpp::new(method, "api.example.com", "secret-at-least-32-bytes-long-hmac-key").unwrap();
    let _app =
        App::new().app_data(web::Data::new(mpp)).service(quote).service(order).route("/manual", web::get().to(manual));
}
