use pay402::axum::{pay, x402};

#[pay(amount = "0.01")]
#[x402(price = "$0.01")]
async fn pay_above() {}

#[x402(price = "$0.01")]
#[pay(amount = "0.01")]
async fn x402_above() {}

fn main() {}
