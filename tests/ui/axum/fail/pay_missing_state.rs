//! The router's state does not provide an `Mpp`: reported on the handler's
//! registration, naming the state, the `Mpp` and the missing `FromRef` (documented in
//! "Debugging type errors").
use axum::Router;
use axum::routing::get;
use pay402::axum::pay;

#[derive(Clone)]
struct AppState;

#[pay(amount = "0.001")]
async fn paid() -> &'static str {
    "paid"
}

/// No state at all: the router's state is `()`.
fn no_state() -> Router {
    Router::new().route("/paid", get(paid))
}

/// A state without `Mpp: FromRef<AppState>`.
fn state_without_mpp() -> Router {
    Router::new().route("/paid", get(paid)).with_state(AppState)
}

/// The router built inline and served, as in a `main`.
async fn serve() {
    let app = Router::new().route("/paid", get(paid));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await.unwrap();
    axum::serve(listener, app).await.unwrap();
}

fn main() {
    let _ = (no_state, state_without_mpp, serve);
}
