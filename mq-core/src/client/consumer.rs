//! [`ConsumerBuilder`]: configure a consumer, then run a handler on it or
//! read it as a stream.

use std::sync::Arc;
use std::time::Duration;

use crate::client::{Client, Subscription};
use crate::driver::{NameRules, StartFrom, SubscribeSpec, Support, TopicSpec};
use crate::error::{Error, Result};
use crate::message::{validate_any_group, validate_any_topic, validate_group, validate_topic};
use crate::runtime::{
    retry_topic, run_batches, run_handler, stack, BatchHandler, BatchOptions, ConsumerHandle,
    DeadLetter, Handler, Layer, RetryPolicy, RunSettings, Settler, Shared, Transform, Transformer,
};

/// The group that retains every dead-letter topic, so dead letters are kept
/// before any reader exists; inspect or redrive them with your own group.
/// This is its name on brokers whose names may hold dots; in general it is
/// [`dead_letter_group`] of the backend's [`NameRules`].
pub const DEAD_LETTER_GROUP: &str = "__mq.dlq";

/// The group that retains dead-letter topics, under the backend's name rules.
pub fn dead_letter_group(names: &NameRules) -> String {
    names.internal("dlq", &[])
}

/// Configures a consumer of one topic in one group. Get one from
/// [`Client::consumer`].
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> mq_core::Result<()> {
/// # let client = mq_core::Client::new(mq_core::memory::MemoryDriver::new());
/// use std::time::Duration;
/// use mq_core::{handler_fn, Delivery, RetryPolicy};
///
/// let consumer = client
///     .consumer("orders", "billing")
///     .concurrency(16)
///     .retry(RetryPolicy::new(5).with_backoff(Duration::from_millis(100), Duration::from_secs(5)))
///     .run(handler_fn(|d: Delivery| async move {
///         println!("order {:?}", d.message().payload_str()?);
///         Ok(())
///     }))
///     .await?;
/// consumer.shutdown().await?;
/// # Ok(()) }
/// ```
#[must_use = "a consumer does nothing until run or subscribed"]
pub struct ConsumerBuilder {
    client: Client,
    topic: String,
    group: String,
    concurrency: usize,
    prefetch: usize,
    ordered: bool,
    start: StartFrom,
    policy: RetryPolicy,
    /// `None`: `<topic>.dlq`, or `Keep` on a dead-letter topic.
    dead_letter: Option<DeadLetter>,
    shutdown_timeout: Duration,
    layers: Vec<Arc<dyn Layer>>,
    internal: bool,
}

impl ConsumerBuilder {
    pub(crate) fn new(client: Client, topic: String, group: String) -> Self {
        ConsumerBuilder {
            client,
            topic,
            group,
            concurrency: 8,
            prefetch: 512,
            ordered: true,
            start: StartFrom::Earliest,
            policy: RetryPolicy::default(),
            dead_letter: None,
            shutdown_timeout: Duration::from_secs(30),
            layers: Vec::new(),
            internal: false,
        }
    }

    /// Handlers running at once (default 8). Messages with one key never run
    /// concurrently nor out of order; different keys run in parallel.
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n;
        self
    }

    /// Most messages held unsettled at once, fetched ahead of the handlers
    /// (default 512). Bounds memory: a slow handler slows fetching.
    pub fn prefetch(mut self, n: usize) -> Self {
        self.prefetch = n;
        self
    }

    /// Ordered (default): a failing message is retried in place, blocking
    /// only its key, so per-key order holds across retries. Unordered: it is
    /// redelivered later and later messages of its key go ahead.
    pub fn ordered(mut self, ordered: bool) -> Self {
        self.ordered = ordered;
        self
    }

    /// Where a group seen for the first time starts (default earliest).
    pub fn start_from(mut self, start: StartFrom) -> Self {
        self.start = start;
        self
    }

    /// Retry policy (default: 5 attempts, 200 ms doubling to 30 s, 20% jitter).
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Shorthand to set only the attempts of the retry policy.
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.policy = self.policy.clone().with_max_attempts(attempts);
        self
    }

    /// Where messages go after the last attempt or a reject: by default
    /// `<topic>.dlq`, except on a dead-letter topic itself, where they are
    /// kept ([`DeadLetter::Keep`]) unless you ask for another.
    pub fn dead_letter(mut self, dead_letter: DeadLetter) -> Self {
        self.dead_letter = Some(dead_letter);
        self
    }

    /// How long [`ConsumerHandle::shutdown`] waits for in-flight handlers
    /// (default 30 s); also how long a revoked partition's in-flight
    /// handlers may run before the partition is let go of.
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// Adds middleware around the handler; the first added is outermost.
    pub fn layer(mut self, layer: impl Layer) -> Self {
        self.layers.push(Arc::new(layer));
        self
    }

    /// A consumer of mq's own: its topic and group may carry the reserved
    /// prefix (the dead-letter group reading a dead-letter topic).
    pub(crate) fn internal(mut self) -> Self {
        self.internal = true;
        self
    }

    fn validate(&self) -> Result<()> {
        if self.internal {
            validate_any_topic(&self.topic)?;
            validate_any_group(&self.group)?;
        } else {
            validate_topic(&self.topic)?;
            validate_group(&self.group)?;
        }
        if self.concurrency == 0 {
            return Err(Error::invalid("concurrency", "0", "must be at least 1"));
        }
        if self.prefetch == 0 {
            return Err(Error::invalid("prefetch", "0", "must be at least 1"));
        }
        if let Some(DeadLetter::Topic(topic)) = &self.dead_letter {
            validate_topic(topic)?;
        }
        Ok(())
    }

    /// Joins the group and returns the settler for its subscription.
    async fn open(&self) -> Result<Arc<Settler>> {
        self.validate()?;
        let inner = &self.client.inner;
        if let Some(delay) = inner.publisher.delay_emulator() {
            delay.ensure_running();
        }
        let mut topics = vec![self.topic.clone()];
        if inner.capabilities.redelivery_delay != Support::Native {
            // Retries need no partitioning (their order is not kept by
            // design) and one partition keeps the reads a member makes few.
            let retries = retry_topic(&inner.capabilities.names, &self.group, &self.topic);
            inner
                .driver
                .ensure_topic(&retries, &TopicSpec::new(1))
                .await?;
            topics.push(retries);
        }
        let subscription = inner
            .driver
            .subscribe(
                SubscribeSpec::new(topics, self.group.clone())
                    .with_start(self.start)
                    .with_prefetch(self.prefetch),
            )
            .await?;
        let settler = Settler::new(
            self.client.clone(),
            Arc::from(subscription),
            Arc::from(self.group.as_str()),
            self.policy.clone(),
            self.dead_letter_policy(),
            self.prefetch,
        );
        if let Some(dlq) = settler.dead_letter_topic(&self.topic) {
            // Dead letters must be kept until someone reads them, also on
            // brokers that only route to groups that exist.
            let group = dead_letter_group(&inner.capabilities.names);
            inner
                .driver
                .ensure_group(&dlq, &group, StartFrom::Earliest)
                .await?;
        }
        Ok(Arc::new(settler))
    }

    fn dead_letter_policy(&self) -> DeadLetter {
        match &self.dead_letter {
            Some(chosen) => chosen.clone(),
            None if self
                .client
                .inner
                .capabilities
                .names
                .is_dead_letter_topic(&self.topic) =>
            {
                DeadLetter::Keep
            }
            None => DeadLetter::Suffix,
        }
    }

    fn settings(&self) -> RunSettings {
        RunSettings {
            concurrency: self.concurrency,
            prefetch: self.prefetch,
            ordered: self.ordered,
            by_partition: false,
            acked_by_handler: false,
            shutdown_timeout: self.shutdown_timeout,
        }
    }

    /// Starts the lag reporter and returns the per-call telemetry of this
    /// consumer.
    #[cfg(feature = "otel")]
    fn telemetry(
        &self,
        stop: &tokio::sync::watch::Receiver<bool>,
    ) -> crate::telemetry::ProcessTelemetry {
        let inner = &self.client.inner;
        crate::telemetry::spawn_lag_reporter(
            inner.telemetry.clone(),
            inner.driver.clone(),
            self.topic.clone(),
            self.group.clone(),
            stop.clone(),
        );
        crate::telemetry::ProcessTelemetry::new(
            inner.telemetry.clone(),
            inner.driver.backend(),
            &self.topic,
            &self.group,
        )
    }

    /// Joins the group and runs `handler` on every message until shut down.
    pub async fn run(self, handler: impl Handler) -> Result<ConsumerHandle> {
        let settler = self.open().await?;
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let handler = stack(Arc::new(handler), &self.layers);
        let shared = Shared::new(
            settler,
            self.settings(),
            stop_rx.clone(),
            #[cfg(feature = "otel")]
            Some(self.telemetry(&stop_rx)),
        );
        Ok(ConsumerHandle::new(
            stop,
            tokio::spawn(run_handler(shared, handler)),
        ))
    }

    /// Joins the group and runs a consume-transform-produce loop: each
    /// message is answered by `transform` with messages to publish, and
    /// the outputs and the input's ack go together.
    ///
    /// Where the backend commits consumed offsets inside a producer
    /// transaction (`transactional_offsets` is `Native`: Kafka, memory)
    /// this is exactly-once: outputs and ack commit in one transaction,
    /// and one partition's messages are handled one at a time, in order.
    /// Elsewhere it is at-least-once with stable output ids (derived from
    /// the input's), so a consumer deduplicating by id sees one of each.
    /// Ordered retries, dead letters and layers apply as in [`run`](Self::run).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> mq_core::Result<()> {
    /// # let client = mq_core::Client::new(mq_core::memory::MemoryDriver::new());
    /// use mq_core::{transform_fn, Delivery, HandlerError, Message};
    /// let pipeline = client
    ///     .consumer("orders", "enricher")
    ///     .run_transform(transform_fn(|d: Delivery| async move {
    ///         let text = d.message().payload_str()?.to_uppercase();
    ///         Ok::<_, HandlerError>(vec![Message::new("orders.enriched", text)])
    ///     }))
    ///     .await?;
    /// pipeline.shutdown().await?;
    /// # Ok(()) }
    /// ```
    pub async fn run_transform(self, transform: impl Transform) -> Result<ConsumerHandle> {
        let settler = self.open().await?;
        let transactional = self.client.inner.capabilities.transactional_offsets == Support::Native;
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let transformer = Transformer {
            transform: Arc::new(transform),
            settler: settler.clone(),
            transactional,
        };
        let handler = stack(Arc::new(transformer), &self.layers);
        let mut settings = self.settings();
        settings.ordered = true;
        settings.by_partition = transactional;
        settings.acked_by_handler = transactional;
        let shared = Shared::new(
            settler,
            settings,
            stop_rx.clone(),
            #[cfg(feature = "otel")]
            Some(self.telemetry(&stop_rx)),
        );
        Ok(ConsumerHandle::new(
            stop,
            tokio::spawn(run_handler(shared, handler)),
        ))
    }

    /// Joins the group and runs `handler` on batches cut by `options`
    /// (at most `max_messages`, or what arrived within `max_wait`). Each of
    /// `concurrency` lanes holds a share of the keys, so per-key order
    /// holds. A batch succeeds or fails as a whole. Layers apply to
    /// single-message handlers only.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> mq_core::Result<()> {
    /// # let client = mq_core::Client::new(mq_core::memory::MemoryDriver::new());
    /// use std::time::Duration;
    /// use mq_core::{batch_handler_fn, BatchOptions, Delivery, HandlerResult};
    /// let consumer = client
    ///     .consumer("clicks", "warehouse")
    ///     .run_batch(
    ///         batch_handler_fn(|batch: Vec<Delivery>| async move {
    ///             println!("{} clicks", batch.len());
    ///             HandlerResult::Ok(())
    ///         }),
    ///         BatchOptions::new(500).with_max_wait(Duration::from_millis(50)),
    ///     )
    ///     .await?;
    /// consumer.shutdown().await?;
    /// # Ok(()) }
    /// ```
    pub async fn run_batch(
        self,
        handler: impl BatchHandler,
        options: BatchOptions,
    ) -> Result<ConsumerHandle> {
        if options.max_messages() == 0 {
            return Err(Error::invalid(
                "max_messages",
                "0",
                "a batch holds at least one message",
            ));
        }
        let settler = self.open().await?;
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let handler: Arc<dyn BatchHandler> = Arc::new(handler);
        #[cfg(feature = "otel")]
        let handler = self.telemetry(&stop_rx).wrap_batch(handler);
        let shared = Shared::new(
            settler,
            self.settings(),
            stop_rx,
            #[cfg(feature = "otel")]
            None,
        );
        Ok(ConsumerHandle::new(
            stop,
            tokio::spawn(run_batches(shared, handler, options)),
        ))
    }

    /// Joins the group and returns the deliveries as a stream; settle each
    /// with [`Delivery::ack`](crate::Delivery::ack), `nack` or `dead_letter`.
    pub async fn subscribe(self) -> Result<Subscription> {
        let settler = self.open().await?;
        Ok(Subscription::new(settler, self.shutdown_timeout))
    }
}

impl std::fmt::Debug for ConsumerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsumerBuilder")
            .field("topic", &self.topic)
            .field("group", &self.group)
            .field("concurrency", &self.concurrency)
            .field("prefetch", &self.prefetch)
            .field("ordered", &self.ordered)
            .finish_non_exhaustive()
    }
}
