//! A paid axum API charging per call over MPP (`Payment` auth scheme, `evm` method, `charge`
//! intent), with the `#[pay]` attribute macro.
//!
//! Run with `cargo run --example axum_mpp_charge`; pay it with `cargo run --example mpp_client`.
//! Follows the README's example convention (`PAY402_ADDR`, `PAY402_PAY_TO`, `MPP_SECRET_KEY`,
//! `MPP_REALM`, OKX credentials).

mod support;

use pay402::axum::{Credential, Receipt, pay};

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
    let app = axum::Router::new().route("/premium", axum::routing::get(premium)).with_state(support::mpp()?);
    let listener = tokio::net::TcpListener::bind(support::addr()).await?;
    support::announce(listener.local_addr()?, "/premium");
    axum::serve(listener, app).await?;
    Ok(())
}
