//! Exactly once under retries (issue 17): when settlement's outcome is unknown, the buyer
//! retries with the **same** payment and pays exactly once.
//!
//! A stand-in for OKX's hosted x402 facilitator runs on 127.0.0.1 (its own thread and runtime):
//! it re-checks every request's `OK-ACCESS-*` HMAC with its own code, verifies and settles with
//! an [`EmbeddedFacilitator`] ledger — which records every transfer and refuses a used nonce —
//! and can be told to misbehave after (or instead of) the transfer:
//!
//! | settle | what happens |
//! |---|---|
//! | `TimeoutAfterTransfer` | the transfer happens; the answer is `success: true, status: "timeout"` with its transaction |
//! | `TimeoutWithoutTransfer` | no transfer; the same `timeout` answer with a transaction that never lands |
//! | `StallAfterTransfer` | the transfer happens; the answer comes after the seller's client gave up (no transaction known) |
//!
//! `GET /settle/status` answers `pending` until the test switches it to the ledger's truth
//! (`success` for a transaction it holds, `failed` otherwise).
//!
//! Sellers run on axum and actix-web (route tables), and — for the shared-store scenario — as
//! three **processes** (this test binary re-executed, see [`seller_worker`]) sharing one
//! `redis-server` (replay keys and settlement records). Without `redis-server`
//! (`scripts/install-test-deps.sh`) that test fails; it never skips.

mod support;

use axum::http::{HeaderMap, Method, Uri};
use pay402::autopay::{AssetId, AutoPay, AutoPayMiddleware, AutoPayOutcome, PaymentDetail};
use pay402::chain::{NetworkRegistry, X_LAYER_USDT0};
use pay402::evm::{PrivateKeySigner, U256};
use pay402::okx::{OkxCredentials, OkxFacilitatorClient, OkxFacilitatorConfig};
use pay402::replay::{RecordStore, RedisRecordStore, RedisReplayStore, ReplayStore};
use pay402::x402::{
    AnyPaymentRequired, EmbeddedFacilitator, ExactEvmClientScheme, ExactEvmScheme, PaymentOption, PaymentPayload,
    PaymentRequirements, RetryDelivery, RouteConfig, X402Client, X402HttpServer, X402ResourceServer,
    decode_payment_required_header, decode_payment_response_header,
};
use serde_json::{Value, json};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::okx::{OkxKeys, TimestampFormat, check_okx_headers};
use support::worker::Worker;
use support::{FRAMEWORKS, Framework, Running};

const API_KEY: &str = "exactly-once-key";
const API_SECRET: &str = "exactly-once-secret";
const PASSPHRASE: &str = "exactly-once-pass";
const BASE: &str = "/api/v6/pay/x402";
const PAY_TO: &str = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C";
const BUYER_KEY: &str = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";
/// The transaction of a settlement that never lands.
const GHOST_TX: &str = "0x9999999999999999999999999999999999999999999999999999999999999999";
/// The price of `/report`: $0.001 = 1000 atomic USD₮0.
const PRICE: u64 = 1000;
const BODY: &str = "the paid report";

// ---------------------------------------------------------------------------------------------
// The facilitator stand-in
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Settle {
    Normal,
    TimeoutAfterTransfer,
    TimeoutWithoutTransfer,
    StallAfterTransfer,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Status {
    /// `pending`, whatever the transaction.
    Pending,
    /// The ledger's truth: `success` for a transaction it holds, `failed` otherwise.
    Ledger,
}

struct StandState {
    settle: Settle,
    status: Status,
    settle_calls: usize,
    status_calls: usize,
    problems: Vec<String>,
}

/// The OKX facilitator stand-in; stopped on drop.
struct Stand {
    url: String,
    ledger: EmbeddedFacilitator,
    state: Arc<Mutex<StandState>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Stand {
    fn start() -> Self {
        let ledger = EmbeddedFacilitator::new();
        let buyer: PrivateKeySigner = BUYER_KEY.parse().expect("key");
        ledger.fund(X_LAYER_USDT0, &buyer.address().to_string(), U256::from(1_000_000u64)).expect("fund");
        let state = Arc::new(Mutex::new(StandState {
            settle: Settle::Normal,
            status: Status::Pending,
            settle_calls: 0,
            status_calls: 0,
            problems: Vec::new(),
        }));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("non-blocking");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (l, st) = (ledger.clone(), Arc::clone(&state));
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("rt");
            rt.block_on(async move {
                let app = axum::Router::new().fallback(
                    move |method: Method, uri: Uri, headers: HeaderMap, body: axum::body::Bytes| {
                        let (l, st) = (l.clone(), Arc::clone(&st));
                        async move { answer(&l, &st, &method, &uri, &headers, &body).await }
                    },
                );
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                axum::serve(listener, app)
                    .with_graceful_shutdown(async move {
                        let _ = stopped.await;
                    })
                    .await
                    .expect("stand-in");
            });
        });
        Self { url, ledger, state, stop: Some(stop), thread: Some(thread) }
    }

    fn set(&self, settle: Settle, status: Status) {
        let mut st = self.state.lock().expect("state");
        st.settle = settle;
        st.status = status;
    }

    fn status(&self, status: Status) {
        self.state.lock().expect("state").status = status;
    }

    fn settle_calls(&self) -> usize {
        self.state.lock().expect("state").settle_calls
    }

    fn transfers(&self) -> usize {
        self.ledger.settlement_count()
    }

    fn assert_signed(&self) {
        let problems = self.state.lock().expect("state").problems.clone();
        assert!(problems.is_empty(), "the stand-in refused pay402's requests: {problems:?}");
    }

    fn client(&self) -> OkxFacilitatorClient {
        let creds = OkxCredentials::new(API_KEY, API_SECRET, PASSPHRASE);
        OkxFacilitatorClient::new(OkxFacilitatorConfig::new(creds).base_url(&self.url).timeout(Duration::from_secs(1)))
            .expect("facilitator client")
    }
}

impl Drop for Stand {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn envelope(data: Value) -> axum::Json<Value> {
    axum::Json(json!({"code": 0, "data": data, "msg": ""}))
}

async fn answer(
    ledger: &EmbeddedFacilitator,
    state: &Mutex<StandState>,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> axum::Json<Value> {
    let path_and_query = uri.path_and_query().map(|p| p.as_str().to_owned()).unwrap_or_default();
    let keys = OkxKeys { api_key: API_KEY, secret: API_SECRET, passphrase: PASSPHRASE };
    let problems = check_okx_headers(&keys, TimestampFormat::Millis, method, &path_and_query, headers, body);
    let (settle, status) = {
        let mut st = state.lock().expect("state");
        st.problems.extend(problems.iter().map(|p| format!("{path_and_query}: {p}")));
        (st.settle, st.status)
    };
    if !problems.is_empty() {
        return axum::Json(json!({"code": 50103, "data": null, "msg": "invalid signature"}));
    }
    let request: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let payment = || -> (PaymentPayload, PaymentRequirements) {
        (
            serde_json::from_value(request["paymentPayload"].clone()).expect("paymentPayload"),
            serde_json::from_value(request["paymentRequirements"].clone()).expect("paymentRequirements"),
        )
    };
    match uri.path().strip_prefix(BASE).unwrap_or_default() {
        "/supported" => envelope(json!({
            "kinds": [{"x402Version": 2, "scheme": "exact", "network": "eip155:196"}], "extensions": [], "signers": {},
        })),
        "/verify" => {
            let (p, r) = payment();
            envelope(serde_json::to_value(ledger.verify_now(&p, &r)).expect("json"))
        }
        "/settle" => {
            state.lock().expect("state").settle_calls += 1;
            let (p, r) = payment();
            let transfer = |ledger: &EmbeddedFacilitator| ledger.settle_now(&p, &r);
            let timeout = |tx: String, payer: Option<String>| json!({"success": true, "status": "timeout", "transaction": tx, "payer": payer, "network": "eip155:196"});
            match settle {
                Settle::Normal => envelope(serde_json::to_value(transfer(ledger)).expect("json")),
                Settle::TimeoutAfterTransfer => {
                    let done = transfer(ledger);
                    assert!(done.success, "the stand-in's transfer failed: {done:?}");
                    envelope(timeout(done.transaction, done.payer))
                }
                Settle::TimeoutWithoutTransfer => {
                    envelope(timeout(GHOST_TX.to_owned(), p.claimed_payer().map(str::to_owned)))
                }
                Settle::StallAfterTransfer => {
                    let done = transfer(ledger);
                    // Longer than the seller's facilitator client waits.
                    tokio::time::sleep(Duration::from_secs(3)).await;
                    envelope(serde_json::to_value(done).expect("json"))
                }
            }
        }
        "/settle/status" => {
            state.lock().expect("state").status_calls += 1;
            let tx = uri.query().and_then(|q| q.strip_prefix("txHash=")).unwrap_or_default().to_owned();
            let landed = ledger.settlements().iter().any(|s| s.transaction.eq_ignore_ascii_case(&tx));
            envelope(match (status, landed) {
                (Status::Pending, _) => json!({"success": true, "status": "pending", "transaction": tx}),
                (Status::Ledger, true) => json!({"success": true, "status": "success", "transaction": tx}),
                (Status::Ledger, false) => json!({
                    "success": false, "status": "failed", "errorReason": "transaction_failed", "transaction": tx,
                }),
            })
        }
        other => axum::Json(json!({"code": 50000, "data": null, "msg": format!("unknown endpoint {other}")})),
    }
}

// ---------------------------------------------------------------------------------------------
// Sellers
// ---------------------------------------------------------------------------------------------

fn x402_server(stand: &Stand, stores: Option<(Arc<dyn ReplayStore>, Arc<dyn RecordStore>)>) -> X402HttpServer {
    x402_server_with(stand, stores, RetryDelivery::RecordedResponse)
}

fn x402_server_with(
    stand: &Stand,
    stores: Option<(Arc<dyn ReplayStore>, Arc<dyn RecordStore>)>,
    delivery: RetryDelivery,
) -> X402HttpServer {
    let server = X402ResourceServer::new(stand.client())
        .register("eip155:196", ExactEvmScheme::new())
        .settlement_poll(Duration::from_millis(50), Duration::from_millis(200));
    let mut x402 = X402HttpServer::new(server)
        .route("GET /report", RouteConfig::new(PaymentOption::exact("$0.001", PAY_TO)).on_retry(delivery))
        .expect("route")
        .retry_after(Duration::from_secs(1));
    if let Some((replay, records)) = stores {
        x402 = x402.replay_store(replay).settlement_records(records);
    }
    x402
}

/// A seller of `GET /report`; counts its handler's runs and numbers its answers
/// (`the paid report #1`, `#2`, …) so a test can tell a recorded response from a fresh one.
async fn seller(fw: Framework, x402: X402HttpServer, runs: Arc<AtomicUsize>) -> Running {
    match fw {
        Framework::Axum => {
            let handler = move || {
                let n = runs.fetch_add(1, Ordering::SeqCst) + 1;
                async move { format!("{BODY} #{n}") }
            };
            let app = axum::Router::new()
                .route("/report", axum::routing::get(handler))
                .layer(pay402::axum::X402Layer::new(x402));
            support::serve_axum(app).await
        }
        Framework::Actix => support::serve_actix(move || {
            let runs = Arc::clone(&runs);
            actix_web::App::new().wrap(pay402::actix::X402Middleware::new(x402.clone())).route(
                "/report",
                actix_web::web::get().to(move || {
                    let n = runs.fetch_add(1, Ordering::SeqCst) + 1;
                    async move { format!("{BODY} #{n}") }
                }),
            )
        }),
    }
}

fn buyer_key() -> PrivateKeySigner {
    BUYER_KEY.parse().expect("key")
}

/// The unpaid 402 of `url`, and a signed payment header for it.
async fn sign_for(http: &reqwest::Client, url: &str) -> (String, String) {
    let unpaid = http.get(url).send().await.expect("unpaid request");
    assert_eq!(unpaid.status(), 402);
    let required = decode_payment_required_header(unpaid.headers()["payment-required"].to_str().expect("ascii"))
        .expect("challenge");
    let client = X402Client::new().register("eip155:196", ExactEvmClientScheme::new(buyer_key()));
    let (name, value) = client.create_payment_header(&required).await.expect("payment header");
    (name.to_owned(), value)
}

fn settlement_of(resp: &reqwest::Response) -> Option<pay402::x402::SettleResponse> {
    resp.headers()
        .get("payment-response")
        .map(|v| decode_payment_response_header(v.to_str().expect("ascii")).expect("PAYMENT-RESPONSE decodes"))
}

/// One exchange AutoPay had with the seller: the status, and the payment header it sent.
type Exchange = (u16, Option<String>);

/// Records every answer the network gave AutoPay.
#[derive(Clone, Default)]
struct Wire(Arc<Mutex<Vec<Exchange>>>);

#[async_trait::async_trait]
impl reqwest_middleware::Middleware for Wire {
    async fn handle(
        &self,
        req: reqwest::Request,
        ext: &mut http::Extensions,
        next: reqwest_middleware::Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        let payment = req.headers().get("payment-signature").map(|v| v.to_str().expect("ascii").to_owned());
        let resp = next.run(req, ext).await?;
        self.0.lock().expect("wire").push((resp.status().as_u16(), payment));
        Ok(resp)
    }
}

fn autopay() -> AutoPayMiddleware {
    AutoPay::new(buyer_key())
        .prefer([pay402::autopay::Protocol::X402])
        .max_per_request(AssetId::x_layer_usdt0(), "0.01".parse().expect("amount"))
        .max_total(AssetId::x_layer_usdt0(), "1".parse().expect("amount"))
        .registry(NetworkRegistry::x_layer())
        .unknown_outcome_wait(Duration::from_secs(20))
        .build()
        .expect("autopay")
}

// ---------------------------------------------------------------------------------------------
// One process
// ---------------------------------------------------------------------------------------------

/// Settle times out **after** the transfer happened. AutoPay gets 503 + Retry-After, retries
/// with the same signed payment, and once the facilitator confirms the transaction gets the
/// response: exactly one transfer, exactly one 2xx, the same payment header on every attempt,
/// one settle call, the amount spent once. By default the retry gets the response the handler
/// produced the first time (it ran once); a route set to re-run its handler runs it again.
#[tokio::test]
async fn timeout_after_the_transfer_autopay_retries_and_pays_once() {
    for (fw, delivery) in
        FRAMEWORKS.into_iter().flat_map(|fw| [(fw, RetryDelivery::RecordedResponse), (fw, RetryDelivery::RerunHandler)])
    {
        let stand = Stand::start();
        stand.set(Settle::TimeoutAfterTransfer, Status::Pending);
        let runs = Arc::new(AtomicUsize::new(0));
        let shop = seller(fw, x402_server_with(&stand, None, delivery), Arc::clone(&runs)).await;

        let autopay = autopay();
        let wire = Wire::default();
        let http = reqwest_middleware::ClientBuilder::new(
            reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client"),
        )
        .with(autopay.clone())
        .with(wire.clone())
        .build();
        // The facilitator confirms the transaction 2.5 s later.
        let confirm = {
            let state = Arc::clone(&stand.state);
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(2500)).await;
                state.lock().expect("state").status = Status::Ledger;
            })
        };
        let resp = http.get(format!("{}/report", shop.base)).send().await.expect("paid request");
        confirm.await.expect("confirm");
        assert_eq!(resp.status(), 200, "{fw:?}");
        let outcome = resp.extensions().get::<AutoPayOutcome>().cloned().expect("outcome");
        let PaymentDetail::X402 { settlement: Some(settled), .. } = outcome.detail else {
            panic!("{fw:?}: no settlement on the outcome")
        };
        assert!(settled.success, "{fw:?}: {settled:?}");
        let (want_body, want_runs) = match delivery {
            RetryDelivery::RerunHandler => (format!("{BODY} #2"), 2),
            _ => (format!("{BODY} #1"), 1),
        };
        assert_eq!(resp.text().await.expect("body"), want_body, "{fw:?} {delivery:?}");

        assert_eq!(stand.transfers(), 1, "{fw:?}: exactly one transfer");
        assert_eq!(stand.settle_calls(), 1, "{fw:?}: settled once, never re-submitted");
        assert_eq!(settled.transaction, stand.ledger.settlements()[0].transaction, "{fw:?}");
        let wire = wire.0.lock().expect("wire").clone();
        let statuses: Vec<u16> = wire.iter().map(|(s, _)| *s).collect();
        assert_eq!(statuses.iter().filter(|s| (200..300).contains(*s)).count(), 1, "{fw:?}: {statuses:?}");
        assert!(statuses.contains(&503), "{fw:?}: the outcome was unknown first: {statuses:?}");
        assert_eq!(statuses.iter().filter(|s| **s == 402).count(), 1, "{fw:?}: one challenge only: {statuses:?}");
        let paid: Vec<&String> = wire.iter().filter_map(|(_, p)| p.as_ref()).collect();
        assert!(paid.len() >= 2 && paid.iter().all(|p| *p == paid[0]), "{fw:?}: the same payment every time");
        assert_eq!(autopay.spent(&AssetId::x_layer_usdt0()), U256::from(PRICE), "{fw:?}: counted once");
        assert_eq!(runs.load(Ordering::SeqCst), want_runs, "{fw:?} {delivery:?}: the handler's runs");
        stand.assert_signed();
    }
}

/// Settle times out and the transfer did **not** happen: the retries are answered 503 while
/// the outcome is unknown, and 402 (with the failure) only once the facilitator proves the
/// transaction failed; the buyer's next payment is then served. Never a transfer for the first.
#[tokio::test]
async fn timeout_without_transfer_is_402_only_after_proof() {
    for fw in FRAMEWORKS {
        let stand = Stand::start();
        stand.set(Settle::TimeoutWithoutTransfer, Status::Pending);
        let runs = Arc::new(AtomicUsize::new(0));
        let shop = seller(fw, x402_server(&stand, None), Arc::clone(&runs)).await;
        let http = reqwest::Client::new();
        let url = format!("{}/report", shop.base);
        let (name, value) = sign_for(&http, &url).await;

        let first = http.get(&url).header(&name, &value).send().await.expect("paid");
        assert_eq!(first.status(), 503, "{fw:?}");
        assert_eq!(first.headers()["retry-after"], "1", "{fw:?}");
        assert!(first.headers().get("payment-required").is_none(), "{fw:?}: no new challenge");
        let body: Value = first.json().await.expect("json");
        assert_eq!(body["transaction"], GHOST_TX, "{fw:?}: {body}");
        let again = http.get(&url).header(&name, &value).send().await.expect("retry");
        assert_eq!(again.status(), 503, "{fw:?}: not proven yet");
        assert!(!again.text().await.expect("body").contains(BODY));

        stand.status(Status::Ledger);
        let proven = http.get(&url).header(&name, &value).send().await.expect("retry");
        assert_eq!(proven.status(), 402, "{fw:?}: proven failed");
        let failure = settlement_of(&proven).expect("PAYMENT-RESPONSE with the failure");
        assert!(!failure.success, "{fw:?}");
        assert_eq!(failure.error_reason.as_deref(), Some("transaction_failed"), "{fw:?}");
        let challenge = decode_payment_required_header(proven.headers()["payment-required"].to_str().expect("ascii"))
            .expect("a fresh challenge");
        assert!(matches!(challenge, AnyPaymentRequired::V2(_)));
        assert_eq!(stand.transfers(), 0, "{fw:?}: nothing moved");

        // A new payment is served normally.
        stand.set(Settle::Normal, Status::Ledger);
        let (name2, value2) = sign_for(&http, &url).await;
        assert_ne!(value2, value);
        let paid = http.get(&url).header(&name2, &value2).send().await.expect("paid");
        assert_eq!(paid.status(), 200, "{fw:?}");
        assert!(paid.text().await.expect("body").starts_with(BODY), "{fw:?}");
        assert_eq!(stand.transfers(), 1, "{fw:?}");
        // The failed payment stays refused.
        let old = http.get(&url).header(&name, &value).send().await.expect("old");
        assert_eq!(old.status(), 402, "{fw:?}");
        assert_eq!(stand.transfers(), 1, "{fw:?}");
        stand.assert_signed();
    }
}

/// The facilitator moved the money and never answered (no transaction known): the outcome stays
/// unknown — 503 on every retry, never a second transfer, never a new challenge, never the body.
/// A retry re-submits the identical payment (single-use on chain), which the ledger refuses as
/// a used nonce: that cannot prove anything, so it stays 503.
#[tokio::test]
async fn a_silent_facilitator_after_the_transfer_never_invites_a_second_payment() {
    for fw in FRAMEWORKS {
        let stand = Stand::start();
        stand.set(Settle::StallAfterTransfer, Status::Ledger);
        let runs = Arc::new(AtomicUsize::new(0));
        let shop = seller(fw, x402_server(&stand, None), Arc::clone(&runs)).await;
        let http = reqwest::Client::new();
        let url = format!("{}/report", shop.base);
        let (name, value) = sign_for(&http, &url).await;
        let first = http.get(&url).header(&name, &value).send().await.expect("paid");
        assert_eq!(first.status(), 503, "{fw:?}");
        let body: Value = first.json().await.expect("json");
        assert!(body.get("transaction").is_none(), "{fw:?}: {body}");
        assert_eq!(stand.transfers(), 1);

        stand.set(Settle::Normal, Status::Ledger);
        for _ in 0..2 {
            let retry = http.get(&url).header(&name, &value).send().await.expect("retry");
            assert_eq!(retry.status(), 503, "{fw:?}");
            assert!(retry.headers().get("payment-required").is_none(), "{fw:?}");
            assert!(!retry.text().await.expect("body").contains(BODY), "{fw:?}");
        }
        assert_eq!(stand.transfers(), 1, "{fw:?}: never a second transfer");
        assert_eq!(runs.load(Ordering::SeqCst), 1, "{fw:?}: the handler ran once, its body withheld");
        stand.assert_signed();
    }
}

// ---------------------------------------------------------------------------------------------
// Three processes sharing Redis
// ---------------------------------------------------------------------------------------------

const WORKER_ROLE: &str = "PAY402_EXACTLY_ONCE_WORKER";
const WORKER_STAND: &str = "PAY402_EXACTLY_ONCE_STAND";
const WORKER_REDIS: &str = "PAY402_EXACTLY_ONCE_REDIS";
const WORKER_PREFIX: &str = "PAY402_EXACTLY_ONCE_PREFIX";
const WORKER_FRAMEWORK: &str = "PAY402_EXACTLY_ONCE_FRAMEWORK";

/// The worker role: nothing in a normal test run; in a child started by [`Worker::spawn`] it
/// serves `GET /report` (axum, or actix-web when `$WORKER_FRAMEWORK` is `actix`) with the
/// facilitator stand-in at `$WORKER_STAND` and replay keys and settlement records in the Redis at
/// `$WORKER_REDIS`, until it is killed.
#[test]
fn seller_worker() {
    let Ok(_) = std::env::var(WORKER_ROLE) else { return };
    let stand_url = std::env::var(WORKER_STAND).expect("stand url");
    let redis = std::env::var(WORKER_REDIS).expect("redis url");
    let prefix = std::env::var(WORKER_PREFIX).expect("prefix");
    let actix = std::env::var(WORKER_FRAMEWORK).is_ok_and(|f| f == "actix");
    let build = |stand_url: String, redis: String, prefix: String| async move {
        let replay: Arc<dyn ReplayStore> =
            Arc::new(RedisReplayStore::connect(&redis, format!("{prefix}replay:")).await.expect("redis"));
        let records: Arc<dyn RecordStore> =
            Arc::new(RedisRecordStore::connect(&redis, format!("{prefix}records:")).await.expect("redis"));
        let creds = OkxCredentials::new(API_KEY, API_SECRET, PASSPHRASE);
        let client = OkxFacilitatorClient::new(
            OkxFacilitatorConfig::new(creds).base_url(&stand_url).timeout(Duration::from_secs(1)),
        )
        .expect("client");
        let server = X402ResourceServer::new(client)
            .register("eip155:196", ExactEvmScheme::new())
            .settlement_poll(Duration::from_millis(50), Duration::from_millis(200));
        X402HttpServer::new(server)
            .route("GET /report", RouteConfig::new(PaymentOption::exact("$0.001", PAY_TO)))
            .expect("route")
            .retry_after(Duration::from_secs(1))
            .replay_store(replay)
            .settlement_records(records)
    };
    if actix {
        actix_web::rt::System::new().block_on(async move {
            let x402 = build(stand_url, redis, prefix).await;
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            support::worker::announce_port(listener.local_addr().expect("addr").port());
            actix_web::HttpServer::new(move || {
                actix_web::App::new()
                    .wrap(pay402::actix::X402Middleware::new(x402.clone()))
                    .route("/report", actix_web::web::get().to(|| async { BODY }))
            })
            .workers(1)
            .listen(listener)
            .expect("listen")
            .run()
            .await
            .expect("serve");
        });
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    rt.block_on(async move {
        let x402 = build(stand_url, redis, prefix).await;
        let app = axum::Router::new()
            .route("/report", axum::routing::get(|| async { BODY }))
            .layer(pay402::axum::X402Layer::new(x402));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        support::worker::announce_port(listener.local_addr().expect("addr").port());
        axum::serve(listener, app).await.expect("serve");
    });
}

/// Three seller processes share Redis (A and C on axum, B on actix-web): the payment's
/// settlement times out at instance A after
/// the transfer; the retry lands on B while still pending (503), then on C once confirmed (200,
/// the recorded settlement); a further copy at A is a replay. One transfer, one settle call.
/// Then the "did not happen" case across instances: 503 at A, 402 at B only after the proof.
#[tokio::test]
async fn three_processes_sharing_redis_settle_a_retried_payment_once() {
    let redis = support::redis::RedisServer::start();
    let stand = Stand::start();
    let prefix = format!("exactly-once-{}:", std::process::id());
    let redis_url = redis.url();
    let workers: Vec<Worker> = [Framework::Axum, Framework::Actix, Framework::Axum]
        .into_iter()
        .map(|fw| {
            let framework = if fw == Framework::Actix { "actix" } else { "axum" };
            let env = [
                (WORKER_ROLE, "1"),
                (WORKER_STAND, stand.url.as_str()),
                (WORKER_REDIS, redis_url.as_str()),
                (WORKER_PREFIX, prefix.as_str()),
                (WORKER_FRAMEWORK, framework),
            ];
            Worker::spawn("seller_worker", &env)
        })
        .collect();
    let http = reqwest::Client::new();
    let url = |w: usize| format!("{}/report", workers[w].base);

    stand.set(Settle::TimeoutAfterTransfer, Status::Pending);
    let (name, value) = sign_for(&http, &url(0)).await;
    let first = http.get(url(0)).header(&name, &value).send().await.expect("A");
    assert_eq!(first.status(), 503);
    let tx = first.json::<Value>().await.expect("json")["transaction"].as_str().expect("tx").to_owned();
    let at_b = http.get(url(1)).header(&name, &value).send().await.expect("B");
    assert_eq!(at_b.status(), 503, "B sees the pending record");
    stand.status(Status::Ledger);
    let at_c = http.get(url(2)).header(&name, &value).send().await.expect("C");
    assert_eq!(at_c.status(), 200, "C delivers once it is confirmed");
    let settled = settlement_of(&at_c).expect("PAYMENT-RESPONSE");
    assert_eq!((settled.success, settled.transaction.as_str()), (true, tx.as_str()));
    assert_eq!(at_c.text().await.expect("body"), BODY);
    let replay = http.get(url(0)).header(&name, &value).send().await.expect("A again");
    assert_eq!(replay.status(), 402, "delivered once: a further copy is a replay");
    assert_eq!(stand.transfers(), 1);
    assert_eq!(stand.settle_calls(), 1);

    stand.set(Settle::TimeoutWithoutTransfer, Status::Pending);
    let (name, value) = sign_for(&http, &url(0)).await;
    assert_eq!(http.get(url(0)).header(&name, &value).send().await.expect("A").status(), 503);
    assert_eq!(http.get(url(1)).header(&name, &value).send().await.expect("B").status(), 503);
    stand.status(Status::Ledger);
    let proven = http.get(url(1)).header(&name, &value).send().await.expect("B");
    assert_eq!(proven.status(), 402, "proven failed");
    assert!(!settlement_of(&proven).expect("PAYMENT-RESPONSE").success);
    assert_eq!(stand.transfers(), 1, "nothing moved for the second payment");
    stand.assert_signed();
    drop(workers);
}

// ---------------------------------------------------------------------------------------------
// The attribute macros
// ---------------------------------------------------------------------------------------------

/// Counts the macro handlers' runs (one counter per test process; the test below runs its
/// frameworks one after the other).
static MACRO_RUNS: AtomicUsize = AtomicUsize::new(0);

mod axum_macro {
    use pay402::axum::x402;

    #[x402(price = "$0.001", pay_to = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C")]
    pub(crate) async fn report() -> String {
        let n = super::MACRO_RUNS.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        format!("{} #{n}", super::BODY)
    }
}

mod actix_macro {
    use pay402::actix::x402;

    #[actix_web::get("/report")]
    #[x402(price = "$0.001", pay_to = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C")]
    pub(crate) async fn report() -> String {
        let n = super::MACRO_RUNS.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        format!("{} #{n}", super::BODY)
    }
}

/// `#[x402]` handlers: a settlement that times out after the transfer is answered 503; the
/// retry with the same payment, once the transaction is confirmed, gets the response the handler
/// produced the first time — it does not run again.
#[tokio::test]
async fn macro_handlers_deliver_the_recorded_response_to_the_retry() {
    for fw in FRAMEWORKS {
        let stand = Stand::start();
        stand.set(Settle::TimeoutAfterTransfer, Status::Pending);
        let server = X402ResourceServer::new(stand.client())
            .register("eip155:196", ExactEvmScheme::new())
            .settlement_poll(Duration::from_millis(50), Duration::from_millis(200));
        let x402 = X402HttpServer::new(server).retry_after(Duration::from_secs(1));
        let before = MACRO_RUNS.load(Ordering::SeqCst);
        let shop = match fw {
            Framework::Axum => {
                let app = axum::Router::new().route("/report", axum::routing::get(axum_macro::report)).with_state(x402);
                support::serve_axum(app).await
            }
            Framework::Actix => {
                let data = actix_web::web::Data::new(x402);
                support::serve_actix(move || actix_web::App::new().app_data(data.clone()).service(actix_macro::report))
            }
        };
        let http = reqwest::Client::new();
        let url = format!("{}/report", shop.base);
        let (name, value) = sign_for(&http, &url).await;
        let first = http.get(&url).header(&name, &value).send().await.expect("paid");
        assert_eq!(first.status(), 503, "{fw:?}");
        stand.status(Status::Ledger);
        let retry = http.get(&url).header(&name, &value).send().await.expect("retry");
        assert_eq!(retry.status(), 200, "{fw:?}");
        assert!(settlement_of(&retry).expect("PAYMENT-RESPONSE").success, "{fw:?}");
        let runs = MACRO_RUNS.load(Ordering::SeqCst) - before;
        assert_eq!(retry.text().await.expect("body"), format!("{BODY} #{}", before + 1), "{fw:?}");
        assert_eq!(runs, 1, "{fw:?}: the handler ran once");
        assert_eq!(stand.transfers(), 1, "{fw:?}");
    }
}
