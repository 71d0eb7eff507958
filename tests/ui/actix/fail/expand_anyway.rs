//! A bad argument under `#[get]` gives exactly one error; `App::service` does not cascade.
use actix_web::{App, get};
use pay402::actix::x402;

#[x402(price = "$0.001", scheme = "exat")]
#[get("/a")]
async fn below() -> &'static str {
    "a"
}

#[get("/b")]
#[x402(price = "free")]
async fn above() -> &'static str {
    "b"
}

fn main() {
    let _ = App::new().service(below).service(above);
}
