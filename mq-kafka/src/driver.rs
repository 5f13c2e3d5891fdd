//! [`KafkaDriver`]: the `Driver` implementation, and the state its parts share.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use mq_core::driver::{
    AdminSupport, BrowseSpec, BrowsedMessage, Capabilities, Driver, DriverSubscription,
    DriverTransaction, NameRules, PartitionLag, ResetTo, StartFrom, SubscribeSpec, Support,
    TopicInfo, TopicSpec, TransactionInfo,
};
use mq_core::{Config, Error, Message, Receipt, Result};
use rdkafka::producer::Producer;

use crate::config::{config_error, KafkaOptions};
use crate::error::BACKEND;
use crate::publish::{self, Deliveries, KafkaProducer};
use crate::subscription::KafkaSubscription;
use crate::topics::{blocking, Topics};
use crate::transaction::{KafkaTransaction, TransactionPool};

/// What the driver, its subscriptions and its transactions share.
pub(crate) struct Inner {
    pub(crate) options: Arc<KafkaOptions>,
    pub(crate) topics: Topics,
    pub(crate) transactions: TransactionPool,
    producer: Arc<KafkaProducer>,
    closed: AtomicBool,
}

impl Inner {
    pub(crate) fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed("kafka driver"));
        }
        Ok(())
    }
}

/// The Kafka driver. See the [crate docs](crate) for how mq maps onto Kafka.
///
/// ```no_run
/// # async fn demo() -> mq_core::Result<()> {
/// let config = mq_core::Config::from_url("kafka://127.0.0.1:9092?partitions=8")?;
/// let client = mq_core::Client::new(mq_kafka::KafkaDriver::connect(&config).await?);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct KafkaDriver {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for KafkaDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaDriver")
            .field("options", &self.inner.options)
            .finish_non_exhaustive()
    }
}

impl KafkaDriver {
    /// Connects to the brokers of a `kafka://host:port[,host:port...]?options`
    /// URL and checks that one answers.
    ///
    /// Errors: [`Error::Config`] for a bad URL, option or librdkafka
    /// property (secret values not shown), [`Error::Connection`] naming the
    /// bootstrap list when no broker answers within `connect_timeout`.
    pub async fn connect(config: &Config) -> Result<KafkaDriver> {
        let options = Arc::new(KafkaOptions::from_config(config)?);
        let producer: Arc<KafkaProducer> = Arc::new(
            options
                .producer()
                .create_with_context(Deliveries)
                .map_err(config_error)?,
        );
        let topics = Topics::new(options.clone(), producer.clone())?;
        topics.check_reachable().await?;
        Ok(KafkaDriver {
            inner: Arc::new(Inner {
                options,
                topics,
                transactions: TransactionPool::new(),
                producer,
                closed: AtomicBool::new(false),
            }),
        })
    }
}

#[async_trait]
impl Driver for KafkaDriver {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    fn capabilities(&self) -> Capabilities {
        let mut caps = Capabilities::minimal();
        // Kafka has no delay and no per-record redelivery: the core
        // emulates both with its delay and retry topics.
        caps.transactions = Support::Native;
        caps.transactional_offsets = Support::Native;
        caps.topic_retention = Support::Native;
        caps.partition_growth = Support::Native;
        caps.retains_before_group = true;
        caps.admin = AdminSupport::ALL;
        // Listed by the broker's own requests, aborted by fencing the id.
        caps.admin.transactions = Support::Native;
        caps.names = NameRules::new(249, "._-");
        caps.max_message_bytes = self.inner.options.max_message_bytes;
        caps.delay_precision = Duration::from_millis(500);
        caps
    }

    async fn publish(&self, batch: Vec<Message>) -> Result<Vec<Receipt>> {
        self.inner.check_open()?;
        publish::send(&self.inner.producer, &self.inner.topics, batch).await
    }

    async fn begin(&self) -> Result<Box<dyn DriverTransaction>> {
        self.inner.check_open()?;
        Ok(Box::new(
            KafkaTransaction::begin(self.inner.clone(), None).await?,
        ))
    }

    async fn subscribe(&self, spec: SubscribeSpec) -> Result<Box<dyn DriverSubscription>> {
        self.inner.check_open()?;
        Ok(Box::new(
            KafkaSubscription::join(self.inner.clone(), spec).await?,
        ))
    }

    async fn ensure_group(&self, topic: &str, group: &str, start: StartFrom) -> Result<()> {
        self.inner.check_open()?;
        self.inner.topics.ensure_group(topic, group, start).await
    }

    async fn ensure_topic(&self, topic: &str, spec: &TopicSpec) -> Result<()> {
        self.inner.check_open()?;
        self.inner.topics.ensure(topic, spec).await
    }

    async fn delete_topic(&self, topic: &str) -> Result<()> {
        self.inner.check_open()?;
        self.inner.topics.delete(topic).await
    }

    async fn grow_partitions(&self, topic: &str, partitions: u32) -> Result<()> {
        self.inner.check_open()?;
        self.inner.topics.grow(topic, partitions).await
    }

    async fn lag(&self, topic: &str, group: &str) -> Result<Vec<PartitionLag>> {
        self.inner.check_open()?;
        self.inner.topics.lag(topic, group).await
    }

    async fn list_topics(&self) -> Result<Vec<TopicInfo>> {
        self.inner.check_open()?;
        self.inner.topics.list().await
    }

    async fn topic_exists(&self, topic: &str) -> Result<Option<bool>> {
        self.inner.check_open()?;
        self.inner.topics.exists(topic).await.map(Some)
    }

    async fn list_groups(&self, topic: &str) -> Result<Vec<String>> {
        self.inner.check_open()?;
        self.inner.topics.groups_of(topic).await
    }

    async fn browse(&self, topic: &str, spec: &BrowseSpec) -> Result<Vec<BrowsedMessage>> {
        self.inner.check_open()?;
        self.inner.topics.browse(topic, spec).await
    }

    async fn reset_group(&self, topic: &str, group: &str, to: ResetTo) -> Result<()> {
        self.inner.check_open()?;
        self.inner.topics.reset(topic, group, to).await
    }

    async fn list_transactions(&self) -> Result<Vec<TransactionInfo>> {
        self.inner.check_open()?;
        crate::transactions::list(&self.inner.options, &self.inner.producer).await
    }

    /// Fences `id` with a producer registering it again, which makes the
    /// coordinator abort its open transaction (see the `transactions` module).
    async fn abort_transaction(&self, id: &str) -> Result<()> {
        self.inner.check_open()?;
        crate::transactions::abort(&self.inner.options, &self.inner.producer, id).await
    }

    /// Flushes every accepted send (bounded by `request_timeout`), then
    /// refuses further calls.
    async fn close(&self) -> Result<()> {
        if self.inner.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let producer = self.inner.producer.clone();
        let timeout = self.inner.options.request_timeout;
        let flushed = blocking(move || producer.flush(timeout)).await?;
        self.inner.transactions.close();
        self.inner.topics.close();
        flushed.map_err(|e| crate::error::map(e, "flush on close"))
    }
}
