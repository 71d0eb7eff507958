//! Findings on MPP sessions (F1, F9, F10, F13, L6, L9 and the two suspected SA-dependent
//! attacks): each test runs a real axum server with [`Mpp`] + the session intent on 127.0.0.1,
//! a buyer ([`SessionClient`], or hand-edited credentials for the attacks) and an
//! [`EmbeddedSa`] as the independent escrow ledger — wrapped, where the attack needs an SA that
//! behaves otherwise, by [`StandInSa`].

use crate::support::accounts::{ESCROW, OTHER_KEY, PAYEE, PAYEE_KEY, PAYER, PAYER_KEY, USDT0};
use crate::support::{self, Running};
use async_trait::async_trait;
use pay402::chain::NetworkRegistry;
use pay402::evm::{self, PrivateKeySigner, U256, signer_from_hex};
use pay402::mpp::RedisChannelStore;
use pay402::mpp::{
    ChannelState, ChannelStore, Credential, EmbeddedSa, EvmMethod, Granted, Mpp, ParsedChallenge, PaySpec,
    SessionClient, SessionIntent, did_pkh, parse_www_authenticate,
};
use pay402::okx::sa::{
    ChargeReceipt, ChargeSettleRequest, ChargeVerifyHashRequest, SaClient, SaError, SessionCloseRequest,
    SessionOpenRequest, SessionReceipt, SessionSettleRequest, SessionStatus, SessionTopUpRequest,
};
use serde_json::{Map, Value, json};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const SECRET: &str = "findings-session-secret-at-least-32-bytes-long-hmac-key";
const REALM: &str = "api.example.com";
/// 0.001 USD₮0 per request.
const COST: u64 = 1000;
/// Another 6-decimal token (priced like USD₮0, but not USD₮0).
const OTHER_TOKEN: &str = "0x74b7f16337b8972027f6196a17a631ac6de26d22";
const FUNDS: u64 = 10_000_000;

fn key(k: &str) -> PrivateKeySigner {
    signer_from_hex(k).expect("key")
}

fn other_address() -> String {
    evm::checksum(&key(OTHER_KEY).address())
}

fn buyer() -> SessionClient {
    SessionClient::new(key(PAYER_KEY)).with_registry(NetworkRegistry::x_layer())
}

fn funded_sa() -> EmbeddedSa {
    let sa = EmbeddedSa::new().with_registry(NetworkRegistry::x_layer());
    sa.fund(USDT0, PAYER, U256::from(FUNDS)).expect("fund");
    sa
}

// ---------------------------------------------------------------------------------------------
// An SA that behaves otherwise than the embedded one (the attacks that depend on the SA)
// ---------------------------------------------------------------------------------------------

/// How [`StandInSa`] departs from the [`EmbeddedSa`] it delegates to.
#[derive(Clone, Debug, Default)]
struct Quirks {
    /// Session receipts without `channelId`.
    no_channel_id: bool,
    /// Session receipts without `deposit`.
    no_deposit: bool,
    /// The SA does not check `source` (it is not forwarded to the ledger).
    ignores_source: bool,
    /// The SA does not check `additionalDeposit`: it is replaced by this value (what the
    /// deposit transaction really carries) before the ledger sees it.
    top_up_real_value: Option<String>,
}

/// A Settlement Agent over an [`EmbeddedSa`] ledger, with [`Quirks`]; counts `session/settle`.
#[derive(Clone)]
struct StandInSa {
    ledger: EmbeddedSa,
    quirks: Arc<Mutex<Quirks>>,
    settles: Arc<AtomicUsize>,
}

impl StandInSa {
    fn new(ledger: EmbeddedSa) -> Self {
        Self { ledger, quirks: Arc::default(), settles: Arc::default() }
    }

    fn set(&self, quirks: Quirks) {
        *self.quirks.lock().expect("quirks") = quirks;
    }

    fn quirks(&self) -> Quirks {
        self.quirks.lock().expect("quirks").clone()
    }

    fn shape(&self, mut r: SessionReceipt) -> SessionReceipt {
        let q = self.quirks();
        if q.no_channel_id {
            r.channel_id = String::new();
        }
        if q.no_deposit {
            r.deposit = String::new();
        }
        r
    }
}

#[async_trait]
impl SaClient for StandInSa {
    async fn settle(&self, req: &ChargeSettleRequest) -> Result<ChargeReceipt, SaError> {
        self.ledger.settle(req).await
    }
    async fn verify_hash(&self, req: &ChargeVerifyHashRequest) -> Result<ChargeReceipt, SaError> {
        self.ledger.verify_hash(req).await
    }
    async fn session_open(&self, req: &SessionOpenRequest) -> Result<SessionReceipt, SaError> {
        let mut req = req.clone();
        if self.quirks().ignores_source {
            req.source = String::new();
        }
        self.ledger.session_open(&req).await.map(|r| self.shape(r))
    }
    async fn session_top_up(&self, req: &SessionTopUpRequest) -> Result<SessionReceipt, SaError> {
        let mut req = req.clone();
        let q = self.quirks();
        if q.ignores_source {
            req.source = String::new();
        }
        if let Some(real) = q.top_up_real_value {
            req.payload.additional_deposit = real;
        }
        self.ledger.session_top_up(&req).await.map(|r| self.shape(r))
    }
    async fn session_settle(&self, req: &SessionSettleRequest) -> Result<SessionReceipt, SaError> {
        self.settles.fetch_add(1, Ordering::SeqCst);
        self.ledger.session_settle(req).await
    }
    async fn session_close(&self, req: &SessionCloseRequest) -> Result<SessionReceipt, SaError> {
        self.ledger.session_close(req).await
    }
    async fn session_status(&self, channel_id: &str) -> Result<SessionStatus, SaError> {
        self.ledger.session_status(channel_id).await
    }
}

// ---------------------------------------------------------------------------------------------
// The seller
// ---------------------------------------------------------------------------------------------

/// A seller on axum: `/a` (USD₮0 to PAYEE), `/other-token` (another token, same payee) and
/// `/other-payee` (USD₮0 to another recipient), all session routes at 1000 base units.
struct Shop {
    running: Running,
    ledger: EmbeddedSa,
    sa: StandInSa,
    intent: SessionIntent,
    mpp: Mpp,
    served: Arc<AtomicUsize>,
    http: reqwest::Client,
}

fn spec() -> PaySpec {
    PaySpec { amount: "0.001".into(), intent: "session".into(), ..PaySpec::default() }
}

async fn shop_with(store: Option<Arc<dyn ChannelStore>>) -> Shop {
    let ledger = funded_sa();
    let sa = StandInSa::new(ledger.clone());
    let mut intent = SessionIntent::new(sa.clone(), PAYEE).signer(Arc::new(key(PAYEE_KEY)));
    if let Some(store) = store {
        intent = intent.store(store);
    }
    let method = EvmMethod::x_layer(PAYEE).with_session(intent.clone());
    let other_token = PaySpec { currency: Some(OTHER_TOKEN.into()), decimals: Some(6), ..spec() };
    let other_payee = PaySpec { recipient: Some(other_address()), ..spec() };
    let mpp = Mpp::new(method, REALM, SECRET)
        .expect("mpp")
        .route("GET /a", spec())
        .and_then(|m| m.route("GET /other-token", other_token))
        .and_then(|m| m.route("GET /other-payee", other_payee))
        .expect("routes");
    let served = Arc::new(AtomicUsize::new(0));
    let handler = {
        let served = Arc::clone(&served);
        move || {
            served.fetch_add(1, Ordering::SeqCst);
            async { "served" }
        }
    };
    let app = axum::Router::new()
        .route("/a", axum::routing::get(handler.clone()))
        .route("/other-token", axum::routing::get(handler.clone()))
        .route("/other-payee", axum::routing::get(handler))
        .layer(pay402::axum::MppLayer::new(mpp.clone()));
    let running = support::serve_axum(app).await;
    Shop { running, ledger, sa, intent, mpp, served, http: reqwest::Client::new() }
}

async fn shop() -> Shop {
    shop_with(None).await
}

impl Shop {
    /// Status and body of `GET path`.
    async fn get(&self, path: &str, authorization: Option<&str>) -> (u16, String) {
        let mut req = self.http.get(format!("{}{path}", self.running.base));
        if let Some(a) = authorization {
            req = req.header("authorization", a);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        (status, resp.text().await.expect("body"))
    }

    async fn challenge(&self, path: &str) -> ParsedChallenge {
        let resp = self.http.get(format!("{}{path}", self.running.base)).send().await.expect("request");
        assert_eq!(resp.status(), 402);
        let www = resp.headers()["www-authenticate"].to_str().expect("ascii").to_owned();
        parse_www_authenticate(&[&www]).expect("challenge").remove(0)
    }

    /// A management action or a voucher: `true` when answered 200.
    async fn accepted(&self, path: &str, authorization: &str) -> bool {
        let (status, body) = self.get(path, Some(authorization)).await;
        assert!(status == 200 || status >= 400, "{status} {body}");
        status == 200
    }

    fn served(&self) -> usize {
        self.served.load(Ordering::SeqCst)
    }

    async fn state(&self, channel: &str) -> Option<ChannelState> {
        self.intent.channel_store().get(channel).await.expect("store").map(|v| v.value)
    }

    fn escrowed(&self) -> U256 {
        self.ledger.balance(USDT0, ESCROW)
    }

    /// Opens a channel on `path` with `deposit` (must succeed).
    async fn open(&self, buyer: &SessionClient, path: &str, deposit: u64) -> (ParsedChallenge, String) {
        let c = self.challenge(path).await;
        let (channel, header) = buyer.open_header(&c, U256::from(deposit)).expect("open header");
        assert!(self.accepted(path, &header).await, "open on {path}");
        (c, channel)
    }

    /// Sends a voucher for `cumulative` on `path`: `true` when the handler served it.
    async fn voucher(&self, buyer: &SessionClient, path: &str, channel: &str, cumulative: u64) -> bool {
        let c = self.challenge(path).await;
        let header = buyer.voucher_header(&c, channel, U256::from(cumulative)).expect("voucher");
        let before = self.served();
        let ok = self.accepted(path, &header).await;
        assert_eq!(self.served(), before + usize::from(ok), "served iff accepted");
        ok
    }
}

/// Rewrites a credential header.
fn edit(header: &str, f: impl FnOnce(&mut Credential)) -> String {
    let mut c = Credential::from_authorization_header(header).expect("credential");
    f(&mut c);
    c.to_authorization_header()
}

fn did(address: &str) -> String {
    did_pkh(196, &evm::parse_address(address).expect("address"))
}

/// A credential for `challenge` with `payload`, from `source`.
fn credential(challenge: &ParsedChallenge, payload: Value, source: &str) -> String {
    let Value::Object(payload) = payload else { panic!("payload is an object") };
    Credential::new(challenge.to_echo(), payload, Some(did(source))).to_authorization_header()
}

fn channel_id(byte: u8) -> String {
    format!("0x{}", format!("{byte:02x}").repeat(32))
}

// ---------------------------------------------------------------------------------------------
// F1: the deposit comes from the SA
// ---------------------------------------------------------------------------------------------

/// The review's attack: `authorization.value` 5000 escrowed, `deposit` 10^15 claimed.
#[tokio::test]
async fn f1_open_with_inflated_deposit_is_refused() {
    let shop = shop().await;
    let buyer = buyer();
    let c = shop.challenge("/a").await;
    let (channel, header) = buyer.open_header(&c, U256::from(5000u64)).expect("open");
    let inflated = edit(&header, |cred| {
        cred.payload.insert("deposit".into(), json!("1000000000000000"));
    });
    assert!(!shop.accepted("/a", &inflated).await, "an open whose deposit is not the authorization value");
    assert!(shop.state(&channel).await.is_none(), "no channel recorded");
    assert_eq!(shop.escrowed(), U256::ZERO, "refused before anything was escrowed");
    // Nothing is served on the claimed deposit.
    assert!(!shop.voucher(&buyer, "/a", &channel, 6000).await);
    assert_eq!(shop.served(), 0);

    // The honest open: the deposit recorded is the escrowed one, and vouchers stop there.
    let (_, channel) = shop.open(&buyer, "/a", 5000).await;
    assert_eq!(shop.state(&channel).await.expect("channel").deposit, 5000);
    assert_eq!(shop.escrowed(), U256::from(5000u64));
    for n in 1..=5 {
        assert!(shop.voucher(&buyer, "/a", &channel, n * COST).await, "voucher {n}");
    }
    assert!(!shop.voucher(&buyer, "/a", &channel, 6 * COST).await, "above the escrowed deposit");
}

/// Type `hash`: the deposit transaction escrowed 5000; the buyer claims 10^9.
#[tokio::test]
async fn f1_hash_open_deposit_comes_from_the_sa() {
    let shop = shop().await;
    let buyer = buyer();
    let hash = format!("0x{}", "d1".repeat(32));
    shop.ledger.record_transfer(&hash, PAYER, ESCROW, USDT0, U256::from(5000u64)).expect("record");
    let channel = channel_id(0x42);
    let open = |c: &ParsedChallenge, claim: Option<&str>| {
        let mut p = json!({"action": "open", "type": "hash", "channelId": channel, "hash": hash});
        if let Some(claim) = claim {
            p["deposit"] = json!(claim);
        }
        credential(c, p, PAYER)
    };
    let c = shop.challenge("/a").await;
    assert!(!shop.accepted("/a", &open(&c, Some("1000000000"))).await, "the claim is not what the SA escrowed");
    assert!(shop.state(&channel).await.is_none());
    assert!(!shop.voucher(&buyer, "/a", &channel, 6000).await);

    // An initial voucher above what the SA escrowed is refused too.
    let c = shop.challenge("/a").await;
    let voucher = Credential::from_authorization_header(
        &buyer.voucher_header(&c, &channel, U256::from(6 * COST)).expect("voucher"),
    )
    .expect("credential");
    let mut p = json!({"action": "open", "type": "hash", "channelId": channel, "hash": hash,
        "cumulativeAmount": "6000"});
    p["voucherSignature"] = voucher.payload["signature"].clone();
    assert!(!shop.accepted("/a", &credential(&c, p, PAYER)).await, "initial voucher above the deposit");
    assert!(shop.state(&channel).await.is_none());

    // Without a claim (the SA answers the repeated hash idempotently), the SA's 5000 is recorded.
    let c = shop.challenge("/a").await;
    assert!(shop.accepted("/a", &open(&c, None)).await);
    assert_eq!(shop.state(&channel).await.expect("channel").deposit, 5000);
    for n in 1..=5 {
        assert!(shop.voucher(&buyer, "/a", &channel, n * COST).await, "voucher {n}");
    }
    assert!(!shop.voucher(&buyer, "/a", &channel, 6 * COST).await, "served at most the escrowed deposit");
    assert_eq!(shop.served(), 5);
}

/// A top-up claims 10^9 while its transaction carries 1000, with an SA that does not compare
/// the claim (it reports the real total, 6000): the claim is not counted.
#[tokio::test]
async fn f1_top_up_counts_the_sa_reported_deposit() {
    let shop = shop().await;
    let buyer = buyer();
    let (_, channel) = shop.open(&buyer, "/a", 5000).await;
    let hash = format!("0x{}", "d2".repeat(32));
    shop.ledger.record_transfer(&hash, PAYER, ESCROW, USDT0, U256::from(1000u64)).expect("record");
    shop.sa.set(Quirks { top_up_real_value: Some("1000".into()), ..Quirks::default() });
    let c = shop.challenge("/a").await;
    let top_up = json!({"action": "topUp", "type": "hash", "channelId": channel, "hash": hash,
        "additionalDeposit": "1000000000"});
    assert!(!shop.accepted("/a", &credential(&c, top_up, PAYER)).await, "the SA's total contradicts the claim");
    let state = shop.state(&channel).await.expect("channel");
    assert!(state.deposit <= 6000, "deposit {} counts the claim", state.deposit);
    assert!(!shop.voucher(&buyer, "/a", &channel, 7 * COST).await, "never above what the escrow holds");

    // An honest top-up counts the SA's total.
    shop.sa.set(Quirks::default());
    let c = shop.challenge("/a").await;
    let header = buyer.top_up_header(&c, &channel, U256::from(2000u64)).expect("top-up");
    assert!(shop.accepted("/a", &header).await);
    let sa_total = shop.ledger.session_status_now(&channel).expect("status").deposit;
    assert_eq!(shop.state(&channel).await.expect("channel").deposit.to_string(), sa_total);
}

// ---------------------------------------------------------------------------------------------
// F9: vouchers are bound to the route's token and recipient
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn f9_voucher_for_a_route_in_another_token_is_refused() {
    let shop = shop().await;
    let buyer = buyer();
    let (_, channel) = shop.open(&buyer, "/a", 100_000).await;
    assert!(shop.voucher(&buyer, "/a", &channel, COST).await);
    assert!(!shop.voucher(&buyer, "/other-token", &channel, 2 * COST).await, "a USD₮0 channel pays another token");
    assert_eq!(shop.served(), 1);
    // The channel still pays for its own route.
    assert!(shop.voucher(&buyer, "/a", &channel, 2 * COST).await);
}

#[tokio::test]
async fn f9_voucher_for_another_recipient_is_refused() {
    let shop = shop().await;
    let buyer = buyer();
    let (_, channel) = shop.open(&buyer, "/a", 100_000).await;
    assert!(!shop.voucher(&buyer, "/other-payee", &channel, COST).await, "a channel paying PAYEE pays OTHER");
    assert_eq!(shop.served(), 0);

    // A channel opened on the route of another recipient has that recipient as its payee
    // (PaySpec.recipient, not the intent's default) and pays only there.
    let (_, theirs) = shop.open(&buyer, "/other-payee", 100_000).await;
    let state = shop.state(&theirs).await.expect("channel");
    assert!(state.payee.eq_ignore_ascii_case(&other_address()), "payee {}", state.payee);
    assert!(shop.voucher(&buyer, "/other-payee", &theirs, COST).await);
    assert!(!shop.voucher(&buyer, "/a", &theirs, 2 * COST).await, "OTHER's channel pays PAYEE's route");
    assert_eq!(shop.served(), 1);
}

// ---------------------------------------------------------------------------------------------
// F13: settle needs the channel signer's voucher
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn f13_settle_needs_the_channel_signers_highest_voucher() {
    let shop = shop().await;
    let buyer = buyer();
    let (_, channel) = shop.open(&buyer, "/a", 100_000).await;
    assert!(shop.voucher(&buyer, "/a", &channel, COST).await);
    assert!(shop.voucher(&buyer, "/a", &channel, 2 * COST).await);

    // Anyone with a free challenge and the channel id.
    let stranger = SessionClient::new(key(OTHER_KEY)).with_registry(NetworkRegistry::x_layer());
    for _ in 0..3 {
        let c = shop.challenge("/a").await;
        let bare = credential(&c, json!({"action": "settle", "channelId": channel}), &other_address());
        assert!(!shop.accepted("/a", &bare).await, "settle with only a channel id");
    }
    let c = shop.challenge("/a").await;
    let forged = edit(&stranger.voucher_header(&c, &channel, U256::from(2 * COST)).expect("voucher"), |cred| {
        cred.payload.insert("action".into(), json!("settle"));
    });
    assert!(!shop.accepted("/a", &forged).await, "settle with a voucher of another key");
    assert_eq!(shop.sa.settles.load(Ordering::SeqCst), 0, "the merchant signed and posted nothing");

    // The buyer's own highest voucher settles, once.
    let settle = |c: &ParsedChallenge| {
        edit(&buyer.voucher_header(c, &channel, U256::from(2 * COST)).expect("voucher"), |cred| {
            cred.payload.insert("action".into(), json!("settle"));
        })
    };
    let c = shop.challenge("/a").await;
    assert!(shop.accepted("/a", &settle(&c)).await);
    assert_eq!(shop.ledger.balance(USDT0, PAYEE), U256::from(2 * COST));
    let c = shop.challenge("/a").await;
    assert!(!shop.accepted("/a", &settle(&c)).await, "the same voucher settles once");
    assert_eq!(shop.sa.settles.load(Ordering::SeqCst), 1);
}

// ---------------------------------------------------------------------------------------------
// F10: a session receipt must name the channel and carry the deposit
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn f10_session_receipt_without_channel_id_or_deposit_is_refused() {
    let shop = shop().await;
    let buyer = buyer();
    for quirks in
        [Quirks { no_channel_id: true, ..Quirks::default() }, Quirks { no_deposit: true, ..Quirks::default() }]
    {
        shop.sa.set(quirks.clone());
        let c = shop.challenge("/a").await;
        let (channel, header) = buyer.open_header(&c, U256::from(5000u64)).expect("open");
        assert!(!shop.accepted("/a", &header).await, "{quirks:?}");
        assert!(shop.state(&channel).await.is_none(), "{quirks:?}: channel recorded");
        assert!(!shop.voucher(&buyer, "/a", &channel, COST).await, "{quirks:?}");
    }
    // A top-up whose receipt has no channel id is not counted.
    shop.sa.set(Quirks::default());
    let (_, channel) = shop.open(&buyer, "/a", 5000).await;
    shop.sa.set(Quirks { no_channel_id: true, ..Quirks::default() });
    let c = shop.challenge("/a").await;
    let header = buyer.top_up_header(&c, &channel, U256::from(1000u64)).expect("top-up");
    assert!(!shop.accepted("/a", &header).await);
    assert_eq!(shop.state(&channel).await.expect("channel").deposit, 5000);
    assert_eq!(shop.served(), 0);
}

// ---------------------------------------------------------------------------------------------
// L6: a Redis TTL never expires a channel holding a voucher
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn l6_redis_ttl_keeps_channels_holding_a_voucher() {
    let redis = support::redis::RedisServer::start();
    let store = RedisChannelStore::connect(&redis.url(), "findings-l6:")
        .await
        .expect("redis")
        .with_ttl(Duration::from_millis(1200));
    let shop = shop_with(Some(Arc::new(store))).await;
    let buyer = buyer();
    let (_, paid) = shop.open(&buyer, "/a", 100_000).await;
    let (_, idle) = shop.open(&buyer, "/a", 100_000).await;
    assert!(shop.voucher(&buyer, "/a", &paid, COST).await);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let state = shop.state(&paid).await.expect("the channel holding the seller's claim is kept");
    assert_eq!(state.highest_voucher_amount, u128::from(COST));
    assert!(!state.highest_voucher_signature.is_empty());
    assert!(shop.state(&idle).await.is_none(), "an abandoned channel without a voucher expires");
    assert!(shop.voucher(&buyer, "/a", &paid, 2 * COST).await);
    // The merchant can still close the channel at its highest voucher.
    shop.intent.close_channel(&paid).await.expect("close");
    assert_eq!(shop.ledger.balance(USDT0, PAYEE), U256::from(2 * COST));
}

// ---------------------------------------------------------------------------------------------
// L9: an unparsable session price is never "free"
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn l9_session_unparsable_route_amount_is_refused() {
    let shop = shop().await;
    let buyer = buyer();
    let (_, channel) = shop.open(&buyer, "/a", 100_000).await;
    // A request whose amount is not a base-unit integer (a misconfigured price).
    let mut request: Map<String, Value> = shop.mpp.pay_request(&spec()).expect("request");
    request.insert("amount".into(), json!("1.5"));
    let expires = "2099-01-01T00:00:00.000000Z".to_owned();
    let Err(rejection) = shop.mpp.verify_or_challenge(None, "session", request.clone(), None, expires.clone()).await
    else {
        panic!("no credential: a challenge")
    };
    let c = shop.challenge("/a").await;
    let voucher = buyer.voucher_header(&c, &channel, U256::from(COST)).expect("voucher");
    let voucher = edit(&voucher, |cred| cred.challenge = rejection.challenge.to_echo());
    let outcome = shop.mpp.verify_or_challenge(Some(&voucher), "session", request, None, expires).await;
    match outcome {
        Err(r) => assert!(r.error.is_some(), "refused with an error"),
        Ok(Granted::Paid(paid)) => panic!("served for free: {:?}", paid.receipt),
        Ok(Granted::Management { .. }) => panic!("a voucher is not a management action"),
        Ok(other) => panic!("a per-request voucher granted {other:?}"),
    }
    let state = shop.state(&channel).await.expect("channel");
    assert_eq!((state.highest_voucher_amount, state.reserved), (0, 0));
}

// ---------------------------------------------------------------------------------------------
// Suspected: SA-dependent attacks
// ---------------------------------------------------------------------------------------------

/// A top-up by hash presented again under the same (reused) session challenge, to an SA that
/// answers the duplicate idempotently (the embedded SA repeats its first receipt).
#[tokio::test]
async fn suspected_top_up_hash_counted_once() {
    let shop = shop().await;
    let buyer = buyer();
    let (_, channel) = shop.open(&buyer, "/a", 5000).await;
    let hash = format!("0x{}", "d3".repeat(32));
    shop.ledger.record_transfer(&hash, PAYER, ESCROW, USDT0, U256::from(3000u64)).expect("record");
    let c = shop.challenge("/a").await;
    let top_up = credential(
        &c,
        json!({"action": "topUp", "type": "hash", "channelId": channel, "hash": hash, "additionalDeposit": "3000"}),
        PAYER,
    );
    assert!(shop.accepted("/a", &top_up).await);
    assert_eq!(shop.state(&channel).await.expect("channel").deposit, 8000);
    assert!(!shop.accepted("/a", &top_up).await, "the same transaction under the same challenge");
    let c = shop.challenge("/a").await;
    let again = edit(&top_up, |cred| cred.challenge = c.to_echo());
    assert!(!shop.accepted("/a", &again).await, "the same transaction under a fresh challenge");
    assert_eq!(shop.state(&channel).await.expect("channel").deposit, 8000);
    assert!(shop.voucher(&buyer, "/a", &channel, 8000).await);
    assert!(!shop.voucher(&buyer, "/a", &channel, 9000).await, "above the escrowed deposit");
}

/// `source` names OTHER while PAYER deposits, with an SA that does not check `source`: the
/// vouchers pay402 would accept (signed by OTHER) would never redeem on chain.
#[tokio::test]
async fn suspected_open_source_not_depositor_is_refused() {
    let shop = shop().await;
    shop.sa.set(Quirks { ignores_source: true, ..Quirks::default() });
    let payer = buyer();
    let stranger = SessionClient::new(key(OTHER_KEY)).with_registry(NetworkRegistry::x_layer());
    let c = shop.challenge("/a").await;
    let (channel, header) = payer.open_header(&c, U256::from(5000u64)).expect("open");
    let other = other_address();
    let header = edit(&header, |cred| cred.source = Some(did(&other)));
    assert!(!shop.accepted("/a", &header).await, "transaction open: source is not authorization.from");
    assert!(shop.state(&channel).await.is_none());
    assert!(!shop.voucher(&stranger, "/a", &channel, COST).await);

    // A deposit by hash from PAYER, with source OTHER: the SA's status names PAYER.
    let hash = format!("0x{}", "d4".repeat(32));
    shop.ledger.record_transfer(&hash, PAYER, ESCROW, USDT0, U256::from(5000u64)).expect("record");
    let channel = channel_id(0x43);
    let c = shop.challenge("/a").await;
    let open = credential(&c, json!({"action": "open", "type": "hash", "channelId": channel, "hash": hash}), &other);
    assert!(!shop.accepted("/a", &open).await, "hash open: the SA does not confirm OTHER as the payer");
    assert!(shop.state(&channel).await.is_none());
    assert!(!shop.voucher(&stranger, "/a", &channel, COST).await);
    assert_eq!(shop.served(), 0);
}
