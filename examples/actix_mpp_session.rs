//! A metered actix-web API paid over an MPP **session** (`evm` method, `session` intent): the
//! buyer opens a payment channel with a deposit once, then pays each request with an off-chain
//! voucher, through the route-table `MppMiddleware`.
//!
//! Run with `cargo run --example actix_mpp_session`.
//! Follows the README's example convention (`PAY402_ADDR`; `pay402::setup`: development
//! mode unless `PAY402_ENV=production`).
//! The payee (in development a publicly known test key, which also receives the x402
//! examples' payments) signs settle/close authorizations.
//!
//! Management actions (open, top-up, close) are answered with HTTP 200 JSON by the middleware;
//! the handler runs only for vouchers.

use actix_web::{App, HttpServer, web};
use pay402::actix::{Credential, MppMiddleware, Receipt};
use pay402::mpp::PaySpec;
use pay402::setup::Setup;

#[actix_web::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Logs (RUST_LOG=pay402=debug for more): pay402 reports misconfiguration here.
    tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).init();
    let spec = PaySpec {
        amount: "0.001".into(),
        intent: "session".into(),
        description: Some("One chunk of the metered stream".into()),
        ..PaySpec::default()
    };
    let mpp = Setup::from_env()?.mpp()?.route("GET /stream", spec)?;
    let listener = std::net::TcpListener::bind(pay402::setup::listen_addr())?;
    let local = listener.local_addr()?;
    let http = HttpServer::new(move || {
        App::new().wrap(MppMiddleware::new(mpp.clone())).route(
            "/stream",
            web::get().to(|credential: Credential, receipt: Receipt| async move {
                let extra = receipt.extra.unwrap_or_default();
                web::Json(serde_json::json!({
                    "data": "stream chunk",
                    "channelId": receipt.reference,
                    "cumulativeAmount": extra.get("cumulativeAmount"),
                    "depositAvailable": extra.get("depositAvailable"),
                    "payer": credential.source,
                }))
            }),
        )
    })
    .workers(2)
    .listen(listener)?;
    println!("listening on http://{local}/stream");
    http.run().await?;
    Ok(())
}
