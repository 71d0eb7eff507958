//! Pays an x402 route once with pay402's client and prints each step.
//!
//! Run with `cargo run --example x402_client -- http://127.0.0.1:4021/quote` (the default URL).
//! The buyer key is `PAY402_BUYER_KEY` (default: a well-known test key; the example servers'
//! embedded facilitator funds unknown accounts, so any key works against them).

mod support;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::args().nth(1).unwrap_or_else(|| "http://127.0.0.1:4021/quote".to_owned());
    let status = support::pay_once(&url, support::buyer()?).await?;
    if status == 200 { Ok(()) } else { Err(format!("payment failed with status {status}").into()) }
}
