use pay402::axum::x402;

#[x402(price = "$0.001", scheme = "exat")]
async fn typo() {}

#[x402(price = "$0.001", scheme = "aggr-deferred")]
async fn dash() {}

#[x402(price = "$0.001", scheme = "up_to")]
async fn unsupported() {}

#[x402(price = "$0.001", scheme = exact)]
async fn unquoted() {}

fn main() {}
