use actix_web::get;
use pay402::actix::{pay, x402};

#[x402(price = "$0.01")]
#[get("/both")]
#[pay(amount = "0.01")]
async fn both() -> &'static str {
    "both"
}

fn main() {}
