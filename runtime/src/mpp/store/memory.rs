//! [`InMemoryChannelStore`]: one process, lost on restart (Python's `InMemoryChannelStore`).

use super::{CasOutcome, ChannelState, ChannelStore, StoreError, Versioned, check_key_basic};
use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::Mutex;

/// An in-process [`ChannelStore`]: a map behind a mutex, with deep copies on the way in and
/// out. Versions come from one counter that only grows, so a re-created key never reuses a
/// version. Not shared between processes or workers: use [`super::FileStore`] (one host) or
/// `RedisChannelStore` (several hosts) for that.
#[derive(Debug, Default)]
pub struct InMemoryChannelStore {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    next_version: u64,
    states: HashMap<String, Versioned<ChannelState>>,
}

impl Inner {
    fn bump(&mut self) -> u64 {
        self.next_version += 1;
        self.next_version
    }
}

impl InMemoryChannelStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of stored channels.
    pub fn len(&self) -> usize {
        self.inner.lock().map(|i| i.states.len()).unwrap_or(0)
    }

    /// True when no channel is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Inner>, StoreError> {
        self.inner.lock().map_err(|_| StoreError::Backend("in-memory store lock poisoned".into()))
    }
}

#[async_trait]
impl ChannelStore for InMemoryChannelStore {
    async fn get(&self, key: &str) -> Result<Option<Versioned<ChannelState>>, StoreError> {
        check_key_basic(key)?;
        Ok(self.lock()?.states.get(key).cloned())
    }

    async fn put_if_absent(&self, key: &str, state: &ChannelState) -> Result<bool, StoreError> {
        check_key_basic(key)?;
        let mut inner = self.lock()?;
        if inner.states.contains_key(key) {
            return Ok(false);
        }
        let version = inner.bump();
        inner.states.insert(key.to_owned(), Versioned { version, value: state.clone() });
        Ok(true)
    }

    async fn compare_and_swap(
        &self,
        key: &str,
        expected_version: u64,
        new_state: &ChannelState,
    ) -> Result<CasOutcome, StoreError> {
        check_key_basic(key)?;
        let mut inner = self.lock()?;
        let version = inner.next_version + 1;
        let Some(slot) = inner.states.get_mut(key) else { return Ok(CasOutcome::Missing) };
        if slot.version != expected_version {
            return Ok(CasOutcome::Conflict(Box::new(slot.clone())));
        }
        *slot = Versioned { version, value: new_state.clone() };
        inner.next_version = version;
        Ok(CasOutcome::Swapped(version))
    }

    async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        check_key_basic(key)?;
        Ok(self.lock()?.states.remove(key).is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn versions_never_repeat_after_delete() {
        let s = InMemoryChannelStore::new();
        let st = ChannelState::new("0xc", 196, "0xe", "0xp", "0xq");
        assert!(s.put_if_absent("k", &st).await.unwrap());
        assert!(!s.put_if_absent("k", &st).await.unwrap());
        let v1 = s.get("k").await.unwrap().unwrap().version;
        assert!(s.delete("k").await.unwrap());
        assert!(!s.delete("k").await.unwrap());
        assert_eq!(s.compare_and_swap("k", v1, &st).await.unwrap(), CasOutcome::Missing);
        assert!(s.put_if_absent("k", &st).await.unwrap());
        // The writer that read the deleted incarnation cannot overwrite the new one.
        assert!(matches!(s.compare_and_swap("k", v1, &st).await.unwrap(), CasOutcome::Conflict(_)));
        // Copies: changing what get returned does not change the store.
        let mut got = s.get("k").await.unwrap().unwrap();
        got.value.spent = 99;
        assert_eq!(s.get("k").await.unwrap().unwrap().value.spent, 0);
        assert_eq!(s.len(), 1);
    }
}
