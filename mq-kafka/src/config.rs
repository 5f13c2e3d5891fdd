//! Options of the Kafka driver, read from the URL query or a config table,
//! and the librdkafka configurations built from them.

use std::collections::BTreeMap;
use std::time::Duration;

use mq_core::config::is_secret;
use mq_core::driver::options::{CONNECT_TIMEOUT, MAX_MESSAGE_BYTES, PARTITIONS, REQUEST_TIMEOUT};
use mq_core::{Config, Error, Result};
use rdkafka::ClientConfig;

/// The prefix of options handed to librdkafka unchanged
/// (`kafka.security.protocol=SASL_SSL`).
const PASS_THROUGH: &str = "kafka.";

/// Settings of a Kafka driver, from `kafka://host:port[,host:port...]?options`.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct KafkaOptions {
    /// `bootstrap.servers`: the URL's hosts, in order.
    pub(crate) bootstrap: String,
    /// Partitions of topics created on first use.
    pub(crate) partitions: u32,
    /// Replication factor of topics the driver creates (-1: the broker's default).
    pub(crate) replication: i32,
    /// How long connecting (the first metadata answer) may take.
    pub(crate) connect_timeout: Duration,
    /// How long one request, a send's delivery or a transaction step may take.
    pub(crate) request_timeout: Duration,
    /// Largest message accepted (`message.max.bytes`).
    pub(crate) max_message_bytes: usize,
    /// How long the producer gathers a batch (`linger.ms`).
    pub(crate) linger: Duration,
    /// How often a subscription commits the offsets its acks moved.
    pub(crate) commit_interval: Duration,
    /// `transaction.timeout.ms` of transactional producers.
    pub(crate) transaction_timeout: Duration,
    /// `partition.assignment.strategy` of consumers.
    pub(crate) assignment: String,
    /// `session.timeout.ms` of consumers: how soon a dead member loses its partitions.
    pub(crate) session_timeout: Duration,
    /// How long a topic's partition count is trusted before it is looked
    /// up again, so partitions added elsewhere are used.
    pub(crate) metadata_max_age: Duration,
    /// librdkafka properties given as `kafka.<name>`, passed on unchanged.
    pub(crate) native: BTreeMap<String, String>,
}

impl std::fmt::Debug for KafkaOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let native: BTreeMap<&str, &str> = self
            .native
            .iter()
            .map(|(k, v)| (k.as_str(), if is_secret(k) { "***" } else { v.as_str() }))
            .collect();
        f.debug_struct("KafkaOptions")
            .field("bootstrap", &self.bootstrap)
            .field("partitions", &self.partitions)
            .field("native", &native)
            .finish_non_exhaustive()
    }
}

impl KafkaOptions {
    /// Reads the options of `config`; unknown options are an error naming them.
    pub(crate) fn from_config(config: &Config) -> Result<Self> {
        if config.scheme() != "kafka" {
            return Err(Error::Config(format!(
                "the kafka driver takes kafka:// URLs, not {}://",
                config.scheme()
            )));
        }
        let hosts = config.hosts();
        if hosts.is_empty() {
            return Err(Error::Config(format!(
                "{config} names no broker: use kafka://host:port[,host:port...]"
            )));
        }
        if config.url().username() != "" || config.url().password().is_some() {
            return Err(Error::Config(
                "kafka:// URLs take no user or password: give SASL settings as \
                 kafka.sasl.username and kafka.sasl.password options"
                    .into(),
            ));
        }
        let mut r = config.reader();
        let options = KafkaOptions {
            bootstrap: hosts.join(","),
            partitions: r.take_or(PARTITIONS, 4)?,
            replication: r.take_or("replication_factor", -1)?,
            connect_timeout: r.take_duration_or(CONNECT_TIMEOUT, Duration::from_secs(10))?,
            request_timeout: r.take_duration_or(REQUEST_TIMEOUT, Duration::from_secs(30))?,
            max_message_bytes: r.take_or(MAX_MESSAGE_BYTES, 1024 * 1024)?,
            linger: r.take_duration_or("linger", Duration::from_millis(5))?,
            commit_interval: r.take_duration_or("commit_interval", Duration::from_millis(200))?,
            transaction_timeout: r
                .take_duration_or("transaction_timeout", Duration::from_secs(60))?,
            session_timeout: r.take_duration_or("session_timeout", Duration::from_secs(10))?,
            assignment: r.take_or("assignment", "cooperative-sticky".to_owned())?,
            metadata_max_age: r.take_duration_or("metadata_max_age", Duration::from_secs(30))?,
            native: r.take_prefixed(PASS_THROUGH),
        };
        r.finish()?;
        options.check()?;
        Ok(options)
    }

    fn check(&self) -> Result<()> {
        if self.partitions == 0 || self.partitions > 10_000 {
            return Err(Error::Config(format!(
                "option {PARTITIONS}={} is invalid: use 1 to 10000",
                self.partitions
            )));
        }
        if self.replication == 0 || self.replication < -1 {
            return Err(Error::Config(format!(
                "option replication_factor={} is invalid: use -1 (the broker's default) or more than 0",
                self.replication
            )));
        }
        for (name, d) in [
            (CONNECT_TIMEOUT, self.connect_timeout),
            (REQUEST_TIMEOUT, self.request_timeout),
            ("commit_interval", self.commit_interval),
            ("transaction_timeout", self.transaction_timeout),
            ("session_timeout", self.session_timeout),
            ("metadata_max_age", self.metadata_max_age),
        ] {
            if d.is_zero() {
                return Err(Error::Config(format!("option {name} must be more than 0")));
            }
        }
        if self.max_message_bytes < 1024 || self.max_message_bytes > 1_000_000_000 {
            return Err(Error::Config(format!(
                "option {MAX_MESSAGE_BYTES}={} is invalid: use 1024 to 1000000000",
                self.max_message_bytes
            )));
        }
        if !matches!(
            self.assignment.as_str(),
            "cooperative-sticky" | "range" | "roundrobin"
        ) {
            return Err(Error::Config(format!(
                "option assignment={:?} is invalid: use cooperative-sticky, range or roundrobin",
                self.assignment
            )));
        }
        // Settings the driver's guarantees rest on are not for overriding.
        for fixed in [
            "bootstrap.servers",
            "group.id",
            "transactional.id",
            "enable.auto.commit",
            "enable.auto.offset.store",
            "partitioner",
            "partition.assignment.strategy",
        ] {
            if self.native.contains_key(fixed) {
                return Err(Error::Config(format!(
                    "option kafka.{fixed} is set by the driver and cannot be given"
                )));
            }
        }
        Ok(())
    }

    /// Settings every client shares: brokers, time-outs and the pass-through.
    fn base(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap)
            .set(
                "socket.connection.setup.timeout.ms",
                ms(self.connect_timeout),
            )
            .set(
                "message.max.bytes",
                (self.max_message_bytes + 4096).to_string(),
            )
            // librdkafka logs through its own logger otherwise; warnings
            // and errors reach `tracing` through the `log` facade.
            .set("log_level", "4");
        for (name, value) in &self.native {
            c.set(name, value);
        }
        c
    }

    /// The idempotent producer: acks=all, ordered retries, linger batching,
    /// and the Java client's murmur2 for keys the driver leaves unassigned.
    pub(crate) fn producer(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", ms(self.linger))
            .set("message.timeout.ms", ms(self.request_timeout))
            .set(
                "request.timeout.ms",
                ms(self.request_timeout.min(Duration::from_secs(30))),
            )
            .set("partitioner", "murmur2_random")
            .set("queue.buffering.max.messages", "1000000")
            .set("batch.num.messages", "10000");
        merge(c, self.base())
    }

    /// A transactional producer with `id` as its `transactional.id`.
    pub(crate) fn transactional(&self, id: &str) -> ClientConfig {
        let mut c = self.producer();
        c.set("transactional.id", id)
            .set("transaction.timeout.ms", ms(self.transaction_timeout));
        c
    }

    /// A group member: cooperative-sticky, offsets committed by the driver
    /// only (never by librdkafka on its own), committed transactions only.
    pub(crate) fn consumer(&self, group: &str, start: mq_core::StartFrom) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("group.id", group)
            .set("partition.assignment.strategy", &self.assignment)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("isolation.level", "read_committed")
            .set("session.timeout.ms", ms(self.session_timeout))
            .set("heartbeat.interval.ms", ms(self.session_timeout / 5))
            .set("enable.partition.eof", "false")
            // A short fetch wait: delay hops and retries go through topics,
            // and each hop costs one fetch.
            .set("fetch.wait.max.ms", "100")
            .set(
                "auto.offset.reset",
                match start {
                    mq_core::StartFrom::Earliest => "earliest",
                    mq_core::StartFrom::Latest => "latest",
                },
            );
        merge(c, self.base())
    }

    /// A client for admin requests, watermarks and committed offsets of `group`.
    pub(crate) fn admin(&self, group: &str) -> ClientConfig {
        let mut c = self.base();
        c.set("group.id", group).set("enable.auto.commit", "false");
        c
    }
}

/// `base` with `over`'s settings on top: pass-through options win over
/// the driver's defaults.
fn merge(mut base: ClientConfig, over: ClientConfig) -> ClientConfig {
    for (k, v) in over.config_map() {
        base.set(k, v);
    }
    base
}

/// A duration as librdkafka's milliseconds (at least 1).
fn ms(d: Duration) -> String {
    d.as_millis().clamp(1, i32::MAX as u128).to_string()
}

/// An rdkafka configuration error as a `Config` error, without secret values.
pub(crate) fn config_error(error: rdkafka::error::KafkaError) -> Error {
    match error {
        rdkafka::error::KafkaError::ClientConfig(_, desc, key, value) => {
            let shown = if is_secret(&key) {
                "***"
            } else {
                value.as_str()
            };
            let desc = desc.replace(&value, shown);
            Error::Config(format!("librdkafka property {key}={shown:?}: {desc}"))
        }
        other => Error::Config(format!("cannot create the Kafka client: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_pass_through() {
        let c = Config::from_url(
            "kafka://a:9092,b:9093?partitions=8&kafka.security.protocol=SASL_SSL&kafka.sasl.password=pw",
        )
        .unwrap();
        let o = KafkaOptions::from_config(&c).unwrap();
        assert_eq!(o.bootstrap, "a:9092,b:9093");
        assert_eq!(o.partitions, 8);
        let p = o.producer();
        assert_eq!(p.get("security.protocol"), Some("SASL_SSL"));
        assert_eq!(p.get("partitioner"), Some("murmur2_random"));
        assert_eq!(p.get("enable.idempotence"), Some("true"));
        assert!(!format!("{o:?}").contains("pw\""), "{o:?}");
    }

    #[test]
    fn bad_options_are_config_errors() {
        for url in [
            "kafka://a:9092?partitions=0",
            "kafka://a:9092?bogus=1",
            "kafka://a:9092?kafka.group.id=x",
            "kafka://a:9092?commit_interval=0",
            "kafka://a:9092?assignment=sticky",
            "kafka://u:p@a:9092",
            "redis://a:9092",
        ] {
            let c = Config::from_url(url).unwrap();
            let err = KafkaOptions::from_config(&c).unwrap_err();
            assert!(matches!(err, Error::Config(_)), "{url}: {err:?}");
        }
    }
}
