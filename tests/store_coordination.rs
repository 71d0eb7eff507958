//! `ChannelStore::update` through an `UpdateCoordinator` on the shared stores (Redis, file):
//! workers of one instance take turns and never lose a race; instances that each remember a
//! stale state (two "processes") still lose and double-charge nothing; a state another writer
//! changed is never the basis of a write or a refusal.
//!
//! The Redis tests start their own `redis-server` (Debian package, installed by
//! `scripts/install-test-deps.sh`) on a free port; without it they fail, never skip.

mod support;

use pay402::mpp::{ChannelState, ChannelStore, FileStore, RedisChannelStore, StoreError, UpdateError, UpdateOutcome};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use support::redis::RedisServer;

const KEY: &str = "0x00000000000000000000000000000000000000000000000000000000000000aa";
const PRICE: u128 = 7;

fn channel() -> ChannelState {
    let mut state = ChannelState::new(KEY, 196, "0xe", "0xp", "0xq");
    state.deposit = 1_000_000_000;
    state.highest_voucher_amount = 1_000_000_000;
    state
}

/// What a paid session request does: reserve the price (the voucher), then commit it (after
/// the handler). `calls` counts closure runs (one per compare-and-swap attempt or decision).
async fn deduct(store: &dyn ChannelStore, calls: &AtomicU64) {
    let reserve = (&store)
        .update(KEY, |s| {
            calls.fetch_add(1, Ordering::SeqCst);
            let mut next = s.clone();
            if next.reserve(PRICE) { Ok(Some(next)) } else { Err("no balance") }
        })
        .await;
    assert!(matches!(reserve, Ok(UpdateOutcome::Updated(ref v)) if v.value.reserved >= PRICE), "{reserve:?}");
    let commit = (&store)
        .update(KEY, |s| {
            calls.fetch_add(1, Ordering::SeqCst);
            let mut next = s.clone();
            if next.commit(PRICE) { Ok(Some(next)) } else { Err("nothing reserved") }
        })
        .await;
    assert!(matches!(commit, Ok(UpdateOutcome::Updated(_))), "{commit:?}");
}

/// `workers` tasks per instance, `rounds` deductions each; returns the closure runs.
async fn hammer(instances: &[Arc<dyn ChannelStore>], workers: usize, rounds: u64) -> u64 {
    let calls = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for instance in instances {
        for _ in 0..workers {
            let (store, calls) = (Arc::clone(instance), Arc::clone(&calls));
            tasks.push(tokio::spawn(async move {
                for _ in 0..rounds {
                    deduct(&*store, &calls).await;
                }
            }));
        }
    }
    for t in tasks {
        t.await.expect("worker");
    }
    calls.load(Ordering::SeqCst)
}

async fn assert_exact(store: &dyn ChannelStore, deductions: u64) {
    let state = store.get(KEY).await.expect("get").expect("channel").value;
    assert_eq!(state.spent, u128::from(deductions) * PRICE, "lost or double deductions");
    assert_eq!(state.units, deductions);
    assert_eq!(state.reserved, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_workers_of_one_instance_take_turns_and_lose_nothing() {
    let server = RedisServer::start();
    let store = RedisChannelStore::connect(&server.url(), "coord-one:").await.expect("connect");
    assert!(store.put_if_absent(KEY, &channel()).await.expect("put"));
    let instances: Vec<Arc<dyn ChannelStore>> = vec![Arc::new(store.clone())];
    let calls = hammer(&instances, 16, 40).await;
    assert_exact(&store, 16 * 40).await;
    // Nobody else writes: no compare-and-swap was lost, every closure ran exactly once.
    assert_eq!(calls, 2 * 16 * 40);
    let coordinator = store.update_coordinator().expect("the Redis store coordinates updates");
    assert_eq!(coordinator.remembered_len(), 1);
    // Deleting forgets; the next update finds the channel gone.
    assert!(store.delete(KEY).await.expect("delete"));
    assert_eq!(coordinator.remembered_len(), 0);
    let out = store.update(KEY, |s| Ok::<_, ()>(Some(s.clone()))).await.expect("update");
    assert_eq!(out, UpdateOutcome::Missing);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_instances_with_stale_states_lose_and_double_charge_nothing() {
    let server = RedisServer::start();
    let url = server.url();
    let connect = || RedisChannelStore::connect(&url, "coord-two:");
    let (a, b) = (connect().await.expect("a"), connect().await.expect("b"));
    // A third instance that remembers nothing (reads before every update).
    let c = connect().await.expect("c").with_remembered_states(0);
    assert!(a.put_if_absent(KEY, &channel()).await.expect("put"));

    // Deterministic interleaving: each instance writes from a state the other has replaced.
    let calls = AtomicU64::new(0);
    deduct(&a, &calls).await;
    deduct(&b, &calls).await;
    assert_eq!(calls.swap(0, Ordering::SeqCst), 4);
    deduct(&a, &calls).await; // a remembers its own last write, which b has replaced
    assert_eq!(calls.swap(0, Ordering::SeqCst), 3, "one stale attempt, then the current state");
    deduct(&b, &calls).await;
    assert_eq!(calls.swap(0, Ordering::SeqCst), 3);
    deduct(&c, &calls).await;
    assert_eq!(calls.swap(0, Ordering::SeqCst), 2, "c reads first: never stale");
    assert_eq!(c.update_coordinator().map(|c| c.remembered_len()), Some(0));
    assert_exact(&a, 5).await;

    // Three processes' worth of concurrent workers on the one channel.
    let instances: Vec<Arc<dyn ChannelStore>> = vec![Arc::new(a.clone()), Arc::new(b), Arc::new(c)];
    let calls = hammer(&instances, 6, 25).await;
    assert!(calls >= 2 * 3 * 6 * 25);
    assert_exact(&a, 5 + 3 * 6 * 25).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_a_state_changed_by_another_writer_is_never_acted_on() {
    let server = RedisServer::start();
    let a = RedisChannelStore::connect(&server.url(), "coord-inval:").await.expect("a");
    let b = RedisChannelStore::connect(&server.url(), "coord-inval:").await.expect("b");
    let mut small = channel();
    small.highest_voucher_amount = 10;
    assert!(a.put_if_absent(KEY, &small).await.expect("put"));
    let calls = AtomicU64::new(0);
    deduct(&a, &calls).await; // a remembers highest 10, spent 7

    // b accepts a higher voucher: on a's remembered state a price of 50 does not fit, on the
    // current one it does. The refusal is not taken on the remembered state.
    let raise = |s: &ChannelState| Ok::<_, ()>(Some(ChannelState { highest_voucher_amount: 100, ..s.clone() }));
    assert!(matches!(b.update(KEY, raise).await, Ok(UpdateOutcome::Updated(_))));
    let out = a
        .update(KEY, |s| {
            let mut next = s.clone();
            if next.reserve(50) { Ok(Some(next)) } else { Err("no balance") }
        })
        .await;
    assert!(matches!(&out, Ok(UpdateOutcome::Updated(v)) if v.value.reserved == 50), "{out:?}");

    // b starts closing the channel: a's remembered state is open, but its write is refused on
    // the current state, and nothing is written.
    let closing = |s: &ChannelState| Ok::<_, ()>(Some(ChannelState { close_requested_at: 1, ..s.clone() }));
    assert!(matches!(b.update(KEY, closing).await, Ok(UpdateOutcome::Updated(_))));
    let before = b.get(KEY).await.expect("get").expect("channel");
    let out = a
        .update(KEY, |s| {
            if s.close_requested_at != 0 {
                return Err("channel is closing");
            }
            let mut next = s.clone();
            if next.reserve(1) { Ok(Some(next)) } else { Err("no balance") }
        })
        .await;
    assert!(matches!(out, Err(UpdateError::Rejected("channel is closing"))), "{out:?}");
    assert_eq!(b.get(KEY).await.expect("get").expect("channel"), before);

    // b deletes the channel, then re-creates it: a's remembered version belongs to the old
    // incarnation; its swap loses and the update lands on the new state.
    assert!(b.delete(KEY).await.expect("delete"));
    let out = a.update(KEY, |s| Ok::<_, ()>(Some(s.clone()))).await.expect("update");
    assert_eq!(out, UpdateOutcome::Missing);
    assert!(b.put_if_absent(KEY, &channel()).await.expect("put"));
    deduct(&a, &calls).await;
    assert!(b.delete(KEY).await.expect("delete"));
    assert!(b.put_if_absent(KEY, &channel()).await.expect("put"));
    calls.store(0, Ordering::SeqCst);
    deduct(&a, &calls).await;
    assert_eq!(calls.load(Ordering::SeqCst), 3, "one stale attempt on the deleted incarnation");
    assert_exact(&b, 1).await;

    // An outage forgets what was remembered (the last write's outcome may be unknown).
    drop(server);
    let out = a.update(KEY, |s| Ok::<_, ()>(Some(s.clone()))).await;
    assert!(matches!(out, Err(UpdateError::Store(StoreError::Unavailable(_)))), "{out:?}");
    assert_eq!(a.update_coordinator().map(|c| c.remembered_len()), Some(0));
}

/// A scratch directory, removed on drop.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn file_instances_with_stale_states_lose_and_double_charge_nothing() {
    let dir = TempDir(std::env::temp_dir().join(format!("pay402-coordination-{}", std::process::id())));
    let (a, b) = (FileStore::new(&dir.0).expect("a"), FileStore::new(&dir.0).expect("b"));
    assert!(a.put_if_absent(KEY, &channel()).await.expect("put"));
    let calls = AtomicU64::new(0);
    deduct(&a, &calls).await;
    deduct(&b, &calls).await;
    calls.store(0, Ordering::SeqCst);
    deduct(&a, &calls).await;
    assert_eq!(calls.load(Ordering::SeqCst), 3, "one stale attempt, then the current state");
    let instances: Vec<Arc<dyn ChannelStore>> = vec![Arc::new(a.clone()), Arc::new(b)];
    hammer(&instances, 4, 10).await;
    assert_exact(&a, 3 + 2 * 4 * 10).await;
}
