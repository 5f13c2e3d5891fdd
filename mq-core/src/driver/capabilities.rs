//! What a backend can do, so the core knows what to use, what to emulate and
//! what to refuse.

use std::time::Duration;

/// How a backend provides a feature.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Support {
    /// The broker does it itself.
    Native,
    /// mq-core does it on top of the driver's primitives.
    Emulated,
    /// Not available: asking for it returns [`Error::Unsupported`](crate::Error::Unsupported).
    Unsupported,
}

impl Support {
    /// Native or emulated.
    pub fn is_available(self) -> bool {
        !matches!(self, Support::Unsupported)
    }
}

/// Features and limits of a backend.
///
/// A driver reports what its broker does natively (`Native` or
/// `Unsupported`); [`Client::capabilities`](crate::Client::capabilities)
/// reports the effective view, with `Emulated` where the core fills a gap.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Capabilities {
    /// Delayed delivery (`deliver_at` / `delay`).
    pub delay: Support,
    /// Redelivering one message to one group after a pause (`nack` with retry-after).
    pub redelivery_delay: Support,
    /// Atomic multi-message transactions.
    pub transactions: Support,
    /// Producer-side dedup by idempotency key.
    pub idempotent_publish: Support,
    /// Per-key ordered delivery within a group.
    pub ordering: Support,
    /// Dropping a topic's messages older than its own retention
    /// ([`TopicSpec::with_retention`](crate::TopicSpec::with_retention)).
    pub topic_retention: Support,
    /// Largest message accepted, payload plus key and headers, in bytes.
    pub max_message_bytes: usize,
    /// How late a due delayed message may be delivered, at most, in normal operation.
    pub delay_precision: Duration,
    /// Longest delay accepted.
    pub max_delay: Duration,
    /// Window within which an idempotency key is remembered.
    pub dedup_window: Duration,
}

impl Capabilities {
    /// Everything unsupported, 1 MiB messages: a starting point for drivers.
    pub fn minimal() -> Self {
        Capabilities {
            delay: Support::Unsupported,
            redelivery_delay: Support::Unsupported,
            transactions: Support::Unsupported,
            idempotent_publish: Support::Unsupported,
            ordering: Support::Native,
            topic_retention: Support::Unsupported,
            max_message_bytes: 1024 * 1024,
            delay_precision: Duration::from_millis(100),
            max_delay: Duration::from_secs(365 * 24 * 3600),
            dedup_window: Duration::from_secs(24 * 3600),
        }
    }
}
