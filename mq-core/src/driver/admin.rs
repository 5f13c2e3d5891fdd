//! The operations tools need on every backend: list topics and groups,
//! browse messages without consuming them, move a group's position. The
//! [`Driver`](super::Driver) methods that use these types default to
//! `Unsupported`; [`Capabilities::admin`](super::Capabilities::admin) says
//! which a backend has.

use std::time::SystemTime;

use crate::message::Message;

use super::Support;

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
}

impl AdminSupport {
    /// None of them.
    pub const NONE: AdminSupport = AdminSupport {
        list_topics: Support::Unsupported,
        list_groups: Support::Unsupported,
        browse: Support::Unsupported,
        reset_group: Support::Unsupported,
    };

    /// All of them, natively.
    pub const ALL: AdminSupport = AdminSupport {
        list_topics: Support::Native,
        list_groups: Support::Native,
        browse: Support::Native,
        reset_group: Support::Native,
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
