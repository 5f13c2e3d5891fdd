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
//! | shard queue | `mq/<topic>/<group>/<shard>` | durable quorum queue, `x-single-active-consumer`, `x-delivery-limit` (not on the core's delay levels, see Delay below), dead-letter exchange `mq/<topic>.dlq`; `S` per group, bound to the exchange |
//! | shard record | `mq.shards/<topic>` | durable classic queue holding `S` empty messages: the topic's shard count |
//! | members | `mq.members/<topic>/<group>` | auto-delete fanout exchange where members of a group announce themselves |
//!
//! Names over 255 bytes are shortened by
//! [`mq_core::driver::names::bounded`]: a prefix, `~` and a hash of the
//! full name, the same in every client.
//!
//! - **Groups**: every group has its own `S` shard queues bound to the
//!   topic's exchange, so every group gets every message. A group exists
//!   from the moment its queues are declared, by
//!   [`Admin::ensure_group`](mq_core::Admin::ensure_group) or its first
//!   subscription (the core creates the dead-letter and delay groups it
//!   needs with `ensure_group`), and stays when members leave. RabbitMQ
//!   keeps no messages for groups that do not exist yet
//!   ([`Capabilities::retains_before_group`](mq_core::Capabilities) is
//!   false), so [`StartFrom::Earliest`](mq_core::StartFrom), "from the
//!   oldest message retained for the group", is from when the group was
//!   created, the same as `Latest`: the oldest message a new group can
//!   have is the first published after its queues exist. Both are
//!   accepted rather than `Earliest` refused, since it is every group's
//!   default start and a group created ahead with `ensure_group` gets
//!   everything published after that. An existing group stays where it is.
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
//!   the `partitions` option (default 4).
//! - **Members**: a shard queue has one active consumer at a time (single
//!   active consumer). Members of a group learn of each other on the
//!   members exchange and consume only their share of the shards (ordered
//!   by id, that is by join order, with the core's
//!   [`assignment::share`](mq_core::driver::assignment::share)); when one
//!   joins, leaves or falls silent the shares move, and each change is
//!   reported to the runtime as a rebalance: a shard is assigned when the
//!   member starts consuming it, revoked when its share loses it. Queues of
//!   one-shard topics (the retry topic) are consumed by every member, and
//!   single active consumer gives each to one of them at a time.
//! - **Hand-over without overlap**: each shard is consumed on a channel of
//!   its own. A member that loses a shard stops handing out its buffered
//!   deliveries, reports the revocation and waits until the runtime has
//!   finished the shard's in-flight handlers and flushed their acks (at
//!   most 60 s); only then does it close the shard's channel. The broker
//!   requeues what the channel still held unacked, in delivery order and
//!   ahead of later messages, and only then activates the next member's
//!   consumer. So the next owner of a key starts exactly where the last one
//!   stopped, and never while an earlier message of the key is in flight
//!   elsewhere. (Nacking the held messages and cancelling the consumer, in
//!   either order, would not do: RabbitMQ 3.10 then lets the next consumer
//!   have later messages first.) Acks for a shard given back are ignored;
//!   the broker redelivers those messages.

//! ## Semantics
//!
//! - **Publishing** waits for publisher confirms. A batch is pipelined:
//!   all sent, then all confirms awaited. A topic's exchange is declared on
//!   first publish. A message to a topic without groups is accepted and
//!   dropped, as RabbitMQ does with a message no queue is bound for and as
//!   `retains_before_group` says: publishing does not depend on whether a
//!   consumer was set up first (services are deployed in any order), and a
//!   group that must see every message is created ahead with
//!   `ensure_group`. (Messages are not `mandatory`: a "no route" error
//!   would refuse exactly what an application publishing to a topic of
//!   its own has every right to send.)
//! - **Consuming**: the runtime's in-flight bound (`prefetch`) holds at
//!   the broker: it is split over the member's queues (RabbitMQ's
//!   prefetch is per consumer; quorum queues have no channel-wide one),
//!   the retry queue taking half an even share, so what the broker hands a
//!   member unacked never adds up to more and a member that crashes has
//!   at most that many redelivered. Every queue needs at least 1: with a
//!   bound below twice the number of queues the retry queue takes 1 on
//!   top of it, and a bound below the number of shards is exceeded by the
//!   difference. A member consuming only some shards (others share the
//!   group) uses only their part. Acks follow the handler, failures go through the core's retry
//!   path (a retry topic per group), dead letters to `<topic>.dlq`. The
//!   quorum `x-delivery-limit` (option `delivery_limit`, default 20) is a
//!   safety net: a message redelivered that often (e.g. because consumers
//!   keep crashing) is dead-lettered by the broker to `mq/<topic>.dlq`
//!   (with RabbitMQ's `x-death` header, not mq's dead-letter headers).
//! - **Delay and retry-after**: the core's durable emulation (internal
//!   delay topics `__mq.delay.<ms>`, which are ordinary topics here); the
//!   driver declares both `Unsupported`, so delays have the emulation's
//!   precision (100 ms). No message waits in process memory. The
//!   forwarder holds a level's head unacked until it is due, up to 24 h,
//!   and the broker's `consumer_timeout` (30 min by default) closes its
//!   channel and requeues the head meanwhile (the subscription consumes
//!   again, the head first). The delay levels' queues therefore have no
//!   delivery limit, which would dead-letter long delays; a delay level
//!   queue declared by an earlier version keeps its limit (delete it when
//!   empty to lift it). Raising `consumer_timeout` above 24 h on the
//!   broker avoids the requeues.
//! - **Transactions**: `tx.select` / `tx.commit` / `tx.rollback` on a
//!   channel per transaction; nothing is visible before commit.
//! - **Lag** per shard queue: messages ready in the queue (passive
//!   declare) plus those delivered to this client and not yet settled,
//!   counted from the moment they reach the connection and, when a member
//!   gives a shard back, until the broker shows them ready again, so lag
//!   never reads below the backlog this client can see. Messages held
//!   unacked by other processes are not visible over AMQP without the
//!   management plugin, so they are not counted.
//! - **Resilience**: after a lost connection the driver reconnects with
//!   exponential backoff, re-publishes messages left unconfirmed
//!   (consumers dedup by id) and re-declares the topology. A subscription
//!   first revokes all its shards (so the runtime lets go of what it
//!   fetched from the lost channels), then consumes again. Acks of
//!   deliveries from a lost channel are void: the broker redelivers those
//!   messages, in order.
//! - **Idempotent publish** is unsupported (the core refuses idempotency keys).
//! - **Admin**: [`Admin::reset_group`](mq_core::Admin::reset_group) to
//!   `Latest` purges the group's shard queues (refused while they have
//!   consumers); resetting to an earlier message, browsing and listing
//!   topics or groups are unsupported: AMQP 0-9-1 cannot enumerate queues,
//!   and reading a quorum queue without consuming it reorders it and
//!   counts deliveries towards its limit.
//!
//! ## Options
//!
//! URL query or config table: `partitions` (4: shards per group of a topic
//! created on first use; a power of two up to 256), `delivery_limit` (20),
//! `max_message_bytes` (134217728, the broker's default
//! `max_message_size`), `publish_timeout` (30s: how long a publish keeps
//! reconnecting and re-publishing), `connect_timeout` (10s), `max_backoff`
//! (5s), `member_heartbeat` (1s), `delete_on_close` (false: when true, the
//! client deletes the exchanges and queues it declared when it closes; for
//! tests).

#![warn(missing_docs)]

mod admin;
mod codec;
mod connection;
mod driver;
mod error;
mod holdings;
mod membership;
mod names;
mod options;
mod publisher;
mod subscription;
mod topology;
mod transaction;

pub use driver::RabbitDriver;
