//! `#[x402]` and `#[pay]` expansions are lint-clean in user crates: this file uses the macros on
//! a few handlers for both frameworks under `#![deny(warnings, clippy::pedantic, unused_qualifications)]`
//! (checked by `cargo clippy --all-targets`), and builds the router and the app without serving.
#![deny(warnings, clippy::pedantic, unused_qualifications)]

use pay402::x402::X402ResourceServer;
use pay402::x402::{ExactEvmScheme, HttpFacilitatorClient, HttpFacilitatorConfig};

fn server() -> pay402::axum::X402HttpServer {
    let facilitator = HttpFacilitatorClient::new(HttpFacilitatorConfig::new("http://127.0.0.1:4022"))
        .expect("a facilitator client for a loopback URL");
    let resource = X402ResourceServer::new(facilitator).register("eip155:196", ExactEvmScheme::new());
    pay402::axum::X402HttpServer::new(resource).pay_to("0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed")
}

mod axum_app {
    use axum::Json;
    use axum::extract::{FromRef, Path, Query, State};
    use axum::http::StatusCode;
    use axum::response::IntoResponse;
    use axum::routing::{get, post};
    use pay402::axum::{X402HttpServer, X402Payment, x402};
    use serde::Deserialize;

    #[derive(Clone)]
    pub(crate) struct AppState {
        pub(crate) x402: X402HttpServer,
        pub(crate) name: String,
    }

    impl FromRef<AppState> for X402HttpServer {
        fn from_ref(state: &AppState) -> Self {
            state.x402.clone()
        }
    }

    #[derive(Deserialize)]
    pub(crate) struct Page {
        n: u32,
    }

    /// A plain paid handler.
    #[x402(price = "$0.001")]
    pub(crate) async fn hello() -> &'static str {
        "hello"
    }

    /// State, a query, the payment and a JSON body; `?` with a `Result`.
    #[x402(price = "0.01", description = "Echo", mime_type = "application/json", max_timeout_seconds = 60)]
    pub(crate) async fn echo(
        State(state): State<AppState>,
        Query(page): Query<Page>,
        payment: X402Payment,
        Json(body): Json<serde_json::Value>,
    ) -> Result<Json<serde_json::Value>, (StatusCode, String)> {
        let n = u8::try_from(page.n).map_err(|e| (StatusCode::BAD_REQUEST, e.to_string()))?;
        Ok(Json(serde_json::json!({ "name": state.name, "n": n, "payer": payment.payer(), "body": body })))
    }

    pub(crate) struct Api;

    impl Api {
        /// An associated fn returning `impl IntoResponse`.
        #[x402(price = "$0.002", pay_to = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed")]
        pub(crate) async fn item(Path(id): Path<u64>) -> impl IntoResponse {
            Json(id)
        }
    }

    pub(crate) fn router(x402: X402HttpServer) -> axum::Router {
        axum::Router::new()
            .route("/hello", get(hello))
            .route("/echo", post(echo))
            .route("/item/{id}", get(Api::item))
            .with_state(AppState { x402, name: "lints".to_owned() })
    }
}

mod actix_app {
    use actix_web::{HttpResponse, Responder, get, web};
    use pay402::actix::{X402Payment, x402};

    /// `#[get]` above `#[x402]`.
    #[get("/quote/{symbol}")]
    #[x402(price = "$0.001")]
    pub(crate) async fn quote(symbol: web::Path<String>) -> impl Responder {
        format!("quote for {symbol}")
    }

    /// `#[x402]` above `#[get]`, with the payment.
    #[x402(price = "$0.5", scheme = "aggr_deferred")]
    #[get("/who")]
    pub(crate) async fn who(payment: X402Payment) -> HttpResponse {
        HttpResponse::Ok().body(format!("{:?}", payment.payer()))
    }

    /// Registered by hand; `?` with a `Result`.
    #[x402(price = "$0.003")]
    pub(crate) async fn parse(n: web::Path<String>) -> Result<String, actix_web::Error> {
        let n: u32 = n.parse().map_err(actix_web::error::ErrorBadRequest)?;
        Ok(n.to_string())
    }
}

#[test]
fn routers_and_apps_build() {
    let x402 = server();
    let _router = axum_app::router(x402.clone());
    let _app = actix_web::App::new()
        .app_data(actix_web::web::Data::new(x402))
        .service(actix_app::quote)
        .service(actix_app::who)
        .route("/parse/{n}", actix_web::web::get().to(actix_app::parse));
}

fn mpp() -> pay402::mpp::Mpp {
    use pay402::mpp::{ChargeIntent, EmbeddedSa, EvmMethod, Mpp};
    let method = EvmMethod::x_layer("0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed")
        .with_charge(ChargeIntent::new(EmbeddedSa::new()));
    Mpp::new(method, "lints.example", "lints-secret-at-least-32-bytes-long-hmac-key")
        .expect("an Mpp with a non-empty secret")
}

mod axum_pay_app {
    use axum::Json;
    use axum::extract::{FromRef, Path, Query, State};
    use axum::http::StatusCode;
    use axum::response::IntoResponse;
    use axum::routing::{get, post};
    use pay402::axum::{Credential, Mpp, Receipt, pay};
    use serde::Deserialize;

    #[derive(Clone)]
    pub(crate) struct AppState {
        pub(crate) mpp: Mpp,
        pub(crate) name: String,
    }

    impl FromRef<AppState> for Mpp {
        fn from_ref(state: &AppState) -> Self {
            state.mpp.clone()
        }
    }

    #[derive(Deserialize)]
    pub(crate) struct Page {
        n: u32,
    }

    /// A plain paid handler.
    #[pay(amount = "0.001")]
    pub(crate) async fn hello() -> &'static str {
        "hello"
    }

    /// State, a query, the credential and the receipt, a JSON body; `?` with a `Result`.
    #[pay(amount = "0.01", description = "Echo", expires_in = "90s", chain_id = 196)]
    pub(crate) async fn echo(
        State(state): State<AppState>,
        Query(page): Query<Page>,
        credential: Credential,
        receipt: Receipt,
        Json(body): Json<serde_json::Value>,
    ) -> Result<Json<serde_json::Value>, (StatusCode, String)> {
        let n = u8::try_from(page.n).map_err(|e| (StatusCode::BAD_REQUEST, e.to_string()))?;
        Ok(Json(serde_json::json!({
            "name": state.name, "n": n, "payer": credential.source, "tx": receipt.reference, "body": body,
        })))
    }

    pub(crate) struct Api;

    impl Api {
        /// An associated fn returning `impl IntoResponse`; a session route.
        #[pay(
            amount = "0.000001",
            intent = "session",
            recipient = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
            currency = "0x779Ded0c9e1022225f8E0630b35a9b54bE713736",
            unit_type = "request",
            suggested_deposit = "1000000"
        )]
        pub(crate) async fn item(Path(id): Path<u64>) -> impl IntoResponse {
            Json(id)
        }
    }

    pub(crate) fn router(mpp: Mpp) -> axum::Router {
        axum::Router::new()
            .route("/hello", get(hello))
            .route("/echo", post(echo))
            .route("/item/{id}", get(Api::item))
            .with_state(AppState { mpp, name: "lints".to_owned() })
    }
}

mod actix_pay_app {
    use actix_web::{HttpResponse, Responder, get, web};
    use pay402::actix::{Credential, Receipt, pay};

    /// `#[get]` above `#[pay]`.
    #[get("/quote/{symbol}")]
    #[pay(amount = "0.001")]
    pub(crate) async fn quote(symbol: web::Path<String>) -> impl Responder {
        format!("quote for {symbol}")
    }

    /// `#[pay]` above `#[get]`, with the credential and the receipt.
    #[pay(amount = "0.5", expires_in = "2m")]
    #[get("/who")]
    pub(crate) async fn who(receipt: Receipt, credential: Credential) -> HttpResponse {
        HttpResponse::Ok().body(format!("{:?} {}", credential.source, receipt.reference))
    }

    /// Registered by hand; `?` with a `Result`.
    #[pay(amount = "0.003")]
    pub(crate) async fn parse(n: web::Path<String>) -> Result<String, actix_web::Error> {
        let n: u32 = n.parse().map_err(actix_web::error::ErrorBadRequest)?;
        Ok(n.to_string())
    }
}

#[test]
fn pay_routers_and_apps_build() {
    let mpp = mpp();
    let _router = axum_pay_app::router(mpp.clone());
    let _app = actix_web::App::new()
        .app_data(actix_web::web::Data::new(mpp))
        .service(actix_pay_app::quote)
        .service(actix_pay_app::who)
        .route("/parse/{n}", actix_web::web::get().to(actix_pay_app::parse));
}
