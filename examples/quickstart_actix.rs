//! A paid actix-web API: one `#[pay]` (MPP charge) route, development mode unless `PAY402_ENV=production`.

use actix_web::{App, HttpServer, Responder, get, web};
use pay402::actix::{Receipt, pay};
use pay402::setup::Setup;

/// One quote for 0.001 USD₮0, charged through MPP before the handler runs.
#[get("/quote")]
#[pay(amount = "0.001", description = "A stock quote")]
async fn quote(receipt: Receipt) -> impl Responder {
    format!("OKB 48.20 (paid, reference {})", receipt.reference)
}

#[actix_web::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Logs (RUST_LOG=pay402=debug for more): pay402 reports misconfiguration here.
    tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).init();

    // Development unless PAY402_ENV=production: embedded Settlement Agent, play money, no setup.
    let setup = Setup::from_env()?;
    let mpp = web::Data::new(setup.mpp()?); // the app data `#[pay]` handlers need

    let server =
        HttpServer::new(move || App::new().app_data(mpp.clone()).service(quote)).bind(pay402::setup::listen_addr())?;
    println!("listening on http://{}/quote", server.addrs()[0]);
    server.run().await?;
    Ok(())
}
