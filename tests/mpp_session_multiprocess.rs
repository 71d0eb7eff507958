//! Three seller **processes** share one MPP session channel through one store: a Redis store
//! (`RedisChannelStore` + `RedisReplayStore`, on a `redis-server` this test starts on a free
//! port) or a `FileStore` directory. Each worker is this test binary re-executed (the env var
//! [`WORKER_ROLE`] selects the role) running an axum server with `MppLayer` and a
//! `SessionIntent`; it prints its port.
//!
//! The Settlement Agent cannot be shared across processes, so the channel is "opened" by
//! writing its state straight into the shared store; vouchers need no SA call. The parent then
//! fires 200 concurrent requests at the three workers on that one channel — fresh increasing
//! vouchers, vouchers above the deposit and replays (the same header twice) — and checks the
//! books: `spent` = price × the number of 2xx answers, never more 2xx than the highest voucher
//! covers, nothing left reserved. A second run lets every other handler fail (HTTP 500): those
//! requests are not charged.
//!
//! Without `redis-server` (Debian package, `scripts/install-test-deps.sh`) the Redis test fails;
//! it never skips.

mod support;

use pay402::chain::NetworkRegistry;
use pay402::evm::{PrivateKeySigner, U256, signer_from_hex};
use pay402::mpp::{ChannelState, ChannelStore, FileStore, RedisChannelStore};
use pay402::mpp::{EmbeddedSa, EvmMethod, Mpp, ParsedChallenge, PaySpec, SessionClient, SessionIntent};
use pay402::replay::{InMemoryReplayStore, RedisReplayStore, ReplayStore};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
// The buyer (PAYER_KEY) is also the channel's authorized signer.
use support::accounts::{ESCROW, PAYEE, PAYER_KEY, USDT0};
use support::redis::RedisServer;
use support::worker::Worker;

/// Env vars of the worker role.
const WORKER_ROLE: &str = "PAY402_SESSION_WORKER";
const WORKER_STORE: &str = "PAY402_SESSION_WORKER_STORE";
const WORKER_PREFIX: &str = "PAY402_SESSION_WORKER_PREFIX";
/// A request carrying this header makes the worker's handler fail (HTTP 500).
const FAIL_HEADER: &str = "x-test-fail";

const MPP_SECRET: &str = "multiprocess-mpp-secret-at-least-32-bytes-long-key";
const REALM: &str = "api.example.com";
const DEPOSIT: u128 = 150_000;
const COST: u128 = 1000;
const WORKERS: usize = 3;
const REQUESTS: usize = 200;

fn unique() -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_nanos();
    format!("{}-{nanos:x}", std::process::id())
}

// ---------------------------------------------------------------------------------------------
// The worker
// ---------------------------------------------------------------------------------------------

async fn worker_stores(role: &str) -> (Arc<dyn ChannelStore>, Arc<dyn ReplayStore>) {
    let location = std::env::var(WORKER_STORE).expect("store location");
    match role {
        "redis" => {
            let prefix = std::env::var(WORKER_PREFIX).expect("prefix");
            let store = RedisChannelStore::connect(&location, format!("{prefix}channel:")).await.expect("redis");
            let replay = RedisReplayStore::connect(&location, format!("{prefix}replay:")).await.expect("redis");
            (Arc::new(store), Arc::new(replay))
        }
        // No shared replay store on files: each worker keeps its own voucher replay keys.
        "file" => (Arc::new(FileStore::new(location).expect("file store")), Arc::new(InMemoryReplayStore::new())),
        other => panic!("unknown worker role {other}"),
    }
}

/// The worker role: nothing in a normal test run; in a child started by [`Worker::spawn`] it
/// serves `GET /metered` (a session route, 0.001 USD₮0 per request) until it is killed.
#[test]
fn session_worker() {
    let Ok(role) = std::env::var(WORKER_ROLE) else { return };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    rt.block_on(async move {
        let (store, replay) = worker_stores(&role).await;
        // Never called: vouchers need no Settlement Agent.
        let sa = EmbeddedSa::new().with_registry(NetworkRegistry::x_layer());
        let intent = SessionIntent::new(sa, PAYEE).store(store).replay_store(replay);
        let mpp = Mpp::new(EvmMethod::x_layer(PAYEE).with_session(intent), REALM, MPP_SECRET)
            .expect("mpp")
            .route("GET /metered", PaySpec { amount: "0.001".into(), intent: "session".into(), ..PaySpec::default() })
            .expect("route");
        let handler = |headers: axum::http::HeaderMap| async move {
            if headers.contains_key(FAIL_HEADER) {
                (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "handler failed")
            } else {
                (axum::http::StatusCode::OK, "metered")
            }
        };
        let app =
            axum::Router::new().route("/metered", axum::routing::get(handler)).layer(pay402::axum::MppLayer::new(mpp));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        support::worker::announce_port(port);
        axum::serve(listener, app).await.expect("serve");
    });
}

// ---------------------------------------------------------------------------------------------
// The parent
// ---------------------------------------------------------------------------------------------

fn buyer_key() -> PrivateKeySigner {
    signer_from_hex(PAYER_KEY).expect("key")
}

/// Writes an open channel straight into the shared store (as `open` would after the SA).
async fn open_channel(store: &dyn ChannelStore, n: u8) -> String {
    let channel = format!("0x{}", format!("{n:02x}").repeat(32));
    let buyer = buyer_key().address().to_string().to_lowercase();
    let state = ChannelState {
        token: USDT0.to_owned(),
        authorized_signer: buyer.clone(),
        deposit: DEPOSIT,
        ..ChannelState::new(&channel, 196, ESCROW, buyer, PAYEE)
    };
    assert!(store.put_if_absent(&channel, &state).await.expect("store"), "fresh channel");
    channel
}

/// One request of the storm.
#[derive(Clone)]
struct Planned {
    worker: usize,
    authorization: String,
    /// The voucher's (challenge id, amount), to spot replays.
    key: (String, u128),
    fail: bool,
}

/// What a worker answered.
struct Answer {
    planned: Planned,
    status: u16,
    problem: String,
}

async fn challenge(http: &reqwest::Client, base: &str) -> ParsedChallenge {
    let resp = http.get(format!("{base}/metered")).send().await.expect("request");
    assert_eq!(resp.status(), 402);
    let www = resp.headers()["www-authenticate"].to_str().expect("ascii").to_owned();
    pay402::mpp::parse_www_authenticate(&[&www]).expect("challenge").remove(0)
}

/// The 200 requests, in sending order: 145 fresh increasing vouchers, 5 above the deposit
/// spread among them, and 50 replays (the same header, same challenge id, often sent to another
/// worker) shortly after their originals. With `failing`, every voucher of an odd amount (in
/// thousands) makes its handler fail.
fn plan(client: &SessionClient, challenges: &[ParsedChallenge], channel: &str, failing: bool) -> Vec<Planned> {
    let voucher = |k: u128| {
        let w = usize::try_from(k).expect("small") % WORKERS;
        let c = &challenges[w];
        let authorization = client.voucher_header(c, channel, U256::from(k * COST)).expect("voucher");
        Planned { worker: w, authorization, key: (c.id.clone(), k * COST), fail: failing && k % 2 == 1 }
    };
    // (sending position, request)
    let mut keyed: Vec<(u128, Planned)> = (1..=145u128).map(|k| (k * 10, voucher(k))).collect();
    keyed.extend((151..=155u128).map(|k| ((k - 150) * 290 + 3, voucher(k))));
    for j in 0..50u128 {
        let k = 1 + j * 145 / 50;
        let mut replay = voucher(k);
        replay.worker = (replay.worker + usize::try_from(j).expect("small")) % WORKERS;
        keyed.push((k * 10 + 5 + (j % 3) * 10, replay));
    }
    keyed.sort_by_key(|(at, _)| *at);
    assert_eq!(keyed.len(), REQUESTS);
    keyed.into_iter().map(|(_, p)| p).collect()
}

async fn storm(http: &reqwest::Client, workers: &[Worker], planned: Vec<Planned>) -> Vec<Answer> {
    let tasks: Vec<_> = planned
        .into_iter()
        .enumerate()
        .map(|(i, p)| {
            let http = http.clone();
            let url = format!("{}/metered", workers[p.worker].base);
            // Staggered by 2 ms: a mostly increasing stream, still overlapping heavily.
            let delay = Duration::from_millis(2 * u64::try_from(i).expect("small"));
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let mut req = http.get(url).header("authorization", &p.authorization);
                if p.fail {
                    req = req.header(FAIL_HEADER, "1");
                }
                let resp = req.send().await.expect("request");
                let status = resp.status().as_u16();
                let text = resp.text().await.expect("body");
                let problem = serde_json::from_str::<Value>(&text)
                    .ok()
                    .and_then(|v| v["type"].as_str().map(str::to_owned))
                    .unwrap_or_default();
                Answer { planned: p, status, problem }
            })
        })
        .collect();
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(t.await.expect("task"));
    }
    answers
}

/// One run on a fresh channel, then the channel is drained to the last unit.
async fn run(
    http: &reqwest::Client,
    workers: &[Worker],
    store: &dyn ChannelStore,
    n: u8,
    failing: bool,
    shared_replay: bool,
) {
    let channel = open_channel(store, n).await;
    let client = SessionClient::new(buyer_key()).with_registry(NetworkRegistry::x_layer());
    // Session challenges are not single-use: one per worker, reused by every voucher.
    let mut challenges = Vec::new();
    for w in workers {
        challenges.push(challenge(http, &w.base).await);
    }
    let answers = storm(http, workers, plan(&client, &challenges, &channel, failing)).await;

    let mut by_outcome: BTreeMap<(u16, String), usize> = BTreeMap::new();
    let mut served_keys: HashMap<(String, u128), usize> = HashMap::new();
    let mut served = 0u128;
    let mut failed = 0usize;
    for a in &answers {
        *by_outcome.entry((a.status, a.problem.clone())).or_default() += 1;
        let amount = a.planned.key.1;
        match a.status {
            200..=299 => {
                assert!(!a.planned.fail);
                served += 1;
                *served_keys.entry(a.planned.key.clone()).or_default() += 1;
            }
            500 => {
                assert!(a.planned.fail, "only failing handlers answer 500");
                failed += 1;
            }
            402 => {
                let slug = a.problem.rsplit("/problems/").next().unwrap_or_default();
                assert!(
                    [
                        "session/delta-too-small",
                        "session/insufficient-balance",
                        "session/amount-exceeds-deposit",
                        "invalid-payload"
                    ]
                    .contains(&slug),
                    "unexpected refusal {}",
                    a.problem
                );
                if amount > DEPOSIT {
                    assert_eq!(slug, "session/amount-exceeds-deposit");
                }
            }
            other => panic!("unexpected status {other} ({})", a.problem),
        }
        if amount > DEPOSIT {
            assert_eq!(a.status, 402, "a voucher above the deposit is never served");
        }
    }
    eprintln!("run {n} (failing handlers: {failing}): {by_outcome:?}");

    let s = store.get(&channel).await.expect("store").expect("channel").value;
    assert_eq!(s.spent, COST * served, "spent = price × the number of 2xx answers");
    assert_eq!(u128::from(s.units), served);
    assert_eq!(s.reserved, 0, "every reservation committed or released");
    assert!(served > 0);
    assert!(served <= s.highest_voucher_amount / COST, "no 2xx without a voucher covering it");
    assert!(s.highest_voucher_amount <= DEPOSIT);
    if failing {
        assert!(failed > 0, "some handlers failed");
    }
    if shared_replay {
        // One Redis replay store: each (challenge, amount) is served at most once.
        assert!(served_keys.values().all(|&n| n == 1), "a voucher served twice under one challenge");
    }

    // Funds run out: the highest voucher under new challenges drains what is left, then every
    // further request is refused for insufficient balance.
    let highest = s.highest_voucher_amount;
    let mut extra = 0u128;
    loop {
        let w = usize::try_from(extra).expect("small") % WORKERS;
        let c = challenge(http, &workers[w].base).await;
        let header = client.voucher_header(&c, &channel, U256::from(highest)).expect("voucher");
        let resp = http.get(format!("{}/metered", workers[w].base)).header("authorization", header).send().await;
        let resp = resp.expect("request");
        let status = resp.status().as_u16();
        if status == 200 {
            extra += 1;
            assert!(extra <= highest / COST, "served beyond the highest voucher");
            continue;
        }
        assert_eq!(status, 402);
        let body: Value = serde_json::from_str(&resp.text().await.expect("body")).expect("problem");
        assert_eq!(body["type"], "https://paymentauth.org/problems/session/insufficient-balance");
        break;
    }
    let s = store.get(&channel).await.expect("store").expect("channel").value;
    assert_eq!((s.spent, s.reserved), (highest, 0), "the channel is used up exactly");
    assert_eq!(s.spent, COST * (served + extra));
}

async fn scenario(role: &str, location: &str, prefix: &str, store: Arc<dyn ChannelStore>) {
    let workers: Vec<Worker> = (0..WORKERS)
        .map(|_| {
            Worker::spawn("session_worker", &[(WORKER_ROLE, role), (WORKER_STORE, location), (WORKER_PREFIX, prefix)])
        })
        .collect();
    let http = reqwest::Client::new();
    let shared_replay = role == "redis";
    run(&http, &workers, store.as_ref(), 0xa1, false, shared_replay).await;
    run(&http, &workers, store.as_ref(), 0xa2, true, shared_replay).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_share_a_channel_on_redis() {
    let server = RedisServer::start();
    let url = server.url();
    let prefix = format!("pay402-mp-{}:", unique());
    let store = RedisChannelStore::connect(&url, format!("{prefix}channel:")).await.expect("redis");
    scenario("redis", &url, &prefix, Arc::new(store)).await;
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_share_a_channel_on_files() {
    let dir: PathBuf = std::env::temp_dir().join(format!("pay402-mp-{}", unique()));
    let store = FileStore::new(&dir).expect("file store");
    let location = dir.to_str().expect("utf-8 path").to_owned();
    scenario("file", &location, "", Arc::new(store)).await;
    let _ = std::fs::remove_dir_all(&dir);
}
