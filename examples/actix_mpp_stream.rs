//! A token stream metered **per event** over an MPP session (`evm` method, `session` intent) on
//! actix-web, through the route-table `MppMiddleware`: `GET /tokens?n=N` answers N Server-Sent
//! Events, one per generated token, each charged 0.0001 USD₮0 on the buyer's payment channel as
//! it is sent. The route is `PaySpec::session("0.0001").per_event()`; the handler extracts its
//! `PaidStream`.
//!
//! Run with `cargo run --example actix_mpp_stream`.
//! Follows the README's example convention (`PAY402_ADDR`; `pay402::setup`: development
//! mode unless `PAY402_ENV=production`).
//! The payee (in development a publicly known test key, which also receives the x402
//! examples' payments) signs settle/close authorizations.
//!
//! The middleware answers the channel's management actions (open, top-up, close) and the
//! stream's companion vouchers with HTTP 200 JSON; the handler runs once per stream (and once
//! per `Last-Event-ID` resume). See `docs/guides/streams.md` for the wire.

use actix_web::{App, HttpServer, web};
use pay402::actix::{EventStream, MppMiddleware, PaidStream, SseEvent};
use pay402::mpp::PaySpec;
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

/// `n` tokens (default 200, at most 10 000), one SSE data event `{"token": "…"}` each. A request
/// asking for too many is refused before anything is charged.
async fn tokens(stream: PaidStream, q: web::Query<Tokens>) -> actix_web::Result<EventStream> {
    let n = q.n.unwrap_or(DEFAULT_TOKENS);
    if n > MAX_TOKENS {
        return Err(actix_web::error::ErrorBadRequest(format!("n is at most {MAX_TOKENS}")));
    }
    // The whole stream from its first token: on a resume (`Last-Event-ID`) the runtime skips
    // the tokens the buyer already has.
    let events =
        WORDS.iter().cycle().take(n).map(|word| SseEvent::data(serde_json::json!({ "token": word }).to_string()));
    Ok(stream.sse(futures::stream::iter(events)))
}

#[actix_web::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Logs (RUST_LOG=pay402=debug for more): pay402 reports misconfiguration here.
    tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).init();
    let spec = PaySpec::session("0.0001").per_event().description("One generated token");
    let mpp = Setup::from_env()?.mpp()?.route("GET /tokens", spec)?;
    let listener = std::net::TcpListener::bind(pay402::setup::listen_addr())?;
    let local = listener.local_addr()?;
    let http = HttpServer::new(move || {
        App::new().wrap(MppMiddleware::new(mpp.clone())).route("/tokens", web::get().to(tokens))
    })
    .workers(2)
    .listen(listener)?;
    println!("listening on http://{local}/tokens");
    http.run().await?;
    Ok(())
}
