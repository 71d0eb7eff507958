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

/// An in-process [`ReplayStore`]: enough for one server process. Expired keys are pruned as new
/// ones arrive.
#[derive(Debug, Default)]
pub struct InMemoryReplayStore {
    keys: Mutex<HashMap<String, u64>>,
}

impl InMemoryReplayStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of live keys.
    pub fn len(&self) -> usize {
        self.keys.lock().map(|k| k.len()).unwrap_or(0)
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
        let mut keys = self.keys.lock().map_err(|_| ReplayStoreError("lock poisoned".into()))?;
        if keys.len() > 1024 && keys.len().is_power_of_two() {
            keys.retain(|_, exp| *exp >= now);
        }
        match keys.get(key) {
            Some(exp) if *exp >= now => Ok(false),
            _ => {
                keys.insert(key.to_owned(), expires_at);
                Ok(true)
            }
        }
    }

    async fn remove(&self, key: &str) -> Result<(), ReplayStoreError> {
        let mut keys = self.keys.lock().map_err(|_| ReplayStoreError("lock poisoned".into()))?;
        keys.remove(key);
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
}
