//! Findings tests: the x402 seller (F6, F11, L3, L4 and the unpaid-cache probe 6a), through HTTP
//! against real servers on 127.0.0.1 with real EIP-3009 signatures from pay402's client.

use crate::support::{self, FRAMEWORKS, Framework, Running};
use async_trait::async_trait;
use pay402::chain::X_LAYER_USDT0;
use pay402::evm::{PrivateKeySigner, U256};
use pay402::replay::{InMemoryReplayStore, ReplayStore, ReplayStoreError};
use pay402::x402::EmbeddedFacilitator;
use pay402::x402::SETTLEMENT_PENDING_ERROR;
use pay402::x402::X402Client;
use pay402::x402::X402ResourceServer;
use pay402::x402::{
    AnyPaymentPayload, AnyPaymentRequired, ExactEvmClientScheme, ExactEvmScheme, FacilitatorClient, FacilitatorError,
    PaymentPayload, PaymentRequired, PaymentRequirements, SettleResponse, SettleStatusResponse, SupportedResponse,
    VerifyResponse, decode_payment_required_header, encode_payment_signature_header,
};
use pay402::x402::{
    INVALID_PAYLOAD_REASON, PAYMENT_UNAVAILABLE_ERROR, PaymentOption, REPLAYED_PAYMENT_REASON, RouteConfig,
    X402HttpServer,
};
use serde_json::{Value, json};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const PAY_TO: &str = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C";
const BUYER_KEY: &str = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d";
/// Leaked into facilitator errors by the stand-in: must never reach a buyer.
const UPSTREAM_SECRET: &str = "https://internal.example/api?apiKey=sk-upstream-secret";

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs()
}

/// The embedded facilitator with switches: count verifications, answer settle `pending`
/// forever, fail with an upstream error carrying [`UPSTREAM_SECRET`], or accept payloads that
/// carry no EIP-3009 authorization (a custom scheme's shape, keyed by the fallback hash).
#[derive(Clone)]
struct Stand {
    inner: EmbeddedFacilitator,
    verifies: Arc<AtomicUsize>,
    settles: Arc<AtomicUsize>,
    pending: Arc<AtomicBool>,
    failing: Arc<AtomicBool>,
    failing_settle: Arc<AtomicBool>,
}

impl Stand {
    fn new(inner: EmbeddedFacilitator) -> Self {
        Self {
            inner,
            verifies: Arc::default(),
            settles: Arc::default(),
            pending: Arc::default(),
            failing: Arc::default(),
            failing_settle: Arc::default(),
        }
    }

    fn upstream_error() -> FacilitatorError {
        FacilitatorError::Http { status: 500, body: format!("stack trace at {UPSTREAM_SECRET}") }
    }
}

#[async_trait]
impl FacilitatorClient for Stand {
    async fn verify(&self, p: &PaymentPayload, r: &PaymentRequirements) -> Result<VerifyResponse, FacilitatorError> {
        self.verifies.fetch_add(1, Ordering::SeqCst);
        if self.failing.load(Ordering::SeqCst) {
            return Err(Self::upstream_error());
        }
        if !p.payload.contains_key("authorization") {
            return Ok(VerifyResponse { is_valid: true, invalid_reason: None, invalid_message: None, payer: None });
        }
        self.inner.verify(p, r).await
    }

    async fn settle(&self, p: &PaymentPayload, r: &PaymentRequirements) -> Result<SettleResponse, FacilitatorError> {
        self.settles.fetch_add(1, Ordering::SeqCst);
        if self.failing.load(Ordering::SeqCst) || self.failing_settle.load(Ordering::SeqCst) {
            return Err(Self::upstream_error());
        }
        if self.pending.load(Ordering::SeqCst) || !p.payload.contains_key("authorization") {
            let pending = self.pending.load(Ordering::SeqCst);
            return Ok(SettleResponse {
                success: true,
                error_reason: None,
                error_message: None,
                status: Some(if pending { "pending" } else { "success" }.into()),
                payer: None,
                transaction: format!("0x{}", "ab".repeat(32)),
                network: r.network.clone(),
                amount: None,
            });
        }
        self.inner.settle(p, r).await
    }

    async fn supported(&self) -> Result<SupportedResponse, FacilitatorError> {
        self.inner.supported().await
    }

    async fn settle_status(&self, tx: &str) -> Result<SettleStatusResponse, FacilitatorError> {
        Ok(crate::support::still_pending(tx))
    }
}

/// A replay store that records what is reserved (key and expiry) over an in-memory one.
struct Recording {
    inner: InMemoryReplayStore,
    inserted: Mutex<Vec<(String, u64)>>,
}

#[async_trait]
impl ReplayStore for Recording {
    async fn insert_if_absent(&self, key: &str, expires_at: u64) -> Result<bool, ReplayStoreError> {
        self.inserted.lock().expect("log").push((key.to_owned(), expires_at));
        self.inner.insert_if_absent(key, expires_at).await
    }

    async fn remove(&self, key: &str) -> Result<(), ReplayStoreError> {
        self.inner.remove(key).await
    }
}

struct Fixture {
    running: Running,
    stand: Stand,
    x402: X402HttpServer,
    calls: Arc<AtomicUsize>,
    buyer: PrivateKeySigner,
    http: reqwest::Client,
}

/// A seller protecting `GET /paid` ($0.001, 300 s) with `replay` as its store.
async fn start(
    fw: Framework,
    replay: Option<Arc<dyn ReplayStore>>,
    configure: impl FnOnce(X402ResourceServer) -> X402ResourceServer,
) -> Fixture {
    let embedded = EmbeddedFacilitator::new();
    let buyer: PrivateKeySigner = BUYER_KEY.parse().expect("key");
    embedded.fund(X_LAYER_USDT0, &buyer.address().to_string(), U256::from(1_000_000u64)).expect("fund");
    let stand = Stand::new(embedded);
    let server = X402ResourceServer::new(stand.clone())
        .register("eip155:196", ExactEvmScheme::new())
        .settlement_poll(Duration::from_millis(10), Duration::from_millis(60));
    let mut x402 = X402HttpServer::new(configure(server))
        .route("GET /paid", RouteConfig::new(PaymentOption::exact("$0.001", PAY_TO)))
        .expect("route");
    if let Some(store) = replay {
        x402 = x402.replay_store(store);
    }
    let calls = Arc::new(AtomicUsize::new(0));
    let running = match fw {
        Framework::Axum => {
            let c = Arc::clone(&calls);
            let served = move || {
                c.fetch_add(1, Ordering::SeqCst);
                async { "secret" }
            };
            let app = axum::Router::new()
                .route("/paid", axum::routing::get(served))
                .layer(pay402::axum::X402Layer::new(x402.clone()));
            support::serve_axum(app).await
        }
        Framework::Actix => {
            use actix_web::{HttpResponse, web};
            let (c, x) = (Arc::clone(&calls), x402.clone());
            support::serve_actix(move || {
                let c = Arc::clone(&c);
                actix_web::App::new().wrap(pay402::actix::X402Middleware::new(x.clone())).route(
                    "/paid",
                    web::get().to(move || {
                        c.fetch_add(1, Ordering::SeqCst);
                        async { HttpResponse::Ok().body("secret") }
                    }),
                )
            })
        }
    };
    Fixture { running, stand, x402, calls, buyer, http: reqwest::Client::new() }
}

impl Fixture {
    async fn get(&self, path: &str, payment: Option<&PaymentPayload>) -> reqwest::Response {
        let mut req = self.http.get(format!("{}{path}", self.running.base));
        if let Some(p) = payment {
            req = req.header("PAYMENT-SIGNATURE", encode_payment_signature_header(p).expect("encodes"));
        }
        req.send().await.expect("request")
    }

    /// A fresh, valid payment for `/paid`.
    async fn payment(&self) -> PaymentPayload {
        let resp = self.get("/paid", None).await;
        assert_eq!(resp.status(), 402);
        let client = X402Client::new().register("eip155:196", ExactEvmClientScheme::new(self.buyer.clone()));
        match client.create_payment_payload(&AnyPaymentRequired::V2(required_of(&resp))).await.expect("pays") {
            AnyPaymentPayload::V2(p) => p,
            AnyPaymentPayload::V1(_) => panic!("v2 expected"),
        }
    }

    fn buyer_balance(&self) -> U256 {
        self.stand.inner.balance(X_LAYER_USDT0, &self.buyer.address().to_string())
    }
}

fn required_of(resp: &reqwest::Response) -> PaymentRequired {
    let header = resp.headers().get("payment-required").expect("PAYMENT-REQUIRED").to_str().expect("ascii");
    match decode_payment_required_header(header).expect("decodes") {
        AnyPaymentRequired::V2(r) => r,
        AnyPaymentRequired::V1(_) => panic!("v2 expected"),
    }
}

fn auth_mut(p: &mut PaymentPayload) -> &mut serde_json::Map<String, Value> {
    p.payload.get_mut("authorization").and_then(Value::as_object_mut).expect("authorization")
}

/// F6: a `nonce` or `from` the attacker sizes (40 KB) with a `validBefore` a year away is refused
/// before anything is reserved and before the facilitator is asked.
#[tokio::test]
async fn f6_attacker_sized_authorization_is_refused_before_reserving() {
    for fw in FRAMEWORKS {
        let store = Arc::new(Recording { inner: InMemoryReplayStore::new(), inserted: Mutex::default() });
        let f = start(fw, Some(store.clone()), |s| s).await;
        let year = (now() + 365 * 86_400).to_string();
        let shapes: [(&str, Value); 4] = [
            ("nonce", json!(format!("0x{}", "ab".repeat(20_000)))),
            ("from", json!(format!("0x{}", "cd".repeat(20_000)))),
            ("nonce", json!({ "big": "x".repeat(40_000) })),
            ("nonce", json!("0x12")),
        ];
        for (field, value) in shapes {
            let mut p = f.payment().await;
            auth_mut(&mut p).insert("validBefore".into(), json!(year));
            auth_mut(&mut p).insert(field.into(), value);
            let resp = f.get("/paid", Some(&p)).await;
            assert_eq!(resp.status(), 402, "{fw:?} {field}");
            assert_eq!(required_of(&resp).error.as_deref(), Some(INVALID_PAYLOAD_REASON), "{fw:?} {field}");
        }
        assert!(store.inserted.lock().unwrap().is_empty(), "{fw:?}: nothing reserved");
        assert_eq!(f.stand.verifies.load(Ordering::SeqCst), 0, "{fw:?}: no facilitator call");
        assert_eq!(f.calls.load(Ordering::SeqCst), 0);
    }
}

/// F6: a well-shaped authorization dated a year ahead holds its replay key no longer than the
/// route's `maxTimeoutSeconds` + skew, not for a year.
#[tokio::test]
async fn f6_replay_keys_expire_within_the_route_timeout() {
    let store = Arc::new(Recording { inner: InMemoryReplayStore::new(), inserted: Mutex::default() });
    let f = start(Framework::Axum, Some(store.clone()), |s| s).await;
    let mut p = f.payment().await;
    auth_mut(&mut p).insert("validBefore".into(), json!((now() + 365 * 86_400).to_string()));
    let resp = f.get("/paid", Some(&p)).await;
    assert_eq!(resp.status(), 402, "the re-dated authorization's signature is invalid");
    let inserted = store.inserted.lock().unwrap().clone();
    assert_eq!(inserted.len(), 1);
    let ceiling = now() + 300 + pay402::x402::REPLAY_SKEW_SECONDS + 5;
    assert!(inserted[0].1 <= ceiling, "key expires at {} > {ceiling}", inserted[0].1);
}

/// F6: the in-memory store is bounded; when full of live keys a new payment is refused (503,
/// fail closed, nothing served or charged) and no live key is evicted (its replay stays refused).
#[tokio::test]
async fn f6_full_replay_store_refuses_without_evicting_live_keys() {
    for fw in FRAMEWORKS {
        let f = start(fw, Some(Arc::new(InMemoryReplayStore::with_capacity(1))), |s| s).await;
        let first = f.payment().await;
        assert_eq!(f.get("/paid", Some(&first)).await.status(), 200, "{fw:?}");
        let before = f.buyer_balance();
        let second = f.payment().await;
        let resp = f.get("/paid", Some(&second)).await;
        assert_eq!(resp.status(), 503, "{fw:?}: store full");
        let body: Value = resp.json().await.expect("json");
        assert_eq!(body["error"], PAYMENT_UNAVAILABLE_ERROR);
        assert_eq!(f.buyer_balance(), before, "{fw:?}: not charged");
        let replay = f.get("/paid", Some(&first)).await;
        assert_eq!(replay.status(), 402, "{fw:?}");
        assert_eq!(required_of(&replay).error.as_deref(), Some(REPLAYED_PAYMENT_REASON), "{fw:?}: not evicted");
        assert_eq!(f.calls.load(Ordering::SeqCst), 1, "{fw:?}");
    }
}

/// F11: a settlement answered `pending` (and still pending when polled) is not delivered on by
/// default: the handler's body is replaced by a 503 (issue 17: its outcome is unknown, so no new
/// challenge either). Delivering on `pending` is an explicit opt-in.
#[tokio::test]
async fn f11_pending_settlement_is_not_delivered_by_default() {
    for fw in FRAMEWORKS {
        let f = start(fw, None, |s| s).await;
        f.stand.pending.store(true, Ordering::SeqCst);
        let resp = f.get("/paid", Some(&f.payment().await)).await;
        // Pending is not paid — and not failed either: 503 + Retry-After, never a new challenge.
        assert_eq!(resp.status(), 503, "{fw:?}: pending is not paid");
        assert!(resp.headers().get("payment-required").is_none(), "{fw:?}: no second payment invited");
        assert!(resp.headers().get("retry-after").is_some(), "{fw:?}");
        assert!(!resp.text().await.unwrap().contains("secret"), "{fw:?}: the body is not released");

        let opted = start(fw, None, |s| s.deliver_on_pending(true)).await;
        opted.stand.pending.store(true, Ordering::SeqCst);
        let resp = opted.get("/paid", Some(&opted.payment().await)).await;
        assert_eq!(resp.status(), 200, "{fw:?}: the seller opted in");
        assert_eq!(resp.text().await.unwrap(), "secret");
    }
}

/// L3: a payload without an EIP-3009 authorization is keyed by a hash of its canonical JSON, so
/// reordering its fields or re-spelling a number does not replay it; an authorization that lacks
/// `from` is refused rather than falling back to that hash.
#[tokio::test]
async fn l3_fallback_replay_key_is_canonical() {
    for fw in FRAMEWORKS {
        let f = start(fw, None, |s| s).await;
        let mut first = f.payment().await;
        first.payload = serde_json::from_str(r#"{"transaction":"0xfeed","meta":{"a":1,"b":[2,3]}}"#).expect("json");
        assert_eq!(f.get("/paid", Some(&first)).await.status(), 200, "{fw:?}: served once");
        for respelled in [
            r#"{"meta":{"b":[2,3],"a":1},"transaction":"0xfeed"}"#,
            r#"{ "transaction" : "0xfeed", "meta" : { "a" : 1.0, "b" : [2, 3.0] } }"#,
            r#"{"transaction":"\u0030xfeed","meta":{"b":[2,3],"a":1}}"#,
        ] {
            let mut replay = first.clone();
            replay.payload = serde_json::from_str(respelled).expect("json");
            let resp = f.get("/paid", Some(&replay)).await;
            assert_eq!(resp.status(), 402, "{fw:?}: {respelled}");
            assert_eq!(required_of(&resp).error.as_deref(), Some(REPLAYED_PAYMENT_REASON), "{fw:?}: {respelled}");
        }
        let mut fromless = f.payment().await;
        auth_mut(&mut fromless).remove("from");
        let resp = f.get("/paid", Some(&fromless)).await;
        assert_eq!(required_of(&resp).error.as_deref(), Some(INVALID_PAYLOAD_REASON), "{fw:?}: no fallback");
        assert_eq!(f.calls.load(Ordering::SeqCst), 1, "{fw:?}");
    }
}

/// L4: a facilitator error's text (upstream body, URLs, transport chains) never reaches the
/// buyer, neither in the verification error nor in the answer to a settlement of unknown outcome.
#[tokio::test]
async fn l4_x402_facilitator_error_text_does_not_reach_buyers() {
    for fw in FRAMEWORKS {
        let f = start(fw, None, |s| s).await;
        let payment = f.payment().await;
        f.stand.failing.store(true, Ordering::SeqCst);
        let resp = f.get("/paid", Some(&payment)).await;
        assert_eq!(resp.status(), 502, "{fw:?}");
        let headers = format!("{:?}", resp.headers());
        let body = resp.text().await.expect("body");
        assert!(!body.contains("internal.example") && !body.contains("sk-upstream"), "{fw:?}: {body}");
        assert!(!headers.contains("internal.example"), "{fw:?}");
        assert_eq!(serde_json::from_str::<Value>(&body).expect("json")["error"], PAYMENT_UNAVAILABLE_ERROR);

        // Verification passes, settlement fails with the upstream error.
        f.stand.failing.store(false, Ordering::SeqCst);
        f.stand.failing_settle.store(true, Ordering::SeqCst);
        let payment = f.payment().await;
        let resp = f.get("/paid", Some(&payment)).await;
        assert_eq!(resp.status(), 503, "{fw:?}: outcome unknown, withheld (retry with the same payment)");
        let headers = format!("{:?}", resp.headers());
        let body = resp.text().await.expect("body");
        assert!(!body.contains("internal.example") && !body.contains("HTTP 500"), "{fw:?}: {body}");
        assert!(!headers.contains("internal.example") && !headers.contains("sk-upstream"), "{fw:?}");
        assert_eq!(serde_json::from_str::<Value>(&body).expect("json")["error"], SETTLEMENT_PENDING_ERROR);
        assert_eq!(f.calls.load(Ordering::SeqCst), 1, "{fw:?}");
    }
}

/// Probe 6a: 300 unpaid requests with 60 000-character query strings must not grow the unpaid
/// 402 cache beyond its byte bound (it held ~180 KB per distinct URL, 40+ MiB in all).
#[tokio::test]
async fn probe_6a_unpaid_cache_is_bounded_in_bytes() {
    for fw in FRAMEWORKS {
        let f = start(fw, None, |s| s).await;
        let long = "q".repeat(60_000);
        for i in 0..300 {
            let resp = f.get(&format!("/paid?q={long}&n={i}"), None).await;
            assert_eq!(resp.status(), 402, "{fw:?} #{i}");
            assert!(resp.headers().contains_key("payment-required"));
        }
        let bytes = f.x402.unpaid_cache_bytes();
        assert!(bytes <= 1 << 20, "{fw:?}: after 300 long URLs the unpaid cache holds {bytes} bytes");
        for i in 0..300 {
            let resp = f.get(&format!("/paid?n={i}&q={}", "s".repeat(1500)), None).await;
            assert_eq!(resp.status(), 402, "{fw:?} #{i}");
        }
        let bytes = f.x402.unpaid_cache_bytes();
        assert!(bytes <= 1 << 20, "{fw:?}: after 300 medium URLs the unpaid cache holds {bytes} bytes");
        assert_eq!(f.calls.load(Ordering::SeqCst), 0);
    }
}
