//! HTTP load benchmark of pay402's payment paths on axum and actix-web, each against a bare
//! handler on the same server in the same run (see BENCHMARKS.md; run it with
//! `scripts/bench.sh`).
//!
//! One process serves both frameworks (one server thread each, pinned to core 0 with the rest
//! of this process); `wrk` (Debian) is the load generator, pinned to core 1, and so is the
//! facilitator stand-in (this binary started again with `--facilitator`), which answers
//! `/supported`, `/verify` and `/settle` at once. For every framework and run, each scenario is
//! loaded for the same time right after the bare route; the figures are medians over the runs of
//! the ratio to that run's bare throughput. Server CPU per request is the on-CPU time of this
//! process's threads (`/proc/self/task/*/schedstat`) during the load divided by the requests
//! completed. Idle and loaded RSS come from `/proc/<pid>/status` of an example server.
//!
//! Arguments: `--smoke` (tiny durations, one run: CI keeps the harness alive; figures are
//! meaningless), `--runs N`, `--secs S`, `--connections C`, `--out FILE` (Markdown report),
//! `--example-bin PATH` (the example server whose RSS is measured), `--serve-only` (start the
//! servers, print their URLs and wait: for profiling under `perf record -p <pid>`).
//!
//! MPP session vouchers cannot come from wrk (each needs a fresh signature): the binary started
//! with `--session-load` is the load generator (on the load core). Every connection opens its
//! own channel on a session route (one per channel store: memory, file, Redis), pre-signs its
//! vouchers before the measurement, then sends them one after another; the server's CPU is
//! measured meanwhile. Contention on one channel is measured by `benches/store_contention.rs`.

use pay402::actix::X402Middleware;
use pay402::axum::X402Layer;
use pay402::mpp::{ChargeIntent, EmbeddedSa, EvmMethod, Mpp};
use pay402::x402::X402ResourceServer;
use pay402::x402::{
    AnyPaymentRequired, ExactEvmClientScheme, ExactEvmScheme, HttpFacilitatorClient, HttpFacilitatorConfig, X402Client,
    decode_payment_required_header, decode_payment_signature_header, safe_base64_encode,
};
use pay402::x402::{PaymentOption, RouteConfig, X402HttpServer};
use std::io::{BufRead as _, BufReader, Write as _};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The `PAYMENT-REQUIRED` value of the `#[x402]` route, captured at start-up, for the
/// hand-written 402 baseline.
static STATIC_402: std::sync::OnceLock<http::HeaderValue> = std::sync::OnceLock::new();
static STATIC_402_ACTIX: std::sync::OnceLock<actix_web::http::header::HeaderValue> = std::sync::OnceLock::new();
const EXPOSED: &str = pay402::x402::EXPOSED_HEADERS;

const PAY_TO: &str = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C";
const BUYER_KEY: &str = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";
const SERVER_CORE: &str = "0";
const LOAD_CORE: &str = "1";

// ---------------------------------------------------------------------------------------------
// Servers under test
// ---------------------------------------------------------------------------------------------

/// The floor of a paid x402 request: a hand-written handler doing only what any implementation
/// must (decode the payment, one request body serialised once and sent to `/verify` and
/// `/settle` through a pooled reqwest client, read both answers, encode `PAYMENT-RESPONSE`):
/// no route matching, replay guard, requirement matching, hooks, spans or metrics.
mod lean {
    use serde_json::Value;

    #[derive(Clone)]
    pub(crate) struct Lean {
        pub(crate) http: reqwest::Client,
        pub(crate) verify: reqwest::Url,
        pub(crate) settle: reqwest::Url,
    }

    /// The `#[x402]` route's requirements (set from its challenge at start-up).
    pub(crate) static REQUIREMENTS: std::sync::OnceLock<Value> = std::sync::OnceLock::new();

    impl Lean {
        pub(crate) fn new(facilitator_url: &str) -> Result<Self, Box<dyn std::error::Error>> {
            let base = reqwest::Url::parse(facilitator_url)?;
            Ok(Self { http: reqwest::Client::new(), verify: base.join("/verify")?, settle: base.join("/settle")? })
        }
    }

    /// `Ok(PAYMENT-RESPONSE)` or `Err(status)`.
    pub(crate) async fn pay(lean: &Lean, payment: Option<&[u8]>) -> Result<String, u16> {
        let payment = std::str::from_utf8(payment.ok_or(402u16)?).map_err(|_| 402u16)?;
        let decoded = pay402::x402::safe_base64_decode(payment).map_err(|_| 402u16)?;
        let payload: Value = serde_json::from_slice(&decoded).map_err(|_| 402u16)?;
        let body = serde_json::to_vec(&serde_json::json!({
            "x402Version": 2, "paymentPayload": payload, "paymentRequirements": REQUIREMENTS.get().ok_or(500u16)?,
        }))
        .map_err(|_| 500u16)?;
        let body = axum::body::Bytes::from(body);
        let call = |url: &reqwest::Url, body: axum::body::Bytes| {
            let req = lean.http.post(url.clone()).header("content-type", "application/json").body(body);
            async move {
                let resp = req.send().await.map_err(|_| 502u16)?;
                let bytes = resp.bytes().await.map_err(|_| 502u16)?;
                serde_json::from_slice::<Value>(&bytes).map_err(|_| 502u16)
            }
        };
        let verified = call(&lean.verify, body.clone()).await?;
        if verified["isValid"] != true {
            return Err(402);
        }
        let settled = call(&lean.settle, body).await?;
        if settled["success"] != true {
            return Err(402);
        }
        Ok(pay402::x402::safe_base64_encode(&serde_json::to_vec(&settled).map_err(|_| 500u16)?))
    }
}

mod axum_app {
    use super::*;
    use axum::extract::FromRef;
    use pay402::axum::{Paid, X402Payment, pay, x402};

    #[derive(Clone)]
    pub(crate) struct State {
        pub(crate) x402: X402HttpServer,
        pub(crate) mpp: Mpp,
        pub(crate) lean: super::lean::Lean,
    }

    /// The paid-path floor (see [`super::lean`]).
    async fn lean_paid(
        axum::extract::State(state): axum::extract::State<State>,
        headers: http::HeaderMap,
    ) -> axum::response::Response {
        use axum::response::IntoResponse as _;
        let payment = headers.get("payment-signature").map(http::HeaderValue::as_bytes);
        match super::lean::pay(&state.lean, payment).await {
            Ok(header) => ([("payment-response", header)], "ok").into_response(),
            Err(status) => http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::BAD_GATEWAY).into_response(),
        }
    }

    impl FromRef<State> for X402HttpServer {
        fn from_ref(s: &State) -> Self {
            s.x402.clone()
        }
    }

    impl FromRef<State> for Mpp {
        fn from_ref(s: &State) -> Self {
            s.mpp.clone()
        }
    }

    async fn bare() -> &'static str {
        "ok"
    }

    /// The physical limit of an unpaid 402: a hand-written handler answering the same bytes
    /// from a header map built once (cloning it costs reference counts).
    async fn static_402() -> axum::response::Response {
        static HEADERS: std::sync::OnceLock<http::HeaderMap> = std::sync::OnceLock::new();
        let headers = HEADERS.get_or_init(|| {
            let value = super::STATIC_402.get().cloned().unwrap_or(http::HeaderValue::from_static(""));
            let mut h = http::HeaderMap::new();
            h.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
            h.insert(http::header::CACHE_CONTROL, http::HeaderValue::from_static("no-store"));
            h.insert(http::HeaderName::from_static("payment-required"), value);
            h.insert(
                http::HeaderName::from_static("access-control-expose-headers"),
                http::HeaderValue::from_static(super::EXPOSED),
            );
            h
        });
        let mut resp = axum::response::Response::new(axum::body::Body::from(axum::body::Bytes::from_static(b"{}")));
        *resp.status_mut() = http::StatusCode::PAYMENT_REQUIRED;
        *resp.headers_mut() = headers.clone();
        resp
    }

    #[x402(price = "$0.001", description = "bench")]
    async fn macro_route(payment: X402Payment) -> &'static str {
        let _ = payment;
        "ok"
    }

    #[pay(amount = "0.001", description = "bench")]
    async fn charge_route() -> &'static str {
        "ok"
    }

    #[x402(price = "$0.001", description = "bench")]
    #[pay(amount = "0.001", description = "bench")]
    async fn dual_route(paid: Paid) -> &'static str {
        let _ = paid;
        "ok"
    }

    pub(crate) fn router(state: State, table: X402HttpServer, sessions: Vec<Mpp>) -> axum::Router {
        use axum::routing::get;
        let mut table_routes = axum::Router::new().route("/t/table", get(bare)).layer(X402Layer::new(table));
        for (name, mpp) in super::session::STORES.iter().zip(sessions) {
            let route =
                axum::Router::new().route(&format!("/s/{name}"), get(bare)).layer(pay402::axum::MppLayer::new(mpp));
            table_routes = table_routes.merge(route);
        }
        axum::Router::new()
            .route("/bare", get(bare))
            .route("/static402", get(static_402))
            .route("/x402", get(macro_route))
            .route("/pay", get(charge_route))
            .route("/dual", get(dual_route))
            .route("/lean", get(lean_paid))
            .with_state(state)
            .merge(table_routes)
    }
}

mod actix_app {
    use super::*;
    use actix_web::{HttpResponse, get, web};
    use pay402::actix::{Paid, X402Payment, pay, x402};

    #[get("/bare")]
    async fn bare() -> HttpResponse {
        HttpResponse::Ok().body("ok")
    }

    /// The physical limit of an unpaid 402 (see the axum twin).
    #[get("/static402")]
    async fn static_402() -> HttpResponse {
        use actix_web::http::header::{HeaderName, HeaderValue};
        static HEADERS: std::sync::OnceLock<Vec<(HeaderName, HeaderValue)>> = std::sync::OnceLock::new();
        let headers = HEADERS.get_or_init(|| {
            let value = super::STATIC_402_ACTIX.get().cloned().unwrap_or(HeaderValue::from_static(""));
            vec![
                (HeaderName::from_static("content-type"), HeaderValue::from_static("application/json")),
                (HeaderName::from_static("cache-control"), HeaderValue::from_static("no-store")),
                (HeaderName::from_static("payment-required"), value),
                (HeaderName::from_static("access-control-expose-headers"), HeaderValue::from_static(super::EXPOSED)),
            ]
        });
        let mut resp =
            HttpResponse::with_body(actix_web::http::StatusCode::PAYMENT_REQUIRED, "{}").map_into_boxed_body();
        for (name, value) in headers {
            resp.headers_mut().append(name.clone(), value.clone());
        }
        resp
    }

    #[get("/x402")]
    #[x402(price = "$0.001", description = "bench")]
    async fn macro_route(payment: X402Payment) -> HttpResponse {
        let _ = payment;
        HttpResponse::Ok().body("ok")
    }

    #[get("/pay")]
    #[pay(amount = "0.001", description = "bench")]
    async fn charge_route() -> HttpResponse {
        HttpResponse::Ok().body("ok")
    }

    #[get("/dual")]
    #[x402(price = "$0.001", description = "bench")]
    #[pay(amount = "0.001", description = "bench")]
    async fn dual_route(paid: Paid) -> HttpResponse {
        let _ = paid;
        HttpResponse::Ok().body("ok")
    }

    /// The paid-path floor (see [`super::lean`]).
    async fn lean_paid(req: actix_web::HttpRequest, lean: web::Data<super::lean::Lean>) -> HttpResponse {
        let payment = req.headers().get("payment-signature").map(|v| v.as_bytes());
        match super::lean::pay(&lean, payment).await {
            Ok(header) => HttpResponse::Ok().insert_header(("payment-response", header)).body("ok"),
            Err(status) => HttpResponse::build(
                actix_web::http::StatusCode::from_u16(status).unwrap_or(actix_web::http::StatusCode::BAD_GATEWAY),
            )
            .finish(),
        }
    }

    async fn table_handler() -> HttpResponse {
        HttpResponse::Ok().body("ok")
    }

    pub(crate) fn configure(
        cfg: &mut web::ServiceConfig,
        x402: X402HttpServer,
        mpp: Mpp,
        table: X402HttpServer,
        lean: super::lean::Lean,
        sessions: &[Mpp],
    ) {
        for (name, mpp) in super::session::STORES.iter().zip(sessions) {
            cfg.service(
                web::scope(&format!("/s/{name}"))
                    .wrap(pay402::actix::MppMiddleware::new(mpp.clone()))
                    .route("", web::get().to(table_handler)),
            );
        }
        cfg.app_data(web::Data::new(x402))
            .app_data(web::Data::new(mpp))
            .app_data(web::Data::new(lean))
            .route("/lean", web::get().to(lean_paid))
            .service(bare)
            .service(static_402)
            .service(macro_route)
            .service(charge_route)
            .service(dual_route)
            .service(web::scope("/t").wrap(X402Middleware::new(table)).route("/table", web::get().to(table_handler)));
    }
}

/// The x402 servers (macro routes, route table) and the MPP coordinator.
fn sellers(facilitator_url: &str) -> Result<(X402HttpServer, X402HttpServer, Mpp), Box<dyn std::error::Error>> {
    let facilitator = HttpFacilitatorClient::new(HttpFacilitatorConfig::new(facilitator_url))?;
    let resource = X402ResourceServer::new(facilitator).register("eip155:196", ExactEvmScheme::new());
    let x402 = X402HttpServer::new(resource.clone()).pay_to(PAY_TO);
    let table = X402HttpServer::new(resource)
        .route("GET /t/table", RouteConfig::new(PaymentOption::exact("$0.001", PAY_TO)).description("bench"))?;
    let method = EvmMethod::x_layer(PAY_TO).with_charge(ChargeIntent::with_sa(Arc::new(EmbeddedSa::new())));
    let mpp = Mpp::new(method, "bench.localhost", "bench-secret-at-least-32-bytes-long-hmac-key")?;
    Ok((x402, table, mpp))
}

/// Starts both servers on their own threads; returns their base URLs.
fn start_servers(
    facilitator_url: &str,
    redis_url: &str,
    dir: &std::path::Path,
) -> Result<(String, String), Box<dyn std::error::Error>> {
    let (x402, table, mpp) = sellers(facilitator_url)?;
    let lean = lean::Lean::new(facilitator_url)?;
    let (tx, rx) = std::sync::mpsc::channel();
    {
        let (x402, table, mpp, tx, lean) = (x402.clone(), table.clone(), mpp.clone(), tx.clone(), lean.clone());
        let (redis_url, dir) = (redis_url.to_owned(), dir.join("axum"));
        std::thread::Builder::new().name("axum".into()).spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            rt.block_on(async move {
                x402.initialize().await.expect("facilitator /supported");
                table.initialize().await.expect("facilitator /supported");
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
                let _ = tx.send(("axum", format!("http://{}", listener.local_addr().expect("addr"))));
                let sessions = session::coordinators(&redis_url, &dir).await.expect("session coordinators");
                let app = axum_app::router(axum_app::State { x402, mpp, lean }, table, sessions);
                axum::serve(listener, app).await.expect("axum");
            });
        })?;
    }
    let (redis_url, dir) = (redis_url.to_owned(), dir.join("actix"));
    std::thread::Builder::new().name("actix".into()).spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            x402.initialize().await.expect("facilitator /supported");
            table.initialize().await.expect("facilitator /supported");
            let sessions = session::coordinators(&redis_url, &dir).await.expect("session coordinators");
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            let _ = tx.send(("actix", format!("http://{}", listener.local_addr().expect("addr"))));
            actix_web::HttpServer::new(move || {
                let (x402, mpp, table, lean) = (x402.clone(), mpp.clone(), table.clone(), lean.clone());
                let sessions = sessions.clone();
                actix_web::App::new().configure(move |cfg| actix_app::configure(cfg, x402, mpp, table, lean, &sessions))
            })
            .workers(1)
            .listen(listener)
            .expect("listen")
            .run()
            .await
            .expect("actix");
        });
    })?;
    // The two threads answer in either order: match by name.
    let (mut axum_url, mut actix_url) = (String::new(), String::new());
    for _ in 0..2 {
        match rx.recv_timeout(Duration::from_secs(30))? {
            ("axum", url) => axum_url = url,
            (_, url) => actix_url = url,
        }
    }
    Ok((axum_url, actix_url))
}

#[path = "support/redis.rs"]
mod redis_server;

// ---------------------------------------------------------------------------------------------
// MPP session vouchers over HTTP: one session route per channel store, and a Rust load
// generator (wrk cannot sign vouchers) run as a child process on the load core
// ---------------------------------------------------------------------------------------------

mod session {
    use pay402::chain::NetworkRegistry;
    use pay402::evm::{PrivateKeySigner, U256};
    use pay402::mpp::RedisChannelStore;
    use pay402::mpp::{
        ChannelStore, EmbeddedSa, EvmMethod, FileStore, InMemoryChannelStore, Mpp, PaySpec, SessionClient,
        SessionIntent, parse_www_authenticate,
    };
    use std::io::{BufRead as _, Write as _};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    pub(crate) const PAYER_KEY: &str = "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a";
    const PAYEE_KEY: &str = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d";
    const PAYEE: &str = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8";
    const USDT0: &str = "0x779ded0c9e1022225f8e0630b35a9b54be713736";
    /// The stores, in report order, and their routes.
    pub(crate) const STORES: [&str; 3] = ["memory", "file", "redis"];

    /// One coordinator per store, each protecting `GET /s/<store>` (one base unit per request).
    pub(crate) async fn coordinators(
        redis_url: &str,
        dir: &std::path::Path,
    ) -> Result<Vec<Mpp>, Box<dyn std::error::Error>> {
        let mut out = Vec::new();
        for name in STORES {
            let store: Arc<dyn ChannelStore> = match name {
                "memory" => Arc::new(InMemoryChannelStore::new()),
                "file" => Arc::new(FileStore::new(dir.join("channels"))?),
                _ => Arc::new(RedisChannelStore::connect(redis_url, "bench:").await?),
            };
            let sa = EmbeddedSa::new().with_registry(NetworkRegistry::x_layer());
            let payer = PAYER_KEY.parse::<PrivateKeySigner>()?.address().to_string();
            sa.fund(USDT0, &payer, U256::from(10u64).pow(U256::from(24u8)))?;
            let payee: PrivateKeySigner = PAYEE_KEY.parse()?;
            let intent = SessionIntent::new(sa, PAYEE).signer(Arc::new(payee)).store(store);
            let spec = PaySpec { amount: "0.000001".into(), intent: "session".into(), ..PaySpec::default() };
            let mpp = Mpp::new(
                EvmMethod::x_layer(PAYEE).with_session(intent),
                "bench.localhost",
                "bench-secret-at-least-32-bytes-long-hmac-key",
            )?
            .route(&format!("GET /s/{name}"), spec)?;
            out.push(mpp);
        }
        Ok(out)
    }

    /// The load generator (`--session-load URL SECS CONNECTIONS MAX_RATE`): each connection opens its
    /// own channel and pre-signs its vouchers, prints `ready`, waits for a line on stdin, then
    /// sends its vouchers one after another for SECS seconds and prints
    /// `requests N errors E exhausted X secs S`.
    pub(crate) fn load(
        url: &str,
        secs: u64,
        connections: usize,
        max_rate: usize,
    ) -> Result<(), Box<dyn std::error::Error>> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        rt.block_on(async {
            let http = reqwest::Client::new();
            // Enough vouchers for `max_rate` requests/s on every connection's share.
            let per_connection = (max_rate * usize::try_from(secs)?).div_ceil(connections).max(8);
            let mut prepared = Vec::new();
            for _ in 0..connections {
                let unpaid = http.get(url).send().await?;
                let www = unpaid.headers().get("www-authenticate").ok_or("no challenge")?.to_str()?.to_owned();
                let challenge = parse_www_authenticate(&[&www])?.remove(0);
                let client = SessionClient::new(PAYER_KEY.parse::<PrivateKeySigner>()?)
                    .with_registry(NetworkRegistry::x_layer());
                let (channel, open) = client.open_header(&challenge, U256::from(10u64).pow(U256::from(15u8)))?;
                let opened = http.get(url).header("authorization", open).send().await?;
                if opened.status() != 200 {
                    return Err(format!("open: {} {}", opened.status(), opened.text().await.unwrap_or_default()).into());
                }
                let mut vouchers = Vec::with_capacity(per_connection);
                for _ in 0..per_connection {
                    vouchers.push(client.next_voucher(&challenge, &channel, U256::from(1u8))?);
                }
                prepared.push(vouchers);
            }
            println!("ready");
            std::io::stdout().flush()?;
            let mut go = String::new();
            std::io::stdin().lock().read_line(&mut go)?;
            let started = Instant::now();
            let deadline = started + Duration::from_secs(secs);
            let tasks: Vec<_> = prepared
                .into_iter()
                .map(|vouchers| {
                    let (http, url) = (http.clone(), url.to_owned());
                    tokio::spawn(async move {
                        let (mut ok, mut errors, mut exhausted) = (0u64, 0u64, true);
                        for voucher in vouchers {
                            if Instant::now() >= deadline {
                                exhausted = false;
                                break;
                            }
                            match http.get(&url).header("authorization", voucher).send().await {
                                Ok(r) if r.status() == 200 => {
                                    let _ = r.bytes().await;
                                    ok += 1;
                                }
                                _ => errors += 1,
                            }
                        }
                        (ok, errors, exhausted)
                    })
                })
                .collect();
            let (mut ok, mut errors, mut exhausted) = (0, 0, 0);
            for task in tasks {
                let (o, e, x) = task.await?;
                ok += o;
                errors += e;
                exhausted += u64::from(x);
            }
            println!("requests {ok} errors {errors} exhausted {exhausted} secs {:.3}", started.elapsed().as_secs_f64());
            Ok(())
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Facilitator stand-in (a child process)
// ---------------------------------------------------------------------------------------------

fn facilitator_standin() -> Result<(), Box<dyn std::error::Error>> {
    use axum::routing::{get, post};
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        let supported = r#"{"kinds":[{"x402Version":2,"scheme":"exact","network":"eip155:196"}],"extensions":[],"signers":{}}"#;
        let verify = r#"{"isValid":true,"payer":"0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"}"#;
        let settle = r#"{"success":true,"status":"success","payer":"0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266","transaction":"0x1111111111111111111111111111111111111111111111111111111111111111","network":"eip155:196"}"#;
        let json = |body: &'static str| ([(http::header::CONTENT_TYPE, "application/json")], body);
        let app = axum::Router::new()
            .route("/supported", get(move || async move { json(supported) }))
            .route("/verify", post(move || async move { json(verify) }))
            .route("/settle", post(move || async move { json(settle) }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        println!("listening on http://{}", listener.local_addr()?);
        std::io::stdout().flush()?;
        axum::serve(listener, app).await?;
        Ok(())
    })
}

/// Starts a child and reads its `listening on <url>` first line.
fn spawn_listening(mut cmd: Command) -> Result<(Child, String), Box<dyn std::error::Error>> {
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::null()).spawn()?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    let url = line.trim().strip_prefix("listening on ").ok_or_else(|| format!("unexpected first line {line:?}"))?;
    Ok((child, url.to_owned()))
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// Paid requests: a wrk Lua script sending a fresh nonce per request
// ---------------------------------------------------------------------------------------------

/// A valid x402 payment for `url`, split so wrk can splice in a fresh 66-character nonce per
/// request: base64(prefix) ‖ base64(nonce) ‖ base64(suffix) (the prefix is padded with JSON
/// whitespace to a multiple of 3 bytes, so the three encodings concatenate).
async fn paid_header_parts(url: &str) -> Result<(String, String), Box<dyn std::error::Error>> {
    let http = reqwest::Client::new();
    let resp = http.get(url).send().await?;
    let header = resp.headers().get("payment-required").ok_or("no PAYMENT-REQUIRED")?.to_str()?.to_owned();
    let required = decode_payment_required_header(&header)?;
    let AnyPaymentRequired::V2(_) = &required else { return Err("expected a v2 challenge".into()) };
    let signer: pay402::evm::PrivateKeySigner = BUYER_KEY.parse()?;
    let client = X402Client::new().register("eip155:*", ExactEvmClientScheme::new(signer));
    let (_, value) = client.create_payment_header(&required).await?;
    let payload = match decode_payment_signature_header(&value)? {
        pay402::x402::AnyPaymentPayload::V2(p) => p,
        _ => return Err("expected a v2 payload".into()),
    };
    let nonce = payload.payload["authorization"]["nonce"].as_str().ok_or("no nonce")?.to_owned();
    let json = String::from_utf8(pay402::json::compact(&payload)?)?;
    let at = json.find(&nonce).ok_or("nonce not in JSON")?;
    let (prefix, rest) = json.split_at(at);
    let suffix = &rest[nonce.len()..];
    let pad = (3 - prefix.len() % 3) % 3;
    let prefix = format!("{}{prefix}", " ".repeat(pad));
    // The spliced header must decode to the same payload.
    let check = format!(
        "{}{}{}",
        safe_base64_encode(prefix.as_bytes()),
        safe_base64_encode(nonce.as_bytes()),
        safe_base64_encode(suffix.as_bytes())
    );
    assert_eq!(nonce.len(), 66);
    match decode_payment_signature_header(&check)? {
        pay402::x402::AnyPaymentPayload::V2(p) if p == payload => {}
        _ => return Err("spliced header does not round-trip".into()),
    }
    Ok((safe_base64_encode(prefix.as_bytes()), safe_base64_encode(suffix.as_bytes())))
}

fn paid_lua(prefix_b64: &str, suffix_b64: &str) -> String {
    format!(
        r#"-- pay402 bench: one fresh EIP-3009 nonce per request (the replay guard refuses reuse)
local b = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/'
local function enc(data)
  return ((data:gsub('.', function(x)
    local r, byte = '', x:byte()
    for i = 8, 1, -1 do r = r .. (byte % 2 ^ i - byte % 2 ^ (i - 1) > 0 and '1' or '0') end
    return r
  end) .. '0000'):gsub('%d%d%d?%d?%d?%d?', function(x)
    if #x < 6 then return '' end
    local c = 0
    for i = 1, 6 do c = c + (x:sub(i, i) == '1' and 2 ^ (6 - i) or 0) end
    return b:sub(c + 1, c + 1)
  end) .. ({{ '', '==', '=' }})[#data % 3 + 1])
end
local prefix, suffix = "{prefix_b64}", "{suffix_b64}"
local counter, tid, salt = 0, 0, 0
local threads = {{}}
function setup(thread) tid = tid + 1; thread:set("tid", tid) end
function init(args) salt = tonumber(args[1]) end
function request()
  counter = counter + 1
  local nonce = string.format("0x%08x%08x%048x", tid, salt, counter)
  return wrk.format("GET", nil, {{ ["PAYMENT-SIGNATURE"] = prefix .. enc(nonce) .. suffix }})
end
"#
    )
}

// ---------------------------------------------------------------------------------------------
// Load generation and measurement
// ---------------------------------------------------------------------------------------------

/// The on-CPU time of every thread of this process, in nanoseconds.
fn process_cpu_ns() -> u64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return 0 };
    tasks
        .filter_map(Result::ok)
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next().and_then(|v| v.parse::<u64>().ok()))
        .sum()
}

#[derive(Clone, Copy, Debug, Default)]
struct Load {
    rps: f64,
    requests: u64,
    non_2xx: u64,
    errors: u64,
    cpu_us_per_req: f64,
}

fn wrk(url: &str, secs: u64, connections: u32, script: Option<&std::path::Path>) -> Result<Load, String> {
    let mut cmd = Command::new("taskset");
    cmd.args(["-c", LOAD_CORE, "wrk", "-t1", "--timeout", "10s", &format!("-c{connections}"), &format!("-d{secs}s")]);
    if let Some(s) = script {
        // A salt unique to this invocation keeps every nonce fresh across runs.
        static SALT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);
        let salt = SALT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        cmd.arg("-s").arg(s).arg(url).arg("--").arg(salt.to_string());
    } else {
        cmd.arg(url);
    }
    let cpu0 = process_cpu_ns();
    let out = cmd.output().map_err(|e| format!("cannot run wrk (scripts/deps/60-wrk.sh installs it): {e}"))?;
    let cpu = process_cpu_ns().saturating_sub(cpu0);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        return Err(format!("wrk failed: {text}{}", String::from_utf8_lossy(&out.stderr)));
    }
    let field = |key: &str| -> Option<&str> { text.lines().find_map(|l| l.trim().strip_prefix(key)).map(str::trim) };
    let rps = field("Requests/sec:").and_then(|v| v.parse::<f64>().ok()).ok_or_else(|| format!("no rate: {text}"))?;
    let requests = text
        .lines()
        .find(|l| l.contains("requests in"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    let non_2xx = field("Non-2xx or 3xx responses:").and_then(|v| v.parse().ok()).unwrap_or(0);
    let errors = field("Socket errors:")
        .map(|v| v.split(',').filter_map(|p| p.split_whitespace().last()?.parse::<u64>().ok()).sum())
        .unwrap_or(0);
    #[allow(clippy::cast_precision_loss)] // a measurement, not money
    let cpu_us_per_req = if requests > 0 { cpu as f64 / 1000.0 / requests as f64 } else { 0.0 };
    Ok(Load { rps, requests, non_2xx, errors, cpu_us_per_req })
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 }
}

fn rss_kib(pid: u32, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| l.strip_prefix(key)).and_then(|v| v.split_whitespace().next()?.parse().ok())
}

struct Args {
    smoke: bool,
    runs: usize,
    secs: u64,
    connections: u32,
    out: Option<String>,
    example_bin: Option<String>,
    serve_only: bool,
}

fn parse_args() -> Result<Option<Args>, String> {
    let mut args =
        Args { smoke: false, runs: 5, secs: 5, connections: 32, out: None, example_bin: None, serve_only: false };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        match a.as_str() {
            "--facilitator" => return Ok(None),
            "--smoke" => args.smoke = true,
            "--serve-only" => args.serve_only = true,
            "--runs" => args.runs = value("--runs")?.parse().map_err(|e| format!("--runs: {e}"))?,
            "--secs" => args.secs = value("--secs")?.parse().map_err(|e| format!("--secs: {e}"))?,
            "--connections" => {
                args.connections = value("--connections")?.parse().map_err(|e| format!("--connections: {e}"))?
            }
            "--out" => args.out = Some(value("--out")?),
            "--example-bin" => args.example_bin = Some(value("--example-bin")?),
            "--bench" => {} // passed by `cargo bench`
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if args.smoke {
        args.runs = 1;
        args.secs = 1;
        args.connections = 4;
    }
    Ok(Some(args))
}

const SCENARIOS: [(&str, &str, &str); 7] = [
    ("static_402", "/static402", "hand-written 402, header computed once (the limit)"),
    ("x402_macro_unpaid", "/x402", "`#[x402]` route, unpaid 402"),
    ("x402_table_unpaid", "/t/table", "route-table (layer/middleware) route, unpaid 402"),
    ("mpp_charge_unpaid", "/pay", "`#[pay]` charge route, unpaid 402"),
    ("dual_unpaid", "/dual", "`#[x402]` + `#[pay]` dual route, unpaid merged 402"),
    ("lean_paid", "/lean", "hand-written paid handler: decode, verify + settle via reqwest, nothing else (the floor)"),
    ("x402_paid", "/x402", "`#[x402]` route, paid (verify + settle on the stand-in)"),
];

/// Whether a scenario sends paid requests (the wrk script with a fresh nonce per request).
fn is_paid(name: &str) -> bool {
    name.ends_with("_paid")
}

/// Runs the session load generator and measures the server (this process) meanwhile.
fn session_load(url: &str, secs: u64, connections: u32, max_rate: u32) -> Result<Load, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut child = Command::new("taskset")
        .args(["-c", LOAD_CORE])
        .arg(exe)
        .args(["--session-load", url, &secs.to_string(), &connections.to_string(), &max_rate.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("session load generator: {e}"))?;
    let mut stdout = BufReader::new(child.stdout.take().ok_or("no stdout")?);
    let mut line = String::new();
    stdout.read_line(&mut line).map_err(|e| e.to_string())?;
    if line.trim() != "ready" {
        let _ = child.wait();
        return Err(format!("session load generator: {line:?}"));
    }
    let cpu0 = process_cpu_ns();
    child.stdin.take().ok_or("no stdin")?.write_all(b"go\n").map_err(|e| e.to_string())?;
    line.clear();
    stdout.read_line(&mut line).map_err(|e| e.to_string())?;
    let cpu = process_cpu_ns().saturating_sub(cpu0);
    let _ = child.wait();
    let words: Vec<&str> = line.split_whitespace().collect();
    let field = |key: &str| words.iter().position(|w| *w == key).and_then(|i| words.get(i + 1)).copied();
    let num = |key: &str| field(key).and_then(|v| v.parse::<u64>().ok()).ok_or_else(|| format!("no {key}: {line:?}"));
    let (requests, errors, exhausted) = (num("requests")?, num("errors")?, num("exhausted")?);
    let secs = field("secs").and_then(|v| v.parse::<f64>().ok()).ok_or_else(|| format!("no secs: {line:?}"))?;
    if exhausted > 0 {
        eprintln!("session load: {exhausted} connections ran out of pre-signed vouchers (the rate is a lower bound)");
    }
    #[allow(clippy::cast_precision_loss)] // a measurement, not money
    let (rps, cpu_us_per_req) =
        (requests as f64 / secs, if requests > 0 { cpu as f64 / 1000.0 / requests as f64 } else { 0.0 });
    Ok(Load { rps, requests, non_2xx: errors, errors, cpu_us_per_req })
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some("--session-load") {
        let arg = |i: usize| argv.get(i).cloned().ok_or("--session-load URL SECS CONNECTIONS MAX_RATE");
        return session::load(&arg(2)?, arg(3)?.parse()?, arg(4)?.parse()?, arg(5)?.parse()?);
    }
    let Some(args) = parse_args()? else { return facilitator_standin() };
    // Pin this process (and every thread it starts from now on) to the server core.
    let pid = std::process::id().to_string();
    let pinned = Command::new("taskset").args(["-p", "-c", SERVER_CORE, &pid]).stdout(Stdio::null()).status();
    if !pinned.is_ok_and(|s| s.success()) {
        return Err("taskset (util-linux) is needed to pin the server".into());
    }
    let exe = std::env::current_exe()?;
    let mut fac_cmd = Command::new("taskset");
    fac_cmd.args(["-c", LOAD_CORE]).arg(&exe).arg("--facilitator");
    let (fac, fac_url) = spawn_listening(fac_cmd)?;
    let fac = Killed(fac);
    let dir = std::env::temp_dir().join(format!("pay402-bench-{pid}"));
    std::fs::create_dir_all(&dir)?;
    let redis = redis_server::Redis::start()?;
    let (axum_url, actix_url) = start_servers(&fac_url, &redis.url(), &dir)?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    // The hand-written 402 answers the `#[x402]` route's own challenge bytes.
    let challenge = rt.block_on(async {
        let resp = reqwest::get(format!("{axum_url}/x402")).await?;
        Ok::<_, reqwest::Error>(resp.headers().get("payment-required").map(|v| v.as_bytes().to_vec()))
    })?;
    let challenge = challenge.ok_or("the #[x402] route sent no PAYMENT-REQUIRED")?;
    let _ = STATIC_402.set(http::HeaderValue::from_bytes(&challenge)?);
    let AnyPaymentRequired::V2(required) = decode_payment_required_header(std::str::from_utf8(&challenge)?)? else {
        return Err("expected a v2 challenge".into());
    };
    let first = required.accepts.first().ok_or("the challenge offers nothing")?;
    let _ = lean::REQUIREMENTS.set(serde_json::to_value(first)?);
    let _ = STATIC_402_ACTIX.set(actix_web::http::header::HeaderValue::from_bytes(&challenge)?);
    if args.serve_only {
        // For profiling (`perf record -p <pid>` while wrk loads a route).
        for (framework, base) in [("axum", &axum_url), ("actix-web", &actix_url)] {
            let (prefix, suffix) = rt.block_on(paid_header_parts(&format!("{base}/x402")))?;
            let script = dir.join(format!("paid-{framework}.lua"));
            std::fs::write(&script, paid_lua(&prefix, &suffix))?;
            println!("paid-path wrk script for {framework}: {}", script.display());
        }
        println!("pid {pid}: axum {axum_url}, actix-web {actix_url}, facilitator stand-in {fac_url}");
        std::io::stdout().flush()?;
        loop {
            std::thread::park();
        }
    }

    let mut report = String::new();
    let mut line = |s: String| {
        println!("{s}");
        report.push_str(&s);
        report.push('\n');
    };
    line(format!(
        "runs: {}, {} s per measurement, wrk -t1 -c{} on core {LOAD_CORE}, servers on core {SERVER_CORE}{}",
        args.runs,
        args.secs,
        args.connections,
        if args.smoke { " (SMOKE MODE: figures are meaningless)" } else { "" }
    ));
    line(String::new());
    line(
        "| framework | path | req/s (median) | throughput ratio to bare (median of runs) | server CPU µs/req (median) | CPU ratio: bare µs ÷ path µs (median of runs) | ratio to the path's limit: unpaid throughput ÷ hand-written 402's; paid: floor's CPU ÷ path's CPU (median of runs) |"
            .into(),
    );
    line("|---|---|---:|---:|---:|---:|---:|".into());
    for (framework, base) in [("axum", &axum_url), ("actix-web", &actix_url)] {
        let (prefix, suffix) = rt.block_on(paid_header_parts(&format!("{base}/x402")))?;
        let script = dir.join(format!("paid-{framework}.lua"));
        std::fs::write(&script, paid_lua(&prefix, &suffix))?;
        let mut bare_rps = Vec::new();
        let mut bare_cpu = Vec::new();
        let mut per: Vec<[Vec<f64>; 5]> = vec![Default::default(); SCENARIOS.len()];
        // Warm-up (connection pools, lazily built caches).
        wrk(&format!("{base}/bare"), 1, args.connections, None)?;
        for (name, path, _) in &SCENARIOS {
            if !is_paid(name) {
                wrk(&format!("{base}{path}"), 1, args.connections, None)?;
            }
        }
        for _ in 0..args.runs {
            let (mut limit_rps, mut lean_cpu) = (f64::NAN, f64::NAN);
            for (i, (name, path, _)) in SCENARIOS.iter().enumerate() {
                let bare = wrk(&format!("{base}/bare"), args.secs, args.connections, None)?;
                let paid = is_paid(name);
                let load =
                    wrk(&format!("{base}{path}"), args.secs, args.connections, paid.then_some(script.as_path()))?;
                let expect_non_2xx = if paid { 0 } else { load.requests };
                // A wrong status always fails the run; socket errors (timeouts on a loaded CI
                // machine running a debug build) only fail a measuring run.
                let socket_errors = !args.smoke && (load.errors > 0 || bare.errors > 0);
                if socket_errors || load.non_2xx != expect_non_2xx || bare.non_2xx != 0 {
                    return Err(format!(
                        "{framework} {name}: unexpected answers ({} non-2xx of {}, {} socket errors)",
                        load.non_2xx, load.requests, load.errors
                    )
                    .into());
                }
                bare_rps.push(bare.rps);
                bare_cpu.push(bare.cpu_us_per_req);
                per[i][0].push(load.rps);
                per[i][1].push(load.rps / bare.rps);
                per[i][2].push(load.cpu_us_per_req);
                per[i][3].push(bare.cpu_us_per_req / load.cpu_us_per_req);
                // Against the path's own limit: an unpaid 402's throughput against the
                // hand-written 402's; the paid path's CPU against the hand-written floor's.
                match *name {
                    "static_402" => limit_rps = load.rps,
                    "lean_paid" => lean_cpu = load.cpu_us_per_req,
                    _ => {}
                }
                per[i][4].push(if paid { lean_cpu / load.cpu_us_per_req } else { load.rps / limit_rps });
            }
        }
        line(format!(
            "| {framework} | bare handler | {:.0} | 1.00 | {:.1} | 1.00 | |",
            median(bare_rps.clone()),
            median(bare_cpu.clone())
        ));
        for (i, (_, _, what)) in SCENARIOS.iter().enumerate() {
            let [rps, ratio, cpu, cpu_ratio, to_limit] = per[i].clone();
            line(format!(
                "| {framework} | {what} | {:.0} | {:.3} | {:.1} | {:.3} | {:.3} |",
                median(rps),
                median(ratio),
                median(cpu),
                median(cpu_ratio),
                median(to_limit)
            ));
        }
        let (bare_rps, bare_cpu) = (median(bare_rps), median(bare_cpu));
        for store in session::STORES {
            let (mut rps, mut cpu) = (Vec::new(), Vec::new());
            for _ in 0..args.runs {
                // Smoke runs (debug builds) pre-sign few vouchers: signing is slow there.
                let max_rate = if args.smoke { 200 } else { 15_000 };
                let load = session_load(&format!("{base}/s/{store}"), args.secs, args.connections, max_rate)?;
                if load.errors > 0 || load.requests == 0 {
                    return Err(
                        format!("{framework} session ({store}): {} refused of {}", load.errors, load.requests).into()
                    );
                }
                rps.push(load.rps);
                cpu.push(load.cpu_us_per_req);
            }
            let (rps, cpu) = (median(rps), median(cpu));
            line(format!(
                "| {framework} | MPP session voucher over HTTP, {store} store (a channel per connection) | {rps:.0} | {:.3} | {cpu:.1} | {:.3} | |",
                rps / bare_rps,
                bare_cpu / cpu
            ));
        }
    }

    if let Some(bin) = &args.example_bin {
        line(String::new());
        let mut cmd = Command::new("taskset");
        cmd.args(["-c", SERVER_CORE]).arg(bin).env("PAY402_ADDR", "127.0.0.1:0");
        for var in ["OKX_API_KEY", "OKX_SECRET_KEY", "OKX_PASSPHRASE"] {
            cmd.env_remove(var);
        }
        let (child, url) = spawn_listening(cmd)?;
        let child = Killed(child);
        let pid = child.0.id();
        std::thread::sleep(Duration::from_millis(if args.smoke { 200 } else { 2000 }));
        let idle = rss_kib(pid, "VmRSS:").unwrap_or(0);
        let started = Instant::now();
        let load = wrk(&url, args.secs.max(1) * 2, args.connections, None)?;
        let loaded_peak = rss_kib(pid, "VmHWM:").unwrap_or(0);
        let after = rss_kib(pid, "VmRSS:").unwrap_or(0);
        let name = std::path::Path::new(bin).file_name().and_then(|n| n.to_str()).unwrap_or("example");
        #[allow(clippy::cast_precision_loss)]
        let mib = |kib: u64| kib as f64 / 1024.0;
        line(format!(
            "example `{name}`: idle RSS {:.2} MiB; peak RSS under load {:.2} MiB ({:.0} req/s unpaid for {:.0} s); RSS after load {:.2} MiB",
            mib(idle),
            mib(loaded_peak),
            load.rps,
            started.elapsed().as_secs_f64(),
            mib(after)
        ));
    }
    if let Some(out) = &args.out {
        std::fs::write(out, &report)?;
    }
    let _ = std::fs::remove_dir_all(&dir);
    // Stop the children (`exit` runs no destructors), then leave without joining the server
    // threads (they run forever).
    drop(redis);
    drop(fac);
    std::process::exit(0);
}
