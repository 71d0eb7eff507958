//! Findings tests: the MPP charge intent and the OKX SA client (F10, L2, L4, hostile probes 6c
//! and 6d). Every test runs a real axum seller on 127.0.0.1 with `MppLayer`, a charge intent over
//! `OkxSaClient`, and the local SA stand-in of `support::okx` (HMAC and bodies checked there).

use crate::support::accounts::{PAYEE, PAYEE_KEY, PAYER_KEY, USDT0};
use crate::support::okx::{ChargeSaMode, ChargeSaStandIn};
use crate::support::{Running, serve_axum};
use async_trait::async_trait;
use pay402::chain::NetworkRegistry;
use pay402::evm::{PrivateKeySigner, U256, signer_from_hex};
use pay402::mpp::{
    CasOutcome, ChannelState, ChannelStore, ChargeIntent, Credential, EmbeddedSa, EvmMethod, Mpp, MppChargeClient,
    PaySpec, SessionClient, SessionIntent, StoreError, Versioned, parse_www_authenticate,
};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The route's payee.
const PAY_TO: &str = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C";
/// 0.001 USD₮0 = 1000 base units.
const PRICE: &str = "0.001";

struct Seller {
    running: Running,
    sa: ChargeSaStandIn,
    handler_calls: Arc<AtomicUsize>,
    unknown_reports: Arc<AtomicUsize>,
    http: reqwest::Client,
}

/// A seller charging [`PRICE`] on `GET /premium`, settling through an SA stand-in in `mode`.
async fn seller(mode: ChargeSaMode) -> Seller {
    let sa = ChargeSaStandIn::start(mode).await;
    let unknown_reports = Arc::new(AtomicUsize::new(0));
    let reports = Arc::clone(&unknown_reports);
    let method = EvmMethod::x_layer(PAY_TO).with_charge(ChargeIntent::new(sa.client()));
    let mpp = Mpp::new(method, "api.example.com", "findings-mpp-secret-at-least-32-bytes-long-hmac-key")
        .expect("mpp")
        .on_settlement_unknown(move |_, _| {
            reports.fetch_add(1, Ordering::SeqCst);
        })
        .route("GET /premium", PaySpec::charge(PRICE))
        .expect("route");
    let handler_calls = Arc::new(AtomicUsize::new(0));
    let calls = Arc::clone(&handler_calls);
    let app = axum::Router::new()
        .route(
            "/premium",
            axum::routing::get(move || {
                calls.fetch_add(1, Ordering::SeqCst);
                async { "premium content" }
            }),
        )
        .layer(pay402::axum::MppLayer::new(mpp));
    Seller { running: serve_axum(app).await, sa, handler_calls, unknown_reports, http: reqwest::Client::new() }
}

struct Answer {
    status: u16,
    www_authenticate: Option<String>,
    receipt: bool,
    body: String,
}

impl Seller {
    async fn get(&self, authorization: Option<&str>) -> Answer {
        let mut req = self.http.get(format!("{}/premium", self.running.base));
        if let Some(a) = authorization {
            req = req.header("authorization", a);
        }
        let resp = req.send().await.expect("seller answers");
        let status = resp.status().as_u16();
        let www_authenticate = resp.headers().get("www-authenticate").map(|v| v.to_str().expect("ascii").to_owned());
        let receipt = resp.headers().contains_key("payment-receipt");
        Answer { status, www_authenticate, receipt, body: resp.text().await.expect("body") }
    }

    /// A fresh challenge and the buyer's honest credential for it.
    async fn honest_credential(&self) -> String {
        let challenge = self.get(None).await;
        assert_eq!(challenge.status, 402);
        let www = challenge.www_authenticate.expect("a challenge");
        let buyer: PrivateKeySigner = PAYER_KEY.parse().expect("key");
        MppChargeClient::new(buyer).authorization_header_for(&[&www]).expect("credential")
    }
}

/// `header`'s credential with its payload changed by `edit`.
fn tampered(header: &str, edit: impl FnOnce(&mut serde_json::Map<String, Value>)) -> String {
    let mut credential = Credential::from_authorization_header(header).expect("credential");
    edit(&mut credential.payload);
    credential.to_authorization_header()
}

fn problem(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("problem JSON ({e}): {body}"))
}

/// The SA answered a charge with `mode`, a lie that contradicts a settlement: the handler does not
/// run, the buyer gets a generic problem with 503 + Retry-After (never a new challenge), the
/// outcome is reported as unknown and the challenge stays consumed; a retry with the same
/// credential is re-submitted once and, the SA still lying, stays 503.
async fn assert_sa_lie_is_refused(mode: ChargeSaMode) {
    // Control: the same seller and buyer with an honest SA are served.
    let honest = seller(ChargeSaMode::Honest).await;
    let paid = honest.get(Some(&honest.honest_credential().await)).await;
    assert_eq!((paid.status, paid.receipt, paid.body.as_str()), (200, true, "premium content"));

    let s = seller(mode.clone()).await;
    let credential = s.honest_credential().await;
    let answer = s.get(Some(&credential)).await;
    assert_eq!(answer.status, 503, "{mode:?}: {}", answer.body);
    assert!(!answer.receipt);
    assert_eq!(s.handler_calls.load(Ordering::SeqCst), 0, "{mode:?}: the handler ran");
    assert_eq!(s.sa.calls(), 1);
    let p = problem(&answer.body);
    assert_eq!(p["type"], "https://paymentauth.org/problems/internal-error");
    assert_eq!(p["detail"], "InternalSAError", "a generic detail");
    assert_eq!(s.unknown_reports.load(Ordering::SeqCst), 1, "reported for reconciliation");
    // The challenge stays consumed; a retry re-submits the same credential (single-use on
    // chain), the SA lies again: still unknown, still 503, still not served.
    let retry = s.get(Some(&credential)).await;
    assert_eq!(retry.status, 503, "{}", retry.body);
    assert_eq!(s.sa.calls(), 2);
    assert_eq!(s.handler_calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn f10_sa_code_zero_without_data_is_refused() {
    assert_sa_lie_is_refused(ChargeSaMode::NoData).await;
}

#[tokio::test]
async fn f10_sa_failed_status_is_refused() {
    assert_sa_lie_is_refused(ChargeSaMode::FailedStatus).await;
}

#[tokio::test]
async fn f10_sa_other_challenge_id_is_refused() {
    assert_sa_lie_is_refused(ChargeSaMode::OtherChallengeId).await;
}

#[tokio::test]
async fn f10_sa_empty_reference_is_refused() {
    assert_sa_lie_is_refused(ChargeSaMode::EmptyReference).await;
}

#[tokio::test]
async fn l2_charge_with_extra_split_is_refused() {
    // The request asks 1000 to PAY_TO and no splits; the buyer authorises 1 to PAY_TO plus a
    // split of 999 to itself (the total still adds up).
    let s = seller(ChargeSaMode::Honest).await;
    let honest = s.honest_credential().await;
    let buyer: PrivateKeySigner = PAYER_KEY.parse().expect("key");
    let attack = tampered(&honest, |payload| {
        let auth = payload["authorization"].as_object_mut().expect("authorization");
        let mut split = auth.clone();
        auth.insert("value".into(), json!("1"));
        split.insert("to".into(), json!(buyer.address().to_string()));
        split.insert("value".into(), json!("999"));
        auth.insert("splits".into(), json!([split]));
    });
    let answer = s.get(Some(&attack)).await;
    assert_eq!(answer.status, 402, "{}", answer.body);
    assert!(answer.www_authenticate.is_some(), "a fresh challenge");
    assert_eq!(problem(&answer.body)["type"], "https://paymentauth.org/problems/verification-failed");
    assert_eq!(s.sa.calls(), 0, "refused before the SA is asked");
    assert_eq!(s.handler_calls.load(Ordering::SeqCst), 0);
    // The honest credential for the same challenge is still served.
    let paid = s.get(Some(&honest)).await;
    assert_eq!(paid.status, 200, "{}", paid.body);
}

#[tokio::test]
async fn l4_mpp_sa_error_text_is_not_shown_to_buyers() {
    const SECRET_TEXT: &str = "upstream trace id=77aa internal host sa-db-3.corp:5432";
    let s = seller(ChargeSaMode::Error(70004, SECRET_TEXT.to_owned())).await;
    let answer = s.get(Some(&s.honest_credential().await)).await;
    assert_eq!(answer.status, 402, "{}", answer.body);
    assert!(!answer.body.contains("sa-db-3") && !answer.body.contains("77aa"), "{}", answer.body);
    let p = problem(&answer.body);
    assert_eq!(p["title"], "InvalidSignatureError");
    assert_eq!(p["detail"], "InvalidSignatureError");
    assert_eq!(s.handler_calls.load(Ordering::SeqCst), 0);
}

/// A channel store whose every operation fails with a secret-looking message.
struct LeakyStore;

const STORE_SECRET: &str = "redis://admin:hunter2@10.9.8.7:6379";

fn leaky() -> StoreError {
    StoreError::Io { op: "get", source: std::io::Error::other(STORE_SECRET) }
}

#[async_trait]
impl ChannelStore for LeakyStore {
    async fn get(&self, _key: &str) -> Result<Option<Versioned<ChannelState>>, StoreError> {
        Err(leaky())
    }
    async fn put_if_absent(&self, _key: &str, _state: &ChannelState) -> Result<bool, StoreError> {
        Err(leaky())
    }
    async fn compare_and_swap(&self, _key: &str, _v: u64, _state: &ChannelState) -> Result<CasOutcome, StoreError> {
        Err(leaky())
    }
    async fn delete(&self, _key: &str) -> Result<bool, StoreError> {
        Err(leaky())
    }
}

#[tokio::test]
async fn l4_mpp_store_error_text_is_not_shown_to_buyers() {
    let sa = EmbeddedSa::new().with_registry(NetworkRegistry::x_layer());
    let payer: PrivateKeySigner = signer_from_hex(PAYER_KEY).expect("key");
    sa.fund(USDT0, &payer.address().to_string(), U256::from(10_000_000u64)).expect("fund");
    let payee: PrivateKeySigner = signer_from_hex(PAYEE_KEY).expect("key");
    let intent = SessionIntent::new(sa, PAYEE).signer(Arc::new(payee)).store(Arc::new(LeakyStore));
    let mpp = Mpp::new(
        EvmMethod::x_layer(PAYEE).with_session(intent),
        "api.example.com",
        "findings-mpp-secret-at-least-32-bytes-long-hmac-key",
    )
    .expect("mpp")
    .route("GET /metered", PaySpec { amount: "0.001".into(), intent: "session".into(), ..PaySpec::default() })
    .expect("route");
    let calls = Arc::new(AtomicUsize::new(0));
    let c = Arc::clone(&calls);
    let app = axum::Router::new()
        .route(
            "/metered",
            axum::routing::get(move || {
                c.fetch_add(1, Ordering::SeqCst);
                async { "metered" }
            }),
        )
        .layer(pay402::axum::MppLayer::new(mpp));
    let running = serve_axum(app).await;
    let http = reqwest::Client::new();
    let url = format!("{}/metered", running.base);
    let unpaid = http.get(&url).send().await.expect("answer");
    assert_eq!(unpaid.status(), 402);
    let www = unpaid.headers()["www-authenticate"].to_str().expect("ascii").to_owned();
    let challenge = parse_www_authenticate(&[&www]).expect("challenge").remove(0);
    let client = SessionClient::new(signer_from_hex(PAYER_KEY).expect("key")).with_registry(NetworkRegistry::x_layer());
    let (_channel, open) = client.open_header(&challenge, U256::from(100_000u64)).expect("open");
    let resp = http.get(&url).header("authorization", open).send().await.expect("answer");
    let status = resp.status().as_u16();
    let body = resp.text().await.expect("body");
    assert!(status >= 400, "{status}: {body}");
    assert!(!body.contains("hunter2") && !body.contains("10.9.8.7"), "{body}");
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn probe_6c_unconfirmed_hash_is_the_buyers_failure() {
    let s = seller(ChargeSaMode::Error(70007, "transaction not confirmed".into())).await;
    let honest = s.honest_credential().await;
    let random_hash = format!("0x{}", "5a".repeat(32));
    let probe = tampered(&honest, |payload| {
        payload.clear();
        payload.insert("type".into(), json!("hash"));
        payload.insert("hash".into(), json!(random_hash));
    });
    let answer = s.get(Some(&probe)).await;
    assert_eq!(answer.status, 402, "the buyer's failure, not the server's: {}", answer.body);
    assert!(answer.www_authenticate.is_some(), "a fresh challenge");
    let p = problem(&answer.body);
    assert_eq!(p["type"], "https://paymentauth.org/problems/verification-failed");
    assert_eq!(s.sa.calls(), 1);
    assert_eq!(s.handler_calls.load(Ordering::SeqCst), 0);
    assert_eq!(s.unknown_reports.load(Ordering::SeqCst), 0, "nothing to reconcile");
}

#[tokio::test]
async fn probe_6d_echoed_fields_are_capped() {
    let s = seller(ChargeSaMode::Honest).await;
    let honest = s.honest_credential().await;
    let huge = format!("0x{}", "ab".repeat(2999));
    assert_eq!(huge.len(), 6000);
    let probe = tampered(&honest, |payload| {
        payload["authorization"]["to"] = json!(huge);
    });
    let answer = s.get(Some(&probe)).await;
    assert_eq!(answer.status, 402, "{}", answer.body);
    let detail = problem(&answer.body)["detail"].as_str().expect("detail").to_owned();
    assert!(detail.chars().count() <= 256, "detail of {} chars", detail.chars().count());
    assert!(!answer.body.contains(&"ab".repeat(64)), "the field is echoed whole: {} bytes", answer.body.len());
    assert!(detail.contains('…'), "the cut is marked: {detail}");
    // An unknown payload type is echoed capped, too.
    let honest = s.honest_credential().await;
    let probe = tampered(&honest, |payload| {
        payload["type"] = json!("x".repeat(6000));
    });
    let answer = s.get(Some(&probe)).await;
    assert_eq!(answer.status, 402, "{}", answer.body);
    assert!(!answer.body.contains(&"x".repeat(100)), "{} bytes", answer.body.len());
    assert_eq!(s.sa.calls(), 0);
    assert_eq!(s.handler_calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn l2_hash_credential_for_a_split_request_is_refused() {
    // A `hash` credential proves one buyer-broadcast transfer; it cannot carry the splits a
    // request asks for, so it is refused before the SA is asked (the split recipients would
    // otherwise depend on the SA's lookup alone).
    use pay402::mpp::{ChargeOptions, ChargeOutcome, PayError, Split};
    let s = seller(ChargeSaMode::Honest).await;
    let method = EvmMethod::x_layer(PAY_TO).with_charge(ChargeIntent::new(s.sa.client()));
    let mpp = Mpp::new(method, "api.example.com", "findings-mpp-secret-at-least-32-bytes-long-hmac-key").expect("mpp");
    let opts = ChargeOptions {
        splits: vec![Split { amount: "0.0001".into(), recipient: PAYEE.into(), memo: None }],
        ..ChargeOptions::default()
    };
    let ChargeOutcome::Challenge(challenge) = mpp.charge(None, PRICE, opts.clone()).await.expect("challenge") else {
        panic!("no credential must give a challenge")
    };
    let www = challenge.to_www_authenticate().expect("header");
    let parsed = parse_www_authenticate(&[&www]).expect("parses");
    let buyer: PrivateKeySigner = PAYER_KEY.parse().expect("key");
    let honest = MppChargeClient::new(buyer).credential_for(&parsed[0]).expect("credential").to_authorization_header();
    let probe = tampered(&honest, |payload| {
        payload.clear();
        payload.insert("type".into(), json!("hash"));
        payload.insert("hash".into(), json!(format!("0x{}", "5b".repeat(32))));
    });
    let refused = mpp.charge(Some(&probe), PRICE, opts.clone()).await.expect_err("refused");
    assert!(matches!(refused, PayError::Method(_)), "{refused:?}");
    assert_eq!(refused.status(), 402);
    assert_eq!(s.sa.calls(), 0, "refused before the SA is asked");
    // The honest split credential for the same challenge is still accepted.
    assert!(matches!(mpp.charge(Some(&honest), PRICE, opts).await, Ok(ChargeOutcome::Paid { .. })));
    assert_eq!(s.sa.calls(), 1);
}
