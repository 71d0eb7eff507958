//! A bad argument under `#[get]` gives exactly one error; `App::service` does not cascade.
use actix_web::{App, get};
use pay402::actix::pay;

#[pay(amount = "0.01", intent = "sesion")]
#[get("/a")]
async fn below() -> &'static str {
    "a"
}

#[get("/b")]
#[pay(amount = "$0.01")]
async fn above() -> &'static str {
    "b"
}

fn main() {
    let _ = App::new().service(below).service(above);
}
