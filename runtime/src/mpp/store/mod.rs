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
//! * [`RedisChannelStore`] (feature `redis`) — shared across hosts (its
//!   [`replay_store`](RedisChannelStore::replay_store) is a
//!   [`RedisReplayStore`](crate::replay::RedisReplayStore) on the same connection).
//!
//! A backend that cannot provide an atomic compare-and-swap must not implement
//! [`ChannelStore`]: the session logic relies on it to fail closed.

mod coordinator;
mod file;
mod memory;
#[cfg(feature = "redis")]
mod redis;
mod state;

pub use self::coordinator::{DEFAULT_REMEMBERED_STATES, UpdateCoordinator};
pub use self::file::FileStore;
pub use self::memory::InMemoryChannelStore;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use self::redis::RedisChannelStore;
pub use self::state::{ChannelState, ChannelStateError, StreamCounts, StreamRecord};

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
/// compare-and-swap with backoff (and, for stores with an [`UpdateCoordinator`], queues the
/// updates of one key within the process and skips the read when the key's state is known).
/// The trait is object safe (`Arc<dyn ChannelStore>`); `update` needs a sized receiver, which
/// the forwarding implementations for `Arc<S>`, `Box<S>` and `&S` provide: `arc_dyn.update(..)`
/// works as is, and for a `store: &dyn ChannelStore` write `(&store).update(..)`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an MPP channel store",
    label = "does not implement `pay402::mpp::ChannelStore`",
    note = "implement `ChannelStore`: `get`, `put_if_absent`, `delete` and an atomic compare-and-swap (`compare_and_swap` writes only if the stored version is still the one read, linearisable across every process sharing the store); a backend without one must not implement it",
    note = "or use a built-in one: `InMemoryChannelStore` (one process), `FileStore` (the processes of one host) or `RedisChannelStore` (feature `redis`, several hosts)"
)]
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

    /// The in-process [`UpdateCoordinator`] [`update`](Self::update) uses for this store, if
    /// any (default: none — every update reads the store first and retries lost races with
    /// backoff). With one, updates of a key take turns in this process and compare-and-swap
    /// against the key's last known state without reading first. A store returning one keeps
    /// one coordinator per store instance (shared by its clones, never by another store).
    fn update_coordinator(&self) -> Option<&UpdateCoordinator> {
        None
    }

    /// Read-modify-write of `key` with the [default retry policy](RetryPolicy::default).
    ///
    /// `f` sees the current state and returns `Ok(Some(new))` to write `new`, `Ok(None)` to
    /// leave the state alone, or `Err(e)` to abort ([`UpdateError::Rejected`]). When another
    /// writer wins the race, `f` runs again on the newer state, so it must not have side
    /// effects beyond computing the new state. Exhausted retries ⇒
    /// [`StoreError::ConflictExhausted`] (fail closed; nothing written by this call).
    ///
    /// With an [`update_coordinator`](Self::update_coordinator) ([`FileStore`],
    /// `RedisChannelStore`), updates of one key take turns within the process, and `f` may
    /// first see the key's last known state rather than a fresh read: a write computed from it
    /// only lands if the state is still current, and `Ok(None)` or `Err` on it makes `update`
    /// read the store and run `f` again, so every outcome rests on a current state.
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

/// With an [`UpdateCoordinator`], how many lost races in a row are retried without backoff.
const IMMEDIATE_RETRIES: u32 = 8;

/// The compare-and-swap loop behind every `update`.
///
/// Without a coordinator: read, compute, compare-and-swap; a lost race retries on the state the
/// compare-and-swap returned, after a jittered backoff. With one ([`UpdateCoordinator`]): the
/// update first waits for the key's in-process turn, then starts from the remembered state when
/// there is one (no read). A lost race on a remembered state only means it was stale: the retry
/// on the returned (current) state is immediate, and so are the first [`IMMEDIATE_RETRIES`]
/// races lost to other processes (whose writers do not back off either: their in-process
/// queues keep writing). A decision not to write is only taken on a state read from the store
/// or returned by it during this update, never on a remembered one.
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
    let coordinator = store.update_coordinator();
    let _turn = match coordinator {
        Some(c) => Some(c.turn(key).await),
        None => None,
    };
    let outcome = update_loop(store, coordinator, key, policy, &mut f).await;
    if let Some(c) = coordinator {
        match &outcome {
            Ok(UpdateOutcome::Updated(written)) => c.remember(key, written.clone()),
            // States read or returned on the way are already remembered.
            Ok(UpdateOutcome::Unchanged(_)) | Err(UpdateError::Rejected(_)) => {}
            Ok(UpdateOutcome::Missing) => c.forget(key),
            // The outcome of the last write is unknown: read again next time.
            Err(UpdateError::Store(_)) => c.forget(key),
        }
    }
    outcome
}

async fn update_loop<S, F, E>(
    store: &S,
    coordinator: Option<&UpdateCoordinator>,
    key: &str,
    policy: RetryPolicy,
    f: &mut F,
) -> Result<UpdateOutcome, UpdateError<E>>
where
    S: ChannelStore + ?Sized,
    F: FnMut(&ChannelState) -> Result<Option<ChannelState>, E> + Send,
    E: Send,
{
    let learnt = |state: &Versioned<ChannelState>| {
        if let Some(c) = coordinator {
            c.remember(key, state.clone());
        }
    };
    // `fresh`: `current` was read from the store or returned by it during this update (and
    // has not aged through a backoff since).
    let (mut current, mut fresh) = match coordinator.and_then(|c| c.remembered(key)) {
        Some(remembered) => (remembered, false),
        None => match store.get(key).await? {
            Some(read) => {
                learnt(&read);
                (read, true)
            }
            None => return Ok(UpdateOutcome::Missing),
        },
    };
    let attempts = policy.max_attempts.max(1);
    let mut attempt: u32 = 0;
    // Races lost on a state read from (or returned by) the store, i.e. to a concurrent writer.
    let mut lost: u32 = 0;
    loop {
        let step = f(&current.value);
        let next = match step {
            Ok(Some(next)) => next,
            // Not writing (or refusing) must be decided on the current state: read it.
            Ok(None) | Err(_) if !fresh => {
                let Some(read) = store.get(key).await? else { return Ok(UpdateOutcome::Missing) };
                learnt(&read);
                (current, fresh) = (read, true);
                continue;
            }
            Ok(None) => return Ok(UpdateOutcome::Unchanged(current)),
            Err(e) => return Err(UpdateError::Rejected(e)),
        };
        attempt += 1;
        match store.compare_and_swap(key, current.version, &next).await? {
            CasOutcome::Swapped(version) => return Ok(UpdateOutcome::Updated(Versioned { version, value: next })),
            CasOutcome::Missing => return Ok(UpdateOutcome::Missing),
            CasOutcome::Conflict(now) => {
                let stale = !fresh;
                learnt(&now);
                (current, fresh) = (*now, true);
                crate::metrics::record_store_cas_conflict();
                tracing::debug!(
                    key,
                    attempt,
                    max_attempts = attempts,
                    stale,
                    "mpp store: compare-and-swap conflict, retrying"
                );
                if attempt >= attempts {
                    return Err(StoreError::ConflictExhausted { key: key.to_owned(), attempts }.into());
                }
                // A stale remembered state is no contention: retry at once on the current one.
                if stale {
                    continue;
                }
                lost += 1;
                if coordinator.is_none() {
                    tokio::time::sleep(policy.delay(lost)).await;
                } else if lost > IMMEDIATE_RETRIES {
                    // With turns, the winners are other processes, which do not back off: the
                    // state they just wrote is what to retry on at once. After a backoff it has
                    // aged (they kept writing), so the retry that follows one counts as stale
                    // and is followed at once by one on the state it returns.
                    tokio::time::sleep(policy.delay(lost - IMMEDIATE_RETRIES)).await;
                    fresh = false;
                }
            }
        }
    }
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
            fn update_coordinator(&self) -> Option<&UpdateCoordinator> {
                (**self).update_coordinator()
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
mod tests;
