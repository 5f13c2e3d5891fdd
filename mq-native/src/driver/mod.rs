//! The `native://` driver: the mq SPI over the engine.

mod shared;
mod subscription;
mod transaction;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use mq_core::driver::{
    AdminSupport, BrowseSpec, BrowsedMessage, Capabilities, Driver, DriverHalfChecks,
    DriverSubscription, DriverTransaction, HalfOutcome, HalfToken, PartitionLag, ResetTo,
    StartFrom, SubscribeSpec, Support, TopicInfo, TopicSpec,
};
use mq_core::{Config, Error, Message, Receipt, Result};

use crate::engine::topics::Topic;
use crate::engine::{Engine, Item};
use crate::error::{backend, BACKEND};
use crate::options::Options;

/// The native driver: an embedded, durable log engine in a local directory.
///
/// Drivers opened on one directory in one process share its engine; each
/// closes independently, and the engine closes with the last of them.
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
    share: shared::Share,
    closed: AtomicBool,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // A driver dropped without `close` gives its share up all the same.
        if !self.closed.swap(true, Ordering::AcqRel) {
            self.share.release();
        }
    }
}

/// Runs blocking engine work (file I/O, fsyncs) so async workers never
/// wait for the disk: on a multi-thread runtime in place, with the worker
/// handing its other tasks to a new one first (`block_in_place`: what is
/// read stays on the thread that uses it); on a current-thread runtime on
/// a blocking thread; inline without a runtime.
async fn off_runtime<T: Send + 'static>(
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(work)
        }
        Ok(handle) => handle
            .spawn_blocking(work)
            .await
            .map_err(|e| backend(format!("a native engine task failed: {e}")))?,
        Err(_) => work(),
    }
}

impl NativeDriver {
    /// Opens the directory of a `native://PATH[?options]` URL, recovering
    /// it after a crash. Options: `fsync=always|never|interval:<ms>`,
    /// `partitions`, `segment_bytes`, `max_message_bytes`, `dedup_window`,
    /// `retention`, `retention_bytes`, `auto_create`, `checkpoint_interval`,
    /// `half_check_after`, `half_check_interval` (see [`Options`]).
    pub async fn open(config: &Config) -> Result<NativeDriver> {
        let options = Options::from_config(config)?;
        Self::open_with(options).await
    }

    /// Opens a directory with explicit options.
    pub async fn open_with(options: Options) -> Result<NativeDriver> {
        // Recovery reads and fsyncs files: kept off the async workers.
        let share = off_runtime(move || shared::open(options)).await?;
        Ok(NativeDriver {
            inner: Arc::new(Inner {
                share,
                closed: AtomicBool::new(false),
            }),
        })
    }

    /// Opens a directory on file system `fs`, with the housekeeping thread
    /// or without (see `Engine::open_on`), outside the per-process table of
    /// shared engines: for power-loss simulation.
    #[doc(hidden)]
    pub async fn open_on(
        options: Options,
        fs: crate::fs::Fs,
        housekeeper: bool,
    ) -> Result<NativeDriver> {
        let engine = off_runtime(move || Engine::open_on(options, fs, housekeeper)).await?;
        Ok(NativeDriver {
            inner: Arc::new(Inner {
                share: shared::private(engine),
                closed: AtomicBool::new(false),
            }),
        })
    }

    /// The engine, for tools and tests.
    pub fn engine(&self) -> &Arc<Engine> {
        &self.inner.share.engine
    }

    /// Runs `work` on the engine off the async workers.
    pub(crate) async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Arc<Engine>) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let engine = self.engine().clone();
        off_runtime(move || work(&engine)).await
    }

    pub(crate) fn check_open(&self) -> Result<()> {
        if self.inner.closed.load(Ordering::Acquire) || self.engine().is_closed() {
            Err(Error::Closed("native driver"))
        } else {
            Ok(())
        }
    }

    /// The topic of each message of `batch` (looked up once per run of
    /// one topic), and the names of those that do not exist.
    fn resolve(&self, batch: &[Message]) -> (Vec<Arc<Topic>>, Vec<String>) {
        let mut topics: Vec<Arc<Topic>> = Vec::with_capacity(batch.len());
        let mut missing: Vec<String> = Vec::new();
        for message in batch {
            let name = message.topic();
            let same = topics.last().filter(|t| *t.name == *name).cloned();
            match same.or_else(|| self.engine().topic(name)) {
                Some(topic) => topics.push(topic),
                None if !missing.iter().any(|m| m == name) => missing.push(name.to_owned()),
                None => {}
            }
        }
        (topics, missing)
    }

    /// The append items of `batch`; topics not there yet are created
    /// (where allowed) off the async workers.
    pub(crate) async fn items(&self, batch: Vec<Message>) -> Result<Vec<Item>> {
        let limit = self.engine().options.max_message_bytes;
        for message in &batch {
            let size = message.encoded_len();
            if size > limit {
                return Err(Error::TooLarge { size, limit });
            }
        }
        let (mut topics, missing) = self.resolve(&batch);
        if !missing.is_empty() {
            // Created durably (or found, if created meanwhile), then
            // looked up again with the rest.
            self.blocking(move |engine| engine.topics_for(&missing).map(drop))
                .await?;
            let (again, gone) = self.resolve(&batch);
            if let Some(name) = gone.first() {
                return Err(Error::Rejected(format!(
                    "topic {name:?} was deleted while sending to it"
                )));
            }
            topics = again;
        }
        Ok(batch
            .into_iter()
            .zip(topics)
            .map(|(message, topic)| Item::Message {
                partition: topic.partition_of(message.key()),
                topic,
                message,
                dedup: true,
                visible_at_us: None,
            })
            .collect())
    }
}

/// Waits for an append to be durable.
pub(crate) async fn durable(appended: crate::engine::Appended) -> Result<Vec<Receipt>> {
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
        let o = &self.engine().options;
        let mut caps = Capabilities::minimal();
        caps.delay = Support::Native;
        caps.redelivery_delay = Support::Native;
        caps.transactions = Support::Native;
        caps.idempotent_publish = Support::Native;
        caps.topic_retention = Support::Native;
        caps.half_messages = Support::Native;
        // A log: records stay for groups created after them.
        caps.retains_before_group = true;
        caps.admin = AdminSupport::ALL;
        caps.max_message_bytes = o.max_message_bytes;
        caps.delay_precision = Duration::from_millis(10);
        caps.max_delay = Duration::from_secs(365 * 24 * 3600);
        caps
    }

    async fn publish(&self, batch: Vec<Message>) -> Result<Vec<Receipt>> {
        self.check_open()?;
        let items = self.items(batch).await?;
        durable(self.engine().append(items, false)?).await
    }

    async fn begin(&self) -> Result<Box<dyn DriverTransaction>> {
        self.check_open()?;
        Ok(Box::new(transaction::NativeTransaction::new(self.clone())))
    }

    async fn subscribe(&self, spec: SubscribeSpec) -> Result<Box<dyn DriverSubscription>> {
        self.check_open()?;
        Ok(Box::new(
            subscription::NativeSubscription::join(self.clone(), spec).await?,
        ))
    }

    async fn ensure_group(&self, topic: &str, group: &str, start: StartFrom) -> Result<()> {
        self.check_open()?;
        let (topic, group) = (topic.to_owned(), Arc::<str>::from(group));
        self.blocking(move |engine| {
            // Created even with auto_create off, as ensure_topic would:
            // this is an explicit request, not a first use.
            let topic = engine.topic_or_create(&topic, Some(engine.options.partitions))?;
            engine.ensure_group(&topic, &group, start);
            Ok(())
        })
        .await
    }

    async fn ensure_topic(&self, topic: &str, spec: &TopicSpec) -> Result<()> {
        self.check_open()?;
        let (topic, partitions, retention) = (topic.to_owned(), spec.partitions, spec.retention);
        self.blocking(move |engine| {
            engine.ensure_topic(&topic, partitions, retention)?;
            Ok(())
        })
        .await
    }

    async fn delete_topic(&self, topic: &str) -> Result<()> {
        self.check_open()?;
        let topic = topic.to_owned();
        self.blocking(move |engine| engine.delete_topic(&topic).map(drop))
            .await
    }

    async fn lag(&self, topic: &str, group: &str) -> Result<Vec<PartitionLag>> {
        self.check_open()?;
        Ok(self.engine().lag(topic, group))
    }

    async fn list_topics(&self) -> Result<Vec<TopicInfo>> {
        self.check_open()?;
        Ok(self.engine().topic_infos())
    }

    async fn list_groups(&self, topic: &str) -> Result<Vec<String>> {
        self.check_open()?;
        Ok(self.engine().groups_of(topic))
    }

    async fn browse(&self, topic: &str, spec: &BrowseSpec) -> Result<Vec<BrowsedMessage>> {
        self.check_open()?;
        let (topic, spec) = (topic.to_owned(), *spec);
        // Reads the log, as a fetch does: off the workers.
        self.blocking(move |engine| engine.browse(&topic, &spec))
            .await
    }

    async fn reset_group(&self, topic: &str, group: &str, to: ResetTo) -> Result<()> {
        self.check_open()?;
        let (topic, group) = (topic.to_owned(), group.to_owned());
        // Reads the log (by time) and fsyncs the offsets: off the workers.
        self.blocking(move |engine| engine.reset_group(&topic, &group, to))
            .await
    }

    async fn publish_half(&self, group: &str, message: Message) -> Result<(Receipt, HalfToken)> {
        self.prepare_half(group, message).await
    }

    async fn resolve_half(
        &self,
        group: &str,
        token: HalfToken,
        outcome: HalfOutcome,
    ) -> Result<()> {
        self.settle_half(group, token, outcome).await
    }

    async fn half_checks(&self, group: &str) -> Result<Box<dyn DriverHalfChecks>> {
        self.open_half_checks(group)
    }

    async fn close(&self) -> Result<()> {
        if self.inner.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        // The last share drains appends and checkpoints: off the workers.
        let inner = self.inner.clone();
        off_runtime(move || {
            inner.share.release();
            Ok(())
        })
        .await
    }
}
