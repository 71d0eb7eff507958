//! Handler shapes `#[pay]` (MPP) must accept on axum, compiled warning-free.
#![deny(warnings)]

use axum::extract::{FromRef, Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use pay402::axum::{Credential, Mpp, Receipt, pay};
use pay402::mpp::{ChargeIntent, EmbeddedSa, EvmMethod};
use serde::Deserialize;

#[derive(Clone)]
struct AppState {
    mpp: Mpp,
    greeting: &'static str,
}

impl FromRef<AppState> for Mpp {
    fn from_ref(state: &AppState) -> Self {
        state.mpp.clone()
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

/// The simplest paid handler.
#[pay(amount = "0.01")]
async fn hello() -> &'static str {
    "hello"
}

/// Extractors around the credential and the receipt (in any position, one of them by full
/// path), the body last, `?` on a `Result`.
#[pay(amount = "0.00001", description = "One order", expires_in = "90s")]
pub(crate) async fn order(
    receipt: pay402::axum::Receipt,
    State(state): State<AppState>,
    Query(page): Query<Page>,
    credential: Credential,
    Json(order): Json<Order>,
) -> Result<Json<String>, (StatusCode, String)> {
    let n = u8::try_from(page.n).map_err(|e| (StatusCode::BAD_REQUEST, e.to_string()))?;
    Ok(Json(format!("{} {} x{n} for {:?} ({})", state.greeting, order.item, credential.source, receipt.reference)))
}

/// Every key, `intent = "session"` included, and `impl IntoResponse`.
#[pay(
    amount = "0.000001",
    intent = "session",
    currency = "0x779Ded0c9e1022225f8E0630b35a9b54bE713736",
    recipient = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
    description = "Metered",
    expires_in = "5m",
    chain_id = 196,
    unit_type = "request",
    suggested_deposit = "1000000"
)]
pub async fn metered(Path(id): Path<u64>, _receipt: Receipt) -> impl IntoResponse {
    Json(id)
}

struct Api;

impl Api {
    /// An associated fn.
    #[pay(amount = "2")]
    async fn quote(Path(symbol): Path<String>, credential: Credential) -> String {
        Self::format(&symbol, credential.source.as_deref())
    }

    fn format(symbol: &str, payer: Option<&str>) -> String {
        format!("quote for {symbol} paid by {payer:?}")
    }
}

fn app(mpp: Mpp) -> Router {
    let state = AppState { mpp: mpp.clone(), greeting: "hi" };
    let with_app_state = Router::new()
        .route("/hello", get(hello))
        .route("/order", post(order))
        .route("/metered/{id}", get(metered))
        .route("/quote/{symbol}", get(Api::quote))
        .with_state(state);
    // The `Mpp` itself may be the whole state.
    let mpp_only = Router::new().route("/hello", get(hello)).route("/quote/{symbol}", get(Api::quote)).with_state(mpp);
    with_app_state.nest("/plain", mpp_only)
}

fn main() {
    let method = EvmMethod::x_layer("0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed")
        .with_charge(ChargeIntent::new(EmbeddedSa::new()));
    let mpp = Mpp::new(method, "api.example.com", "secret-at-least-32-bytes-long-hmac-key").unwrap();
    let _app = app(mpp);
}
