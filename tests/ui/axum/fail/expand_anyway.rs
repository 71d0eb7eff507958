//! A bad argument gives exactly one error: the handler is still expanded (with a placeholder
//! price), so registering it does not cascade.
use axum::Router;
use axum::routing::get;
use pay402::axum::{X402HttpServer, x402};

#[x402(price = "$0.0000001")]
async fn cheap() -> &'static str {
    "cheap"
}

fn app(x402: X402HttpServer) -> Router {
    Router::new().route("/cheap", get(cheap)).with_state(x402)
}

fn main() {
    let _ = app;
}
