//! Options of the Redis driver, read from the URL query or a config table.

use std::time::Duration;

use mq_core::driver::options::{
    CONNECT_TIMEOUT, DEDUP_WINDOW, MAX_MESSAGE_BYTES, PARTITIONS, REQUEST_TIMEOUT,
};
use mq_core::{Config, Error, Result};

/// Settings of a Redis driver, from `redis://[user:password@]host:port/db?options`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RedisOptions {
    /// Partitions (streams) of topics created on first use.
    pub(crate) partitions: u32,
    /// Longest `XREADGROUP ... BLOCK` of an idle subscription.
    pub(crate) block: Duration,
    /// Lease of group members and partition locks: a member silent this
    /// long is dead, and its unacked messages are reclaimed by the member
    /// that takes over its partitions.
    pub(crate) claim_idle: Duration,
    /// Longest pause of the delay promoter between two looks at the schedule.
    pub(crate) delay_poll: Duration,
    /// How long an idempotency key is remembered.
    pub(crate) dedup_window: Duration,
    /// Largest message accepted (capped by the server's `proto-max-bulk-len`).
    pub(crate) max_message_bytes: usize,
    /// Default approximate `MAXLEN` of new topics' streams.
    pub(crate) maxlen: Option<u64>,
    /// Default retention by age of new topics (approximate `MINID` trimming).
    pub(crate) retention: Option<Duration>,
    /// Prefix of every key the driver writes, to share one database.
    pub(crate) prefix: String,
    /// Response time-out of one command, and how long a publish or ack keeps
    /// retrying through a reconnect before it fails.
    pub(crate) request_timeout: Duration,
    /// Time-out of one connection attempt.
    pub(crate) connect_timeout: Duration,
}

impl Default for RedisOptions {
    fn default() -> Self {
        RedisOptions {
            partitions: 4,
            block: Duration::from_secs(2),
            claim_idle: Duration::from_secs(10),
            delay_poll: Duration::from_millis(50),
            dedup_window: Duration::from_secs(24 * 3600),
            max_message_bytes: 8 * 1024 * 1024,
            maxlen: None,
            retention: None,
            prefix: "mq".to_owned(),
            request_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
        }
    }
}

impl RedisOptions {
    /// Reads the options of `config`; unknown options are an error naming them.
    pub(crate) fn from_config(config: &Config) -> Result<Self> {
        if !matches!(config.scheme(), "redis" | "rediss") {
            return Err(Error::Config(format!(
                "the redis driver takes redis:// URLs, not {}://",
                config.scheme()
            )));
        }
        if config.scheme() == "rediss" {
            return Err(Error::Config(
                "rediss:// (TLS) is not supported by this build of the redis driver".into(),
            ));
        }
        let defaults = RedisOptions::default();
        let mut r = config.reader();
        let options = RedisOptions {
            partitions: r.take_or(PARTITIONS, defaults.partitions)?,
            block: r.take_duration_or("block", defaults.block)?,
            claim_idle: r.take_duration_or("claim_idle", defaults.claim_idle)?,
            delay_poll: r.take_duration_or("delay_poll", defaults.delay_poll)?,
            dedup_window: r.take_duration_or(DEDUP_WINDOW, defaults.dedup_window)?,
            max_message_bytes: r.take_or(MAX_MESSAGE_BYTES, defaults.max_message_bytes)?,
            maxlen: r.take("maxlen")?,
            retention: r.take_duration("retention")?,
            prefix: r.take_or("prefix", defaults.prefix)?,
            request_timeout: r.take_duration_or(REQUEST_TIMEOUT, defaults.request_timeout)?,
            connect_timeout: r.take_duration_or(CONNECT_TIMEOUT, defaults.connect_timeout)?,
        };
        r.finish()?;
        options.check()?;
        Ok(options)
    }

    fn check(&self) -> Result<()> {
        let positive = |name: &str, d: Duration| {
            if d.is_zero() {
                Err(Error::Config(format!("option {name} must be more than 0")))
            } else {
                Ok(())
            }
        };
        if self.partitions == 0 || self.partitions > 4096 {
            return Err(Error::Config(format!(
                "option partitions={} is invalid: use 1 to 4096",
                self.partitions
            )));
        }
        positive("block", self.block)?;
        positive("claim_idle", self.claim_idle)?;
        positive("delay_poll", self.delay_poll)?;
        positive(DEDUP_WINDOW, self.dedup_window)?;
        positive(REQUEST_TIMEOUT, self.request_timeout)?;
        positive(CONNECT_TIMEOUT, self.connect_timeout)?;
        if self.claim_idle < Duration::from_millis(500) {
            return Err(Error::Config(
                "option claim_idle must be at least 500ms (members renew their lease a few times per period)".into(),
            ));
        }
        if self.max_message_bytes == 0 {
            return Err(Error::Config(format!(
                "option {MAX_MESSAGE_BYTES} must be more than 0"
            )));
        }
        if self.maxlen == Some(0) {
            return Err(Error::Config("option maxlen must be more than 0".into()));
        }
        if self.prefix.is_empty() || self.prefix.contains(['{', '}']) {
            return Err(Error::Config(format!(
                "option prefix={:?} is invalid: it must be non-empty and without braces",
                self.prefix
            )));
        }
        Ok(())
    }

    /// How often members renew their lease and look at the group.
    pub(crate) fn heartbeat(&self) -> Duration {
        (self.claim_idle / 4).min(Duration::from_secs(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_options() {
        let c = Config::from_url(
            "redis://127.0.0.1:6379/0?partitions=8&block=1s&maxlen=1000&request_timeout=3s",
        )
        .unwrap();
        let o = RedisOptions::from_config(&c).unwrap();
        assert_eq!(o.partitions, 8);
        assert_eq!(o.request_timeout, Duration::from_secs(3));
        assert_eq!(o.block, Duration::from_secs(1));
        assert_eq!(o.maxlen, Some(1000));
        assert_eq!(o.claim_idle, Duration::from_secs(10));
    }

    #[test]
    fn bad_options_are_config_errors() {
        for url in [
            "redis://127.0.0.1/?partitions=0",
            "redis://127.0.0.1/?partitions=many",
            "redis://127.0.0.1/?bogus=1",
            // The common name is request_timeout.
            "redis://127.0.0.1/?timeout=1s",
            "redis://127.0.0.1/?claim_idle=10ms",
            "redis://127.0.0.1/?prefix={x}",
            "memory://",
        ] {
            let c = Config::from_url(url).unwrap();
            let err = RedisOptions::from_config(&c).unwrap_err();
            assert!(matches!(err, Error::Config(_)), "{url}: {err:?}");
        }
    }
}
