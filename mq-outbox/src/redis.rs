//! [`RedisDedupStore`]: the core's `DedupStore` on Redis (feature `redis`).
//!
//! Each key is one Redis string, `claimed` or `done`, expiring with its
//! lease or window: Redis does the cleanup. Claim and release are Lua
//! scripts, so a check and its write are one atomic step.

use std::time::Duration;

use async_trait::async_trait;
use mq_core::idempotency::{Claim, DedupStore};
use mq_core::{Error, Result};
use redis::aio::ConnectionManager;
use redis::Script;

const CLAIM: &str = r"
local v = redis.call('GET', KEYS[1])
if v == 'done' then return 2 end
if v then return 1 end
redis.call('SET', KEYS[1], 'claimed', 'PX', ARGV[1])
return 0";

const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == 'claimed' then redis.call('DEL', KEYS[1]) end
return 0";

/// A durable [`DedupStore`] on Redis: what a group handled survives
/// consumer restarts (as long as Redis keeps its data), for the window
/// the `DedupLayer` gives. Keys are `{prefix}:{scope length}:{scope}:{key}`.
///
/// ```no_run
/// # async fn demo() -> mq_core::Result<()> {
/// use std::sync::Arc;
/// use mq_core::idempotency::DedupLayer;
/// let store = mq_outbox::RedisDedupStore::connect("redis://127.0.0.1:6379/0").await?;
/// let dedup = DedupLayer::new(Arc::new(store));
/// # let _ = dedup; Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisDedupStore {
    conn: ConnectionManager,
    prefix: String,
    claim: Script,
    release: Script,
}

impl std::fmt::Debug for RedisDedupStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisDedupStore")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

fn redis_error(doing: &'static str) -> impl FnOnce(redis::RedisError) -> Error {
    move |error| {
        if error.is_io_error() || error.is_connection_dropped() || error.is_connection_refusal() {
            Error::connection(format!("{doing}: Redis unreachable"), error)
        } else {
            Error::backend("redis", doing.to_owned(), error)
        }
    }
}

/// Milliseconds for `PX`, at least 1 (Redis refuses 0).
fn px(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}

impl RedisDedupStore {
    /// Connects to the Redis at `url` (reconnecting as needed); keys under `mq:dedup`.
    pub async fn connect(url: &str) -> Result<Self> {
        let client = redis::Client::open(url)
            .map_err(|e| Error::invalid("Redis URL", url, e.to_string()))?;
        let conn = ConnectionManager::new(client)
            .await
            .map_err(redis_error("connecting the dedup store"))?;
        Ok(RedisDedupStore {
            conn,
            prefix: "mq:dedup".to_owned(),
            claim: Script::new(CLAIM),
            release: Script::new(RELEASE),
        })
    }

    /// Puts the keys under `prefix` instead of `mq:dedup`.
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    fn key(&self, scope: &str, key: &str) -> String {
        format!("{}:{}:{scope}:{key}", self.prefix, scope.len())
    }
}

#[async_trait]
impl DedupStore for RedisDedupStore {
    async fn claim(&self, scope: &str, key: &str, lease: Duration) -> Result<Claim> {
        let mut conn = self.conn.clone();
        let answer: i64 = self
            .claim
            .key(self.key(scope, key))
            .arg(px(lease))
            .invoke_async(&mut conn)
            .await
            .map_err(redis_error("claiming a dedup key"))?;
        Ok(match answer {
            0 => Claim::Claimed,
            2 => Claim::Done,
            _ => Claim::InProgress,
        })
    }

    async fn complete(&self, scope: &str, key: &str, ttl: Duration) -> Result<()> {
        let mut conn = self.conn.clone();
        redis::cmd("SET")
            .arg(self.key(scope, key))
            .arg("done")
            .arg("PX")
            .arg(px(ttl))
            .query_async::<()>(&mut conn)
            .await
            .map_err(redis_error("completing a dedup key"))
    }

    async fn release(&self, scope: &str, key: &str) -> Result<()> {
        let mut conn = self.conn.clone();
        self.release
            .key(self.key(scope, key))
            .invoke_async::<i64>(&mut conn)
            .await
            .map_err(redis_error("releasing a dedup claim"))?;
        Ok(())
    }
}
