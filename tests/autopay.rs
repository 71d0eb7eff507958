//! The auto-paying client ([`pay402::autopay`]) against real pay402 servers on 127.0.0.1: an
//! axum app with x402 routes (`X402Layer`, embedded facilitator), MPP charge and session routes
//! (`MppLayer`, embedded Settlement Agent), and a dual route (`PaymentRouterLayer`, both
//! protocols). Every request reaching the server is logged (path and payment kind) and every
//! handler run counted, so the tests see what was sent, what was paid and what was refused.

mod support;

use axum::extract::State;
use pay402::autopay::{
    Amount, AssetId, AutoPay, AutoPayError, AutoPayMiddleware, AutoPayOutcome, PaymentDetail, Protocol,
};
use pay402::chain::NetworkRegistry;
use pay402::chain::X_LAYER_USDT0;
use pay402::evm::{PrivateKeySigner, U256, signer_from_hex};
use pay402::mpp::{ChargeIntent, Credential, EmbeddedSa, EvmMethod, Mpp, PaySpec, SessionIntent};
use pay402::router::{MppAdapter, Paid, PaymentRouter, RouteProtocols, X402Adapter};
use pay402::x402::EmbeddedFacilitator;
use pay402::x402::ExactEvmScheme;
use pay402::x402::X402ResourceServer;
use pay402::x402::{PaymentOption, RouteConfig, X402HttpServer};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::Running;
use support::accounts::{ESCROW, OTHER_KEY, PAYEE, PAYEE_KEY, PAYER, PAYER_KEY};

const REALM: &str = "autopay.test";
const MPP_SECRET: &str = "autopay-test-secret-at-least-32-bytes-long-hmac-key";
const FUNDS: u64 = 10_000_000;
/// The price of the cheap routes: 0.001 USD₮0.
const PRICE: u64 = 1000;

fn u(v: u64) -> U256 {
    U256::from(v)
}

fn key(k: &str) -> PrivateKeySigner {
    signer_from_hex(k).expect("key")
}

/// What reached the server: (path, `none` | `x402` | the MPP payload's `action` or `charge`).
type Log = Arc<Mutex<Vec<(String, String)>>>;

async fn record(
    State(log): State<Log>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let headers = req.headers();
    let kind = if headers.contains_key("payment-signature") || headers.contains_key("x-payment") {
        "x402".to_owned()
    } else if let Some(auth) = headers.get("authorization").and_then(|v| v.to_str().ok()) {
        let credential = Credential::from_authorization_header(auth).expect("an MPP credential");
        credential.payload.get("action").and_then(|a| a.as_str()).unwrap_or("charge").to_owned()
    } else {
        "none".to_owned()
    };
    log.lock().expect("log").push((req.uri().path().to_owned(), kind));
    next.run(req).await
}

/// While positive, the next MPP credentials are forged (challenge id altered) before the server sees
/// it, as if the server had rotated its secret: the server answers 402 with a fresh challenge.
async fn tamper(
    State(armed): State<Arc<AtomicUsize>>,
    mut req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let auth = req.headers().get("authorization").and_then(|v| v.to_str().ok()).map(str::to_owned);
    if let Some(auth) = auth
        && armed.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok()
    {
        let mut credential = Credential::from_authorization_header(&auth).expect("an MPP credential");
        credential.challenge.id = "forged".into();
        let forged = credential.to_authorization_header().parse().expect("header value");
        req.headers_mut().insert("authorization", forged);
    }
    next.run(req).await
}

struct Fixture {
    /// x402, charge and session routes.
    app: Running,
    /// The dual route.
    dual: Running,
    facilitator: EmbeddedFacilitator,
    sa: EmbeddedSa,
    intent: SessionIntent,
    calls: HashMap<&'static str, Arc<AtomicUsize>>,
    log: Log,
    tamper: Arc<AtomicUsize>,
}

const PATHS: [&str; 8] =
    ["/x402", "/x402-pricey", "/charge", "/charge-pricey", "/session", "/session-short", "/dual", "/free"];

async fn start() -> Fixture {
    let facilitator = EmbeddedFacilitator::new();
    facilitator.fund(X_LAYER_USDT0, PAYER, u(FUNDS)).expect("fund");
    let sa = EmbeddedSa::new().with_registry(NetworkRegistry::x_layer());
    sa.fund(X_LAYER_USDT0, PAYER, u(FUNDS)).expect("fund");

    let resource = || X402ResourceServer::new(facilitator.clone()).register("eip155:196", ExactEvmScheme::new());
    let x402 = X402HttpServer::new(resource())
        .route("GET /x402", RouteConfig::new(PaymentOption::exact("$0.001", PAYEE)))
        .and_then(|s| s.route("GET /x402-pricey", RouteConfig::new(PaymentOption::exact("$0.05", PAYEE))))
        .expect("x402 routes");
    let intent = SessionIntent::new(sa.clone(), PAYEE).signer(Arc::new(key(PAYEE_KEY)));
    let method = EvmMethod::x_layer(PAYEE).with_charge(ChargeIntent::new(sa.clone())).with_session(intent.clone());
    let mpp = Mpp::new(method, REALM, MPP_SECRET).expect("mpp");
    let session = PaySpec { amount: "0.001".into(), intent: "session".into(), ..PaySpec::default() };
    let routes = mpp
        .clone()
        .route("GET /charge", PaySpec::charge("0.001"))
        .and_then(|m| m.route("GET /charge-pricey", PaySpec::charge("0.05")))
        .and_then(|m| m.route("GET /session", session.clone()))
        // Challenges too short-lived to be used ahead: every request is challenged first.
        .and_then(|m| m.route("GET /session-short", session.expires_in(Duration::from_secs(4))))
        .expect("mpp routes");

    let calls: HashMap<&'static str, Arc<AtomicUsize>> = PATHS.iter().map(|p| (*p, Arc::default())).collect();
    let log: Log = Arc::default();
    let tamper_flag = Arc::new(AtomicUsize::new(0));
    let counted = |path: &'static str| {
        let c = Arc::clone(&calls[path]);
        axum::routing::get(move || {
            c.fetch_add(1, Ordering::SeqCst);
            async move { axum::Json(serde_json::json!({ "data": path })) }
        })
    };
    let app = axum::Router::new()
        .route("/x402", counted("/x402"))
        .route("/x402-pricey", counted("/x402-pricey"))
        .route("/charge", counted("/charge"))
        .route("/charge-pricey", counted("/charge-pricey"))
        .route("/session", counted("/session"))
        .route("/session-short", counted("/session-short"))
        .route("/free", counted("/free"))
        .layer(pay402::axum::MppLayer::new(routes))
        .layer(pay402::axum::X402Layer::new(x402))
        .layer(axum::middleware::from_fn_with_state(Arc::clone(&tamper_flag), tamper))
        .layer(axum::middleware::from_fn_with_state(Arc::clone(&log), record));

    let dual_routes = PaymentRouter::new()
        .adapter(X402Adapter::new(X402HttpServer::new(resource())))
        .adapter(MppAdapter::new(mpp))
        .route(
            "GET /dual",
            RouteProtocols::new()
                .x402(RouteConfig::new(PaymentOption::exact("$0.001", PAYEE)))
                .mpp(PaySpec::charge("0.001")),
        )
        .expect("dual route");
    let c = Arc::clone(&calls["/dual"]);
    let dual_handler = move |paid: Paid| {
        c.fetch_add(1, Ordering::SeqCst);
        let by = match paid {
            Paid::X402(_) => "x402",
            Paid::Mpp { .. } => "mpp",
            _ => "other",
        };
        async move { axum::Json(serde_json::json!({ "paid": by })) }
    };
    let dual = axum::Router::new()
        .route("/dual", axum::routing::get(dual_handler))
        .layer(pay402::axum::PaymentRouterLayer::new(dual_routes))
        .layer(axum::middleware::from_fn_with_state(Arc::clone(&log), record));

    Fixture {
        app: support::serve_axum(app).await,
        dual: support::serve_axum(dual).await,
        facilitator,
        sa,
        intent,
        calls,
        log,
        tamper: tamper_flag,
    }
}

impl Fixture {
    fn url(&self, path: &str) -> String {
        let base = if path == "/dual" { &self.dual.base } else { &self.app.base };
        format!("{base}{path}")
    }

    fn calls(&self, path: &str) -> usize {
        self.calls[path].load(Ordering::SeqCst)
    }

    /// The requests that reached the server for `path`, as payment kinds.
    fn sent(&self, path: &str) -> Vec<String> {
        self.log.lock().expect("log").iter().filter(|(p, _)| p == path).map(|(_, k)| k.clone()).collect()
    }

    /// (payer, payee) on the facilitator's ledger.
    fn x402_balances(&self) -> (U256, U256) {
        (self.facilitator.balance(X_LAYER_USDT0, PAYER), self.facilitator.balance(X_LAYER_USDT0, PAYEE))
    }

    /// (payer, escrow, payee) on the Settlement Agent's ledger.
    fn sa_balances(&self) -> (U256, U256, U256) {
        let b = |who: &str| self.sa.balance(X_LAYER_USDT0, who);
        (b(PAYER), b(ESCROW), b(PAYEE))
    }
}

fn usdt0() -> AssetId {
    AssetId::x_layer_usdt0()
}

/// A buyer paying USD₮0 up to 0.01 per request and 1 in total (session deposits of at most
/// 0.1 included), with `preference`.
fn buyer(preference: &[Protocol]) -> AutoPayMiddleware {
    AutoPay::new(key(PAYER_KEY))
        .prefer(preference.iter().copied())
        .max_per_request(usdt0(), "0.01".parse().expect("amount"))
        .max_total(usdt0(), "1".parse().expect("amount"))
        .max_deposit(usdt0(), "0.1".parse().expect("amount"))
        .registry(NetworkRegistry::x_layer())
        .build()
        .expect("autopay")
}

const ALL: [Protocol; 3] = [Protocol::X402, Protocol::MppCharge, Protocol::MppSession];

fn outcome(resp: &reqwest::Response) -> AutoPayOutcome {
    resp.extensions().get::<AutoPayOutcome>().cloned().expect("a AutoPayOutcome on the response")
}

fn refusal(err: reqwest_middleware::Error) -> AutoPayError {
    AutoPayError::from_middleware(&err).cloned().unwrap_or_else(|| panic!("not an autopay error: {err}"))
}

#[tokio::test]
async fn pays_an_x402_route_and_exposes_the_settlement() {
    let f = start().await;
    let autopay = buyer(&ALL);
    let http = autopay.client(reqwest::Client::builder()).expect("client");
    for n in 1..=2u64 {
        let resp = http.get(f.url("/x402")).send().await.expect("request");
        assert_eq!(resp.status(), 200);
        let paid = outcome(&resp);
        assert_eq!((paid.protocol, &paid.asset, paid.amount), (Protocol::X402, &usdt0(), u(PRICE)));
        let PaymentDetail::X402 { requirements, settlement } = &paid.detail else { panic!("{paid:?}") };
        assert_eq!((requirements.scheme.as_str(), requirements.amount.as_str()), ("exact", "1000"));
        let settlement = settlement.as_ref().expect("decoded PAYMENT-RESPONSE");
        assert!(settlement.success, "{settlement:?}");
        assert!(settlement.transaction.starts_with("0x"), "{settlement:?}");
        assert_eq!(settlement.payer.as_deref().map(str::to_ascii_lowercase), Some(PAYER.to_ascii_lowercase()));
        let body: serde_json::Value = resp.json().await.expect("json");
        assert_eq!(body["data"], "/x402");
        assert_eq!(f.x402_balances(), (u(FUNDS - n * PRICE), u(n * PRICE)));
        assert_eq!(autopay.spent(&usdt0()), u(n * PRICE));
    }
    assert_eq!(f.calls("/x402"), 2);
    assert_eq!(f.sent("/x402"), ["none", "x402", "none", "x402"], "one unpaid request, one paid retry, each time");
    assert_eq!(autopay.reserved(&usdt0()), U256::ZERO);
    assert_eq!(autopay.remaining(&usdt0()), Some(u(1_000_000 - 2 * PRICE)));

    // A route that does not ask for payment passes through untouched.
    let free = http.get(f.url("/free")).send().await.expect("request");
    assert_eq!(free.status(), 200);
    assert!(free.extensions().get::<AutoPayOutcome>().is_none());
    assert_eq!(f.sent("/free"), ["none"]);
}

#[tokio::test]
async fn pays_an_mpp_charge_route_and_exposes_the_receipt() {
    let f = start().await;
    let autopay = buyer(&ALL);
    let http = autopay.client(reqwest::Client::builder()).expect("client");
    let resp = http.get(f.url("/charge")).send().await.expect("request");
    assert_eq!(resp.status(), 200);
    let paid = outcome(&resp);
    assert_eq!((paid.protocol, paid.amount), (Protocol::MppCharge, u(PRICE)));
    let PaymentDetail::MppCharge { challenge_id, receipt } = &paid.detail else { panic!("{paid:?}") };
    assert!(!challenge_id.is_empty());
    let receipt = receipt.as_ref().expect("decoded Payment-Receipt");
    assert_eq!((receipt.status.as_str(), receipt.method.as_str()), ("success", "evm"));
    assert!(receipt.reference.starts_with("0x"), "{receipt:?}");
    assert_eq!(f.sa_balances(), (u(FUNDS - PRICE), U256::ZERO, u(PRICE)));
    assert_eq!(f.calls("/charge"), 1);
    assert_eq!(f.sent("/charge"), ["none", "charge"]);
    assert_eq!(autopay.spent(&usdt0()), u(PRICE));
}

#[tokio::test]
async fn mpp_session_opens_one_channel_then_sends_vouchers_only() {
    let f = start().await;
    // A deposit of 2.5 requests: the third request tops the channel up.
    let autopay = AutoPay::new(key(PAYER_KEY))
        .prefer([Protocol::MppSession])
        .max_per_request(usdt0(), "0.01".parse().expect("amount"))
        .max_total(usdt0(), "1".parse().expect("amount"))
        .session_deposit(usdt0(), Amount::atomic(2500u64))
        .registry(NetworkRegistry::x_layer())
        .build()
        .expect("autopay");
    let http = autopay.client(reqwest::Client::builder()).expect("client");
    let mut channel = String::new();
    for n in 1..=4u64 {
        let resp = http.get(f.url("/session")).send().await.expect("request");
        assert_eq!(resp.status(), 200, "request {n}");
        let paid = outcome(&resp);
        assert_eq!((paid.protocol, paid.amount), (Protocol::MppSession, u(PRICE)));
        let PaymentDetail::MppSession { channel_id, cumulative, deposit, opened, topped_up, receipt } = &paid.detail
        else {
            panic!("{paid:?}")
        };
        if n == 1 {
            channel = channel_id.clone();
        }
        assert_eq!(channel_id, &channel, "one channel");
        assert_eq!(*cumulative, u(n * PRICE));
        assert_eq!((*opened, *topped_up), (n == 1, n == 3), "request {n}");
        assert_eq!(*deposit, if n < 3 { u(2500) } else { u(5000) });
        let receipt = receipt.as_ref().expect("Payment-Receipt");
        assert_eq!(receipt.reference, channel);
        let extra = receipt.extra.as_ref().expect("extra");
        assert_eq!(extra["cumulativeAmount"], (n * PRICE).to_string());
        assert_eq!(autopay.spent(&usdt0()), u(n * PRICE));
    }
    assert_eq!(f.calls("/session"), 4);
    assert_eq!(
        f.sent("/session"),
        ["none", "open", "voucher", "voucher", "topUp", "voucher", "voucher"],
        "one 402, one open, then vouchers (and the top-up)"
    );
    let state = f.intent.channel_store().get(&channel).await.expect("store").expect("channel").value;
    assert_eq!((state.deposit, state.highest_voucher_amount, state.spent, state.units), (5000, 4000, 4000, 4));
    assert_eq!(f.sa_balances(), (u(FUNDS - 5000), u(5000), U256::ZERO), "vouchers move no tokens");
    let channels = autopay.channels().await;
    assert_eq!(channels.len(), 1);
    assert_eq!((channels[0].cumulative, channels[0].deposit), (u(4000), u(5000)));

    // Closing pays the payee the vouched amount and refunds the rest.
    let closed = autopay.close_channels(&reqwest::Client::new()).await.expect("close");
    assert_eq!(closed.len(), 1);
    assert_eq!(closed[0].channel_id, channel);
    assert_eq!(f.sa_balances(), (u(FUNDS - 4000), U256::ZERO, u(4000)));
    assert!(autopay.channels().await.is_empty());
    assert_eq!(f.sent("/session").last().map(String::as_str), Some("close"));
    assert_eq!(f.calls("/session"), 4, "management requests never run the handler");

    // After closing, the next request opens a new channel.
    let resp = http.get(f.url("/session")).send().await.expect("request");
    let paid = outcome(&resp);
    let PaymentDetail::MppSession { channel_id, opened, cumulative, .. } = &paid.detail else { panic!() };
    assert!(*opened && channel_id != &channel && *cumulative == u(PRICE));
}

#[tokio::test]
async fn a_dual_route_is_paid_with_the_preferred_protocol() {
    let f = start().await;
    for (preference, want, paid_by) in [
        (vec![Protocol::MppCharge, Protocol::X402], Protocol::MppCharge, "mpp"),
        (vec![Protocol::X402, Protocol::MppCharge], Protocol::X402, "x402"),
        (vec![Protocol::MppSession, Protocol::X402], Protocol::X402, "x402"),
    ] {
        let autopay = buyer(&preference);
        let resp = autopay
            .client(reqwest::Client::builder())
            .expect("client")
            .get(f.url("/dual"))
            .send()
            .await
            .expect("request");
        assert_eq!(resp.status(), 200);
        assert_eq!(outcome(&resp).protocol, want, "{preference:?}");
        let body: serde_json::Value = resp.json().await.expect("json");
        assert_eq!(body["paid"], paid_by, "{preference:?}");
    }
    assert_eq!(f.x402_balances(), (u(FUNDS - 2 * PRICE), u(2 * PRICE)));
    assert_eq!(f.sa_balances(), (u(FUNDS - PRICE), U256::ZERO, u(PRICE)));
    assert_eq!(f.sent("/dual"), ["none", "charge", "none", "x402", "none", "x402"]);

    // The preferred offer cannot be signed (this buyer's registry does not know the token's
    // EIP-712 domain): the next one is paid; nothing is sent for the first.
    let unsigned = |preference: Vec<Protocol>| {
        AutoPay::new(key(PAYER_KEY))
            .prefer(preference)
            .max_per_request(usdt0(), Amount::atomic(10_000u64))
            .registry(NetworkRegistry::empty())
            .build()
            .expect("autopay")
    };
    let autopay = unsigned(vec![Protocol::MppCharge, Protocol::X402]);
    let resp =
        autopay.client(reqwest::Client::builder()).expect("client").get(f.url("/dual")).send().await.expect("request");
    assert_eq!(outcome(&resp).protocol, Protocol::X402);
    let autopay = unsigned(vec![Protocol::MppCharge]);
    let err = autopay
        .client(reqwest::Client::builder())
        .expect("client")
        .get(f.url("/dual"))
        .send()
        .await
        .expect_err("refused");
    assert!(matches!(refusal(err), AutoPayError::Payment { protocol: Protocol::MppCharge, .. }));
    assert_eq!((autopay.spent(&usdt0()), autopay.reserved(&usdt0())), (U256::ZERO, U256::ZERO));
    assert_eq!(f.sent("/dual")[6..], ["none", "x402", "none"]);

    // Only a protocol the route does not offer: nothing is paid.
    let autopay = buyer(&[Protocol::MppSession]);
    let err = autopay
        .client(reqwest::Client::builder())
        .expect("client")
        .get(f.url("/dual"))
        .send()
        .await
        .expect_err("refused");
    let AutoPayError::NoAcceptableChallenge { offered } = refusal(err) else { panic!() };
    assert!(offered.iter().any(|o| o == "x402 exact@eip155:196") && offered.iter().any(|o| o == "mpp evm/charge"));
    assert_eq!(f.calls("/dual"), 4);
}

#[tokio::test]
async fn refuses_a_route_above_the_per_request_cap() {
    let f = start().await;
    let autopay = buyer(&ALL);
    let http = autopay.client(reqwest::Client::builder()).expect("client");
    for path in ["/x402-pricey", "/charge-pricey"] {
        let err = http.get(f.url(path)).send().await.expect_err("refused");
        let refused = refusal(err);
        assert_eq!(
            refused,
            AutoPayError::OverCap { asset: usdt0(), requested: u(50_000), cap: u(10_000), units: usdt0_units() },
            "{path}"
        );
        // In the user's units (the caps are set in decimals), atomic units alongside.
        assert_eq!(
            refused.to_string(),
            format!(
                "refusing to pay 0.05 USD₮0 (50000 atomic units) ({}): above the per-request cap of \
                 0.01 USD₮0 (10000 atomic units)",
                usdt0()
            ),
            "{path}"
        );
        assert_eq!(f.calls(path), 0, "{path}: the handler never runs");
        assert_eq!(f.sent(path), ["none"], "{path}: no payment is sent");
    }
    assert_eq!(f.x402_balances(), (u(FUNDS), U256::ZERO));
    assert_eq!(f.sa_balances(), (u(FUNDS), U256::ZERO, U256::ZERO));
    assert_eq!((autopay.spent(&usdt0()), autopay.reserved(&usdt0())), (U256::ZERO, U256::ZERO));

    // An asset without a cap is never paid.
    let other = AssetId::new("eip155:196", "0x1111111111111111111111111111111111111111");
    let autopay = AutoPay::new(key(PAYER_KEY)).allow(other).build().expect("autopay");
    let err = autopay
        .client(reqwest::Client::builder())
        .expect("client")
        .get(f.url("/x402"))
        .send()
        .await
        .expect_err("refused");
    assert_eq!(refusal(err), AutoPayError::AssetNotAllowed { asset: usdt0() });
    assert_eq!(f.calls("/x402"), 0);
}

#[tokio::test]
async fn refuses_once_the_total_cap_is_exhausted() {
    let f = start().await;
    let autopay = AutoPay::new(key(PAYER_KEY))
        .max_total(usdt0(), "0.0025".parse().expect("amount"))
        .registry(NetworkRegistry::x_layer())
        .build()
        .expect("autopay");
    let http = autopay.client(reqwest::Client::builder()).expect("client");
    for path in ["/x402", "/charge"] {
        let resp = http.get(f.url(path)).send().await.expect("paid");
        assert_eq!(resp.status(), 200);
    }
    assert_eq!(autopay.spent(&usdt0()), u(2 * PRICE));
    for path in ["/x402", "/charge"] {
        let err = http.get(f.url(path)).send().await.expect_err("refused");
        assert_eq!(
            refusal(err),
            AutoPayError::TotalCapExceeded {
                asset: usdt0(),
                requested: u(PRICE),
                spent: u(2000),
                cap: u(2500),
                units: usdt0_units()
            }
        );
        assert_eq!(f.calls(path), 1, "{path}: the handler ran for the paid request only");
    }
    assert_eq!(f.sent("/x402"), ["none", "x402", "none"]);
    assert_eq!(f.x402_balances(), (u(FUNDS - PRICE), u(PRICE)));
    assert_eq!(f.sa_balances(), (u(FUNDS - PRICE), U256::ZERO, u(PRICE)));

    // A session route: the channel deposit is bounded by the total cap (2500) and counts
    // against it; the third voucher would need a top-up above the cap and is refused before
    // anything is sent.
    let autopay = AutoPay::new(key(PAYER_KEY))
        .prefer([Protocol::MppSession])
        .max_total(usdt0(), Amount::atomic(2500u64))
        .max_deposit(usdt0(), Amount::atomic(10_000u64))
        .registry(NetworkRegistry::x_layer())
        .build()
        .expect("autopay");
    let http = autopay.client(reqwest::Client::builder()).expect("client");
    for _ in 0..2 {
        assert_eq!(http.get(f.url("/session")).send().await.expect("paid").status(), 200);
    }
    let channels = autopay.channels().await;
    assert_eq!((channels[0].deposit, channels[0].cumulative), (u(2500), u(2000)));
    let err = http.get(f.url("/session")).send().await.expect_err("refused");
    assert!(matches!(
        refusal(err),
        AutoPayError::TotalCapExceeded { requested, spent, .. } if requested == u(500) && spent == u(2500)
    ));
    assert_eq!((autopay.spent(&usdt0()), autopay.escrowed(&usdt0())), (u(2000), u(500)));
    assert_eq!(f.calls("/session"), 2);
    assert_eq!(f.sent("/session"), ["none", "open", "voucher", "voucher"], "the refused request is never sent");
}

#[tokio::test]
async fn concurrent_requests_never_overshoot_the_total_cap() {
    let f = start().await;
    let autopay = AutoPay::new(key(PAYER_KEY))
        .max_total(usdt0(), "0.005".parse().expect("amount"))
        .registry(NetworkRegistry::x_layer())
        .build()
        .expect("autopay");
    let http = autopay.client(reqwest::Client::builder()).expect("client");
    let tasks: Vec<_> = (0..12)
        .map(|i| {
            let http = http.clone();
            let url = f.url(if i % 2 == 0 { "/x402" } else { "/charge" });
            tokio::spawn(async move { http.get(url).send().await })
        })
        .collect();
    let (mut paid, mut refused) = (0, 0);
    for t in tasks {
        match t.await.expect("task") {
            Ok(resp) => {
                assert_eq!(resp.status(), 200);
                paid += 1;
            }
            Err(err) => {
                assert!(matches!(refusal(err), AutoPayError::TotalCapExceeded { .. }));
                refused += 1;
            }
        }
    }
    assert_eq!((paid, refused), (5, 7));
    assert_eq!(f.calls("/x402") + f.calls("/charge"), 5);
    assert_eq!(autopay.spent(&usdt0()), u(5 * PRICE));
    assert_eq!(autopay.reserved(&usdt0()), U256::ZERO);
    let moved = f.x402_balances().1 + f.sa_balances().2;
    assert_eq!(moved, u(5 * PRICE), "exactly the cap left the wallet");
}

#[test]
fn the_builder_refuses_inconsistent_caps() {
    let base = || AutoPay::new(key(PAYER_KEY)).registry(NetworkRegistry::x_layer());
    assert!(matches!(base().build(), Err(AutoPayError::Config(_))), "no payable asset");
    assert!(matches!(base().allow(usdt0()).prefer(Vec::new()).build(), Err(AutoPayError::Config(_))), "no protocol");
    let inverted = base().max_per_request(usdt0(), Amount::atomic(2u64)).max_total(usdt0(), Amount::atomic(1u64));
    assert!(matches!(inverted.build(), Err(AutoPayError::Config(_))));
    let too_precise = base().max_total(usdt0(), "0.0000001".parse().expect("a decimal"));
    assert!(matches!(too_precise.build(), Err(AutoPayError::InvalidAmount { .. })));
    // Decimals are never taken from a server: a decimal cap needs known decimals.
    let other = AssetId::new("eip155:196", "0x1111111111111111111111111111111111111111");
    let unknown = base().max_total(other.clone(), "1".parse().expect("a decimal"));
    assert_eq!(unknown.build().map(|_| ()), Err(AutoPayError::UnknownDecimals { asset: other.clone() }));
    assert!(base().max_total(other.clone(), "1".parse().expect("a decimal")).decimals(other, 6).build().is_ok());
    let deposit_above_max =
        base().session_deposit(usdt0(), Amount::atomic(2u64)).max_deposit(usdt0(), Amount::atomic(1u64));
    assert!(matches!(deposit_above_max.build(), Err(AutoPayError::Config(_))));
    assert!("1.5e3".parse::<Amount>().is_err());
}

#[tokio::test]
async fn a_refused_voucher_is_re_signed_once_under_the_fresh_challenge() {
    let f = start().await;
    let autopay = buyer(&[Protocol::MppSession]);
    let http = autopay.client(reqwest::Client::builder()).expect("client");
    for _ in 0..2 {
        assert_eq!(http.get(f.url("/session")).send().await.expect("paid").status(), 200);
    }
    // The voucher sent ahead is refused (402, fresh challenge): the same cumulative amount is
    // signed again under the fresh challenge and the request retried once.
    f.tamper.store(1, Ordering::SeqCst);
    let resp = http.get(f.url("/session")).send().await.expect("paid");
    assert_eq!(resp.status(), 200);
    let paid = outcome(&resp);
    let PaymentDetail::MppSession { cumulative, opened, .. } = &paid.detail else { panic!("{paid:?}") };
    assert_eq!((*cumulative, *opened, paid.amount), (u(3 * PRICE), false, u(PRICE)));
    assert_eq!(f.sent("/session"), ["none", "open", "voucher", "voucher", "voucher", "voucher"]);
    assert_eq!(f.calls("/session"), 3);
    assert_eq!(autopay.spent(&usdt0()), u(3 * PRICE), "the re-signed voucher costs nothing more");

    // Refused twice in a row: one retry only, then the refusal is reported; the handler never
    // runs. The voucher was signed, so it stays counted (fail closed).
    f.tamper.store(2, Ordering::SeqCst);
    let err = http.get(f.url("/session")).send().await.expect_err("refused");
    let AutoPayError::PaymentRejected { protocol, status, .. } = refusal(err) else { panic!() };
    assert_eq!((protocol, status), (Protocol::MppSession, 402));
    assert_eq!(f.sent("/session").len(), 8);
    assert_eq!(f.calls("/session"), 3);
    assert_eq!(autopay.spent(&usdt0()), u(4 * PRICE));
    // The next request pays on: the server's highest voucher is still 3000, the next one 5000.
    let resp = http.get(f.url("/session")).send().await.expect("paid");
    let PaymentDetail::MppSession { cumulative, .. } = outcome(&resp).detail else { panic!() };
    assert_eq!(cumulative, u(5 * PRICE));
    assert_eq!(f.calls("/session"), 4);
}

#[tokio::test]
async fn an_expired_session_challenge_reuses_the_channel() {
    let f = start().await;
    let autopay = buyer(&[Protocol::MppSession]);
    let http = autopay.client(reqwest::Client::builder()).expect("client");
    for n in 1..=3u64 {
        let resp = http.get(f.url("/session-short")).send().await.expect("paid");
        let paid = outcome(&resp);
        let PaymentDetail::MppSession { cumulative, opened, .. } = &paid.detail else { panic!("{paid:?}") };
        assert_eq!((*cumulative, *opened), (u(n * PRICE), n == 1));
    }
    // Each request is challenged (the challenge is too close to expiry to be used ahead), but
    // the channel is opened once.
    assert_eq!(f.sent("/session-short"), ["none", "open", "voucher", "none", "voucher", "none", "voucher"]);
    assert_eq!(autopay.channels().await.len(), 1);
    assert_eq!(f.calls("/session-short"), 3);
}

/// A refused payment stays counted (finding F8: the server holds a signed authorization it can
/// still execute; the client cannot prove it unused). This test asserted the opposite before.
#[tokio::test]
async fn a_refused_payment_stays_counted() {
    let f = start().await;
    // An unfunded buyer: the facilitator and the Settlement Agent refuse its payments.
    let autopay = AutoPay::new(key(OTHER_KEY))
        .max_total(usdt0(), "1".parse().expect("amount"))
        .registry(NetworkRegistry::x_layer())
        .build()
        .expect("autopay");
    let http = autopay.client(reqwest::Client::builder()).expect("client");
    for (path, protocol) in [("/x402", Protocol::X402), ("/charge", Protocol::MppCharge)] {
        let err = http.get(f.url(path)).send().await.expect_err("refused");
        let AutoPayError::PaymentRejected { protocol: p, status, reason } = refusal(err) else { panic!("{path}") };
        assert_eq!((p, status), (protocol, 402), "{path}: {reason}");
        assert!(!reason.is_empty());
        assert_eq!(f.calls(path), 0, "{path}");
        assert_eq!(f.sent(path).len(), 2, "{path}: one paid retry only");
    }
    assert_eq!((autopay.spent(&usdt0()), autopay.reserved(&usdt0())), (u(2 * PRICE), U256::ZERO));
    assert_eq!(autopay.remaining(&usdt0()), Some(u(1_000_000 - 2 * PRICE)));
}

/// A legacy x402 v1 seller: the challenge is the 402's JSON body, the payment comes in
/// `X-PAYMENT`, the result goes out in `X-PAYMENT-RESPONSE`. It checks the EIP-3009 signature
/// itself (recovers the payer) and counts the requests it serves.
async fn v1_seller(State(served): State<Arc<AtomicUsize>>, headers: axum::http::HeaderMap) -> axum::response::Response {
    use axum::response::IntoResponse;
    use pay402::evm::{
        Eip3009Payload, eip3009_domain, parse_address, recover_authorizer, transfer_authorization_digest,
    };
    use pay402::x402::{
        AnyPaymentPayload, PaymentRequiredV1, PaymentRequirementsV1, SettleResponse, decode_payment_signature_header,
        encode_payment_response_header,
    };
    let extra = serde_json::json!({"name": "USD\u{20ae}0", "version": "1"});
    let requirements = PaymentRequirementsV1 {
        scheme: "exact".into(),
        network: "eip155:196".into(),
        max_amount_required: "1000".into(),
        resource: "http://127.0.0.1/v1".into(),
        description: Some("a v1 resource".into()),
        mime_type: None,
        pay_to: PAYEE.into(),
        max_timeout_seconds: 60,
        asset: X_LAYER_USDT0.into(),
        output_schema: None,
        extra: extra.as_object().cloned(),
    };
    let challenge = |error: &str| {
        let body =
            PaymentRequiredV1 { x402_version: 1, error: Some(error.into()), accepts: vec![requirements.clone()] };
        (axum::http::StatusCode::PAYMENT_REQUIRED, axum::Json(body)).into_response()
    };
    let Some(header) = headers.get("x-payment").and_then(|v| v.to_str().ok()) else {
        return challenge("X-PAYMENT header is required");
    };
    let Ok(AnyPaymentPayload::V1(payment)) = decode_payment_signature_header(header) else {
        return challenge("not a v1 payment");
    };
    let payload = Eip3009Payload::from_json_object(&payment.payload).expect("EIP-3009 payload");
    let message = payload.authorization.to_message().expect("authorization");
    let domain = eip3009_domain("USD\u{20ae}0", "1", 196, parse_address(X_LAYER_USDT0).expect("asset"));
    let signer = recover_authorizer(&transfer_authorization_digest(&domain, &message), &payload.signature);
    if signer.ok() != parse_address(PAYER).ok()
        || message.value != u(PRICE)
        || Some(message.to) != parse_address(PAYEE).ok()
        || (payment.scheme.as_str(), payment.network.as_str()) != ("exact", "eip155:196")
    {
        return challenge("invalid payment");
    }
    served.fetch_add(1, Ordering::SeqCst);
    let settled = SettleResponse {
        success: true,
        error_reason: None,
        error_message: None,
        status: None,
        payer: Some(PAYER.into()),
        transaction: "0xv1".into(),
        network: "eip155:196".into(),
        amount: None,
    };
    let header = encode_payment_response_header(&settled).expect("encode");
    ([("x-payment-response", header)], axum::Json(serde_json::json!({"data": "v1"}))).into_response()
}

#[tokio::test]
async fn pays_an_x402_v1_challenge_carried_in_the_body() {
    let served = Arc::new(AtomicUsize::new(0));
    let app = axum::Router::new()
        .route("/v1", axum::routing::get(v1_seller))
        .route(
            "/other-402",
            axum::routing::get(|| async {
                (axum::http::StatusCode::PAYMENT_REQUIRED, axum::Json(serde_json::json!({"error": "pay elsewhere"})))
            }),
        )
        .with_state(Arc::clone(&served));
    let server = support::serve_axum(app).await;
    let autopay = buyer(&ALL);
    let http = autopay.client(reqwest::Client::builder()).expect("client");

    let resp = http.get(format!("{}/v1", server.base)).send().await.expect("paid");
    assert_eq!(resp.status(), 200);
    let paid = outcome(&resp);
    let PaymentDetail::X402 { requirements, settlement } = &paid.detail else { panic!("{paid:?}") };
    assert_eq!((paid.protocol, paid.amount, requirements.amount.as_str()), (Protocol::X402, u(PRICE), "1000"));
    assert_eq!(settlement.as_ref().map(|s| s.transaction.as_str()), Some("0xv1"), "X-PAYMENT-RESPONSE decoded");
    assert_eq!(served.load(Ordering::SeqCst), 1);
    assert_eq!(autopay.spent(&usdt0()), u(PRICE));

    // A 402 whose body is JSON but no x402 challenge is handed back intact.
    let resp = http.get(format!("{}/other-402", server.base)).send().await.expect("passed through");
    assert_eq!(resp.status(), 402);
    assert!(resp.extensions().get::<AutoPayOutcome>().is_none());
    assert_eq!(resp.json::<serde_json::Value>().await.expect("json")["error"], "pay elsewhere");
    assert_eq!(autopay.spent(&usdt0()), u(PRICE));
}

#[tokio::test]
async fn concurrent_session_requests_share_one_channel() {
    let f = start().await;
    let autopay = buyer(&[Protocol::MppSession]);
    let http = autopay.client(reqwest::Client::builder()).expect("client");
    let tasks: Vec<_> = (0..6)
        .map(|_| {
            let (http, url) = (http.clone(), f.url("/session"));
            tokio::spawn(async move { http.get(url).send().await })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.expect("task").expect("paid").status(), 200);
    }
    let sent = f.sent("/session");
    let count = |kind: &str| sent.iter().filter(|k| *k == kind).count();
    assert_eq!((count("open"), count("voucher")), (1, 6), "{sent:?}");
    assert_eq!(f.calls("/session"), 6);
    let channels = autopay.channels().await;
    assert_eq!(channels.len(), 1);
    assert_eq!(channels[0].cumulative, u(6 * PRICE));
    let state = f.intent.channel_store().get(&channels[0].channel_id).await.expect("store").expect("channel").value;
    assert_eq!((state.highest_voucher_amount, state.spent, state.units), (6000, 6000, 6));
    assert_eq!(autopay.spent(&usdt0()), u(6 * PRICE));
}

/// How USD₮0 amounts read in refusals (the registry's decimals and symbol).
fn usdt0_units() -> std::sync::Arc<pay402::autopay::TokenUnits> {
    std::sync::Arc::new(pay402::autopay::TokenUnits::new(Some(6), Some("USD\u{20ae}0".to_owned())))
}
