//! Unit tests of the compare-and-swap `update` loop: retries, the coordinator's remembered
//! states, deletes and re-creates, concurrent processes.

use super::*;

fn state(spent: u128) -> ChannelState {
    ChannelState { spent, highest_voucher_amount: 100, ..ChannelState::new("0xc", 196, "0xe", "0xp", "0xq") }
}

#[test]
fn delays_stay_within_the_cap() {
    let p = RetryPolicy::default();
    for n in 1..80 {
        assert!(p.delay(n) <= p.max_delay);
    }
    let zero = RetryPolicy { base_delay: Duration::ZERO, ..p };
    assert_eq!(zero.delay(3), Duration::ZERO);
}

#[tokio::test]
async fn update_through_dyn_and_arc() {
    let store: Arc<dyn ChannelStore> = Arc::new(InMemoryChannelStore::new());
    assert!(store.put_if_absent("k", &state(0)).await.unwrap());
    let out = store.update("k", |s| Ok::<_, ()>(Some(ChannelState { spent: s.spent + 1, ..s.clone() }))).await;
    assert!(matches!(out, Ok(UpdateOutcome::Updated(v)) if v.value.spent == 1));
    let by_ref: &dyn ChannelStore = &*store;
    assert!(matches!((&by_ref).update("k", |_| Ok::<_, ()>(None)).await, Ok(UpdateOutcome::Unchanged(_))));
    let rejected = (&by_ref).update("k", |_| Err::<Option<ChannelState>, _>("no")).await;
    assert!(matches!(rejected, Err(UpdateError::Rejected("no"))));
    let boxed: Box<dyn ChannelStore> = Box::new(InMemoryChannelStore::new());
    assert!(matches!(boxed.update("k", |_| Ok::<_, ()>(None)).await, Ok(UpdateOutcome::Missing)));
    assert!(matches!(store.update("absent", |_| Ok::<_, ()>(None)).await, Ok(UpdateOutcome::Missing)));
}

/// A store whose compare-and-swap always loses: `update` gives up after the policy's
/// attempts and writes nothing.
struct AlwaysConflict;

#[async_trait]
impl ChannelStore for AlwaysConflict {
    async fn get(&self, _key: &str) -> Result<Option<Versioned<ChannelState>>, StoreError> {
        Ok(Some(Versioned { version: 1, value: state(0) }))
    }
    async fn put_if_absent(&self, _key: &str, _state: &ChannelState) -> Result<bool, StoreError> {
        Ok(false)
    }
    async fn compare_and_swap(&self, _: &str, v: u64, _: &ChannelState) -> Result<CasOutcome, StoreError> {
        Ok(CasOutcome::Conflict(Box::new(Versioned { version: v + 1, value: state(0) })))
    }
    async fn delete(&self, _key: &str) -> Result<bool, StoreError> {
        Ok(false)
    }
}

#[tokio::test]
async fn exhausted_retries_fail_closed() {
    let policy =
        RetryPolicy { max_attempts: 5, base_delay: Duration::from_millis(1), max_delay: Duration::from_millis(2) };
    let mut calls = 0;
    let out = AlwaysConflict
        .update_with("k", policy, |s| {
            calls += 1;
            Ok::<_, ()>(Some(s.clone()))
        })
        .await;
    assert!(matches!(out, Err(UpdateError::Store(StoreError::ConflictExhausted { attempts: 5, .. }))));
    assert_eq!(calls, 5);
}

#[test]
fn basic_keys() {
    assert!(check_key_basic("0xabc").is_ok());
    for bad in ["", "a\0b", &"x".repeat(201)] {
        assert!(matches!(check_key_basic(bad), Err(StoreError::InvalidKey { .. })));
    }
    assert_eq!(StoreError::invalid_key("..").to_string(), "invalid store key");
}

/// One "process" sharing an in-memory backend with others: its own coordinator, and counts
/// of the reads and compare-and-swaps it sends.
struct Process {
    backend: Arc<InMemoryChannelStore>,
    coordinator: UpdateCoordinator,
    gets: std::sync::atomic::AtomicUsize,
    cases: std::sync::atomic::AtomicUsize,
}

impl Process {
    fn new(backend: &Arc<InMemoryChannelStore>) -> Self {
        Self {
            backend: Arc::clone(backend),
            coordinator: UpdateCoordinator::default(),
            gets: 0.into(),
            cases: 0.into(),
        }
    }
    fn counts(&self) -> (usize, usize) {
        use std::sync::atomic::Ordering::SeqCst;
        (self.gets.swap(0, SeqCst), self.cases.swap(0, SeqCst))
    }
}

#[async_trait]
impl ChannelStore for Process {
    async fn get(&self, key: &str) -> Result<Option<Versioned<ChannelState>>, StoreError> {
        self.gets.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.backend.get(key).await
    }
    async fn put_if_absent(&self, key: &str, state: &ChannelState) -> Result<bool, StoreError> {
        self.backend.put_if_absent(key, state).await
    }
    async fn compare_and_swap(&self, k: &str, v: u64, s: &ChannelState) -> Result<CasOutcome, StoreError> {
        self.cases.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        // Another task may run between the compare and the swap of a real backend.
        tokio::task::yield_now().await;
        self.backend.compare_and_swap(k, v, s).await
    }
    async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        self.backend.delete(key).await
    }
    fn update_coordinator(&self) -> Option<&UpdateCoordinator> {
        Some(&self.coordinator)
    }
}

fn add_spent(by: u128) -> impl FnMut(&ChannelState) -> Result<Option<ChannelState>, ()> + Send {
    move |s| Ok(Some(ChannelState { spent: s.spent + by, ..s.clone() }))
}

#[tokio::test]
async fn coordinated_updates_skip_the_read_and_recover_from_stale_states() {
    let backend = Arc::new(InMemoryChannelStore::new());
    let (a, b) = (Process::new(&backend), Process::new(&backend));
    assert!(a.put_if_absent("k", &state(0)).await.unwrap());

    // First update reads; the next ones compare-and-swap against the remembered state.
    assert!(matches!(a.update("k", add_spent(1)).await, Ok(UpdateOutcome::Updated(_))));
    assert_eq!(a.counts(), (1, 1));
    for _ in 0..3 {
        assert!(matches!(a.update("k", add_spent(1)).await, Ok(UpdateOutcome::Updated(_))));
    }
    assert_eq!(a.counts(), (0, 3));

    // Another process writes: a's remembered state is stale. Its swap loses once, and the
    // closure runs again on the current state (no read, no lost update).
    assert!(matches!(b.update("k", add_spent(10)).await, Ok(UpdateOutcome::Updated(_))));
    let mut seen = Vec::new();
    let out = a
        .update("k", |s| {
            seen.push(s.spent);
            Ok::<_, ()>(Some(ChannelState { spent: s.spent + 1, ..s.clone() }))
        })
        .await;
    assert!(matches!(out, Ok(UpdateOutcome::Updated(v)) if v.value.spent == 15));
    assert_eq!(seen, [4, 14], "first on the remembered state, then on the current one");
    assert_eq!(a.counts(), (0, 2));
    assert_eq!(backend.get("k").await.unwrap().unwrap().value.spent, 15);
}

#[tokio::test]
async fn no_decision_not_to_write_is_taken_on_a_remembered_state() {
    let backend = Arc::new(InMemoryChannelStore::new());
    let (a, b) = (Process::new(&backend), Process::new(&backend));
    assert!(a.put_if_absent("k", &state(0)).await.unwrap());
    assert!(matches!(a.update("k", add_spent(0)).await, Ok(UpdateOutcome::Updated(_))));
    // b raises the voucher; a still remembers the old one.
    let raise = |s: &ChannelState| Ok::<_, ()>(Some(ChannelState { highest_voucher_amount: 500, ..s.clone() }));
    assert!(matches!(b.update("k", raise).await, Ok(UpdateOutcome::Updated(_))));
    a.counts();

    // A charge of 300 is refused on the remembered state (highest 100) but fits the
    // current one (highest 500): it must be read and accepted, not refused.
    let charge = |s: &ChannelState| {
        let mut next = s.clone();
        if next.reserve(300) { Ok(Some(next)) } else { Err("no balance") }
    };
    let out = a.update("k", charge).await;
    assert!(matches!(&out, Ok(UpdateOutcome::Updated(v)) if v.value.reserved == 300), "{out:?}");
    assert_eq!(a.counts(), (1, 1));

    // Likewise "nothing to do": decided on a read state, returned as it is now.
    assert!(matches!(b.update("k", add_spent(7)).await, Ok(UpdateOutcome::Updated(_))));
    let out = a.update("k", |s| Ok::<_, ()>((s.spent != 7).then(|| s.clone()))).await;
    assert!(matches!(&out, Ok(UpdateOutcome::Unchanged(v)) if v.value.spent == 7), "{out:?}");
    assert_eq!(a.counts(), (0, 1), "the remembered state (spent 0) led to a swap that lost");

    // A refusal on a state read from the store stands.
    let out = a.update("k", |_| Err::<Option<ChannelState>, _>("refused")).await;
    assert!(matches!(out, Err(UpdateError::Rejected("refused"))));
    assert_eq!(a.counts(), (1, 0));
}

#[tokio::test]
async fn deleted_and_recreated_keys_are_not_written_from_a_remembered_state() {
    let backend = Arc::new(InMemoryChannelStore::new());
    let (a, b) = (Process::new(&backend), Process::new(&backend));
    assert!(a.put_if_absent("k", &state(0)).await.unwrap());
    assert!(matches!(a.update("k", add_spent(5)).await, Ok(UpdateOutcome::Updated(_))));
    assert!(b.delete("k").await.unwrap());
    assert!(matches!(a.update("k", add_spent(1)).await, Ok(UpdateOutcome::Missing)));
    assert_eq!(a.coordinator.remembered("k"), None, "forgotten once known missing");
    assert!(matches!(a.update("k", add_spent(1)).await, Ok(UpdateOutcome::Missing)));

    // Re-created by b with a fresh state: a's old knowledge is gone or loses the race.
    assert!(matches!(a.update("k", add_spent(0)).await, Ok(UpdateOutcome::Missing)));
    assert!(b.put_if_absent("k", &state(100)).await.unwrap());
    assert!(matches!(a.update("k", add_spent(1)).await, Ok(UpdateOutcome::Updated(v)) if v.value.spent == 101));
    // Deleted and re-created behind a's back: the remembered version belongs to the old
    // incarnation, so the swap loses and the update lands on the new state.
    assert!(b.delete("k").await.unwrap());
    assert!(b.put_if_absent("k", &state(200)).await.unwrap());
    a.counts();
    assert!(matches!(a.update("k", add_spent(1)).await, Ok(UpdateOutcome::Updated(v)) if v.value.spent == 201));
    assert_eq!(a.counts(), (0, 2));
    assert_eq!(backend.get("k").await.unwrap().unwrap().value.spent, 201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_processes_and_workers_lose_nothing() {
    let backend = Arc::new(InMemoryChannelStore::new());
    let processes: Vec<Arc<Process>> = (0..3).map(|_| Arc::new(Process::new(&backend))).collect();
    assert!(processes[0].put_if_absent("k", &state(0)).await.unwrap());
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for worker in 0..24 {
        let (p, calls) = (Arc::clone(&processes[worker % 3]), Arc::clone(&calls));
        tasks.push(tokio::spawn(async move {
            for _ in 0..50 {
                let out = p
                    .update_with("k", RetryPolicy { max_attempts: 10_000, ..RetryPolicy::default() }, |s| {
                        calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        Ok::<_, ()>(Some(ChannelState { spent: s.spent + 1, ..s.clone() }))
                    })
                    .await;
                assert!(matches!(out, Ok(UpdateOutcome::Updated(_))), "{out:?}");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(backend.get("k").await.unwrap().unwrap().value.spent, 24 * 50);
    for p in &processes {
        assert_eq!(p.coordinator.remembered_len(), 1);
    }

    // One process alone: its workers take turns and never lose a race.
    let solo = Arc::new(Process::new(&backend));
    solo.update("k", add_spent(0)).await.unwrap();
    calls.store(0, std::sync::atomic::Ordering::SeqCst);
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let (p, calls) = (Arc::clone(&solo), Arc::clone(&calls));
            tokio::spawn(async move {
                for _ in 0..20 {
                    p.update("k", |s| {
                        calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        Ok::<_, ()>(Some(ChannelState { spent: s.spent + 1, ..s.clone() }))
                    })
                    .await
                    .unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 16 * 20, "every closure ran once");
    assert_eq!(backend.get("k").await.unwrap().unwrap().value.spent, 24 * 50 + 16 * 20);
}
