//! The in-memory driver (`memory://`): full semantics in one process, for
//! unit tests and examples.
//!
//! Groups, fan-out, partition assignment with per-key order, acks with
//! redelivery, native delay, transactions, idempotent publish and lag all
//! behave as on a real broker, without durability. `memory://` makes a
//! private broker; `memory://NAME` shares one broker per name within the
//! process (so two clients can act as two services).
//!
//! Options: `partitions` (default partitions of auto-created topics, 4),
//! `delay=native|emulated` (emulated switches off native delay and
//! redelivery delay so the core's emulation runs), `max_message_bytes`
//! (default 8 MiB), `dedup_window` (default 24h).

mod admin;
mod broker;
mod log;
mod subscription;
mod transaction;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;

use crate::config::Config;
use crate::driver::{
    options, AdminSupport, BrowseSpec, BrowsedMessage, Capabilities, Driver, DriverSubscription,
    DriverTransaction, PartitionLag, ResetTo, StartFrom, SubscribeSpec, Support, TopicInfo,
    TopicSpec,
};
use crate::error::{Error, Result};
use crate::message::{Message, Receipt};
use broker::Broker;

/// Settings of a memory broker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemoryOptions {
    /// Partitions of topics created on first use.
    pub partitions: u32,
    /// Whether delay and redelivery delay are native (false: the core emulates them).
    pub native_delay: bool,
    /// Largest message accepted.
    pub max_message_bytes: usize,
    /// How long idempotency keys are remembered.
    pub dedup_window: Duration,
}

impl Default for MemoryOptions {
    fn default() -> Self {
        MemoryOptions {
            partitions: 4,
            native_delay: true,
            max_message_bytes: 8 * 1024 * 1024,
            dedup_window: Duration::from_secs(24 * 3600),
        }
    }
}

/// The in-memory driver.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> mq_core::Result<()> {
/// use mq_core::{memory::MemoryDriver, Client, Config};
/// let client = Client::new(MemoryDriver::from_config(&Config::from_url("memory://?partitions=8")?)?);
/// assert_eq!(client.backend(), "memory");
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct MemoryDriver {
    broker: Arc<Broker>,
    /// Set by `close`: this handle (not the broker, which other handles of a
    /// named broker may share) refuses further calls.
    closed: Arc<AtomicBool>,
}

/// Fails once the driver handle was closed.
fn check_open(closed: &AtomicBool) -> Result<()> {
    if closed.load(Ordering::Acquire) {
        Err(Error::Closed("memory driver"))
    } else {
        Ok(())
    }
}

fn registry() -> &'static Mutex<HashMap<String, Weak<Broker>>> {
    static REGISTRY: OnceLock<Mutex<HashMap<String, Weak<Broker>>>> = OnceLock::new();
    REGISTRY.get_or_init(Default::default)
}

impl MemoryDriver {
    /// A private broker with default options.
    pub fn new() -> Self {
        Self::with_options(MemoryOptions::default())
    }

    /// A private broker.
    pub fn with_options(options: MemoryOptions) -> Self {
        Self::on(Broker::new(options))
    }

    fn on(broker: Arc<Broker>) -> Self {
        MemoryDriver {
            broker,
            closed: Arc::new(AtomicBool::new(false)),
        }
    }

    /// From a `memory://[NAME][?options]` URL; see the module docs.
    pub fn from_config(config: &Config) -> Result<Self> {
        if config.scheme() != "memory" {
            return Err(Error::Config(format!(
                "the memory driver takes memory:// URLs, not {}://",
                config.scheme()
            )));
        }
        let mut reader = config.reader();
        let defaults = MemoryOptions::default();
        let partitions = reader.take_or(options::PARTITIONS, defaults.partitions)?;
        if partitions == 0 {
            return Err(Error::Config("option partitions must be at least 1".into()));
        }
        let native_delay = match reader.take::<String>("delay")?.as_deref() {
            None | Some("native") => true,
            Some("emulated") => false,
            Some(other) => {
                return Err(Error::Config(format!(
                    "option delay={other:?} is invalid: use native or emulated"
                )))
            }
        };
        let options = MemoryOptions {
            partitions,
            native_delay,
            max_message_bytes: reader
                .take_or(options::MAX_MESSAGE_BYTES, defaults.max_message_bytes)?,
            dedup_window: reader.take_duration_or(options::DEDUP_WINDOW, defaults.dedup_window)?,
        };
        reader.finish()?;
        let name = config.url().host_str().unwrap_or_default().to_owned();
        if name.is_empty() {
            return Ok(Self::with_options(options));
        }
        let mut registry = registry().lock();
        registry.retain(|_, broker| broker.strong_count() > 0);
        if let Some(broker) = registry.get(&name).and_then(Weak::upgrade) {
            if broker.options != options {
                return Err(Error::Config(format!(
                    "memory://{name} is already open with other options"
                )));
            }
            return Ok(Self::on(broker));
        }
        let broker = Broker::new(options);
        registry.insert(name, Arc::downgrade(&broker));
        Ok(Self::on(broker))
    }
}

impl Default for MemoryDriver {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait]
impl Driver for MemoryDriver {
    fn backend(&self) -> &'static str {
        "memory"
    }

    fn capabilities(&self) -> Capabilities {
        let options = &self.broker.options;
        let delay = if options.native_delay {
            Support::Native
        } else {
            Support::Unsupported
        };
        let mut caps = Capabilities::minimal();
        caps.delay = delay;
        caps.redelivery_delay = delay;
        caps.transactions = Support::Native;
        caps.transactional_offsets = Support::Native;
        caps.idempotent_publish = Support::Native;
        // The memory broker keeps every message for the life of the process.
        caps.topic_retention = Support::Unsupported;
        caps.retains_before_group = true;
        caps.admin = AdminSupport::ALL;
        caps.max_message_bytes = options.max_message_bytes;
        caps.delay_precision = Duration::from_millis(10);
        caps
    }

    async fn publish(&self, batch: Vec<Message>) -> Result<Vec<Receipt>> {
        check_open(&self.closed)?;
        Ok(self
            .broker
            .publish(batch.into_iter().map(|m| (m, None)), false))
    }

    async fn begin(&self) -> Result<Box<dyn DriverTransaction>> {
        check_open(&self.closed)?;
        Ok(Box::new(transaction::MemoryTransaction::new(
            self.broker.clone(),
            self.closed.clone(),
        )))
    }

    async fn subscribe(&self, spec: SubscribeSpec) -> Result<Box<dyn DriverSubscription>> {
        check_open(&self.closed)?;
        Ok(Box::new(subscription::MemorySubscription::join(
            self.broker.clone(),
            self.closed.clone(),
            spec,
        )))
    }

    async fn ensure_group(&self, topic: &str, group: &str, start: StartFrom) -> Result<()> {
        check_open(&self.closed)?;
        let topic = self.broker.topic_or_create(topic, None);
        self.broker.ensure_group(&topic, &Arc::from(group), start);
        Ok(())
    }

    async fn ensure_topic(&self, topic: &str, spec: &TopicSpec) -> Result<()> {
        check_open(&self.closed)?;
        self.broker.topic_or_create(topic, Some(spec.partitions));
        Ok(())
    }

    async fn delete_topic(&self, topic: &str) -> Result<()> {
        self.broker.delete_topic(topic);
        Ok(())
    }

    async fn lag(&self, topic: &str, group: &str) -> Result<Vec<PartitionLag>> {
        check_open(&self.closed)?;
        Ok(self.broker.lag(topic, group))
    }

    async fn list_topics(&self) -> Result<Vec<TopicInfo>> {
        check_open(&self.closed)?;
        Ok(self.broker.list_topics())
    }

    async fn topic_exists(&self, topic: &str) -> Result<Option<bool>> {
        check_open(&self.closed)?;
        Ok(Some(self.broker.topic(topic).is_some()))
    }

    async fn list_groups(&self, topic: &str) -> Result<Vec<String>> {
        check_open(&self.closed)?;
        Ok(self.broker.list_groups(topic))
    }

    async fn browse(&self, topic: &str, spec: &BrowseSpec) -> Result<Vec<BrowsedMessage>> {
        check_open(&self.closed)?;
        self.broker.browse(topic, spec)
    }

    async fn reset_group(&self, topic: &str, group: &str, to: ResetTo) -> Result<()> {
        check_open(&self.closed)?;
        self.broker.reset_group(topic, group, to)
    }

    async fn close(&self) -> Result<()> {
        self.closed.store(true, Ordering::Release);
        Ok(())
    }
}
