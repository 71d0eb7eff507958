//! Exactly once for MPP (issue 17), through HTTP on axum and actix-web sellers (`MppLayer` /
//! `MppMiddleware`) over an in-process Settlement Agent ([`EmbeddedSa`], which records every
//! charge and channel):
//!
//! * `Idempotency-Key` on a charge: the same key with the same credential is answered from the
//!   record (the recorded `Payment-Receipt`, no second SA call); another credential or another
//!   route under the key → 409; a malformed key → 400.
//! * `Idempotency-Key` on session vouchers: a voucher resent with its key is answered from the
//!   record (the channel is charged once); another voucher under the key → 409.
//! * A charge whose SA answer is lost (the SA failed before charging) is answered 503 with
//!   `Retry-After` — never a new challenge — and the retry with the same credential is
//!   re-submitted, settles once and is served once.

mod support;

use async_trait::async_trait;
use pay402::chain::NetworkRegistry;
use pay402::evm::{PrivateKeySigner, U256, signer_from_hex};
use pay402::mpp::{
    ChannelStore, ChargeIntent, EmbeddedSa, EvmMethod, IDEMPOTENCY_CONFLICT_ERROR, InMemoryChannelStore, Mpp,
    MppChargeClient, PaySpec, SessionClient, SessionIntent, parse_www_authenticate,
};
use pay402::okx::sa::{
    ChargeReceipt, ChargeSettleRequest, ChargeVerifyHashRequest, SaClient, SaError, SessionCloseRequest,
    SessionOpenRequest, SessionReceipt, SessionSettleRequest, SessionStatus, SessionTopUpRequest,
};
use serde_json::Value;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use support::accounts::{PAYEE, PAYEE_KEY, PAYER, PAYER_KEY, USDT0};
use support::{FRAMEWORKS, Framework, Running};

const REALM: &str = "api.example.com";
const SECRET: &str = "mpp-idempotency-secret-at-least-32-bytes-long-hmac-key";
const BODY: &str = "paid content";

/// The embedded SA, whose next charge can be made to fail before anything is charged (a lost
/// request: the seller cannot know whether it was charged).
#[derive(Clone)]
struct LossySa {
    sa: EmbeddedSa,
    lose_next_charge: Arc<AtomicBool>,
    charge_calls: Arc<AtomicUsize>,
}

#[async_trait]
impl SaClient for LossySa {
    async fn settle(&self, req: &ChargeSettleRequest) -> Result<ChargeReceipt, SaError> {
        self.charge_calls.fetch_add(1, Ordering::SeqCst);
        if self.lose_next_charge.swap(false, Ordering::SeqCst) {
            return Err(SaError::Transport("connection reset by peer".into()));
        }
        self.sa.settle(req).await
    }
    async fn verify_hash(&self, req: &ChargeVerifyHashRequest) -> Result<ChargeReceipt, SaError> {
        self.sa.verify_hash(req).await
    }
    async fn session_open(&self, req: &SessionOpenRequest) -> Result<SessionReceipt, SaError> {
        self.sa.session_open(req).await
    }
    async fn session_top_up(&self, req: &SessionTopUpRequest) -> Result<SessionReceipt, SaError> {
        self.sa.session_top_up(req).await
    }
    async fn session_settle(&self, req: &SessionSettleRequest) -> Result<SessionReceipt, SaError> {
        self.sa.session_settle(req).await
    }
    async fn session_close(&self, req: &SessionCloseRequest) -> Result<SessionReceipt, SaError> {
        self.sa.session_close(req).await
    }
    async fn session_status(&self, channel_id: &str) -> Result<SessionStatus, SaError> {
        self.sa.session_status(channel_id).await
    }
}

struct Shop {
    running: Running,
    sa: LossySa,
    store: Arc<InMemoryChannelStore>,
    runs: Arc<AtomicUsize>,
}

impl Shop {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.running.base)
    }
}

/// `GET /charge` and `GET /other` (charge 0.01), `GET /metered` (session 0.001).
async fn shop(fw: Framework) -> Shop {
    let embedded = EmbeddedSa::new().with_registry(NetworkRegistry::x_layer());
    embedded.fund(USDT0, PAYER, U256::from(10_000_000u64)).expect("fund");
    let sa = LossySa {
        sa: embedded,
        lose_next_charge: Arc::new(AtomicBool::new(false)),
        charge_calls: Arc::new(AtomicUsize::new(0)),
    };
    let store = Arc::new(InMemoryChannelStore::new());
    let session = SessionIntent::new(sa.clone(), PAYEE)
        .signer(Arc::new(signer_from_hex(PAYEE_KEY).expect("payee key")))
        .store(Arc::clone(&store) as Arc<dyn ChannelStore>);
    let method = EvmMethod::x_layer(PAYEE).with_charge(ChargeIntent::new(sa.clone())).with_session(session);
    let mpp = Mpp::new(method, REALM, SECRET)
        .expect("mpp")
        .route("GET /charge", PaySpec::charge("0.01"))
        .and_then(|m| m.route("GET /other", PaySpec::charge("0.01")))
        .and_then(|m| {
            m.route("GET /metered", PaySpec { amount: "0.001".into(), intent: "session".into(), ..PaySpec::default() })
        })
        .expect("routes");
    let runs = Arc::new(AtomicUsize::new(0));
    let r = Arc::clone(&runs);
    let running = match fw {
        Framework::Axum => {
            let handler = move || {
                r.fetch_add(1, Ordering::SeqCst);
                async { BODY }
            };
            let app = axum::Router::new()
                .route("/charge", axum::routing::get(handler.clone()))
                .route("/other", axum::routing::get(handler.clone()))
                .route("/metered", axum::routing::get(handler))
                .layer(pay402::axum::MppLayer::new(mpp));
            support::serve_axum(app).await
        }
        Framework::Actix => support::serve_actix(move || {
            let r = Arc::clone(&r);
            let handler = move || {
                r.fetch_add(1, Ordering::SeqCst);
                async { BODY }
            };
            actix_web::App::new()
                .wrap(pay402::actix::MppMiddleware::new(mpp.clone()))
                .route("/charge", actix_web::web::get().to(handler.clone()))
                .route("/other", actix_web::web::get().to(handler.clone()))
                .route("/metered", actix_web::web::get().to(handler))
        }),
    };
    Shop { running, sa, store, runs }
}

async fn www_authenticate(http: &reqwest::Client, url: &str) -> String {
    let unpaid = http.get(url).send().await.expect("unpaid");
    assert_eq!(unpaid.status(), 402);
    unpaid.headers()["www-authenticate"].to_str().expect("ascii").to_owned()
}

async fn charge_credential(http: &reqwest::Client, url: &str) -> String {
    let www = www_authenticate(http, url).await;
    let buyer: PrivateKeySigner = PAYER_KEY.parse().expect("key");
    MppChargeClient::new(buyer).authorization_header_for(&[&www]).expect("credential")
}

async fn get(http: &reqwest::Client, url: &str, authorization: &str, key: Option<&str>) -> reqwest::Response {
    let mut req = http.get(url).header("authorization", authorization);
    if let Some(k) = key {
        req = req.header("idempotency-key", k);
    }
    req.send().await.expect("request")
}

fn receipt_of(resp: &reqwest::Response) -> String {
    resp.headers()["payment-receipt"].to_str().expect("ascii").to_owned()
}

#[tokio::test]
async fn charge_idempotency_key_answers_from_the_record() {
    for fw in FRAMEWORKS {
        let shop = shop(fw).await;
        let http = reqwest::Client::new();
        let credential = charge_credential(&http, &shop.url("/charge")).await;
        let first = get(&http, &shop.url("/charge"), &credential, Some("order-42")).await;
        assert_eq!(first.status(), 200, "{fw:?}");
        let receipt = receipt_of(&first);
        assert_eq!(shop.sa.sa.charge_count(), 1, "{fw:?}");

        // The lost response, resent with its key: answered from the record, nothing charged.
        for _ in 0..2 {
            let again = get(&http, &shop.url("/charge"), &credential, Some("order-42")).await;
            assert_eq!(again.status(), 200, "{fw:?}");
            assert_eq!(receipt_of(&again), receipt, "{fw:?}: the recorded receipt");
            assert_eq!(again.text().await.expect("body"), BODY);
        }
        assert_eq!(shop.sa.charge_calls.load(Ordering::SeqCst), 1, "{fw:?}: no second SA call");
        assert_eq!(shop.sa.sa.charge_count(), 1, "{fw:?}");

        // Another credential under the key, or the same on another route: 409.
        let other = charge_credential(&http, &shop.url("/charge")).await;
        let conflict = get(&http, &shop.url("/charge"), &other, Some("order-42")).await;
        assert_eq!(conflict.status(), 409, "{fw:?}");
        assert_eq!(conflict.json::<Value>().await.expect("json")["error"], IDEMPOTENCY_CONFLICT_ERROR);
        let elsewhere = get(&http, &shop.url("/other"), &credential, Some("order-42")).await;
        assert_eq!(elsewhere.status(), 409, "{fw:?}");
        assert_eq!(shop.sa.sa.charge_count(), 1, "{fw:?}: nothing charged for a conflict");
        // A malformed key.
        let bad = get(&http, &shop.url("/charge"), &other, Some(&"k".repeat(300))).await;
        assert_eq!(bad.status(), 400, "{fw:?}");
        // Without a key the used credential is a replay (a fresh 402).
        let replay = get(&http, &shop.url("/charge"), &credential, None).await;
        assert_eq!(replay.status(), 402, "{fw:?}");
        // The other credential under its own key pays once.
        let ok = get(&http, &shop.url("/charge"), &other, Some("order-43")).await;
        assert_eq!(ok.status(), 200, "{fw:?}");
        assert_eq!(shop.sa.sa.charge_count(), 2, "{fw:?}");
    }
}

#[tokio::test]
async fn a_lost_charge_is_503_then_settled_once_on_retry() {
    for fw in FRAMEWORKS {
        let shop = shop(fw).await;
        let http = reqwest::Client::new();
        let credential = charge_credential(&http, &shop.url("/charge")).await;
        shop.sa.lose_next_charge.store(true, Ordering::SeqCst);
        let lost = get(&http, &shop.url("/charge"), &credential, None).await;
        assert_eq!(lost.status(), 503, "{fw:?}");
        assert_eq!(lost.headers()["retry-after"], "2", "{fw:?}");
        assert!(lost.headers().get("www-authenticate").is_none(), "{fw:?}: no new challenge");
        assert!(!lost.text().await.expect("body").contains(BODY));
        assert_eq!(shop.sa.sa.charge_count(), 0, "{fw:?}: nothing charged yet");

        let retry = get(&http, &shop.url("/charge"), &credential, None).await;
        assert_eq!(retry.status(), 200, "{fw:?}: the same credential, re-submitted, settled");
        assert!(retry.headers().get("payment-receipt").is_some(), "{fw:?}");
        assert_eq!(shop.sa.sa.charge_count(), 1, "{fw:?}: charged once");
        // Delivered once: a further copy is a replay.
        let again = get(&http, &shop.url("/charge"), &credential, None).await;
        assert_eq!(again.status(), 402, "{fw:?}");
        assert_eq!(shop.sa.sa.charge_count(), 1, "{fw:?}");
        assert_eq!(shop.runs.load(Ordering::SeqCst), 1, "{fw:?}: served once");
    }
}

#[tokio::test]
async fn session_voucher_idempotency_key_answers_from_the_record() {
    for fw in FRAMEWORKS {
        let shop = shop(fw).await;
        let http = reqwest::Client::new();
        let www = www_authenticate(&http, &shop.url("/metered")).await;
        let challenge = parse_www_authenticate(&[&www]).expect("challenge").remove(0);
        let client =
            SessionClient::new(signer_from_hex(PAYER_KEY).expect("payer")).with_registry(NetworkRegistry::x_layer());
        let (channel, open) = client.open_header(&challenge, U256::from(1_000_000u64)).expect("open");
        let opened = get(&http, &shop.url("/metered"), &open, None).await;
        assert!(opened.status().is_success(), "{fw:?}: {}", opened.status());

        let voucher = client.next_voucher(&challenge, &channel, U256::from(1000u64)).expect("voucher");
        let first = get(&http, &shop.url("/metered"), &voucher, Some("meter-1")).await;
        assert_eq!(first.status(), 200, "{fw:?}");
        let receipt = receipt_of(&first);
        let spent = || async { shop.store.get(&channel).await.expect("store").expect("channel").value.spent };
        assert_eq!(spent().await, 1000, "{fw:?}");

        let again = get(&http, &shop.url("/metered"), &voucher, Some("meter-1")).await;
        assert_eq!(again.status(), 200, "{fw:?}: answered from the record");
        assert_eq!(receipt_of(&again), receipt, "{fw:?}");
        assert_eq!(spent().await, 1000, "{fw:?}: charged once");

        let next = client.next_voucher(&challenge, &channel, U256::from(2000u64)).expect("voucher");
        let conflict = get(&http, &shop.url("/metered"), &next, Some("meter-1")).await;
        assert_eq!(conflict.status(), 409, "{fw:?}");
        assert_eq!(spent().await, 1000, "{fw:?}");
        let paid = get(&http, &shop.url("/metered"), &next, Some("meter-2")).await;
        assert_eq!(paid.status(), 200, "{fw:?}");
        assert_eq!(spent().await, 2000, "{fw:?}");
    }
}

/// AutoPay pays an MPP charge whose SA answer is lost: it gets 503 + Retry-After, resends the same
/// credential with the same `Idempotency-Key`, and the seller re-submits it: charged once, one
/// 2xx, the amount counted once.
#[tokio::test]
async fn autopay_retries_a_lost_charge_with_the_same_credential_and_key() {
    use pay402::autopay::{AssetId, AutoPay, Protocol};
    for fw in FRAMEWORKS {
        let shop = shop(fw).await;
        let autopay = AutoPay::new(PAYER_KEY.parse().expect("key"))
            .prefer([Protocol::MppCharge])
            .max_per_request(AssetId::x_layer_usdt0(), "0.05".parse().expect("amount"))
            .max_total(AssetId::x_layer_usdt0(), "1".parse().expect("amount"))
            .registry(NetworkRegistry::x_layer())
            .unknown_outcome_wait(std::time::Duration::from_secs(10))
            .build()
            .expect("autopay");
        let http = autopay.client(reqwest::Client::builder()).expect("client");
        shop.sa.lose_next_charge.store(true, Ordering::SeqCst);
        let resp = http.get(shop.url("/charge")).send().await.expect("paid");
        assert_eq!(resp.status(), 200, "{fw:?}");
        assert!(resp.headers().get("payment-receipt").is_some(), "{fw:?}");
        assert_eq!(resp.text().await.expect("body"), BODY);
        assert_eq!(shop.sa.charge_calls.load(Ordering::SeqCst), 2, "{fw:?}: lost once, re-submitted once");
        assert_eq!(shop.sa.sa.charge_count(), 1, "{fw:?}: charged once");
        assert_eq!(shop.runs.load(Ordering::SeqCst), 1, "{fw:?}");
        assert_eq!(autopay.spent(&AssetId::x_layer_usdt0()), U256::from(10_000u64), "{fw:?}: counted once");
    }
}
