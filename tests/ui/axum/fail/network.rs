use pay402::axum::x402;

#[x402(price = "$0.001", network = "xlayer")]
async fn alias() {}

#[x402(price = "$0.001", network = "196")]
async fn bare_chain_id() {}

#[x402(price = "$0.001", network = "eip155:08453")]
async fn leading_zero() {}

#[x402(price = "$0.001", network = "EIP155:196")]
async fn upper_case() {}

#[x402(price = "$0.001", network = "mainnet")]
async fn no_colon() {}

fn main() {}
