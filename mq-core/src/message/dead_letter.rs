//! A typed view of why a message is in a dead-letter topic, read from the
//! headers the runtime stamps when it dead-letters.

use std::time::SystemTime;

use super::{reserved, Headers, Message};

/// Why and where from a message was dead-lettered: what
/// [`Message::dead_letter_info`] reads from a dead letter's headers.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> mq_core::Result<()> {
/// use mq_core::{handler_fn, Delivery, HandlerError, HandlerResult, Message};
/// # let client = mq_core::Client::new(mq_core::memory::MemoryDriver::new());
/// let billing = client
///     .consumer("orders", "billing")
///     .run(handler_fn(|_d: Delivery| async { Err(HandlerError::reject("no such customer")) }))
///     .await?;
/// client.producer().send(Message::new("orders", "o-1")).await?;
/// let mut dead = client.consumer("orders.dlq", "ops").subscribe().await?;
/// let letter = futures::StreamExt::next(&mut dead).await.unwrap()?;
/// let info = letter.message().dead_letter_info().expect("a dead letter");
/// assert_eq!(info.topic, "orders");
/// assert_eq!(info.group.as_deref(), Some("billing"));
/// assert!(info.error.contains("no such customer"));
/// letter.ack().await?;
/// # billing.shutdown().await?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeadLetterInfo {
    /// The topic it was consumed from.
    pub topic: String,
    /// The group that gave up on it.
    pub group: Option<String>,
    /// Attempts made before giving up.
    pub attempts: Option<u32>,
    /// The last error, or the reason it was rejected.
    pub error: String,
    /// When it was dead-lettered.
    pub dead_lettered_at: Option<SystemTime>,
    /// The partition it was consumed from.
    pub partition: Option<u32>,
    /// Its offset there, where the backend has offsets.
    pub offset: Option<u64>,
}

impl Message {
    /// Why this message was dead-lettered; `None` when it is not a dead
    /// letter (it lacks the `mq-dlq-topic` header).
    pub fn dead_letter_info(&self) -> Option<DeadLetterInfo> {
        let headers = self.headers();
        Some(DeadLetterInfo {
            topic: headers.get(reserved::DLQ_TOPIC)?.to_owned(),
            group: headers.get(reserved::DLQ_GROUP).map(str::to_owned),
            attempts: parsed(headers, reserved::DLQ_ATTEMPTS),
            error: headers
                .get(reserved::DLQ_ERROR)
                .unwrap_or_default()
                .to_owned(),
            dead_lettered_at: headers
                .get(reserved::DLQ_TIME)
                .and_then(|t| humantime::parse_rfc3339(t).ok()),
            partition: parsed(headers, reserved::DLQ_PARTITION),
            offset: parsed(headers, reserved::DLQ_OFFSET),
        })
    }
}

/// A header parsed, `None` when absent or malformed (a dead letter may
/// come from another tool or an older version).
fn parsed<T: std::str::FromStr>(headers: &Headers, name: &str) -> Option<T> {
    headers.get(name)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_messages_are_not_dead_letters() {
        assert_eq!(Message::new("orders", "x").dead_letter_info(), None);
    }

    #[test]
    fn reads_every_header_and_tolerates_garbage() {
        let mut message = Message::new("orders.dlq", "x");
        let headers = message.headers_mut();
        headers.insert(reserved::DLQ_TOPIC, "orders");
        headers.insert(reserved::DLQ_ATTEMPTS, "many");
        headers.insert(reserved::DLQ_TIME, "2026-12-01T10:00:00.000Z");
        headers.insert(reserved::DLQ_OFFSET, "42");
        let info = message.dead_letter_info().unwrap();
        assert_eq!(info.topic, "orders");
        assert_eq!(info.attempts, None);
        assert_eq!(info.offset, Some(42));
        assert_eq!(
            info.dead_lettered_at,
            Some(humantime::parse_rfc3339("2026-12-01T10:00:00Z").unwrap())
        );
    }
}
