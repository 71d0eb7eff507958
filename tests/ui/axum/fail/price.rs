use pay402::axum::x402;

#[x402(price = 0.001)]
async fn number() {}

#[x402(price = PRICE)]
async fn constant() {}

#[x402(price = "abc")]
async fn word() {}

#[x402(price = "-1")]
async fn negative() {}

#[x402(price = "0")]
async fn zero() {}

#[x402(price = "$0.0000001")]
async fn too_precise() {}

#[x402(price = "1e3")]
async fn exponent() {}

#[x402(price = "$1,000")]
async fn comma() {}

const PRICE: &str = "$0.001";

fn main() {
    let _ = PRICE;
}
