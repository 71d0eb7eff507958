use pay402::axum::x402;

#[x402]
async fn bare() {}

#[x402(scheme = "exact", description = "no price")]
async fn no_price() {}

fn main() {}
