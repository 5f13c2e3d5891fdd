//! # mq-rocket
//!
//! The RocketMQ driver for mq, on rocketmq-client-rust:
//! `rocketmq://namesrv:9876[,namesrv2:9876]?options`.
//!
//! ## Publishing
//!
//! One producer per driver. A keyed message goes to the queue the core's
//! key hash picks among the topic's queues (sorted by broker, then queue
//! id), so one key's messages stay on one queue in publish order; others
//! go round robin. A batch is split per queue and sent as RocketMQ batches,
//! at most `max_in_flight` requests at once. A due time becomes a timer
//! message (`TIMER_DELIVER_MS`), so delay is native, to the millisecond,
//! within the broker's timer precision. Topics are created on first use
//! with `partitions` queues on every master broker. Message fields map to
//! properties as described in the codec.
//!
//! ## Consuming
//!
//! An mq group is a RocketMQ clustering consumer group; each member is a
//! push consumer with an orderly listener, bridged to the runtime's fetch
//! and ack one batch per queue at a time, so a queue's offset moves only
//! past acked messages and a queue is read by one member at a time (the
//! broker's queue lock), in order. A message given back is offered again
//! alone; an acked one is not delivered again. A revoked queue is handed
//! on once its batch in progress is acked (or, past a bound, at its first
//! unacked message, the acked ones after it recorded in the name servers
//! for the next owner to skip), then reported. `ensure_group` creates the subscription group and commits its
//! start offsets without joining it; lag is the queues' end offsets minus
//! the committed ones. Retries and dead letters use the core's own topics
//! (RocketMQ's `%RETRY%` would lose per-key order and mq's headers).
//!
//! ## Half messages
//!
//! Native, on the transactional producer of each producer group, with the
//! broker's check-back turned into the core's check stream. Atomic
//! multi-message transactions are not something RocketMQ has:
//! `begin` answers `Error::Unsupported`.
//!
//! ## Names
//!
//! RocketMQ takes topics of up to 127 and groups of up to 255 characters of
//! `[A-Za-z0-9_-]` (plus `%` and `|`, which it reserves): mq names with `.`
//! are refused with `Error::Invalid` naming them, and the core's internal
//! names use `_` as separator.
//!
//! ## Options
//!
//! `partitions` (4), `connect_timeout` (5s), `request_timeout` (10s),
//! `max_message_bytes` (4 MiB, the broker's limit), `max_in_flight` (64),
//! `delay_precision` (1s), `commit_interval` (1s, at least 1s: how often
//! members write their offsets to the broker).

#![warn(missing_docs)]
#![recursion_limit = "512"]

mod admin;
mod browse;
mod cluster;
mod codec;
mod driver;
mod error;
mod half;
mod names;
mod options;
mod producer;
mod runtime;
mod subscription;

pub use driver::RocketDriver;

/// The partition mq gives a message with ordering `key` in a topic of
/// `partitions` queues (the core's shared hash).
pub fn partition_for_key(key: &str, partitions: u32) -> u32 {
    mq_core::driver::partition_for_key(key, partitions)
}
