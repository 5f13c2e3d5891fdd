//! # mq-kafka
//!
//! The Kafka driver for mq, on rdkafka (librdkafka, bundled):
//! `kafka://host:port[,host:port...]?options`.
//!
//! ## Publishing
//!
//! One idempotent producer per driver (`enable.idempotence`, `acks=all`),
//! batching by `linger`; every send resolves by its delivery report, so a
//! receipt carries the record's partition and offset. A keyed message goes
//! to the partition of the core's murmur2 mapping, passed explicitly (the
//! producer's own partitioner is `murmur2_random`, the Java client's), so
//! the partition mq computes is the one the broker stores and non-mq Kafka
//! clients agree on it. Topics are created on first use with `partitions`
//! partitions. `close` flushes everything accepted. Message fields map to
//! the record as described in the codec (key, value, headers, `mq-id`,
//! timestamp); foreign records whose key or headers are not UTF-8 are
//! decoded lossily (U+FFFD), never refused.
//!
//! ## Consuming
//!
//! An mq group is a Kafka consumer group with cooperative-sticky
//! assignment and `read_committed` isolation. Rebalances are reported to
//! the runtime; a revocation commits the partition's offsets only after
//! the runtime drained it. Offsets are the core's cursor's lowest unacked
//! offset, committed every `commit_interval`, on revoke and on close.
//! A poll thread per member keeps it in the group whatever the runtime's
//! pace, pausing partitions for backpressure. `ensure_group` commits the
//! start offsets of a group without joining it; lag is the high
//! watermark minus the committed offset. Delay, retry-after and dead
//! letters go through the core's emulation, with internal names within
//! Kafka's rules (249 characters of `[a-zA-Z0-9._-]`).
//!
//! ## Transactions
//!
//! `begin` is a Kafka transaction on a pooled transactional producer;
//! a transaction begun on a subscription also commits the input offsets
//! (consume-transform-produce, exactly once). A broker without
//! transactions answers `Error::Unsupported`.
//!
//! `Admin::transactions` lists every broker's transactions with
//! ListTransactions and DescribeTransactions (librdkafka has neither;
//! kafka-protocol encodes them, on plaintext connections only);
//! `Admin::abort_transaction` aborts a hung one by registering its
//! transactional id again, which fences a live producer of that id.
//!
//! ## Options
//!
//! `partitions` (4), `replication_factor` (-1: the broker's default),
//! `connect_timeout` (10s), `request_timeout` (30s), `max_message_bytes`
//! (1 MiB), `linger` (5ms), `commit_interval` (200ms),
//! `transaction_timeout` (60s), `session_timeout` (10s),
//! `metadata_max_age` (30s: how soon partitions added elsewhere are used by
//! this client's sends), and any
//! librdkafka property as `kafka.<property>` (`kafka.security.protocol`,
//! `kafka.sasl.password`, ...), passed on unchanged; options whose names
//! hold `password`, `secret`, `token` or `key` never show in errors or logs.

#![warn(missing_docs)]

mod admin;
mod codec;
mod config;
mod driver;
mod error;
mod logging;
mod publish;
mod subscription;
mod topics;
mod transaction;
mod transactions;

pub use driver::KafkaDriver;

/// The partition mq and the broker give a record with ordering `key` in
/// a topic of `partitions` partitions (murmur2, as the Java client).
pub fn partition_for_key(key: &str, partitions: u32) -> u32 {
    topics::partition_of(key, partitions) as u32
}
