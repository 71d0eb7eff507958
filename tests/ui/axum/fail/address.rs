use pay402::axum::x402;

#[x402(price = "$0.001", pay_to = "0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed")]
async fn lower_case() {}

#[x402(price = "$0.001", asset = "0x779DEd0c9e1022225f8E0630b35a9b54bE713736")]
async fn bad_checksum() {}

#[x402(price = "$0.001", pay_to = "0x1234")]
async fn short() {}

#[x402(price = "$0.001", pay_to = "0x0000000000000000000000000000000000000000")]
async fn zero() {}

#[x402(price = "$0.001", pay_to = "5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed")]
async fn no_prefix() {}

fn main() {}
