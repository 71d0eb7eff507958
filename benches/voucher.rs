//! Criterion micro-benchmarks of the MPP session voucher path (run with `scripts/bench.sh`):
//!
//! * `voucher_verify/*` — one voucher signature check per iteration (hex parsing, EIP-712
//!   digest, signer check), cycling through 64 vouchers of one payer. Throughput is in vouchers
//!   per second on one core.
//!   * `alloy_reference` — alloy's recovery (k256 with its post-verification) and comparison;
//!   * `first_voucher/<backend>` — a signer's first voucher: recovery of its key (and storing it)
//!     through `verify_voucher_signature_cached` with an emptied key cache;
//!   * `cached_key/<backend>` — the steady state of a session: the payer's key is cached and the
//!     voucher is checked against it (what `verify_voucher_signature` does from the second
//!     voucher on);
//!
//!   for pay402's pure-Rust `k256` backend and the libsecp256k1 backend (feature `secp256k1`).
//! * `voucher_session/*` — one whole voucher request through `Mpp::process` (credential
//!   decoding, HMAC challenge check, replay guard, signature check, channel-store
//!   compare-and-swap reserving the price) and its commit after the handler, with the in-memory,
//!   file and Redis channel stores. The client's signing happens in untimed setup.
//!
//! `PAY402_BENCH_SMOKE=1` shortens every measurement (CI).

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use pay402::chain::NetworkRegistry;
use pay402::evm::recover::Backend;
use pay402::evm::{B256, PrivateKeySigner, U256, signer_from_hex};
use pay402::evm::{ChannelDomain, SignerKeyCache, verify_voucher_signature_cached};
use pay402::mpp::RedisChannelStore;
use pay402::mpp::{
    ChannelStore, EmbeddedSa, EvmMethod, FileStore, InMemoryChannelStore, Mpp, ParsedChallenge, PaySpec, SessionClient,
    SessionIntent, parse_www_authenticate,
};
use pay402::web::RequestContext;
use std::sync::Arc;
use std::time::Duration;

const PAYER_KEY: &str = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";
const PAYER: &str = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266";
const PAYEE_KEY: &str = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d";
const PAYEE: &str = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8";
const USDT0: &str = "0x779ded0c9e1022225f8e0630b35a9b54be713736";

fn smoke() -> bool {
    std::env::var_os("PAY402_BENCH_SMOKE").is_some()
}

fn config() -> Criterion {
    let c = Criterion::default();
    if smoke() {
        c.warm_up_time(Duration::from_millis(50)).measurement_time(Duration::from_millis(100)).sample_size(10)
    } else {
        c.measurement_time(Duration::from_secs(5))
    }
}

fn key(k: &str) -> PrivateKeySigner {
    signer_from_hex(k).expect("test key")
}

fn verify(c: &mut Criterion) {
    let signer = key(PAYER_KEY);
    let domain = ChannelDomain::default();
    let channel_id = B256::repeat_byte(0xab);
    // A few distinct vouchers, cycled.
    let vouchers: Vec<(u128, String)> = (1..=64u128)
        .map(|i| (i * 1000, pay402::evm::sign_voucher(&signer, &domain, channel_id, i * 1000).expect("sign")))
        .collect();
    let mut group = c.benchmark_group("voucher_verify");
    group.throughput(Throughput::Elements(1));
    let mut i = 0usize;
    group.bench_function("alloy_reference", |b| {
        b.iter(|| {
            i = (i + 1) % vouchers.len();
            let (amount, sig) = &vouchers[i];
            let parsed = pay402::evm::parse_channel_signature(sig).expect("valid");
            let digest = pay402::evm::voucher_digest(&domain, channel_id, *amount);
            assert_eq!(parsed.recover_address_from_prehash(&digest).ok(), Some(signer.address()));
        })
    });
    let payer = signer.address();
    for &backend in Backend::ALL {
        let keys = SignerKeyCache::default();
        group.bench_function(format!("first_voucher/{backend}"), |b| {
            b.iter(|| {
                i = (i + 1) % vouchers.len();
                let (amount, sig) = &vouchers[i];
                keys.clear();
                verify_voucher_signature_cached(&keys, backend, &domain, channel_id, *amount, sig, payer)
                    .expect("valid voucher");
            })
        });
        let (amount, sig) = &vouchers[0];
        verify_voucher_signature_cached(&keys, backend, &domain, channel_id, *amount, sig, payer).expect("valid");
        assert_eq!(keys.len(), 1, "the first voucher caches the payer's key");
        group.bench_function(format!("cached_key/{backend}"), |b| {
            b.iter(|| {
                i = (i + 1) % vouchers.len();
                let (amount, sig) = &vouchers[i];
                verify_voucher_signature_cached(&keys, backend, &domain, channel_id, *amount, sig, payer)
                    .expect("valid voucher");
            })
        });
    }
    group.finish();
}

#[path = "support/redis.rs"]
mod redis_server;
use redis_server::Redis;

struct Session {
    mpp: Mpp,
    spec: PaySpec,
    client: SessionClient,
    challenge: ParsedChallenge,
    channel: String,
}

fn ctx(authorization: Option<&str>) -> RequestContext {
    let mut headers = http::HeaderMap::new();
    if let Some(a) = authorization {
        headers.insert(http::header::AUTHORIZATION, a.parse().expect("header"));
    }
    RequestContext::new(http::Method::GET, "http://bench.localhost/metered".into(), headers)
}

/// A session route over `store` with one open channel holding a large deposit.
async fn session(store: Arc<dyn ChannelStore>) -> Session {
    let sa = EmbeddedSa::new().with_registry(NetworkRegistry::x_layer());
    sa.fund(USDT0, PAYER, U256::from(10u64).pow(U256::from(18u8))).expect("fund");
    let intent = SessionIntent::new(sa, PAYEE).signer(Arc::new(key(PAYEE_KEY))).store(store);
    let mpp = Mpp::new(
        EvmMethod::x_layer(PAYEE).with_session(intent),
        "bench.localhost",
        "bench-secret-at-least-32-bytes-long-hmac-key",
    )
    .expect("coordinator");
    let spec = PaySpec { amount: "0.000001".into(), intent: "session".into(), ..PaySpec::default() };
    mpp.pay_request(&spec).expect("session request");
    let unpaid = mpp.process(&ctx(None), &spec).await.expect_err("402");
    let www = unpaid.headers.get("www-authenticate").expect("challenge").to_str().expect("text").to_owned();
    let challenge = parse_www_authenticate(&[&www]).expect("parse").remove(0);
    let client = SessionClient::new(key(PAYER_KEY)).with_registry(NetworkRegistry::x_layer());
    let (channel, open) = client.open_header(&challenge, U256::from(10u64).pow(U256::from(15u8))).expect("open");
    let answer = mpp.process(&ctx(Some(&open)), &spec).await.expect_err("management answer");
    assert_eq!(answer.status, 200, "{}", String::from_utf8_lossy(&answer.body));
    Session { mpp, spec, client, challenge, channel }
}

fn session_path(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let redis = Redis::start().expect("redis-server");
    let dir = std::env::temp_dir().join(format!("pay402-bench-store-{}", std::process::id()));
    let stores: Vec<(&str, Arc<dyn ChannelStore>)> = vec![
        ("memory", Arc::new(InMemoryChannelStore::new())),
        ("file", Arc::new(FileStore::new(&dir).expect("file store"))),
        ("redis", Arc::new(rt.block_on(RedisChannelStore::connect(&redis.url(), "bench:")).expect("redis store"))),
    ];
    let mut group = c.benchmark_group("voucher_session");
    group.throughput(Throughput::Elements(1));
    for (name, store) in stores {
        let s = rt.block_on(session(store));
        group.bench_function(name, |b| {
            b.iter_batched(
                || s.client.next_voucher(&s.challenge, &s.channel, U256::from(1u8)).expect("voucher"),
                |header| {
                    rt.block_on(async {
                        let paid = s.mpp.process(&ctx(Some(&header)), &s.spec).await.expect("voucher accepted");
                        paid.finish(http::StatusCode::OK).await.expect("committed");
                    })
                },
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group! {
    name = benches;
    config = config();
    targets = verify, session_path
}
criterion_main!(benches);
