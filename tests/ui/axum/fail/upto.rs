use pay402::axum::{UptoCharge, pay, x402};

#[x402(scheme = "upto")]
async fn upto_without_max() {}

#[x402(scheme = "upto", max = "$0.0000001")]
async fn upto_max_decimals() {}

#[x402(scheme = "upto", max = "$0")]
async fn upto_max_zero() {}

#[x402(scheme = "upto", max = "$0.10", price = "$0.01")]
async fn upto_with_price() {}

#[x402(price = "$0.01", max = "$0.10")]
async fn max_without_upto() {}

#[x402(scheme = "exact", price = "$0.01", max = "$0.10")]
async fn max_with_exact() {}

#[x402(price = "$0.01")]
async fn charge_on_a_fixed_price(charge: UptoCharge) {
    let _ = charge.none();
}

#[x402(scheme = "upto", max = "$0.10")]
#[pay(amount = "0.1")]
async fn charge_on_a_dual_route(charge: UptoCharge) {
    let _ = charge.none();
}

fn main() {}
