//! An argument whose type is not an extractor. axum's router state is only known where the
//! handler is registered, so the error lands there, as it would without the attribute (the
//! rewritten signature names the argument's type inside `pay402::axum::Deferred`).
use axum::Router;
use axum::routing::post;
use pay402::axum::{X402HttpServer, x402};

struct NotAnExtractor;

#[x402(price = "$0.001")]
async fn paid(body: NotAnExtractor) -> &'static str {
    let _ = body;
    "paid"
}

fn app(x402: X402HttpServer) -> Router {
    Router::new().route("/paid", post(paid)).with_state(x402)
}

fn main() {
    let _ = app;
}
