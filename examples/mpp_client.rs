//! Pays an MPP `charge` route once with pay402's charge client and prints each step.
//!
//! Run with `cargo run --example mpp_client -- http://127.0.0.1:4021/premium` (the default URL).
//! The buyer key is `PAY402_BUYER_KEY` (in development a publicly known test key).

use pay402::mpp::{MppChargeClient, Receipt};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::args().nth(1).unwrap_or_else(|| "http://127.0.0.1:4021/premium".to_owned());
    let http = pay402::reqwest::Client::new();
    let first = http.get(&url).send().await?;
    println!("GET {url} -> {}", first.status());
    let www: Vec<String> =
        first.headers().get_all("www-authenticate").iter().filter_map(|v| v.to_str().ok().map(str::to_owned)).collect();
    for w in &www {
        println!("  WWW-Authenticate: {w}");
    }
    let client = MppChargeClient::new(pay402::setup::buyer_key()?);
    let www: Vec<&str> = www.iter().map(String::as_str).collect();
    let authorization = client.authorization_header_for(&www)?;
    println!("signed an EIP-3009 charge credential as {}", client.address());
    let paid = http.get(&url).header("authorization", authorization).send().await?;
    let status = paid.status();
    println!("GET {url} with Authorization: Payment -> {status}");
    if let Some(r) = paid.headers().get("payment-receipt") {
        let receipt = Receipt::from_payment_receipt(r.to_str()?)?;
        println!("Payment-Receipt: {}", serde_json::to_string_pretty(&receipt.to_json_value())?);
    }
    println!("body: {}", paid.text().await?);
    if status.is_success() { Ok(()) } else { Err(format!("payment failed with status {status}").into()) }
}
