//! Store faults (issue 9 §4): Redis killed in the middle of a session and restarted, and a
//! FileStore whose file system is full.
//!
//! * Redis: while it is down every paid request fails closed (nothing served, the in-flight
//!   reservation's commit fails and is reported through `on_settlement_unknown`); after it comes
//!   back (same port, its append-only file reloaded) the books show no double deduction:
//!   `spent` is exactly the price of the requests that were served, a retried voucher is not
//!   charged twice, and the session goes on.
//! * FileStore on a 64 KiB tmpfs mounted by the test: once the file system is full, writes fail
//!   with a typed [`StoreError::Io`], the previous state is intact (byte for byte), no temporary
//!   file is left behind, and writes succeed again once space is freed. Mounting needs root (or
//!   password-less sudo); without it the test fails and says so.

mod support;

use pay402::chain::NetworkRegistry;
use pay402::evm::{U256, signer_from_hex};
use pay402::mpp::RedisChannelStore;
use pay402::mpp::{
    CasOutcome, ChannelState, ChannelStore, EmbeddedSa, EvmMethod, FileStore, Mpp, PaySpec, SessionClient,
    SessionIntent, StoreError, parse_www_authenticate,
};
use pay402::web::{PaymentHttpResponse, RequestContext};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::accounts::{PAYEE, PAYEE_KEY, PAYER, PAYER_KEY, USDT0};

const COST: u128 = 1000;

// ---------------------------------------------------------------------------------------------
// Redis killed mid-session
// ---------------------------------------------------------------------------------------------

/// A `redis-server` with an append-only file in `dir`, restartable on the same port.
struct Redis {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
}

impl Redis {
    fn start(dir: &Path) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
        let mut r = Self { child: None, port, dir: dir.to_owned() };
        r.restart();
        r
    }

    fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", ""])
            .args(["--appendonly", "yes", "--appendfsync", "always"])
            .arg("--dir")
            .arg(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("redis-server is not available ({e}): run `bash scripts/install-test-deps.sh`; this test never skips")
            });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.ping() {
            assert!(Instant::now() < deadline, "redis-server on port {} did not answer PING", self.port);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn ping(&self) -> bool {
        use std::io::{Read, Write};
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) else { return false };
        let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
        let mut buf = [0u8; 7];
        s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

fn tmpdir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("pay402-store-faults-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("tmp dir");
    dir
}

fn ctx(authorization: Option<&str>) -> RequestContext {
    let mut headers = http::HeaderMap::new();
    if let Some(a) = authorization {
        headers.insert(http::header::AUTHORIZATION, a.parse().expect("header value"));
    }
    RequestContext::new(http::Method::GET, "http://api.example.com/metered".into(), headers)
}

fn status_of(resp: &PaymentHttpResponse) -> u16 {
    resp.status.as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_mid_session_fails_closed_and_never_double_deducts() {
    let dir = tmpdir("redis");
    let mut redis = Redis::start(&dir);
    let store = RedisChannelStore::connect(&redis.url(), "faults:").await.expect("connect");
    let replay = store.replay_store("faults:replay:");
    let sa = EmbeddedSa::new().with_registry(NetworkRegistry::x_layer());
    sa.fund(USDT0, PAYER, U256::from(10_000_000u64)).expect("fund");
    let intent = SessionIntent::new(sa, PAYEE)
        .signer(Arc::new(signer_from_hex(PAYEE_KEY).expect("payee key")))
        .store(Arc::new(store.clone()))
        .replay_store(Arc::new(replay.clone()));
    let unknown = Arc::new(Mutex::new(Vec::new()));
    let u = Arc::clone(&unknown);
    let mpp = Mpp::new(
        EvmMethod::x_layer(PAYEE).with_session(intent),
        "api.example.com",
        "store-faults-at-least-32-bytes-long-hmac-key",
    )
    .expect("mpp")
    .with_store(Arc::new(replay))
    .on_settlement_unknown(move |credential, error| {
        u.lock().expect("unknown").push((credential.payload["cumulativeAmount"].clone(), error.to_string()));
    });
    let spec = PaySpec { amount: "0.001".into(), intent: "session".into(), ..PaySpec::default() };
    let client =
        SessionClient::new(signer_from_hex(PAYER_KEY).expect("payer key")).with_registry(NetworkRegistry::x_layer());
    let unpaid = mpp.process(&ctx(None), &spec).await.expect_err("challenge");
    let www = unpaid.headers["www-authenticate"].to_str().expect("ascii").to_owned();
    let c = parse_www_authenticate(&[&www]).expect("parses").remove(0);

    let served = AtomicUsize::new(0);
    // Serves one request: process, and commit as a handler answering 200 would.
    let serve = |header: String| {
        let (mpp, spec, served) = (&mpp, &spec, &served);
        async move {
            let paid = mpp.process(&ctx(Some(&header)), spec).await?;
            paid.finish(http::StatusCode::OK).await?;
            served.fetch_add(1, Ordering::SeqCst);
            Ok::<(), PaymentHttpResponse>(())
        }
    };

    let (channel, open) = client.open_header(&c, U256::from(5_000_000u64)).expect("open");
    let resp = mpp.process(&ctx(Some(&open)), &spec).await.expect_err("management answer");
    assert_eq!(status_of(&resp), 200, "{}", String::from_utf8_lossy(&resp.body));
    for _ in 0..2 {
        serve(client.next_voucher(&c, &channel, U256::from(COST)).expect("voucher")).await.expect("served");
    }

    // A request is in flight (its voucher reserved in Redis) when Redis dies: the commit fails,
    // the handler's response is replaced by an error, and the seller hears about it.
    let in_flight = client.next_voucher(&c, &channel, U256::from(COST)).expect("voucher");
    let paid = mpp.process(&ctx(Some(&in_flight)), &spec).await.expect("reserved while Redis is up");
    redis.kill();
    let err = paid.finish(http::StatusCode::OK).await.expect_err("the commit cannot succeed while Redis is down");
    assert!(err.status.is_server_error(), "commit failure status {}", err.status);
    assert_eq!(unknown.lock().expect("unknown").len(), 1, "on_settlement_unknown for the failed commit");

    // While Redis is down every paid request fails closed.
    let during = client.next_voucher(&c, &channel, U256::from(COST)).expect("voucher");
    for _ in 0..3 {
        let err = serve(during.clone()).await.expect_err("fails closed while Redis is down");
        assert!(err.status.is_server_error(), "status {} while down", err.status);
    }
    assert_eq!(served.load(Ordering::SeqCst), 2);

    // Redis comes back with its data.
    redis.restart();
    let deadline = Instant::now() + Duration::from_secs(20);
    let state = loop {
        match store.get(&channel).await {
            Ok(Some(s)) => break s.value,
            Ok(None) => panic!("the channel was lost across the restart"),
            Err(e) => {
                assert!(Instant::now() < deadline, "the store did not reconnect: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    assert_eq!(state.spent, 2 * COST, "only the two served requests are charged: {state:?}");

    // The retried in-flight voucher is not charged a second time …
    let retry = serve(in_flight.clone()).await;
    let retry = retry.expect_err("the in-flight voucher is not served again");
    assert_eq!(status_of(&retry), 402, "{}", String::from_utf8_lossy(&retry.body));
    assert!(String::from_utf8_lossy(&retry.body).contains("voucher replayed"));
    // … and the voucher signed during the outage pays for exactly one request.
    serve(during.clone()).await.expect("served after the restart");
    let again = serve(during).await.expect_err("a voucher pays once");
    assert_eq!(status_of(&again), 402);
    serve(client.next_voucher(&c, &channel, U256::from(COST)).expect("voucher")).await.expect("session goes on");

    let state = store.get(&channel).await.expect("store").expect("channel").value;
    let served = u128::try_from(served.load(Ordering::SeqCst)).expect("count");
    assert_eq!(served, 4);
    assert_eq!(state.spent, served * COST, "spent {} for {served} served requests", state.spent);
    assert!(state.spent <= state.highest_voucher_amount, "{state:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------------------------------------
// FileStore on a full file system
// ---------------------------------------------------------------------------------------------

/// A 64 KiB tmpfs mounted on a fresh directory; unmounted on drop.
struct SmallFs {
    dir: PathBuf,
}

/// `program` run as root: directly when the test already is root, else through `sudo -n`
/// (scripts/install-test-deps.sh needs the same).
fn as_root(program: &str) -> Command {
    let uid = Command::new("id").arg("-u").output().map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    if uid.is_ok_and(|u| u == "0") {
        Command::new(program)
    } else {
        let mut sudo = Command::new("sudo");
        sudo.args(["-n", program]);
        sudo
    }
}

impl SmallFs {
    fn mount() -> Self {
        let dir = tmpdir("fullfs");
        let out = as_root("mount")
            .args(["-t", "tmpfs", "-o", "size=64k,nr_inodes=64", "pay402-fullfs"])
            .arg(&dir)
            .output()
            .unwrap_or_else(|e| panic!("cannot run mount: {e}"));
        assert!(
            out.status.success(),
            "mounting a 64 KiB tmpfs on {} failed ({}): this test needs root or password-less sudo: {}",
            dir.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        Self { dir }
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = as_root("umount").arg(&self.dir).status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Fills the file system with `filler` until a write fails with "no space".
fn fill(filler: &Path) {
    use std::io::Write;
    let mut f = std::fs::File::create(filler).expect("filler");
    let chunk = [0xa5u8; 1024];
    loop {
        match f.write_all(&chunk).and_then(|()| f.sync_all()) {
            Ok(()) => {}
            Err(e) => {
                assert_eq!(e.raw_os_error(), Some(28), "expected ENOSPC, got {e}");
                return;
            }
        }
    }
}

fn tmp_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .expect("read dir")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.contains(".tmp."))
        .collect()
}

#[tokio::test]
async fn filestore_on_a_full_file_system_fails_typed_and_keeps_the_previous_state() {
    let fs = SmallFs::mount();
    let store = FileStore::new(fs.dir.join("channels")).expect("store");
    let channel = format!("0x{}", "ab".repeat(32));
    let mut state = ChannelState::new(&channel, 196, "0x5E550002e64FaF79B41D89fE8439eEb1be66CE3b", PAYER, PAYEE);
    state.deposit = 5_000_000;
    state.highest_voucher_amount = 2000;
    state.spent = 2000;
    state.units = 2;
    assert!(store.put_if_absent(&channel, &state).await.expect("first write"));
    let file = store.path_for(&channel).expect("path");
    let before_bytes = std::fs::read(&file).expect("state file");
    let before = store.get(&channel).await.expect("get").expect("state");

    fill(&fs.dir.join("filler"));

    let mut next = before.value.clone();
    next.highest_voucher_amount = 3000;
    next.spent = 3000;
    next.units = 3;
    // Make the new file need more room than the old one, so it cannot reuse freed blocks.
    next.highest_voucher_signature = format!("0x{}", "07".repeat(65));
    let err = store.compare_and_swap(&channel, before.version, &next).await.expect_err("no space left");
    assert!(matches!(err, StoreError::Io { .. }), "typed I/O error, got {err:?}");
    assert!(err.to_string().contains("write state file"), "{err}");
    let other = format!("0x{}", "cd".repeat(32));
    let err = store.put_if_absent(&other, &state).await.expect_err("no space left");
    assert!(matches!(err, StoreError::Io { .. }), "typed I/O error, got {err:?}");

    // The previous state is intact, byte for byte, and no temporary file is left behind.
    assert_eq!(std::fs::read(&file).expect("state file"), before_bytes);
    assert_eq!(store.get(&channel).await.expect("get").expect("state"), before);
    assert!(store.get(&other).await.expect("get").is_none());
    assert!(tmp_files(store.dir()).is_empty(), "temporary files left: {:?}", tmp_files(store.dir()));

    // Space comes back: the same compare-and-swap now succeeds.
    std::fs::remove_file(fs.dir.join("filler")).expect("free space");
    match store.compare_and_swap(&channel, before.version, &next).await.expect("write after freeing space") {
        CasOutcome::Swapped(_) => {}
        other => panic!("expected a swap, got {other:?}"),
    }
    assert_eq!(store.get(&channel).await.expect("get").expect("state").value, next);
}
