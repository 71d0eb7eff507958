//! A metered actix-web API paid over an MPP **session** (`evm` method, `session` intent): the
//! buyer opens a payment channel with a deposit once, then pays each request with an off-chain
//! voucher, through the route-table `MppMiddleware`.
//!
//! Run with `cargo run --example actix_mpp_session`. Follows the README's example convention
//! (`PAY402_ADDR`, `PAY402_PAY_TO`, `MPP_SECRET_KEY`, `MPP_REALM`, OKX's Settlement Agent when
//! `OKX_API_KEY`, `OKX_SECRET_KEY`, `OKX_PASSPHRASE` are set, else the embedded development
//! one). The payee signs settle/close authorizations with `PAY402_PAYEE_KEY` (default: a demo
//! key, whose address is then the default payee).
//!
//! Management actions (open, top-up, close) are answered with HTTP 200 JSON by the middleware;
//! the handler runs only for vouchers.

mod support;

use actix_web::{App, HttpServer, web};
use pay402::actix::{Credential, MppMiddleware, Receipt};
use pay402::mpp::PaySpec;

#[actix_web::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let spec = PaySpec {
        amount: "0.001".into(),
        intent: "session".into(),
        description: Some("One chunk of the metered stream".into()),
        ..PaySpec::default()
    };
    let mpp = support::session_mpp()?.route("GET /stream", spec)?;
    let listener = std::net::TcpListener::bind(support::addr())?;
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
                    "remainingBalance": extra.get("remainingBalance"),
                    "payer": credential.source,
                }))
            }),
        )
    })
    .workers(2)
    .listen(listener)?;
    support::announce(local, "/stream");
    http.run().await?;
    Ok(())
}
