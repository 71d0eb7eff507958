//! `#[x402]` and the route-table middleware give identical responses for the same route, on
//! both frameworks: one scripted sequence of requests drives a macro server and a route-table
//! server, and their normalised responses must be equal.

mod support;

use pay402::chain::X_LAYER_USDT0;
use pay402::evm::{B256, PrivateKeySigner, U256};
use pay402::x402::EmbeddedFacilitator;
use pay402::x402::X402Client;
use pay402::x402::X402ResourceServer;
use pay402::x402::{
    AnyPaymentPayload, AnyPaymentRequired, ExactEvmClientScheme, ExactEvmScheme, decode_payment_required_header,
    decode_payment_response_header, encode_payment_signature_header,
};
use pay402::x402::{PaymentOption, RouteConfig, X402HttpServer};
use support::{FRAMEWORKS, Framework, Running};

const PAY_TO: &str = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C";
const BUYER_KEY: &str = "0x47e179ec197488593b187f80a00eb0da91f1b9d0b13f8733639f19c30a34926a";

mod axum_handlers {
    use pay402::axum::{X402Payment, x402};

    #[x402(
        price = "$0.001",
        pay_to = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C",
        description = "Premium data",
        mime_type = "application/json"
    )]
    pub(crate) async fn paid(payment: X402Payment) -> axum::Json<serde_json::Value> {
        axum::Json(serde_json::json!({ "data": "secret", "payer": payment.payer() }))
    }
}

mod actix_handlers {
    use pay402::actix::{X402Payment, x402};

    #[actix_web::get("/paid")]
    #[x402(
        price = "$0.001",
        pay_to = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C",
        description = "Premium data",
        mime_type = "application/json"
    )]
    pub(crate) async fn paid(payment: X402Payment) -> actix_web::HttpResponse {
        actix_web::HttpResponse::Ok().json(serde_json::json!({ "data": "secret", "payer": payment.payer() }))
    }
}

fn x402(table: bool) -> X402HttpServer {
    let facilitator = EmbeddedFacilitator::new();
    let buyer: PrivateKeySigner = BUYER_KEY.parse().expect("key");
    facilitator.fund(X_LAYER_USDT0, &buyer.address().to_string(), U256::from(1_000_000u64)).expect("fund");
    let server = X402ResourceServer::new(facilitator).register("eip155:196", ExactEvmScheme::new());
    let http = X402HttpServer::new(server);
    if table {
        let route = RouteConfig::new(PaymentOption::exact("$0.001", PAY_TO))
            .description("Premium data")
            .mime_type("application/json");
        http.route("GET /paid", route).expect("route")
    } else {
        http
    }
}

async fn start(fw: Framework, table: bool) -> Running {
    let server = x402(table);
    match (fw, table) {
        (Framework::Axum, false) => {
            let app = axum::Router::new().route("/paid", axum::routing::get(axum_handlers::paid)).with_state(server);
            support::serve_axum(app).await
        }
        (Framework::Axum, true) => {
            let app = axum::Router::new()
                .route(
                    "/paid",
                    axum::routing::get(|payment: pay402::axum::X402Payment| async move {
                        axum::Json(serde_json::json!({ "data": "secret", "payer": payment.payer() }))
                    }),
                )
                .layer(pay402::axum::X402Layer::new(server));
            support::serve_axum(app).await
        }
        (Framework::Actix, false) => {
            let data = actix_web::web::Data::new(server);
            support::serve_actix(move || actix_web::App::new().app_data(data.clone()).service(actix_handlers::paid))
        }
        (Framework::Actix, true) => support::serve_actix(move || {
            actix_web::App::new().wrap(pay402::actix::X402Middleware::new(server.clone())).route(
                "/paid",
                actix_web::web::get().to(|payment: pay402::actix::X402Payment| async move {
                    actix_web::HttpResponse::Ok()
                        .json(serde_json::json!({ "data": "secret", "payer": payment.payer() }))
                }),
            )
        }),
    }
}

/// A deterministic payment: fixed clock and nonce, so both servers see the same bytes.
async fn payment(required_header: &str, nonce: u8, now: u64) -> String {
    let required = decode_payment_required_header(required_header).expect("decodes");
    let scheme = ExactEvmClientScheme::new(BUYER_KEY.parse().expect("key"))
        .with_clock(move || now)
        .with_nonce_source(move || B256::repeat_byte(nonce));
    let client = X402Client::new().register("eip155:196", scheme);
    let AnyPaymentPayload::V2(mut p) = client.create_payment_payload(&required).await.expect("pays") else {
        panic!("v2")
    };
    // The same resource URL for both servers (it is not part of what is verified).
    p.resource = None;
    encode_payment_signature_header(&p).expect("encodes")
}

/// Everything of a response that must match, with the server's base URL replaced.
async fn normalise(resp: reqwest::Response, base: &str) -> Vec<String> {
    let mut out = vec![format!("status {}", resp.status().as_u16())];
    for name in ["content-type", "cache-control", "access-control-expose-headers"] {
        out.push(format!("{name}: {:?}", resp.headers().get(name).map(|v| v.to_str().unwrap_or("?").to_owned())));
    }
    if let Some(h) = resp.headers().get("payment-required") {
        let AnyPaymentRequired::V2(r) = decode_payment_required_header(h.to_str().unwrap()).expect("decodes") else {
            panic!("v2")
        };
        out.push(serde_json::to_string(&r).unwrap().replace(base, "BASE"));
    }
    if let Some(h) = resp.headers().get("payment-response") {
        out.push(serde_json::to_string(&decode_payment_response_header(h.to_str().unwrap()).unwrap()).unwrap());
    }
    out.push(resp.text().await.unwrap().replace(base, "BASE"));
    out
}

/// The scripted sequence: unpaid, browser, garbage, paid, replayed, tampered.
async fn script(base: &str, now: u64) -> Vec<Vec<String>> {
    let http = reqwest::Client::new();
    let url = format!("{base}/paid");
    let mut seen = Vec::new();
    let unpaid = http.get(&url).send().await.unwrap();
    let required = unpaid.headers()["payment-required"].to_str().unwrap().to_owned();
    seen.push(normalise(unpaid, base).await);
    let browser =
        http.get(&url).header("accept", "text/html").header("user-agent", "Mozilla/5.0").send().await.unwrap();
    seen.push(normalise(browser, base).await);
    let garbage = http.get(&url).header("payment-signature", "%%%").send().await.unwrap();
    seen.push(normalise(garbage, base).await);
    let good = payment(&required, 7, now).await;
    seen.push(normalise(http.get(&url).header("payment-signature", &good).send().await.unwrap(), base).await);
    seen.push(normalise(http.get(&url).header("payment-signature", &good).send().await.unwrap(), base).await);
    let tampered = payment(&required, 8, now).await.replace('A', "B");
    seen.push(normalise(http.get(&url).header("payment-signature", &tampered).send().await.unwrap(), base).await);
    seen
}

#[tokio::test]
async fn macro_and_route_table_answer_identically() {
    for fw in FRAMEWORKS {
        let by_macro = start(fw, false).await;
        let by_table = start(fw, true).await;
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs();
        let a = script(&by_macro.base, now).await;
        let b = script(&by_table.base, now).await;
        assert_eq!(a.len(), 6);
        for (i, (x, y)) in a.iter().zip(&b).enumerate() {
            assert_eq!(x, y, "{fw:?}: response {i} differs between #[x402] and the route table");
        }
        assert!(a[3][0] == "status 200" && a[4][0] == "status 402", "{fw:?}: {:?}", a);
    }
}
