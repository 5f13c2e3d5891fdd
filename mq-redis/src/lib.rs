//! # mq-redis
//!
//! The Redis Streams driver for mq: `redis://[user:password@]host:port/db`.
//! It gives the guarantees of the native engine using Redis itself for
//! them (Redis 6.2 or later; 7 recommended, for `XINFO GROUPS` lag).
//!
//! ## Topology
//!
//! Every key of topic `T` carries `{T}` as hash tag, so a cluster would keep
//! a topic in one slot (this driver connects to one node):
//!
//! | key | type | holds |
//! |---|---|---|
//! | `mq:{T}:meta` | hash | `partitions`, `maxlen`, `retention_ms`: every client reads the same |
//! | `mq:{T}:s:<p>` | stream | partition `p`; an ordering key picks it by the shared murmur2 hash |
//! | `mq:{T}:delay` | sorted set | delayed messages scored by due time (ms) |
//! | `mq:delay-index` | sorted set | topics with delayed messages, scored by their earliest due time |
//! | `mq:{T}:idem:<key>` | string | first receipt of an idempotency key, expiring after the dedup window |
//! | `mq:{T}:members:<G>` | sorted set | live members of group `G`, scored by lease expiry |
//! | `mq:{T}:readers:<G>` | hash | member → client id of its blocking reader (woken on rebalance) |
//! | `mq:{T}:lock:<G>:<p>` | string | the member reading partition `p` for `G`, with the lease as expiry |
//!
//! An mq consumer group is a Redis consumer group of the same name on each
//! partition stream (`XGROUP CREATE ... MKSTREAM`, at `0` or `$`); fan-out
//! is several groups. See [Consuming](crate#consuming) below.
//!
//! ## Publishing
//!
//! Plain messages are pipelined `XADD`s (with `MAXLEN ~` or `MINID ~`
//! trimming when the topic has it). A message with an idempotency key is
//! written by one Lua script that checks the key, writes, and sets the key
//! (`SET NX PX window`) atomically; a duplicate gets the first receipt with
//! `duplicate = true`. A delayed message goes into the topic's sorted set;
//! every client that publishes delayed messages or subscribes runs a
//! promoter that moves due entries to their stream with an atomic Lua
//! script, polling at most every `delay_poll`. The schedule lives in Redis,
//! so delays survive restarts, and several promoters may run at once.
//!
//! A send that fails on a broken connection is retried after the
//! connection manager reconnects; before retrying, the driver looks up the
//! message ids in the target streams and does not write again those that
//! arrived, so a retry never shows a consumer a duplicate.
//!
//! Transactions are staged in the client and written in one `MULTI`/`EXEC`
//! at commit; abort writes nothing.
//!
//! ## Consuming
//!
//! A member reads with `XREADGROUP ... COUNT ... BLOCK ... >` on a
//! connection of its own, only from partitions it holds the lock of,
//! never more entries than the runtime has room for (`COUNT` is per
//! stream: a read of `max` asks `max / n` of each of `n` partitions, or
//! one of each of `max` of them in turn), so what a member has pending
//! never exceeds its prefetch;
//! the live members split the partitions with the core's `share`
//! (partition `p` goes to the `p % n`-th). Taking a lock is reported as an
//! assignment. A partition moving to another member is reported revoked;
//! its lock is released once the runtime has let go of it (in-flight
//! handlers finished, acks flushed; 60s at most), with whatever is still
//! pending there, so per-key order holds across members. A new owner
//! reclaims what is still pending with `XAUTOCLAIM` before it reads
//! anything newer (messages of a member that gave the partition back or
//! left, or of one that died: its lock expires after `claim_idle` without
//! renewal). The delivery counter of the pending entry is the attempt
//! number. Acks are `XACK`, by the entry id the ack token carries as its
//! handle. Lag is `lag + pending` of `XINFO GROUPS`. `ensure_group`
//! creates the consumer group on every stream without joining it; as the
//! streams keep their entries, a group created later from the earliest
//! message reads everything they hold.
//!
//! ## Admin
//!
//! Every admin operation is native. Topics are listed from their settings
//! hashes (`SCAN`), groups with `XINFO GROUPS`; browsing is `XRANGE` /
//! `XREVRANGE`. Redis has no offsets, so browsed messages carry none, and
//! browsing from an offset works from `0` (the oldest entry) only; from a
//! time it starts at that millisecond's entry ids. Resetting a group acks
//! what it has pending and moves it with `XGROUP SETID`; it is refused
//! while the group has a member with a live lease.
//!
//! ## Options
//!
//! `partitions` (4), `block` (2s), `claim_idle` (10s), `delay_poll` (50ms),
//! `dedup_window` (24h), `max_message_bytes` (8 MiB, capped by the
//! server's `proto-max-bulk-len`), `maxlen`, `retention`, `prefix` (`mq`),
//! `request_timeout` (10s: one command, and how long a send or ack keeps
//! retrying through a reconnect), `connect_timeout` (5s).

#![warn(missing_docs)]

mod admin;
mod codec;
mod config;
mod connection;
mod delay;
mod driver;
mod error;
mod keys;
mod publish;
mod scripts;
mod subscription;
mod topics;
mod transaction;

pub use driver::RedisDriver;
