//! [`RabbitDriver`]: the driver SPI on RabbitMQ.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use mq_core::driver::{
    AdminSupport, Capabilities, Driver, DriverSubscription, DriverTransaction, PartitionLag,
    ResetTo, StartFrom, SubscribeSpec, Support, TopicSpec,
};
use mq_core::{Config, Error, Message, Receipt, Result};

use crate::connection::Connector;
use crate::error::BACKEND;
use crate::names;
use crate::options::Options;
use crate::publisher::{prepare, Publisher};
use crate::subscription::RabbitSubscription;
use crate::topology::Topology;
use crate::transaction::RabbitTransaction;

/// The RabbitMQ driver. Cheap to clone; clones share the connection.
///
/// Made by `mq::connect("amqp://...")`, or directly:
///
/// ```no_run
/// # async fn run() -> mq_core::Result<()> {
/// let config = mq_core::Config::from_url("amqp://guest:guest@127.0.0.1:5672/%2f?partitions=8")?;
/// let client = mq_core::Client::new(mq_rabbit::RabbitDriver::connect(&config).await?);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RabbitDriver {
    inner: Arc<Inner>,
}

struct Inner {
    connector: Arc<Connector>,
    topology: Arc<Topology>,
    publisher: Publisher,
    options: Options,
    round_robin: Arc<AtomicU32>,
    closed: AtomicBool,
}

impl RabbitDriver {
    /// Connects to the broker of an `amqp://` or `amqps://` URL; see the
    /// crate docs for the options.
    ///
    /// Fails with [`Error::Rejected`] naming `ACCESS_REFUSED` for wrong
    /// credentials or a missing virtual host, [`Error::Connection`] when the
    /// broker cannot be reached, [`Error::Config`] for a bad URL or option.
    /// The password never appears in errors.
    pub async fn connect(config: &Config) -> Result<RabbitDriver> {
        if !matches!(config.scheme(), "amqp" | "amqps") {
            return Err(Error::Config(format!(
                "the rabbitmq driver takes amqp:// or amqps:// URLs, not {}://",
                config.scheme()
            )));
        }
        let options = Options::from_config(config)?;
        // Config's Display hides the password; the query holds only our options.
        let mut shown = config.url().clone();
        if shown.password().is_some() {
            let _ = shown.set_password(Some("***"));
        }
        let connector = Connector::open(
            config.url().as_str().to_owned(),
            shown.to_string(),
            options.clone(),
        )
        .await?;
        let topology = Arc::new(Topology::new(connector.clone(), options.clone()));
        Ok(RabbitDriver {
            inner: Arc::new(Inner {
                publisher: Publisher::new(connector.clone()),
                connector,
                topology,
                options,
                round_robin: Arc::new(AtomicU32::new(0)),
                closed: AtomicBool::new(false),
            }),
        })
    }

    fn check_open(&self) -> Result<()> {
        if self.inner.closed.load(Ordering::Acquire) {
            Err(Error::Closed("rabbitmq driver"))
        } else {
            Ok(())
        }
    }
}

#[async_trait]
impl Driver for RabbitDriver {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    fn capabilities(&self) -> Capabilities {
        // Delay and retry-after stay unsupported: the core emulates them
        // durably with delay topics.
        let mut capabilities = Capabilities::minimal();
        capabilities.transactions = Support::Native;
        capabilities.retains_before_group = false;
        capabilities.names = names::rules();
        capabilities.max_message_bytes = self.inner.options.max_message_bytes;
        // Only a reset to the end (a purge) is possible over AMQP without
        // the management plugin; see `admin` for why the rest is not.
        let mut admin = AdminSupport::NONE;
        admin.reset_group = Support::Native;
        capabilities.admin = admin;
        capabilities
    }

    async fn publish(&self, batch: Vec<Message>) -> Result<Vec<Receipt>> {
        self.check_open()?;
        let inner = &self.inner;
        let (outgoing, receipts) = prepare(&inner.topology, &inner.round_robin, batch).await?;
        inner.publisher.publish(&inner.topology, &outgoing).await?;
        Ok(receipts)
    }

    async fn begin(&self) -> Result<Box<dyn DriverTransaction>> {
        self.check_open()?;
        let inner = &self.inner;
        Ok(Box::new(
            RabbitTransaction::begin(
                &inner.connector,
                inner.topology.clone(),
                inner.round_robin.clone(),
            )
            .await?,
        ))
    }

    async fn subscribe(&self, spec: SubscribeSpec) -> Result<Box<dyn DriverSubscription>> {
        self.check_open()?;
        let inner = &self.inner;
        let joined = inner
            .connector
            .retrying(|| {
                RabbitSubscription::join(
                    inner.connector.clone(),
                    inner.topology.clone(),
                    inner.options.clone(),
                    spec.clone(),
                )
            })
            .await?;
        Ok(Box::new(joined))
    }

    async fn ensure_group(&self, topic: &str, group: &str, _start: StartFrom) -> Result<()> {
        // Either start is "from now" (`retains_before_group` is false): a
        // queue holds only what is published after it exists, so the
        // oldest message retained for a new group is the first published
        // after this. An existing group stays where it is.
        self.check_open()?;
        let topology = &self.inner.topology;
        self.inner
            .connector
            .retrying(|| topology.ensure_group(topic, group))
            .await
    }

    async fn ensure_topic(&self, topic: &str, spec: &TopicSpec) -> Result<()> {
        self.check_open()?;
        let topology = &self.inner.topology;
        self.inner
            .connector
            .retrying(|| topology.ensure_topic(topic, Some(spec.partitions)))
            .await
            .map(|_| ())
    }

    async fn delete_topic(&self, topic: &str) -> Result<()> {
        self.check_open()?;
        self.inner.topology.delete_topic(topic).await
    }

    /// A topic exists while its shard record does (`ensure_topic` writes
    /// it, `delete_topic` removes it); an exchange a publish declared is
    /// no topic yet.
    async fn topic_exists(&self, topic: &str) -> Result<Option<bool>> {
        self.check_open()?;
        Ok(Some(
            self.inner.topology.read_shards(topic).await?.is_some(),
        ))
    }

    async fn lag(&self, topic: &str, group: &str) -> Result<Vec<PartitionLag>> {
        self.check_open()?;
        self.inner.topology.lag(topic, group).await
    }

    async fn reset_group(&self, topic: &str, group: &str, to: ResetTo) -> Result<()> {
        self.check_open()?;
        self.inner.topology.reset_group(topic, group, to).await
    }

    async fn close(&self) -> Result<()> {
        if self.inner.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        if self.inner.options.delete_on_close {
            for topic in self.inner.topology.declared_topics() {
                if names::is_delay_topic(&topic) {
                    continue;
                }
                if let Err(error) = self.inner.topology.delete_topic(&topic).await {
                    tracing::warn!(%error, topic, "deleting a topic on close");
                }
            }
        }
        self.inner.connector.close().await;
        Ok(())
    }
}

impl std::fmt::Debug for RabbitDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RabbitDriver")
            .field("options", &self.inner.options)
            .finish_non_exhaustive()
    }
}
