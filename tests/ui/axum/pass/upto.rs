//! `#[x402(scheme = "upto", max = …)]` on axum: the handler takes its `UptoCharge` (and the
//! payment), compiled warning-free.
#![deny(warnings)]

use axum::Router;
use axum::extract::Query;
use axum::routing::get;
use pay402::axum::{UptoCharge, X402HttpServer, X402Payment, x402};
use serde::Deserialize;

#[derive(Deserialize)]
struct Words {
    words: u32,
}

/// Charges $0.0001 a word, up to $0.01.
#[x402(scheme = "upto", max = "$0.01", description = "Summaries")]
async fn summarize(charge: UptoCharge, Query(q): Query<Words>) -> String {
    match charge.set_fraction(u128::from(q.words), 100) {
        Ok(used) => format!("{} words, {used} units of {}", q.words, charge.max_atomic()),
        Err(e) => e.to_string(),
    }
}

/// Both the payment and the charge; nothing reported settles the maximum.
#[x402(max = "0.5", scheme = "upto", network = "eip155:196")]
async fn everything(payment: X402Payment, charge: UptoCharge) -> String {
    charge.none().map(|_| format!("{:?}", payment.payer())).unwrap_or_default()
}

fn main() {
    let _: Router<X402HttpServer> = Router::new().route("/summarize", get(summarize)).route("/all", get(everything));
}
