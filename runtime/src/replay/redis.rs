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

/// `KEYS[1]` the record; `ARGV[1]` `1` when a value is expected, `ARGV[2]` that value, `ARGV[3]`
/// `1` to write, `ARGV[4]` the new value, `ARGV[5]` its expiry (Unix seconds, `EXAT`). Returns
/// 1 when swapped, 0 otherwise.
const RECORD_SWAP: &str = r#"
local cur = redis.call('GET', KEYS[1])
if ARGV[1] == '1' then
  if (not cur) or cur ~= ARGV[2] then return 0 end
else
  if cur then return 0 end
end
if ARGV[3] == '1' then
  redis.call('SET', KEYS[1], ARGV[4], 'EXAT', ARGV[5])
else
  redis.call('DEL', KEYS[1])
end
return 1
"#;

/// A [`RecordStore`](super::RecordStore) in Redis: each record is a string `{prefix}{key}` with
/// an `EXAT` expiry, swapped by a Lua script (atomic on the server), so every server sharing
/// the Redis sees one history per payment. [`keys`](super::RecordStore::keys) uses `SCAN`.
#[derive(Clone)]
pub struct RedisRecordStore {
    conn: ConnectionManager,
    prefix: String,
    swap: std::sync::Arc<::redis::Script>,
}

impl std::fmt::Debug for RedisRecordStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisRecordStore").field("prefix", &self.prefix).finish_non_exhaustive()
    }
}

impl RedisRecordStore {
    /// Connects to `url`; records go under `key_prefix` (e.g. `"pay402:records:"`). Fails with
    /// [`ReplayStoreError::Unavailable`] when the server cannot be reached,
    /// [`ReplayStoreError::Config`] for a malformed URL.
    pub async fn connect(url: &str, key_prefix: impl Into<String>) -> Result<Self, ReplayStoreError> {
        Ok(Self::on(connect_redis(url).await?, key_prefix))
    }

    /// A store on an existing connection.
    pub(crate) fn on(conn: ConnectionManager, key_prefix: impl Into<String>) -> Self {
        Self { conn, prefix: key_prefix.into(), swap: std::sync::Arc::new(::redis::Script::new(RECORD_SWAP)) }
    }

    fn key(&self, key: &str) -> Result<String, ReplayStoreError> {
        if key.is_empty() {
            return Err(ReplayStoreError::EmptyKey);
        }
        Ok(format!("{}{key}", self.prefix))
    }
}

/// `s` with Redis glob metacharacters escaped (for `SCAN MATCH`).
fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[async_trait]
impl super::RecordStore for RedisRecordStore {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, ReplayStoreError> {
        let k = self.key(key)?;
        let mut conn = self.conn.clone();
        ::redis::cmd("GET").arg(&k).query_async(&mut conn).await.map_err(replay_err)
    }

    async fn swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
        expires_at: u64,
    ) -> Result<bool, ReplayStoreError> {
        let k = self.key(key)?;
        let mut conn = self.conn.clone();
        if new.is_some() && expires_at < unix_now() {
            // Writing an already expired value is removing it.
            return self.swap(key, expected, None, 0).await;
        }
        let swapped: i64 = self
            .swap
            .key(&k)
            .arg(if expected.is_some() { "1" } else { "0" })
            .arg(expected.unwrap_or_default())
            .arg(if new.is_some() { "1" } else { "0" })
            .arg(new.unwrap_or_default())
            .arg(expires_at.saturating_add(1))
            .invoke_async(&mut conn)
            .await
            .map_err(replay_err)?;
        Ok(swapped == 1)
    }

    async fn keys(&self, prefix: &str, limit: usize) -> Result<Vec<String>, ReplayStoreError> {
        let pattern = format!("{}*", glob_escape(&format!("{}{prefix}", self.prefix)));
        let mut conn = self.conn.clone();
        let mut cursor: u64 = 0;
        let mut out = Vec::new();
        loop {
            let (next, batch): (u64, Vec<String>) = ::redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(256)
                .query_async(&mut conn)
                .await
                .map_err(replay_err)?;
            out.extend(batch.into_iter().filter_map(|k| k.strip_prefix(&self.prefix).map(str::to_owned)));
            if next == 0 || out.len() >= limit {
                out.truncate(limit);
                return Ok(out);
            }
            cursor = next;
        }
    }
}
