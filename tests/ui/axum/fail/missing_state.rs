//! The router's state does not provide an `X402HttpServer` (both cases are documented in
//! "Debugging type errors").
use axum::Router;
use axum::routing::get;
use pay402::axum::x402;

#[derive(Clone)]
struct AppState;

#[x402(price = "$0.001")]
async fn paid() -> &'static str {
    "paid"
}

/// No state at all: axum infers `S = X402HttpServer` for the handler.
fn no_state() -> Router {
    Router::new().route("/paid", get(paid))
}

/// A state without `X402HttpServer: FromRef<AppState>`.
fn state_without_server() -> Router {
    Router::new().route("/paid", get(paid)).with_state(AppState)
}

fn main() {
    let _ = (no_state, state_without_server);
}
