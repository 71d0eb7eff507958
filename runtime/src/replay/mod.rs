//! The replay guard's store: a payment (payer + EIP-3009 nonce) is accepted once within its
//! validity window, *before* the handler runs.
//!
//! OKX's Python middleware relies on the facilitator alone and runs the handler for a replayed
//! payment (the second settlement then fails after the work was done). pay402 reserves the
//! payment's key atomically before verification, so concurrent duplicates cannot both pass.
//!
//! * [`InMemoryReplayStore`] — one process (the default of every guard);
//! * [`RedisReplayStore`] (feature `redis`) — shared by every server using the same Redis.
//!
//! Beside it, [`RecordStore`] keeps what became of a payment whose settlement outcome was
//! unknown (records changed only by compare-and-swap): [`InMemoryRecordStore`],
//! [`RedisRecordStore`] (feature `redis`).
//!
//! The MPP coordinator keeps its single-use challenge ids and the session intent its voucher
//! and deposit keys in the same kind of store.

use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

mod records;
#[cfg(feature = "redis")]
mod redis;

pub use self::records::{DEFAULT_RECORD_BYTES, DEFAULT_RECORD_CAPACITY, InMemoryRecordStore, RecordStore};

#[cfg(feature = "redis")]
pub(crate) use self::redis::{RedisConnectError, connect_redis, is_connection_problem};
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use self::redis::{RedisRecordStore, RedisReplayStore};

/// A replay store failed; callers fail closed (the request is refused).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReplayStoreError {
    /// An [`InMemoryReplayStore`] holds its capacity of live keys; a live key is never evicted.
    #[error("replay store unavailable: in-memory replay store full")]
    Full,
    /// A lock was poisoned (a thread panicked while holding it).
    #[error("replay store unavailable: lock poisoned")]
    Poisoned,
    /// The key is empty.
    #[error("replay store unavailable: empty replay key")]
    EmptyKey,
    /// The backend cannot be reached (connection refused or dropped, timeout).
    #[error("replay store unavailable: {0}")]
    Unavailable(String),
    /// The backend answered an error.
    #[error("replay store unavailable: {0}")]
    Backend(String),
    /// The store was configured wrongly (e.g. a malformed Redis URL).
    #[error("replay store misconfigured: {0}")]
    Config(String),
}

/// Records payment keys until they expire. Implementations must make
/// [`ReplayStore::insert_if_absent`] atomic (across processes, for shared stores).
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a replay store",
    label = "does not implement `pay402::replay::ReplayStore`",
    note = "implement `ReplayStore` with an atomic insert-if-absent (`insert_if_absent` records a key at most once until it expires, across every process sharing the store) and `remove`",
    note = "or use a built-in one: `InMemoryReplayStore` (one process) or `RedisReplayStore` (feature `redis`, several servers)"
)]
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

/// An in-process [`ReplayStore`]: enough for one server process only — several instances
/// behind a load balancer each accept the same payment once; share a
/// [`RedisReplayStore`] (feature `redis`) between them instead.
///
/// Expired keys are pruned as new ones arrive. The store is bounded
/// ([`DEFAULT_REPLAY_CAPACITY`] keys, [`InMemoryReplayStore::with_capacity`]): when it is full of
/// live keys a new key is refused with [`ReplayStoreError::Full`] (the
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
        let mut guard = self.keys.lock().map_err(|_| ReplayStoreError::Poisoned)?;
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
                    return Err(ReplayStoreError::Full);
                }
            }
            None => {}
        }
        keys.map.insert(key.to_owned(), expires_at);
        Ok(true)
    }

    async fn remove(&self, key: &str) -> Result<(), ReplayStoreError> {
        let mut keys = self.keys.lock().map_err(|_| ReplayStoreError::Poisoned)?;
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
        assert_eq!(s.insert_if_absent("d", later).await, Err(ReplayStoreError::Full));
        assert!(!s.insert_if_absent("a", later).await.unwrap(), "a live key is still refused");
        s.remove("b").await.unwrap();
        assert!(s.insert_if_absent("d", later).await.unwrap());
        assert_eq!(s.len(), 3);
    }
}
