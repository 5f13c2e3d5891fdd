//! The shared state of one driver: the reconnecting connection, options,
//! scripts and topic cache, and the checks made when connecting.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use mq_core::driver::Backoff;
use mq_core::{Config, Error, Result};
use parking_lot::Mutex;
use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::{AsyncConnectionConfig, RedisError, RedisResult};

use crate::codec::{array_of, bytes_of, text_of};
use crate::config::RedisOptions;
use crate::error::{is_transient, map, BACKEND};
use crate::keys::Keys;
use crate::scripts::Scripts;
use crate::topics::TopicCache;

/// The oldest server with everything the driver uses (`XAUTOCLAIM`,
/// `MINID` trimming, exclusive ranges, `ZADD LT`).
const MIN_VERSION: (u32, u32) = (6, 2);

/// Room kept under the server's `proto-max-bulk-len` for the fields an
/// entry carries besides the payload (id, key, headers are counted by the
/// core; delayed messages are packed with their fields into one value).
const BULK_MARGIN: usize = 64 * 1024;

/// Pauses between tries of an operation interrupted by a reconnect: short,
/// as the connection manager has usually reconnected by then.
const RETRY_BACKOFF: Backoff = Backoff::new(Duration::from_millis(25), Duration::from_millis(500));

/// Paces the tries of one operation through reconnects, for up to the
/// `request_timeout` option.
pub(crate) struct Retries {
    deadline: Instant,
    failures: u32,
}

impl Retries {
    pub(crate) fn new(options: &RedisOptions) -> Self {
        Retries {
            deadline: Instant::now() + options.request_timeout,
            failures: 0,
        }
    }

    /// The pause before trying again after `error`; `None` when it is not
    /// transient or the time is up.
    pub(crate) fn pause(&mut self, error: &RedisError) -> Option<Duration> {
        if !is_transient(error) {
            return None;
        }
        self.failures += 1;
        let pause = RETRY_BACKOFF.after(self.failures);
        (Instant::now() + pause < self.deadline).then_some(pause)
    }
}

pub(crate) struct Inner {
    client: redis::Client,
    conn: ConnectionManager,
    pub(crate) options: RedisOptions,
    pub(crate) keys: Keys,
    pub(crate) scripts: Scripts,
    pub(crate) topics: TopicCache,
    pub(crate) max_message_bytes: usize,
    pub(crate) round_robin: AtomicU32,
    pub(crate) closed: AtomicBool,
    pub(crate) promoter: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// This state itself, for the background tasks it starts.
    pub(crate) me: Weak<Inner>,
}

impl Inner {
    /// Connects, checks the server, and prepares the shared state.
    pub(crate) async fn connect(config: &Config) -> Result<Arc<Self>> {
        let options = RedisOptions::from_config(config)?;
        let shown = config.to_string();
        // redis-rs parses the URL itself (user, password, database); its
        // parse errors do not echo the URL, and ours show it redacted.
        let client = redis::Client::open(config.url().as_str()).map_err(|e| {
            Error::Config(format!(
                "invalid redis URL {shown}: {}",
                e.detail().unwrap_or(e.category())
            ))
        })?;
        // One plain connection first: it fails fast and clearly (refused,
        // auth) where the connection manager would retry for seconds.
        let conn_config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(options.connect_timeout))
            .set_response_timeout(Some(options.request_timeout));
        let mut probe = client
            .get_multiplexed_async_connection_with_config(&conn_config)
            .await
            .map_err(|e| with_target(map(e, "connect"), &shown))?;
        let max_message_bytes = check_server(&mut probe, &options)
            .await
            .map_err(|e| with_target(e, &shown))?;
        drop(probe);
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(options.connect_timeout))
            .set_response_timeout(Some(options.request_timeout))
            .set_number_of_retries(4)
            .set_max_delay(Duration::from_secs(1));
        let conn = ConnectionManager::new_with_config(client.clone(), manager_config)
            .await
            .map_err(|e| with_target(map(e, "connect"), &shown))?;
        Ok(Arc::new_cyclic(|me| Inner {
            me: me.clone(),
            client,
            conn,
            keys: Keys::new(&options.prefix),
            options,
            scripts: Scripts::new(),
            topics: TopicCache::default(),
            max_message_bytes,
            round_robin: AtomicU32::new(0),
            closed: AtomicBool::new(false),
            promoter: Mutex::new(None),
        }))
    }

    /// A handle on the shared, reconnecting connection.
    pub(crate) fn conn(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// A dedicated connection for blocking reads, which would stall every
    /// other command on the shared one. Replies may take `block` longer.
    pub(crate) async fn blocking_connection(&self) -> Result<MultiplexedConnection> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.options.connect_timeout))
            .set_response_timeout(Some(self.options.request_timeout + self.options.block));
        self.client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|e| map(e, "connect a reader"))
    }

    pub(crate) fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            Err(Error::Closed("redis driver"))
        } else {
            Ok(())
        }
    }

    /// Runs an idempotent operation, retrying through reconnects for up to
    /// the `request_timeout` option.
    pub(crate) async fn retrying<T, F, Fut>(&self, what: &str, mut op: F) -> Result<T>
    where
        F: FnMut(ConnectionManager) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let mut retries = Retries::new(&self.options);
        loop {
            let e = match op(self.conn()).await {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            let Some(pause) = retries.pause(&e) else {
                return Err(map(e, what));
            };
            tracing::debug!(what, error = %e, ?pause, "redis call failed; retrying");
            self.before_retry(&e).await;
            tokio::time::sleep(pause).await;
        }
    }

    /// Reloads the scripts when `error` says the server lost them (a restart).
    pub(crate) async fn before_retry(&self, error: &RedisError) {
        if error.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) {
            self.load_scripts().await;
        }
    }

    /// Loads every script (after a restart emptied the script cache).
    pub(crate) async fn load_scripts(&self) {
        let mut conn = self.conn();
        for lua in self.scripts.all() {
            if let Err(error) = lua.script.load_async(&mut conn).await {
                tracing::debug!(%error, "loading a script failed");
            }
        }
    }
}

/// Adds the (redacted) target to connection errors, so the caller knows
/// which server failed.
fn with_target(error: Error, shown: &str) -> Error {
    match error {
        Error::Connection { message, source } => Error::Connection {
            message: format!("{message} ({shown})"),
            source,
        },
        Error::Rejected(message) => Error::Rejected(format!("{message} ({shown})")),
        other => other,
    }
}

/// Checks the version and the commands the driver needs, and returns the
/// largest message the server accepts.
async fn check_server(conn: &mut MultiplexedConnection, options: &RedisOptions) -> Result<usize> {
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query_async(conn)
        .await
        .map_err(|e| map(e, "connect"))?;
    let version = info
        .lines()
        .find_map(|l| l.strip_prefix("redis_version:"))
        .map(str::trim)
        .unwrap_or("unknown");
    check_version(version)?;
    let commands: redis::Value = redis::cmd("COMMAND")
        .arg("INFO")
        .arg("XADD")
        .arg("XREADGROUP")
        .arg("XAUTOCLAIM")
        .query_async(conn)
        .await
        .map_err(|e| map(e, "connect"))?;
    let known = array_of(&commands).map_or(0, |c| {
        c.iter().filter(|v| !matches!(v, redis::Value::Nil)).count()
    });
    if known < 3 {
        return Err(Error::unsupported(
            "redis streams with consumer groups and XAUTOCLAIM (Redis 6.2 or later)",
            BACKEND,
        ));
    }
    // CONFIG may be disabled or renamed; then the option alone decides.
    let limit: Option<usize> = match redis::cmd("CONFIG")
        .arg("GET")
        .arg("proto-max-bulk-len")
        .query_async::<redis::Value>(conn)
        .await
    {
        Ok(v) => config_value(&v).and_then(|t| t.parse().ok()),
        Err(_) => None,
    };
    Ok(match limit {
        Some(limit) => options
            .max_message_bytes
            .min(limit.saturating_sub(BULK_MARGIN).max(1)),
        None => options.max_message_bytes,
    })
}

/// The value of a `CONFIG GET` reply (an array or a map of name, value).
fn config_value(v: &redis::Value) -> Option<String> {
    match v {
        redis::Value::Map(pairs) => pairs.first().and_then(|(_, v)| text_of(v)),
        other => array_of(other)?
            .get(1)
            .and_then(|v| bytes_of(v).map(|b| String::from_utf8_lossy(b).into_owned())),
    }
}

/// Fails for servers older than [`MIN_VERSION`].
pub(crate) fn check_version(version: &str) -> Result<()> {
    let mut parts = version.split('.').map(|p| p.parse::<u32>().ok());
    let major = parts.next().flatten();
    let minor = parts.next().flatten();
    match (major, minor) {
        (Some(major), Some(minor)) if (major, minor) >= MIN_VERSION => Ok(()),
        _ => Err(Error::Unsupported {
            feature: "redis streams with consumer groups and XAUTOCLAIM (Redis 6.2 or later)",
            backend: BACKEND,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert!(check_version("7.0.15").is_ok());
        assert!(check_version("6.2.0").is_ok());
        assert!(check_version("10.0.1").is_ok());
        for old in ["6.0.16", "5.0.7", "4.0.9", "unknown", ""] {
            assert!(
                matches!(check_version(old), Err(Error::Unsupported { .. })),
                "{old}"
            );
        }
    }
}
