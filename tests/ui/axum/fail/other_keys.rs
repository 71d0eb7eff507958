use pay402::axum::x402;

#[x402(price = "$0.001", max_timeout_seconds = 0)]
async fn zero_timeout() {}

#[x402(price = "$0.001", max_timeout_seconds = "60")]
async fn string_timeout() {}

#[x402(price = "$0.001", mime_type = "json")]
async fn bare_mime() {}

#[x402(price = "$0.001", description = 5)]
async fn numeric_description() {}

fn main() {}
