//! The router's state does not provide an `Mpp` (both cases are documented in "Debugging type
//! errors").
use axum::Router;
use axum::routing::get;
use pay402::axum::pay;

#[derive(Clone)]
struct AppState;

#[pay(amount = "0.01")]
async fn paid() -> &'static str {
    "paid"
}

/// No state at all: axum infers `S = Mpp` for the handler.
fn no_state() -> Router {
    Router::new().route("/paid", get(paid))
}

/// A state without `Mpp: FromRef<AppState>`.
fn state_without_mpp() -> Router {
    Router::new().route("/paid", get(paid)).with_state(AppState)
}

fn main() {
    let _ = (no_state, state_without_mpp);
}
