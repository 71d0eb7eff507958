//! Handlers carrying both `#[x402]` and `#[pay]` (accepting either protocol) on axum, in either
//! order, compiled warning-free.
#![deny(warnings)]

use axum::extract::{FromRef, Path, State};
use axum::routing::get;
use axum::{Json, Router};
use pay402::axum::{Mpp, Paid, X402HttpServer, pay, x402};
use pay402::mpp::{ChargeIntent, EmbeddedSa, EvmMethod};
use pay402::x402::ExactEvmScheme;
use pay402::x402::EmbeddedFacilitator;
use pay402::x402::X402ResourceServer;

#[derive(Clone)]
struct AppState {
    x402: X402HttpServer,
    mpp: Mpp,
    greeting: &'static str,
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

/// `#[x402]` above `#[pay]`, matching on how it was paid.
#[x402(price = "$0.01", description = "A quote")]
#[pay(amount = "0.01")]
async fn quote(Path(symbol): Path<String>, paid: Paid) -> String {
    match paid {
        Paid::X402(payment) => format!("{symbol} paid over x402 by {:?}", payment.payer()),
        Paid::Mpp { credential, receipt } => {
            format!("{symbol} paid over MPP by {:?} ({})", credential.source, receipt.reference)
        }
        Paid::Other { adapter } => format!("{symbol} paid over {adapter}"),
    }
}

/// `#[pay]` above `#[x402]` (by full path), every agreeing key, no `Paid`, a `Result`.
#[pay402::axum::pay(
    amount = "0.25",
    description = "An order",
    recipient = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
    chain_id = 196
)]
#[x402(
    price = "$0.25",
    description = "An order",
    pay_to = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
    network = "eip155:196",
    mime_type = "application/json"
)]
pub(crate) async fn order(State(state): State<AppState>) -> Result<Json<String>, String> {
    Ok(Json(state.greeting.to_owned()))
}

fn main() {
    let facilitator = EmbeddedFacilitator::new();
    let server = X402ResourceServer::new(facilitator).register("eip155:196", ExactEvmScheme::new());
    let method = EvmMethod::x_layer("0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed")
        .with_charge(ChargeIntent::new(EmbeddedSa::new()));
    let mpp = Mpp::new(method, "api.example.com", "secret-at-least-32-bytes-long-hmac-key").unwrap();
    let state = AppState { x402: X402HttpServer::new(server), mpp, greeting: "hi" };
    let _app: Router = Router::new().route("/quote/{symbol}", get(quote)).route("/order", get(order)).with_state(state);
}
