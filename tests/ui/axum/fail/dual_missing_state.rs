//! A handler with `#[x402]` and `#[pay]` needs both the `X402HttpServer` and the `Mpp` from
//! the router's state: each one missing is reported on the handler's registration.
use axum::Router;
use axum::extract::FromRef;
use axum::routing::get;
use pay402::axum::{Paid, X402HttpServer, pay, x402};

/// Provides the x402 server, not the MPP coordinator.
#[derive(Clone)]
struct X402Only {
    x402: X402HttpServer,
}

impl FromRef<X402Only> for X402HttpServer {
    fn from_ref(state: &X402Only) -> Self {
        state.x402.clone()
    }
}

#[x402(price = "$0.001")]
#[pay(amount = "0.001")]
async fn either(paid: Paid) -> String {
    format!("{paid:?}")
}

/// `Mpp: FromRef<X402Only>` is missing.
fn without_mpp(state: X402Only) -> Router {
    Router::new().route("/either", get(either)).with_state(state)
}

/// The server alone as the state: `Mpp: FromRef<X402HttpServer>` is missing.
fn server_only(x402: X402HttpServer) -> Router {
    Router::new().route("/either", get(either)).with_state(x402)
}

/// No state: both are missing.
fn no_state() -> Router {
    Router::new().route("/either", get(either))
}

fn main() {
    let _ = (without_mpp, server_only, no_state);
}
