//! The replay guard's store: a payment (payer + EIP-3009 nonce) is accepted once within its
//! validity window, *before* the handler runs.
//!
//! OKX's Python middleware relies on the facilitator alone and runs the handler for a replayed
//! payment (the second settlement then fails after the work was done). pay402 reserves the
//! payment's key atomically before verification, so concurrent duplicates cannot both pass.

use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

/// A replay store failed; callers fail closed (the request is refused).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("replay store unavailable: {0}")]
pub struct ReplayStoreError(pub String);

/// Records payment keys until they expire. Implementations must make
/// [`ReplayStore::insert_if_absent`] atomic (across processes, for shared stores).
#[async_trait]
pub trait ReplayStore: Send + Sync + 'static {
    /// Records `key` until `expires_at` (Unix seconds). Returns `false` when the key is already
    /// recorded and not expired.
    async fn insert_if_absent(&self, key: &str, expires_at: u64) -> Result<bool, ReplayStoreError>;

    /// Forgets `key` (a reservation whose payment was not consumed).
    async fn remove(&self, key: &str) -> Result<(), ReplayStoreError>;
}

/// The default bound of an [`InMemoryReplayStore`]: live keys it holds at most (an x402 key is
/// about 130 bytes, so the store stays within a few tens of MiB).
pub const DEFAULT_REPLAY_CAPACITY: usize = 262_144;

/// The message of the [`ReplayStoreError`] an [`InMemoryReplayStore`] returns when it is full.
pub const REPLAY_STORE_FULL: &str = "in-memory replay store full";

/// An in-process [`ReplayStore`]: enough for one server process only — several instances
/// behind a load balancer each accept the same payment once; share a
/// `RedisReplayStore` (feature `redis`) between them instead.
///
/// Expired keys are pruned as new ones arrive. The store is bounded
/// ([`DEFAULT_REPLAY_CAPACITY`] keys, [`InMemoryReplayStore::with_capacity`]): when it is full of
/// live keys a new key is refused with a [`ReplayStoreError`] ([`REPLAY_STORE_FULL`]; the
/// payment is refused, fail closed). A live key is never evicted, since that would let its
/// payment be replayed.
#[derive(Debug)]
pub struct InMemoryReplayStore {
    keys: Mutex<Keys>,
    capacity: usize,
}

#[derive(Debug, Default)]
struct Keys {
    map: HashMap<String, u64>,
    /// When a full store was last swept for expired keys (a full sweep at most once a second).
    last_sweep: u64,
}

impl Default for InMemoryReplayStore {
    fn default() -> Self {
        Self::with_capacity(DEFAULT_REPLAY_CAPACITY)
    }
}

impl InMemoryReplayStore {
    /// An empty store holding at most [`DEFAULT_REPLAY_CAPACITY`] live keys.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty store holding at most `capacity` live keys (at least 1).
    pub fn with_capacity(capacity: usize) -> Self {
        Self { keys: Mutex::new(Keys::default()), capacity: capacity.max(1) }
    }

    /// The most live keys it holds.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Number of live keys.
    pub fn len(&self) -> usize {
        self.keys.lock().map(|k| k.map.len()).unwrap_or(0)
    }

    /// True when no key is recorded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

pub(crate) fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

#[async_trait]
impl ReplayStore for InMemoryReplayStore {
    async fn insert_if_absent(&self, key: &str, expires_at: u64) -> Result<bool, ReplayStoreError> {
        let now = unix_now();
        let mut guard = self.keys.lock().map_err(|_| ReplayStoreError("lock poisoned".into()))?;
        let keys = &mut *guard;
        if keys.map.len() > 1024 && keys.map.len().is_power_of_two() {
            keys.map.retain(|_, exp| *exp >= now);
        }
        match keys.map.get(key) {
            Some(exp) if *exp >= now => return Ok(false),
            Some(_) => {}
            None if keys.map.len() >= self.capacity => {
                if keys.last_sweep != now {
                    keys.last_sweep = now;
                    keys.map.retain(|_, exp| *exp >= now);
                }
                if keys.map.len() >= self.capacity {
                    return Err(ReplayStoreError(REPLAY_STORE_FULL.into()));
                }
            }
            None => {}
        }
        keys.map.insert(key.to_owned(), expires_at);
        Ok(true)
    }

    async fn remove(&self, key: &str) -> Result<(), ReplayStoreError> {
        let mut keys = self.keys.lock().map_err(|_| ReplayStoreError("lock poisoned".into()))?;
        keys.map.remove(key);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn once_per_window() {
        let s = InMemoryReplayStore::new();
        let later = unix_now() + 60;
        assert!(s.insert_if_absent("a", later).await.unwrap());
        assert!(!s.insert_if_absent("a", later).await.unwrap());
        s.remove("a").await.unwrap();
        assert!(s.insert_if_absent("a", later).await.unwrap());
        // An expired record does not block.
        assert!(s.insert_if_absent("b", 0).await.unwrap());
        assert!(s.insert_if_absent("b", later).await.unwrap());
    }

    #[tokio::test]
    async fn bounded_without_evicting_live_keys() {
        let s = InMemoryReplayStore::with_capacity(3);
        let later = unix_now() + 60;
        for k in ["a", "b", "c"] {
            assert!(s.insert_if_absent(k, later).await.unwrap());
        }
        assert_eq!(s.insert_if_absent("d", later).await, Err(ReplayStoreError(REPLAY_STORE_FULL.into())));
        assert!(!s.insert_if_absent("a", later).await.unwrap(), "a live key is still refused");
        s.remove("b").await.unwrap();
        assert!(s.insert_if_absent("d", later).await.unwrap());
        assert_eq!(s.len(), 3);
    }
}
