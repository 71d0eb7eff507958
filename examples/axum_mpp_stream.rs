//! A token stream metered **per event** over an MPP session (`evm` method, `session` intent):
//! `GET /tokens?n=N` answers N Server-Sent Events, one per generated token, each charged
//! 0.0001 USD₮0 on the buyer's payment channel as it is sent, with the `#[pay]` attribute macro
//! (`per = "event"`).
//!
//! Run with `cargo run --example axum_mpp_stream`.
//! Follows the README's example convention (`PAY402_ADDR`; `pay402::setup`: development
//! mode unless `PAY402_ENV=production`).
//! The payee (in development a publicly known test key, which also receives the x402
//! examples' payments) signs settle/close authorizations.
//!
//! A buyer: `GET /tokens` → 402 with a `session` challenge whose request has `unitType:
//! "event"` → open a channel (HTTP 200 JSON, the handler is not run) → `GET /tokens` with a
//! voucher and `Accept: text/event-stream` → `200 text/event-stream`: `id: 1`, `id: 2`, … data
//! events while the vouchers cover them, `event: 402-need-voucher` when they run out (answer it
//! with a voucher for `requiredCumulative` sent to the same URL), and a final `event:
//! payment-receipt`. See `docs/guides/streams.md`.

use axum::extract::Query;
use axum::http::StatusCode;
use pay402::axum::{EventStream, PaidStream, SseEvent, pay};
use pay402::setup::Setup;

/// The words the "model" generates, in turn.
const WORDS: &[&str] = &["pay", "per", "token", "over", "one", "payment", "channel", "with", "off-chain", "vouchers"];
/// Tokens streamed when the request names no `n`.
const DEFAULT_TOKENS: usize = 200;
/// The most tokens one request may ask for.
const MAX_TOKENS: usize = 10_000;

#[derive(serde::Deserialize)]
struct Tokens {
    n: Option<usize>,
}

/// `n` tokens (default 200, at most 10 000), one SSE data event `{"token": "…"}` each, for
/// 0.0001 USD₮0 per event. A request asking for too many is refused before anything is charged.
#[pay(intent = "session", amount = "0.0001", per = "event", description = "One generated token")]
async fn tokens(stream: PaidStream, Query(q): Query<Tokens>) -> Result<EventStream, (StatusCode, String)> {
    let n = q.n.unwrap_or(DEFAULT_TOKENS);
    if n > MAX_TOKENS {
        return Err((StatusCode::BAD_REQUEST, format!("n is at most {MAX_TOKENS}")));
    }
    // The whole stream from its first token: on a resume (`Last-Event-ID`) the runtime skips
    // the tokens the buyer already has.
    let events =
        WORDS.iter().cycle().take(n).map(|word| SseEvent::data(serde_json::json!({ "token": word }).to_string()));
    Ok(stream.sse(futures::stream::iter(events)))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Logs (RUST_LOG=pay402=debug for more): pay402 reports misconfiguration here.
    tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).init();
    let app = axum::Router::new().route("/tokens", axum::routing::get(tokens)).with_state(Setup::from_env()?.mpp()?);
    let listener = tokio::net::TcpListener::bind(pay402::setup::listen_addr()).await?;
    println!("listening on http://{}/tokens", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
