//! A client paying any x402 or MPP route within caps: `cargo run -- <url>`.

use pay402::autopay::{AssetId, AutoPay, AutoPayOutcome};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let url = std::env::args().nth(1).unwrap_or_else(|| "http://127.0.0.1:4021/quote".to_owned());
    // PAY402_BUYER_KEY, or in development a publicly known test key (play money).
    let buyer = pay402::setup::buyer_key()?;

    // Pays x402 and MPP 402s in USD₮0 on X Layer: at most 0.01 a request, 1 in total.
    let usdt0 = AssetId::x_layer_usdt0();
    let autopay =
        AutoPay::new(buyer).max_per_request(usdt0.clone(), "0.01".parse()?).max_total(usdt0, "1".parse()?).build()?;
    let http = autopay.client(pay402::reqwest::Client::builder())?;

    let response = http.get(&url).send().await?;
    if let Some(paid) = response.extensions().get::<AutoPayOutcome>() {
        println!("paid {paid}"); // e.g. "0.001 USD₮0 (1000 atomic units) with x402"
    }
    println!("{} {}", response.status(), response.text().await?);
    Ok(())
}
