//! What a successful send returns.

use std::sync::Arc;

use super::MessageId;

/// Proof that the broker accepted a message.
///
/// ```
/// # use mq_core::{Receipt, MessageId};
/// let r = Receipt::new(MessageId::new(), "orders", 3, Some(17));
/// assert!(!r.duplicate);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Receipt {
    /// The message id (assigned at send when the message had none).
    pub id: MessageId,
    /// The topic it was written to (for delayed messages: their destination).
    pub topic: Arc<str>,
    /// Partition, queue or shard index.
    pub partition: u32,
    /// Offset within the partition, where the backend has offsets and knows it
    /// at send time (not for delayed or transactional sends on every backend).
    pub offset: Option<u64>,
    /// The broker's own id for the record, where it has one (Redis entry id, ...).
    pub broker_id: Option<String>,
    /// True when the idempotency key was already seen: this is the first send's receipt.
    pub duplicate: bool,
}

impl Receipt {
    /// A receipt for a fresh (non-duplicate) write.
    pub fn new(
        id: MessageId,
        topic: impl Into<Arc<str>>,
        partition: u32,
        offset: Option<u64>,
    ) -> Self {
        Receipt {
            id,
            topic: topic.into(),
            partition,
            offset,
            broker_id: None,
            duplicate: false,
        }
    }
}
