//! Pays any pay402 route automatically — x402, MPP charge or MPP session — with the
//! auto-paying `reqwest` middleware, within spending caps, and prints what each request paid.
//!
//! Run an example server (`cargo run --example axum_dual`, `axum_x402`, `axum_mpp_charge`,
//! `axum_mpp_session` …), then `cargo run --example autopay_client -- <url>`. The URL is the
//! first argument, else `PAY402_URL`, else `http://127.0.0.1:4021/quote`. Settings (all
//! optional):
//!
//! * `PAY402_BUYER_KEY` — the buyer's key (default: a well-known test key; the example servers'
//!   embedded backends fund unknown accounts, so any key works against them);
//! * `PAY402_PREFER` — protocols in order of preference, comma-separated, from `x402`,
//!   `mpp-charge`, `mpp-session` (default: all three, in that order);
//! * `PAY402_MAX_PER_REQUEST` / `PAY402_MAX_TOTAL` — caps in USD₮0 on X Layer (default `0.01`
//!   and `0.1`; session deposits count against the total);
//! * `PAY402_MAX_DEPOSIT` — the most one MPP session deposit may be, in USD₮0 (default `0.01`;
//!   deposits go only to OKX's escrow on X Layer);
//! * `PAY402_REQUESTS` — how many requests to send (default 3: a session route opens its
//!   channel once, then pays with vouchers).

mod support;

use pay402::autopay::{AssetId, AutoPay, AutoPayError, AutoPayOutcome, PaymentDetail, Protocol};
use pay402::evm::U256;

/// USD₮0 has 6 decimals.
const DECIMALS: usize = 6;

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty()).unwrap_or_else(|| default.to_owned())
}

/// `1500` → `0.0015` (exact, no floats).
fn usdt0(atomic: U256) -> String {
    let digits = format!("{atomic:0>width$}", width = DECIMALS + 1);
    let (int, frac) = digits.split_at(digits.len() - DECIMALS);
    let frac = frac.trim_end_matches('0');
    if frac.is_empty() { int.to_owned() } else { format!("{int}.{frac}") }
}

fn describe(paid: &AutoPayOutcome) -> String {
    let head = format!("paid {} USD₮0 ({} atomic units) with {}", usdt0(paid.amount), paid.amount, paid.protocol);
    match &paid.detail {
        PaymentDetail::X402 { settlement: Some(s), .. } => {
            format!("{head}; PAYMENT-RESPONSE: success={} transaction={}", s.success, s.transaction)
        }
        PaymentDetail::MppCharge { receipt: Some(r), .. } => {
            format!("{head}; Payment-Receipt: {} reference={}", r.status, r.reference)
        }
        PaymentDetail::MppSession { channel_id, cumulative, deposit, opened, topped_up, .. } => format!(
            "{head}; channel {channel_id}{}{}: voucher for {} of a {} deposit",
            if *opened { " (opened)" } else { "" },
            if *topped_up { " (topped up)" } else { "" },
            usdt0(*cumulative),
            usdt0(*deposit)
        ),
        _ => head,
    }
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
    let autopay = AutoPay::new(support::buyer().map_err(|e| e.to_string())?)
        .prefer(prefer)
        .max_per_request(usdt.clone(), env_or("PAY402_MAX_PER_REQUEST", "0.01").parse()?)
        .max_total(usdt.clone(), env_or("PAY402_MAX_TOTAL", "0.1").parse()?)
        .max_deposit(usdt.clone(), env_or("PAY402_MAX_DEPOSIT", "0.01").parse()?)
        .build()?;
    let http = autopay.client(reqwest::Client::builder())?;

    let mut failures = 0;
    for n in 1..=requests {
        match http.get(&url).send().await {
            Ok(resp) => {
                let status = resp.status();
                if !status.is_success() {
                    failures += 1;
                }
                let paid = resp.extensions().get::<AutoPayOutcome>().map(describe);
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
    let left =
        autopay.remaining(&usdt).map_or_else(|| "no total cap".to_owned(), |r| format!("{} USD₮0 left", usdt0(r)));
    println!(
        "spent {} USD₮0 in total, {} USD₮0 held in session escrows ({left})",
        usdt0(autopay.spent(&usdt)),
        usdt0(autopay.escrowed(&usdt))
    );
    for closed in autopay.close_channels(&reqwest::Client::new()).await? {
        println!("closed channel {} at {} USD₮0", closed.channel_id, usdt0(closed.cumulative));
    }
    if failures == 0 { Ok(()) } else { Err(format!("{failures} of {requests} requests were not paid").into()) }
}
