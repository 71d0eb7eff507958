use pay402::axum::x402;

// Every key problem of one attribute is reported at once.
#[x402(price = "$0.001", prise = "$0.002", price = "$0.003", shceme = "exact", payto = "0x", network)]
async fn many() {}

#[x402(price: "$0.001")]
async fn colon() {}

#[x402(price = "$0.001", crate = "::pay402")]
async fn crate_path() {}

fn main() {}
