//! [`UpdateCoordinator`]: what one process does to make [`ChannelStore::update`] cheap on a
//! shared store — updates of one key take turns in-process, and each key's last known state is
//! remembered so the next update can compare-and-swap without reading first.

#[cfg(doc)]
use super::ChannelStore;
use super::{ChannelState, Versioned};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// How many channel states an [`UpdateCoordinator`] remembers by default.
pub const DEFAULT_REMEMBERED_STATES: usize = 4096;

/// In-process coordination of [`ChannelStore::update`] for one store instance.
///
/// A store that returns one from [`ChannelStore::update_coordinator`] gets two things from
/// `update`:
///
/// * **Turns.** The updates of one key made through this coordinator run one at a time (an
///   async queue per key; the entry disappears when nobody waits), so workers of one process
///   never lose a compare-and-swap to each other and never back off. Other processes and other
///   store instances are still kept apart by the compare-and-swap alone: turns only remove
///   needless conflicts, correctness never depends on them.
/// * **Remembered states.** After each update the state it wrote (or the current state a lost
///   compare-and-swap returned) is remembered, and the next update of the key compares and
///   swaps against it directly instead of reading the store first (one round trip instead of
///   two). A remembered state may be stale — another process wrote since — and then the
///   compare-and-swap simply loses and returns the current state, so nothing is ever written
///   from a stale state. A decision *not* to write (the closure returns `Ok(None)` or an
///   error) is never taken on a remembered state: `update` reads the store and asks the
///   closure again. At most `capacity` states are remembered (an arbitrary one is forgotten
///   when full), so memory stays bounded however many channels pass through.
///
/// A coordinator belongs to exactly one store instance (versions are only meaningful to the
/// store that produced them) and is shared by its clones.
#[derive(Debug)]
pub struct UpdateCoordinator {
    capacity: usize,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    turns: HashMap<String, Turns>,
    states: HashMap<String, Versioned<ChannelState>>,
}

#[derive(Debug)]
struct Turns {
    queue: Arc<tokio::sync::Mutex<()>>,
    /// Updates holding or waiting for this key's turn; the entry is removed at zero.
    users: usize,
}

impl Default for UpdateCoordinator {
    fn default() -> Self {
        Self::new(DEFAULT_REMEMBERED_STATES)
    }
}

impl UpdateCoordinator {
    /// A coordinator remembering at most `capacity` channel states (0: remember none; updates
    /// of one key still take turns).
    pub fn new(capacity: usize) -> Self {
        Self { capacity, inner: Mutex::new(Inner::default()) }
    }

    /// The most states this coordinator remembers.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// How many states are remembered now.
    pub fn remembered_len(&self) -> usize {
        self.lock().states.len()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Nothing panics while the map lock is held; a poisoned map is still consistent.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits for `key`'s turn; the turn ends when the returned guard is dropped (also when the
    /// waiting future is dropped).
    pub(crate) async fn turn(&self, key: &str) -> Turn<'_> {
        let queue = {
            let mut inner = self.lock();
            let turns = inner
                .turns
                .entry(key.to_owned())
                .or_insert_with(|| Turns { queue: Arc::new(tokio::sync::Mutex::new(())), users: 0 });
            turns.users += 1;
            Arc::clone(&turns.queue)
        };
        // Created before the first await: a dropped waiter still gives its place back.
        let user = User { coordinator: self, key: key.to_owned() };
        let held = queue.lock_owned().await;
        Turn { _held: held, _user: user }
    }

    /// The remembered state of `key`.
    pub(crate) fn remembered(&self, key: &str) -> Option<Versioned<ChannelState>> {
        self.lock().states.get(key).cloned()
    }

    /// Remembers `state` as the latest known state of `key`.
    pub(crate) fn remember(&self, key: &str, state: Versioned<ChannelState>) {
        if self.capacity == 0 {
            return;
        }
        let mut inner = self.lock();
        if let Some(slot) = inner.states.get_mut(key) {
            *slot = state;
            return;
        }
        if inner.states.len() >= self.capacity {
            // The map's iteration order is randomised per process: an arbitrary victim.
            if let Some(victim) = inner.states.keys().next().cloned() {
                inner.states.remove(&victim);
            }
        }
        inner.states.insert(key.to_owned(), state);
    }

    /// Forgets what is known about `key` (deleted, or an outcome is unknown).
    pub(crate) fn forget(&self, key: &str) {
        self.lock().states.remove(key);
    }

    #[cfg(test)]
    fn turn_entries(&self) -> usize {
        self.lock().turns.len()
    }
}

/// One update's turn on a key (see [`UpdateCoordinator::turn`]).
pub(crate) struct Turn<'a> {
    // Field order matters: the queue is released before the user count drops.
    _held: tokio::sync::OwnedMutexGuard<()>,
    _user: User<'a>,
}

struct User<'a> {
    coordinator: &'a UpdateCoordinator,
    key: String,
}

impl Drop for User<'_> {
    fn drop(&mut self) {
        let mut inner = self.coordinator.lock();
        if let Some(turns) = inner.turns.get_mut(&self.key) {
            turns.users = turns.users.saturating_sub(1);
            if turns.users == 0 {
                inner.turns.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn versioned(version: u64, spent: u128) -> Versioned<ChannelState> {
        Versioned { version, value: ChannelState { spent, ..ChannelState::default() } }
    }

    #[test]
    fn remembers_at_most_capacity_states() {
        let c = UpdateCoordinator::new(3);
        for i in 0..10u64 {
            c.remember(&format!("k{i}"), versioned(i, 0));
            assert!(c.remembered_len() <= 3);
        }
        assert_eq!(c.remembered_len(), 3);
        // Replacing a remembered key evicts nothing.
        let kept: Vec<String> = (0..10).map(|i| format!("k{i}")).filter(|k| c.remembered(k).is_some()).collect();
        c.remember(&kept[0], versioned(99, 5));
        assert_eq!(c.remembered(&kept[0]), Some(versioned(99, 5)));
        assert!(kept.iter().all(|k| c.remembered(k).is_some()));
        c.forget(&kept[0]);
        assert_eq!(c.remembered(&kept[0]), None);
        let none = UpdateCoordinator::new(0);
        none.remember("k", versioned(1, 1));
        assert_eq!((none.remembered("k"), none.remembered_len()), (None, 0));
    }

    #[tokio::test]
    async fn turns_are_exclusive_per_key_and_leave_nothing_behind() {
        let c = Arc::new(UpdateCoordinator::default());
        let inside = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let tasks: Vec<_> = (0..16)
            .map(|i| {
                let (c, inside) = (Arc::clone(&c), Arc::clone(&inside));
                tokio::spawn(async move {
                    let key = if i % 2 == 0 { "a" } else { "b" };
                    for _ in 0..20 {
                        let _turn = c.turn(key).await;
                        let now = inside.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        // At most one holder per key: two keys ⇒ at most two inside.
                        assert!(now < 2);
                        tokio::task::yield_now().await;
                        inside.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(c.turn_entries(), 0);
    }

    #[tokio::test]
    async fn a_dropped_waiter_gives_its_place_back() {
        let c = UpdateCoordinator::default();
        let first = c.turn("k").await;
        // A waiter that gives up (a cancelled request).
        let waited = tokio::time::timeout(Duration::from_millis(20), c.turn("k")).await;
        assert!(waited.is_err(), "the key is busy");
        assert_eq!(c.turn_entries(), 1);
        drop(first);
        assert_eq!(c.turn_entries(), 0);
        let again = c.turn("k").await;
        assert_eq!(c.turn_entries(), 1);
        drop(again);
        assert_eq!(c.turn_entries(), 0);
    }
}
