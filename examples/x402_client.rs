//! Pays an x402 route once with pay402's `X402Client` and prints each step: request → 402 →
//! sign → retry → result.
//!
//! Run with `cargo run --example x402_client -- http://127.0.0.1:4021/quote` (the default URL).
//! The buyer key is `PAY402_BUYER_KEY` (in development a publicly known test key: the embedded
//! facilitator funds unknown accounts, so any key pays the example servers).

use pay402::x402::{
    AnyPaymentRequired, ExactEvmClientScheme, X402Client, decode_payment_required_header,
    decode_payment_response_header,
};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::args().nth(1).unwrap_or_else(|| "http://127.0.0.1:4021/quote".to_owned());
    let signer = pay402::setup::buyer_key()?;
    let http = pay402::reqwest::Client::new();

    let first = http.get(&url).send().await?;
    println!("GET {url} -> {}", first.status());
    let Some(required) = first.headers().get("payment-required") else {
        return Err(format!("no PAYMENT-REQUIRED header; body: {}", first.text().await?).into());
    };
    let required = decode_payment_required_header(required.to_str()?)?;
    if let AnyPaymentRequired::V2(r) = &required {
        for a in &r.accepts {
            println!(
                "  accepts: {} {} atomic units of {} on {} to {}",
                a.scheme, a.amount, a.asset, a.network, a.pay_to
            );
        }
    }

    let client = X402Client::new().register("eip155:*", ExactEvmClientScheme::new(signer.clone()));
    let (name, value) = client.create_payment_header(&required).await?;
    println!("signed an EIP-3009 TransferWithAuthorization as {}", signer.address());
    let paid = http.get(&url).header(name, value).send().await?;
    let status = paid.status();
    println!("GET {url} with {name} -> {status}");
    if let Some(settled) = paid.headers().get("payment-response") {
        let settled = decode_payment_response_header(settled.to_str()?)?;
        println!("PAYMENT-RESPONSE: {}", serde_json::to_string_pretty(&settled)?);
    }
    println!("body: {}", paid.text().await?);
    if status.is_success() { Ok(()) } else { Err(format!("payment failed with status {status}").into()) }
}
