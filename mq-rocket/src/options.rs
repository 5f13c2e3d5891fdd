//! Options of the RocketMQ driver, read from the URL query or a config table.

use std::time::Duration;

use mq_core::driver::options::{CONNECT_TIMEOUT, MAX_MESSAGE_BYTES, PARTITIONS, REQUEST_TIMEOUT};
use mq_core::{Config, Error, Result};

/// The broker's own body limit (`maxMessageSize`), and the default here.
pub(crate) const BROKER_MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// Settings of a RocketMQ driver, from
/// `rocketmq://namesrv:9876[,namesrv2:9876]?options`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RocketOptions {
    /// The name servers, `host:port;host:port` as the client takes them.
    pub(crate) name_servers: String,
    /// Queues of topics the driver creates on first use.
    pub(crate) partitions: u32,
    /// How long the first answer of a name server may take.
    pub(crate) connect_timeout: Duration,
    /// How long one request (a send, an admin call) may take.
    pub(crate) request_timeout: Duration,
    /// Largest message accepted.
    pub(crate) max_message_bytes: usize,
    /// Most sends of one publish call in flight at once (the client refuses
    /// unthrottled async sends with `transport.admission.queue_saturated`).
    pub(crate) max_in_flight: usize,
    /// How late a timer message may land (the broker's `timerPrecisionMs`
    /// plus a dispatch margin).
    pub(crate) delay_precision: Duration,
    /// How often a consumer writes its offsets to the broker (what lag sees).
    pub(crate) commit_interval: Duration,
}

impl RocketOptions {
    /// Reads the options of `config`; unknown options are an error naming them.
    pub(crate) fn from_config(config: &Config) -> Result<Self> {
        if config.scheme() != "rocketmq" {
            return Err(Error::Config(format!(
                "the rocketmq driver takes rocketmq:// URLs, not {}://",
                config.scheme()
            )));
        }
        let hosts = config.hosts();
        if hosts.is_empty() {
            return Err(Error::Config(format!(
                "{config} names no name server: use rocketmq://host:port[,host:port...]"
            )));
        }
        if let Some(bad) = hosts.iter().find(|h| !h.contains(':')) {
            return Err(Error::Config(format!(
                "name server {bad:?} has no port: use host:port (RocketMQ's is usually 9876)"
            )));
        }
        if config.url().username() != "" || config.url().password().is_some() {
            return Err(Error::Config(
                "rocketmq:// URLs take no user or password: ACL is not supported by this driver"
                    .into(),
            ));
        }
        let mut r = config.reader();
        let options = RocketOptions {
            name_servers: hosts.join(";"),
            partitions: r.take_or(PARTITIONS, 4)?,
            connect_timeout: r.take_duration_or(CONNECT_TIMEOUT, Duration::from_secs(5))?,
            request_timeout: r.take_duration_or(REQUEST_TIMEOUT, Duration::from_secs(10))?,
            max_message_bytes: r.take_or(MAX_MESSAGE_BYTES, BROKER_MAX_MESSAGE_BYTES)?,
            max_in_flight: r.take_or("max_in_flight", 64)?,
            delay_precision: r.take_duration_or("delay_precision", Duration::from_secs(1))?,
            commit_interval: r.take_duration_or("commit_interval", Duration::from_secs(1))?,
        };
        r.finish()?;
        options.check()?;
        Ok(options)
    }

    fn check(&self) -> Result<()> {
        if self.partitions == 0 || self.partitions > 1024 {
            return Err(Error::Config(format!(
                "option {PARTITIONS}={} is invalid: use 1 to 1024",
                self.partitions
            )));
        }
        for (name, d) in [
            (CONNECT_TIMEOUT, self.connect_timeout),
            (REQUEST_TIMEOUT, self.request_timeout),
        ] {
            if d.is_zero() {
                return Err(Error::Config(format!("option {name} must be more than 0")));
            }
        }
        if self.commit_interval < Duration::from_secs(1)
            || self.commit_interval > Duration::from_secs(60)
        {
            return Err(Error::Config(format!(
                "option commit_interval={:?} is invalid: use 1s to 60s (the client's bounds)",
                self.commit_interval
            )));
        }
        if self.max_message_bytes < 1024 || self.max_message_bytes > BROKER_MAX_MESSAGE_BYTES {
            return Err(Error::Config(format!(
                "option {MAX_MESSAGE_BYTES}={} is invalid: use 1024 to {BROKER_MAX_MESSAGE_BYTES} \
                 (the broker's maxMessageSize)",
                self.max_message_bytes
            )));
        }
        if self.max_in_flight == 0 || self.max_in_flight > 4096 {
            return Err(Error::Config(format!(
                "option max_in_flight={} is invalid: use 1 to 4096",
                self.max_in_flight
            )));
        }
        Ok(())
    }

    /// The request time-out in the client's milliseconds.
    pub(crate) fn request_millis(&self) -> u64 {
        self.request_timeout.as_millis().clamp(1, u32::MAX as u128) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_host_lists() {
        let c = Config::from_url("rocketmq://a:9876,b:9877?partitions=8").unwrap();
        let o = RocketOptions::from_config(&c).unwrap();
        assert_eq!(o.name_servers, "a:9876;b:9877");
        assert_eq!(o.partitions, 8);
        assert_eq!(o.max_message_bytes, BROKER_MAX_MESSAGE_BYTES);
    }

    #[test]
    fn bad_options_are_config_errors() {
        for url in [
            "rocketmq://a:9876?partitions=0",
            "rocketmq://a:9876?bogus=1",
            "rocketmq://a:9876?max_message_bytes=99999999",
            "rocketmq://a:9876?max_in_flight=0",
            "rocketmq://a",
            "rocketmq://u:p@a:9876",
            "kafka://a:9876",
        ] {
            let c = Config::from_url(url).unwrap();
            let err = RocketOptions::from_config(&c).unwrap_err();
            assert!(matches!(err, Error::Config(_)), "{url}: {err:?}");
        }
    }
}
