//! # mq
//!
//! One messaging API over swappable brokers. Pick a backend with a URL and
//! get the same guarantees on each: ordering keys, idempotency keys, durable
//! delays, transactions, consumer groups with retries, dead letters and
//! per-key order, lag, and telemetry.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> mq::Result<()> {
//! use std::time::Duration;
//! use mq::{handler_fn, Delivery, Message};
//!
//! let client = mq::connect("memory://").await?;
//! client
//!     .producer()
//!     .send(Message::new("orders", "cancel order 42").with_key("order-42").with_delay(Duration::from_millis(50)))
//!     .await?;
//!
//! let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
//! let consumer = client
//!     .consumer("orders", "billing")
//!     .run(handler_fn(move |d: Delivery| {
//!         let tx = tx.clone();
//!         async move { tx.send(d.message().payload_str()?.to_owned())?; Ok(()) }
//!     }))
//!     .await?;
//! assert_eq!(rx.recv().await.as_deref(), Some("cancel order 42"));
//! consumer.shutdown().await?;
//! # Ok(()) }
//! ```
//!
//! ## Backends
//!
//! | URL | cargo feature | crate |
//! |---|---|---|
//! | `memory://[name]` | always | [`mq_core::memory`] |
//! | `native://PATH` | `native` (default) | `mq-native` |
//! | `kafka://host:port,...` | `kafka` | `mq-kafka` |
//! | `amqp://user:pass@host:port/vhost` | `rabbit` | `mq-rabbit` |
//! | `redis://host:port/db` | `redis` | `mq-redis` |
//! | `rocketmq://namesrv:9876` | `rocket` | `mq-rocket` |
//!
//! A URL whose feature is off fails with [`Error::Config`] naming the feature.

#![warn(missing_docs)]

pub use mq_core::*;

/// The outbox, its relay and the inbox on SQLite or PostgreSQL (features
/// `outbox-sqlite`, `outbox-postgres`): see [`mq_outbox`].
#[cfg(any(feature = "outbox-sqlite", feature = "outbox-postgres"))]
pub use mq_outbox as outbox;

/// Something [`connect`] accepts: a URL string or a [`Config`].
pub trait IntoConfig {
    /// Converts into a [`Config`].
    fn into_config(self) -> Result<Config>;
}

impl IntoConfig for Config {
    fn into_config(self) -> Result<Config> {
        Ok(self)
    }
}

impl IntoConfig for &str {
    fn into_config(self) -> Result<Config> {
        Config::from_url(self)
    }
}

impl IntoConfig for String {
    fn into_config(self) -> Result<Config> {
        Config::from_url(&self)
    }
}

impl IntoConfig for &String {
    fn into_config(self) -> Result<Config> {
        Config::from_url(self)
    }
}

/// Connects to the backend the URL (or config) names.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let err = mq::connect("carrier-pigeon://coop").await.unwrap_err();
/// assert!(err.to_string().contains("carrier-pigeon"));
/// # }
/// ```
pub async fn connect(target: impl IntoConfig) -> Result<Client> {
    let config = target.into_config()?;
    let driver = open_driver(&config).await?;
    Ok(Client::from_arc(driver))
}

/// Connects with the configuration in `MQ_URL` and `MQ_OPT_*` environment variables.
pub async fn connect_from_env() -> Result<Client> {
    connect(Config::from_env()?).await
}

async fn open_driver(config: &Config) -> Result<std::sync::Arc<dyn driver::Driver>> {
    match config.scheme() {
        "memory" => Ok(std::sync::Arc::new(memory::MemoryDriver::from_config(config)?)),
        "native" => {
            #[cfg(feature = "native")]
            return Ok(std::sync::Arc::new(mq_native::NativeDriver::open(config).await?));
            #[cfg(not(feature = "native"))]
            return feature_off(config, "native");
        }
        "kafka" => {
            #[cfg(feature = "kafka")]
            return Ok(std::sync::Arc::new(mq_kafka::KafkaDriver::connect(config).await?));
            #[cfg(not(feature = "kafka"))]
            return feature_off(config, "kafka");
        }
        "amqp" | "amqps" => {
            #[cfg(feature = "rabbit")]
            return Ok(std::sync::Arc::new(mq_rabbit::RabbitDriver::connect(config).await?));
            #[cfg(not(feature = "rabbit"))]
            return feature_off(config, "rabbit");
        }
        "redis" | "rediss" => {
            #[cfg(feature = "redis")]
            return Ok(std::sync::Arc::new(mq_redis::RedisDriver::connect(config).await?));
            #[cfg(not(feature = "redis"))]
            return feature_off(config, "redis");
        }
        "rocketmq" => {
            #[cfg(feature = "rocket")]
            return Ok(std::sync::Arc::new(mq_rocket::RocketDriver::connect(config).await?));
            #[cfg(not(feature = "rocket"))]
            return feature_off(config, "rocket");
        }
        other => Err(Error::Config(format!(
            "unknown URL scheme {other}:// in {config}; expected memory, native, kafka, amqp, redis or rocketmq"
        ))),
    }
}

/// The answer for a URL whose backend feature is off.
#[cfg(not(all(
    feature = "native",
    feature = "kafka",
    feature = "rabbit",
    feature = "redis",
    feature = "rocket"
)))]
fn feature_off(
    config: &Config,
    feature: &'static str,
) -> Result<std::sync::Arc<dyn driver::Driver>> {
    Err(Error::Config(format!(
        "{config} needs the `{feature}` feature of mq: mq = {{ version = \"0.1\", features = [\"{feature}\"] }}"
    )))
}

/// The README's examples, compiled and run as doctests.
#[doc = include_str!("../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn memory_by_url() {
        let client = connect("memory://?partitions=2").await.unwrap();
        assert_eq!(client.backend(), "memory");
        let err = connect("memory://?bogus=1").await.unwrap_err();
        assert!(
            matches!(err, Error::Config(ref m) if m.contains("bogus")),
            "{err}"
        );
    }

    #[tokio::test]
    async fn unknown_scheme_is_named() {
        let err = connect("mqtt://127.0.0.1").await.unwrap_err();
        assert!(
            matches!(err, Error::Config(ref m) if m.contains("mqtt://")),
            "{err}"
        );
    }

    #[cfg(not(feature = "kafka"))]
    #[tokio::test]
    async fn disabled_feature_is_named_without_password() {
        let err = connect("kafka://user:secret@127.0.0.1:9092")
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("`kafka` feature"), "{text}");
        assert!(!text.contains("secret"), "{text}");
    }
}
