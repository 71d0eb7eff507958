//! Router states a paid axum handler accepts, and the shapes it is registered in: the router
//! built in `main`-like code and served, built in functions, nested and merged, `on(..)`,
//! `MethodRouter` chaining and states, one handler under two states, a generic handler.
#![deny(warnings)]

use axum::extract::{FromRef, State};
use axum::routing::{MethodFilter, MethodRouter, get, on, post};
use axum::Router;
use pay402::axum::{Mpp, Paid, X402HttpServer, pay, x402};
use pay402::mpp::{ChargeIntent, EmbeddedSa, EvmMethod};
use pay402::x402::X402ResourceServer;
use pay402::x402::{ExactEvmScheme, HttpFacilitatorClient, HttpFacilitatorConfig};

#[derive(Clone)]
struct AppState {
    x402: X402HttpServer,
    mpp: Mpp,
    name: &'static str,
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

#[x402(price = "$0.001")]
async fn paid() -> &'static str {
    "paid"
}

#[pay(amount = "0.001")]
async fn charged(State(state): State<AppState>) -> &'static str {
    state.name
}

#[x402(price = "$0.001")]
#[pay(amount = "0.001")]
async fn either(paid: Paid) -> String {
    format!("{paid:?}")
}

trait Greeting {
    fn text() -> &'static str;
}

struct Hello;

impl Greeting for Hello {
    fn text() -> &'static str {
        "hello"
    }
}

/// A handler with generics of its own, registered with a turbofish.
#[x402(price = "$0.001")]
async fn generic<G: Greeting>() -> &'static str {
    G::text()
}

/// Routes for the app state, nested below.
fn api() -> Router<AppState> {
    Router::new()
        .route("/paid", get(paid).post(paid))
        .route("/charged", on(MethodFilter::GET, charged))
        .route("/either", get(either))
        .route("/generic", get(generic::<Hello>))
}

fn app(state: AppState) -> Router {
    let x402 = state.x402.clone();
    // The same handler under the server alone as the state.
    let server_only: Router = Router::new().route("/paid", get(paid)).with_state(x402.clone());
    let method_router: MethodRouter = get(paid).with_state(x402);
    Router::new()
        .nest("/api", api())
        .route("/post", post(paid))
        .with_state(state)
        .merge(server_only)
        .route("/mr", method_router)
}

/// The router built inline and served.
#[allow(dead_code)]
async fn serve(state: AppState) -> std::io::Result<()> {
    let app = Router::new().route("/paid", get(paid)).route("/either", get(either)).with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    axum::serve(listener, app).await
}

fn main() {
    let facilitator = HttpFacilitatorClient::new(HttpFacilitatorConfig::new("http://127.0.0.1:4022")).unwrap();
    let server = X402ResourceServer::new(facilitator).register("eip155:196", ExactEvmScheme::new());
    let x402 = X402HttpServer::new(server);
    let method = EvmMethod::x_layer("0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed")
        .with_charge(ChargeIntent::new(EmbeddedSa::new()));
    let mpp = Mpp::new(method, "api.example.com", "secret-at-least-32-bytes-long-hmac-key").unwrap();
    let _app = app(AppState { x402, mpp, name: "app" });
}
