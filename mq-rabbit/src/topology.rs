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
use crate::names;
use crate::options::Options;

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
    /// Deliveries handed to this client's subscriptions and not yet
    /// settled, per queue: the "unacked" part of lag.
    in_flight: Mutex<HashMap<String, u64>>,
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
            in_flight: Mutex::new(HashMap::new()),
        }
    }

    async fn control(&self) -> Result<Channel> {
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

    /// The message count of `queue`, or `None` when it does not exist.
    async fn queue_length(&self, queue: &str, context: &str) -> Result<Option<u32>> {
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
            Ok(queue) => Ok(Some(queue.message_count())),
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
    async fn read_shards(&self, topic: &str) -> Result<Option<u32>> {
        let marker = names::shards_marker(topic);
        let context = format!("reading the shard count of {topic}");
        for _ in 0..20 {
            match self.queue_length(&marker, &context).await? {
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
                // Created meanwhile with another count: that one holds.
                return match self.read_shards(topic).await? {
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
        for shard in 0..spec.shards {
            let queue = names::short(&names::shard_queue(spec.topic, spec.group, shard));
            let mut arguments = FieldTable::default();
            arguments.insert(
                "x-queue-type".into(),
                AMQPValue::LongString(LongString::from("quorum")),
            );
            arguments.insert("x-single-active-consumer".into(), AMQPValue::Boolean(true));
            arguments.insert(
                "x-delivery-limit".into(),
                AMQPValue::LongInt(self.options.delivery_limit.min(i32::MAX as u32) as i32),
            );
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
                .map_err(|e| map(e, &format!("declaring queue {queue}")))?;
            channel
                .queue_bind(
                    queue.clone(),
                    exchange.clone(),
                    ShortString::from(names::binding_pattern(shard, spec.shards)),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map_err(|e| map(e, &format!("binding queue {queue}")))?;
        }
        self.declared
            .lock()
            .entry(spec.topic.to_owned())
            .or_default()
            .insert(spec.group.to_owned());
        Ok(())
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
    /// queue plus those delivered to this client and not yet settled.
    pub(crate) async fn lag(&self, topic: &str, group: &str) -> Result<Vec<PartitionLag>> {
        let Some(shards) = self.read_shards(topic).await? else {
            return Ok(Vec::new());
        };
        let mut lags = Vec::with_capacity(shards as usize);
        for shard in 0..shards {
            let queue = names::shard_queue(topic, group, shard);
            let context = format!("reading the length of {queue}");
            let Some(ready) = self.queue_length(&queue, &context).await? else {
                continue;
            };
            let unacked = self.in_flight.lock().get(&queue).copied().unwrap_or(0);
            lags.push(PartitionLag::new(shard, u64::from(ready) + unacked));
        }
        Ok(lags)
    }

    /// Counts deliveries handed out (`delta > 0`) or settled or voided (`delta < 0`).
    pub(crate) fn track(&self, queue: &str, delta: i64) {
        let mut in_flight = self.in_flight.lock();
        let count = in_flight.entry(queue.to_owned()).or_insert(0);
        *count = count.saturating_add_signed(delta);
        if *count == 0 {
            in_flight.remove(queue);
        }
    }
}
