//! [`RedisReplayStore`] (feature `redis`), and the Redis connection both Redis-backed stores
//! use (this one and `mpp::RedisChannelStore`).
//!
//! A [`ConnectionManager`] (one multiplexed connection, re-established in the background after
//! a failure) with short connect (2 s) and response (5 s) timeouts. Any connection problem
//! surfaces as an error: callers fail closed.

use super::{ReplayStore, ReplayStoreError, unix_now};
use ::redis::RedisError;
use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use async_trait::async_trait;
use std::time::Duration;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Connecting to Redis failed.
#[derive(Debug)]
pub(crate) enum RedisConnectError {
    /// The URL is malformed.
    Url(RedisError),
    /// The server cannot be reached.
    Unreachable(RedisError),
}

/// A connection manager for `url` (`redis://host:port/db`).
pub(crate) async fn connect_redis(url: &str) -> Result<ConnectionManager, RedisConnectError> {
    let client = ::redis::Client::open(url).map_err(RedisConnectError::Url)?;
    let config = ConnectionManagerConfig::new()
        .set_number_of_retries(1)
        .set_min_delay(Duration::from_millis(50))
        .set_max_delay(Duration::from_millis(500))
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(RESPONSE_TIMEOUT));
    ConnectionManager::new_with_config(client, config).await.map_err(RedisConnectError::Unreachable)
}

/// The error means the server was not reached (or stopped answering), not that it refused.
pub(crate) fn is_connection_problem(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_refusal()
        || e.is_connection_dropped()
        || e.is_timeout()
        || e.is_unrecoverable_error()
}

impl From<RedisConnectError> for ReplayStoreError {
    fn from(e: RedisConnectError) -> Self {
        match e {
            RedisConnectError::Url(e) => Self::Config(format!("redis url: {e}")),
            RedisConnectError::Unreachable(e) => Self::Unavailable(e.to_string()),
        }
    }
}

fn replay_err(e: RedisError) -> ReplayStoreError {
    if is_connection_problem(&e) {
        ReplayStoreError::Unavailable(format!("redis: {e}"))
    } else {
        ReplayStoreError::Backend(format!("redis: {e}"))
    }
}

/// A [`ReplayStore`] in Redis: `SET {prefix}{key} 1 NX EXAT expires_at+1`, so x402 replay
/// guards and MPP single-use challenge ids hold across every server sharing the Redis. A
/// record is live while `now ≤ expires_at` (like [`InMemoryReplayStore`](super::InMemoryReplayStore)).
/// `RedisChannelStore::replay_store` makes one on a channel store's connection.
#[derive(Clone)]
pub struct RedisReplayStore {
    conn: ConnectionManager,
    prefix: String,
}

impl std::fmt::Debug for RedisReplayStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisReplayStore").field("prefix", &self.prefix).finish_non_exhaustive()
    }
}

impl RedisReplayStore {
    /// Connects to `url`; keys go under `key_prefix` (e.g. `"pay402:replay:"`). Fails with
    /// [`ReplayStoreError::Unavailable`] when the server cannot be reached,
    /// [`ReplayStoreError::Config`] for a malformed URL.
    pub async fn connect(url: &str, key_prefix: impl Into<String>) -> Result<Self, ReplayStoreError> {
        Ok(Self::on(connect_redis(url).await?, key_prefix))
    }

    /// A store on an existing connection.
    pub(crate) fn on(conn: ConnectionManager, key_prefix: impl Into<String>) -> Self {
        Self { conn, prefix: key_prefix.into() }
    }

    fn key(&self, key: &str) -> Result<String, ReplayStoreError> {
        if key.is_empty() {
            return Err(ReplayStoreError::EmptyKey);
        }
        Ok(format!("{}{key}", self.prefix))
    }
}

#[async_trait]
impl ReplayStore for RedisReplayStore {
    async fn insert_if_absent(&self, key: &str, expires_at: u64) -> Result<bool, ReplayStoreError> {
        let k = self.key(key)?;
        let mut conn = self.conn.clone();
        if expires_at < unix_now() {
            // Already expired: nothing to record, but a live record still blocks.
            let exists: u64 = ::redis::cmd("EXISTS").arg(&k).query_async(&mut conn).await.map_err(replay_err)?;
            return Ok(exists == 0);
        }
        let set: Option<String> = ::redis::cmd("SET")
            .arg(&k)
            .arg(1)
            .arg("NX")
            .arg("EXAT")
            .arg(expires_at.saturating_add(1))
            .query_async(&mut conn)
            .await
            .map_err(replay_err)?;
        Ok(set.is_some())
    }

    async fn remove(&self, key: &str) -> Result<(), ReplayStoreError> {
        let k = self.key(key)?;
        let mut conn = self.conn.clone();
        let _: u64 = ::redis::cmd("DEL").arg(&k).query_async(&mut conn).await.map_err(replay_err)?;
        Ok(())
    }
}
