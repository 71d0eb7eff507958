//! The router's state does not provide an `X402HttpServer`: reported on the handler's
//! registration, naming the state, the server and the missing `FromRef` (documented in
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

/// No state at all: the router's state is `()`.
fn no_state() -> Router {
    Router::new().route("/paid", get(paid))
}

/// A state without `X402HttpServer: FromRef<AppState>`.
fn state_without_server() -> Router {
    Router::new().route("/paid", get(paid)).with_state(AppState)
}

/// The router built inline and served, as in a `main`.
async fn serve() {
    let app = Router::new().route("/paid", get(paid));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await.unwrap();
    axum::serve(listener, app).await.unwrap();
}

/// A handler with generics of its own is not tied to the router state (its generics stay as
/// written): the same mistake is axum's `Handler` bound, on the same line.
#[x402(price = "$0.001")]
async fn generic<T: Send + 'static>() -> &'static str {
    std::any::type_name::<T>()
}

fn generic_without_server() -> Router {
    Router::new().route("/generic", get(generic::<u8>)).with_state(AppState)
}

fn main() {
    let _ = (no_state, state_without_server, serve, generic_without_server);
}
