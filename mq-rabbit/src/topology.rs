//! Declaring, reading and deleting the broker objects of topics and groups.
//!
//! See the crate docs for the layout. Every declaration is idempotent, so
//! any client may (re-)declare at any time, e.g. after a reconnect.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use lapin::options::{
    BasicPublishOptions, ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::protocol::AMQPSoftError;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, ExchangeKind};
use mq_core::driver::PartitionLag;
use mq_core::{Error, Result};
use parking_lot::Mutex;

use crate::connection::Connector;
use crate::error::{map, soft_kind};
use crate::holdings::Holdings;
use crate::names;
use crate::options::Options;

/// How long a client waits for another one to write the shard record of
/// a topic both are creating.
const RECORD_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

pub(crate) struct Topology {
    connector: Arc<Connector>,
    options: Options,
    /// A channel for declarations; replaced when a refusal closes it.
    control: tokio::sync::Mutex<Option<Channel>>,
    /// A channel for passive declares, one at a time: a missing queue closes
    /// the channel it was asked about on, which must not fail declarations
    /// running at the same time.
    probe: tokio::sync::Mutex<Option<Channel>>,
    /// Shard counts read or created, per topic.
    shards: Mutex<HashMap<String, u32>>,
    /// Topics whose exchange this client declared, with the groups it declared on them.
    declared: Mutex<BTreeMap<String, BTreeSet<String>>>,
    /// Deliveries held by this client's subscriptions: the "unacked" part of lag.
    holdings: Holdings,
}

/// What a queue reports of itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct QueueStat {
    /// Messages ready for delivery (not those delivered and unacked).
    pub ready: u32,
    /// Consumers, active or waiting (single active consumer).
    pub consumers: u32,
}

/// What a group's shard queues are declared with.
pub(crate) struct GroupSpec<'a> {
    pub topic: &'a str,
    pub group: &'a str,
    pub shards: u32,
    /// The topic whose dead-letter topic (`<topic>.dlq`) receives messages
    /// over the delivery limit.
    pub dead_letter_of: &'a str,
}

impl Topology {
    pub(crate) fn new(connector: Arc<Connector>, options: Options) -> Self {
        Topology {
            connector,
            options,
            control: tokio::sync::Mutex::new(None),
            probe: tokio::sync::Mutex::new(None),
            shards: Mutex::new(HashMap::new()),
            declared: Mutex::new(BTreeMap::new()),
            holdings: Holdings::default(),
        }
    }

    /// The channel for declarations (and purges), opened again when closed.
    pub(crate) async fn control(&self) -> Result<Channel> {
        let mut control = self.control.lock().await;
        if let Some(channel) = control.as_ref() {
            if channel.status().connected() {
                return Ok(channel.clone());
            }
        }
        let (channel, _) = self.connector.channel(self.connector.deadline()).await?;
        *control = Some(channel.clone());
        Ok(channel)
    }

    /// What `queue` reports of itself, or `None` when it does not exist.
    pub(crate) async fn queue_stat(&self, queue: &str, context: &str) -> Result<Option<QueueStat>> {
        let mut probe = self.probe.lock().await;
        let channel = match probe.as_ref().filter(|c| c.status().connected()) {
            Some(channel) => channel.clone(),
            None => {
                let (channel, _) = self.connector.channel(self.connector.deadline()).await?;
                *probe = Some(channel.clone());
                channel
            }
        };
        let declared = channel
            .queue_declare(
                names::short(queue),
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await;
        match declared {
            Ok(queue) => Ok(Some(QueueStat {
                ready: queue.message_count(),
                consumers: queue.consumer_count(),
            })),
            Err(e) if soft_kind(&e) == Some(AMQPSoftError::NOTFOUND) => Ok(None),
            Err(e) => Err(map(e, context)),
        }
    }

    /// Declares the exchange of `topic` (durable, type topic).
    pub(crate) async fn declare_exchange(&self, channel: &Channel, topic: &str) -> Result<()> {
        channel
            .exchange_declare(
                names::short(&names::exchange(topic)),
                ExchangeKind::Topic,
                ExchangeDeclareOptions {
                    durable: true,
                    ..ExchangeDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(|e| map(e, &format!("declaring the exchange of topic {topic}")))?;
        self.declared.lock().entry(topic.to_owned()).or_default();
        Ok(())
    }

    /// The shard count of `topic`, creating the topic (exchange and shard
    /// record) with `requested` shards, or the default, when it is missing.
    pub(crate) async fn ensure_topic(&self, topic: &str, requested: Option<u32>) -> Result<u32> {
        if let Some(shards) = self.shards.lock().get(topic) {
            return Ok(*shards);
        }
        let channel = self.control().await?;
        self.declare_exchange(&channel, topic).await?;
        let shards = match self.read_shards(topic).await? {
            Some(shards) => shards,
            None => {
                let wanted = requested.map_or(self.options.partitions, names::shard_count);
                self.create_shards(topic, wanted).await?
            }
        };
        self.shards.lock().insert(topic.to_owned(), shards);
        Ok(shards)
    }

    /// For publishing: declares the exchange of `topic` once and returns its
    /// shard count if known (used only to report the shard in receipts).
    pub(crate) async fn prepare_publish(&self, topic: &str) -> Result<u32> {
        if let Some(shards) = self.shards.lock().get(topic) {
            return Ok(*shards);
        }
        let channel = self.control().await?;
        self.declare_exchange(&channel, topic).await?;
        let shards = self.read_shards(topic).await?;
        let known = shards.unwrap_or(self.options.partitions);
        if shards.is_some() {
            self.shards.lock().insert(topic.to_owned(), known);
        }
        Ok(known)
    }

    /// Forgets what this client knows of `topic`, after the broker said it is gone.
    pub(crate) fn forget(&self, topic: &str) {
        self.shards.lock().remove(topic);
    }

    /// Reads the shard count of `topic` from its marker queue.
    pub(crate) async fn read_shards(&self, topic: &str) -> Result<Option<u32>> {
        let marker = names::shards_marker(topic);
        let context = format!("reading the shard count of {topic}");
        for _ in 0..20 {
            match self.queue_stat(&marker, &context).await?.map(|s| s.ready) {
                None | Some(0) => return Ok(None),
                // A count that is no power of two is a record being written.
                Some(count) if count.is_power_of_two() && count <= names::MAX_SHARDS => {
                    return Ok(Some(count))
                }
                Some(_) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
            }
        }
        Err(Error::Backend {
            backend: crate::error::BACKEND,
            message: format!("the shard record of topic {topic} is malformed"),
            source: None,
        })
    }

    /// The shard count of `topic` once the client that created its record
    /// has written it (it declares the record, then writes it), or `None`
    /// if that takes over [`RECORD_WAIT`].
    async fn await_shards(&self, topic: &str) -> Result<Option<u32>> {
        let deadline = tokio::time::Instant::now() + RECORD_WAIT;
        loop {
            if let Some(shards) = self.read_shards(topic).await? {
                return Ok(Some(shards));
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(None);
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// Records `shards` for `topic`: a queue holding that many messages,
    /// written in one AMQP transaction so readers never see a partial count.
    /// Returns the count in force (another client may have been first).
    async fn create_shards(&self, topic: &str, shards: u32) -> Result<u32> {
        let marker = names::short(&names::shards_marker(topic));
        let mut arguments = FieldTable::default();
        arguments.insert("x-max-length".into(), AMQPValue::LongInt(shards as i32));
        arguments.insert(
            "x-overflow".into(),
            AMQPValue::LongString(LongString::from("reject-publish")),
        );
        let channel = self.control().await?;
        let declared = channel
            .queue_declare(
                marker.clone(),
                QueueDeclareOptions {
                    durable: true,
                    ..QueueDeclareOptions::default()
                },
                arguments,
            )
            .await;
        match declared {
            Ok(queue) if queue.message_count() > 0 => {
                return Ok(self.read_shards(topic).await?.unwrap_or(shards))
            }
            Ok(_) => {}
            Err(e) if soft_kind(&e) == Some(AMQPSoftError::PRECONDITIONFAILED) => {
                // Created meanwhile with another count: that one holds, once
                // its creator has written it.
                return match self.await_shards(topic).await? {
                    Some(existing) => Ok(existing),
                    None => Err(map(e, &format!("recording the shard count of {topic}"))),
                };
            }
            Err(e) => return Err(map(e, &format!("recording the shard count of {topic}"))),
        }
        let (tx, _) = self.connector.channel(self.connector.deadline()).await?;
        let written = async {
            tx.tx_select().await?;
            for _ in 0..shards {
                tx.basic_publish(
                    ShortString::from(""),
                    marker.clone(),
                    BasicPublishOptions::default(),
                    b"",
                    BasicProperties::default().with_delivery_mode(2),
                )
                .await?;
            }
            tx.tx_commit().await
        }
        .await;
        let _ = tx.close(200, "done".into()).await;
        match written {
            Ok(()) => {}
            // Another client wrote the record at the same time: the queue
            // took the first `shards` messages and refused the rest.
            Err(e) if soft_kind(&e) == Some(AMQPSoftError::PRECONDITIONFAILED) => {}
            Err(e) => return Err(map(e, &format!("recording the shard count of {topic}"))),
        }
        Ok(self.read_shards(topic).await?.unwrap_or(shards))
    }

    /// Declares the shard queues of a group and binds them, on `channel`.
    pub(crate) async fn declare_group(
        &self,
        channel: &Channel,
        spec: &GroupSpec<'_>,
    ) -> Result<()> {
        let exchange = names::short(&names::exchange(spec.topic));
        let delay_level = names::is_delay_topic(spec.topic);
        for shard in 0..spec.shards {
            let queue = names::short(&names::shard_queue(spec.topic, spec.group, shard));
            // A delay level's queue declared by an earlier version has a
            // delivery limit, and declaring it again without one would be
            // refused: it is used as it is.
            let context = format!("declaring queue {queue}");
            if delay_level && self.queue_stat(queue.as_str(), &context).await?.is_some() {
                self.bind(channel, &queue, &exchange, shard, spec.shards)
                    .await?;
                continue;
            }
            let mut arguments = FieldTable::default();
            arguments.insert(
                "x-queue-type".into(),
                AMQPValue::LongString(LongString::from("quorum")),
            );
            arguments.insert("x-single-active-consumer".into(), AMQPValue::Boolean(true));
            // Not on delay levels: the forwarder holds a level's head unacked
            // until it is due (up to 24 h), and the broker's consumer_timeout
            // (30 min by default) closes its channel and requeues it meanwhile,
            // so a limit would dead-letter long delays.
            if !delay_level {
                arguments.insert(
                    "x-delivery-limit".into(),
                    AMQPValue::LongInt(self.options.delivery_limit.min(i32::MAX as u32) as i32),
                );
            }
            arguments.insert(
                "x-dead-letter-exchange".into(),
                AMQPValue::LongString(LongString::from(names::exchange(&format!(
                    "{}.dlq",
                    spec.dead_letter_of
                )))),
            );
            channel
                .queue_declare(
                    queue.clone(),
                    QueueDeclareOptions {
                        durable: true,
                        ..QueueDeclareOptions::default()
                    },
                    arguments,
                )
                .await
                .map_err(|e| map(e, &context))?;
            self.bind(channel, &queue, &exchange, shard, spec.shards)
                .await?;
        }
        self.declared
            .lock()
            .entry(spec.topic.to_owned())
            .or_default()
            .insert(spec.group.to_owned());
        Ok(())
    }

    /// Binds shard queue `shard` of `shards` to its topic's exchange.
    async fn bind(
        &self,
        channel: &Channel,
        queue: &ShortString,
        exchange: &ShortString,
        shard: u32,
        shards: u32,
    ) -> Result<()> {
        channel
            .queue_bind(
                queue.clone(),
                exchange.clone(),
                ShortString::from(names::binding_pattern(shard, shards)),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| map(e, &format!("binding queue {queue}")))
    }

    /// Creates `group` on `topic` (and the topic if missing): its shard
    /// queues, bound, retain what is published from now on.
    pub(crate) async fn ensure_group(&self, topic: &str, group: &str) -> Result<()> {
        let shards = self.ensure_topic(topic, None).await?;
        let channel = self.control().await?;
        // Declared again: the exchange may have been deleted by another client.
        self.declare_exchange(&channel, topic).await?;
        self.declare_group(
            &channel,
            &GroupSpec {
                topic,
                group,
                shards,
                dead_letter_of: topic,
            },
        )
        .await
    }

    /// Deletes the exchange of `topic`, its shard record and the shard
    /// queues of every group this client knows on it (plus mq's internal
    /// groups). Groups only other processes created cannot be listed over
    /// AMQP; their queues stay, unbound.
    pub(crate) async fn delete_topic(&self, topic: &str) -> Result<()> {
        let shards = match self.read_shards(topic).await? {
            Some(shards) => shards,
            None => self.shards.lock().get(topic).copied().unwrap_or(0),
        };
        let mut groups: BTreeSet<String> = self.declared.lock().remove(topic).unwrap_or_default();
        groups.extend(names::internal_groups());
        let mut queues: Vec<String> = Vec::new();
        for group in &groups {
            for shard in 0..shards {
                queues.push(names::shard_queue(topic, group, shard));
            }
        }
        queues.push(names::shards_marker(topic));
        for queue in queues {
            let channel = self.control().await?;
            match channel
                .queue_delete(names::short(&queue), QueueDeleteOptions::default())
                .await
            {
                Ok(_) => {}
                Err(e) if soft_kind(&e) == Some(AMQPSoftError::NOTFOUND) => {}
                Err(e) => return Err(map(e, &format!("deleting queue {queue}"))),
            }
        }
        let channel = self.control().await?;
        match channel
            .exchange_delete(
                names::short(&names::exchange(topic)),
                ExchangeDeleteOptions::default(),
            )
            .await
        {
            Ok(()) => {}
            Err(e) if soft_kind(&e) == Some(AMQPSoftError::NOTFOUND) => {}
            Err(e) => return Err(map(e, &format!("deleting the exchange of {topic}"))),
        }
        self.forget(topic);
        Ok(())
    }

    /// Topics this client declared, for `delete_on_close`.
    pub(crate) fn declared_topics(&self) -> Vec<String> {
        self.declared.lock().keys().cloned().collect()
    }

    /// Backlog of `group` on `topic` per shard: messages ready in the shard
    /// queue plus those delivered to this client and not yet settled. Read
    /// in this order, so a message moving from one to the other meanwhile
    /// is counted once or twice, never missed.
    pub(crate) async fn lag(&self, topic: &str, group: &str) -> Result<Vec<PartitionLag>> {
        let Some(shards) = self.read_shards(topic).await? else {
            return Ok(Vec::new());
        };
        let mut lags = Vec::with_capacity(shards as usize);
        for shard in 0..shards {
            let queue = names::shard_queue(topic, group, shard);
            let context = format!("reading the length of {queue}");
            let Some(stat) = self.queue_stat(&queue, &context).await? else {
                continue;
            };
            let held = self.holdings.count(&queue).await;
            lags.push(PartitionLag::new(shard, u64::from(stat.ready) + held));
        }
        Ok(lags)
    }

    /// What this client's subscriptions hold of each queue.
    pub(crate) fn holdings(&self) -> &Holdings {
        &self.holdings
    }
}
