//! Metered SSE streams (run with `scripts/bench.sh`): events per second on **one core** (a
//! current-thread Tokio runtime) over one session channel, each event reserved, sent and
//! committed through the channel store — with the in-memory and the Redis store — beside two
//! unmetered streams of the same events in the same run: axum's own `Sse` (the peer) and
//! pay402's `EventStream::unmetered`. Every stream is turned into an axum response and its body
//! read to the end (no socket: the figure is the server's own cost per event).
//!
//! The per-event overhead of metering is `(metered time − unmetered time) / events`. The run
//! fails unless every metered stream ends with spent = events × price and nothing reserved.
//!
//! Arguments: `--smoke` (tiny, CI), `--events N` (per stream, default 20 000), `--runs R`
//! (default 5; the median is reported), `--out FILE` (markdown table).

use axum::response::IntoResponse as _;
use axum::response::sse::{Event, Sse};
use futures::StreamExt as _;
use pay402::chain::NetworkRegistry;
use pay402::evm::{PrivateKeySigner, U256, signer_from_hex};
use pay402::mpp::{
    ChannelStore, EmbeddedSa, EventStream, EvmMethod, InMemoryChannelStore, Mpp, ParsedChallenge, PaySpec,
    RedisChannelStore, SessionClient, SessionIntent, SseEvent, parse_www_authenticate,
};
use pay402::web::RequestContext;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[path = "support/redis.rs"]
mod redis_server;
use redis_server::Redis;

// Anvil's accounts 0 (the buyer) and 1 (the payee).
const PAYER_KEY: &str = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";
const PAYER: &str = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266";
const PAYEE_KEY: &str = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d";
const PAYEE: &str = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8";
const USDT0: &str = "0x779ded0c9e1022225f8e0630b35a9b54be713736";
/// `0.000001` per event: one base unit.
const PRICE: u128 = 1;

fn key(k: &str) -> PrivateKeySigner {
    signer_from_hex(k).expect("key")
}

fn ctx(authorization: Option<&str>) -> RequestContext {
    let mut headers = http::HeaderMap::new();
    if let Some(a) = authorization {
        headers.insert(http::header::AUTHORIZATION, a.parse().expect("header"));
    }
    RequestContext::new(http::Method::GET, "http://bench.localhost/tokens".into(), headers)
}

struct Channel {
    mpp: Mpp,
    spec: PaySpec,
    client: SessionClient,
    store: Arc<dyn ChannelStore>,
    channel: String,
}

/// A per-event route over `store` with one open channel holding a large deposit.
async fn channel(store: Arc<dyn ChannelStore>) -> Channel {
    let sa = EmbeddedSa::new().with_registry(NetworkRegistry::x_layer());
    sa.fund(USDT0, PAYER, U256::from(10u64).pow(U256::from(18u8))).expect("fund");
    let intent = SessionIntent::new(sa, PAYEE).signer(Arc::new(key(PAYEE_KEY))).store(Arc::clone(&store));
    let mpp = Mpp::new(
        EvmMethod::x_layer(PAYEE).with_session(intent),
        "bench.localhost",
        "bench-secret-at-least-32-bytes-long-hmac-key",
    )
    .expect("coordinator");
    let spec = PaySpec::session("0.000001").per_event();
    let unpaid = mpp.process(&ctx(None), &spec).await.expect_err("402");
    let www = unpaid.headers.get("www-authenticate").expect("challenge").to_str().expect("text").to_owned();
    let challenge = parse_www_authenticate(&[&www]).expect("parse").remove(0);
    let client = SessionClient::new(key(PAYER_KEY)).with_registry(NetworkRegistry::x_layer());
    let (channel, open) = client.open_header(&challenge, U256::from(10u64).pow(U256::from(15u8))).expect("open");
    let answer = mpp.process(&ctx(Some(&open)), &spec).await.expect_err("management answer");
    assert_eq!(answer.status, 200, "{}", String::from_utf8_lossy(&answer.body));
    Channel { mpp, spec, client, store, channel }
}

fn events(n: u64) -> impl futures::Stream<Item = SseEvent> + Send + 'static {
    futures::stream::iter((0..n).map(|i| SseEvent::data(format!("{{\"token\":\"t{i}\"}}"))))
}

/// Reads an axum response body to the end; returns its length.
async fn drain(resp: axum::response::Response) -> usize {
    axum::body::to_bytes(resp.into_body(), usize::MAX).await.expect("body").len()
}

impl Channel {
    /// One metered stream of `n` events under a fresh challenge; checks the books after it.
    async fn metered(&self, n: u64) -> Duration {
        let unpaid = self.mpp.process(&ctx(None), &self.spec).await.expect_err("402");
        let www = unpaid.headers.get("www-authenticate").expect("challenge").to_str().expect("text").to_owned();
        let challenge: ParsedChallenge = parse_www_authenticate(&[&www]).expect("parse").remove(0);
        let before = self.store.get(&self.channel).await.expect("store").expect("channel").value;
        let cumulative = before.highest_voucher_amount + u128::from(n) * PRICE;
        let voucher = self.client.voucher_header(&challenge, &self.channel, U256::from(cumulative)).expect("voucher");
        let start = Instant::now();
        let paid = self.mpp.process(&ctx(Some(&voucher)), &self.spec).await.expect("stream admitted");
        let stream = paid.paid_stream().expect("a per-event payment");
        let len = drain(stream.sse(events(n)).into_response()).await;
        let took = start.elapsed();
        assert!(len > 0);
        let after = self.store.get(&self.channel).await.expect("store").expect("channel").value;
        assert_eq!(after.spent - before.spent, u128::from(n) * PRICE, "spent = events × price");
        assert_eq!(after.reserved, 0, "nothing left reserved");
        took
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let smoke = args.iter().any(|a| a == "--smoke");
    let n: u64 = arg("--events").and_then(|v| v.parse().ok()).unwrap_or(if smoke { 200 } else { 20_000 });
    let runs: usize = arg("--runs").and_then(|v| v.parse().ok()).unwrap_or(if smoke { 1 } else { 5 });
    let out = arg("--out");
    // One core: everything runs on this thread.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let redis = Redis::start().expect("redis-server");
    let rows = rt.block_on(async {
        let memory = channel(Arc::new(InMemoryChannelStore::new())).await;
        let redis_store = RedisChannelStore::connect(&redis.url(), format!("bench-stream-{}:", std::process::id()))
            .await
            .expect("redis store");
        let on_redis = channel(Arc::new(redis_store)).await;
        let (mut peer, mut plain, mut mem, mut red) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for _ in 0..runs {
            let start = Instant::now();
            let sse = Sse::new(events(n).enumerate().map(|(i, e)| {
                Ok::<_, std::convert::Infallible>(Event::default().id((i + 1).to_string()).data(e.text()))
            }));
            drain(sse.into_response()).await;
            peer.push(start.elapsed());
            let start = Instant::now();
            drain(EventStream::unmetered(events(n)).into_response()).await;
            plain.push(start.elapsed());
            mem.push(memory.metered(n).await);
            red.push(on_redis.metered(n).await);
        }
        vec![
            ("axum `Sse` (peer, unmetered)", median(peer)),
            ("pay402 `EventStream::unmetered`", median(plain)),
            ("pay402 metered, in-memory store", median(mem)),
            ("pay402 metered, Redis store", median(red)),
        ]
    });
    let base = rows[1].1;
    let mut table = format!(
        "| stream ({n} events, median of {runs}) | events/s (one core) | time per event | metering overhead per event |\n|---|---:|---:|---:|\n"
    );
    for (name, took) in &rows {
        let per_event = took.as_secs_f64() / n as f64;
        let overhead = (took.as_secs_f64() - base.as_secs_f64()) / n as f64;
        let overhead = if name.contains("metered,") { format!("{:.2} µs", overhead * 1e6) } else { "—".into() };
        table.push_str(&format!(
            "| {name} | {:.0} | {:.2} µs | {overhead} |\n",
            n as f64 / took.as_secs_f64(),
            per_event * 1e6
        ));
    }
    print!("{table}");
    if let Some(path) = out {
        std::fs::write(&path, &table).expect("write report");
    }
}
