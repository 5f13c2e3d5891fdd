//! Driver options, read from the URL query or the config table.

use std::time::Duration;

use mq_core::driver::options::{CONNECT_TIMEOUT, MAX_BACKOFF, MAX_MESSAGE_BYTES, PARTITIONS};
use mq_core::{Config, Error, Result};

use crate::names::MAX_SHARDS;

/// Settings of a [`RabbitDriver`](crate::RabbitDriver), parsed from the config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Options {
    /// Shard queues per group for topics nobody created with an explicit
    /// partition count (a power of two, at most [`MAX_SHARDS`]).
    pub partitions: u32,
    /// Quorum queue `x-delivery-limit`: redeliveries after which the broker
    /// dead-letters a message even if no consumer ever settled it.
    pub delivery_limit: u32,
    /// Largest message accepted; the broker's `max_message_size` (128 MiB by default).
    pub max_message_bytes: usize,
    /// How long a publish keeps retrying (reconnecting, re-publishing) before it fails.
    pub publish_timeout: Duration,
    /// Time limit of one connection attempt.
    pub connect_timeout: Duration,
    /// Longest pause between reconnection attempts.
    pub max_backoff: Duration,
    /// Interval of the group membership heartbeats that spread shards over members.
    pub member_heartbeat: Duration,
    /// Delete every exchange and queue this client declared when it closes
    /// (for tests and throw-away environments).
    pub delete_on_close: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            partitions: 4,
            delivery_limit: 20,
            max_message_bytes: 128 * 1024 * 1024,
            publish_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            max_backoff: Duration::from_secs(5),
            member_heartbeat: Duration::from_secs(1),
            delete_on_close: false,
        }
    }
}

impl Options {
    /// Reads the options this driver knows; any other option is an error naming it.
    pub(crate) fn from_config(config: &Config) -> Result<Self> {
        let defaults = Options::default();
        let mut reader = config.reader();
        let partitions = reader.take_or(PARTITIONS, defaults.partitions)?;
        if partitions == 0 || partitions > MAX_SHARDS || !partitions.is_power_of_two() {
            return Err(Error::Config(format!(
                "option {PARTITIONS}={partitions} is invalid: use a power of two from 1 to {MAX_SHARDS}"
            )));
        }
        let delivery_limit = reader.take_or("delivery_limit", defaults.delivery_limit)?;
        if delivery_limit == 0 {
            return Err(Error::Config(
                "option delivery_limit=0 is invalid: use at least 1".into(),
            ));
        }
        let options = Options {
            partitions,
            delivery_limit,
            max_message_bytes: reader.take_or(MAX_MESSAGE_BYTES, defaults.max_message_bytes)?,
            publish_timeout: reader
                .take_duration_or("publish_timeout", defaults.publish_timeout)?,
            connect_timeout: reader.take_duration_or(CONNECT_TIMEOUT, defaults.connect_timeout)?,
            max_backoff: reader.take_duration_or(MAX_BACKOFF, defaults.max_backoff)?,
            member_heartbeat: reader
                .take_duration_or("member_heartbeat", defaults.member_heartbeat)?
                .max(Duration::from_millis(50)),
            delete_on_close: reader.take_or("delete_on_close", defaults.delete_on_close)?,
        };
        reader.finish()?;
        Ok(options)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_overrides() {
        let config = Config::from_url("amqp://127.0.0.1/%2f").unwrap();
        assert_eq!(Options::from_config(&config).unwrap(), Options::default());
        let config = Config::from_url(
            "amqp://127.0.0.1/%2f?partitions=8&publish_timeout=2s&delete_on_close=true",
        )
        .unwrap();
        let options = Options::from_config(&config).unwrap();
        assert_eq!(options.partitions, 8);
        assert_eq!(options.publish_timeout, Duration::from_secs(2));
        assert!(options.delete_on_close);
    }

    #[test]
    fn bad_options_are_named() {
        for (url, word) in [
            ("amqp://h/?partitions=3", "partitions"),
            ("amqp://h/?partitions=512", "partitions"),
            ("amqp://h/?shards=4", "shards"),
            ("amqp://h/?delivery_limit=0", "delivery_limit"),
        ] {
            let err = Options::from_config(&Config::from_url(url).unwrap())
                .unwrap_err()
                .to_string();
            assert!(err.contains(word), "{url}: {err}");
        }
    }
}
