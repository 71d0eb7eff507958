//! Side A: a malicious buyer against pay402's sellers.
//!
//! Real servers on 127.0.0.1 — axum (x402 route table, `#[x402]` macro, MPP charge and session
//! route tables, `#[pay(intent = "session")]`) and actix-web (x402 and session) — backed by the embedded facilitator and the
//! embedded SA (in-memory escrow), both wrapped so that each of their answers follows the
//! generated plan (success, refusal, garbage, timeout, slow). A generated sequence of buyer actions
//! runs against them; then, after quiescence, the money invariants are checked against the
//! embedded ledgers and the suite's own model of what was sent, never against pay402's reports:
//!
//! * I1 — the protected handler ran only for a request carrying a genuine payment for that
//!   route (every handler entry is logged with the request's id);
//! * I2 — a response with the handler's body has its payment settled in the ledger (x402 and MPP
//!   charge: the authorization's nonce is used);
//! * I3 — per channel, the highest voucher served and the value served stay within what the
//!   embedded escrow holds for that channel, and the channel pays the route's payee in its token;
//! * I4 — every reservation ended: the channel's `reserved` is 0, every handler run of an x402
//!   payment was followed by a settlement attempt, and a genuine payment that never reached
//!   settlement can be used again;
//! * I5 — a payment is served (and settled) at most once.

use super::common::Violation;
use crate::support::accounts::{OTHER_KEY, PAYEE, PAYEE_KEY, PAYER, PAYER_KEY, USDT0};
use crate::support::{self, Running};
use async_trait::async_trait;
use pay402::chain::NetworkRegistry;
use pay402::evm::{PrivateKeySigner, U256, signer_from_hex};
use pay402::mpp::{
    ChargeIntent, Credential, EmbeddedSa, EvmMethod, Mpp, MppChargeClient, ParsedChallenge, PaySpec, SessionClient,
    SessionIntent, parse_www_authenticate,
};
use pay402::okx::sa::{
    ChargeReceipt, ChargeSettleRequest, ChargeVerifyHashRequest, SaClient, SaError, SessionCloseRequest,
    SessionOpenRequest, SessionReceipt, SessionSettleRequest, SessionStatus, SessionTopUpRequest,
};
use pay402::x402::EmbeddedFacilitator;
use pay402::x402::X402Client;
use pay402::x402::X402ResourceServer;
use pay402::x402::{
    AnyPaymentPayload, AnyPaymentRequired, ExactEvmClientScheme, ExactEvmScheme, FacilitatorClient, FacilitatorError,
    PaymentPayload, PaymentRequired, PaymentRequirements, SettleResponse, SettleStatusResponse, SupportedResponse,
    VerifyResponse, decode_payment_required_header, encode_payment_signature_header,
};
use pay402::x402::{PaymentOption, RouteConfig, X402HttpServer};
use proptest::prelude::*;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::io::AsyncWriteExt as _;

/// A second payee (another seller of the marketplace).
pub(crate) const PAYEE2: &str = "0x3333333333333333333333333333333333333333";
/// What the handler answers: a response carrying it came from the handler.
const MARKER: &str = "HANDLER-BODY-7f3a";
const REALM: &str = "adversarial.test";
const MPP_SECRET: &str = "adversarial-mpp-secret-at-least-32-bytes-long-hmac-key";
/// 0.001 USD₮0.
const PRICE: u128 = 1000;
/// 0.01 USD₮0.
const DEAR: u128 = 10_000;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn key(k: &str) -> PrivateKeySigner {
    signer_from_hex(k).expect("key")
}

// ---------------------------------------------------------------------------------------------
// Handler log
// ---------------------------------------------------------------------------------------------

/// (request id, route label) of every handler entry, process-wide (tests are serialised).
static HANDLER_LOG: Mutex<Vec<(u64, &'static str)>> = Mutex::new(Vec::new());
/// Handlers running now.
static ACTIVE: AtomicUsize = AtomicUsize::new(0);
static NEXT_REQUEST: AtomicU64 = AtomicU64::new(1);

struct ActiveGuard;

impl ActiveGuard {
    fn enter() -> Self {
        ACTIVE.fetch_add(1, Ordering::SeqCst);
        Self
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        ACTIVE.fetch_sub(1, Ordering::SeqCst);
    }
}

fn header_u64(get: impl Fn(&str) -> Option<String>, name: &str) -> u64 {
    get(name).and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// The protected handler: logs its entry, awaits the requested delay, answers the marker.
async fn handle(route: &'static str, id: u64, sleep_ms: u64) -> &'static str {
    lock(&HANDLER_LOG).push((id, route));
    let _active = ActiveGuard::enter();
    if sleep_ms > 0 {
        tokio::time::sleep(Duration::from_millis(sleep_ms)).await;
    }
    MARKER
}

async fn axum_handler(route: &'static str, headers: axum::http::HeaderMap) -> &'static str {
    let get = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).map(str::to_owned);
    handle(route, header_u64(get, "x-adv-id"), header_u64(get, "x-adv-sleep")).await
}

/// The `#[x402]` macro route (its price and payee are literals).
#[pay402::axum::x402(price = "$0.001", pay_to = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8")]
async fn macro_paid(headers: axum::http::HeaderMap) -> &'static str {
    axum_handler("x-macro", headers).await
}

/// The `#[pay(intent = "session")]` macro route (payee: the method's, [`PAYEE`]).
#[pay402::axum::pay(amount = "0.001", intent = "session")]
async fn macro_session(headers: axum::http::HeaderMap) -> &'static str {
    axum_handler("m-macro", headers).await
}

// ---------------------------------------------------------------------------------------------
// Planned facilitator and SA
// ---------------------------------------------------------------------------------------------

/// How a wrapped facilitator or SA answers the next call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Answer {
    /// The embedded one decides.
    Real,
    /// A refusal.
    Fail,
    /// Garbage: a transport error (facilitator) or an empty `code:0` receipt (SA).
    Garbage,
    /// Settlement outcome unknown (`status: timeout`, then `pending` forever); SA: transport error.
    Timeout,
    /// The embedded one decides, after a delay.
    Slow,
}

fn answer() -> impl Strategy<Value = Answer> {
    prop_oneof![
        6 => Just(Answer::Real),
        1 => Just(Answer::Fail),
        1 => Just(Answer::Garbage),
        1 => Just(Answer::Timeout),
        1 => Just(Answer::Slow),
    ]
}

/// The embedded facilitator, answering as planned; records every settle attempt by nonce.
#[derive(Clone)]
struct PlannedFacilitator {
    inner: EmbeddedFacilitator,
    /// (verify, settle) answers for the calls to come.
    plan: Arc<Mutex<(Answer, Answer)>>,
    /// nonce → (settle attempts, successful settlements).
    settles: Arc<Mutex<HashMap<String, (u32, u32)>>>,
    inflight: Arc<AtomicUsize>,
}

struct Inflight(Arc<AtomicUsize>);

impl Inflight {
    fn new(a: &Arc<AtomicUsize>) -> Self {
        a.fetch_add(1, Ordering::SeqCst);
        Self(Arc::clone(a))
    }
}

impl Drop for Inflight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn nonce_of(p: &PaymentPayload) -> String {
    p.payload["authorization"]["nonce"].as_str().unwrap_or_default().to_ascii_lowercase()
}

#[async_trait]
impl FacilitatorClient for PlannedFacilitator {
    async fn verify(&self, p: &PaymentPayload, r: &PaymentRequirements) -> Result<VerifyResponse, FacilitatorError> {
        let _f = Inflight::new(&self.inflight);
        let plan = lock(&self.plan).0;
        match plan {
            Answer::Real => self.inner.verify(p, r).await,
            Answer::Slow => {
                tokio::time::sleep(Duration::from_millis(15)).await;
                self.inner.verify(p, r).await
            }
            Answer::Fail => Ok(VerifyResponse::invalid("insufficient_funds", None)),
            Answer::Garbage => Err(FacilitatorError::MalformedBody("<html>".into())),
            Answer::Timeout => Err(FacilitatorError::Timeout(Duration::from_millis(1))),
        }
    }

    async fn settle(&self, p: &PaymentPayload, r: &PaymentRequirements) -> Result<SettleResponse, FacilitatorError> {
        let _f = Inflight::new(&self.inflight);
        let nonce = nonce_of(p);
        lock(&self.settles).entry(nonce.clone()).or_default().0 += 1;
        let plan = lock(&self.plan).1;
        let result = match plan {
            Answer::Real => self.inner.settle(p, r).await,
            Answer::Slow => {
                tokio::time::sleep(Duration::from_millis(15)).await;
                self.inner.settle(p, r).await
            }
            Answer::Fail => Ok(SettleResponse::failure("insufficient_funds", r.network.clone(), None, "0xfail".into())),
            Answer::Garbage => Err(FacilitatorError::Transport("connection reset".into())),
            Answer::Timeout => Ok(SettleResponse {
                success: true,
                error_reason: None,
                error_message: None,
                status: Some("timeout".into()),
                payer: None,
                transaction: "0xtt".into(),
                network: r.network.clone(),
                amount: None,
            }),
        };
        if matches!(&result, Ok(s) if s.success && s.status.as_deref() != Some("timeout")) {
            lock(&self.settles).entry(nonce).or_default().1 += 1;
        }
        result
    }

    async fn supported(&self) -> Result<SupportedResponse, FacilitatorError> {
        self.inner.supported().await
    }

    async fn settle_status(&self, tx: &str) -> Result<SettleStatusResponse, FacilitatorError> {
        Ok(crate::support::still_pending(tx))
    }
}

/// The embedded SA, answering charge settlements, opens and top-ups as planned.
#[derive(Clone)]
struct PlannedSa {
    inner: EmbeddedSa,
    plan: Arc<Mutex<Answer>>,
    inflight: Arc<AtomicUsize>,
}

impl PlannedSa {
    async fn planned<T: Default>(&self, real: impl FnOnce() -> Result<T, SaError>) -> Result<T, SaError> {
        let _f = Inflight::new(&self.inflight);
        let plan = *lock(&self.plan);
        match plan {
            Answer::Real => real(),
            Answer::Slow => {
                tokio::time::sleep(Duration::from_millis(15)).await;
                real()
            }
            Answer::Fail => {
                Err(SaError::Api { code: 70003, error: pay402::okx::sa::map_sa_error(70003, "insufficient balance") })
            }
            // `{"code":0,"data":{}}` or a bare `{"code":0}`: an empty receipt.
            Answer::Garbage => Ok(T::default()),
            Answer::Timeout => Err(SaError::Transport("timed out".into())),
        }
    }
}

#[async_trait]
impl SaClient for PlannedSa {
    async fn settle(&self, req: &ChargeSettleRequest) -> Result<ChargeReceipt, SaError> {
        self.planned(|| self.inner.settle_now(req)).await
    }

    async fn verify_hash(&self, req: &ChargeVerifyHashRequest) -> Result<ChargeReceipt, SaError> {
        self.planned(|| self.inner.verify_hash_now(req)).await
    }

    async fn session_open(&self, req: &SessionOpenRequest) -> Result<SessionReceipt, SaError> {
        self.planned(|| self.inner.session_open_now(req)).await
    }

    async fn session_top_up(&self, req: &SessionTopUpRequest) -> Result<SessionReceipt, SaError> {
        self.planned(|| self.inner.session_top_up_now(req)).await
    }

    async fn session_settle(&self, req: &SessionSettleRequest) -> Result<SessionReceipt, SaError> {
        let _f = Inflight::new(&self.inflight);
        self.inner.session_settle_now(req)
    }

    async fn session_close(&self, req: &SessionCloseRequest) -> Result<SessionReceipt, SaError> {
        let _f = Inflight::new(&self.inflight);
        self.inner.session_close_now(req)
    }

    async fn session_status(&self, channel_id: &str) -> Result<SessionStatus, SaError> {
        self.inner.session_status_now(channel_id)
    }
}

// ---------------------------------------------------------------------------------------------
// The sellers
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    X402,
    Charge,
    Session,
}

/// One protected endpoint.
struct Endpoint {
    label: &'static str,
    base: String,
    path: &'static str,
    kind: Kind,
    price: u128,
    recipient: &'static str,
    /// x402: the route's requirements (from its 402).
    required: Option<PaymentRequired>,
}

/// The running sellers and their ledgers.
pub(crate) struct Sellers {
    _servers: Vec<Running>,
    endpoints: Vec<Endpoint>,
    facilitator: PlannedFacilitator,
    sa: PlannedSa,
    intent: SessionIntent,
    http: reqwest::Client,
    payer: PrivateKeySigner,
    x402_client: X402Client,
    past_client: X402Client,
    sessions: SessionClient,
    stranger: SessionClient,
    charges: MppChargeClient,
}

/// Indices into [`Sellers::endpoints`].
const X402_EPS: [usize; 4] = [0, 1, 2, 3];
const CHARGE_EP: usize = 4;
const SESSION_EPS: [usize; 4] = [5, 6, 7, 8];

fn x402_server(facilitator: &PlannedFacilitator) -> X402HttpServer {
    let resource = X402ResourceServer::new(facilitator.clone())
        .register("eip155:196", ExactEvmScheme::new())
        .settlement_poll(Duration::from_millis(5), Duration::from_millis(20));
    X402HttpServer::new(resource)
        .route("GET /x/cheap", RouteConfig::new(PaymentOption::exact("$0.001", PAYEE)))
        .and_then(|s| s.route("GET /x/dear", RouteConfig::new(PaymentOption::exact("$0.01", PAYEE))))
        .expect("x402 routes")
}

fn mpp(sa: &PlannedSa, intent: &SessionIntent) -> Mpp {
    let method = EvmMethod::x_layer(PAYEE).with_charge(ChargeIntent::new(sa.clone())).with_session(intent.clone());
    let session = |recipient: &str| PaySpec {
        amount: "0.001".into(),
        intent: "session".into(),
        recipient: Some(recipient.to_owned()),
        ..PaySpec::default()
    };
    Mpp::new(method, REALM, MPP_SECRET)
        .expect("mpp")
        .route("GET /m/charge", PaySpec::charge("0.001"))
        .and_then(|m| m.route("GET /m/sa", session(PAYEE)))
        .and_then(|m| m.route("GET /m/sb", session(PAYEE2)))
        .expect("mpp routes")
}

fn axum_route<S: Clone + Send + Sync + 'static>(route: &'static str) -> axum::routing::MethodRouter<S> {
    axum::routing::get(move |headers: axum::http::HeaderMap| axum_handler(route, headers))
}

fn actix_route(route: &'static str) -> actix_web::Route {
    actix_web::web::get().to(move |req: actix_web::HttpRequest| {
        let get = |n: &str| req.headers().get(n).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let (id, sleep) = (header_u64(get, "x-adv-id"), header_u64(get, "x-adv-sleep"));
        async move { actix_web::HttpResponse::Ok().body(handle(route, id, sleep).await) }
    })
}

impl Sellers {
    pub(crate) async fn start() -> Self {
        let payer = key(PAYER_KEY);
        let embedded = EmbeddedFacilitator::new();
        embedded.fund(USDT0, PAYER, U256::from(10u128.pow(15))).expect("fund");
        let facilitator = PlannedFacilitator {
            inner: embedded,
            plan: Arc::new(Mutex::new((Answer::Real, Answer::Real))),
            settles: Arc::default(),
            inflight: Arc::default(),
        };
        let embedded_sa = EmbeddedSa::new().with_registry(NetworkRegistry::x_layer());
        embedded_sa.fund(USDT0, PAYER, U256::from(10u128.pow(15))).expect("fund");
        let sa = PlannedSa { inner: embedded_sa, plan: Arc::new(Mutex::new(Answer::Real)), inflight: Arc::default() };
        let intent = SessionIntent::new(sa.clone(), PAYEE).signer(Arc::new(key(PAYEE_KEY)));
        let mpp = mpp(&sa, &intent);
        let x402 = x402_server(&facilitator);

        let table = axum::Router::new()
            .route("/x/cheap", axum_route("x-cheap"))
            .route("/x/dear", axum_route("x-dear"))
            .layer(pay402::axum::X402Layer::new(x402.clone()));
        let axum_x402 = support::serve_axum(table).await;
        let macro_app = axum::Router::new().route("/x/macro", axum::routing::get(macro_paid)).with_state(x402.clone());
        let axum_macro = support::serve_axum(macro_app).await;
        let mpp_app = axum::Router::new()
            .route("/m/charge", axum_route("m-charge"))
            .route("/m/sa", axum_route("m-sa"))
            .route("/m/sb", axum_route("m-sb"))
            .route("/m/macro", axum::routing::get(macro_session))
            .layer(pay402::axum::MppLayer::new(mpp.clone()))
            .with_state(mpp.clone());
        let axum_mpp = support::serve_axum(mpp_app).await;
        let actix = {
            let (x402, mpp) = (x402.clone(), mpp.clone());
            support::serve_actix(move || {
                actix_web::App::new()
                    .service(
                        actix_web::web::scope("/x")
                            .wrap(pay402::actix::X402Middleware::new(x402.clone()))
                            .route("/cheap", actix_route("actix-x-cheap")),
                    )
                    .service(
                        actix_web::web::scope("/m")
                            .wrap(pay402::actix::MppMiddleware::new(mpp.clone()))
                            .route("/sa", actix_route("actix-m-sa")),
                    )
            })
        };
        let ep = |label, base: &Running, path, kind, price, recipient| Endpoint {
            label,
            base: base.base.clone(),
            path,
            kind,
            price,
            recipient,
            required: None,
        };
        let mut endpoints = vec![
            ep("axum x402 table /x/cheap", &axum_x402, "/x/cheap", Kind::X402, PRICE, PAYEE),
            ep("axum x402 table /x/dear", &axum_x402, "/x/dear", Kind::X402, DEAR, PAYEE),
            ep("axum #[x402] /x/macro", &axum_macro, "/x/macro", Kind::X402, PRICE, PAYEE),
            ep("actix x402 /x/cheap", &actix, "/x/cheap", Kind::X402, PRICE, PAYEE),
            ep("axum mpp charge /m/charge", &axum_mpp, "/m/charge", Kind::Charge, PRICE, PAYEE),
            ep("axum mpp session /m/sa", &axum_mpp, "/m/sa", Kind::Session, PRICE, PAYEE),
            ep("axum mpp session /m/sb (payee 2)", &axum_mpp, "/m/sb", Kind::Session, PRICE, PAYEE2),
            ep("actix mpp session /m/sa", &actix, "/m/sa", Kind::Session, PRICE, PAYEE),
            ep("axum #[pay(intent = \"session\")] /m/macro", &axum_mpp, "/m/macro", Kind::Session, PRICE, PAYEE),
        ];
        let http = reqwest::Client::new();
        for e in endpoints.iter_mut().filter(|e| e.kind == Kind::X402) {
            let resp = http.get(format!("{}{}", e.base, e.path)).send().await.expect("402");
            assert_eq!(resp.status(), 402, "{}", e.label);
            let header = resp.headers()["payment-required"].to_str().expect("ascii");
            let AnyPaymentRequired::V2(r) = decode_payment_required_header(header).expect("decodes") else {
                panic!("v2")
            };
            e.required = Some(r);
        }
        let registry = NetworkRegistry::x_layer();
        Self {
            _servers: vec![axum_x402, axum_macro, axum_mpp, actix],
            endpoints,
            facilitator,
            sa,
            intent,
            http,
            x402_client: X402Client::new().register("eip155:196", ExactEvmClientScheme::new(payer.clone())),
            past_client: X402Client::new()
                .register("eip155:196", ExactEvmClientScheme::new(payer.clone()).with_clock(|| 1_000_000)),
            sessions: SessionClient::new(payer.clone()).with_registry(registry.clone()),
            stranger: SessionClient::new(key(OTHER_KEY)).with_registry(registry.clone()),
            charges: MppChargeClient::new(payer.clone()).with_registry(registry),
            payer,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Actions
// ---------------------------------------------------------------------------------------------

/// How a request is delivered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Delivery {
    /// Sent and answered.
    Normal,
    /// Half the request head sent, then the connection closed.
    CutHeaders,
    /// The whole request sent, the connection closed after this many milliseconds.
    CutAfter(u8),
}

/// How an x402 payment is forged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Forge {
    None,
    BadSignature,
    WrongAmount,
    WrongPayTo,
    WrongAsset,
    Expired,
    /// Validly signed, for a tenth of the route's price.
    Cheaper,
}

/// Which voucher a buyer sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum VoucherKind {
    Next,
    /// The previous voucher again.
    Duplicate,
    /// Three prices ahead.
    Skip,
    /// One price above the escrowed deposit.
    AboveDeposit,
    /// Signed by someone else's key.
    Stranger,
}

/// One buyer action.
#[derive(Clone, Debug)]
pub(crate) enum Action {
    /// A new x402 payment (maybe forged) for an x402 endpoint.
    X402Pay { ep: usize, forge: Forge, delivery: Delivery, sleep: u8, verify: Answer, settle: Answer },
    /// An earlier payment again, on any x402 endpoint.
    X402Replay { earlier: usize, ep: usize, delivery: Delivery, verify: Answer, settle: Answer },
    /// HEAD on an x402 endpoint, unpaid.
    X402Head { ep: usize },
    /// An MPP charge (or an earlier one again).
    Charge { replay: Option<usize>, delivery: Delivery, sleep: u8, sa: Answer },
    /// Opens a channel on a session endpoint with `units` prices of deposit, maybe claiming far more.
    Open { ep: usize, units: u8, lie: bool, sa: Answer },
    /// A voucher on channel `channel` (index among the opened) for a session endpoint.
    Voucher { channel: usize, ep: usize, kind: VoucherKind, delivery: Delivery, sleep: u8 },
    /// A top-up of `units` prices (sent twice when `replay`).
    TopUp { channel: usize, units: u8, replay: bool, sa: Answer },
    /// A close of somebody else's channel.
    StrangerClose { channel: usize },
}

fn delivery() -> impl Strategy<Value = Delivery> {
    prop_oneof![
        6 => Just(Delivery::Normal),
        1 => Just(Delivery::CutHeaders),
        2 => (0u8..40).prop_map(Delivery::CutAfter),
    ]
}

fn forge() -> impl Strategy<Value = Forge> {
    prop_oneof![
        5 => Just(Forge::None),
        1 => Just(Forge::BadSignature),
        1 => Just(Forge::WrongAmount),
        1 => Just(Forge::WrongPayTo),
        1 => Just(Forge::WrongAsset),
        1 => Just(Forge::Expired),
        1 => Just(Forge::Cheaper),
    ]
}

fn voucher_kind() -> impl Strategy<Value = VoucherKind> {
    prop_oneof![
        5 => Just(VoucherKind::Next),
        1 => Just(VoucherKind::Duplicate),
        1 => Just(VoucherKind::Skip),
        1 => Just(VoucherKind::AboveDeposit),
        1 => Just(VoucherKind::Stranger),
    ]
}

/// Which parts of the seller side a run exercises.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Mix {
    pub(crate) x402: u32,
    pub(crate) head: u32,
    pub(crate) charge: u32,
    pub(crate) session: u32,
    /// Allow disconnects.
    pub(crate) cuts: bool,
    /// Allow planned SA/facilitator answers other than `Real`.
    pub(crate) faults: bool,
    /// Allow lying deposits.
    pub(crate) lies: bool,
    /// Session endpoints other than the first.
    pub(crate) cross_route: bool,
}

impl Mix {
    pub(crate) const ALL: Self =
        Self { x402: 4, head: 1, charge: 2, session: 6, cuts: true, faults: true, lies: true, cross_route: true };
    pub(crate) const NONE: Self =
        Self { x402: 0, head: 0, charge: 0, session: 0, cuts: false, faults: false, lies: false, cross_route: false };
}

pub(crate) fn action(mix: Mix) -> BoxedStrategy<Action> {
    let d = move || if mix.cuts { delivery().boxed() } else { Just(Delivery::Normal).boxed() };
    let a = move || if mix.faults { answer().boxed() } else { Just(Answer::Real).boxed() };
    let sess_ep = move || {
        if mix.cross_route { prop::sample::select(SESSION_EPS.to_vec()).boxed() } else { Just(SESSION_EPS[0]).boxed() }
    };
    let lie = move || if mix.lies { any::<bool>().boxed() } else { Just(false).boxed() };
    let mut choices: Vec<(u32, BoxedStrategy<Action>)> = Vec::new();
    if mix.x402 > 0 {
        choices.push((
            mix.x402 * 2,
            (prop::sample::select(X402_EPS.to_vec()), forge(), d(), 0u8..30, a(), a())
                .prop_map(|(ep, forge, delivery, sleep, verify, settle)| Action::X402Pay {
                    ep,
                    forge,
                    delivery,
                    sleep,
                    verify,
                    settle,
                })
                .boxed(),
        ));
        choices.push((
            mix.x402,
            (0usize..8, prop::sample::select(X402_EPS.to_vec()), d(), a(), a())
                .prop_map(|(earlier, ep, delivery, verify, settle)| Action::X402Replay {
                    earlier,
                    ep,
                    delivery,
                    verify,
                    settle,
                })
                .boxed(),
        ));
    }
    if mix.head > 0 {
        choices
            .push((mix.head, prop::sample::select(X402_EPS.to_vec()).prop_map(|ep| Action::X402Head { ep }).boxed()));
    }
    if mix.charge > 0 {
        choices.push((
            mix.charge,
            (prop::option::weighted(0.3, 0usize..4), d(), 0u8..30, a())
                .prop_map(|(replay, delivery, sleep, sa)| Action::Charge { replay, delivery, sleep, sa })
                .boxed(),
        ));
    }
    if mix.session > 0 {
        choices.push((
            mix.session,
            (sess_ep(), 1u8..12, lie(), a())
                .prop_map(|(ep, units, lie, sa)| Action::Open { ep, units, lie, sa })
                .boxed(),
        ));
        choices.push((
            mix.session * 3,
            (0usize..3, sess_ep(), voucher_kind(), d(), 0u8..30)
                .prop_map(|(channel, ep, kind, delivery, sleep)| Action::Voucher { channel, ep, kind, delivery, sleep })
                .boxed(),
        ));
        choices.push((
            mix.session / 2 + 1,
            (0usize..3, 1u8..6, any::<bool>(), a())
                .prop_map(|(channel, units, replay, sa)| Action::TopUp { channel, units, replay, sa })
                .boxed(),
        ));
        choices.push((1, (0usize..3).prop_map(|channel| Action::StrangerClose { channel }).boxed()));
    }
    prop::strategy::Union::new_weighted(choices).boxed()
}

// ---------------------------------------------------------------------------------------------
// The model of one sequence
// ---------------------------------------------------------------------------------------------

/// What a request carried, as the suite knows it.
#[derive(Clone, Debug)]
enum Carried {
    Nothing,
    /// x402: nonce, whether it is a genuine payment of this endpoint's requirements.
    X402 {
        payment: usize,
        genuine: bool,
    },
    Charge {
        charge: usize,
    },
    Voucher {
        channel: usize,
        cumulative: u128,
        genuine: bool,
    },
    Management,
}

struct Request {
    ep: usize,
    carried: Carried,
    /// Status and whether the body was the handler's (normal deliveries only).
    answer: Option<(u16, bool)>,
}

struct X402Sent {
    header: String,
    nonce: String,
    /// The requirements it validly pays (None when tampered with).
    pays: Option<PaymentRequirements>,
}

struct ChargeSent {
    header: String,
    nonce: String,
}

struct Channel {
    id: String,
    /// The session endpoint it was opened on.
    ep: usize,
    cumulative: u128,
    last_voucher: Option<(String, u128)>,
    deposit_sent: u128,
}

#[derive(Default)]
struct Model {
    requests: HashMap<u64, Request>,
    x402: Vec<X402Sent>,
    charges: Vec<ChargeSent>,
    channels: Vec<Channel>,
}

fn same_terms(a: &PaymentRequirements, b: &PaymentRequirements) -> bool {
    a.scheme == b.scheme
        && a.network == b.network
        && a.amount == b.amount
        && a.asset.eq_ignore_ascii_case(&b.asset)
        && a.pay_to.eq_ignore_ascii_case(&b.pay_to)
}

impl Sellers {
    fn set_plan(&self, verify: Answer, settle: Answer, sa: Answer) {
        *lock(&self.facilitator.plan) = (verify, settle);
        *lock(&self.sa.plan) = sa;
    }

    /// Sends one request; returns (status, body was the handler's) when answered.
    async fn send(
        &self,
        ep: usize,
        headers: &[(&str, String)],
        delivery: Delivery,
        sleep: u8,
        head: bool,
    ) -> (u64, Option<(u16, bool)>) {
        let id = NEXT_REQUEST.fetch_add(1, Ordering::SeqCst);
        let e = &self.endpoints[ep];
        let mut all: Vec<(&str, String)> = headers.to_vec();
        all.push(("x-adv-id", id.to_string()));
        // The handler's delay only matters when the buyer hangs up meanwhile.
        let sleep = if delivery == Delivery::Normal { 0 } else { sleep };
        all.push(("x-adv-sleep", sleep.to_string()));
        match delivery {
            Delivery::Normal => {
                let url = format!("{}{}", e.base, e.path);
                let mut req = if head { self.http.head(url) } else { self.http.get(url) };
                for (k, v) in &all {
                    req = req.header(*k, v);
                }
                match req.timeout(Duration::from_secs(10)).send().await {
                    Ok(resp) => {
                        let status = resp.status().as_u16();
                        let body = resp.text().await.unwrap_or_default();
                        (id, Some((status, body.contains(MARKER))))
                    }
                    Err(_) => (id, None),
                }
            }
            Delivery::CutHeaders | Delivery::CutAfter(_) => {
                let addr = e.base.trim_start_matches("http://");
                let mut text = format!("GET {} HTTP/1.1\r\nHost: {addr}\r\n", e.path);
                for (k, v) in &all {
                    text.push_str(&format!("{k}: {v}\r\n"));
                }
                text.push_str("\r\n");
                if let Ok(mut stream) = tokio::net::TcpStream::connect(addr).await {
                    if let Delivery::CutAfter(ms) = delivery {
                        let _ = stream.write_all(text.as_bytes()).await;
                        tokio::time::sleep(Duration::from_millis(u64::from(ms))).await;
                    } else {
                        let _ = stream.write_all(&text.as_bytes()[..text.len() / 2]).await;
                    }
                    drop(stream);
                }
                (id, None)
            }
        }
    }

    async fn sign_x402(
        &self,
        client: &X402Client,
        r: &PaymentRequirements,
        required: &PaymentRequired,
    ) -> PaymentPayload {
        let mut one = required.clone();
        one.accepts = vec![r.clone()];
        let AnyPaymentPayload::V2(p) =
            client.create_payment_payload(&AnyPaymentRequired::V2(one)).await.expect("signs")
        else {
            panic!("v2")
        };
        p
    }

    async fn challenge(&self, ep: usize) -> Option<ParsedChallenge> {
        let e = &self.endpoints[ep];
        let resp = self.http.get(format!("{}{}", e.base, e.path)).send().await.ok()?;
        let www = resp.headers().get("www-authenticate")?.to_str().ok()?.to_owned();
        parse_www_authenticate(&[&www]).ok()?.into_iter().next()
    }

    async fn x402_pay(&self, m: &mut Model, ep: usize, forge: Forge, delivery: Delivery, sleep: u8) {
        let required = self.endpoints[ep].required.clone().expect("x402 requirements");
        let r = required.accepts[0].clone();
        let mut genuine = true;
        // What the payment validly pays, if anything (a "cheaper" one is a genuine payment of a
        // cheaper route's terms: a replay of it there is legitimate).
        let mut pays = Some(r.clone());
        let mut payload = match forge {
            Forge::Expired => {
                genuine = false;
                self.sign_x402(&self.past_client, &r, &required).await
            }
            Forge::Cheaper => {
                genuine = false;
                let mut cheap = r.clone();
                let price: u128 = r.amount.parse().expect("amount");
                cheap.amount = (price / 10).to_string();
                pays = Some(cheap.clone());
                self.sign_x402(&self.x402_client, &cheap, &required).await
            }
            _ => self.sign_x402(&self.x402_client, &r, &required).await,
        };
        match forge {
            Forge::BadSignature => {
                genuine = false;
                let sig = payload.payload["signature"].as_str().unwrap_or_default().to_owned();
                let flipped = format!("{}{}{}", &sig[..10], if &sig[10..11] == "a" { "b" } else { "a" }, &sig[11..]);
                payload.payload.insert("signature".into(), flipped.into());
            }
            Forge::WrongAmount => {
                genuine = false;
                if let Some(a) = payload.payload.get_mut("authorization").and_then(|a| a.as_object_mut()) {
                    a.insert("value".into(), "999".into());
                }
            }
            Forge::WrongPayTo => {
                genuine = false;
                if let Some(a) = payload.payload.get_mut("authorization").and_then(|a| a.as_object_mut()) {
                    a.insert("to".into(), PAYEE2.into());
                }
            }
            Forge::WrongAsset => {
                genuine = false;
                payload.accepted.asset = "0x4444444444444444444444444444444444444444".into();
            }
            _ => {}
        }
        let header = encode_payment_signature_header(&payload).expect("encodes");
        let index = m.x402.len();
        if forge != Forge::None && forge != Forge::Cheaper {
            pays = None;
        }
        m.x402.push(X402Sent { header: header.clone(), nonce: nonce_of(&payload), pays });
        let (id, answer) = self.send(ep, &[("PAYMENT-SIGNATURE", header)], delivery, sleep, false).await;
        m.requests.insert(id, Request { ep, carried: Carried::X402 { payment: index, genuine }, answer });
    }

    async fn x402_replay(&self, m: &mut Model, earlier: usize, ep: usize, delivery: Delivery) {
        if m.x402.is_empty() {
            return;
        }
        let index = earlier % m.x402.len();
        let here = &self.endpoints[ep].required.as_ref().expect("x402 requirements").accepts[0];
        let genuine = m.x402[index].pays.as_ref().is_some_and(|p| same_terms(p, here));
        let header = m.x402[index].header.clone();
        let (id, answer) = self.send(ep, &[("PAYMENT-SIGNATURE", header)], delivery, 0, false).await;
        m.requests.insert(id, Request { ep, carried: Carried::X402 { payment: index, genuine }, answer });
    }

    async fn charge(&self, m: &mut Model, replay: Option<usize>, delivery: Delivery, sleep: u8) {
        let index = match replay {
            Some(i) if !m.charges.is_empty() => i % m.charges.len(),
            _ => {
                let Some(c) = self.challenge(CHARGE_EP).await else { return };
                let credential = self.charges.credential_for(&c).expect("charge credential");
                let nonce =
                    credential.payload["authorization"]["nonce"].as_str().unwrap_or_default().to_ascii_lowercase();
                m.charges.push(ChargeSent { header: credential.to_authorization_header(), nonce });
                m.charges.len() - 1
            }
        };
        let header = m.charges[index].header.clone();
        let (id, answer) = self.send(CHARGE_EP, &[("authorization", header)], delivery, sleep, false).await;
        m.requests.insert(id, Request { ep: CHARGE_EP, carried: Carried::Charge { charge: index }, answer });
    }

    async fn open(&self, m: &mut Model, ep: usize, units: u8, lie: bool) {
        let Some(c) = self.challenge(ep).await else { return };
        let deposit = PRICE * u128::from(units);
        let (channel, mut header) = self.sessions.open_header(&c, U256::from(deposit)).expect("open");
        if lie {
            let mut credential = Credential::from_authorization_header(&header).expect("credential");
            credential.payload.insert("deposit".into(), (deposit * 1_000_000).to_string().into());
            header = credential.to_authorization_header();
        }
        let (id, answer) = self.send(ep, &[("authorization", header)], Delivery::Normal, 0, false).await;
        m.requests.insert(id, Request { ep, carried: Carried::Management, answer });
        m.channels.push(Channel { id: channel, ep, cumulative: 0, last_voucher: None, deposit_sent: deposit });
    }

    async fn voucher(
        &self,
        m: &mut Model,
        channel: usize,
        ep: usize,
        kind: VoucherKind,
        delivery: Delivery,
        sleep: u8,
    ) {
        if m.channels.is_empty() {
            return;
        }
        let ci = channel % m.channels.len();
        let Some(challenge) = self.challenge(ep).await else { return };
        let ch = &mut m.channels[ci];
        let (header, cumulative, genuine) = match kind {
            VoucherKind::Duplicate if ch.last_voucher.is_some() => {
                let (h, c) = ch.last_voucher.clone().expect("voucher");
                (h, c, true)
            }
            VoucherKind::Stranger => {
                let c = ch.cumulative + PRICE;
                (self.stranger.voucher_header(&challenge, &ch.id, U256::from(c)).expect("voucher"), c, false)
            }
            _ => {
                let c = match kind {
                    VoucherKind::Skip => ch.cumulative + 3 * PRICE,
                    VoucherKind::AboveDeposit => ch.deposit_sent.max(ch.cumulative) + PRICE,
                    _ => ch.cumulative + PRICE,
                };
                let h = self.sessions.voucher_header(&challenge, &ch.id, U256::from(c)).expect("voucher");
                ch.cumulative = ch.cumulative.max(c);
                ch.last_voucher = Some((h.clone(), c));
                (h, c, true)
            }
        };
        let (id, answer) = self.send(ep, &[("authorization", header)], delivery, sleep, false).await;
        m.requests.insert(id, Request { ep, carried: Carried::Voucher { channel: ci, cumulative, genuine }, answer });
    }

    async fn top_up(&self, m: &mut Model, channel: usize, units: u8, replay: bool) {
        if m.channels.is_empty() {
            return;
        }
        let ci = channel % m.channels.len();
        let ep = m.channels[ci].ep;
        let Some(challenge) = self.challenge(ep).await else { return };
        let amount = PRICE * u128::from(units);
        let header = self.sessions.top_up_header(&challenge, &m.channels[ci].id, U256::from(amount)).expect("top-up");
        m.channels[ci].deposit_sent += amount;
        for _ in 0..if replay { 2 } else { 1 } {
            let (id, answer) = self.send(ep, &[("authorization", header.clone())], Delivery::Normal, 0, false).await;
            m.requests.insert(id, Request { ep, carried: Carried::Management, answer });
        }
    }

    async fn stranger_close(&self, m: &mut Model, channel: usize) {
        if m.channels.is_empty() {
            return;
        }
        let ci = channel % m.channels.len();
        let ep = m.channels[ci].ep;
        let Some(challenge) = self.challenge(ep).await else { return };
        let header = self
            .stranger
            .close_header(&challenge, &m.channels[ci].id, U256::from(m.channels[ci].cumulative))
            .expect("close");
        let (id, answer) = self.send(ep, &[("authorization", header)], Delivery::Normal, 0, false).await;
        m.requests.insert(id, Request { ep, carried: Carried::Management, answer });
    }

    /// Waits until no handler, facilitator or SA call has been running for `calm` polls of 5 ms
    /// (detached completions may still run after a disconnect), at most 3 s.
    async fn quiesce(&self, calm_polls: u32) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
        let mut calm = 0;
        while calm < calm_polls && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
            let busy = ACTIVE.load(Ordering::SeqCst)
                + self.facilitator.inflight.load(Ordering::SeqCst)
                + self.sa.inflight.load(Ordering::SeqCst);
            calm = if busy == 0 { calm + 1 } else { 0 };
        }
    }

    /// Runs one sequence and returns the invariant violations.
    pub(crate) async fn run(&self, actions: &[Action]) -> Vec<Violation> {
        let mut m = Model::default();
        let first_log = lock(&HANDLER_LOG).len();
        for a in actions {
            match *a {
                Action::X402Pay { ep, forge, delivery, sleep, verify, settle } => {
                    self.set_plan(verify, settle, Answer::Real);
                    self.x402_pay(&mut m, ep, forge, delivery, sleep).await;
                }
                Action::X402Replay { earlier, ep, delivery, verify, settle } => {
                    self.set_plan(verify, settle, Answer::Real);
                    self.x402_replay(&mut m, earlier, ep, delivery).await;
                }
                Action::X402Head { ep } => {
                    self.set_plan(Answer::Real, Answer::Real, Answer::Real);
                    let (id, answer) = self.send(ep, &[], Delivery::Normal, 0, true).await;
                    m.requests.insert(id, Request { ep, carried: Carried::Nothing, answer });
                }
                Action::Charge { replay, delivery, sleep, sa } => {
                    self.set_plan(Answer::Real, Answer::Real, sa);
                    self.charge(&mut m, replay, delivery, sleep).await;
                }
                Action::Open { ep, units, lie, sa } => {
                    self.set_plan(Answer::Real, Answer::Real, sa);
                    self.open(&mut m, ep, units, lie).await;
                }
                Action::Voucher { channel, ep, kind, delivery, sleep } => {
                    self.set_plan(Answer::Real, Answer::Real, Answer::Real);
                    self.voucher(&mut m, channel, ep, kind, delivery, sleep).await;
                }
                Action::TopUp { channel, units, replay, sa } => {
                    self.set_plan(Answer::Real, Answer::Real, sa);
                    self.top_up(&mut m, channel, units, replay).await;
                }
                Action::StrangerClose { channel } => {
                    self.set_plan(Answer::Real, Answer::Real, Answer::Real);
                    self.stranger_close(&mut m, channel).await;
                }
            }
        }
        self.set_plan(Answer::Real, Answer::Real, Answer::Real);
        // After a disconnect the server may still be working (or only now notice the EOF).
        let cut = actions.iter().any(|a| {
            matches!(
                a,
                Action::X402Pay { delivery: Delivery::CutHeaders | Delivery::CutAfter(_), .. }
                    | Action::X402Replay { delivery: Delivery::CutHeaders | Delivery::CutAfter(_), .. }
                    | Action::Charge { delivery: Delivery::CutHeaders | Delivery::CutAfter(_), .. }
                    | Action::Voucher { delivery: Delivery::CutHeaders | Delivery::CutAfter(_), .. }
            )
        });
        self.quiesce(if cut { 10 } else { 1 }).await;
        let mut v = self.check(&m, first_log).await;
        if v.is_empty() {
            v = self.check_release(&mut m).await;
        }
        v
    }

    /// I4 (release): a genuine x402 payment that never reached settlement can be used again.
    async fn check_release(&self, m: &mut Model) -> Vec<Violation> {
        let settles = lock(&self.facilitator.settles).clone();
        let payer = self.payer.address().to_string();
        let candidate = m.x402.iter().enumerate().rev().find(|(_, p)| {
            p.pays.is_some()
                && !settles.contains_key(&p.nonce)
                && !self.facilitator.inner.is_nonce_used(USDT0, &payer, &p.nonce)
        });
        let Some((index, sent)) = candidate else { return Vec::new() };
        let pays = sent.pays.clone().expect("genuine");
        let Some(ep) = X402_EPS
            .into_iter()
            .find(|&ep| same_terms(&self.endpoints[ep].required.as_ref().expect("requirements").accepts[0], &pays))
        else {
            return Vec::new();
        };
        let header = sent.header.clone();
        let (_, answer) = self.send(ep, &[("PAYMENT-SIGNATURE", header)], Delivery::Normal, 0, false).await;
        self.quiesce(1).await;
        match answer {
            Some((200, true)) => Vec::new(),
            other => vec![Violation::new(
                "I4",
                format!(
                    "x402 payment #{index} (nonce {}) never reached settlement, yet sending it again to {} got {other:?}: its replay key was never released",
                    sent.nonce, self.endpoints[ep].label
                ),
            )],
        }
    }

    async fn check(&self, m: &Model, first_log: usize) -> Vec<Violation> {
        let mut v = Vec::new();
        let log: Vec<(u64, &'static str)> = lock(&HANDLER_LOG)[first_log..].to_vec();
        let settles = lock(&self.facilitator.settles).clone();
        let payer = self.payer.address().to_string();
        let mut served_value: HashMap<usize, u128> = HashMap::new();
        let mut served_max: HashMap<usize, u128> = HashMap::new();
        let mut handler_runs: HashSet<u64> = HashSet::new();
        for (id, route) in &log {
            handler_runs.insert(*id);
            let Some(req) = m.requests.get(id) else {
                // A request of an earlier sequence the server got to only now (it was cut before
                // that sequence's check) is that sequence's business; anything else is unknown.
                if m.requests.keys().min().is_none_or(|first| id >= first) {
                    v.push(Violation::new("I1", format!("handler {route} ran for an unknown request {id}")));
                }
                continue;
            };
            let label = self.endpoints[req.ep].label;
            match &req.carried {
                Carried::Nothing => {
                    v.push(Violation::new("I1", format!("{label}: the handler ran for an unpaid request (HEAD)")))
                }
                Carried::Management => {
                    v.push(Violation::new("I1", format!("{label}: the handler ran for a management request")))
                }
                Carried::X402 { payment, genuine } => {
                    if !genuine {
                        v.push(Violation::new(
                            "I1",
                            format!("{label}: the handler ran for forged x402 payment #{payment}"),
                        ));
                    }
                    let nonce = &m.x402[*payment].nonce;
                    if !settles.contains_key(nonce) {
                        v.push(Violation::new(
                            "I4",
                            format!("{label}: the handler ran for x402 payment #{payment} but its settlement was never attempted (nonce {nonce})"),
                        ));
                    }
                }
                Carried::Charge { charge } => {
                    if !self.sa.inner.is_nonce_used(USDT0, &payer, &m.charges[*charge].nonce) {
                        v.push(Violation::new(
                            "I1",
                            format!("{label}: the handler ran for MPP charge #{charge} whose authorization never moved money in the SA's ledger"),
                        ));
                    }
                }
                Carried::Voucher { channel, cumulative, genuine } => {
                    if !genuine {
                        v.push(Violation::new(
                            "I1",
                            format!("{label}: the handler ran for a voucher signed by a stranger"),
                        ));
                    }
                    *served_value.entry(*channel).or_default() += self.endpoints[req.ep].price;
                    let max = served_max.entry(*channel).or_default();
                    *max = (*max).max(*cumulative);
                    let ch = &m.channels[*channel];
                    let recipient = self.endpoints[req.ep].recipient;
                    match self.sa.inner.session_status_now(&ch.id) {
                        Ok(status) if !status.payee.eq_ignore_ascii_case(recipient) => v.push(Violation::new(
                            "I3",
                            format!(
                                "{label}: served a voucher of channel #{channel} whose escrow pays {} instead of the route's recipient {recipient}",
                                status.payee
                            ),
                        )),
                        Ok(status) if !status.token.eq_ignore_ascii_case(USDT0) => v.push(Violation::new(
                            "I3",
                            format!("{label}: served a voucher of channel #{channel} in token {}", status.token),
                        )),
                        _ => {}
                    }
                }
            }
        }
        // I2 and I5 over the answered requests.
        let mut bodies_per_x402: HashMap<usize, u32> = HashMap::new();
        let mut bodies_per_charge: HashMap<usize, u32> = HashMap::new();
        // x402 runs the handler before settling: a retry of a payment whose settlement outcome
        // was unknown gets the response the handler produced in an earlier request (recorded,
        // issue 17), so its handler run is logged under that earlier request.
        let x402_runs: HashSet<usize> = handler_runs
            .iter()
            .filter_map(|id| match m.requests.get(id).map(|r| &r.carried) {
                Some(Carried::X402 { payment, genuine: true }) => Some(*payment),
                _ => None,
            })
            .collect();
        for (id, req) in &m.requests {
            let Some((status, true)) = req.answer else { continue };
            let label = self.endpoints[req.ep].label;
            let recorded =
                matches!(&req.carried, Carried::X402 { payment, genuine: true } if x402_runs.contains(payment));
            if !handler_runs.contains(id) && !recorded {
                v.push(Violation::new(
                    "I1",
                    format!("{label}: a response ({status}) carries the handler's body, but no handler run was logged"),
                ));
            }
            match &req.carried {
                Carried::X402 { payment, .. } => {
                    *bodies_per_x402.entry(*payment).or_default() += 1;
                    let nonce = &m.x402[*payment].nonce;
                    if !self.facilitator.inner.is_nonce_used(USDT0, &payer, nonce) {
                        v.push(Violation::new(
                            "I2",
                            format!("{label}: answered {status} with the handler's body but x402 payment #{payment} is not settled in the ledger"),
                        ));
                    }
                }
                Carried::Charge { charge } => {
                    *bodies_per_charge.entry(*charge).or_default() += 1;
                    if !self.sa.inner.is_nonce_used(USDT0, &payer, &m.charges[*charge].nonce) {
                        v.push(Violation::new(
                            "I2",
                            format!("{label}: answered {status} with the handler's body but MPP charge #{charge} is not settled in the SA's ledger"),
                        ));
                    }
                }
                _ => {}
            }
        }
        for (p, n) in bodies_per_x402 {
            if n > 1 {
                v.push(Violation::new("I5", format!("x402 payment #{p} was served {n} times")));
            }
        }
        for (c, n) in bodies_per_charge {
            if n > 1 {
                v.push(Violation::new("I5", format!("MPP charge #{c} was served {n} times")));
            }
        }
        for (nonce, (_, ok)) in &settles {
            if *ok > 1 {
                v.push(Violation::new("I5", format!("x402 nonce {nonce} settled {ok} times")));
            }
        }
        // I3 and I4 per channel.
        for (i, ch) in m.channels.iter().enumerate() {
            let escrowed: u128 = match self.sa.inner.session_status_now(&ch.id) {
                Ok(s) => s.deposit.parse().unwrap_or(0),
                Err(_) => 0,
            };
            let value = served_value.get(&i).copied().unwrap_or(0);
            let max = served_max.get(&i).copied().unwrap_or(0);
            if value > escrowed || max > escrowed {
                v.push(Violation::new(
                    "I3",
                    format!(
                        "channel #{i} ({}): served value {value}, highest voucher served {max}, but the escrow holds {escrowed}",
                        self.endpoints[ch.ep].label
                    ),
                ));
            }
            if let Ok(Some(state)) = self.intent.channel_store().get(&ch.id).await
                && state.value.reserved != 0
            {
                v.push(Violation::new(
                    "I4",
                    format!(
                        "channel #{i}: {} still reserved after quiescence (a reservation never ended)",
                        state.value.reserved
                    ),
                ));
            }
        }
        v
    }
}

/// A sequence of buyer actions.
pub(crate) fn sequence(mix: Mix, max_len: usize) -> impl Strategy<Value = Vec<Action>> {
    prop::collection::vec(action(mix), 1..max_len)
}
