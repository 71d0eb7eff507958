//! [`RedisChannelStore`] (feature `redis`): channel states shared across servers.
//!
//! It uses the Redis connection of [`crate::replay::RedisReplayStore`] (one multiplexed
//! connection, re-established in the background after a failure, short timeouts). Any
//! connection problem surfaces as [`StoreError::Unavailable`]: callers fail closed.

use super::{CasOutcome, ChannelState, ChannelStore, StoreError, UpdateCoordinator, Versioned, check_key_basic};
use crate::replay::{RedisConnectError, RedisReplayStore, connect_redis, is_connection_problem};
use ::redis::aio::ConnectionManager;
use ::redis::{RedisError, Script, Value};
use async_trait::async_trait;
use std::sync::Arc;
use std::time::Duration;

/// `KEYS[1]` state hash, `KEYS[2]` version counter; `ARGV[1]` JSON, `ARGV[2]` TTL in ms (0 =
/// none: any expiry is removed). Returns the new version, or 0 when the key exists.
const PUT_IF_ABSENT: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local v = redis.call('INCR', KEYS[2])
redis.call('HSET', KEYS[1], 'v', v, 's', ARGV[1])
local ttl = tonumber(ARGV[2])
if ttl > 0 then redis.call('PEXPIRE', KEYS[1], ttl) else redis.call('PERSIST', KEYS[1]) end
return v
"#;

/// `KEYS` as above; `ARGV[1]` expected version, `ARGV[2]` JSON, `ARGV[3]` TTL in ms. Returns
/// `{0}` missing, `{1, version, json}` conflict, `{2, new_version}` swapped.
const COMPARE_AND_SWAP: &str = r#"
local cur = redis.call('HMGET', KEYS[1], 'v', 's')
if not cur[1] then return {0} end
if cur[1] ~= ARGV[1] then return {1, cur[1], cur[2]} end
local v = redis.call('INCR', KEYS[2])
redis.call('HSET', KEYS[1], 'v', v, 's', ARGV[2])
local ttl = tonumber(ARGV[3])
if ttl > 0 then redis.call('PEXPIRE', KEYS[1], ttl) else redis.call('PERSIST', KEYS[1]) end
return {2, v}
"#;

fn store_err(e: RedisError) -> StoreError {
    if is_connection_problem(&e) { StoreError::Unavailable(e.to_string()) } else { StoreError::Backend(e.to_string()) }
}

impl From<RedisConnectError> for StoreError {
    fn from(e: RedisConnectError) -> Self {
        match e {
            RedisConnectError::Url(e) => Self::Config(format!("redis url: {e}")),
            RedisConnectError::Unreachable(e) => Self::Unavailable(e.to_string()),
        }
    }
}

/// A [`ChannelStore`] in Redis, shared by every server that uses the same Redis and prefix.
///
/// Layout: each channel is a hash `{prefix}channel:{key}` with fields `v` (version) and `s`
/// (the state's JSON, the same bytes [`super::FileStore`] writes). Versions come from one
/// counter `{prefix}version` (`INCR`), so they only grow, also across delete + re-create.
/// `put_if_absent` and `compare_and_swap` are Lua scripts (atomic on the server); with
/// [`with_ttl`](Self::with_ttl) every write also (re)sets the expiry of a channel that holds
/// no voucher (or is finalized), so abandoned channels disappear — but a channel holding a
/// voucher never expires (see [`with_ttl`](Self::with_ttl)). On Redis Cluster, put the prefix in a hash tag (`{pay402}:`) so a
/// channel and the counter share a slot.
///
/// [`update`](ChannelStore::update) goes through an [`UpdateCoordinator`] (shared by clones;
/// [`with_remembered_states`](Self::with_remembered_states) sizes it): the updates of one
/// channel take turns within this process, and each compares and swaps against the channel's
/// last known state, so a contended update costs one round trip, not two, and only loses a
/// race to *other* processes. A second `connect` is a separate instance (its own coordinator),
/// exactly like another process.
#[derive(Clone)]
pub struct RedisChannelStore {
    conn: ConnectionManager,
    prefix: String,
    ttl: Option<Duration>,
    put_if_absent: Arc<Script>,
    cas: Arc<Script>,
    coordinator: Arc<UpdateCoordinator>,
}

impl std::fmt::Debug for RedisChannelStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisChannelStore")
            .field("prefix", &self.prefix)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl RedisChannelStore {
    /// Connects to `url` (`redis://host:port/db`, `rediss://…` is not enabled) and stores keys
    /// under `key_prefix` (e.g. `"pay402:"`). Fails with [`StoreError::Unavailable`] when the
    /// server cannot be reached, [`StoreError::Config`] for a malformed URL.
    pub async fn connect(url: &str, key_prefix: impl Into<String>) -> Result<Self, StoreError> {
        let conn = connect_redis(url).await?;
        Ok(Self {
            conn,
            prefix: key_prefix.into(),
            ttl: None,
            put_if_absent: Arc::new(Script::new(PUT_IF_ABSENT)),
            cas: Arc::new(Script::new(COMPARE_AND_SWAP)),
            coordinator: Arc::new(UpdateCoordinator::default()),
        })
    }

    /// Remember the last known state of at most `capacity` channels (default
    /// [`DEFAULT_REMEMBERED_STATES`](super::DEFAULT_REMEMBERED_STATES); 0 remembers none, so
    /// every update reads first). Gives this store a new [`UpdateCoordinator`], not shared with
    /// the store it was made from.
    pub fn with_remembered_states(mut self, capacity: usize) -> Self {
        self.coordinator = Arc::new(UpdateCoordinator::new(capacity));
        self
    }

    /// Channels **without a voucher** (or finalized) not written for `ttl` expire (each write
    /// resets the clock). Sub-millisecond parts are rounded up; a zero TTL means no expiry.
    ///
    /// A channel whose highest voucher is above 0 never expires: that voucher is the seller's
    /// only claim to the channel's unsettled revenue. The write that stores its first voucher
    /// removes the expiry (`PERSIST`); such a channel leaves the store when it is closed
    /// ([`SessionIntent::close_channel`](crate::mpp::SessionIntent::close_channel) deletes it).
    /// Close idle channels to reclaim their space.
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = (!ttl.is_zero()).then_some(ttl);
        self
    }

    /// A [`RedisReplayStore`] on the same connection, keys under `key_prefix`.
    pub fn replay_store(&self, key_prefix: impl Into<String>) -> RedisReplayStore {
        RedisReplayStore::on(self.conn.clone(), key_prefix)
    }

    fn state_key(&self, key: &str) -> Result<String, StoreError> {
        check_key_basic(key)?;
        Ok(format!("{}channel:{key}", self.prefix))
    }

    fn version_key(&self) -> String {
        format!("{}version", self.prefix)
    }

    /// The expiry of `state` in ms, 0 for none: only channels without a claim expire.
    fn ttl_ms(&self, state: &ChannelState) -> u64 {
        if state.highest_voucher_amount > 0 && !state.finalized {
            return 0;
        }
        self.ttl.map(|t| u64::try_from(t.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX)).unwrap_or(0)
    }
}

fn as_u64(v: &Value) -> Option<u64> {
    match v {
        Value::Int(i) => u64::try_from(*i).ok(),
        Value::BulkString(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        Value::SimpleString(s) => s.parse().ok(),
        _ => None,
    }
}

fn parse_state(
    key: &str,
    version: Option<&Value>,
    json: Option<&Value>,
) -> Result<Versioned<ChannelState>, StoreError> {
    let (Some(version), Some(Value::BulkString(json))) = (version.and_then(as_u64), json) else {
        return Err(StoreError::Backend(format!("malformed channel record under {key:?}")));
    };
    let value = ChannelState::from_json(json).map_err(|e| StoreError::corrupt(key, e))?;
    Ok(Versioned { version, value })
}

fn encode(key: &str, state: &ChannelState) -> Result<Vec<u8>, StoreError> {
    state.to_json_bytes().map_err(|e| StoreError::corrupt(key, e))
}

#[async_trait]
impl ChannelStore for RedisChannelStore {
    async fn get(&self, key: &str) -> Result<Option<Versioned<ChannelState>>, StoreError> {
        let k = self.state_key(key)?;
        let mut conn = self.conn.clone();
        let reply: Vec<Value> =
            ::redis::cmd("HMGET").arg(&k).arg("v").arg("s").query_async(&mut conn).await.map_err(store_err)?;
        match reply.as_slice() {
            [Value::Nil, Value::Nil] => Ok(None),
            [v, s] => parse_state(key, Some(v), Some(s)).map(Some),
            _ => Err(StoreError::Backend(format!("unexpected HMGET reply for {key:?}"))),
        }
    }

    async fn put_if_absent(&self, key: &str, state: &ChannelState) -> Result<bool, StoreError> {
        let k = self.state_key(key)?;
        let json = encode(key, state)?;
        let mut conn = self.conn.clone();
        let written: u64 = self
            .put_if_absent
            .key(&k)
            .key(self.version_key())
            .arg(json)
            .arg(self.ttl_ms(state))
            .invoke_async(&mut conn)
            .await
            .map_err(store_err)?;
        if written != 0 {
            self.coordinator.remember(key, Versioned { version: written, value: state.clone() });
        }
        Ok(written != 0)
    }

    async fn compare_and_swap(
        &self,
        key: &str,
        expected_version: u64,
        new_state: &ChannelState,
    ) -> Result<CasOutcome, StoreError> {
        let k = self.state_key(key)?;
        let json = encode(key, new_state)?;
        let mut conn = self.conn.clone();
        let reply: Vec<Value> = self
            .cas
            .key(&k)
            .key(self.version_key())
            .arg(expected_version.to_string())
            .arg(json)
            .arg(self.ttl_ms(new_state))
            .invoke_async(&mut conn)
            .await
            .map_err(store_err)?;
        match reply.as_slice() {
            [code] if as_u64(code) == Some(0) => Ok(CasOutcome::Missing),
            [code, v, s] if as_u64(code) == Some(1) => {
                parse_state(key, Some(v), Some(s)).map(|c| CasOutcome::Conflict(Box::new(c)))
            }
            [code, v] if as_u64(code) == Some(2) => as_u64(v)
                .map(CasOutcome::Swapped)
                .ok_or_else(|| StoreError::Backend("malformed compare-and-swap reply".into())),
            _ => Err(StoreError::Backend(format!("unexpected compare-and-swap reply for {key:?}"))),
        }
    }

    async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        let k = self.state_key(key)?;
        let mut conn = self.conn.clone();
        self.coordinator.forget(key);
        let n: u64 = ::redis::cmd("DEL").arg(&k).query_async(&mut conn).await.map_err(store_err)?;
        Ok(n > 0)
    }

    fn update_coordinator(&self) -> Option<&UpdateCoordinator> {
        Some(&self.coordinator)
    }
}
