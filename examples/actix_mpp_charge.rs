//! A paid actix-web API charging per call over MPP (`charge` intent), with `#[get]` and the
//! `#[pay]` attribute macro.
//!
//! Run with `cargo run --example actix_mpp_charge`; pay it with `cargo run --example mpp_client`.
//! Follows the README's example convention.

use actix_web::{App, HttpServer, Responder, get, web};
use pay402::actix::{Credential, Receipt, pay};
use pay402::setup::Setup;

/// One premium API call for 0.00001 USD₮0.
#[get("/premium")]
#[pay(amount = "0.00001", description = "One premium API call")]
async fn premium(credential: Credential, receipt: Receipt) -> impl Responder {
    web::Json(serde_json::json!({
        "data": "premium content",
        "receipt": { "reference": receipt.reference, "status": receipt.status },
        "payer": credential.source,
    }))
}

#[actix_web::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Logs (RUST_LOG=pay402=debug for more): pay402 reports misconfiguration here.
    tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).init();
    let mpp = web::Data::new(Setup::from_env()?.mpp()?);
    let listener = std::net::TcpListener::bind(pay402::setup::listen_addr())?;
    let local = listener.local_addr()?;
    let http =
        HttpServer::new(move || App::new().app_data(mpp.clone()).service(premium)).workers(2).listen(listener)?;
    println!("listening on http://{local}/premium");
    http.run().await?;
    Ok(())
}
