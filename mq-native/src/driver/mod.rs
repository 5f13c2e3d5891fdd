//! The `native://` driver: the mq SPI over the engine.

mod subscription;
mod transaction;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use mq_core::driver::options::PARTITIONS;
use mq_core::driver::{
    Capabilities, Driver, DriverSubscription, DriverTransaction, PartitionLag, StartFrom,
    SubscribeSpec, Support, TopicSpec,
};
use mq_core::{Config, Error, Message, Receipt, Result};

use crate::engine::{Engine, Item};
use crate::error::BACKEND;
use crate::options::Options;

/// The native driver: an embedded, durable log engine in a local directory.
///
/// ```no_run
/// # async fn demo() -> mq_core::Result<()> {
/// use mq_core::{Client, Config, Message};
/// let config = Config::from_url("native://./data?fsync=always")?;
/// let client = Client::new(mq_native::NativeDriver::open(&config).await?);
/// client.producer().send(Message::new("orders", "order 42")).await?;
/// client.close().await?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct NativeDriver {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    engine: Arc<Engine>,
    closed: AtomicBool,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.engine.shutdown();
    }
}

impl NativeDriver {
    /// Opens the directory of a `native://PATH[?options]` URL, recovering
    /// it after a crash. Options: `fsync=always|never|interval:<ms>`,
    /// `partitions`, `segment_bytes`, `max_message_bytes`, `dedup_window`,
    /// `retention`, `retention_bytes`, `auto_create`, `checkpoint_interval`.
    pub async fn open(config: &Config) -> Result<NativeDriver> {
        let options = Options::from_config(config)?;
        Self::open_with(options).await
    }

    /// Opens a directory with explicit options.
    pub async fn open_with(options: Options) -> Result<NativeDriver> {
        // Recovery reads and fsyncs files: keep it off the async workers.
        let engine = match tokio::runtime::Handle::try_current() {
            Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(|| Engine::open(options))?
            }
            _ => Engine::open(options)?,
        };
        Ok(NativeDriver {
            inner: Arc::new(Inner {
                engine,
                closed: AtomicBool::new(false),
            }),
        })
    }

    /// The engine, for tools and tests.
    pub fn engine(&self) -> &Arc<Engine> {
        &self.inner.engine
    }

    fn check_open(&self) -> Result<()> {
        if self.inner.closed.load(Ordering::Acquire) || self.inner.engine.is_closed() {
            Err(Error::Closed("native driver"))
        } else {
            Ok(())
        }
    }

    fn items(&self, batch: Vec<Message>) -> Result<Vec<Item>> {
        let engine = &self.inner.engine;
        let limit = engine.options.max_message_bytes;
        let mut items = Vec::with_capacity(batch.len());
        let mut last: Option<Arc<crate::engine::topics::Topic>> = None;
        for message in batch {
            let size = message.encoded_len();
            if size > limit {
                return Err(Error::TooLarge { size, limit });
            }
            let topic = match &last {
                Some(t) if *t.name == *message.topic() => t.clone(),
                _ => {
                    let t = engine.topic_or_create(message.topic(), None)?;
                    last = Some(t.clone());
                    t
                }
            };
            let partition = topic.partition_of(message.key());
            items.push(Item::Message {
                topic,
                partition,
                message,
                dedup: true,
                visible_at_us: None,
            });
        }
        Ok(items)
    }
}

/// Waits for an append to be durable.
async fn durable(appended: crate::engine::Appended) -> Result<Vec<Receipt>> {
    if let Some(wait) = appended.wait {
        wait.await.map_err(|_| Error::Closed("native engine"))??;
    }
    Ok(appended.receipts)
}

#[async_trait]
impl Driver for NativeDriver {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    fn capabilities(&self) -> Capabilities {
        let o = &self.inner.engine.options;
        let mut caps = Capabilities::minimal();
        caps.delay = Support::Native;
        caps.redelivery_delay = Support::Native;
        caps.transactions = Support::Native;
        caps.idempotent_publish = Support::Native;
        caps.topic_retention = Support::Native;
        // A log: records stay for groups created after them.
        caps.retains_before_group = true;
        caps.max_message_bytes = o.max_message_bytes;
        caps.delay_precision = Duration::from_millis(10);
        caps.max_delay = Duration::from_secs(365 * 24 * 3600);
        caps
    }

    async fn publish(&self, batch: Vec<Message>) -> Result<Vec<Receipt>> {
        self.check_open()?;
        let items = self.items(batch)?;
        durable(self.inner.engine.append(items, false)?).await
    }

    async fn begin(&self) -> Result<Box<dyn DriverTransaction>> {
        self.check_open()?;
        Ok(Box::new(transaction::NativeTransaction::new(self.clone())))
    }

    async fn subscribe(&self, spec: SubscribeSpec) -> Result<Box<dyn DriverSubscription>> {
        self.check_open()?;
        Ok(Box::new(subscription::NativeSubscription::join(
            self.clone(),
            spec,
        )?))
    }

    async fn ensure_group(&self, topic: &str, group: &str, start: StartFrom) -> Result<()> {
        self.check_open()?;
        let engine = &self.inner.engine;
        // Created even with auto_create off, as ensure_topic would: this
        // is an explicit request, not a first use.
        let topic = engine.topic_or_create(topic, Some(engine.options.partitions))?;
        engine.ensure_group(&topic, &Arc::from(group), start);
        Ok(())
    }

    async fn ensure_topic(&self, topic: &str, spec: &TopicSpec) -> Result<()> {
        self.check_open()?;
        if spec.partitions == 0 {
            return Err(Error::invalid(
                PARTITIONS,
                "0",
                "a topic needs at least one partition",
            ));
        }
        self.inner
            .engine
            .ensure_topic(topic, spec.partitions, spec.retention)?;
        Ok(())
    }

    async fn delete_topic(&self, topic: &str) -> Result<()> {
        self.check_open()?;
        self.inner.engine.topics.write().delete(topic)?;
        Ok(())
    }

    async fn lag(&self, topic: &str, group: &str) -> Result<Vec<PartitionLag>> {
        self.check_open()?;
        Ok(self.inner.engine.lag(topic, group))
    }

    async fn close(&self) -> Result<()> {
        if self.inner.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let engine = self.inner.engine.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(|| engine.shutdown())
            }
            _ => engine.shutdown(),
        }
        Ok(())
    }
}
