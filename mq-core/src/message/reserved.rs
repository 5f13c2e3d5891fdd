//! Names of the headers mq itself writes. All start with `mq-`, which users
//! may not set, so a consumer on any backend can rely on their meaning.
//!
//! Drivers use the message-level ones to carry fields their broker has no
//! slot for; the runtime uses the rest for retries, delays and dead letters.

/// The message id, for brokers without a native id field.
pub const ID: &str = "mq-id";
/// The idempotency key, kept so consumer-side dedup can use it.
pub const IDEMPOTENCY_KEY: &str = "mq-idempotency-key";
/// Publish time in milliseconds since the Unix epoch.
pub const PUBLISHED_AT: &str = "mq-published-at";
/// Due time in milliseconds since the Unix epoch, for brokers without native delay.
pub const DELIVER_AT: &str = "mq-deliver-at";
/// Attempts already made before this copy was republished for retry.
pub const PRIOR_ATTEMPTS: &str = "mq-prior-attempts";
/// First delivery time (ms since epoch), carried across retry republishes.
pub const FIRST_SEEN: &str = "mq-first-seen";
/// Where a message parked in an internal delay topic goes when due.
pub const DELAY_DESTINATION: &str = "mq-delay-destination";
/// When a message parked in an internal delay topic is due for its next hop (ms).
pub const DELAY_HOP_DUE: &str = "mq-delay-hop-due";
/// Set on a parked message whose destination existed when it was parked:
/// if the destination is gone when the message is due, it was deleted
/// meanwhile and the message goes with it.
pub const DELAY_DESTINATION_EXISTED: &str = "mq-delay-destination-existed";
/// The topic a retry copy belongs to.
pub const RETRY_TOPIC: &str = "mq-retry-topic";
/// Dead letter: the topic the message was consumed from.
pub const DLQ_TOPIC: &str = "mq-dlq-topic";
/// Dead letter: the consumer group that gave up on it.
pub const DLQ_GROUP: &str = "mq-dlq-group";
/// Dead letter: attempts made.
pub const DLQ_ATTEMPTS: &str = "mq-dlq-attempts";
/// Dead letter: the last error or the reject reason.
pub const DLQ_ERROR: &str = "mq-dlq-error";
/// Dead letter: when it was dead-lettered, RFC 3339 UTC.
pub const DLQ_TIME: &str = "mq-dlq-time";
/// Dead letter: partition of the original delivery.
pub const DLQ_PARTITION: &str = "mq-dlq-partition";
/// Dead letter: offset of the original delivery, where the backend has one.
pub const DLQ_OFFSET: &str = "mq-dlq-offset";
/// How many times a dead letter was redriven to its topic
/// ([`Admin::redrive`](crate::Admin::redrive)).
pub const REPLAYS: &str = "mq-replays";
/// Half message (emulated): the topic a prepared message goes to on commit.
pub const HALF_DESTINATION: &str = "mq-half-destination";
/// Half message (emulated): the prepared message's own ordering key.
pub const HALF_KEY: &str = "mq-half-key";
/// Half message (emulated): the prepared message's idempotency key.
pub const HALF_IDEMPOTENCY_KEY: &str = "mq-half-idempotency-key";
/// Half message (emulated): the delay to apply from commit, in milliseconds.
pub const HALF_DELAY: &str = "mq-half-delay";
/// Half message (emulated): the due time to deliver at, ms since the epoch.
pub const HALF_DELIVER_AT: &str = "mq-half-deliver-at";
/// Half message (emulated): when it was prepared, ms since the epoch.
pub const HALF_PREPARED_AT: &str = "mq-half-prepared-at";
/// Half message (emulated) resolution record: the id of the message it resolves.
pub const HALF_OF: &str = "mq-half-of";
/// Half message (emulated) resolution record: `commit` or `rollback`.
pub const HALF_OUTCOME: &str = "mq-half-outcome";
/// Half message (emulated) resolution record: who decided, `producer` or `checker`.
pub const HALF_DECIDED_BY: &str = "mq-half-decided-by";
