//! A paid axum API charging per call over MPP (`Payment` auth scheme, `evm` method, `charge`
//! intent).
//!
//! Run with `cargo run --example axum_mpp_charge`; pay it with `cargo run --example mpp_client`.
//! Follows the README's example convention (`PAY402_ADDR`, `PAY402_PAY_TO`, `MPP_SECRET_KEY`,
//! `MPP_REALM`, OKX credentials).

mod support;

use pay402::axum::{Credential, MppLayer, Receipt};
use pay402::mpp::PaySpec;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mpp = support::mpp()?.route("GET /premium", PaySpec::charge("0.00001").description("One premium API call"))?;
    let app = axum::Router::new()
        .route(
            "/premium",
            axum::routing::get(|credential: Credential, receipt: Receipt| async move {
                axum::Json(serde_json::json!({
                    "data": "premium content",
                    "receipt": { "reference": receipt.reference, "status": receipt.status },
                    "payer": credential.source,
                }))
            }),
        )
        .layer(MppLayer::new(mpp));
    let listener = tokio::net::TcpListener::bind(support::addr()).await?;
    support::announce(listener.local_addr()?, "/premium");
    axum::serve(listener, app).await?;
    Ok(())
}
