//! F5 (no drop guards: a cancelled request skipped settlement and leaked reservations) and L9
//! (`Mpp::expires_at` panicked on a huge `expires_in`).
//!
//! Promise: every reservation made before a handler ends in exactly one of commit or release —
//! also when the client disconnects, a timeout layer cancels the request, or the handler panics.
//! The clients here close their TCP connection (RST) at a chosen point: while the facilitator
//! verifies, while the handler runs, or while the facilitator settles.

use crate::support::accounts::{PAYEE, PAYEE_KEY, PAYER, PAYER_KEY, USDT0};
use crate::support::{self, FRAMEWORKS, Framework, Gate, GatedFacilitator, Running};
use pay402::chain::NetworkRegistry;
use pay402::chain::X_LAYER_USDT0;
use pay402::completion::CancelPolicy;
use pay402::evm::{PrivateKeySigner, U256, signer_from_hex};
use pay402::mpp::{
    ChannelState, ChannelStore, ChargeIntent, EmbeddedSa, EvmMethod, InMemoryChannelStore, Mpp, MppChargeClient,
    ParsedChallenge, PaySpec, Receipt, SessionClient, SessionIntent, parse_www_authenticate,
};
use pay402::okx::sa::{
    ChargeReceipt, ChargeSettleRequest, ChargeVerifyHashRequest, SaClient, SaError, SessionCloseRequest,
    SessionOpenRequest, SessionReceipt, SessionSettleRequest, SessionStatus, SessionTopUpRequest,
};
use pay402::web::RequestContext;
use pay402::x402::EmbeddedFacilitator;
use pay402::x402::X402Client;
use pay402::x402::X402ResourceServer;
use pay402::x402::{
    AnyPaymentPayload, ExactEvmClientScheme, ExactEvmScheme, decode_payment_required_header,
    encode_payment_signature_header,
};
use pay402::x402::{PaymentOption, RouteConfig, X402HttpServer};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

const X402_PAY_TO: &str = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C";
const BUYER_KEY: &str = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d";
const PRICE: u64 = 1000;
const WAIT: Duration = Duration::from_secs(15);

/// The tests share the `#[pay]` handlers' static gates: they run one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Fires (adds a permit) when a request future is dropped before it completed.
#[derive(Clone)]
struct Tripwire(Arc<tokio::sync::Semaphore>);

impl Default for Tripwire {
    fn default() -> Self {
        Self(Arc::new(tokio::sync::Semaphore::new(0)))
    }
}

struct Armed(Option<Arc<tokio::sync::Semaphore>>);

impl Drop for Armed {
    fn drop(&mut self) {
        if let Some(s) = self.0.take() {
            s.add_permits(1);
        }
    }
}

impl Armed {
    /// The request completed.
    fn defuse(mut self) {
        self.0 = None;
    }
}

impl Tripwire {
    fn arm(&self) -> Armed {
        Armed(Some(Arc::clone(&self.0)))
    }

    /// Waits until a request was cancelled.
    async fn tripped(&self) {
        tokio::time::timeout(WAIT, self.0.acquire()).await.expect("the request was cancelled").expect("open").forget();
    }
}

/// Polls `check` until it holds (or fails after [`WAIT`]).
async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// x402
// ---------------------------------------------------------------------------------------------

struct X402Fixture {
    running: Running,
    fac: GatedFacilitator,
    handler: Arc<Gate>,
    cancelled: Tripwire,
    settled: Arc<AtomicUsize>,
    settle_failed: Arc<AtomicUsize>,
    buyer: PrivateKeySigner,
    http: reqwest::Client,
}

/// A server with `/paid` (answers at once), `/slow` (waits at the handler gate) and `/boom`
/// (panics), behind the route-table layer and an outer layer noticing cancelled requests.
async fn x402_start(fw: Framework, policy: CancelPolicy, timeout: Option<Duration>) -> X402Fixture {
    let embedded = EmbeddedFacilitator::new();
    let buyer: PrivateKeySigner = BUYER_KEY.parse().expect("key");
    embedded.fund(X_LAYER_USDT0, &buyer.address().to_string(), U256::from(1_000_000u64)).expect("fund");
    let fac = GatedFacilitator::new(embedded);
    let (settled, settle_failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (s, f) = (Arc::clone(&settled), Arc::clone(&settle_failed));
    let server = X402ResourceServer::new(fac.clone())
        .register("eip155:196", ExactEvmScheme::new())
        .on_after_settle(move |_, _| {
            s.fetch_add(1, Ordering::SeqCst);
            async {}
        })
        .on_settle_failure(move |_, _| {
            f.fetch_add(1, Ordering::SeqCst);
            async { None }
        });
    let route = || RouteConfig::new(PaymentOption::exact("$0.001", X402_PAY_TO));
    let x402 = X402HttpServer::new(server)
        .cancel_policy(policy)
        .route("GET /paid", route())
        .and_then(|s| s.route("GET /slow", route()))
        .and_then(|s| s.route("GET /boom", route()))
        .expect("routes");
    let handler = Arc::new(Gate::new());
    let cancelled = Tripwire::default();
    let running = match fw {
        Framework::Axum => {
            let h = Arc::clone(&handler);
            let slow = move || {
                let h = Arc::clone(&h);
                async move {
                    h.pass().await;
                    "slow"
                }
            };
            let trip = cancelled.clone();
            let app = axum::Router::new()
                .route("/paid", axum::routing::get(|| async { "paid" }))
                .route("/slow", axum::routing::get(slow))
                .route("/boom", axum::routing::get(boom))
                .layer(pay402::axum::X402Layer::new(x402))
                .layer(axum::middleware::from_fn(move |req, next: axum::middleware::Next| {
                    let trip = trip.clone();
                    async move {
                        let armed = trip.arm();
                        let resp = match timeout {
                            Some(t) => match tokio::time::timeout(t, next.run(req)).await {
                                Ok(r) => r,
                                Err(_) => {
                                    use axum::response::IntoResponse as _;
                                    // The timeout cancelled the request: as a disconnect.
                                    return axum::http::StatusCode::GATEWAY_TIMEOUT.into_response();
                                }
                            },
                            None => next.run(req).await,
                        };
                        armed.defuse();
                        resp
                    }
                }));
            support::serve_axum(app).await
        }
        Framework::Actix => {
            use actix_web::dev::Service as _;
            let (h, trip) = (Arc::clone(&handler), cancelled.clone());
            support::serve_actix(move || {
                let h = Arc::clone(&h);
                let trip = trip.clone();
                actix_web::App::new()
                    .wrap(pay402::actix::X402Middleware::new(x402.clone()))
                    .wrap_fn(move |req, srv| {
                        let fut = srv.call(req);
                        let armed = trip.arm();
                        async move {
                            let r = fut.await;
                            armed.defuse();
                            r
                        }
                    })
                    .route("/paid", actix_web::web::get().to(|| async { "paid" }))
                    .route(
                        "/slow",
                        actix_web::web::get().to(move || {
                            let h = Arc::clone(&h);
                            async move {
                                h.pass().await;
                                "slow"
                            }
                        }),
                    )
                    .route("/boom", actix_web::web::get().to(boom))
            })
        }
    };
    X402Fixture { running, fac, handler, cancelled, settled, settle_failed, buyer, http: reqwest::Client::new() }
}

async fn boom() -> &'static str {
    panic!("handler panicked (test)")
}

impl X402Fixture {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.running.base)
    }

    fn buyer_balance(&self) -> U256 {
        self.fac.inner.balance(X_LAYER_USDT0, &self.buyer.address().to_string())
    }

    /// A valid `PAYMENT-SIGNATURE` for `path`.
    async fn payment(&self, path: &str) -> String {
        let resp = self.http.get(self.url(path)).send().await.expect("request");
        assert_eq!(resp.status(), 402);
        let header = resp.headers()["payment-required"].to_str().expect("ascii");
        let required = decode_payment_required_header(header).expect("decodes");
        let client = X402Client::new().register("eip155:196", ExactEvmClientScheme::new(self.buyer.clone()));
        let AnyPaymentPayload::V2(p) = client.create_payment_payload(&required).await.expect("pays") else {
            panic!("v2")
        };
        encode_payment_signature_header(&p).expect("encodes")
    }

    async fn pay(&self, path: &str, payment: &str) -> u16 {
        let resp = self.http.get(self.url(path)).header("PAYMENT-SIGNATURE", payment).send().await.expect("request");
        resp.status().as_u16()
    }
}

/// (a) The client disconnects while the facilitator verifies: the replay key reserved before
/// verification is released, so the same payment is accepted afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f5_disconnect_during_verify_releases_the_replay_key() {
    let _serial = SERIAL.lock().await;
    for fw in FRAMEWORKS {
        let f = x402_start(fw, CancelPolicy::Complete, None).await;
        let payment = f.payment("/paid").await;
        let before = f.buyer_balance();
        f.fac.verify_gate.arm();
        let conn = support::send_raw(&f.running.base, "/paid", &[("PAYMENT-SIGNATURE", &payment)]).await;
        f.fac.verify_gate.entered().await;
        support::disconnect(conn);
        f.fac.verify_gate.dropped().await;
        f.cancelled.tripped().await;
        f.fac.verify_gate.open();
        let mut status = 0;
        eventually("the same payment is accepted again", async || {
            status = f.pay("/paid", &payment).await;
            status == 200
        })
        .await;
        assert_eq!(status, 200, "{fw:?}");
        assert_eq!(f.buyer_balance(), before - U256::from(PRICE), "{fw:?}: settled once, by the retry");
        assert_eq!(f.settled.load(Ordering::SeqCst), 1, "{fw:?}");
    }
}

/// (b) The client disconnects while the handler runs: with the default policy the payment is
/// settled exactly once (the handler's side effects may have happened).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f5_disconnect_while_the_handler_runs_settles_once() {
    let _serial = SERIAL.lock().await;
    for fw in FRAMEWORKS {
        let f = x402_start(fw, CancelPolicy::Complete, None).await;
        let payment = f.payment("/slow").await;
        let before = f.buyer_balance();
        f.handler.arm();
        let conn = support::send_raw(&f.running.base, "/slow", &[("PAYMENT-SIGNATURE", &payment)]).await;
        f.handler.entered().await;
        support::disconnect(conn);
        f.handler.dropped().await;
        f.cancelled.tripped().await;
        eventually("the cancelled request's payment is settled", async || f.settled.load(Ordering::SeqCst) == 1).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(f.buyer_balance(), before - U256::from(PRICE), "{fw:?}: the ledger moved once");
        assert_eq!(f.fac.settles.load(Ordering::SeqCst), 1, "{fw:?}");
        assert_eq!(f.settle_failed.load(Ordering::SeqCst), 0, "{fw:?}");
        f.handler.open();
        assert_eq!(f.pay("/paid", &payment).await, 402, "{fw:?}: a settled payment is not reusable");
        assert_eq!(f.fac.settles.load(Ordering::SeqCst), 1, "{fw:?}");
    }
}

/// (b) With `CancelPolicy::Release`, a request cancelled while the handler runs is released:
/// nothing is settled and the same payment can be used again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f5_disconnect_while_the_handler_runs_releases_with_the_release_policy() {
    let _serial = SERIAL.lock().await;
    for fw in FRAMEWORKS {
        let f = x402_start(fw, CancelPolicy::Release, None).await;
        let payment = f.payment("/slow").await;
        let before = f.buyer_balance();
        f.handler.arm();
        let conn = support::send_raw(&f.running.base, "/slow", &[("PAYMENT-SIGNATURE", &payment)]).await;
        f.handler.entered().await;
        support::disconnect(conn);
        f.handler.dropped().await;
        f.cancelled.tripped().await;
        f.handler.open();
        eventually("the released payment is accepted again", async || f.pay("/paid", &payment).await == 200).await;
        assert_eq!(f.buyer_balance(), before - U256::from(PRICE), "{fw:?}: settled once, by the retry");
        assert_eq!(f.fac.settles.load(Ordering::SeqCst), 1, "{fw:?}");
    }
}

/// A panicking handler releases the payment (like a status ≥ 400): nothing is settled and the
/// same payment can be used again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f5_panicking_handler_releases_the_x402_payment() {
    let _serial = SERIAL.lock().await;
    for fw in FRAMEWORKS {
        let f = x402_start(fw, CancelPolicy::Complete, None).await;
        let payment = f.payment("/boom").await;
        let before = f.buyer_balance();
        let answer = f.http.get(f.url("/boom")).header("PAYMENT-SIGNATURE", &payment).send().await;
        assert!(answer.map_or(true, |r| r.status().as_u16() >= 500), "{fw:?}");
        eventually("the payment is released", async || f.pay("/paid", &payment).await == 200).await;
        assert_eq!(f.buyer_balance(), before - U256::from(PRICE), "{fw:?}: settled once, by the retry");
        assert_eq!(f.fac.settles.load(Ordering::SeqCst), 1, "{fw:?}");
    }
}

/// (c) The client disconnects while the facilitator settles: the settlement is not cut off; it
/// completes, and its outcome is recorded (the after-settle hook fires).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f5_disconnect_during_settlement_completes_and_reports() {
    let _serial = SERIAL.lock().await;
    for fw in FRAMEWORKS {
        let f = x402_start(fw, CancelPolicy::Complete, None).await;
        let payment = f.payment("/paid").await;
        let before = f.buyer_balance();
        f.fac.settle_gate.arm();
        let conn = support::send_raw(&f.running.base, "/paid", &[("PAYMENT-SIGNATURE", &payment)]).await;
        f.fac.settle_gate.entered().await;
        support::disconnect(conn);
        f.cancelled.tripped().await;
        // Give a cut-off settlement the chance to be dropped before the facilitator answers.
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!f.fac.settle_gate.was_dropped(), "{fw:?}: the settlement in flight was cut off");
        f.fac.settle_gate.open();
        eventually("the settlement completes and is reported", async || f.settled.load(Ordering::SeqCst) == 1).await;
        assert_eq!(f.buyer_balance(), before - U256::from(PRICE), "{fw:?}");
        assert_eq!(f.fac.settles.load(Ordering::SeqCst), 1, "{fw:?}");
    }
}

/// A timeout layer cancelling the request while the handler runs counts as a cancellation: the
/// payment is settled exactly once (default policy).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f5_timeout_layer_completes_the_x402_payment() {
    let _serial = SERIAL.lock().await;
    let f = x402_start(Framework::Axum, CancelPolicy::Complete, Some(Duration::from_millis(300))).await;
    let payment = f.payment("/slow").await;
    let before = f.buyer_balance();
    f.handler.arm();
    assert_eq!(f.pay("/slow", &payment).await, 504);
    f.handler.dropped().await;
    eventually("the timed-out request's payment is settled", async || f.settled.load(Ordering::SeqCst) == 1).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(f.buyer_balance(), before - U256::from(PRICE));
    assert_eq!(f.fac.settles.load(Ordering::SeqCst), 1);
}

// ---------------------------------------------------------------------------------------------
// MPP sessions
// ---------------------------------------------------------------------------------------------

const COST: u128 = 1000;
const REALM: &str = "api.example.com";
const SECRET: &str = "completion-secret-at-least-32-bytes-long-hmac-key";

/// Held by the `#[pay]` handlers (plain fns cannot capture).
static MACRO_GATE: Gate = Gate::new();

#[pay402::axum::pay(amount = "0.001", intent = "session")]
async fn axum_macro_metered(receipt: Receipt) -> String {
    MACRO_GATE.pass().await;
    receipt.reference
}

#[pay402::axum::pay(amount = "0.001", intent = "session")]
async fn axum_macro_boom(_receipt: Receipt) -> String {
    panic!("handler panicked (test)")
}

#[actix_web::get("/macro")]
#[pay402::actix::pay(amount = "0.001", intent = "session")]
async fn actix_macro_metered(receipt: Receipt) -> String {
    MACRO_GATE.pass().await;
    receipt.reference
}

#[actix_web::get("/macro-boom")]
#[pay402::actix::pay(amount = "0.001", intent = "session")]
async fn actix_macro_boom(_receipt: Receipt) -> String {
    panic!("handler panicked (test)")
}

fn session_spec() -> PaySpec {
    PaySpec { amount: "0.001".into(), intent: "session".into(), ..PaySpec::default() }
}

struct SessionFixture {
    running: Running,
    mpp: Mpp,
    store: Arc<dyn ChannelStore>,
    client: SessionClient,
    handler: Arc<Gate>,
    cancelled: Tripwire,
    http: reqwest::Client,
}

/// `/metered` (waits at the handler gate) and `/boom` (panics) behind the route-table layer;
/// `/macro` and `/macro-boom` through `#[pay]`.
async fn session_start(fw: Framework, timeout: Option<Duration>) -> SessionFixture {
    let sa = EmbeddedSa::new().with_registry(NetworkRegistry::x_layer());
    sa.fund(USDT0, PAYER, U256::from(10_000_000u64)).expect("fund");
    let store: Arc<dyn ChannelStore> = Arc::new(InMemoryChannelStore::new());
    let intent = SessionIntent::new(sa, PAYEE)
        .signer(Arc::new(signer_from_hex(PAYEE_KEY).expect("key")))
        .store(Arc::clone(&store));
    let method = EvmMethod::x_layer(PAYEE).with_session(intent);
    let mpp = Mpp::new(method, REALM, SECRET)
        .expect("mpp")
        .route("GET /metered", session_spec())
        .and_then(|m| m.route("GET /boom", session_spec()))
        .expect("routes");
    let handler = Arc::new(Gate::new());
    let cancelled = Tripwire::default();
    let running = match fw {
        Framework::Axum => {
            let h = Arc::clone(&handler);
            let metered = move |receipt: Receipt| {
                let h = Arc::clone(&h);
                async move {
                    h.pass().await;
                    receipt.reference
                }
            };
            let trip = cancelled.clone();
            let app = axum::Router::new()
                .route("/metered", axum::routing::get(metered))
                .route("/boom", axum::routing::get(|_: Receipt| boom()))
                .route("/macro", axum::routing::get(axum_macro_metered))
                .route("/macro-boom", axum::routing::get(axum_macro_boom))
                .layer(pay402::axum::MppLayer::new(mpp.clone()))
                .layer(axum::middleware::from_fn(move |req, next: axum::middleware::Next| {
                    let trip = trip.clone();
                    async move {
                        let armed = trip.arm();
                        let resp = match timeout {
                            Some(t) => match tokio::time::timeout(t, next.run(req)).await {
                                Ok(r) => r,
                                Err(_) => {
                                    use axum::response::IntoResponse as _;
                                    return axum::http::StatusCode::GATEWAY_TIMEOUT.into_response();
                                }
                            },
                            None => next.run(req).await,
                        };
                        armed.defuse();
                        resp
                    }
                }))
                .with_state(mpp.clone());
            support::serve_axum(app).await
        }
        Framework::Actix => {
            use actix_web::dev::Service as _;
            let (h, trip, m) = (Arc::clone(&handler), cancelled.clone(), mpp.clone());
            let data = actix_web::web::Data::new(mpp.clone());
            support::serve_actix(move || {
                let h = Arc::clone(&h);
                let trip = trip.clone();
                actix_web::App::new()
                    .app_data(data.clone())
                    .service(actix_macro_metered)
                    .service(actix_macro_boom)
                    .wrap(pay402::actix::MppMiddleware::new(m.clone()))
                    .wrap_fn(move |req, srv| {
                        let fut = srv.call(req);
                        let armed = trip.arm();
                        async move {
                            let r = fut.await;
                            armed.defuse();
                            r
                        }
                    })
                    .route(
                        "/metered",
                        actix_web::web::get().to(move |receipt: Receipt| {
                            let h = Arc::clone(&h);
                            async move {
                                h.pass().await;
                                receipt.reference
                            }
                        }),
                    )
                    .route("/boom", actix_web::web::get().to(|_: Receipt| boom()))
            })
        }
    };
    let client = SessionClient::new(signer_from_hex(PAYER_KEY).expect("key")).with_registry(NetworkRegistry::x_layer());
    SessionFixture { running, mpp, store, client, handler, cancelled, http: reqwest::Client::new() }
}

fn ctx(authorization: Option<&str>) -> RequestContext {
    let mut headers = http::HeaderMap::new();
    if let Some(a) = authorization {
        headers.insert(http::header::AUTHORIZATION, a.parse().expect("header"));
    }
    RequestContext::new(http::Method::GET, "http://api.example.com/metered".into(), headers)
}

impl SessionFixture {
    async fn challenge(&self) -> ParsedChallenge {
        let resp = self.mpp.process(&ctx(None), &session_spec()).await.expect_err("a challenge");
        assert_eq!(resp.status, 402);
        let www = resp.headers["www-authenticate"].to_str().expect("ascii").to_owned();
        parse_www_authenticate(&[&www]).expect("parses").remove(0)
    }

    /// Opens a channel with `deposit` (a management answer).
    async fn open(&self, c: &ParsedChallenge, deposit: u64) -> String {
        let (channel, header) = self.client.open_header(c, U256::from(deposit)).expect("open");
        let resp = self.mpp.process(&ctx(Some(&header)), &session_spec()).await.expect_err("management");
        assert_eq!(resp.status, 200, "{}", String::from_utf8_lossy(&resp.body));
        channel
    }

    async fn state(&self, channel: &str) -> ChannelState {
        self.store.get(channel).await.expect("store").expect("channel").value
    }
}

/// A disconnect while a session handler runs commits the reservation (default policy): the
/// channel's `reserved` is back to 0 and `spent` grew by exactly the price. A panicking handler
/// releases it: `reserved` back to 0, `spent` unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f5_session_disconnect_commits_and_panic_releases_the_reservation() {
    let _serial = SERIAL.lock().await;
    for fw in FRAMEWORKS {
        let f = session_start(fw, None).await;
        let c = f.challenge().await;
        let channel = f.open(&c, 100_000).await;
        for (path, gate) in [("/metered", &*f.handler), ("/macro", &MACRO_GATE)] {
            let spent = f.state(&channel).await.spent;
            let voucher = f.client.next_voucher(&c, &channel, U256::from(COST)).expect("voucher");
            gate.arm();
            let conn = support::send_raw(&f.running.base, path, &[("Authorization", &voucher)]).await;
            gate.entered().await;
            assert_eq!(f.state(&channel).await.reserved, COST, "{fw:?} {path}: reserved while the handler runs");
            support::disconnect(conn);
            gate.dropped().await;
            f.cancelled.tripped().await;
            gate.open();
            eventually("the reservation is committed", async || f.state(&channel).await.reserved == 0).await;
            let s = f.state(&channel).await;
            assert_eq!((s.reserved, s.spent), (0, spent + COST), "{fw:?} {path}: committed once");
        }
        for path in ["/boom", "/macro-boom"] {
            let spent = f.state(&channel).await.spent;
            let voucher = f.client.next_voucher(&c, &channel, U256::from(COST)).expect("voucher");
            let answer = f.http.get(format!("{}{path}", f.running.base)).header("Authorization", &voucher).send().await;
            assert!(answer.map_or(true, |r| r.status().as_u16() >= 500), "{fw:?} {path}");
            eventually("the reservation is released", async || f.state(&channel).await.reserved == 0).await;
            assert_eq!(f.state(&channel).await.spent, spent, "{fw:?} {path}: a panicking handler is not charged");
        }
    }
}

/// A timeout layer cancelling a session request while the handler runs commits the reservation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f5_timeout_layer_commits_the_session_reservation() {
    let _serial = SERIAL.lock().await;
    let f = session_start(Framework::Axum, Some(Duration::from_millis(300))).await;
    let c = f.challenge().await;
    let channel = f.open(&c, 100_000).await;
    for (path, gate) in [("/metered", &*f.handler), ("/macro", &MACRO_GATE)] {
        let spent = f.state(&channel).await.spent;
        let voucher = f.client.next_voucher(&c, &channel, U256::from(COST)).expect("voucher");
        gate.arm();
        let resp = f.http.get(format!("{}{path}", f.running.base)).header("Authorization", &voucher).send().await;
        assert_eq!(resp.expect("answer").status(), 504, "{path}");
        gate.dropped().await;
        gate.open();
        eventually("the reservation is committed", async || f.state(&channel).await.reserved == 0).await;
        assert_eq!(f.state(&channel).await.spent, spent + COST, "{path}");
    }
}

// ---------------------------------------------------------------------------------------------
// L9
// ---------------------------------------------------------------------------------------------

/// A route configured with an `expires_in` beyond the date range gets challenges with the
/// default lifetime instead of panicking the request.
#[tokio::test]
async fn l9_huge_expires_in_fails_closed_to_the_default_lifetime() {
    let sa = EmbeddedSa::new().with_registry(NetworkRegistry::x_layer());
    let method = EvmMethod::x_layer(PAYEE).with_session(SessionIntent::new(sa, PAYEE));
    let huge = PaySpec { expires_in: Some(Duration::from_secs(1 << 62)), ..session_spec() };
    let mpp = Mpp::new(method, REALM, SECRET).expect("mpp").route("GET /metered", huge).expect("route");
    let app = axum::Router::new()
        .route("/metered", axum::routing::get(|| async { "metered" }))
        .layer(pay402::axum::MppLayer::new(mpp));
    let running = support::serve_axum(app).await;
    let resp = reqwest::get(format!("{}/metered", running.base)).await.expect("an answer, not a dropped connection");
    assert_eq!(resp.status(), 402);
    let www = resp.headers()["www-authenticate"].to_str().expect("ascii").to_owned();
    let challenge = parse_www_authenticate(&[&www]).expect("parses").remove(0);
    let expires = pay402::mpp::parse_rfc3339(challenge.expires.as_deref().expect("expires")).expect("rfc3339");
    let lifetime = expires - time::OffsetDateTime::now_utc();
    assert!(lifetime <= pay402::mpp::DEFAULT_CHALLENGE_TTL + time::Duration::seconds(5), "{lifetime}");
    assert!(lifetime > time::Duration::ZERO, "{lifetime}");
}

// ---------------------------------------------------------------------------------------------
// MPP charge (settles before the handler, L5)
// ---------------------------------------------------------------------------------------------

/// The embedded SA whose charge settlement can be held at a [`Gate`].
#[derive(Clone)]
struct GatedSa {
    inner: EmbeddedSa,
    settle_gate: Arc<Gate>,
}

#[async_trait::async_trait]
impl SaClient for GatedSa {
    async fn settle(&self, req: &ChargeSettleRequest) -> Result<ChargeReceipt, SaError> {
        self.settle_gate.pass().await;
        self.inner.settle(req).await
    }
    async fn verify_hash(&self, req: &ChargeVerifyHashRequest) -> Result<ChargeReceipt, SaError> {
        self.inner.verify_hash(req).await
    }
    async fn session_open(&self, req: &SessionOpenRequest) -> Result<SessionReceipt, SaError> {
        self.inner.session_open(req).await
    }
    async fn session_top_up(&self, req: &SessionTopUpRequest) -> Result<SessionReceipt, SaError> {
        self.inner.session_top_up(req).await
    }
    async fn session_settle(&self, req: &SessionSettleRequest) -> Result<SessionReceipt, SaError> {
        self.inner.session_settle(req).await
    }
    async fn session_close(&self, req: &SessionCloseRequest) -> Result<SessionReceipt, SaError> {
        self.inner.session_close(req).await
    }
    async fn session_status(&self, channel_id: &str) -> Result<SessionStatus, SaError> {
        self.inner.session_status(channel_id).await
    }
}

/// The client disconnects while the SA settles a charge: the settlement is not cut off; it
/// completes and is reported (`on_payment_success`), and the handler does not run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f5_disconnect_during_charge_settlement_completes_and_reports() {
    let _serial = SERIAL.lock().await;
    for fw in FRAMEWORKS {
        let sa = EmbeddedSa::new();
        let buyer: PrivateKeySigner = BUYER_KEY.parse().expect("key");
        sa.fund(X_LAYER_USDT0, &buyer.address().to_string(), U256::from(1_000_000u64)).expect("fund");
        let gated = GatedSa { inner: sa.clone(), settle_gate: Arc::new(Gate::new()) };
        let reported = Arc::new(AtomicUsize::new(0));
        let r = Arc::clone(&reported);
        let method = EvmMethod::x_layer(X402_PAY_TO).with_charge(ChargeIntent::new(gated.clone()));
        let mpp = Mpp::new(method, REALM, SECRET)
            .expect("mpp")
            .on_payment_success(move |_, _| {
                r.fetch_add(1, Ordering::SeqCst);
            })
            .route("GET /premium", PaySpec::charge("0.01"))
            .expect("route");
        let calls = Arc::new(AtomicUsize::new(0));
        let cancelled = Tripwire::default();
        let running = match fw {
            Framework::Axum => {
                let c = Arc::clone(&calls);
                let trip = cancelled.clone();
                let app = axum::Router::new()
                    .route(
                        "/premium",
                        axum::routing::get(move || {
                            c.fetch_add(1, Ordering::SeqCst);
                            async { "premium" }
                        }),
                    )
                    .layer(pay402::axum::MppLayer::new(mpp))
                    .layer(axum::middleware::from_fn(move |req, next: axum::middleware::Next| {
                        let armed = trip.arm();
                        async move {
                            let resp = next.run(req).await;
                            armed.defuse();
                            resp
                        }
                    }));
                support::serve_axum(app).await
            }
            Framework::Actix => {
                use actix_web::dev::Service as _;
                let (c, trip) = (Arc::clone(&calls), cancelled.clone());
                support::serve_actix(move || {
                    let (c, trip) = (Arc::clone(&c), trip.clone());
                    actix_web::App::new()
                        .wrap(pay402::actix::MppMiddleware::new(mpp.clone()))
                        .wrap_fn(move |req, srv| {
                            let fut = srv.call(req);
                            let armed = trip.arm();
                            async move {
                                let r = fut.await;
                                armed.defuse();
                                r
                            }
                        })
                        .route(
                            "/premium",
                            actix_web::web::get().to(move || {
                                c.fetch_add(1, Ordering::SeqCst);
                                async { "premium" }
                            }),
                        )
                })
            }
        };
        let resp = reqwest::get(format!("{}/premium", running.base)).await.expect("request");
        assert_eq!(resp.status(), 402);
        let www: Vec<&str> =
            resp.headers().get_all("www-authenticate").iter().map(|v| v.to_str().expect("ascii")).collect();
        let authorization = MppChargeClient::new(buyer.clone()).authorization_header_for(&www).expect("credential");
        let before = sa.balance(X_LAYER_USDT0, &buyer.address().to_string());
        gated.settle_gate.arm();
        let conn = support::send_raw(&running.base, "/premium", &[("Authorization", &authorization)]).await;
        gated.settle_gate.entered().await;
        support::disconnect(conn);
        cancelled.tripped().await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!gated.settle_gate.was_dropped(), "{fw:?}: the charge settlement in flight was cut off");
        gated.settle_gate.open();
        eventually("the charge settlement is reported", async || reported.load(Ordering::SeqCst) == 1).await;
        assert_eq!(sa.balance(X_LAYER_USDT0, &buyer.address().to_string()), before - U256::from(10_000u64), "{fw:?}");
        assert_eq!(calls.load(Ordering::SeqCst), 0, "{fw:?}: the cancelled request's handler never ran");
    }
}

// ---------------------------------------------------------------------------------------------
// The dual-protocol router
// ---------------------------------------------------------------------------------------------

/// The `PaymentRouter` honours the accepting protocol's policy: an x402 payment under
/// `CancelPolicy::Release` is released when the client disconnects while the handler runs (the
/// same payment is accepted afterwards), under the default it is settled once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f5_payment_router_applies_the_protocols_cancel_policy() {
    use pay402::router::{MppAdapter, PaymentRouter, RouteProtocols, X402Adapter};
    let _serial = SERIAL.lock().await;
    for policy in [CancelPolicy::Release, CancelPolicy::Complete] {
        for fw in FRAMEWORKS {
            let embedded = EmbeddedFacilitator::new();
            let buyer: PrivateKeySigner = BUYER_KEY.parse().expect("key");
            embedded.fund(X_LAYER_USDT0, &buyer.address().to_string(), U256::from(1_000_000u64)).expect("fund");
            let fac = GatedFacilitator::new(embedded);
            let x402 =
                X402HttpServer::new(X402ResourceServer::new(fac.clone()).register("eip155:196", ExactEvmScheme::new()))
                    .cancel_policy(policy);
            let sa = EmbeddedSa::new();
            let mpp = Mpp::new(EvmMethod::x_layer(X402_PAY_TO).with_charge(ChargeIntent::new(sa)), REALM, SECRET)
                .expect("mpp");
            let router = PaymentRouter::new()
                .adapter(X402Adapter::new(x402))
                .adapter(MppAdapter::new(mpp))
                .route(
                    "GET /slow",
                    RouteProtocols::new()
                        .x402(RouteConfig::new(PaymentOption::exact("$0.001", X402_PAY_TO)))
                        .mpp(PaySpec::charge("0.001")),
                )
                .expect("route");
            let handler = Arc::new(Gate::new());
            let running = match fw {
                Framework::Axum => {
                    let h = Arc::clone(&handler);
                    let slow = move || {
                        let h = Arc::clone(&h);
                        async move {
                            h.pass().await;
                            "slow"
                        }
                    };
                    let app = axum::Router::new()
                        .route("/slow", axum::routing::get(slow))
                        .layer(pay402::axum::PaymentRouterLayer::new(router));
                    support::serve_axum(app).await
                }
                Framework::Actix => {
                    let h = Arc::clone(&handler);
                    support::serve_actix(move || {
                        let h = Arc::clone(&h);
                        actix_web::App::new().wrap(pay402::actix::PaymentRouterMiddleware::new(router.clone())).route(
                            "/slow",
                            actix_web::web::get().to(move || {
                                let h = Arc::clone(&h);
                                async move {
                                    h.pass().await;
                                    "slow"
                                }
                            }),
                        )
                    })
                }
            };
            let http = reqwest::Client::new();
            let url = format!("{}/slow", running.base);
            let resp = http.get(&url).send().await.expect("request");
            assert_eq!(resp.status(), 402);
            let required = decode_payment_required_header(resp.headers()["payment-required"].to_str().expect("ascii"))
                .expect("decodes");
            let client = X402Client::new().register("eip155:196", ExactEvmClientScheme::new(buyer.clone()));
            let AnyPaymentPayload::V2(p) = client.create_payment_payload(&required).await.expect("pays") else {
                panic!("v2")
            };
            let payment = encode_payment_signature_header(&p).expect("encodes");
            handler.arm();
            let conn = support::send_raw(&running.base, "/slow", &[("PAYMENT-SIGNATURE", &payment)]).await;
            handler.entered().await;
            support::disconnect(conn);
            handler.dropped().await;
            handler.open();
            let settles = || fac.settles.load(Ordering::SeqCst);
            match policy {
                CancelPolicy::Release => {
                    eventually("the released payment is accepted again", async || {
                        http.get(&url).header("PAYMENT-SIGNATURE", &payment).send().await.expect("request").status()
                            == 200
                    })
                    .await;
                }
                _ => {
                    eventually("the cancelled request's payment is settled", async || settles() == 1).await;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    let again = http.get(&url).header("PAYMENT-SIGNATURE", &payment).send().await.expect("request");
                    assert_eq!(again.status(), 402, "{fw:?}: a settled payment is not reusable");
                }
            }
            assert_eq!(settles(), 1, "{fw:?} {policy:?}: settled exactly once");
        }
    }
}
