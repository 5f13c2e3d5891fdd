//! The driver SPI: the primitives a backend supplies. Everything else
//! (validation, ids, retries, dead letters, delay emulation, dedup,
//! ordering, telemetry) is done once in the core on top of these.
//!
//! The pub structs are `#[non_exhaustive]`: drivers build them with their
//! constructors, so the SPI can grow without breaking drivers.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;

use super::{BrowseSpec, BrowsedMessage, ResetTo, TopicInfo, TransactionInfo};
use super::{Capabilities, DriverHalfChecks, HalfOutcome, HalfToken, Rebalance};
use crate::error::Result;
use crate::message::{Message, Receipt};

/// One partition (queue, shard, stream) of a topic: what assignments and
/// revocations name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPartition {
    /// The topic (or internal topic).
    pub topic: Arc<str>,
    /// Partition, queue or shard index.
    pub partition: u32,
}

impl TopicPartition {
    /// Partition `partition` of `topic`.
    pub fn new(topic: impl Into<Arc<str>>, partition: u32) -> Self {
        TopicPartition {
            topic: topic.into(),
            partition,
        }
    }
}

/// Identifies one delivered record to its subscription for ack or nack.
///
/// A log backend uses `partition` and `offset`; a broker that acks by its
/// own id puts it in `handle` (a RocketMQ receipt handle, a Redis entry id),
/// which the core carries back untouched.
///
/// ```
/// use mq_core::driver::AckToken;
/// let token = AckToken::new("orders", 3, 42).with_handle("1700000000000-0");
/// assert_eq!(token.handle.as_deref(), Some(&b"1700000000000-0"[..]));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct AckToken {
    /// The topic (or internal topic) the record was read from.
    pub topic: Arc<str>,
    /// Partition, queue or shard.
    pub partition: u32,
    /// Offset, or a broker-specific position (an AMQP delivery tag).
    pub offset: u64,
    /// An opaque broker handle, when the broker acks by one.
    pub handle: Option<Bytes>,
}

impl AckToken {
    /// A token for the record at `offset` of `partition` of `topic`.
    pub fn new(topic: impl Into<Arc<str>>, partition: u32, offset: u64) -> Self {
        AckToken {
            topic: topic.into(),
            partition,
            offset,
            handle: None,
        }
    }

    /// Attaches the broker's own handle for the record.
    pub fn with_handle(mut self, handle: impl Into<Bytes>) -> Self {
        self.handle = Some(handle.into());
        self
    }

    /// The partition the record came from.
    pub fn topic_partition(&self) -> TopicPartition {
        TopicPartition::new(self.topic.clone(), self.partition)
    }

    /// Whether the record came from `partition`.
    pub fn is_in(&self, partition: &TopicPartition) -> bool {
        self.partition == partition.partition
            && (Arc::ptr_eq(&self.topic, &partition.topic) || *self.topic == *partition.topic)
    }
}

/// Where a new consumer group starts reading.
///
/// What "earliest" reaches depends on whether the broker keeps messages for
/// a group before it exists:
/// [`Capabilities::retains_before_group`](crate::driver::Capabilities::retains_before_group).
/// Create groups ahead with [`Admin::ensure_group`](crate::Admin::ensure_group)
/// to be sure.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StartFrom {
    /// From the oldest retained message; where `retains_before_group` is
    /// false (RabbitMQ), that is from the group's creation, as `Latest`.
    #[default]
    Earliest,
    /// Only messages published after the group was created.
    Latest,
}

/// What a driver is asked to subscribe to.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct SubscribeSpec {
    /// Topics to read (a user topic, and internal retry topics the core adds).
    pub topics: Vec<String>,
    /// The consumer group; members of one group share the work.
    pub group: String,
    /// Where a group seen for the first time starts.
    pub start: StartFrom,
    /// Most deliveries this member holds unsettled at once.
    pub prefetch: usize,
}

impl SubscribeSpec {
    /// `group` on `topics`, from the earliest message, prefetch 512.
    pub fn new(topics: Vec<String>, group: impl Into<String>) -> Self {
        SubscribeSpec {
            topics,
            group: group.into(),
            start: StartFrom::Earliest,
            prefetch: 512,
        }
    }

    /// Where a group seen for the first time starts.
    pub fn with_start(mut self, start: StartFrom) -> Self {
        self.start = start;
        self
    }

    /// Most deliveries held unsettled at once (at least 1).
    pub fn with_prefetch(mut self, prefetch: usize) -> Self {
        self.prefetch = prefetch.max(1);
        self
    }
}

/// Topic settings for [`Driver::ensure_topic`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct TopicSpec {
    /// Number of partitions (queues, shards, streams).
    pub partitions: u32,
    /// Drop messages older than this, where the backend retains by age.
    pub retention: Option<Duration>,
}

impl TopicSpec {
    /// A topic with `partitions` partitions and the backend's default retention.
    pub fn new(partitions: u32) -> Self {
        TopicSpec {
            partitions,
            retention: None,
        }
    }

    /// Sets the retention by age: messages older than this are dropped
    /// (native engine: expired for every group; Redis: trimmed by `MINID`).
    /// Backends that cannot refuse it with `Error::Unsupported`; see
    /// [`Capabilities::topic_retention`](crate::driver::Capabilities::topic_retention).
    pub fn with_retention(mut self, retention: Duration) -> Self {
        self.retention = Some(retention);
        self
    }
}

/// Backlog of one partition for one group.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct PartitionLag {
    /// Partition, queue or shard index.
    pub partition: u32,
    /// Messages published to the partition that the group has not acked yet
    /// (unread plus in flight). The same meaning on every backend.
    pub lag: u64,
    /// Offset one past the newest message, where the backend has offsets.
    pub end_offset: Option<u64>,
    /// The group's committed offset (the oldest unacked), where it has offsets.
    pub committed_offset: Option<u64>,
}

impl PartitionLag {
    /// `lag` messages not acked on `partition`, without offsets.
    pub fn new(partition: u32, lag: u64) -> Self {
        PartitionLag {
            partition,
            lag,
            end_offset: None,
            committed_offset: None,
        }
    }

    /// Adds the end offset and the group's committed offset.
    pub fn with_offsets(mut self, end: u64, committed: Option<u64>) -> Self {
        self.end_offset = Some(end);
        self.committed_offset = committed;
        self
    }
}

/// One record handed to a subscription.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct RawDelivery {
    /// The message as published: id, key, headers, payload, publish time.
    pub message: Message,
    /// Partition, queue or shard.
    pub partition: u32,
    /// Offset, where the backend has offsets.
    pub offset: Option<u64>,
    /// How many times the broker has handed this record to the group, this one included (1-based).
    pub delivery_count: u32,
    /// When the group first received it, where the broker knows; else now.
    pub first_seen: SystemTime,
    /// The handle for ack and nack.
    pub token: AckToken,
}

impl RawDelivery {
    /// A first delivery of `message`, identified by `token` (whose
    /// partition it reports), first seen at `first_seen`, without an offset.
    pub fn new(message: Message, token: AckToken, first_seen: SystemTime) -> Self {
        RawDelivery {
            message,
            partition: token.partition,
            offset: None,
            delivery_count: 1,
            first_seen,
            token,
        }
    }

    /// The record's offset in its partition.
    pub fn with_offset(mut self, offset: u64) -> Self {
        self.offset = Some(offset);
        self
    }

    /// How many times the broker has handed this record to the group (at least 1).
    pub fn with_delivery_count(mut self, count: u32) -> Self {
        self.delivery_count = count.max(1);
        self
    }
}

/// A backend. Object safe; the client holds it as `Arc<dyn Driver>`.
#[async_trait]
pub trait Driver: Send + Sync + 'static {
    /// The backend's name as used in errors and telemetry (`memory`, `kafka`, ...).
    fn backend(&self) -> &'static str;

    /// What the broker supports natively, and its limits.
    fn capabilities(&self) -> Capabilities;

    /// Durably writes a batch (acks after the broker confirms) and returns a
    /// receipt per message, in order. Messages arrive validated, with ids.
    /// A message with a due time is only passed when `delay` is `Native`; an
    /// idempotency key only when `idempotent_publish` is `Native`.
    async fn publish(&self, batch: Vec<Message>) -> Result<Vec<Receipt>>;

    /// Starts a transaction (only called when `transactions` is `Native`).
    async fn begin(&self) -> Result<Box<dyn DriverTransaction>>;

    /// Joins `spec.group` on `spec.topics`.
    async fn subscribe(&self, spec: SubscribeSpec) -> Result<Box<dyn DriverSubscription>>;

    /// Creates `group` on `topic` if missing, positioned at `start`, without
    /// joining it: no member joins or leaves, so no rebalance happens. From
    /// then on the group retains every message published to the topic.
    /// An existing group is left where it is. The topic is created if missing.
    async fn ensure_group(&self, topic: &str, group: &str, start: StartFrom) -> Result<()>;

    /// Creates the topic if missing; an existing topic is left as it is.
    async fn ensure_topic(&self, topic: &str, spec: &TopicSpec) -> Result<()>;

    /// Deletes the topic and its messages; deleting a missing topic is not an error.
    async fn delete_topic(&self, topic: &str) -> Result<()>;

    /// Grows `topic` to `partitions` partitions (more than it has; the
    /// core checks). Only called when `partition_growth` is `Native`.
    async fn grow_partitions(&self, topic: &str, partitions: u32) -> Result<()> {
        let _ = (topic, partitions);
        Err(crate::Error::unsupported(
            "adding partitions",
            self.backend(),
        ))
    }

    /// Backlog per partition of `topic` for `group`.
    async fn lag(&self, topic: &str, group: &str) -> Result<Vec<PartitionLag>>;

    /// Every topic, internal ones included, with its partition count.
    async fn list_topics(&self) -> Result<Vec<TopicInfo>> {
        Err(crate::Error::unsupported("listing topics", self.backend()))
    }

    /// Whether `topic` exists, where the backend can tell with one cheap
    /// request (`None` where it cannot). The delay emulation asks it so
    /// that messages parked for a topic deleted meanwhile go with it
    /// instead of creating it again.
    async fn topic_exists(&self, topic: &str) -> Result<Option<bool>> {
        let _ = topic;
        Ok(None)
    }

    /// The consumer groups of `topic`.
    async fn list_groups(&self, topic: &str) -> Result<Vec<String>> {
        let _ = topic;
        Err(crate::Error::unsupported("listing groups", self.backend()))
    }

    /// Up to `spec.max` messages of one partition of `topic`, read without
    /// consuming them (no group's position moves), oldest first.
    async fn browse(&self, topic: &str, spec: &BrowseSpec) -> Result<Vec<BrowsedMessage>> {
        let _ = (topic, spec);
        Err(crate::Error::unsupported("browsing", self.backend()))
    }

    /// Moves `group`'s position on every partition of `topic`; unacked
    /// messages before the new position count as done. Refused while the
    /// group has members, as Kafka refuses it for an active group.
    async fn reset_group(&self, topic: &str, group: &str, to: ResetTo) -> Result<()> {
        let _ = (topic, group, to);
        Err(crate::Error::unsupported(
            "resetting a group",
            self.backend(),
        ))
    }

    /// Every producer transaction the broker knows of, open or not, in any
    /// order. Only called when `admin.transactions` is `Native`.
    async fn list_transactions(&self) -> Result<Vec<TransactionInfo>> {
        Err(crate::Error::unsupported(
            "listing transactions",
            self.backend(),
        ))
    }

    /// Aborts the open transaction of transactional id `id` (one its
    /// producer will never finish: it died, or hangs), so consumers of
    /// committed messages get past it. A live producer of `id` is fenced:
    /// its next transactional call fails. Only called when
    /// `admin.transactions` is `Native`; `id` arrives validated.
    async fn abort_transaction(&self, id: &str) -> Result<()> {
        let _ = id;
        Err(crate::Error::unsupported(
            "aborting transactions",
            self.backend(),
        ))
    }

    /// Publishes `message` prepared for producer group `group`: stored
    /// durably, invisible to every consumer until
    /// [`resolve_half`](Self::resolve_half) commits it. Only called when
    /// `half_messages` is `Native`; the message arrives validated, with its id.
    async fn publish_half(&self, group: &str, message: Message) -> Result<(Receipt, HalfToken)> {
        let _ = (group, message);
        Err(crate::Error::unsupported("half messages", self.backend()))
    }

    /// Commits (delivers) or rolls back (drops) a prepared message of
    /// `group`; [`HalfOutcome::Unknown`] leaves it prepared, to be checked
    /// again later. Resolving a message that is already resolved changes
    /// nothing: the first outcome stands.
    async fn resolve_half(
        &self,
        group: &str,
        token: HalfToken,
        outcome: HalfOutcome,
    ) -> Result<()> {
        let _ = (group, token, outcome);
        Err(crate::Error::unsupported("half messages", self.backend()))
    }

    /// The prepared messages of `group` left unresolved past the broker's
    /// check timeout, to be put to the application's checker. Every
    /// unresolved message is offered again (to this stream or another of
    /// the group, in this process or another) until it is resolved.
    async fn half_checks(&self, group: &str) -> Result<Box<dyn DriverHalfChecks>> {
        let _ = group;
        Err(crate::Error::unsupported("half messages", self.backend()))
    }

    /// Flushes and closes connections.
    async fn close(&self) -> Result<()>;
}

/// A group membership created by [`Driver::subscribe`].
///
/// **Liveness**: a subscription stays a member of its group while nobody
/// calls [`fetch`](Self::fetch), for as long as it is open (the runtime
/// stops fetching under backpressure, and a delay forwarder may wait hours
/// for the head of a long level). A driver whose broker drops members that
/// do not poll keeps polling in the background and pauses its partitions
/// instead.
///
/// **Rebalance**: a driver whose assignment can change reports it through
/// [`rebalance`](Self::rebalance) (see [`Rebalance`] for the protocol).
#[async_trait]
pub trait DriverSubscription: Send + Sync {
    /// Waits until at least one delivery is available and returns up to `max`.
    ///
    /// Must be cancel safe: dropping the future before it completes loses no
    /// record (it stays available for a later fetch). Once a revocation has
    /// been returned by [`rebalance`](Self::rebalance), no fetch returns
    /// records of its partitions until they are assigned again.
    async fn fetch(&self, max: usize) -> Result<Vec<RawDelivery>>;

    /// Acknowledges records; each is done for this group. A token from a
    /// connection or channel that has since been lost, or of a partition
    /// revoked since, is ignored (`Ok`): the broker redelivers that record,
    /// and at-least-once allows it.
    async fn ack(&self, tokens: Vec<AckToken>) -> Result<()>;

    /// Returns a record for redelivery to the group after `after`. Only
    /// called with a non-zero pause when `redelivery_delay` is `Native`.
    async fn nack(&self, token: AckToken, after: Duration) -> Result<()>;

    /// The next change of this member's assignment; `None` once there will
    /// be none. Must be cancel safe. The default never reports one, for
    /// brokers where membership never moves partitions between members.
    async fn rebalance(&self) -> Option<Rebalance> {
        std::future::pending().await
    }

    /// Starts a transaction bound to this membership, for
    /// consume-transform-produce: its commit makes the staged messages
    /// visible and acks the records given to [`DriverTransaction::ack`],
    /// all or nothing (Kafka's `send_offsets_to_transaction`). Only called
    /// when `transactional_offsets` is `Native`.
    async fn begin(&self) -> Result<Box<dyn DriverTransaction>> {
        Err(crate::Error::unsupported(
            "transactional offsets",
            "unknown",
        ))
    }

    /// Leaves the group; unacked records go back to the group.
    async fn close(&self) -> Result<()>;
}

/// A transaction created by [`Driver::begin`].
#[async_trait]
pub trait DriverTransaction: Send {
    /// Stages messages; they are invisible to consumers until commit.
    async fn publish(&mut self, batch: Vec<Message>) -> Result<Vec<Receipt>>;

    /// Adds records of the subscription this transaction was begun on
    /// ([`DriverSubscription::begin`]): commit acks them together with the
    /// staged messages, exactly as [`DriverSubscription::ack`] would, and
    /// abort leaves them unacked. The runtime hands a partition's records
    /// to transactions in offset order, so a commit's acks end at the
    /// group's new position.
    async fn ack(&mut self, tokens: Vec<AckToken>) -> Result<()> {
        let _ = tokens;
        Err(crate::Error::unsupported(
            "transactional offsets",
            "unknown",
        ))
    }

    /// Makes every staged message visible at once.
    async fn commit(self: Box<Self>) -> Result<()>;

    /// Drops every staged message.
    async fn abort(self: Box<Self>) -> Result<()>;
}
