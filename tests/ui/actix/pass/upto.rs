//! `#[x402(scheme = "upto", max = …)]` on actix-web, compiled warning-free.
#![deny(warnings)]

use actix_web::{App, get, web};
use pay402::actix::{UptoCharge, x402};
use serde::Deserialize;

#[derive(Deserialize)]
struct Words {
    words: u32,
}

/// Charges $0.0001 a word, up to $0.01; `#[get]` below.
#[x402(scheme = "upto", max = "$0.01")]
#[get("/summarize")]
async fn summarize(q: web::Query<Words>, charge: UptoCharge) -> String {
    let amount = format!("${}.{:04}", q.words / 10_000, q.words % 10_000);
    match charge.set_amount(&amount) {
        Ok(used) => format!("{used}"),
        Err(e) => e.to_string(),
    }
}

fn main() {
    let _ = App::new().service(summarize);
}
