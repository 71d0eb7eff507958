//! Misconfiguration is loud, not silent: a route that cannot build its payment challenge (no
//! payee, a price the token cannot express, an amount that is not a number) answers 500, logs
//! the reason once at error level (not once per request), and — in development mode
//! (`Setup`, or `explain_errors(true)`) — names the reason in the 500 body. In production the
//! body stays generic.

use axum::Router;
use axum::routing::get;
use pay402::axum::{MppLayer, X402HttpServer, X402Layer};
use pay402::mpp::PaySpec;
use pay402::x402::{EmbeddedFacilitator, ExactEvmScheme, PaymentOption, RouteConfig, X402ResourceServer};
use std::sync::{Arc, Mutex};
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, SubscriberExt};

/// Error-level events: their message and `error` field.
#[derive(Clone, Default)]
struct Errors(Arc<Mutex<Vec<String>>>);

struct Text<'a>(&'a mut String);

impl Visit for Text<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.push_str(&format!("{}={value:?} ", field.name()));
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Errors {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        if *event.metadata().level() == tracing::Level::ERROR {
            let mut text = String::new();
            event.record(&mut Text(&mut text));
            self.0.lock().unwrap().push(text);
        }
    }
}

impl Errors {
    fn about(&self, needle: &str) -> usize {
        self.0.lock().unwrap().iter().filter(|e| e.contains(needle)).count()
    }
}

async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    base
}

/// An x402 server whose routes have no payee (no `pay_to` anywhere).
fn payee_less(explain: bool) -> X402HttpServer {
    let resource = X402ResourceServer::new(EmbeddedFacilitator::new()).register("eip155:196", ExactEvmScheme::new());
    let route =
        RouteConfig::new(PaymentOption::exact("$0.001", "0x0000000000000000000000000000000000000001").default_pay_to());
    X402HttpServer::new(resource).explain_errors(explain).route("GET /quote", route).expect("route")
}

async fn get_twice(url: &str) -> Vec<(u16, serde_json::Value)> {
    let mut out = Vec::new();
    for _ in 0..2 {
        let r = reqwest::get(url).await.expect("request");
        let status = r.status().as_u16();
        out.push((status, r.json().await.expect("a JSON body")));
    }
    out
}

#[tokio::test]
async fn an_x402_route_without_a_payee_explains_itself_in_development_and_logs_once() {
    let errors = Errors::default();
    let _guard = tracing::subscriber::set_default(tracing_subscriber::registry().with(errors.clone()));

    let dev =
        serve(Router::new().route("/quote", get(|| async { "paid" })).layer(X402Layer::new(payee_less(true)))).await;
    for (status, body) in get_twice(&format!("{dev}/quote")).await {
        assert_eq!(status, 500);
        assert_eq!(body["error"], "Failed to process request");
        let reason = body["reason"].as_str().expect("development names the reason");
        assert!(reason.contains("no payee") && reason.contains("pay_to"), "{reason}");
    }
    assert_eq!(errors.about("no payee"), 1, "logged once, not per request: {:?}", errors.0.lock().unwrap());

    let prod =
        serve(Router::new().route("/quote", get(|| async { "paid" })).layer(X402Layer::new(payee_less(false)))).await;
    for (status, body) in get_twice(&format!("{prod}/quote")).await {
        assert_eq!(status, 500);
        assert_eq!(body, serde_json::json!({ "error": "Failed to process request" }), "production stays generic");
    }
    assert_eq!(errors.about("no payee"), 2, "the production server logs its own reason once too");
}

#[tokio::test]
async fn an_mpp_route_with_an_unusable_amount_explains_itself_in_development_mode() {
    let errors = Errors::default();
    let _guard = tracing::subscriber::set_default(tracing_subscriber::registry().with(errors.clone()));

    // Development mode through the one-call set-up (no environment needed).
    let setup = pay402::setup::Setup::development().expect("development set-up");
    let mpp = setup.mpp().expect("mpp").route("GET /premium", PaySpec::charge("one cent")).expect("route");
    let base = serve(Router::new().route("/premium", get(|| async { "paid" })).layer(MppLayer::new(mpp))).await;
    for (status, body) in get_twice(&format!("{base}/premium")).await {
        assert_eq!(status, 500);
        let reason = body["reason"].as_str().expect("development names the reason");
        assert!(reason.contains("one cent"), "{reason}");
    }
    assert_eq!(errors.about("one cent"), 1, "{:?}", errors.0.lock().unwrap());
}
