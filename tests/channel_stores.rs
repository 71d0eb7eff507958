//! MPP channel stores: the Python-compatible file bytes (golden vectors), the tolerant reader,
//! one compare-and-swap contract run against the in-memory, file and Redis stores, the file
//! store's path guard, its cross-process atomicity and crash safety (child processes re-exec
//! this test binary), and Redis replay guards, TTLs and fail-closed behaviour.
//!
//! The Redis tests start their own `redis-server` (Debian package, installed by
//! `scripts/install-test-deps.sh`) on a free port; without it they fail, never skip.

mod support;

use pay402::mpp::{
    CasOutcome, ChannelState, ChannelStore, FileStore, InMemoryChannelStore, RedisChannelStore, StoreError,
    UpdateError, UpdateOutcome, Versioned,
};
use pay402::replay::{RedisReplayStore, ReplayStore, ReplayStoreError};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use support::redis::RedisServer;

const VECTORS: &str = "tests/vectors/okx-golden.json";
const SIG_HEX: &str = "0xe283d63277faf3cd0a433fde68f8c48b199f66acb95c0a155dcc37ea753cd4eb46af147ed5ef8b7a5c4349e7bd82e18b48c55e869564fb88f9077d232d6a16ff1c";

/// Env vars of the worker role (the test binary re-executed as a child process).
const WORKER_ROLE: &str = "PAY402_STORE_WORKER";
const WORKER_DIR: &str = "PAY402_STORE_WORKER_DIR";
const WORKER_KEY: &str = "PAY402_STORE_WORKER_KEY";
const WORKER_COUNT: &str = "PAY402_STORE_WORKER_COUNT";

fn vectors() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(VECTORS);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_str(&text).expect("vectors parse")
}

fn nonce() -> u64 {
    let t = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
    let mut h = Sha256::new();
    h.update(t.to_le_bytes());
    h.update(std::process::id().to_le_bytes());
    u64::from_le_bytes(h.finalize()[..8].try_into().unwrap())
}

/// A scratch directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let p = std::env::temp_dir().join(format!("pay402-stores-{name}-{}-{:x}", std::process::id(), nonce()));
        let _ = std::fs::remove_dir_all(&p);
        Self(p)
    }
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The `filestore_channel_state.inputs` as a [`ChannelState`].
fn golden_state() -> ChannelState {
    let v = vectors();
    let i = &v["filestore_channel_state"]["inputs"];
    let s = |k: &str| i[k].as_str().unwrap().to_owned();
    let n = |k: &str| s(k).parse::<u128>().unwrap();
    ChannelState {
        channel_id: s("channel_id"),
        chain_id: i["chain_id"].as_u64().unwrap(),
        escrow_contract: s("escrow_contract"),
        payer: s("payer"),
        payee: s("payee"),
        token: s("token"),
        authorized_signer: s("authorized_signer"),
        deposit: n("deposit"),
        highest_voucher_amount: n("highest_voucher_amount"),
        highest_voucher_signature: s("highest_voucher_signature"),
        min_voucher_delta: n("min_voucher_delta"),
        spent: n("spent"),
        reserved: 0,
        units: i["units"].as_u64().unwrap(),
        finalized: i["finalized"].as_bool().unwrap(),
        close_requested_at: i["close_requested_at"].as_u64().unwrap(),
        created_at: s("created_at"),
        streams: Default::default(),
    }
}

// ---------------------------------------------------------------------------------------------
// Golden bytes and the tolerant reader
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn filestore_writes_python_bytes() {
    let v = vectors();
    let fv = &v["filestore_channel_state"];
    let state = golden_state();
    assert_eq!(state.highest_voucher_signature, SIG_HEX);
    let expected = fv["file_bytes_utf8"].as_str().unwrap().as_bytes();

    assert_eq!(state.to_json_bytes().unwrap(), expected);

    let dir = TempDir::new("golden");
    let store = FileStore::new(dir.path().join("a/b")).unwrap();
    assert!(store.put_if_absent(&state.channel_id, &state).await.unwrap());
    let names: Vec<String> = std::fs::read_dir(store.dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| !n.starts_with('.'))
        .collect();
    assert_eq!(names, vec![fv["file_name"].as_str().unwrap().to_owned()]);
    let path = store.path_for(&state.channel_id).unwrap();
    assert_eq!(path.file_name().unwrap().to_str().unwrap(), fv["file_name"].as_str().unwrap());
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(String::from_utf8(bytes.clone()).unwrap(), fv["file_bytes_utf8"].as_str().unwrap());
    let digest: String = Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(digest, fv["file_bytes_sha256"].as_str().unwrap());

    // A file Python wrote (the vector's bytes) reads back as the same state.
    let py = TempDir::new("golden-py");
    let py_store = FileStore::new(py.path()).unwrap();
    std::fs::write(py_store.dir().join(fv["file_name"].as_str().unwrap()), expected).unwrap();
    let got = py_store.get(&state.channel_id).await.unwrap().expect("present");
    assert_eq!(got.value, state);
    // Rewriting it unchanged keeps the bytes identical.
    let out = py_store.compare_and_swap(&state.channel_id, got.version, &got.value).await.unwrap();
    assert_eq!(out, CasOutcome::Swapped(got.version));
    assert_eq!(std::fs::read(py_store.path_for(&state.channel_id).unwrap()).unwrap(), expected);
}

#[test]
fn channel_after_voucher_x2_round_trips() {
    let v = vectors();
    let after = &v["mpp_sa_requests"]["intent_return_values"]["channel_after_voucher_x2"];
    let bytes = serde_json::to_vec(after).unwrap();
    let state = ChannelState::from_json(&bytes).unwrap();
    let expected = ChannelState { spent: 2000, units: 2, created_at: state.created_at.clone(), ..golden_state() };
    assert_eq!(state, expected);
    assert_ne!(state.created_at, golden_state().created_at);
    assert_eq!(state.available(), 1_000_000 - 2000);
    // Written back: same keys, same order, same value kinds.
    let written = state.to_json_bytes().unwrap();
    assert_eq!(written, pay402::json::python_indented(after).unwrap());
    let reparsed: Value = serde_json::from_slice(&written).unwrap();
    assert_eq!(serde_json::to_string(&reparsed).unwrap(), serde_json::to_string(after).unwrap());
}

#[test]
fn tolerant_reader() {
    let golden = golden_state();
    let b64 = "4oPWMnf6880KQz/eaPjEixmfZqy5XAoVXcw36nU81OtGrxR+1e+LelxDSee9guGLSMVehpVk+4j5B30jLWoW/xw=";

    // snake_case keys, string amounts, 0x-hex signature (upper case), unknown keys.
    let snake = serde_json::json!({
        "channel_id": golden.channel_id,
        "chain_id": 196,
        "escrow_contract": golden.escrow_contract,
        "payer": golden.payer,
        "payee": golden.payee,
        "token": golden.token,
        "authorized_signer": golden.authorized_signer,
        "deposit": "5000000",
        "highest_voucher_amount": "1000000",
        "highest_voucher_signature": format!("0x{}", SIG_HEX[2..].to_uppercase()),
        "min_voucher_delta": "0",
        "spent": "3000",
        "units": 3,
        "finalized": false,
        "close_requested_at": 0,
        "created_at": golden.created_at,
        "somethingNew": {"nested": [1, 2, 3]},
        "settledOnChain": 12,
    });
    let got = ChannelState::from_json(&serde_json::to_vec(&snake).unwrap()).unwrap();
    assert_eq!(got, golden);

    // camelCase with numbers as strings, base64 signature, numeric strings for u64 fields.
    let camel = format!(
        r#"{{"channelId": "{}", "chainId": "196", "escrowContract": "{}", "payer": "{}", "payee": "{}",
            "token": "{}", "authorizedSigner": "{}", "deposit": 5000000, "highestVoucherAmount": "1000000",
            "highestVoucherSignature": "{b64}", "minVoucherDelta": "0", "spent": 3000, "units": "3",
            "finalized": false, "closeRequestedAt": "0", "createdAt": "{}", "extra": null}}"#,
        golden.channel_id,
        golden.escrow_contract,
        golden.payer,
        golden.payee,
        golden.token,
        golden.authorized_signer,
        golden.created_at
    );
    assert_eq!(ChannelState::from_json(camel.as_bytes()).unwrap(), golden);

    // Python dataclass defaults for everything but the identifying fields; unpadded base64.
    let minimal = format!(
        r#"{{"channelId": "0xc", "chainId": 196, "escrowContract": "0xe", "payer": "0xp", "payee": "0xq",
            "highestVoucherSignature": "{}"}}"#,
        b64.trim_end_matches('=')
    );
    let m = ChannelState::from_json(minimal.as_bytes()).unwrap();
    assert_eq!((m.deposit, m.spent, m.units, m.finalized, m.token.as_str()), (0, 0, 0, false, ""));
    assert_eq!(m.highest_voucher_signature, SIG_HEX);

    // Exact beyond u64, as a JSON integer and as a string.
    let big = r#"{"channelId": "c", "chainId": 1, "escrowContract": "e", "payer": "p", "payee": "q",
        "deposit": 340282366920938463463374607431768211455, "spent": "18446744073709551617"}"#;
    let b = ChannelState::from_json(big.as_bytes()).unwrap();
    assert_eq!((b.deposit, b.spent), (u128::MAX, 18_446_744_073_709_551_617));
    assert_eq!(serde_json::from_str::<ChannelState>(big).unwrap(), b);

    // Not a channel state.
    for bad in [&b"[]"[..], b"{}", b"{\"channelId\": 1}", b"not json"] {
        assert!(ChannelState::from_json(bad).is_err());
    }
}

#[tokio::test]
async fn reserved_is_written_only_when_non_zero() {
    let mut s = golden_state();
    assert!(s.reserve(7000));
    assert_eq!(s.available(), 1_000_000 - 3000 - 7000);
    let dir = TempDir::new("reserved");
    let store = FileStore::new(dir.path()).unwrap();
    assert!(store.put_if_absent("r", &s).await.unwrap());
    let text = std::fs::read_to_string(store.path_for("r").unwrap()).unwrap();
    assert!(text.contains("\"spent\": 3000,\n  \"reserved\": 7000,\n  \"units\": 3,"), "{text}");
    assert_eq!(store.get("r").await.unwrap().unwrap().value, s);
    assert!(s.commit(7000));
    assert_eq!((s.spent, s.reserved, s.units), (10_000, 0, 4));
    assert!(!s.to_json_bytes().map(|b| String::from_utf8(b).unwrap()).unwrap().contains("reserved"));
}

// ---------------------------------------------------------------------------------------------
// The compare-and-swap contract, for every store
// ---------------------------------------------------------------------------------------------

fn fresh(channel: &str) -> ChannelState {
    ChannelState {
        deposit: 1_000_000,
        highest_voucher_amount: 1_000_000,
        created_at: "2026-03-30T10:00:00Z".into(),
        ..ChannelState::new(channel, 196, "0xescrow", "0xpayer", "0xpayee")
    }
}

async fn cas_contract<S: ChannelStore + 'static>(store: Arc<S>, name: &str) {
    let key = format!("0xcas{:x}", nonce());
    let s1 = fresh(&key);

    // put_if_absent writes once.
    assert!(store.get(&key).await.unwrap().is_none(), "{name}");
    assert!(store.put_if_absent(&key, &s1).await.unwrap(), "{name}");
    let other = ChannelState { spent: 9, ..s1.clone() };
    assert!(!store.put_if_absent(&key, &other).await.unwrap(), "{name}");
    let v1 = store.get(&key).await.unwrap().expect("stored");
    assert_eq!(v1.value, s1, "{name}");

    // Of concurrent creators exactly one wins.
    let race_key = format!("{key}-race");
    let tasks: Vec<_> = (0..16u128)
        .map(|i| {
            let store = store.clone();
            let k = race_key.clone();
            let s = ChannelState { spent: i, ..fresh(&k) };
            tokio::spawn(async move { store.put_if_absent(&k, &s).await.unwrap() })
        })
        .collect();
    let wins = futures::future::join_all(tasks).await.into_iter().filter(|r| *r.as_ref().unwrap()).count();
    assert_eq!(wins, 1, "{name}");

    // Compare-and-swap: the current version wins, a stale one conflicts and sees the current.
    let s2 = ChannelState { spent: 10, units: 1, ..s1.clone() };
    let CasOutcome::Swapped(v2) = store.compare_and_swap(&key, v1.version, &s2).await.unwrap() else {
        panic!("{name}: CAS with the current version must swap")
    };
    assert_ne!(v2, v1.version, "{name}");
    let s3 = ChannelState { spent: 20, ..s1.clone() };
    match store.compare_and_swap(&key, v1.version, &s3).await.unwrap() {
        CasOutcome::Conflict(current) => assert_eq!(*current, Versioned { version: v2, value: s2.clone() }, "{name}"),
        other => panic!("{name}: stale CAS must conflict, got {other:?}"),
    }
    assert_eq!(store.get(&key).await.unwrap().unwrap().value, s2, "{name}");
    assert_eq!(store.compare_and_swap("0xnothing-here", v2, &s3).await.unwrap(), CasOutcome::Missing, "{name}");

    // update: closure refusals and declines write nothing.
    let refused = store.update(&key, |_| Err::<Option<ChannelState>, _>("insufficient")).await;
    assert!(matches!(refused, Err(UpdateError::Rejected("insufficient"))), "{name}");
    let unchanged = store.update(&key, |_| Ok::<_, ()>(None)).await.unwrap();
    assert_eq!(unchanged, UpdateOutcome::Unchanged(Versioned { version: v2, value: s2.clone() }), "{name}");
    assert_eq!(store.update("0xnothing-here", |_| Ok::<_, ()>(None)).await.unwrap(), UpdateOutcome::Missing);

    // 50 concurrent read-modify-writes lose nothing.
    let start = store.get(&key).await.unwrap().unwrap().value;
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let store = store.clone();
            let k = key.clone();
            tokio::spawn(async move {
                store
                    .update(&k, |s| {
                        let mut next = s.clone();
                        next.spent += 1;
                        next.units += 1;
                        Ok::<_, ()>(Some(next))
                    })
                    .await
            })
        })
        .collect();
    for r in futures::future::join_all(tasks).await {
        assert!(matches!(r.unwrap(), Ok(UpdateOutcome::Updated(_))), "{name}");
    }
    let end = store.get(&key).await.unwrap().unwrap();
    assert_eq!(end.value.spent, start.spent + 50, "{name}");
    assert_eq!(end.value.units, start.units + 50, "{name}");

    // delete, then a writer holding the old version cannot resurrect or overwrite.
    assert!(store.delete(&key).await.unwrap(), "{name}");
    assert!(!store.delete(&key).await.unwrap(), "{name}");
    assert!(store.get(&key).await.unwrap().is_none(), "{name}");
    assert_eq!(store.compare_and_swap(&key, end.version, &s3).await.unwrap(), CasOutcome::Missing, "{name}");
    assert!(store.put_if_absent(&key, &s1).await.unwrap(), "{name}");
    assert!(
        matches!(store.compare_and_swap(&key, end.version, &s3).await.unwrap(), CasOutcome::Conflict(_)),
        "{name}: a version from before the delete must not match the re-created key"
    );
    assert!(store.delete(&key).await.unwrap());
    assert!(store.delete(&race_key).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn contract_in_memory() {
    cas_contract(Arc::new(InMemoryChannelStore::new()), "memory").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn contract_file() {
    let dir = TempDir::new("contract");
    cas_contract(Arc::new(FileStore::new(dir.path()).unwrap()), "file").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn contract_dyn_store() {
    let store: Arc<dyn ChannelStore> = Arc::new(InMemoryChannelStore::new());
    cas_contract(Arc::new(store), "Arc<dyn ChannelStore>").await;
}

// ---------------------------------------------------------------------------------------------
// FileStore: path guard, cross-process atomicity, crash safety
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn filestore_rejects_escaping_keys() {
    let dir = TempDir::new("keys");
    let store = FileStore::new(dir.path().join("store")).unwrap();
    let s = fresh("0xk");
    for key in ["../x", "/abs", "a/b", "a\\b", "", "..", "a\0b"] {
        let invalid = |r: Result<(), StoreError>| matches!(r, Err(StoreError::InvalidKey { .. }));
        assert!(invalid(store.get(key).await.map(drop)), "get {key:?}");
        assert!(invalid(store.put_if_absent(key, &s).await.map(drop)), "put {key:?}");
        assert!(invalid(store.compare_and_swap(key, 1, &s).await.map(drop)), "cas {key:?}");
        assert!(invalid(store.delete(key).await.map(drop)), "delete {key:?}");
        assert!(store.path_for(key).is_err());
    }
    assert_eq!(store.get("../x").await.unwrap_err().to_string(), "invalid store key");
    // Nothing was created outside the store directory.
    assert!(!dir.path().join("x.json").exists());

    #[cfg(unix)]
    {
        // A symlink that leaves the directory is refused; one that stays inside is followed.
        let outside = dir.path().join("outside.json");
        std::fs::write(&outside, fresh("0xo").to_json_bytes().unwrap()).unwrap();
        std::os::unix::fs::symlink(&outside, store.dir().join("evil.json")).unwrap();
        assert!(matches!(store.get("evil").await, Err(StoreError::InvalidKey { .. })));
        assert!(matches!(store.compare_and_swap("evil", 1, &s).await, Err(StoreError::InvalidKey { .. })));
        assert!(matches!(store.delete("evil").await, Err(StoreError::InvalidKey { .. })));
        std::os::unix::fs::symlink(dir.path().join("nowhere.json"), store.dir().join("dangling.json")).unwrap();
        assert!(matches!(store.put_if_absent("dangling", &s).await, Err(StoreError::InvalidKey { .. })));
        assert!(!dir.path().join("nowhere.json").exists());
        // A lock-file symlink is refused too (it would create/lock files elsewhere).
        std::os::unix::fs::symlink(dir.path().join("lock-target"), store.dir().join(".locky.lock")).unwrap();
        assert!(matches!(store.put_if_absent("locky", &s).await, Err(StoreError::InvalidKey { .. })));
        assert!(!dir.path().join("lock-target").exists());

        assert!(store.put_if_absent("real", &s).await.unwrap());
        std::os::unix::fs::symlink(store.dir().join("real.json"), store.dir().join("alias.json")).unwrap();
        assert_eq!(store.get("alias").await.unwrap().unwrap().value, s);
    }
}

/// Re-executes this test binary as a worker (see [`store_worker`]).
fn spawn_worker(role: &str, dir: &Path, key: &str, count: u32) -> Child {
    Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", "store_worker", "--nocapture", "--test-threads=1"])
        .env(WORKER_ROLE, role)
        .env(WORKER_DIR, dir)
        .env(WORKER_KEY, key)
        .env(WORKER_COUNT, count.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn worker")
}

/// A state padded to ~400 KiB so that writing it takes a while; every field is a function of
/// `n`, so a torn write cannot pass [`big_state`] equality.
fn big_state(key: &str, n: u128) -> ChannelState {
    let digit = char::from_digit(u32::try_from(n % 16).unwrap(), 16).unwrap();
    ChannelState {
        spent: n,
        units: u64::try_from(n).unwrap(),
        token: format!("0x{}", digit.to_string().repeat(400 * 1024)),
        highest_voucher_amount: u128::MAX,
        ..fresh(key)
    }
}

/// The worker role: does nothing in a normal test run; in a child started by
/// [`spawn_worker`] it hammers one key of a [`FileStore`].
#[test]
fn store_worker() {
    let Ok(role) = std::env::var(WORKER_ROLE) else { return };
    let dir = PathBuf::from(std::env::var(WORKER_DIR).unwrap());
    let key = std::env::var(WORKER_KEY).unwrap();
    let count: u32 = std::env::var(WORKER_COUNT).unwrap().parse().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let store = FileStore::new(&dir).unwrap();
        match role.as_str() {
            "increment" => {
                for _ in 0..count {
                    let out = store
                        .update(&key, |s| {
                            let mut next = s.clone();
                            next.spent += 1;
                            next.units += 1;
                            Ok::<_, ()>(Some(next))
                        })
                        .await
                        .expect("update");
                    assert!(matches!(out, UpdateOutcome::Updated(_)));
                }
            }
            "rewrite" => loop {
                let k = key.clone();
                store.update(&key, |s| Ok::<_, ()>(Some(big_state(&k, s.spent + 1)))).await.expect("update");
            },
            other => panic!("unknown worker role {other}"),
        }
    });
}

fn finish(child: Child, what: &str) {
    let out = child.wait_with_output().expect("wait worker");
    assert!(
        out.status.success(),
        "{what} failed: {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn filestore_is_atomic_across_processes() {
    let dir = TempDir::new("xproc");
    let store = FileStore::new(dir.path()).unwrap();
    let key = "0xcafe";
    assert!(store.put_if_absent(key, &fresh(key)).await.unwrap());
    let children: Vec<Child> = (0..3).map(|_| spawn_worker("increment", store.dir(), key, 100)).collect();
    for (i, c) in children.into_iter().enumerate() {
        finish(c, &format!("worker {i}"));
    }
    let end = store.get(key).await.unwrap().unwrap().value;
    assert_eq!(end.spent, 300);
    assert_eq!(end.units, 300);
}

fn tmp_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.contains(".json.tmp."))
        .collect()
}

#[tokio::test]
async fn filestore_survives_sigkill_mid_write() {
    let dir = TempDir::new("crash");
    let store = FileStore::new(dir.path()).unwrap();
    let key = "0xdead";
    assert!(store.put_if_absent(key, &big_state(key, 0)).await.unwrap());
    let file = store.path_for(key).unwrap();
    let mut last = 0u128;
    let mut torn_kills = 0;
    const ROUNDS: u64 = 8;
    for round in 0..ROUNDS {
        let mut child = spawn_worker("rewrite", store.dir(), key, 0);
        // Let it get going.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let seen = store.get(key).await.unwrap().unwrap().value.spent;
            if seen > last + 1 {
                break;
            }
            if let Some(status) = child.try_wait().unwrap() {
                panic!("rewrite worker exited early: {status}");
            }
            assert!(Instant::now() < deadline, "rewrite worker made no progress");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if round % 2 == 0 {
            // A pseudo-random moment.
            tokio::time::sleep(Duration::from_millis(nonce() % 97 + round * 13)).await;
        } else {
            // While a temp file exists, i.e. between creating it and renaming it.
            let deadline = Instant::now() + Duration::from_secs(60);
            let before = tmp_files(store.dir());
            while !tmp_files(store.dir()).iter().any(|n| !before.contains(n)) {
                assert!(Instant::now() < deadline, "never saw a temp file");
                std::thread::yield_now();
            }
        }
        child.kill().expect("SIGKILL");
        let _ = child.wait();
        if tmp_files(store.dir()).len() > torn_kills {
            torn_kills += 1;
        }

        // The file is complete: exactly some state the worker wrote, never a torn one.
        let bytes = std::fs::read(&file).unwrap();
        let state = ChannelState::from_json(&bytes).unwrap_or_else(|e| panic!("round {round}: torn file: {e}"));
        assert!(state.spent >= last, "round {round}: went backwards");
        assert_eq!(state, big_state(key, state.spent), "round {round}: inconsistent state");
        assert_eq!(bytes, big_state(key, state.spent).to_json_bytes().unwrap());
        last = state.spent;
    }
    eprintln!("crash test: {last} states written, {ROUNDS} kills, {torn_kills} of them left a temp file behind");
    assert!(torn_kills >= 1, "no kill landed between creating a temp file and renaming it");
    // Leftover temp files (from kills mid-write, or planted) never break reads or writes.
    std::fs::write(dir.path().join(format!("{key}.json.tmp.1.deadbeef")), b"{\"channelId\": \"0xdead\", \"cha")
        .unwrap();
    assert!(!tmp_files(store.dir()).is_empty());
    let v = store.get(key).await.unwrap().unwrap();
    assert_eq!(v.value.spent, last);
    let out = store.update(key, |s| Ok::<_, ()>(Some(big_state(key, s.spent + 1)))).await.unwrap();
    assert!(matches!(out, UpdateOutcome::Updated(v) if v.value.spent == last + 1));
}

// ---------------------------------------------------------------------------------------------
// Redis
// ---------------------------------------------------------------------------------------------

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_store_contract_replay_and_ttl() {
    let server = RedisServer::start();
    let store = RedisChannelStore::connect(&server.url(), "pay402-test:").await.unwrap();
    cas_contract(Arc::new(store.clone()), "redis").await;

    // A second connection (another server instance) sees the same channels.
    let other = RedisChannelStore::connect(&server.url(), "pay402-test:").await.unwrap();
    assert!(store.put_if_absent("0xshared", &fresh("0xshared")).await.unwrap());
    assert!(!other.put_if_absent("0xshared", &fresh("0xshared")).await.unwrap());
    assert_eq!(other.get("0xshared").await.unwrap().unwrap().value, fresh("0xshared"));
    // Another prefix is another namespace.
    let elsewhere = RedisChannelStore::connect(&server.url(), "other:").await.unwrap();
    assert!(elsewhere.get("0xshared").await.unwrap().is_none());
    // Stored as the same JSON the file store writes.
    let golden = golden_state();
    assert!(store.put_if_absent("0xgolden", &golden).await.unwrap());
    assert_eq!(other.get("0xgolden").await.unwrap().unwrap().value, golden);

    // TTL: abandoned channels without a voucher expire; every write restarts the clock. A
    // channel holding a voucher (the seller's claim) never expires; its first voucher removes
    // the expiry.
    let ttl = store.clone().with_ttl(Duration::from_millis(1500));
    let no_voucher = |k: &str| ChannelState { highest_voucher_amount: 0, ..fresh(k) };
    assert!(ttl.put_if_absent("0xttl", &no_voucher("0xttl")).await.unwrap());
    assert!(ttl.put_if_absent("0xttlclaim", &no_voucher("0xttlclaim")).await.unwrap());
    assert!(ttl.put_if_absent("0xttlheld", &fresh("0xttlheld")).await.unwrap());
    tokio::time::sleep(Duration::from_millis(800)).await;
    let out =
        ttl.update("0xttl", |s| Ok::<_, ()>(Some(ChannelState { min_voucher_delta: 1, ..s.clone() }))).await.unwrap();
    assert!(matches!(out, UpdateOutcome::Updated(_)), "{out:?}");
    let out = ttl
        .update("0xttlclaim", |s| Ok::<_, ()>(Some(ChannelState { highest_voucher_amount: 5, ..s.clone() })))
        .await
        .unwrap();
    assert!(matches!(out, UpdateOutcome::Updated(_)), "{out:?}");
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(ttl.get("0xttl").await.unwrap().unwrap().value.min_voucher_delta, 1, "the write refreshed the TTL");
    tokio::time::sleep(Duration::from_millis(1800)).await;
    assert!(ttl.get("0xttl").await.unwrap().is_none(), "expired");
    assert!(ttl.get("0xttlheld").await.unwrap().is_some(), "a channel holding a voucher never expires");
    assert_eq!(
        ttl.get("0xttlclaim").await.unwrap().unwrap().value.highest_voucher_amount,
        5,
        "its voucher removed the expiry"
    );
    // Without a TTL nothing expires.
    assert!(store.get("0xshared").await.unwrap().is_some());

    // ReplayStore: one insert per window, shared across instances.
    let a = store.replay_store("pay402-test:replay:");
    let b = RedisReplayStore::connect(&server.url(), "pay402-test:replay:").await.unwrap();
    let later = unix_now() + 60;
    assert!(a.insert_if_absent("pay:1", later).await.unwrap());
    assert!(!a.insert_if_absent("pay:1", later).await.unwrap());
    assert!(!b.insert_if_absent("pay:1", later).await.unwrap(), "shared across instances");
    b.remove("pay:1").await.unwrap();
    assert!(a.insert_if_absent("pay:1", later).await.unwrap());
    // An already-expired record is not kept, but a live one still blocks.
    assert!(a.insert_if_absent("pay:old", 0).await.unwrap());
    assert!(a.insert_if_absent("pay:old", 0).await.unwrap());
    assert!(!a.insert_if_absent("pay:1", 0).await.unwrap());
    // Concurrent duplicates: exactly one wins.
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let s: Arc<dyn ReplayStore> = if i % 2 == 0 { Arc::new(a.clone()) } else { Arc::new(b.clone()) };
            tokio::spawn(async move { s.insert_if_absent("pay:race", later).await.unwrap() })
        })
        .collect();
    let wins = futures::future::join_all(tasks).await.into_iter().filter(|r| *r.as_ref().unwrap()).count();
    assert_eq!(wins, 1);
    // Records expire after their validity window (`now ≤ expires_at` is live).
    let soon = unix_now() + 1;
    assert!(a.insert_if_absent("pay:soon", soon).await.unwrap());
    assert!(!a.insert_if_absent("pay:soon", soon).await.unwrap());
    while unix_now() <= soon + 1 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(a.insert_if_absent("pay:soon", unix_now() + 60).await.unwrap());
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_fails_closed_when_the_server_dies() {
    let mut server = RedisServer::start();
    let url = server.url();
    let store = RedisChannelStore::connect(&url, "pay402-test:").await.unwrap();
    let replay = store.replay_store("pay402-test:replay:");
    assert!(store.put_if_absent("0xk", &fresh("0xk")).await.unwrap());
    let v = store.get("0xk").await.unwrap().unwrap();

    // Writers are busy when the server dies.
    let busy = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut errors = 0u32;
            for _ in 0..200 {
                let r =
                    store.update("0xk", |s| Ok::<_, ()>(Some(ChannelState { spent: s.spent + 1, ..s.clone() }))).await;
                match r {
                    Ok(UpdateOutcome::Updated(_)) => {}
                    Err(UpdateError::Store(StoreError::Unavailable(_))) => errors += 1,
                    other => panic!("unexpected outcome while the server dies: {other:?}"),
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            errors
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    server.kill();
    assert!(busy.await.unwrap() > 0, "writers saw the outage");

    let unavailable = |r: Result<(), StoreError>| matches!(r, Err(StoreError::Unavailable(_)));
    let started = Instant::now();
    assert!(unavailable(store.get("0xk").await.map(drop)));
    assert!(unavailable(store.put_if_absent("0xnew", &fresh("0xnew")).await.map(drop)));
    assert!(unavailable(store.compare_and_swap("0xk", v.version, &v.value).await.map(drop)));
    assert!(unavailable(store.delete("0xk").await.map(drop)));
    let upd = store.update("0xk", |s| Ok::<_, ()>(Some(s.clone()))).await;
    assert!(matches!(upd, Err(UpdateError::Store(StoreError::Unavailable(_)))), "{upd:?}");
    assert!(replay.insert_if_absent("pay:x", unix_now() + 60).await.is_err());
    assert!(replay.remove("pay:x").await.is_err());
    assert!(started.elapsed() < Duration::from_secs(30), "failing closed must not hang");

    // A new store cannot connect at all.
    assert!(matches!(RedisChannelStore::connect(&url, "p:").await, Err(StoreError::Unavailable(_))));
    assert!(matches!(RedisReplayStore::connect(&url, "p:").await, Err(ReplayStoreError::Unavailable(_))));
    assert!(matches!(RedisChannelStore::connect("not a url", "p:").await, Err(StoreError::Config(_))));
}
