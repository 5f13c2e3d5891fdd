//! The driver SPI: the primitives a backend supplies. Everything else
//! (validation, ids, retries, dead letters, delay emulation, dedup,
//! ordering, telemetry) is done once in the core on top of these.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;

use super::Capabilities;
use crate::error::Result;
use crate::message::{Message, Receipt};

/// Identifies one delivered record to its subscription for ack or nack.
///
/// Drivers fill the fields as their broker needs: a log backend uses
/// `partition` and `offset`; Redis puts the entry id's two halves in
/// `offset` and `tag`; AMQP puts the delivery tag in `offset` and the shard in
/// `partition`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct AckToken {
    /// The topic (or internal topic) the record was read from.
    pub topic: Arc<str>,
    /// Partition, queue or shard.
    pub partition: u32,
    /// Offset or broker-specific position.
    pub offset: u64,
    /// A second broker-specific number, 0 when unused.
    pub tag: u64,
}

/// Where a new consumer group starts reading.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StartFrom {
    /// From the oldest retained message.
    #[default]
    Earliest,
    /// Only messages published after the group was created.
    Latest,
}

/// What a driver is asked to subscribe to.
#[derive(Clone, Debug)]
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

/// One record handed to a subscription.
#[derive(Clone, Debug)]
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

    /// Creates the topic if missing; an existing topic is left as it is.
    async fn ensure_topic(&self, topic: &str, spec: &TopicSpec) -> Result<()>;

    /// Deletes the topic and its messages; deleting a missing topic is not an error.
    async fn delete_topic(&self, topic: &str) -> Result<()>;

    /// Backlog per partition of `topic` for `group`.
    async fn lag(&self, topic: &str, group: &str) -> Result<Vec<PartitionLag>>;

    /// Flushes and closes connections.
    async fn close(&self) -> Result<()>;
}

/// A group membership created by [`Driver::subscribe`].
#[async_trait]
pub trait DriverSubscription: Send + Sync {
    /// Waits until at least one delivery is available and returns up to `max`.
    ///
    /// Must be cancel safe: dropping the future before it completes loses no
    /// record (it stays available for a later fetch).
    async fn fetch(&self, max: usize) -> Result<Vec<RawDelivery>>;

    /// Acknowledges records; each is done for this group. A token from a
    /// connection or channel that has since been lost is ignored (`Ok`):
    /// the broker redelivers that record, and at-least-once allows it.
    async fn ack(&self, tokens: Vec<AckToken>) -> Result<()>;

    /// Returns a record for redelivery to the group after `after`. Only
    /// called with a non-zero pause when `redelivery_delay` is `Native`.
    async fn nack(&self, token: AckToken, after: Duration) -> Result<()>;

    /// Leaves the group; unacked records go back to the group.
    async fn close(&self) -> Result<()>;
}

/// A transaction created by [`Driver::begin`].
#[async_trait]
pub trait DriverTransaction: Send {
    /// Stages messages; they are invisible to consumers until commit.
    async fn publish(&mut self, batch: Vec<Message>) -> Result<Vec<Receipt>>;

    /// Makes every staged message visible at once.
    async fn commit(self: Box<Self>) -> Result<()>;

    /// Drops every staged message.
    async fn abort(self: Box<Self>) -> Result<()>;
}
