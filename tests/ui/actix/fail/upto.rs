//! `upto`'s rules under `#[get]`, in either order: one error each, no cascade.
use actix_web::{App, get};
use pay402::actix::x402;

#[x402(scheme = "upto", price = "$0.01")]
#[get("/a")]
async fn upto_with_price() -> &'static str {
    "a"
}

#[get("/b")]
#[x402(scheme = "upto")]
async fn upto_without_max() -> &'static str {
    "b"
}

#[get("/c")]
#[x402(scheme = "upto", max = "$0.0000001")]
async fn upto_max_decimals() -> &'static str {
    "c"
}

fn main() {
    let _ = App::new().service(upto_with_price).service(upto_without_max).service(upto_max_decimals);
}
