//! Option names every backend reads the same way from a URL query or a
//! config table, so switching brokers keeps the options' meaning.

/// Partitions (queues, shards, streams) of a topic created on first use.
pub const PARTITIONS: &str = "partitions";
/// Longest wait to establish a connection.
pub const CONNECT_TIMEOUT: &str = "connect_timeout";
/// Longest wait for the broker to answer one request (a publish confirm, an ack).
pub const REQUEST_TIMEOUT: &str = "request_timeout";
/// Largest message accepted, in bytes.
pub const MAX_MESSAGE_BYTES: &str = "max_message_bytes";
/// How long idempotency keys are remembered.
pub const DEDUP_WINDOW: &str = "dedup_window";
/// Longest pause between reconnect attempts.
pub const MAX_BACKOFF: &str = "max_backoff";
