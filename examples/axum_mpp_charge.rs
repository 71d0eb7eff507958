//! A paid axum API charging per call over MPP (`Payment` auth scheme, `evm` method, `charge`
//! intent), with the `#[pay]` attribute macro.
//!
//! Run with `cargo run --example axum_mpp_charge`; pay it with `cargo run --example mpp_client`.
//! Follows the README's example convention (`PAY402_ADDR`; `pay402::setup`: development
//! mode unless `PAY402_ENV=production`).

use pay402::axum::{Credential, Receipt, pay};
use pay402::setup::Setup;

/// One premium API call for 0.00001 USD₮0.
#[pay(amount = "0.00001", description = "One premium API call")]
async fn premium(credential: Credential, receipt: Receipt) -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({
        "data": "premium content",
        "receipt": { "reference": receipt.reference, "status": receipt.status },
        "payer": credential.source,
    }))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Logs (RUST_LOG=pay402=debug for more): pay402 reports misconfiguration here.
    tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).init();
    let app = axum::Router::new().route("/premium", axum::routing::get(premium)).with_state(Setup::from_env()?.mpp()?);
    let listener = tokio::net::TcpListener::bind(pay402::setup::listen_addr()).await?;
    println!("listening on http://{}/premium", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
