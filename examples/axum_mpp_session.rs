//! A metered axum API paid over an MPP **session** (`evm` method, `session` intent): the buyer
//! opens a payment channel with a deposit once, then pays each request with an off-chain
//! voucher (a signed cumulative amount), with the `#[pay]` attribute macro.
//!
//! Run with `cargo run --example axum_mpp_session`. Follows the README's example convention
//! (`PAY402_ADDR`, `PAY402_PAY_TO`, `MPP_SECRET_KEY`, `MPP_REALM`, OKX's Settlement Agent when
//! `OKX_API_KEY`, `OKX_SECRET_KEY`, `OKX_PASSPHRASE` are set, else the embedded development
//! one). The payee signs settle/close authorizations with `PAY402_PAYEE_KEY` (default: a demo
//! key, whose address is then the default payee).
//!
//! A buyer (`pay402::mpp::SessionClient`): `GET /stream` → 402 with a `session` challenge →
//! `open_header` (HTTP 200 JSON, the handler is not run) → one `next_voucher` per request (200
//! with a `Payment-Receipt` whose `extra` shows the remaining balance) → `close_header`.

mod support;

use pay402::axum::{Credential, Receipt, pay};

/// One chunk of the metered stream for 0.001 USD₮0, paid by a voucher.
#[pay(amount = "0.001", intent = "session", description = "One chunk of the metered stream")]
async fn stream(credential: Credential, receipt: Receipt) -> axum::Json<serde_json::Value> {
    let extra = receipt.extra.unwrap_or_default();
    axum::Json(serde_json::json!({
        "data": "stream chunk",
        "channelId": receipt.reference,
        "cumulativeAmount": extra.get("cumulativeAmount"),
        "remainingBalance": extra.get("remainingBalance"),
        "payer": credential.source,
    }))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let app = axum::Router::new().route("/stream", axum::routing::get(stream)).with_state(support::session_mpp()?);
    let listener = tokio::net::TcpListener::bind(support::addr()).await?;
    support::announce(listener.local_addr()?, "/stream");
    axum::serve(listener, app).await?;
    Ok(())
}
