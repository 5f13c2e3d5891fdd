//! The operations tools need on every backend: list topics and groups,
//! browse messages without consuming them, move a group's position, and
//! where the broker has them, list and abort producer transactions. The
//! [`Driver`](super::Driver) methods that use these types default to
//! `Unsupported`; [`Capabilities::admin`](super::Capabilities::admin) says
//! which a backend has.

use std::time::{Duration, SystemTime};

use crate::message::Message;

use super::{Support, TopicPartition};

/// Which admin operations a backend has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct AdminSupport {
    /// [`Driver::list_topics`](super::Driver::list_topics).
    pub list_topics: Support,
    /// [`Driver::list_groups`](super::Driver::list_groups).
    pub list_groups: Support,
    /// [`Driver::browse`](super::Driver::browse).
    pub browse: Support,
    /// [`Driver::reset_group`](super::Driver::reset_group).
    pub reset_group: Support,
    /// [`Driver::list_transactions`](super::Driver::list_transactions) and
    /// [`Driver::abort_transaction`](super::Driver::abort_transaction).
    pub transactions: Support,
}

impl AdminSupport {
    /// None of them.
    pub const NONE: AdminSupport = AdminSupport {
        list_topics: Support::Unsupported,
        list_groups: Support::Unsupported,
        browse: Support::Unsupported,
        reset_group: Support::Unsupported,
        transactions: Support::Unsupported,
    };

    /// Listing, browsing and resetting, natively. Not `transactions`: few
    /// brokers let another client see and end a producer's transaction, so
    /// a driver that can sets it on top.
    pub const ALL: AdminSupport = AdminSupport {
        list_topics: Support::Native,
        list_groups: Support::Native,
        browse: Support::Native,
        reset_group: Support::Native,
        transactions: Support::Unsupported,
    };
}

/// A topic as [`Driver::list_topics`](super::Driver::list_topics) reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct TopicInfo {
    /// Its name.
    pub name: String,
    /// How many partitions (queues, shards, streams) it has.
    pub partitions: u32,
}

impl TopicInfo {
    /// A topic with `partitions` partitions.
    pub fn new(name: impl Into<String>, partitions: u32) -> Self {
        TopicInfo {
            name: name.into(),
            partitions,
        }
    }

    /// Whether mq made it for itself (retry, delay and dead-letter
    /// bookkeeping: names starting with `__mq`).
    pub fn is_internal(&self) -> bool {
        self.name.starts_with(crate::message::RESERVED_PREFIX)
    }
}

/// A producer transaction as
/// [`Driver::list_transactions`](super::Driver::list_transactions) reports
/// it: what an operator needs to tell a hung transaction (its producer died
/// before committing, and consumers reading only committed messages wait
/// behind it) from a busy one.
///
/// ```
/// use std::time::Duration;
/// use mq_core::driver::{TopicPartition, TransactionInfo};
/// let t = TransactionInfo::new("billing-1", "Ongoing", true)
///     .with_producer(4001, 0)
///     .with_timeout(Duration::from_secs(60))
///     .with_partitions(vec![TopicPartition::new("orders", 2)]);
/// assert!(t.open);
/// assert_eq!(t.partitions[0].partition, 2);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct TransactionInfo {
    /// The transactional id: the name its producer registered (Kafka's
    /// `transactional.id`), what [`Admin::abort_transaction`](crate::Admin::abort_transaction) takes.
    pub id: String,
    /// The broker's own name for its state (Kafka: `Ongoing`,
    /// `PrepareCommit`, `PrepareAbort`, `CompleteCommit`,
    /// `CompleteAbort`, `Empty`, ...).
    pub state: String,
    /// Whether a transaction is open under this id: begun and not yet
    /// committed or aborted, so consumers of committed messages do not
    /// get past its first message on the partitions it wrote to.
    pub open: bool,
    /// The broker's id of the producer, where it has one.
    pub producer_id: Option<i64>,
    /// The producer's epoch: raised each time a producer registers the id
    /// again, fencing the one before.
    pub producer_epoch: Option<i16>,
    /// When the open transaction began, as the broker recorded it.
    pub started: Option<SystemTime>,
    /// How long the broker lets a transaction stay open before it aborts
    /// it on its own.
    pub timeout: Option<Duration>,
    /// The partitions the open transaction wrote to.
    pub partitions: Vec<TopicPartition>,
}

impl TransactionInfo {
    /// The transaction of `id`, in the broker's `state`, `open` or not;
    /// the other fields are empty until set.
    pub fn new(id: impl Into<String>, state: impl Into<String>, open: bool) -> Self {
        TransactionInfo {
            id: id.into(),
            state: state.into(),
            open,
            producer_id: None,
            producer_epoch: None,
            started: None,
            timeout: None,
            partitions: Vec::new(),
        }
    }

    /// Sets the producer's id and epoch.
    pub fn with_producer(mut self, id: i64, epoch: i16) -> Self {
        self.producer_id = Some(id);
        self.producer_epoch = Some(epoch);
        self
    }

    /// Sets when the transaction began.
    pub fn with_started(mut self, started: SystemTime) -> Self {
        self.started = Some(started);
        self
    }

    /// Sets the broker's timeout of the transaction.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Sets the partitions it wrote to.
    pub fn with_partitions(mut self, partitions: Vec<TopicPartition>) -> Self {
        self.partitions = partitions;
        self
    }
}

/// Where [`Driver::browse`](super::Driver::browse) starts reading.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BrowseFrom {
    /// From this offset on (clamped to what the partition retains).
    Offset(u64),
    /// From the first message published at or after this time.
    Time(SystemTime),
    /// The last `n` messages.
    Last(u64),
}

/// A bounded look at one partition, consuming nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct BrowseSpec {
    /// The partition to read.
    pub partition: u32,
    /// Where to start.
    pub from: BrowseFrom,
    /// Most messages returned.
    pub max: usize,
}

impl BrowseSpec {
    /// Up to `max` messages of `partition` from `from`.
    pub fn new(partition: u32, from: BrowseFrom, max: usize) -> Self {
        BrowseSpec {
            partition,
            from,
            max,
        }
    }
}

/// A message read by browsing, with where it sits.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct BrowsedMessage {
    /// The partition.
    pub partition: u32,
    /// Its offset there, where the backend has offsets.
    pub offset: Option<u64>,
    /// The message, as a consumer would get it.
    pub message: Message,
}

impl BrowsedMessage {
    /// `message` at `offset` of `partition`.
    pub fn new(partition: u32, offset: Option<u64>, message: Message) -> Self {
        BrowsedMessage {
            partition,
            offset,
            message,
        }
    }
}

/// Where [`Driver::reset_group`](super::Driver::reset_group) moves a group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ResetTo {
    /// The oldest message retained: everything is consumed again.
    Earliest,
    /// The end: everything retained is skipped.
    Latest,
    /// The first message published at or after this time.
    Time(SystemTime),
}
