//! # mq-rabbit
//!
//! The RabbitMQ driver of mq (`amqp://user:pass@host:5672/vhost`, or
//! `amqps://`), on [lapin](https://docs.rs/lapin) 4. Applications use it
//! through `mq::connect`; it gives the guarantees of the mq contract on
//! RabbitMQ 3.10 or later without plugins.
//!
//! ## Topology
//!
//! Declared idempotently by the driver, on first use by any client:
//!
//! | object | name | what |
//! |---|---|---|
//! | exchange | `mq/<topic>` | durable `topic` exchange, one per topic |
//! | shard queue | `mq/<topic>/<group>/<shard>` | durable quorum queue, `x-single-active-consumer`, `x-delivery-limit`, dead-letter exchange `mq/<topic>.dlq`; `S` per group, bound to the exchange |
//! | shard record | `mq.shards/<topic>` | durable classic queue holding `S` empty messages: the topic's shard count |
//! | members | `mq.members/<topic>/<group>` | auto-delete fanout exchange where members of a group announce themselves |
//!
//! Names over 255 bytes keep a 200-byte prefix and end in `~` and a hash
//! of the full name.
//!
//! - **Groups**: every group has its own `S` shard queues bound to the
//!   topic's exchange, so every group gets every message. Queues exist from
//!   the moment a group is first joined (the core joins the groups it needs
//!   before publishing to them), and stay when members leave. So
//!   [`StartFrom::Earliest`](mq_core::StartFrom) means "from when the group
//!   was created", and `Latest` means the same: RabbitMQ keeps no messages
//!   for groups that do not exist yet.
//! - **Per-key order**: the producer routes by the shared stable key hash
//!   (`mq_core::driver::partition_for_key`, Kafka's murmur2): the routing
//!   key is the hash's low 8 bits as words, lowest first
//!   (`1.0.1.1.0.0.1.0`), and shard `p` of `S` binds the pattern of `p`'s
//!   low `log2 S` bits followed by `#`. A shard thus holds exactly the keys
//!   with `partition_for_key(key, S) == p`, and producers never need to
//!   know `S`. `S` is a power of two up to 256 (`TopicSpec::partitions`
//!   rounds up); unkeyed messages are spread round robin.
//! - **Shard count**: `ensure_topic` records `S` as the message count of
//!   the topic's shard record queue (written in one AMQP transaction, so a
//!   reader sees all or nothing; `x-max-length = S` with `reject-publish`
//!   makes it write-once). A topic first used without `ensure_topic` gets
//!   the `shards` option (default 4).
//! - **Members**: a shard queue has one active consumer at a time
//!   (single active consumer). Members of a group learn of each other on the
//!   members exchange and consume only their share of the shards (member `i`
//!   of `n`: shards `p % n == i`); when one leaves or falls silent the
//!   others take its shards over. During such a hand-over, messages of one
//!   key that the leaving member still holds may overlap with the next
//!   ones the new owner gets.
//!
//! ## Semantics
//!
//! - **Publishing** waits for publisher confirms, with `mandatory` set: a
//!   message no group queue takes is an [`Error::Rejected`](mq_core::Error)
//!   naming the topic. A batch is pipelined: all sent, then all confirms
//!   awaited. A topic's exchange is declared on first publish.
//! - **Consuming**: `basic.qos` prefetch is the runtime's in-flight bound
//!   (per shard queue; the core never takes more than the bound from the
//!   driver), acks follow the handler, failures go through the core's retry
//!   path (a retry topic per group), dead letters to `<topic>.dlq`. The
//!   quorum `x-delivery-limit` (option `delivery_limit`, default 20) is a
//!   safety net: a message redelivered that often (e.g. because consumers
//!   keep crashing) is dead-lettered by the broker to `mq/<topic>.dlq`
//!   (with RabbitMQ's `x-death` header, not mq's dead-letter headers).
//! - **Delay and retry-after**: the core's durable emulation (internal
//!   delay topics `__mq.delay.<ms>`, which are ordinary topics here); the
//!   driver declares both `Unsupported`, so delays have the emulation's
//!   precision (100 ms). No message waits in process memory.
//! - **Transactions**: `tx.select` / `tx.commit` / `tx.rollback` on a
//!   channel per transaction; nothing is visible before commit.
//! - **Lag** per shard queue: messages ready in the queue (passive
//!   declare) plus those delivered to this client and not yet settled.
//!   Messages held unacked by other processes are not visible over AMQP
//!   without the management plugin, so they are not counted.
//! - **Resilience**: after a lost connection the driver reconnects with
//!   exponential backoff, re-declares the topology, consumes again and
//!   re-publishes messages left unconfirmed (consumers dedup by id). Acks
//!   of deliveries from the lost channel are void: the broker redelivers
//!   those messages.
//! - **Idempotent publish** is unsupported (the core refuses idempotency keys).
//!
//! ## Options
//!
//! URL query or config table: `shards` (4), `delivery_limit` (20),
//! `max_message_bytes` (134217728, the broker's default
//! `max_message_size`), `publish_timeout` (30s: how long a publish keeps
//! reconnecting and re-publishing), `connect_timeout` (10s), `max_backoff`
//! (5s), `member_heartbeat` (1s), `delete_on_close` (false: when true, the
//! client deletes the exchanges and queues it declared when it closes; for
//! tests).

#![warn(missing_docs)]

mod codec;
mod connection;
mod driver;
mod error;
mod membership;
mod names;
mod options;
mod publisher;
mod subscription;
mod topology;
mod transaction;

pub use driver::RabbitDriver;
