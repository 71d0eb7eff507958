//! Findings tests: route keys that cannot be bypassed (F3, F4, L1 and the HEAD-500 probe).
//!
//! Every route-table gate (the x402 table, the MPP table, the dual router) on both frameworks,
//! with handlers that serve for free when reached: each probe must get the 402 challenge and the
//! handler must never run unpaid.

use crate::support::{self, FRAMEWORKS, Framework, Running};
use pay402::mpp::{ChargeIntent, EmbeddedSa, EvmMethod, Mpp, PaySpec};
use pay402::router::{MppAdapter, PaymentRouter, RouteProtocols, X402Adapter};
use pay402::web::{RouteKeyReason, RoutePattern};
use pay402::x402::EmbeddedFacilitator;
use pay402::x402::ExactEvmScheme;
use pay402::x402::X402ResourceServer;
use pay402::x402::{PaymentOption, RouteConfig, X402HttpServer};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

const PAY_TO: &str = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C";

/// The protected keys: a parameter route, a plain route, and two keys that could never match
/// before L1 (a trailing slash, a `//`).
const KEYS: [&str; 4] = ["GET /quote/:pair", "GET /quote", "GET /weather/", "GET //report"];

#[derive(Clone, Copy, Debug)]
enum Gate {
    X402,
    Mpp,
    Router,
}

fn x402_table(keys: &[&str]) -> X402HttpServer {
    let server = X402ResourceServer::new(EmbeddedFacilitator::new()).register("eip155:196", ExactEvmScheme::new());
    keys.iter().fold(X402HttpServer::new(server), |s, k| {
        s.route(k, RouteConfig::new(PaymentOption::exact("$0.001", PAY_TO))).expect("route")
    })
}

fn mpp_table(keys: &[&str]) -> Mpp {
    let method = EvmMethod::x_layer(PAY_TO).with_charge(ChargeIntent::new(EmbeddedSa::new()));
    let mpp =
        Mpp::new(method, "api.example.com", "findings-routes-secret-at-least-32-bytes-long-hmac-key").expect("mpp");
    keys.iter().fold(mpp, |m, k| m.route(k, PaySpec::charge("0.01")).expect("route"))
}

fn dual_router(keys: &[&str]) -> PaymentRouter {
    let x402 = X402HttpServer::new(
        X402ResourceServer::new(EmbeddedFacilitator::new()).register("eip155:196", ExactEvmScheme::new()),
    );
    let method = EvmMethod::x_layer(PAY_TO).with_charge(ChargeIntent::new(EmbeddedSa::new()));
    let mpp =
        Mpp::new(method, "api.example.com", "findings-routes-secret-at-least-32-bytes-long-hmac-key").expect("mpp");
    let protocols = || {
        RouteProtocols::new().x402(RouteConfig::new(PaymentOption::exact("$0.01", PAY_TO))).mpp(PaySpec::charge("0.01"))
    };
    keys.iter().fold(PaymentRouter::new().adapter(X402Adapter::new(x402)).adapter(MppAdapter::new(mpp)), |r, k| {
        r.route(k, protocols()).expect("route")
    })
}

fn axum_routes(calls: &Arc<AtomicUsize>) -> axum::Router {
    use axum::routing::get;
    let c = Arc::clone(calls);
    let served = move || {
        c.fetch_add(1, Ordering::SeqCst);
        async { "secret" }
    };
    axum::Router::new()
        .route("/quote/{pair}", get(served.clone()))
        .route("/quote", get(served.clone()))
        .route("/weather", get(served.clone()))
        .route("/report", get(served))
        .route("/free", get(|| async { "free" }))
}

fn actix_routes(calls: Arc<AtomicUsize>) -> impl FnOnce(&mut actix_web::web::ServiceConfig) {
    use actix_web::{HttpResponse, web};
    move |cfg| {
        for path in ["/quote/{pair}", "/quote", "/weather", "/report"] {
            let c = Arc::clone(&calls);
            cfg.route(
                path,
                web::route().to(move || {
                    c.fetch_add(1, Ordering::SeqCst);
                    async { HttpResponse::Ok().body("secret") }
                }),
            );
        }
        cfg.route("/free", web::get().to(|| async { "free" }));
    }
}

async fn serve(fw: Framework, gate: Gate, calls: &Arc<AtomicUsize>) -> Running {
    match fw {
        Framework::Axum => {
            let app = axum_routes(calls);
            let app = match gate {
                Gate::X402 => app.layer(pay402::axum::X402Layer::new(x402_table(&KEYS))),
                Gate::Mpp => app.layer(pay402::axum::MppLayer::new(mpp_table(&KEYS))),
                Gate::Router => app.layer(pay402::axum::PaymentRouterLayer::new(dual_router(&KEYS))),
            };
            support::serve_axum(app).await
        }
        Framework::Actix => {
            let calls = Arc::clone(calls);
            match gate {
                Gate::X402 => {
                    let x402 = x402_table(&KEYS);
                    support::serve_actix(move || {
                        actix_web::App::new()
                            .wrap(pay402::actix::X402Middleware::new(x402.clone()))
                            .configure(actix_routes(Arc::clone(&calls)))
                    })
                }
                Gate::Mpp => {
                    let mpp = mpp_table(&KEYS);
                    support::serve_actix(move || {
                        actix_web::App::new()
                            .wrap(pay402::actix::MppMiddleware::new(mpp.clone()))
                            .configure(actix_routes(Arc::clone(&calls)))
                    })
                }
                Gate::Router => {
                    let router = dual_router(&KEYS);
                    support::serve_actix(move || {
                        actix_web::App::new()
                            .wrap(pay402::actix::PaymentRouterMiddleware::new(router.clone()))
                            .configure(actix_routes(Arc::clone(&calls)))
                    })
                }
            }
        }
    }
}

/// Sends each `(method, path)` probe unpaid to `gate` on both frameworks: every one must get a
/// 402 and no handler may run; `/free` still serves (the server is up and routes normally).
async fn assert_all_challenged(gate: Gate, probes: &[(&str, &str)]) {
    let http = reqwest::Client::new();
    for fw in FRAMEWORKS {
        let calls = Arc::new(AtomicUsize::new(0));
        let running = serve(fw, gate, &calls).await;
        for (method, path) in probes {
            let url = format!("{}{path}", running.base);
            let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
            let resp = http.request(method.clone(), &url).send().await.expect("request");
            let status = resp.status().as_u16();
            let body = resp.text().await.unwrap_or_default();
            assert_eq!(status, 402, "{gate:?} on {fw:?}: {method} {path} answered {status} {body:?}");
            assert!(!body.contains("secret"), "{gate:?} on {fw:?}: {method} {path} served the handler's body");
        }
        assert_eq!(calls.load(Ordering::SeqCst), 0, "{gate:?} on {fw:?}: a handler ran unpaid");
        let free = http.get(format!("{}/free", running.base)).send().await.expect("request");
        assert_eq!(free.status(), 200, "{gate:?} on {fw:?}: unprotected routes still serve");
    }
}

const F3_PROBES: [(&str, &str); 4] = [
    ("GET", "/quote/BTC%2FUSD"),
    ("GET", "/quote/BTC%2fUSD"),
    ("GET", "/quote/BTC%252FUSD"),
    ("GET", "/quote/a%2F..%2F..%2Fb"),
];

const F4_PROBES: [(&str, &str); 3] = [("HEAD", "/quote"), ("HEAD", "/quote/BTC"), ("HEAD", "/quote/BTC%2FUSD")];

#[tokio::test]
async fn f3_encoded_slash_in_a_parameter_segment_gets_402_on_the_x402_table() {
    assert_all_challenged(Gate::X402, &F3_PROBES).await;
}

#[tokio::test]
async fn f4_head_on_a_get_key_gets_402_on_the_x402_table() {
    assert_all_challenged(Gate::X402, &F4_PROBES).await;
}

#[tokio::test]
async fn f3_encoded_slash_in_a_parameter_segment_gets_402_on_the_mpp_table() {
    assert_all_challenged(Gate::Mpp, &F3_PROBES).await;
}

#[tokio::test]
async fn f4_head_on_a_get_key_gets_402_on_the_mpp_table() {
    assert_all_challenged(Gate::Mpp, &F4_PROBES).await;
}

#[tokio::test]
async fn f3_encoded_slash_in_a_parameter_segment_gets_402_on_the_dual_router() {
    assert_all_challenged(Gate::Router, &F3_PROBES).await;
}

#[tokio::test]
async fn f4_head_on_a_get_key_gets_402_on_the_dual_router() {
    assert_all_challenged(Gate::Router, &F4_PROBES).await;
}

/// Trailing slash, `//`, case, `;` parameters, a query string and a percent-encoded letter: every
/// spelling a framework (or a proxy in front of it) might route to a protected handler.
#[tokio::test]
async fn f3_path_spellings_get_402_on_every_route_table() {
    let probes = [
        ("GET", "/quote/"),
        ("GET", "//quote"),
        ("GET", "/quote//BTC"),
        ("GET", "/QUOTE"),
        ("GET", "/Quote/btc"),
        ("GET", "/quote;x=1"),
        ("GET", "/quote/BTC;x=1"),
        ("GET", "/quote;x=1/BTC"),
        ("GET", "/quote?x=1"),
        ("GET", "/q%75ote"),
        ("GET", "/q%75ote/BTC%2FUSD"),
        ("HEAD", "/QUOTE/"),
    ];
    for gate in [Gate::X402, Gate::Mpp, Gate::Router] {
        assert_all_challenged(gate, &probes).await;
    }
}

/// L1: keys with a trailing slash or a `//` protect their route (normalised when added); a key
/// that could never match (`%xx`, `?`, `#`) is refused with a typed error instead of silently
/// protecting nothing.
#[tokio::test]
async fn l1_keys_with_trailing_or_double_slash_protect_their_route() {
    let probes = [("GET", "/weather"), ("GET", "/weather/"), ("GET", "/report"), ("HEAD", "/report")];
    for gate in [Gate::X402, Gate::Mpp, Gate::Router] {
        assert_all_challenged(gate, &probes).await;
    }
    for (key, c) in [("GET /caf%C3%A9", '%'), ("GET /quote?x=1", '?'), ("GET /a#b", '#')] {
        let err = RoutePattern::parse(key).expect_err(key);
        assert_eq!(err.reason, RouteKeyReason::Unmatchable(c), "{key}");
        let server = X402ResourceServer::new(EmbeddedFacilitator::new());
        let refused = X402HttpServer::new(server).route(key, RouteConfig::new(PaymentOption::exact("$0.001", PAY_TO)));
        assert!(refused.is_err(), "{key}");
        assert!(mpp_table(&[]).route(key, PaySpec::charge("0.01")).is_err(), "{key}");
        assert!(PaymentRouter::new().route(key, RouteProtocols::new()).is_err(), "{key}");
    }
}

/// Hostile probe: `HEAD` on a route-table `GET` route whose handler extracts the payment
/// answered 500 (`MissingPayment`) on axum, because the gate let it through. It must get the
/// 402 challenge on both frameworks.
#[tokio::test]
async fn probe_head_on_a_route_table_get_route_gets_402_not_500() {
    let http = reqwest::Client::new();
    for fw in FRAMEWORKS {
        let x402 = x402_table(&["GET /quote"]);
        let running = match fw {
            Framework::Axum => {
                let handler = |p: pay402::axum::X402Payment| async move { format!("paid by {:?}", p.payer()) };
                let app = axum::Router::new()
                    .route("/quote", axum::routing::get(handler))
                    .layer(pay402::axum::X402Layer::new(x402));
                support::serve_axum(app).await
            }
            Framework::Actix => {
                use actix_web::web;
                let handler = |p: pay402::actix::X402Payment| async move { format!("paid by {:?}", p.payer()) };
                support::serve_actix(move || {
                    actix_web::App::new()
                        .wrap(pay402::actix::X402Middleware::new(x402.clone()))
                        .route("/quote", web::get().to(handler))
                        .route("/quote", web::head().to(handler))
                })
            }
        };
        let resp = http.head(format!("{}/quote", running.base)).send().await.expect("request");
        assert_eq!(resp.status(), 402, "{fw:?}: HEAD on a GET route");
        assert!(resp.headers().contains_key("payment-required"), "{fw:?}: the 402 carries the challenge");
    }
}
