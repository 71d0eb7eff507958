//! A metered axum API paid over an MPP **session** (`evm` method, `session` intent): the buyer
//! opens a payment channel with a deposit once, then pays each request with an off-chain
//! voucher (a signed cumulative amount), with the `#[pay]` attribute macro.
//!
//! Run with `cargo run --example axum_mpp_session`.
//! Follows the README's example convention (`PAY402_ADDR`; `pay402::setup`: development
//! mode unless `PAY402_ENV=production`).
//! The payee (in development a publicly known test key, which also receives the x402
//! examples' payments) signs settle/close authorizations.
//!
//! A buyer (`pay402::mpp::SessionClient`): `GET /stream` → 402 with a `session` challenge →
//! `open_header` (HTTP 200 JSON, the handler is not run) → one `next_voucher` per request (200
//! with a `Payment-Receipt` whose `extra` shows what the deposit still covers) → `close_header`.

use pay402::axum::{Credential, Receipt, pay};
use pay402::setup::Setup;

/// One chunk of the metered stream for 0.001 USD₮0, paid by a voucher.
#[pay(amount = "0.001", intent = "session", description = "One chunk of the metered stream")]
async fn stream(credential: Credential, receipt: Receipt) -> axum::Json<serde_json::Value> {
    let extra = receipt.extra.unwrap_or_default();
    axum::Json(serde_json::json!({
        "data": "stream chunk",
        "channelId": receipt.reference,
        "cumulativeAmount": extra.get("cumulativeAmount"),
        "depositAvailable": extra.get("depositAvailable"),
        "payer": credential.source,
    }))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Logs (RUST_LOG=pay402=debug for more): pay402 reports misconfiguration here.
    tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).init();
    let app = axum::Router::new().route("/stream", axum::routing::get(stream)).with_state(Setup::from_env()?.mpp()?);
    let listener = tokio::net::TcpListener::bind(pay402::setup::listen_addr()).await?;
    println!("listening on http://{}/stream", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
