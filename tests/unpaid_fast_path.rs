//! The unpaid fast path (the route's precomputed 402, answered before any request context is
//! built) sends exactly the bytes the full path would: for `#[x402]` and route-table routes on
//! both frameworks, for every URL a request can name (Host, query, `X-Forwarded-Proto`, and on
//! actix-web `Forwarded`), and steps aside for payments, browsers and custom unpaid bodies.

mod support;

use pay402::web::HttpBody;
use pay402::x402::EmbeddedFacilitator;
use pay402::x402::X402ResourceServer;
use pay402::x402::{
    AnyPaymentRequired, ExactEvmScheme, decode_payment_required_header, encode_payment_required_header,
};
use pay402::x402::{PaymentOption, RouteConfig, X402HttpServer};
use support::{FRAMEWORKS, Framework, Running};

const PAY_TO: &str = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C";

mod axum_handlers {
    use pay402::axum::{X402Payment, x402};

    #[x402(price = "$0.002", pay_to = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C", description = "Fast \"path\" ☀")]
    pub(crate) async fn macro_route(payment: X402Payment) -> String {
        format!("{:?}", payment.payer())
    }
}

mod actix_handlers {
    use pay402::actix::{X402Payment, x402};

    #[actix_web::get("/m")]
    #[x402(price = "$0.002", pay_to = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C", description = "Fast \"path\" ☀")]
    pub(crate) async fn macro_route(payment: X402Payment) -> actix_web::HttpResponse {
        actix_web::HttpResponse::Ok().body(format!("{:?}", payment.payer()))
    }
}

fn server() -> X402HttpServer {
    let resource = X402ResourceServer::new(EmbeddedFacilitator::new()).register("eip155:196", ExactEvmScheme::new());
    let table = RouteConfig::new(PaymentOption::exact("$0.002", PAY_TO)).description("Fast \"path\" ☀");
    let custom = RouteConfig::new(PaymentOption::exact("$0.002", PAY_TO))
        .unpaid_response_body(|ctx| HttpBody { content_type: "text/plain".into(), body: ctx.url.clone().into() });
    X402HttpServer::new(resource).route("GET /t", table).and_then(|s| s.route("GET /custom", custom)).expect("routes")
}

async fn start(fw: Framework) -> Running {
    let x402 = server();
    match fw {
        Framework::Axum => {
            let macro_app = axum::Router::new().route("/m", axum::routing::get(axum_handlers::macro_route));
            let table_app = axum::Router::new()
                .route("/t", axum::routing::get(|| async { "ok" }))
                .route("/custom", axum::routing::get(|| async { "ok" }))
                .layer(pay402::axum::X402Layer::new(x402.clone()));
            support::serve_axum(macro_app.with_state(x402).merge(table_app)).await
        }
        Framework::Actix => support::serve_actix(move || {
            actix_web::App::new()
                .app_data(actix_web::web::Data::new(x402.clone()))
                .service(actix_handlers::macro_route)
                .service(
                    actix_web::web::scope("")
                        .wrap(pay402::actix::X402Middleware::new(x402.clone()))
                        .route("/t", actix_web::web::get().to(|| async { "ok" }))
                        .route("/custom", actix_web::web::get().to(|| async { "ok" })),
                )
        }),
    }
}

/// Status, every header but `date` (sorted, all lines), and the body.
async fn snapshot(resp: reqwest::Response) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let status = resp.status().as_u16();
    let mut headers: Vec<(String, String)> = resp
        .headers()
        .iter()
        .filter(|(n, _)| n.as_str() != "date")
        .map(|(n, v)| (n.as_str().to_owned(), v.to_str().expect("text").to_owned()))
        .collect();
    headers.sort();
    (status, headers, resp.bytes().await.expect("body").to_vec())
}

/// Request headers, query, and the resource URL the challenge must name.
type Variant = (Vec<(&'static str, String)>, String, String);

fn header<'a>(headers: &'a [(String, String)], name: &str) -> &'a str {
    headers.iter().find(|(n, _)| n == name).map_or("", |(_, v)| v.as_str())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn precomputed_402_is_byte_identical_to_the_full_path() {
    let http = reqwest::Client::new();
    for fw in FRAMEWORKS {
        let running = start(fw).await;
        let port = running.base.rsplit(':').next().expect("port").to_owned();
        for path in ["/m", "/t"] {
            let url = format!("{}{path}", running.base);
            // The route's first request takes the full path (and fills the cache)...
            let first = snapshot(http.get(&url).send().await.expect("first")).await;
            assert_eq!(first.0, 402, "{fw:?} {path}");
            // ...the same request again takes the fast path: the same bytes.
            for _ in 0..3 {
                let again = snapshot(http.get(&url).send().await.expect("again")).await;
                assert_eq!(again, first, "{fw:?} {path}: fast path differs from the full path");
            }
            let AnyPaymentRequired::V2(truth) =
                decode_payment_required_header(header(&first.1, "payment-required")).expect("decodes")
            else {
                panic!("v2")
            };
            // Other URLs: the fast path's header is the full serialisation of the challenge
            // naming that URL.
            let mut variants: Vec<Variant> = vec![
                (vec![("host", "api.example:8443".into())], String::new(), format!("http://api.example:8443{path}")),
                (vec![], "?q=%22x%22&u=1".into(), format!("http://127.0.0.1:{port}{path}?q=%22x%22&u=1")),
                (
                    vec![("x-forwarded-proto", "https".into()), ("host", "shop.example".into())],
                    String::new(),
                    format!("https://shop.example{path}"),
                ),
            ];
            if fw == Framework::Actix {
                variants.push((
                    vec![("forwarded", "for=1.2.3.4;proto=https;host=edge.example".into())],
                    String::new(),
                    format!("https://edge.example{path}"),
                ));
            }
            for (headers, query, expected_url) in variants {
                for _ in 0..2 {
                    let mut req = http.get(format!("{url}{query}"));
                    for (n, v) in &headers {
                        req = req.header(*n, v);
                    }
                    let got = snapshot(req.send().await.expect("variant")).await;
                    let mut expected = truth.clone();
                    expected.resource.as_mut().expect("resource").url = expected_url.clone();
                    let expected_header = encode_payment_required_header(&expected).expect("encodes");
                    assert_eq!(header(&got.1, "payment-required"), expected_header, "{fw:?} {path} {expected_url}");
                    let strip = |h: &[(String, String)]| {
                        h.iter()
                            .filter(|(n, _)| n != "payment-required" && n != "content-length")
                            .cloned()
                            .collect::<Vec<_>>()
                    };
                    assert_eq!(
                        (got.0, strip(&got.1), &got.2),
                        (first.0, strip(&first.1), &first.2),
                        "{fw:?} {expected_url}"
                    );
                }
            }
            // A payment (even a broken one) and a browser take the full path.
            let broken =
                snapshot(http.get(&url).header("payment-signature", "not-base64!").send().await.expect("x")).await;
            assert_eq!(broken.0, 402);
            let browser = http
                .get(&url)
                .header("accept", "text/html")
                .header("user-agent", "Mozilla/5.0")
                .send()
                .await
                .expect("browser");
            assert_eq!(browser.status(), 402);
            assert!(browser.headers()["content-type"].to_str().expect("ct").starts_with("text/html"), "{fw:?} {path}");
        }
        // A route with a custom unpaid body renders it for each request.
        for query in ["", "?second"] {
            let url = format!("{}/custom{query}", running.base);
            let resp = http.get(&url).send().await.expect("custom");
            assert_eq!(resp.status(), 402);
            assert_eq!(resp.headers()["content-type"], "text/plain");
            assert!(resp.headers().contains_key("payment-required"));
            assert_eq!(resp.text().await.expect("text"), url, "{fw:?}");
        }
    }
}
