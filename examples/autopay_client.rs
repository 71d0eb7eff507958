//! Pays any pay402 route automatically — x402, MPP charge or MPP session — with the
//! auto-paying `reqwest` middleware, within spending caps, and prints what each request paid.
//!
//! Run an example server (`cargo run --example axum_dual`, `axum_x402`, `axum_mpp_charge`,
//! `axum_mpp_session` …), then `cargo run --example autopay_client -- <url>`. The URL is the
//! first argument, else `PAY402_URL`, else `http://127.0.0.1:4021/quote`. Settings (all
//! optional):
//!
//! * `PAY402_BUYER_KEY` — the buyer's key (in development a publicly known test key; the
//!   embedded backends fund unknown accounts, so any key works against them);
//! * `PAY402_PREFER` — protocols in order of preference, comma-separated, from `x402`,
//!   `mpp-charge`, `mpp-session` (default: all three, in that order);
//! * `PAY402_MAX_PER_REQUEST` / `PAY402_MAX_TOTAL` — caps in USD₮0 on X Layer (default `0.01`
//!   and `0.1`; session deposits count against the total);
//! * `PAY402_MAX_DEPOSIT` — the most one MPP session deposit may be, in USD₮0 (default `0.01`;
//!   deposits go only to OKX's escrow on X Layer);
//! * `PAY402_REQUESTS` — how many requests to send (default 3: a session route opens its
//!   channel once, then pays with vouchers).
//!
//! A route metered **per event** (an MPP session whose 402 says `unitType: "event"`, like
//! `cargo run --example axum_mpp_stream`, URL `http://127.0.0.1:4021/tokens?n=20`) is read as a
//! Server-Sent Events stream with `AutoPayMiddleware::stream`: each event is printed as it
//! arrives, the seller's `402-need-voucher` pauses are answered within the caps, and the final
//! receipt is printed.

use pay402::autopay::{AssetId, AutoPay, AutoPayError, AutoPayOutcome, Protocol, decimal_string};
use pay402::evm::U256;

/// Whether `url` answers an unpaid request with an MPP session challenge priced per event.
async fn metered_per_event(url: &str) -> Result<bool, Box<dyn std::error::Error + Send + Sync>> {
    let resp = pay402::reqwest::Client::new().get(url).header("accept", "text/event-stream").send().await?;
    if resp.status() != 402 {
        return Ok(false);
    }
    let lines: Vec<&str> = resp.headers().get_all("www-authenticate").iter().filter_map(|v| v.to_str().ok()).collect();
    let challenges = pay402::mpp::parse_www_authenticate(&lines).unwrap_or_default();
    Ok(challenges
        .iter()
        .any(|c| c.intent == "session" && c.request.get("unitType").and_then(|u| u.as_str()) == Some("event")))
}

/// Reads `url` as a metered event stream `requests` times, printing events and receipts.
async fn stream(
    autopay: &pay402::autopay::AutoPayMiddleware,
    url: &str,
    requests: u32,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    use futures::StreamExt as _;
    use pay402::autopay::StreamItem;
    let usdt = AssetId::x_layer_usdt0();
    let http = pay402::reqwest::Client::new();
    for n in 1..=requests {
        println!("#{n} GET {url} (a stream metered per event)");
        let request = pay402::reqwest::Request::new(pay402::reqwest::Method::GET, url.parse()?);
        let mut events = autopay.stream(&http, request).await?;
        while let Some(item) = events.next().await {
            match item? {
                StreamItem::Data(e) => println!("   event {}: {}", e.id.as_deref().unwrap_or("-"), e.data),
                StreamItem::PaymentError(p) => println!("   payment error: {p:?}"),
                _ => {}
            }
        }
        match events.final_receipt() {
            Some(r) => println!("   final receipt: {} events, {} on channel {}", r.units, usdt0(r.spent), r.channel_id),
            None => println!("   the stream ended without a final receipt"),
        }
    }
    println!(
        "spent {} in total, {} held in session escrows",
        usdt0(autopay.spent(&usdt)),
        usdt0(autopay.escrowed(&usdt))
    );
    for closed in autopay.close_channels(&http).await? {
        println!("closed channel {} at {}", closed.channel_id, usdt0(closed.cumulative));
    }
    Ok(())
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty()).unwrap_or_else(|| default.to_owned())
}

/// Atomic USD₮0 units for people (6 decimals; exact, no floats).
fn usdt0(atomic: U256) -> String {
    format!("{} USD₮0", decimal_string(atomic, 6))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let url = std::env::args().nth(1).unwrap_or_else(|| env_or("PAY402_URL", "http://127.0.0.1:4021/quote"));
    let prefer = env_or("PAY402_PREFER", "x402,mpp-charge,mpp-session")
        .split(',')
        .map(str::parse)
        .collect::<Result<Vec<Protocol>, AutoPayError>>()?;
    let requests: u32 = env_or("PAY402_REQUESTS", "3").parse()?;
    let usdt = AssetId::x_layer_usdt0();
    let autopay = AutoPay::new(pay402::setup::buyer_key()?)
        .prefer(prefer)
        .max_per_request(usdt.clone(), env_or("PAY402_MAX_PER_REQUEST", "0.01").parse()?)
        .max_total(usdt.clone(), env_or("PAY402_MAX_TOTAL", "0.1").parse()?)
        .max_deposit(usdt.clone(), env_or("PAY402_MAX_DEPOSIT", "0.01").parse()?)
        .build()?;
    let http = autopay.client(pay402::reqwest::Client::builder())?;
    if metered_per_event(&url).await? {
        return stream(&autopay, &url, requests).await;
    }

    let mut failures = 0;
    for n in 1..=requests {
        match http.get(&url).send().await {
            Ok(resp) => {
                let status = resp.status();
                if !status.is_success() {
                    failures += 1;
                }
                let paid = resp.extensions().get::<AutoPayOutcome>().map(|paid| format!("paid {paid}"));
                println!("#{n} GET {url} -> {status}: {}", paid.as_deref().unwrap_or("nothing paid"));
                println!("   body: {}", resp.text().await?);
            }
            Err(err) => match AutoPayError::from_middleware(&err) {
                Some(refused) => {
                    failures += 1;
                    println!("#{n} GET {url} -> not paid: {refused}");
                }
                None => return Err(err.into()),
            },
        }
    }
    let left = autopay.remaining(&usdt).map_or_else(|| "no total cap".to_owned(), |r| format!("{} left", usdt0(r)));
    println!(
        "spent {} in total, {} held in session escrows ({left})",
        usdt0(autopay.spent(&usdt)),
        usdt0(autopay.escrowed(&usdt))
    );
    for closed in autopay.close_channels(&pay402::reqwest::Client::new()).await? {
        println!("closed channel {} at {}", closed.channel_id, usdt0(closed.cumulative));
    }
    if failures == 0 { Ok(()) } else { Err(format!("{failures} of {requests} requests were not paid").into()) }
}
