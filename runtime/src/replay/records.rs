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
/// The default bound of an [`InMemoryRecordStore`] in bytes (keys and values).
pub const DEFAULT_RECORD_BYTES: usize = 64 * 1024 * 1024;

/// An in-process [`RecordStore`]: one server instance only (retries that land on another
/// instance do not see its records; share a [`RedisRecordStore`](super::RedisRecordStore)).
///
/// Bounded in records and bytes ([`DEFAULT_RECORD_CAPACITY`], [`DEFAULT_RECORD_BYTES`],
/// [`InMemoryRecordStore::with_capacity`], [`InMemoryRecordStore::with_max_bytes`]): when full
/// of live records a write is refused with [`ReplayStoreError::Full`] (callers fail closed); a
/// live record is never evicted.
#[derive(Debug)]
pub struct InMemoryRecordStore {
    map: Mutex<Records>,
    capacity: usize,
    max_bytes: usize,
}

#[derive(Debug, Default)]
struct Records {
    map: HashMap<String, (Vec<u8>, u64)>,
    /// Bytes of the keys and values held.
    bytes: usize,
}

impl Records {
    /// Drops expired records.
    fn prune(&mut self, now: u64) {
        let mut freed = 0;
        self.map.retain(|k, (v, exp)| {
            let live = *exp >= now;
            if !live {
                freed += k.len() + v.len();
            }
            live
        });
        self.bytes -= freed;
    }
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
        Self { map: Mutex::new(Records::default()), capacity: capacity.max(1), max_bytes: DEFAULT_RECORD_BYTES }
    }

    /// The same store holding at most `max_bytes` of keys and values.
    pub fn with_max_bytes(mut self, max_bytes: usize) -> Self {
        self.max_bytes = max_bytes;
        self
    }

    /// Number of live records.
    pub fn len(&self) -> usize {
        let now = unix_now();
        self.map.lock().map(|m| m.map.values().filter(|(_, exp)| *exp >= now).count()).unwrap_or(0)
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
        let records = self.map.lock().map_err(|_| ReplayStoreError::Poisoned)?;
        Ok(records.map.get(key).filter(|(_, exp)| *exp >= now).map(|(v, _)| v.clone()))
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
        let mut records = self.map.lock().map_err(|_| ReplayStoreError::Poisoned)?;
        let current = records.map.get(key).filter(|(_, exp)| *exp >= now).map(|(v, _)| v.as_slice());
        if current != expected {
            return Ok(false);
        }
        let old = records.map.get(key).map_or(0, |(v, _)| key.len() + v.len());
        match new {
            None => {
                records.map.remove(key);
                records.bytes -= old;
            }
            Some(value) => {
                let size = key.len() + value.len();
                let full =
                    |r: &Records| (old == 0 && r.map.len() >= self.capacity) || r.bytes - old + size > self.max_bytes;
                if full(&records) {
                    records.prune(now);
                    let old_now = records.map.get(key).map_or(0, |(v, _)| key.len() + v.len());
                    if (old_now == 0 && records.map.len() >= self.capacity)
                        || records.bytes - old_now + size > self.max_bytes
                    {
                        return Err(ReplayStoreError::Full);
                    }
                }
                let old = records.map.get(key).map_or(0, |(v, _)| key.len() + v.len());
                records.map.insert(key.to_owned(), (value.to_vec(), expires_at));
                records.bytes = records.bytes - old + size;
            }
        }
        Ok(true)
    }

    async fn keys(&self, prefix: &str, limit: usize) -> Result<Vec<String>, ReplayStoreError> {
        let now = unix_now();
        let records = self.map.lock().map_err(|_| ReplayStoreError::Poisoned)?;
        Ok(records
            .map
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

    #[tokio::test]
    async fn bounded_in_bytes() {
        let s = InMemoryRecordStore::new().with_max_bytes(10);
        let later = unix_now() + 60;
        assert!(s.swap("k", None, Some(b"12345"), later).await.unwrap()); // 6 bytes
        assert_eq!(s.swap("j", None, Some(b"12345"), later).await, Err(ReplayStoreError::Full));
        // Replacing a record counts its new size only.
        assert!(s.swap("k", Some(b"12345"), Some(b"123456789"), later).await.unwrap()); // 10 bytes
        assert!(s.swap("k", Some(b"123456789"), None, later).await.unwrap());
        assert!(s.swap("j", None, Some(b"12345"), later).await.unwrap());
    }
}
