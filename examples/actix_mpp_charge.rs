//! A paid actix-web API charging per call over MPP (`charge` intent).
//!
//! Run with `cargo run --example actix_mpp_charge`; pay it with `cargo run --example mpp_client`.
//! Follows the README's example convention.

mod support;

use actix_web::{App, HttpServer, web};
use pay402::actix::{Credential, MppMiddleware, Receipt};
use pay402::mpp::PaySpec;

#[actix_web::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mpp = support::mpp()?.route("GET /premium", PaySpec::charge("0.00001").description("One premium API call"))?;
    let listener = std::net::TcpListener::bind(support::addr())?;
    let local = listener.local_addr()?;
    let http = HttpServer::new(move || {
        App::new().wrap(MppMiddleware::new(mpp.clone())).route(
            "/premium",
            web::get().to(|credential: Credential, receipt: Receipt| async move {
                web::Json(serde_json::json!({
                    "data": "premium content",
                    "receipt": { "reference": receipt.reference, "status": receipt.status },
                    "payer": credential.source,
                }))
            }),
        )
    })
    .workers(2)
    .listen(listener)?;
    support::announce(local, "/premium");
    http.run().await?;
    Ok(())
}
