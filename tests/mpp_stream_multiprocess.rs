//! Three seller **processes** share one channel through Redis (`RedisChannelStore` +
//! `RedisReplayStore` on a `redis-server` started here on a free port); a metered SSE stream runs
//! on one of them and every companion voucher lands on another. The paused stream sees the new
//! voucher by polling the shared store (every `StreamConfig::poll_interval`, 20 ms here) and
//! resumes; the books in Redis end exact: spent = events × price, nothing reserved.
//!
//! Each worker is this test binary re-executed (the env var [`WORKER_REDIS`] selects the role).
//! The channel is "opened" by writing its state straight into the shared store (the Settlement
//! Agent cannot be shared across processes; vouchers need no SA call). Without `redis-server`
//! (`scripts/install-test-deps.sh`) the test fails; it never skips.

mod support;

use pay402::chain::NetworkRegistry;
use pay402::evm::{PrivateKeySigner, U256, signer_from_hex};
use pay402::mpp::{
    ChannelState, ChannelStore, EmbeddedSa, EvmMethod, Mpp, PaidStream, ParsedChallenge, PaySpec, RedisChannelStore,
    SessionClient, SessionIntent, SseEvent, StreamConfig,
};
use pay402::replay::RedisReplayStore;
use serde_json::Value;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use support::accounts::{ESCROW, PAYEE, PAYER_KEY, USDT0};
use support::redis::RedisServer;
use support::worker::Worker;

const WORKER_REDIS: &str = "PAY402_STREAM_WORKER_REDIS";
const WORKER_PREFIX: &str = "PAY402_STREAM_WORKER_PREFIX";
const MPP_SECRET: &str = "stream-multiprocess-secret-at-least-32-bytes-long";
const REALM: &str = "api.example.com";
/// `0.0001` USD₮0 per event.
const PRICE: u128 = 100;
const EVENTS: u64 = 60;
const WORKERS: usize = 3;

/// The worker role: nothing in a normal test run; in a child it serves `GET /tokens?n=N`, a
/// per-event session route, until it is killed.
#[test]
fn stream_worker() {
    let Ok(redis) = std::env::var(WORKER_REDIS) else { return };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    rt.block_on(async move {
        let prefix = std::env::var(WORKER_PREFIX).expect("prefix");
        let store = RedisChannelStore::connect(&redis, format!("{prefix}channel:")).await.expect("redis");
        let replay = RedisReplayStore::connect(&redis, format!("{prefix}replay:")).await.expect("redis");
        let sa = EmbeddedSa::new().with_registry(NetworkRegistry::x_layer());
        let config = StreamConfig::default().poll_interval(Duration::from_millis(20));
        let intent =
            SessionIntent::new(sa, PAYEE).store(Arc::new(store)).replay_store(Arc::new(replay)).stream_config(config);
        let mpp = Mpp::new(EvmMethod::x_layer(PAYEE).with_session(intent), REALM, MPP_SECRET)
            .expect("mpp")
            .route("GET /tokens", PaySpec::session("0.0001").per_event())
            .expect("route");
        let handler = |stream: PaidStream, axum::extract::Query(q): axum::extract::Query<Value>| async move {
            let n = q["n"].as_str().and_then(|n| n.parse::<u64>().ok()).unwrap_or(10);
            stream.sse(futures::stream::iter((1..=n).map(|i| SseEvent::data(format!("t{i}")))))
        };
        let app =
            axum::Router::new().route("/tokens", axum::routing::get(handler)).layer(pay402::axum::MppLayer::new(mpp));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        support::worker::announce_port(listener.local_addr().expect("addr").port());
        axum::serve(listener, app).await.expect("serve");
    });
}

fn buyer_key() -> PrivateKeySigner {
    signer_from_hex(PAYER_KEY).expect("key")
}

/// Writes an open channel straight into the shared store (as `open` would after the SA).
async fn open_channel(store: &dyn ChannelStore, deposit: u128) -> String {
    let channel = format!("0x{}", "5e".repeat(32));
    let buyer = buyer_key().address().to_string().to_lowercase();
    let state = ChannelState {
        token: USDT0.to_owned(),
        authorized_signer: buyer.clone(),
        deposit,
        ..ChannelState::new(&channel, 196, ESCROW, buyer, PAYEE)
    };
    assert!(store.put_if_absent(&channel, &state).await.expect("store"), "fresh channel");
    channel
}

/// The SSE events of a response, one at a time (LF line ends).
struct Sse {
    resp: reqwest::Response,
    buf: String,
}

impl Sse {
    async fn next(&mut self) -> Option<(Option<String>, String)> {
        loop {
            if let Some(at) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..at + 2).collect();
                let event = block.lines().find_map(|l| l.strip_prefix("event: ")).map(str::to_owned);
                let data: Vec<&str> = block.lines().filter_map(|l| l.strip_prefix("data: ")).collect();
                if data.is_empty() {
                    continue;
                }
                return Some((event, data.join("\n")));
            }
            match tokio::time::timeout(Duration::from_secs(30), self.resp.chunk()).await.expect("stalled") {
                Ok(Some(chunk)) => self.buf.push_str(std::str::from_utf8(&chunk).expect("utf-8")),
                _ => return None,
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_companion_voucher_sent_to_another_instance_resumes_the_paused_stream() {
    let server = RedisServer::start();
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_nanos();
    let prefix = format!("stream-{}-{nanos:x}:", std::process::id());
    let url = server.url();
    let workers: Vec<Worker> = (0..WORKERS)
        .map(|_| Worker::spawn("stream_worker", &[(WORKER_REDIS, url.as_str()), (WORKER_PREFIX, prefix.as_str())]))
        .collect();
    let store = RedisChannelStore::connect(&url, format!("{prefix}channel:")).await.expect("redis");
    let channel = open_channel(&store, 1000 * PRICE).await;
    let http = reqwest::Client::new();
    let buyer = SessionClient::new(buyer_key()).with_registry(NetworkRegistry::x_layer());
    let path = format!("/tokens?n={EVENTS}");

    let resp = http.get(format!("{}{path}", workers[0].base)).send().await.expect("request");
    assert_eq!(resp.status(), 402);
    let www = resp.headers()["www-authenticate"].to_str().expect("ascii").to_owned();
    let c: ParsedChallenge = pay402::mpp::parse_www_authenticate(&[&www]).expect("challenge").remove(0);

    // The stream runs on worker 0 with vouchers for 5 events at a time.
    let mut signed = 5 * PRICE;
    let auth = buyer.voucher_header(&c, &channel, U256::from(signed)).expect("voucher");
    let resp =
        http.get(format!("{}{path}", workers[0].base)).header("authorization", auth).send().await.expect("stream");
    assert_eq!(resp.status(), 200);
    let mut sse = Sse { resp, buf: String::new() };
    let (mut received, mut companions) = (0u64, [0usize; WORKERS]);
    let receipt = loop {
        let (event, data) = sse.next().await.expect("the stream ends with its receipt");
        match event.as_deref() {
            None => {
                received += 1;
                assert_eq!(data, format!("t{received}"));
                assert!(u128::from(received) * PRICE <= signed, "event {received} beyond the vouchers ({signed})");
            }
            Some("402-need-voucher") => {
                let need: Value = serde_json::from_str(&data).expect("json");
                assert_eq!(need["challengeId"], c.id.as_str());
                signed += 5 * PRICE;
                // Each companion voucher goes to another instance than the stream's.
                let to = 1 + companions[1..].iter().sum::<usize>() % (WORKERS - 1);
                companions[to] += 1;
                let auth = buyer.voucher_header(&c, &channel, U256::from(signed)).expect("voucher");
                let resp = http
                    .get(format!("{}{path}", workers[to].base))
                    .header("authorization", auth)
                    .send()
                    .await
                    .expect("companion");
                assert_eq!(resp.status(), 200, "the companion voucher is accepted on worker {to}");
                assert!(resp.headers().contains_key("payment-receipt"));
            }
            Some("payment-receipt") => break serde_json::from_str::<Value>(&data).expect("json"),
            other => panic!("unexpected event {other:?}: {data}"),
        }
    };
    assert_eq!(received, EVENTS);
    assert!(companions[1] >= 2 && companions[2] >= 2, "companions landed on both other instances: {companions:?}");
    assert_eq!(receipt["units"], EVENTS);
    assert_eq!(receipt["spent"], (u128::from(EVENTS) * PRICE).to_string());
    let mut books = store.get(&channel).await.expect("redis").expect("channel").value;
    for _ in 0..100 {
        if books.reserved == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        books = store.get(&channel).await.expect("redis").expect("channel").value;
    }
    assert_eq!((books.spent, books.units, books.reserved), (u128::from(EVENTS) * PRICE, EVENTS, 0));
    assert_eq!(books.streams.delivered(&c.id), Some(EVENTS));
}
