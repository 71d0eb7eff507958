//! A paid actix-web API offering both protocols on one route: x402 (`exact`, EIP-3009) and MPP
//! (`Payment` auth scheme, `evm` method, `charge` intent), with `#[x402]` and `#[pay]` stacked
//! on the handler. An unpaid request gets one 402 carrying both challenges; the client pays with
//! whichever protocol it speaks.
//!
//! Run with `cargo run --example actix_dual`; pay it with `cargo run --example x402_client` or
//! `cargo run --example mpp_client`. Follows the README's example convention (`PAY402_ADDR`; `pay402::setup`: development
//! mode unless `PAY402_ENV=production`).

use actix_web::{App, HttpServer, Responder, get, web};
use pay402::actix::{Paid, pay, x402};
use pay402::setup::Setup;

/// A stock quote for $0.001 over x402, or 0.001 USD₮0 over MPP.
#[get("/quote")]
#[x402(price = "$0.001", description = "A stock quote", mime_type = "application/json")]
#[pay(amount = "0.001", description = "A stock quote")]
async fn quote(paid: Paid) -> impl Responder {
    let (protocol, payer) = match &paid {
        Paid::X402(payment) => ("x402", payment.payer().map(str::to_owned)),
        Paid::Mpp { credential, .. } => ("mpp", credential.source.clone()),
        Paid::Other { adapter } => (adapter.as_str(), None),
    };
    web::Json(serde_json::json!({ "symbol": "OKB", "price": "48.20", "paid_with": protocol, "paid_by": payer }))
}

#[actix_web::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Logs (RUST_LOG=pay402=debug for more): pay402 reports misconfiguration here.
    tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).init();
    let setup = Setup::from_env()?;
    let x402 = setup.x402().await?;
    let x402 = web::Data::new(x402);
    let mpp = web::Data::new(setup.mpp()?);
    let listener = std::net::TcpListener::bind(pay402::setup::listen_addr())?;
    let local = listener.local_addr()?;
    let http = HttpServer::new(move || App::new().app_data(x402.clone()).app_data(mpp.clone()).service(quote))
        .workers(2)
        .listen(listener)?;
    println!("listening on http://{local}/quote");
    http.run().await?;
    Ok(())
}
