//! Where MPP sessions keep their payment channels (wire facts §9.4-9.5, §9.9-9.10).
//!
//! A session action (voucher, deduct, topUp, close) is a read-modify-write of one
//! [`ChannelState`]. Python's `mpp_evm` serialises those with one `asyncio.Lock` per channel,
//! which only holds inside one process. pay402's [`ChannelStore`] instead exposes an atomic
//! **compare-and-swap**, so several workers or hosts can share one store without losing
//! updates (a lost `spent` increment is a free request; a lost voucher is lost money):
//!
//! * [`InMemoryChannelStore`] — one process (the default);
//! * [`FileStore`] — byte-compatible with Python's `FileStore` directory, safe across the
//!   processes of one host (per-key advisory lock files, atomic renames);
//! * `RedisChannelStore` (feature `redis`) — shared across hosts; also `RedisReplayStore`, a
//!   shared [`ReplayStore`] for x402 replay guards and MPP single-use challenge ids.
//!
//! A backend that cannot provide an atomic compare-and-swap must not implement
//! [`ChannelStore`]: the session logic relies on it to fail closed.

pub mod file;
pub mod memory;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub mod redis;
pub mod state;

pub use self::file::FileStore;
pub use self::memory::InMemoryChannelStore;
#[cfg(feature = "redis")]
pub use self::redis::{RedisChannelStore, RedisReplayStore};
pub use self::state::{ChannelState, ChannelStateError, format_created_at};
pub use crate::replay::{InMemoryReplayStore, ReplayStore, ReplayStoreError};

use async_trait::async_trait;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::time::Duration;

/// A store operation failed. Every variant means "the operation did not happen (or its outcome
/// is unknown)": callers fail closed and refuse the request.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The key cannot be used: empty, containing `/`, `\` or NUL, `..`, too long, or (for
    /// [`FileStore`]) resolving outside the store directory (e.g. through a symlink).
    #[error("invalid store key")]
    InvalidKey {
        /// The rejected key.
        key: String,
    },
    /// A file-system operation failed.
    #[error("store I/O failed ({op}): {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A stored value could not be parsed (or a state could not be serialised).
    #[error("corrupt channel state under {key:?}: {source}")]
    Corrupt {
        /// The key.
        key: String,
        /// What is wrong with it.
        #[source]
        source: ChannelStateError,
    },
    /// The backend cannot be reached (connection refused or dropped, timeout).
    #[error("channel store unavailable: {0}")]
    Unavailable(String),
    /// The backend answered something unexpected.
    #[error("channel store backend error: {0}")]
    Backend(String),
    /// The store was configured wrongly (e.g. a malformed Redis URL).
    #[error("channel store misconfigured: {0}")]
    Config(String),
    /// [`ChannelStore::update`] lost the compare-and-swap race `attempts` times in a row and
    /// gave up; nothing was written by this call.
    #[error("channel {key:?} is too contended: compare-and-swap lost {attempts} times")]
    ConflictExhausted {
        /// The key.
        key: String,
        /// How many compare-and-swap attempts were made.
        attempts: u32,
    },
}

impl StoreError {
    pub(crate) fn invalid_key(key: &str) -> Self {
        Self::InvalidKey { key: key.to_owned() }
    }

    pub(crate) fn corrupt(key: &str, source: ChannelStateError) -> Self {
        Self::Corrupt { key: key.to_owned(), source }
    }
}

/// A value with the version it was read at.
///
/// Versions are opaque tokens: only compare them for equality, and only pass them back to the
/// store that produced them. [`InMemoryChannelStore`] and `RedisChannelStore` use a counter
/// that only grows (also across delete + re-create); [`FileStore`] uses a hash of the file's
/// bytes (an unchanged file keeps its version, which is harmless: the state is the same).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Versioned<T> {
    /// The version token.
    pub version: u64,
    /// The value.
    pub value: T,
}

/// What [`ChannelStore::compare_and_swap`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CasOutcome {
    /// The new state was written; it has this version.
    Swapped(u64),
    /// Someone wrote first: nothing was written; here is the current state (boxed: a state
    /// is large next to a version).
    Conflict(Box<Versioned<ChannelState>>),
    /// The key does not exist (deleted meanwhile): nothing was written.
    Missing,
}

/// What [`ChannelStore::update`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UpdateOutcome {
    /// The closure returned a new state and it was written.
    Updated(Versioned<ChannelState>),
    /// The closure returned `None`: nothing was written; the state it saw.
    Unchanged(Versioned<ChannelState>),
    /// The key does not exist (or was deleted during the update).
    Missing,
}

/// [`ChannelStore::update`] failed.
#[derive(Debug, thiserror::Error)]
pub enum UpdateError<E> {
    /// The store failed (including [`StoreError::ConflictExhausted`]); nothing was written by
    /// this call.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The closure refused the update; nothing was written.
    #[error("update rejected")]
    Rejected(E),
}

/// How [`ChannelStore::update`] retries lost compare-and-swap races: at most `max_attempts`
/// attempts; before retry `n` (1-based) it sleeps a random duration in
/// `[0, min(max_delay, base_delay · 2ⁿ⁻¹)]` ("full jitter").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Total compare-and-swap attempts (at least 1).
    pub max_attempts: u32,
    /// The first retry's maximum delay.
    pub base_delay: Duration,
    /// The cap on any one delay.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    /// 64 attempts, 2 ms base, 100 ms cap: enough for dozens of concurrent writers of one
    /// channel; a single update waits at most a few seconds before failing closed.
    fn default() -> Self {
        Self { max_attempts: 64, base_delay: Duration::from_millis(2), max_delay: Duration::from_millis(100) }
    }
}

impl RetryPolicy {
    fn delay(&self, retry: u32) -> Duration {
        let exp = self.base_delay.saturating_mul(1u32 << retry.saturating_sub(1).min(20));
        let cap = exp.min(self.max_delay);
        let nanos = u64::try_from(cap.as_nanos()).unwrap_or(u64::MAX);
        if nanos == 0 {
            return Duration::ZERO;
        }
        Duration::from_nanos(random_u64() % (nanos + 1))
    }
}

/// A non-cryptographic random number (jitter, temp-file names).
pub(crate) fn random_u64() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos());
    h.finish()
}

/// Storage for MPP channel states with an atomic compare-and-swap.
///
/// # Contract
///
/// For one key, every implementation behaves as if all operations happened one at a time, in
/// some order consistent with real time (linearisable), **across every process and host that
/// shares the store**:
///
/// * [`get`](Self::get) returns the current state and its version, or `None`.
/// * [`put_if_absent`](Self::put_if_absent) writes only when the key does not exist and says
///   whether it wrote. Of concurrent callers, exactly one gets `true`.
/// * [`compare_and_swap`](Self::compare_and_swap) writes `new_state` only if the stored version
///   still equals `expected_version`: a writer that read a state someone has since replaced
///   (a *stale* writer) gets [`CasOutcome::Conflict`] with the current state and never
///   overwrites it. It never creates a key ([`CasOutcome::Missing`]).
/// * [`delete`](Self::delete) removes the key and says whether it existed. A version is never
///   reused for a re-created key in a way that lets a writer that read the deleted state
///   overwrite the new one — except in [`FileStore`], where versions are content hashes and a
///   re-created *identical* state may accept it (which writes what that writer would have
///   computed from the current state anyway).
/// * A write is durable-or-absent: a crash or a dropped future leaves the old or the new state,
///   never a mixture. An `Err` means the outcome is unknown or nothing happened; callers fail
///   closed (refuse the request) rather than guess.
///
/// Reads and writes copy: mutating a returned state never changes the stored one.
///
/// Read-modify-write goes through [`update`](Self::update), which retries the
/// compare-and-swap with backoff. The trait is object safe (`Arc<dyn ChannelStore>`);
/// `update` needs a sized receiver, which the forwarding implementations for `Arc<S>`,
/// `Box<S>` and `&S` provide: `arc_dyn.update(..)` works as is, and for a
/// `store: &dyn ChannelStore` write `(&store).update(..)`.
#[async_trait]
pub trait ChannelStore: Send + Sync {
    /// The current state of `key` and its version; `None` when absent.
    async fn get(&self, key: &str) -> Result<Option<Versioned<ChannelState>>, StoreError>;

    /// Stores `state` under `key` unless the key exists; `true` when it wrote.
    async fn put_if_absent(&self, key: &str, state: &ChannelState) -> Result<bool, StoreError>;

    /// Replaces the state of `key` with `new_state` if its version is still `expected_version`.
    async fn compare_and_swap(
        &self,
        key: &str,
        expected_version: u64,
        new_state: &ChannelState,
    ) -> Result<CasOutcome, StoreError>;

    /// Removes `key`; `true` when it existed.
    async fn delete(&self, key: &str) -> Result<bool, StoreError>;

    /// Read-modify-write of `key` with the [default retry policy](RetryPolicy::default).
    ///
    /// `f` sees the current state and returns `Ok(Some(new))` to write `new`, `Ok(None)` to
    /// leave the state alone, or `Err(e)` to abort ([`UpdateError::Rejected`]). When another
    /// writer wins the race, `f` runs again on the newer state, so it must not have side
    /// effects beyond computing the new state. Exhausted retries ⇒
    /// [`StoreError::ConflictExhausted`] (fail closed; nothing written by this call).
    async fn update<F, E>(&self, key: &str, f: F) -> Result<UpdateOutcome, UpdateError<E>>
    where
        Self: Sized,
        F: FnMut(&ChannelState) -> Result<Option<ChannelState>, E> + Send,
        E: Send,
    {
        self.update_with(key, RetryPolicy::default(), f).await
    }

    /// [`update`](Self::update) with an explicit retry policy.
    async fn update_with<F, E>(&self, key: &str, policy: RetryPolicy, f: F) -> Result<UpdateOutcome, UpdateError<E>>
    where
        Self: Sized,
        F: FnMut(&ChannelState) -> Result<Option<ChannelState>, E> + Send,
        E: Send,
    {
        run_update(self, key, policy, f).await
    }
}

/// The compare-and-swap loop behind every `update`.
async fn run_update<S, F, E>(
    store: &S,
    key: &str,
    policy: RetryPolicy,
    mut f: F,
) -> Result<UpdateOutcome, UpdateError<E>>
where
    S: ChannelStore + ?Sized,
    F: FnMut(&ChannelState) -> Result<Option<ChannelState>, E> + Send,
    E: Send,
{
    let Some(mut current) = store.get(key).await? else { return Ok(UpdateOutcome::Missing) };
    let attempts = policy.max_attempts.max(1);
    for attempt in 1..=attempts {
        let Some(next) = f(&current.value).map_err(UpdateError::Rejected)? else {
            return Ok(UpdateOutcome::Unchanged(current));
        };
        match store.compare_and_swap(key, current.version, &next).await? {
            CasOutcome::Swapped(version) => return Ok(UpdateOutcome::Updated(Versioned { version, value: next })),
            CasOutcome::Missing => return Ok(UpdateOutcome::Missing),
            CasOutcome::Conflict(now) => {
                current = *now;
                crate::metrics::record_store_cas_conflict();
                tracing::debug!(
                    key,
                    attempt,
                    max_attempts = attempts,
                    "mpp store: compare-and-swap conflict, retrying"
                );
                if attempt < attempts {
                    tokio::time::sleep(policy.delay(attempt)).await;
                }
            }
        }
    }
    Err(StoreError::ConflictExhausted { key: key.to_owned(), attempts }.into())
}

macro_rules! forward_channel_store {
    ($($ty:ty),*) => {$(
        #[async_trait]
        impl<S: ChannelStore + ?Sized> ChannelStore for $ty {
            async fn get(&self, key: &str) -> Result<Option<Versioned<ChannelState>>, StoreError> {
                (**self).get(key).await
            }
            async fn put_if_absent(&self, key: &str, state: &ChannelState) -> Result<bool, StoreError> {
                (**self).put_if_absent(key, state).await
            }
            async fn compare_and_swap(
                &self,
                key: &str,
                expected_version: u64,
                new_state: &ChannelState,
            ) -> Result<CasOutcome, StoreError> {
                (**self).compare_and_swap(key, expected_version, new_state).await
            }
            async fn delete(&self, key: &str) -> Result<bool, StoreError> {
                (**self).delete(key).await
            }
        }
    )*};
}

forward_channel_store!(Arc<S>, Box<S>, &S);

/// Key checks shared by every backend: non-empty, no NUL, at most 200 bytes.
pub(crate) fn check_key_basic(key: &str) -> Result<(), StoreError> {
    if key.is_empty() || key.len() > 200 || key.contains('\0') {
        return Err(StoreError::invalid_key(key));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
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
}
