//! [`RecordStore`]: what became of a payment, kept where every server instance can read it.
//!
//! The replay guard ([`ReplayStore`](super::ReplayStore)) only says "this payment was seen". An
//! unknown settlement outcome needs more: the payment itself (to reconcile it later, from any
//! instance), the transaction when one is known, and whether the response it paid for was
//! delivered. A record store holds such small values under keys and changes them only by an
//! atomic compare-and-swap, so two instances answering retries of one payment cannot both
//! deliver it, and a reconciler cannot overwrite a newer state.
//!
//! * [`InMemoryRecordStore`] — one process (the default);
//! * [`RedisRecordStore`](super::RedisRecordStore) (feature `redis`) — shared by every server
//!   using the same Redis (a Lua compare-and-swap).

use super::{ReplayStoreError, unix_now};
use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::Mutex;

/// Small values under keys, changed only by an atomic compare-and-swap, each expiring at a
/// Unix time. Implementations must make [`RecordStore::swap`] atomic across every process that
/// shares the store.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a record store",
    label = "does not implement `pay402::replay::RecordStore`",
    note = "implement `RecordStore` with `get`, an atomic compare-and-swap `swap` and a prefix listing `keys`",
    note = "or use a built-in one: `InMemoryRecordStore` (one process) or `RedisRecordStore` (feature `redis`, several servers)"
)]
#[async_trait]
pub trait RecordStore: Send + Sync + 'static {
    /// The live value under `key` (`None` when absent or expired).
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, ReplayStoreError>;

    /// Replaces the value under `key` with `new` (`None`: removes it) only if the live value is
    /// exactly `expected` (`None`: absent or expired). The new value lives until `expires_at`
    /// (Unix seconds). Returns whether the swap happened.
    async fn swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
        expires_at: u64,
    ) -> Result<bool, ReplayStoreError>;

    /// Up to `limit` live keys starting with `prefix` (any order), for a reconciler's sweep.
    async fn keys(&self, prefix: &str, limit: usize) -> Result<Vec<String>, ReplayStoreError>;
}

/// The default bound of an [`InMemoryRecordStore`]: live records it holds at most.
pub const DEFAULT_RECORD_CAPACITY: usize = 65_536;

/// An in-process [`RecordStore`]: one server instance only (retries that land on another
/// instance do not see its records; share a [`RedisRecordStore`](super::RedisRecordStore)).
///
/// Bounded ([`DEFAULT_RECORD_CAPACITY`], [`InMemoryRecordStore::with_capacity`]): when full of
/// live records a new one is refused with [`ReplayStoreError::Full`] (callers fail closed); a
/// live record is never evicted.
#[derive(Debug)]
pub struct InMemoryRecordStore {
    map: Mutex<HashMap<String, (Vec<u8>, u64)>>,
    capacity: usize,
}

impl Default for InMemoryRecordStore {
    fn default() -> Self {
        Self::with_capacity(DEFAULT_RECORD_CAPACITY)
    }
}

impl InMemoryRecordStore {
    /// An empty store holding at most [`DEFAULT_RECORD_CAPACITY`] live records.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty store holding at most `capacity` live records (at least 1).
    pub fn with_capacity(capacity: usize) -> Self {
        Self { map: Mutex::new(HashMap::new()), capacity: capacity.max(1) }
    }

    /// Number of live records.
    pub fn len(&self) -> usize {
        let now = unix_now();
        self.map.lock().map(|m| m.values().filter(|(_, exp)| *exp >= now).count()).unwrap_or(0)
    }

    /// True when no live record is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[async_trait]
impl RecordStore for InMemoryRecordStore {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, ReplayStoreError> {
        let now = unix_now();
        let map = self.map.lock().map_err(|_| ReplayStoreError::Poisoned)?;
        Ok(map.get(key).filter(|(_, exp)| *exp >= now).map(|(v, _)| v.clone()))
    }

    async fn swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
        expires_at: u64,
    ) -> Result<bool, ReplayStoreError> {
        if key.is_empty() {
            return Err(ReplayStoreError::EmptyKey);
        }
        let now = unix_now();
        let mut map = self.map.lock().map_err(|_| ReplayStoreError::Poisoned)?;
        let current = map.get(key).filter(|(_, exp)| *exp >= now).map(|(v, _)| v.as_slice());
        if current != expected {
            return Ok(false);
        }
        match new {
            None => {
                map.remove(key);
            }
            Some(value) => {
                if current.is_none() && map.len() >= self.capacity {
                    map.retain(|_, (_, exp)| *exp >= now);
                    if map.len() >= self.capacity {
                        return Err(ReplayStoreError::Full);
                    }
                }
                map.insert(key.to_owned(), (value.to_vec(), expires_at));
            }
        }
        Ok(true)
    }

    async fn keys(&self, prefix: &str, limit: usize) -> Result<Vec<String>, ReplayStoreError> {
        let now = unix_now();
        let map = self.map.lock().map_err(|_| ReplayStoreError::Poisoned)?;
        Ok(map
            .iter()
            .filter(|(k, (_, exp))| *exp >= now && k.starts_with(prefix))
            .map(|(k, _)| k.clone())
            .take(limit)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn compare_and_swap() {
        let s = InMemoryRecordStore::with_capacity(2);
        let later = unix_now() + 60;
        assert!(s.swap("a", None, Some(b"1"), later).await.unwrap());
        assert!(!s.swap("a", None, Some(b"2"), later).await.unwrap(), "present: an insert loses");
        assert!(!s.swap("a", Some(b"0"), Some(b"2"), later).await.unwrap(), "stale expectation loses");
        assert!(s.swap("a", Some(b"1"), Some(b"2"), later).await.unwrap());
        assert_eq!(s.get("a").await.unwrap().as_deref(), Some(&b"2"[..]));
        assert!(s.swap("b", None, Some(b"x"), later).await.unwrap());
        assert_eq!(s.swap("c", None, Some(b"y"), later).await, Err(ReplayStoreError::Full));
        assert!(s.swap("b", Some(b"x"), None, later).await.unwrap());
        assert!(s.swap("c", None, Some(b"y"), later).await.unwrap());
        let mut keys = s.keys("", 10).await.unwrap();
        keys.sort();
        assert_eq!(keys, ["a", "c"]);
        // An expired record reads as absent and does not block an insert.
        assert!(s.swap("a", Some(b"2"), Some(b"3"), 0).await.unwrap());
        assert_eq!(s.get("a").await.unwrap(), None);
        assert!(s.swap("a", None, Some(b"4"), later).await.unwrap());
    }
}
