//! A paid axum API offering both protocols on one route: x402 (`exact`, EIP-3009) and MPP
//! (`Payment` auth scheme, `evm` method, `charge` intent), with `#[x402]` and `#[pay]` stacked
//! on the handler. An unpaid request gets one 402 carrying both challenges; the client pays with
//! whichever protocol it speaks.
//!
//! Run with `cargo run --example axum_dual`; pay it with `cargo run --example x402_client` or
//! `cargo run --example mpp_client`. Follows the README's example convention (`PAY402_ADDR`; `pay402::setup`: development
//! mode unless `PAY402_ENV=production`).

use axum::extract::FromRef;
use pay402::axum::{Mpp, Paid, X402HttpServer, pay, x402};
use pay402::setup::Setup;

/// The state: both protocols' servers.
#[derive(Clone)]
struct AppState {
    x402: X402HttpServer,
    mpp: Mpp,
}

impl FromRef<AppState> for X402HttpServer {
    fn from_ref(state: &AppState) -> Self {
        state.x402.clone()
    }
}

impl FromRef<AppState> for Mpp {
    fn from_ref(state: &AppState) -> Self {
        state.mpp.clone()
    }
}

/// A stock quote for $0.001 over x402, or 0.001 USD₮0 over MPP.
#[x402(price = "$0.001", description = "A stock quote", mime_type = "application/json")]
#[pay(amount = "0.001", description = "A stock quote")]
async fn quote(paid: Paid) -> axum::Json<serde_json::Value> {
    let (protocol, payer) = match &paid {
        Paid::X402(payment) => ("x402", payment.payer().map(str::to_owned)),
        Paid::Mpp { credential, .. } => ("mpp", credential.source.clone()),
        Paid::Other { adapter } => (adapter.as_str(), None),
    };
    axum::Json(serde_json::json!({ "symbol": "OKB", "price": "48.20", "paid_with": protocol, "paid_by": payer }))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Logs (RUST_LOG=pay402=debug for more): pay402 reports misconfiguration here.
    tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).init();
    let setup = Setup::from_env()?;
    let x402 = setup.x402().await?;
    let state = AppState { x402, mpp: setup.mpp()? };
    let app = axum::Router::new().route("/quote", axum::routing::get(quote)).with_state(state);
    let listener = tokio::net::TcpListener::bind(pay402::setup::listen_addr()).await?;
    println!("listening on http://{}/quote", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
