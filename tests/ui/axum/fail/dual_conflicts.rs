use pay402::axum::{pay, x402};

#[x402(price = "$0.01", description = "a")]
#[pay(amount = "0.01", description = "b")]
async fn descriptions() {}

#[pay(amount = "0.01", recipient = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed")]
#[x402(price = "$0.01", pay_to = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C")]
async fn payees() {}

#[x402(price = "$0.01")]
#[pay(amount = "0.02", chain_id = 8453)]
async fn price_and_chain() {}

fn main() {}
