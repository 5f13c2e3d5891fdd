//! # mq-native
//!
//! The embedded log engine behind `native://PATH` URLs: what an mq user gets
//! with no broker at all, durable on local disk, and the reference
//! implementation of the semantics in DESIGN.md.
//!
//! ```no_run
//! # async fn demo() -> mq_core::Result<()> {
//! use mq_core::{Client, Config};
//! let client = Client::new(mq_native::NativeDriver::open(&Config::from_url("native://./data")?).await?);
//! # Ok(()) }
//! ```
//!
//! ## Design
//!
//! RocketMQ-like: **one commit log** shared by every topic, cut into
//! segment files, plus a **per-partition index** over it. A send appends a
//! CRC-checked record batch; a transaction is one batch, so it is atomic
//! across topics and partitions. Appends are encoded under one writer lock
//! (which assigns offsets) and written by a flusher thread that fsyncs once
//! per chunk of waiting appends (**group commit**); under `fsync=always` a
//! send is acknowledged only after the fsync that covers it, and records
//! become visible to consumers at the same moment.
//!
//! A delayed message waits in the delay store and is promoted into its
//! topic a little before it is due, hidden until its due time, so
//! the promotion's write and fsync do not make it late.
//!
//! ## On-disk format
//!
//! ```text
//! DIR/LOCK                   flock held while open; holds "pid N" of the holder
//! DIR/topics.json            topic table snapshot: {next_id, topics: [{id, name, partitions, retention_ms?}], journal_seq}
//! DIR/topics.journal         topic changes since the snapshot: len/crc-framed JSON records
//! DIR/log/<base:020>.log     commit-log segments; <base> = log position of byte 0
//! DIR/index/<topic_id>/<p>.idx   partition index: 16-byte entries (first_offset, position)
//! DIR/delay.idx              delay index: entry n = delayed message n: (due_us, position)
//! DIR/dedup-<gen>.journal    idempotency keys: len/crc-framed records
//! DIR/checkpoint.json        log position P covered by indexes, delay, dedup and half state
//! DIR/offsets.json           group cursors: committed offset, acks above it
//! ```
//!
//! A segment is a sequence of batches (see [`log::batch`] for the exact
//! layout): `len:u32 crc32c:u32 body`, the body holding a timestamp and
//! records. A record is a message (topic id, partition, offset, id, key,
//! idempotency key, ordered headers, payload; a message promoted from the
//! delay store also carries a *visibility time*, before which consumers
//! skip it), a *delayed* message (same, plus its due time; its offset field
//! is its delay sequence number), a *delay-done* marker, a prepared *half*
//! message or its *half-resolved* marker.
//!
//! Index files are rebuildable from the log. JSON files are replaced
//! atomically (write temp, fsync, rename, fsync directory). A topic change
//! is one fsynced journal record, folded into the snapshot once the
//! journal outgrows it, so creating N topics costs O(N).
//!
//! ## Threads
//!
//! File I/O never runs on an async worker: appends are written by the
//! flusher thread, checkpoints and retention by the housekeeping thread,
//! and a fetch's reads, topic changes, opening and closing run on tokio's
//! blocking threads. No lock that sends, fetches or acks wait for is held
//! across an fsync.
//!
//! Drivers opened on one directory in one process share one engine, which
//! closes with the last of them; another process is refused by the lock.
//!
//! ## Recovery
//!
//! Opening reads the checkpoint, truncates every index to the entries it
//! vouches for, and rescans the log from its position `P`: good batches are
//! re-indexed, delayed records and done markers and idempotency keys are
//! replayed. The first bad length or CRC at the end of the last segment is
//! a torn tail (a write the crash cut short, never acknowledged under
//! `fsync=always`) and is truncated; a bad batch followed by good data is
//! corruption and opening fails naming the file and byte offset. Batches
//! before `P` are checked (CRC) every time they are read; a corrupt one is
//! reported, never served.
//!
//! ## Half messages
//!
//! Prepared (half) messages with check-back live in the half store (see
//! [`half`]): a prepared record in the log, invisible to consumers; a
//! commit appends the message to its topic in one batch with the record
//! that resolves it. Unresolved ones are listed in the checkpoint and
//! offered to the producer group's checker `half_check_after` after they
//! were prepared, again every `half_check_interval`, across restarts.
//!
//! ## Retention
//!
//! Space comes back by deleting whole segments of the shared log, by age
//! (`retention`, default 7 days) and size (`retention_bytes`). A topic may
//! also keep its records for less (`TopicSpec::with_retention`): its
//! partitions' start offsets move past older records, which no group is
//! served again, and their bytes go with their segment.
//!
//! ## Options
//!
//! See [`Options`]; every option can be given in the URL query
//! (`native://./data?fsync=never&partitions=8`) or a config table. Unknown
//! options are an error naming them.

#![warn(missing_docs)]

mod dedup;
mod delay;
mod driver;
pub mod engine;
mod error;
#[doc(hidden)]
pub mod fs;
mod group;
pub mod half;
pub mod log;
mod options;

pub use driver::NativeDriver;
pub use options::{Fsync, Options, MAX_PARTITIONS};
