//! Handler shapes `#[x402]` must accept on axum, compiled warning-free.
#![deny(warnings)]

use axum::extract::{FromRef, Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use pay402::axum::{X402HttpServer, X402Payment, x402};
use pay402::x402::X402ResourceServer;
use pay402::x402::{ExactEvmScheme, HttpFacilitatorClient, HttpFacilitatorConfig};
use serde::Deserialize;

#[derive(Clone)]
struct AppState {
    x402: X402HttpServer,
    greeting: &'static str,
}

impl FromRef<AppState> for X402HttpServer {
    fn from_ref(state: &AppState) -> Self {
        state.x402.clone()
    }
}

#[derive(Deserialize)]
struct Page {
    n: u32,
}

#[derive(Deserialize)]
struct Order {
    item: String,
}

#[derive(Debug)]
struct ApiError;

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (http::StatusCode::BAD_REQUEST, "bad").into_response()
    }
}

fn parse(n: u32) -> Result<u32, ApiError> {
    if n > 0 { Ok(n) } else { Err(ApiError) }
}

/// The simplest paid handler.
#[x402(price = "$0.001")]
async fn hello() -> &'static str {
    "hello"
}

/// Extractors before and after the payment, the body last, `?` on a `Result`.
#[x402(price = "0.01", scheme = "aggr_deferred", network = "eip155:196")]
pub(crate) async fn order(
    State(state): State<AppState>,
    Query(page): Query<Page>,
    payment: X402Payment,
    Json(order): Json<Order>,
) -> Result<Json<String>, ApiError> {
    let n = parse(page.n)?;
    Ok(Json(format!("{} {} x{n} for {:?}", state.greeting, order.item, payment.payer())))
}

/// Every key, a path extractor, and `impl IntoResponse`.
#[x402(
    price = "$1.5",
    pay_to = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
    asset = "0x779Ded0c9e1022225f8E0630b35a9b54bE713736",
    description = "One item",
    mime_type = "application/json",
    max_timeout_seconds = 120
)]
pub async fn item(Path(id): Path<u64>) -> impl IntoResponse {
    Json(id)
}

struct Api;

impl Api {
    /// An associated fn; the payment parameter is first here.
    #[x402(price = "$0.002")]
    async fn quote(_payment: X402Payment, Path(symbol): Path<String>) -> String {
        Self::format(&symbol)
    }

    fn format(symbol: &str) -> String {
        format!("quote for {symbol}")
    }
}

fn app(x402: X402HttpServer) -> Router {
    let state = AppState { x402: x402.clone(), greeting: "hi" };
    let with_app_state = Router::new()
        .route("/hello", get(hello))
        .route("/order", post(order))
        .route("/item/{id}", get(item))
        .route("/quote/{symbol}", get(Api::quote))
        .with_state(state);
    // The server itself may be the whole state.
    let server_only = Router::new().route("/hello", get(hello)).with_state(x402);
    with_app_state.nest("/plain", server_only)
}

fn main() {
    let facilitator = HttpFacilitatorClient::new(HttpFacilitatorConfig::new("http://127.0.0.1:4022")).unwrap();
    let server = X402ResourceServer::new(facilitator).register("eip155:196", ExactEvmScheme::new());
    let _app = app(X402HttpServer::new(server));
}
