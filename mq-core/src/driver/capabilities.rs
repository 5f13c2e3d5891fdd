//! What a backend can do, so the core knows what to use, what to emulate and
//! what to refuse.

use std::time::Duration;

use super::{AdminSupport, NameRules};

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

/// Which delays a broker's native delay can express.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum DelayModel {
    /// Any due time up to `max_delay`.
    #[default]
    Arbitrary,
    /// Only these fixed delays (RocketMQ 4.x has 18 levels, 1 s to 2 h).
    /// The core passes a message natively only when a level delivers it
    /// on time (not early, late by at most the delay precision); other
    /// delays go through the core's emulation.
    Levels(Vec<Duration>),
}

impl DelayModel {
    /// Whether the broker can deliver a message due in `delay` neither
    /// early nor later than `precision` after it is due.
    ///
    /// ```
    /// use std::time::Duration;
    /// use mq_core::driver::DelayModel;
    /// let s = Duration::from_secs;
    /// let levels = DelayModel::Levels(vec![s(1), s(5), s(10)]);
    /// assert!(levels.fits(Duration::from_millis(4_950), Duration::from_millis(100)));
    /// assert!(!levels.fits(s(7), Duration::from_millis(100)));
    /// assert!(DelayModel::Arbitrary.fits(s(7), Duration::ZERO));
    /// ```
    pub fn fits(&self, delay: Duration, precision: Duration) -> bool {
        match self {
            DelayModel::Arbitrary => true,
            DelayModel::Levels(levels) => levels
                .iter()
                .any(|level| *level >= delay && *level - delay <= precision),
        }
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
    /// Which delays the native delay can express.
    pub delay_model: DelayModel,
    /// Redelivering one message to one group after a pause (`nack` with retry-after).
    pub redelivery_delay: Support,
    /// Atomic multi-message transactions: several sends visible together
    /// at commit, none after abort.
    pub transactions: Support,
    /// Half messages with check-back: a message published prepared, then
    /// committed or rolled back, with the broker asking a checker about
    /// prepared messages whose producer went away (RocketMQ style).
    pub half_messages: Support,
    /// Consumed offsets committed inside a producer transaction
    /// (consume-transform-produce, as Kafka's `send_offsets_to_transaction`).
    pub transactional_offsets: Support,
    /// Producer-side dedup by idempotency key.
    pub idempotent_publish: Support,
    /// Retry and dead-letter topics per group kept by the broker itself
    /// (RocketMQ's `%RETRY%` and `%DLQ%`).
    pub broker_dead_letters: Support,
    /// Adding partitions to an existing topic
    /// ([`Admin::grow_partitions`](crate::Admin::grow_partitions)).
    pub partition_growth: Support,
    /// Dropping a topic's messages older than its own retention
    /// ([`TopicSpec::with_retention`](crate::TopicSpec::with_retention)).
    pub topic_retention: Support,
    /// Whether messages published before a group exists are kept for it,
    /// so that a new group starting from
    /// [`StartFrom::Earliest`](crate::StartFrom::Earliest) reads them (true
    /// on logs; false on queue brokers, where a group sees only what was
    /// published after [`ensure_group`](crate::Admin::ensure_group)).
    pub retains_before_group: bool,
    /// Which topic and group names the broker accepts; every internal name
    /// the core builds obeys them.
    pub names: NameRules,
    /// Which admin operations (list, browse, reset, transactions) the backend has.
    pub admin: AdminSupport,
    /// Largest message accepted, payload plus key and headers, in bytes.
    pub max_message_bytes: usize,
    /// How late a due delayed message may be delivered, at most, in normal operation.
    pub delay_precision: Duration,
    /// Longest delay accepted.
    pub max_delay: Duration,
}

impl Capabilities {
    /// Everything unsupported, 1 MiB messages, permissive names: a
    /// starting point for drivers.
    pub fn minimal() -> Self {
        Capabilities {
            delay: Support::Unsupported,
            delay_model: DelayModel::Arbitrary,
            redelivery_delay: Support::Unsupported,
            transactions: Support::Unsupported,
            half_messages: Support::Unsupported,
            transactional_offsets: Support::Unsupported,
            idempotent_publish: Support::Unsupported,
            broker_dead_letters: Support::Unsupported,
            topic_retention: Support::Unsupported,
            partition_growth: Support::Unsupported,
            retains_before_group: true,
            names: NameRules::default(),
            admin: AdminSupport::NONE,
            max_message_bytes: 1024 * 1024,
            delay_precision: Duration::from_millis(100),
            max_delay: Duration::from_secs(365 * 24 * 3600),
        }
    }
}
