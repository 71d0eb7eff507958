//! The MPP `evm` **session** intent end to end, without an HTTP framework: requests go through
//! [`Mpp::process`] with a [`RequestContext`], the buyer is [`SessionClient`], the Settlement
//! Agent is the in-process [`EmbeddedSa`] (an in-memory escrow) — or, for the golden vectors, a
//! recording fake that answers OKX's receipts.

mod support;

use async_trait::async_trait;
use pay402::chain::NetworkRegistry;
use pay402::evm::{self, FixedNonceProvider, PrivateKeySigner, SECP256K1N_HALF, U256, signer_from_hex};
use pay402::mpp::{
    ChannelState, ChannelStore, Credential, EmbeddedSa, EvmMethod, FileStore, InMemoryChannelStore, Mpp, MppPayment,
    ParsedChallenge, PaySpec, Receipt, SessionClient, SessionGrant, SessionHandler, SessionIntent, b64url_decode,
    parse_www_authenticate,
};
use pay402::okx::sa::{
    ChargeReceipt, ChargeSettleRequest, ChargeVerifyHashRequest, SaClient, SaError, SessionCloseRequest,
    SessionOpenRequest, SessionReceipt, SessionSettleRequest, SessionStatus, SessionTopUpRequest,
};
use pay402::web::{PaymentHttpResponse, RequestContext};
use serde_json::{Map, Value, json};
use std::sync::{Arc, Mutex};
use std::time::Duration;
// Anvil account 0 (PAYER) is also the payee signer for the golden vectors; account 1 (PAYEE) is
// the payee in the embedded-SA scenarios.
use support::accounts::{ESCROW, OTHER_KEY, PAYEE, PAYEE_KEY, PAYER, PAYER_KEY, USDT0};

const SECRET: &str = "session-secret-at-least-32-bytes-long-hmac-key";
const REALM: &str = "api.example.com";
const COST: u128 = 1000;

fn key(k: &str) -> PrivateKeySigner {
    signer_from_hex(k).unwrap()
}

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        other => panic!("not an object: {other}"),
    }
}

// ------------------------------------------------------------------------------------------
// Seller + buyer fixture
// ------------------------------------------------------------------------------------------

struct Fixture {
    sa: EmbeddedSa,
    intent: SessionIntent,
    mpp: Mpp,
    spec: PaySpec,
    client: SessionClient,
    store: Arc<dyn ChannelStore>,
}

fn fixture_with(store: Arc<dyn ChannelStore>, min_delta: u128) -> Fixture {
    let sa = EmbeddedSa::new().with_registry(NetworkRegistry::x_layer());
    sa.fund(USDT0, PAYER, U256::from(10_000_000u64)).unwrap();
    let intent = SessionIntent::new(sa.clone(), PAYEE)
        .signer(Arc::new(key(PAYEE_KEY)))
        .store(Arc::clone(&store))
        .min_voucher_delta(min_delta);
    let method = EvmMethod::x_layer(PAYEE).with_session(intent.clone());
    let mpp = Mpp::new(method, REALM, SECRET).unwrap();
    // 0.001 USD₮0 = 1000 base units per request.
    let spec = PaySpec { amount: "0.001".into(), intent: "session".into(), ..PaySpec::default() };
    let client = SessionClient::new(key(PAYER_KEY)).with_registry(NetworkRegistry::x_layer());
    Fixture { sa, intent, mpp, spec, client, store }
}

fn fixture() -> Fixture {
    fixture_with(Arc::new(InMemoryChannelStore::new()), 0)
}

fn ctx(authorization: Option<&str>) -> RequestContext {
    let mut headers = http::HeaderMap::new();
    if let Some(a) = authorization {
        headers.insert(http::header::AUTHORIZATION, a.parse().unwrap());
    }
    RequestContext::new(http::Method::GET, "http://api.example.com/metered".into(), headers)
}

/// `Mpp::process` for the session route.
async fn process(mpp: &Mpp, spec: &PaySpec, authorization: Option<&str>) -> Result<MppPayment, PaymentHttpResponse> {
    mpp.pay_request(spec).expect("the coordinator builds session requests");
    mpp.process(&ctx(authorization), spec).await
}

/// A fresh challenge from the route (a 402 answer to an unpaid request).
async fn challenge(f: &Fixture, ttl: Option<Duration>) -> ParsedChallenge {
    let spec = PaySpec { expires_in: ttl, ..f.spec.clone() };
    let resp = process(&f.mpp, &spec, None).await.unwrap_err();
    assert_eq!(resp.status, 402);
    let www = resp.headers.get("www-authenticate").unwrap().to_str().unwrap().to_owned();
    parse_www_authenticate(&[&www]).unwrap().remove(0)
}

/// A management answer (open, topUp, close): HTTP 200 JSON; returns the decoded settlement.
async fn manage(f: &Fixture, header: &str) -> Value {
    let resp = process(&f.mpp, &f.spec, Some(header)).await.expect_err("a management answer");
    assert_eq!(resp.status, 200, "{}", String::from_utf8_lossy(&resp.body));
    let body: Value = serde_json::from_slice(&resp.body).unwrap();
    assert_eq!(body["status"], "ok");
    assert_eq!(body["receipt"]["intent"], "session");
    serde_json::from_slice(&b64url_decode(body["receipt"]["settlement"].as_str().unwrap()).unwrap()).unwrap()
}

/// A refused request: (status, problem title, detail).
async fn refused(f: &Fixture, header: &str) -> (u16, String, String) {
    let resp = process(&f.mpp, &f.spec, Some(header)).await.expect_err("a refusal");
    let body: Value = serde_json::from_slice(&resp.body).unwrap();
    (
        resp.status.as_u16(),
        body["title"].as_str().unwrap_or("").to_owned(),
        body["detail"].as_str().unwrap_or("").to_owned(),
    )
}

async fn state(f: &Fixture, channel: &str) -> ChannelState {
    f.store.get(channel).await.unwrap().expect("channel in the store").value
}

fn balances(f: &Fixture) -> (U256, U256, U256) {
    (f.sa.balance(USDT0, PAYER), f.sa.balance(USDT0, ESCROW), f.sa.balance(USDT0, PAYEE))
}

fn u(v: u64) -> U256 {
    U256::from(v)
}

/// Pays one request with the next voucher and lets the handler answer `status`.
async fn pay(f: &Fixture, c: &ParsedChallenge, channel: &str, status: u16) -> Receipt {
    let header = f.client.next_voucher(c, channel, U256::from(COST)).unwrap();
    let paid = process(&f.mpp, &f.spec, Some(&header)).await.expect("voucher accepted");
    let receipt = paid.receipt.clone();
    let headers = paid.finish(http::StatusCode::from_u16(status).expect("status")).await.unwrap();
    assert_eq!(headers.contains_key("payment-receipt"), status < 400);
    receipt
}

async fn open(f: &Fixture, c: &ParsedChallenge, deposit: u64) -> String {
    let (channel, header) = f.client.open_header(c, U256::from(deposit)).unwrap();
    let result = manage(f, &header).await;
    assert_eq!(
        result,
        json!({"channelId": channel, "cumulativeAmount": "0", "escrowContract": ESCROW, "status": "open",
               "reference": result["reference"]})
    );
    assert!(result["reference"].as_str().unwrap().starts_with("0x"));
    channel
}

// ------------------------------------------------------------------------------------------
// Lifecycle
// ------------------------------------------------------------------------------------------

#[tokio::test]
async fn whole_lifecycle_with_the_embedded_escrow() {
    let f = fixture();
    let c = challenge(&f, None).await;
    assert_eq!(c.intent, "session");
    assert_eq!(
        c.request["methodDetails"],
        json!({"chainId": 196, "escrowContract": ESCROW, "feePayer": false, "minVoucherDelta": "0"})
    );

    let channel = open(&f, &c, 5_000_000).await;
    let s = state(&f, &channel).await;
    assert_eq!((s.deposit, s.highest_voucher_amount, s.spent, s.units, s.reserved), (5_000_000, 0, 0, 0, 0));
    assert_eq!((s.payer.as_str(), s.payee.as_str()), (PAYER.to_lowercase().as_str(), PAYEE));
    assert_eq!(s.token, USDT0);
    assert_eq!(balances(&f), (u(5_000_000), u(5_000_000), u(0)));

    for i in 1..=5u128 {
        let receipt = pay(&f, &c, &channel, 200).await;
        let extra = receipt.extra.unwrap();
        assert_eq!(receipt.reference, channel);
        assert_eq!(extra["intent"], "session");
        assert_eq!(extra["cumulativeAmount"], (i * COST).to_string());
        assert_eq!(extra["reserved"], COST.to_string());
        assert_eq!(extra["voucherCredit"], "0");
        assert_eq!(extra["depositAvailable"], (5_000_000 - i * COST).to_string());
        assert_eq!(extra["deposit"], "5000000");
        let s = state(&f, &channel).await;
        assert_eq!(
            (s.highest_voucher_amount, s.spent, s.units, s.reserved),
            (i * COST, i * COST, u64::try_from(i).unwrap(), 0)
        );
    }
    assert_eq!(balances(&f), (u(5_000_000), u(5_000_000), u(0)), "vouchers move no tokens");

    let result = manage(&f, &f.client.top_up_header(&c, &channel, U256::from(1_000_000u64)).unwrap()).await;
    assert_eq!((result["cumulativeAmount"].as_str(), result["status"].as_str()), (Some("5000"), Some("open")));
    assert_eq!(state(&f, &channel).await.deposit, 6_000_000);
    assert_eq!(balances(&f), (u(4_000_000), u(6_000_000), u(0)));

    for i in 6..=8u128 {
        pay(&f, &c, &channel, 200).await;
        let s = state(&f, &channel).await;
        let units = u64::try_from(i).unwrap();
        assert_eq!(
            (s.highest_voucher_amount, s.spent, s.units, s.reserved, s.deposit),
            (i * COST, i * COST, units, 0, 6_000_000)
        );
    }

    let settled = f.intent.settle_channel(&channel).await.unwrap();
    assert_eq!((settled.cumulative_amount.as_str(), settled.status.as_str()), ("8000", "open"));
    assert_eq!(balances(&f), (u(4_000_000), u(5_992_000), u(8000)));
    let s = state(&f, &channel).await;
    assert_eq!((s.spent, s.units, s.reserved), (8000, 8, 0), "settling keeps the channel");
    let status: SessionStatus = f.sa.session_status(&channel).await.unwrap();
    assert_eq!((status.settled_on_chain.as_str(), status.session_status.as_str()), ("8000", "OPEN"));

    let result = manage(&f, &f.client.close_header(&c, &channel, U256::from(8000u64)).unwrap()).await;
    assert_eq!((result["cumulativeAmount"].as_str(), result["status"].as_str()), (Some("8000"), Some("closed")));
    assert!(f.store.get(&channel).await.unwrap().is_none(), "a closed channel leaves the store");
    assert_eq!(balances(&f), (u(9_992_000), u(0), u(8000)));
    let status = f.sa.session_status(&channel).await.unwrap();
    assert_eq!((status.session_status.as_str(), status.remaining_balance.as_str()), ("CLOSED", "0"));

    // Nothing works on a closed channel.
    let (code, title, _) = refused(&f, &f.client.next_voucher(&c, &channel, U256::from(COST)).unwrap()).await;
    assert_eq!((code, title.as_str()), (410, "ChannelNotFoundError"));
    assert!(f.intent.settle_channel(&channel).await.is_err());
}

#[tokio::test]
async fn reserve_then_commit_or_release() {
    let f = fixture();
    let c = challenge(&f, None).await;
    let channel = open(&f, &c, 5_000_000).await;

    // The handler fails: the reservation is released, nothing is charged.
    let header = f.client.next_voucher(&c, &channel, U256::from(COST)).unwrap();
    let paid = process(&f.mpp, &f.spec, Some(&header)).await.unwrap();
    let s = state(&f, &channel).await;
    assert_eq!((s.highest_voucher_amount, s.reserved, s.spent), (1000, 1000, 0));
    assert!(paid.finish(http::StatusCode::INTERNAL_SERVER_ERROR).await.unwrap().is_empty());
    let s = state(&f, &channel).await;
    assert_eq!((s.highest_voucher_amount, s.reserved, s.spent, s.units), (1000, 0, 0, 0));

    // A retry of the very same voucher and challenge is served (its key was forgotten) …
    let paid = process(&f.mpp, &f.spec, Some(&header)).await.unwrap();
    assert!(paid.finish(http::StatusCode::OK).await.unwrap().contains_key("payment-receipt"));
    let s = state(&f, &channel).await;
    assert_eq!((s.reserved, s.spent, s.units), (0, 1000, 1));
    // … but only once.
    let (code, title, detail) = refused(&f, &header).await;
    assert_eq!((code, title.as_str(), detail.as_str()), (402, "InvalidPayloadError", "voucher replayed"));

    // The next voucher commits.
    pay(&f, &c, &channel, 201).await;
    let s = state(&f, &channel).await;
    assert_eq!((s.highest_voucher_amount, s.reserved, s.spent, s.units), (2000, 0, 2000, 2));
}

// ------------------------------------------------------------------------------------------
// Refusals
// ------------------------------------------------------------------------------------------

fn with_payload(header: &str, f: impl FnOnce(&mut Map<String, Value>)) -> String {
    let mut c = Credential::from_authorization_header(header).unwrap();
    f(&mut c.payload);
    c.to_authorization_header()
}

/// The same signature with s' = n − s and the other parity (valid but malleable).
fn high_s(signature: &str) -> String {
    let raw = evm::parse_signature(signature).unwrap().as_bytes();
    let s = U256::from_be_slice(&raw[32..64]);
    let n = SECP256K1N_HALF * U256::from(2) + U256::from(1);
    let mut out = raw;
    out[32..64].copy_from_slice(&(n - s).to_be_bytes::<32>());
    out[64] = if raw[64] == 27 { 28 } else { 27 };
    evm::to_hex(out)
}

#[tokio::test]
async fn bad_vouchers_are_refused_and_charge_nothing() {
    let f = fixture_with(Arc::new(InMemoryChannelStore::new()), 500);
    let c = challenge(&f, None).await;
    assert_eq!(c.request["methodDetails"]["minVoucherDelta"], "500");
    let channel = open(&f, &c, 5_000_000).await;
    let first = f.client.voucher_header(&c, &channel, U256::from(1000u64)).unwrap();
    process(&f.mpp, &f.spec, Some(&first)).await.unwrap().finish(http::StatusCode::OK).await.unwrap();
    let other_channel = open(&f, &c, 1_000_000).await;
    let before = state(&f, &channel).await;
    let other_before = state(&f, &other_channel).await;
    let funds = balances(&f);
    assert_eq!((before.highest_voucher_amount, before.spent), (1000, 1000));

    let stranger = SessionClient::new(key(OTHER_KEY)).with_registry(NetworkRegistry::x_layer());
    let good_2000 = f.client.voucher_header(&c, &channel, U256::from(2000u64)).unwrap();
    let sig_2000 =
        Credential::from_authorization_header(&good_2000).unwrap().payload["signature"].as_str().unwrap().to_owned();
    let for_b = f.client.voucher_header(&c, &other_channel, U256::from(2000u64)).unwrap();
    let cases: Vec<(&str, String, u16, &str)> = vec![
        (
            "wrong signer",
            stranger.voucher_header(&c, &channel, U256::from(2000u64)).unwrap(),
            402,
            "SignerMismatchError",
        ),
        (
            "lower cumulative",
            f.client.voucher_header(&c, &channel, U256::from(500u64)).unwrap(),
            402,
            "DeltaTooSmallError",
        ),
        (
            "equal cumulative, another signature",
            stranger.voucher_header(&c, &channel, U256::from(1000u64)).unwrap(),
            402,
            "DeltaTooSmallError",
        ),
        (
            "delta below the minimum",
            f.client.voucher_header(&c, &channel, U256::from(1499u64)).unwrap(),
            402,
            "DeltaTooSmallError",
        ),
        (
            "above the deposit",
            f.client.voucher_header(&c, &channel, U256::from(5_000_001u64)).unwrap(),
            402,
            "AmountExceedsDepositError",
        ),
        (
            "another channel's voucher",
            with_payload(&for_b, |p| {
                p.insert("channelId".into(), Value::String(channel.clone()));
            }),
            402,
            "SignerMismatchError",
        ),
        (
            "malformed signature",
            with_payload(&good_2000, |p| {
                p.insert("signature".into(), Value::String("0x1234".into()));
            }),
            402,
            "InvalidSignatureError",
        ),
        (
            "high s",
            with_payload(&good_2000, |p| {
                p.insert("signature".into(), Value::String(high_s(&sig_2000)));
            }),
            402,
            "InvalidSignatureError",
        ),
        (
            "missing signature",
            with_payload(&good_2000, |p| {
                p.remove("signature");
            }),
            402,
            "InvalidPayloadError",
        ),
        (
            "unknown action",
            with_payload(&good_2000, |p| {
                p.insert("action".into(), Value::String("refund".into()));
            }),
            402,
            "InvalidPayloadError",
        ),
        ("replay, same challenge", first.clone(), 402, "InvalidPayloadError"),
        (
            "unknown channel",
            with_payload(&good_2000, |p| {
                p.insert("channelId".into(), Value::String(format!("0x{}", "cd".repeat(32))));
            }),
            410,
            "ChannelNotFoundError",
        ),
    ];
    for (what, header, status, title) in cases {
        let (got_status, got_title, detail) = refused(&f, &header).await;
        assert_eq!((got_status, got_title.as_str()), (status, title), "{what}: {detail}");
        assert_eq!(state(&f, &channel).await, before, "{what}: state changed");
        assert_eq!(balances(&f), funds, "{what}: tokens moved");
    }
    assert_eq!(state(&f, &other_channel).await, other_before);

    // A valid voucher still works after all that (the refused ones left no replay keys).
    process(&f.mpp, &f.spec, Some(&good_2000)).await.unwrap().finish(http::StatusCode::OK).await.unwrap();
    let s = state(&f, &channel).await;
    assert_eq!((s.highest_voucher_amount, s.spent, s.units), (2000, 2000, 2));

    // A channel being closed refuses vouchers (410 ChannelClosed).
    let mut closing = state(&f, &other_channel).await;
    closing.close_requested_at = 1;
    let v = f.store.get(&other_channel).await.unwrap().unwrap().version;
    f.store.compare_and_swap(&other_channel, v, &closing).await.unwrap();
    let (code, title, _) = refused(&f, &for_b).await;
    assert_eq!((code, title.as_str()), (410, "ChannelClosedError"));

    // After a merchant close the channel is gone: 410 ChannelNotFound.
    closing.close_requested_at = 0;
    let v = f.store.get(&other_channel).await.unwrap().unwrap().version;
    f.store.compare_and_swap(&other_channel, v, &closing).await.unwrap();
    let closed = f.intent.close_channel(&other_channel).await.unwrap();
    assert_eq!((closed.status.as_str(), closed.cumulative_amount.as_str()), ("closed", "0"));
    let (code, title, _) = refused(&f, &for_b).await;
    assert_eq!((code, title.as_str()), (410, "ChannelNotFoundError"));
}

#[tokio::test]
async fn a_replay_under_a_new_challenge_is_charged_once_from_the_surplus() {
    let f = fixture();
    let c1 = challenge(&f, None).await;
    let c2 = challenge(&f, Some(Duration::from_secs(601))).await;
    let c3 = challenge(&f, Some(Duration::from_secs(602))).await;
    assert!(c1.id != c2.id && c2.id != c3.id);
    let channel = open(&f, &c1, 5_000_000).await;

    // A voucher worth two requests: 3000 after 1000.
    pay(&f, &c1, &channel, 200).await;
    let big = f.client.voucher_header(&c1, &channel, U256::from(3000u64)).unwrap();
    process(&f.mpp, &f.spec, Some(&big)).await.unwrap().finish(http::StatusCode::OK).await.unwrap();
    let s = state(&f, &channel).await;
    assert_eq!((s.highest_voucher_amount, s.spent, s.units), (3000, 2000, 2));

    // The same voucher under challenge 2: charged once from the 1000 surplus.
    let replay = f.client.voucher_header(&c2, &channel, U256::from(3000u64)).unwrap();
    assert_eq!(
        Credential::from_authorization_header(&replay).unwrap().payload,
        Credential::from_authorization_header(&big).unwrap().payload
    );
    let paid = process(&f.mpp, &f.spec, Some(&replay)).await.unwrap();
    assert_eq!(paid.receipt.extra.as_ref().unwrap()["voucherCredit"], "0");
    paid.finish(http::StatusCode::OK).await.unwrap();
    let s = state(&f, &channel).await;
    assert_eq!((s.highest_voucher_amount, s.spent, s.units, s.reserved), (3000, 3000, 3, 0));

    // Again under challenge 2: refused, nothing charged.
    let (code, title, detail) = refused(&f, &replay).await;
    assert_eq!((code, title.as_str(), detail.as_str()), (402, "InvalidPayloadError", "voucher replayed"));
    // Under challenge 3: nothing left to charge.
    let third = f.client.voucher_header(&c3, &channel, U256::from(3000u64)).unwrap();
    let (code, title, _) = refused(&f, &third).await;
    assert_eq!((code, title.as_str()), (402, "InsufficientBalanceError"));
    let s = state(&f, &channel).await;
    assert_eq!((s.spent, s.units, s.reserved), (3000, 3, 0));
}

// ------------------------------------------------------------------------------------------
// Concurrency
// ------------------------------------------------------------------------------------------

/// Sends every header at once (in scrambled order); returns how many were committed. Every
/// seventh handler fails (its reservation is released).
async fn storm(f: &Arc<Fixture>, headers: Vec<String>) -> u64 {
    let n = headers.len();
    let tasks: Vec<_> = headers
        .into_iter()
        .enumerate()
        .map(|(i, h)| {
            let f = Arc::clone(f);
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(u64::try_from((i * 37) % n).unwrap() / 10)).await;
                match process(&f.mpp, &f.spec, Some(&h)).await {
                    Ok(paid) => {
                        let extra = paid.receipt.extra.as_ref().unwrap();
                        assert!(extra["voucherCredit"].as_str().unwrap().parse::<u128>().is_ok());
                        let status = if i % 7 == 0 { 500 } else { 200 };
                        paid.finish(http::StatusCode::from_u16(status).expect("status")).await.expect("commit");
                        u64::from(status == 200)
                    }
                    Err(resp) => {
                        assert!(matches!(resp.status.as_u16(), 402 | 410), "{}", String::from_utf8_lossy(&resp.body));
                        0
                    }
                }
            })
        })
        .collect();
    let mut committed = 0;
    for t in tasks {
        committed += t.await.unwrap();
    }
    committed
}

async fn hammer(store: Arc<dyn ChannelStore>) {
    let f = Arc::new(fixture_with(store, 0));
    let c1 = challenge(&f, None).await;
    let c2 = challenge(&f, Some(Duration::from_secs(601))).await;
    let channel = open(&f, &c1, 5_000_000).await;

    // 1. 50 increasing vouchers under challenge 1 and the same 50 under challenge 2 (replays
    //    once their amount is the highest), all at once.
    let mut headers = Vec::new();
    for k in 1..=50u64 {
        headers.push(f.client.voucher_header(&c1, &channel, U256::from(k * 1000)).unwrap());
        headers.push(f.client.voucher_header(&c2, &channel, U256::from(k * 1000)).unwrap());
    }
    let mut committed = storm(&f, headers).await;
    let s = state(&f, &channel).await;
    assert!(committed > 0);
    assert_eq!((s.spent, s.units, s.reserved), (u128::from(committed) * COST, committed, 0));

    // 2. The highest voucher replayed under 60 new challenges, each sent twice, at once: each
    //    challenge is charged at most once, and never beyond the surplus.
    let highest = U256::from(s.highest_voucher_amount);
    let surplus = s.available();
    let mut headers = Vec::new();
    for t in 0..60u64 {
        let c = challenge(&f, Some(Duration::from_secs(700 + t))).await;
        let h = f.client.voucher_header(&c, &channel, highest).unwrap();
        headers.push(h.clone());
        headers.push(h);
    }
    let replays = storm(&f, headers).await;
    assert!(replays > 0 && replays <= 60);
    assert!(u128::from(replays) * COST <= surplus);
    committed += replays;
    let s = state(&f, &channel).await;
    assert_eq!(s.spent, u128::from(committed) * COST, "spent = cost × successes");
    assert_eq!((s.units, s.reserved), (committed, 0));
    assert!(s.spent <= s.highest_voucher_amount, "never overdrawn");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_vouchers_in_memory() {
    hammer(Arc::new(InMemoryChannelStore::new())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_vouchers_on_a_file_store() {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let dir = std::env::temp_dir().join(format!("pay402-mpp-session-{}-{nanos}", std::process::id()));
    hammer(Arc::new(FileStore::new(&dir).unwrap())).await;
    let _ = std::fs::remove_dir_all(&dir);
}

// ------------------------------------------------------------------------------------------
// Golden vectors (OKX's Python SDK)
// ------------------------------------------------------------------------------------------

fn vectors() -> Value {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/okx-golden.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

const REFERENCE: &str = "0xefefefefefefefefefefefefefefefefefefefefefefefefefefefefefefefef";

/// Records each SA request body (compact ASCII JSON) and answers OKX's receipts.
#[derive(Default)]
struct RecordingSa {
    bodies: Mutex<Vec<(String, String)>>,
}

impl RecordingSa {
    /// Records the body; the receipt names the channel and the channel's total deposit (5 USD₮0
    /// opened, 1 topped up), as the SA reports them.
    fn record<T: serde::Serialize>(&self, path: &str, body: &T, channel_id: &str, deposit: &str) -> SessionReceipt {
        let bytes = pay402::json::compact_ascii(body).unwrap();
        self.bodies.lock().unwrap().push((path.to_owned(), String::from_utf8(bytes).unwrap()));
        SessionReceipt {
            method: "evm".into(),
            intent: "session".into(),
            status: "success".into(),
            reference: REFERENCE.into(),
            channel_id: channel_id.into(),
            deposit: deposit.into(),
            ..SessionReceipt::default()
        }
    }
}

#[async_trait]
impl SaClient for RecordingSa {
    async fn settle(&self, _req: &ChargeSettleRequest) -> Result<ChargeReceipt, SaError> {
        unreachable!()
    }
    async fn verify_hash(&self, _req: &ChargeVerifyHashRequest) -> Result<ChargeReceipt, SaError> {
        unreachable!()
    }
    async fn session_open(&self, req: &SessionOpenRequest) -> Result<SessionReceipt, SaError> {
        Ok(self.record("/api/v6/pay/mpp/session/open", req, &req.payload.channel_id, "5000000"))
    }
    async fn session_top_up(&self, req: &SessionTopUpRequest) -> Result<SessionReceipt, SaError> {
        Ok(self.record("/api/v6/pay/mpp/session/topUp", req, &req.payload.channel_id, "6000000"))
    }
    async fn session_settle(&self, req: &SessionSettleRequest) -> Result<SessionReceipt, SaError> {
        Ok(self.record("/api/v6/pay/mpp/session/settle", req, &req.payload.channel_id, "6000000"))
    }
    async fn session_close(&self, req: &SessionCloseRequest) -> Result<SessionReceipt, SaError> {
        Ok(self.record("/api/v6/pay/mpp/session/close", req, &req.payload.channel_id, "6000000"))
    }
    async fn session_status(&self, _channel_id: &str) -> Result<SessionStatus, SaError> {
        unreachable!()
    }
}

fn settlement_of(grant: SessionGrant) -> (Value, Value) {
    let SessionGrant::Management(body) = grant else { panic!("expected a management answer") };
    let decoded = b64url_decode(body["receipt"]["settlement"].as_str().unwrap()).unwrap();
    (body, serde_json::from_slice(&decoded).unwrap())
}

#[tokio::test]
async fn golden_session_requests_and_answers() {
    let v = vectors();
    let sa_vec = &v["mpp_sa_requests"];
    let requests = sa_vec["requests_in_order"].as_array().unwrap();
    let body_of = |path: &str| -> (Value, String) {
        let r = requests.iter().find(|r| r["path"] == path).unwrap();
        let text = r["body"].as_str().unwrap().to_owned();
        (serde_json::from_str(&text).unwrap(), text)
    };
    let returns = &sa_vec["intent_return_values"];
    let (open_body, open_text) = body_of("/api/v6/pay/mpp/session/open");
    let echo = open_body["challenge"].clone();
    assert_eq!(echo["id"], sa_vec["inputs"]["session_challenge_id"]);
    let request = obj(serde_json::from_slice(&b64url_decode(echo["request"].as_str().unwrap()).unwrap()).unwrap());

    let sa = Arc::new(RecordingSa::default());
    let store: Arc<dyn ChannelStore> = Arc::new(InMemoryChannelStore::new());
    let intent = SessionIntent::with_sa(sa.clone(), "0x1111111111111111111111111111111111111111")
        .signer(Arc::new(key(PAYER_KEY)))
        .store(Arc::clone(&store))
        .per_request_cost(Some(U256::from(1000u64)))
        .nonce_provider(Arc::new(FixedNonceProvider(U256::from(123_456_789u64))));
    assert_eq!(Value::Object(intent.challenge_method_details()), request["methodDetails"]);
    let credential = |payload: Value, challenge_id: Option<&str>| {
        let mut echo = echo.clone();
        if let Some(id) = challenge_id {
            echo["id"] = Value::String(id.into());
        }
        Credential::from_json_value(&json!({"challenge": echo, "payload": payload})).unwrap()
    };
    let cost = U256::from(1u64); // the route's price; per_request_cost wins

    // open: the body is byte-identical, and so is the management answer.
    let mut open_payload = open_body["payload"].clone();
    open_payload["cumulativeAmount"] = json!("0"); // not forwarded
    let (answer, result) = settlement_of(intent.verify(&credential(open_payload, None), &request, cost).await.unwrap());
    assert_eq!(answer, returns["respond_for_open"]);
    assert_eq!(serde_json::to_string(&answer).unwrap(), serde_json::to_string(&returns["respond_for_open"]).unwrap());
    assert_eq!(result, returns["session_open"]);
    assert_eq!(serde_json::to_string(&result).unwrap(), returns["respond_settlement_decoded"].as_str().unwrap());
    assert_eq!(sa.bodies.lock().unwrap()[0].1, open_text);

    // Two vouchers: the second is the same voucher under another challenge (charged once).
    let channel = open_body["payload"]["channelId"].as_str().unwrap().to_owned();
    let voucher = json!({
        "action": "voucher", "channelId": channel, "cumulativeAmount": "1000000",
        "signature": v["eip712"]["Voucher"]["signature_rsv"],
    });
    for id in [None, Some("another-challenge")] {
        let grant = intent.verify(&credential(voucher.clone(), id), &request, cost).await.unwrap();
        let SessionGrant::Serve { receipt, pending } = grant else { panic!("voucher not served") };
        assert_eq!(receipt.extra.unwrap()["cumulativeAmount"], "1000000");
        pending.expect("a reservation").commit().await.unwrap();
    }
    let replayed = intent.verify(&credential(voucher.clone(), Some("another-challenge")), &request, cost).await;
    assert!(replayed.is_err(), "a replay under a used challenge id is refused");
    let state = store.get(&channel).await.unwrap().unwrap().value;
    let mut got: Value = serde_json::from_slice(&state.to_json_bytes().unwrap()).unwrap();
    let mut want = returns["channel_after_voucher_x2"].clone();
    got.as_object_mut().unwrap().remove("createdAt");
    want.as_object_mut().unwrap().remove("createdAt");
    assert_eq!(got, want);

    // topUp, merchant settle, client close: byte-identical bodies.
    let (top_up_body, top_up_text) = body_of("/api/v6/pay/mpp/session/topUp");
    let (_, result) =
        settlement_of(intent.verify(&credential(top_up_body["payload"].clone(), None), &request, cost).await.unwrap());
    assert_eq!(result, returns["topUp"]);
    assert_eq!(sa.bodies.lock().unwrap()[1].1, top_up_text);
    assert_eq!(store.get(&channel).await.unwrap().unwrap().value.deposit, 6_000_000);

    let settled = intent.settle_channel(&channel).await.unwrap();
    assert_eq!(settled.to_json_value(), returns["settle_channel"]);
    assert_eq!(sa.bodies.lock().unwrap()[2].1, body_of("/api/v6/pay/mpp/session/settle").1);

    let close = json!({
        "action": "close", "channelId": channel, "cumulativeAmount": "1000000",
        "signature": v["eip712"]["Voucher"]["signature_rsv"],
    });
    let (_, result) = settlement_of(intent.verify(&credential(close, None), &request, cost).await.unwrap());
    assert_eq!(result, returns["close"]);
    let bodies = sa.bodies.lock().unwrap().clone();
    assert_eq!(bodies[3].1, body_of("/api/v6/pay/mpp/session/close").1);
    assert_eq!(bodies.len(), 4);
    assert!(store.get(&channel).await.unwrap().is_none());
}

#[tokio::test]
async fn settle_and_close_need_the_payee_signer() {
    let sa = EmbeddedSa::new();
    let intent = SessionIntent::new(sa, PAYEE);
    let channel = format!("0x{}", "ab".repeat(32));
    for r in [intent.settle_channel(&channel).await, intent.close_channel(&channel).await] {
        let e = r.unwrap_err();
        assert_eq!(e.status(), 402);
        assert!(e.to_string().contains("payee signer not configured"), "{e}");
    }
    // A signer that is not the channel's payee is refused by the escrow (70004).
    let f = fixture();
    let c = challenge(&f, None).await;
    let channel = open(&f, &c, 1_000_000).await;
    pay(&f, &c, &channel, 200).await;
    let impostor = SessionIntent::new(f.sa.clone(), PAYEE).signer(Arc::new(key(OTHER_KEY))).store(Arc::clone(&f.store));
    let e = impostor.settle_channel(&channel).await.unwrap_err();
    assert!(e.to_string().contains("InvalidSignatureError"), "{e}");
}
