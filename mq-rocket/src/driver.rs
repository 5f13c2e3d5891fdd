//! [`RocketDriver`]: the `Driver` implementation, and the state its parts share.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use mq_core::driver::{
    AdminSupport, BrowseSpec, BrowsedMessage, Capabilities, DelayModel, Driver, DriverHalfChecks,
    DriverSubscription, DriverTransaction, HalfOutcome, HalfToken, PartitionLag, ResetTo,
    StartFrom, SubscribeSpec, Support, TopicInfo, TopicSpec,
};
use mq_core::{Config, Error, Message, Receipt, Result};
use rocketmq_client_rust::DefaultMQProducer;

use crate::admin::Admin;
use crate::cluster::{client_config, Cluster};
use crate::error::{map, BACKEND};
use crate::half::Halves;
use crate::options::RocketOptions;
use crate::producer::Producer;
use crate::runtime::Runtime;
use crate::subscription::RocketSubscription;

/// Longest delay of a timer message (the broker's `timerMaxDelaySec`
/// default, three days).
const MAX_DELAY: Duration = Duration::from_secs(3 * 24 * 3600);

type BoxedStart = std::pin::Pin<Box<dyn std::future::Future<Output = Result<RocketDriver>> + Send>>;

/// What the driver and its subscriptions share.
pub(crate) struct Inner {
    pub(crate) options: RocketOptions,
    pub(crate) runtime: Runtime,
    pub(crate) cluster: Cluster,
    /// Deliveries of unacked messages, across the driver's members.
    pub(crate) counts: Arc<crate::subscription::counts::Counts>,
    admin: Admin,
    producer: Producer,
    halves: Halves,
    closed: AtomicBool,
}

impl Inner {
    fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed("rocketmq driver"));
        }
        Ok(())
    }

    /// Creates `group` on `topic` (and the topic) where it has no position.
    pub(crate) async fn ensure_group(
        &self,
        topic: &str,
        group: &str,
        start: StartFrom,
    ) -> Result<()> {
        self.admin
            .ensure_group(&self.runtime, &self.cluster, topic, group, start)
            .await
    }
}

/// The RocketMQ driver. See the [crate docs](crate) for how mq maps onto RocketMQ.
///
/// ```no_run
/// # async fn demo() -> mq_core::Result<()> {
/// let config = mq_core::Config::from_url("rocketmq://127.0.0.1:9876?partitions=8")?;
/// let client = mq_core::Client::new(mq_rocket::RocketDriver::connect(&config).await?);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RocketDriver {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for RocketDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RocketDriver")
            .field("options", &self.inner.options)
            .finish_non_exhaustive()
    }
}

impl RocketDriver {
    /// Connects to the name servers of a
    /// `rocketmq://host:port[,host:port...]?options` URL and checks that
    /// one answers and knows a broker.
    ///
    /// Errors: [`Error::Config`] for a bad URL or option,
    /// [`Error::Connection`] naming the name servers when none answers
    /// within `connect_timeout` or none knows a broker.
    pub async fn connect(config: &Config) -> Result<RocketDriver> {
        let options = RocketOptions::from_config(config)?;
        // Boxed: the client's futures are deep enough to overflow the
        // compiler's layout recursion limit in every caller otherwise.
        Self::boxed_start(options).await
    }

    /// Not inlined into callers, so their crates never lay out the
    /// client's futures.
    #[inline(never)]
    fn boxed_start(options: RocketOptions) -> BoxedStart {
        Box::pin(Self::start(options))
    }

    async fn start(options: RocketOptions) -> Result<RocketDriver> {
        let runtime = Runtime::start()?;
        let unreachable = |detail: String| {
            Error::connection(
                format!(
                    "no RocketMQ name server answered at {} within {:?}: {detail}",
                    options.name_servers, options.connect_timeout
                ),
                std::io::Error::other(detail.clone()),
            )
        };
        let cluster =
            match tokio::time::timeout(options.connect_timeout, Cluster::start(&runtime, &options))
                .await
            {
                Ok(Ok(cluster)) => cluster,
                Ok(Err(e)) => {
                    runtime.shutdown().await;
                    return Err(unreachable(e.to_string()));
                }
                Err(_) => {
                    runtime.shutdown().await;
                    return Err(unreachable("timed out".into()));
                }
            };
        let probe = tokio::time::timeout(
            options.connect_timeout,
            cluster
                .handle()
                .broker_cluster_info(options.connect_timeout.as_millis() as u64),
        )
        .await;
        match probe {
            Ok(Ok(info))
                if info
                    .broker_addr_table
                    .as_ref()
                    .is_some_and(|t| !t.is_empty()) => {}
            Ok(Ok(_)) => {
                cluster.shutdown().await;
                runtime.shutdown().await;
                return Err(unreachable("the name servers know no broker".into()));
            }
            Ok(Err(e)) => {
                cluster.shutdown().await;
                runtime.shutdown().await;
                return Err(unreachable(crate::error::describe(&e)));
            }
            Err(_) => {
                cluster.shutdown().await;
                runtime.shutdown().await;
                return Err(unreachable("timed out".into()));
            }
        }
        let mut producer = DefaultMQProducer::builder(runtime.client())
            .client_config(client_config(&options, "producer"))
            .name_server_addr(options.name_servers.clone())
            .producer_group(crate::cluster::instance_name("producer"))
            .send_msg_timeout(options.request_millis() as u32)
            .max_message_size(options.max_message_bytes as u32 + 64 * 1024)
            .retry_times_when_send_failed(2)
            .build();
        producer
            .start()
            .await
            .map_err(|e| map(e, "starting the producer"))?;
        let max_in_flight = options.max_in_flight;
        let timeout = options.request_millis();
        Ok(RocketDriver {
            inner: Arc::new(Inner {
                admin: Admin::new(options.clone()),
                halves: Halves::new(options.clone()),
                options,
                runtime,
                cluster,
                counts: Default::default(),
                producer: Producer::new(producer, max_in_flight, timeout),
                closed: AtomicBool::new(false),
            }),
        })
    }
}

#[async_trait]
impl Driver for RocketDriver {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    fn capabilities(&self) -> Capabilities {
        let mut caps = Capabilities::minimal();
        // Timer messages: any due time up to the broker's maximum.
        caps.delay = Support::Native;
        caps.delay_model = DelayModel::Arbitrary;
        caps.delay_precision = self.inner.options.delay_precision;
        caps.max_delay = MAX_DELAY;
        caps.half_messages = Support::Native;
        // No atomic multi-message transactions; the core retries and
        // dead-letters with its own topics (headers, attempts, per-key order).
        caps.transactions = Support::Unsupported;
        caps.retains_before_group = true;
        caps.names = crate::names::rules();
        caps.admin = AdminSupport::ALL;
        caps.max_message_bytes = self.inner.options.max_message_bytes;
        caps
    }

    async fn publish(&self, batch: Vec<Message>) -> Result<Vec<Receipt>> {
        self.inner.check_open()?;
        let Some(first) = batch.first() else {
            return Ok(Vec::new());
        };
        if batch.iter().all(|m| m.topic() == first.topic()) {
            let topic = first.topic().to_owned();
            crate::names::check_topic(&topic)?;
            let route = self.route(&topic).await?;
            return self.inner.producer.publish(&route, batch).await;
        }
        // Mixed topics: one publish per topic, receipts back in order.
        let count = batch.len();
        let mut by_topic: Vec<(String, Vec<usize>, Vec<Message>)> = Vec::new();
        for (i, m) in batch.into_iter().enumerate() {
            match by_topic.iter_mut().find(|(t, _, _)| t == m.topic()) {
                Some((_, idx, ms)) => {
                    idx.push(i);
                    ms.push(m);
                }
                None => by_topic.push((m.topic().to_owned(), vec![i], vec![m])),
            }
        }
        let mut out: Vec<Option<Receipt>> = vec![None; count];
        for (topic, idx, ms) in by_topic {
            crate::names::check_topic(&topic)?;
            let route = self.route(&topic).await?;
            for (i, r) in idx
                .into_iter()
                .zip(self.inner.producer.publish(&route, ms).await?)
            {
                out[i] = Some(r);
            }
        }
        Ok(out.into_iter().flatten().collect())
    }

    async fn begin(&self) -> Result<Box<dyn DriverTransaction>> {
        Err(Error::unsupported("transactions", BACKEND))
    }

    async fn subscribe(&self, spec: SubscribeSpec) -> Result<Box<dyn DriverSubscription>> {
        self.inner.check_open()?;
        Ok(Box::new(
            RocketSubscription::join(self.inner.clone(), spec).await?,
        ))
    }

    async fn ensure_group(&self, topic: &str, group: &str, start: StartFrom) -> Result<()> {
        self.inner.check_open()?;
        crate::names::check_topic(topic)?;
        self.inner.ensure_group(topic, group, start).await
    }

    async fn ensure_topic(&self, topic: &str, spec: &TopicSpec) -> Result<()> {
        self.inner.check_open()?;
        self.inner
            .admin
            .ensure_topic(&self.inner.runtime, &self.inner.cluster, topic, spec)
            .await
            .map(|_| ())
    }

    async fn delete_topic(&self, topic: &str) -> Result<()> {
        self.inner.check_open()?;
        self.inner
            .admin
            .delete_topic(&self.inner.runtime, &self.inner.cluster, topic)
            .await?;
        // A record left for a queue of the old topic would have a member
        // of the new one skip messages.
        if let Err(error) =
            crate::subscription::handover::forget_topic(&self.inner.cluster, topic).await
        {
            tracing::warn!(%error, topic, "deleting the hand-over records of a deleted topic failed");
        }
        Ok(())
    }

    async fn lag(&self, topic: &str, group: &str) -> Result<Vec<PartitionLag>> {
        self.inner.check_open()?;
        crate::names::check_topic(topic)?;
        self.inner
            .admin
            .lag(&self.inner.cluster, topic, group)
            .await
    }

    async fn list_topics(&self) -> Result<Vec<TopicInfo>> {
        self.inner.check_open()?;
        self.inner
            .admin
            .list_topics(&self.inner.runtime, &self.inner.cluster)
            .await
    }

    async fn list_groups(&self, topic: &str) -> Result<Vec<String>> {
        self.inner.check_open()?;
        crate::names::check_topic(topic)?;
        self.inner
            .admin
            .list_groups(&self.inner.runtime, topic)
            .await
    }

    async fn browse(&self, topic: &str, spec: &BrowseSpec) -> Result<Vec<BrowsedMessage>> {
        self.inner.check_open()?;
        crate::names::check_topic(topic)?;
        crate::browse::browse(&self.inner.cluster, topic, spec).await
    }

    async fn reset_group(&self, topic: &str, group: &str, to: ResetTo) -> Result<()> {
        self.inner.check_open()?;
        crate::names::check_topic(topic)?;
        crate::names::check_group(group)?;
        let members = self.inner.admin.members(&self.inner.runtime, group).await?;
        crate::browse::reset(&self.inner.cluster, topic, group, to, members).await
    }

    async fn publish_half(&self, group: &str, message: Message) -> Result<(Receipt, HalfToken)> {
        self.inner.check_open()?;
        crate::names::check_topic(message.topic())?;
        self.route(message.topic()).await?;
        self.inner
            .halves
            .publish(&self.inner.runtime, &self.inner.cluster, group, message)
            .await
    }

    async fn resolve_half(
        &self,
        group: &str,
        token: HalfToken,
        outcome: HalfOutcome,
    ) -> Result<()> {
        self.inner.check_open()?;
        self.inner
            .halves
            .resolve(&self.inner.cluster, group, token, outcome)
            .await
    }

    async fn half_checks(&self, group: &str) -> Result<Box<dyn DriverHalfChecks>> {
        self.inner.check_open()?;
        self.inner.halves.checks(&self.inner.runtime, group).await
    }

    /// Stops the producers and the client runtime; subscriptions are
    /// closed by their owners first.
    async fn close(&self) -> Result<()> {
        if self.inner.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        self.inner.producer.shutdown().await;
        self.inner.halves.shutdown().await;
        self.inner.admin.shutdown().await;
        self.inner.cluster.shutdown().await;
        self.inner.runtime.shutdown().await;
        Ok(())
    }
}

impl RocketDriver {
    /// The route of `topic`, creating the topic when it has none.
    async fn route(&self, topic: &str) -> Result<Arc<crate::cluster::Route>> {
        self.inner
            .admin
            .route_or_create(&self.inner.runtime, &self.inner.cluster, topic)
            .await
    }
}
