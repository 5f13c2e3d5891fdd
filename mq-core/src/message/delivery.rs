//! A message as a consumer receives it.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::Message;
use crate::driver::AckToken;
use crate::error::{Error, Result};
use crate::runtime::Settler;

/// A received message with where it came from, which attempt this is, and
/// (in stream mode) the operations that settle it.
///
/// Consumers run by [`ConsumerBuilder::run`](crate::ConsumerBuilder::run) get `&Delivery`
/// and settle by returning from the handler. Consumers that read a
/// [`Subscription`](crate::Subscription) stream settle each delivery
/// themselves with [`ack`](Delivery::ack), [`nack`](Delivery::nack) or
/// [`dead_letter`](Delivery::dead_letter); one dropped unsettled gives its
/// prefetch slot back and is released for redelivery at once (to this
/// consumer or another of its group), as a `nack` without a pause would.
pub struct Delivery {
    /// Shared so the copies handlers and retries get are cheap.
    pub(crate) message: Arc<Message>,
    pub(crate) group: Arc<str>,
    pub(crate) partition: u32,
    pub(crate) offset: Option<u64>,
    pub(crate) attempt: u32,
    pub(crate) first_seen: SystemTime,
    pub(crate) token: AckToken,
    pub(crate) settler: Option<Arc<Settler>>,
}

impl Delivery {
    /// The message.
    pub fn message(&self) -> &Message {
        &self.message
    }

    /// The topic it was published to.
    pub fn topic(&self) -> &str {
        self.message.topic()
    }

    /// The consumer group receiving it.
    pub fn group(&self) -> &str {
        &self.group
    }

    /// The ordering key, if any.
    pub fn key(&self) -> Option<&str> {
        self.message.key()
    }

    /// The payload.
    pub fn payload(&self) -> &bytes::Bytes {
        self.message.payload()
    }

    /// The payload decoded from JSON; an [`Error::Codec`] with serde's line
    /// and column when it does not decode.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> mq_core::Result<()> {
    /// # let client = mq_core::Client::new(mq_core::memory::MemoryDriver::new());
    /// #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
    /// struct Order { id: u64 }
    /// client.producer().send(mq_core::Message::json("orders", &Order { id: 7 })?).await?;
    /// let mut orders = client.consumer("orders", "billing").subscribe().await?;
    /// let delivery = futures::StreamExt::next(&mut orders).await.unwrap()?;
    /// assert_eq!(delivery.json::<Order>()?, Order { id: 7 });
    /// delivery.ack().await?;
    /// # Ok(()) }
    /// ```
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T> {
        self.message.payload_json()
    }

    /// Partition, queue or shard it came from.
    pub fn partition(&self) -> u32 {
        self.partition
    }

    /// Offset within the partition, where the backend has offsets.
    pub fn offset(&self) -> Option<u64> {
        self.offset
    }

    /// Which attempt this is, starting at 1; counts redeliveries and retries.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// When this group first received the message.
    pub fn first_seen(&self) -> SystemTime {
        self.first_seen
    }

    /// A copy without the settle operations, handed to handlers by value.
    pub(crate) fn detached(&self) -> Delivery {
        self.with_attempt(self.attempt)
    }

    /// A detached copy as attempt `attempt`, used by in-place retries.
    pub(crate) fn with_attempt(&self, attempt: u32) -> Delivery {
        Delivery {
            message: self.message.clone(),
            group: self.group.clone(),
            partition: self.partition,
            offset: self.offset,
            attempt,
            first_seen: self.first_seen,
            token: self.token.clone(),
            settler: None,
        }
    }

    fn take_settler(&mut self) -> Result<Arc<Settler>> {
        self.settler
            .take()
            .ok_or(Error::Closed("delivery is settled by the consumer runtime"))
    }

    /// Acknowledges: the group is done with this message.
    pub async fn ack(mut self) -> Result<()> {
        let settler = self.take_settler()?;
        settler.settled(&self.token);
        settler.ack(&self).await
    }

    /// Hands the message back for another attempt after `retry_after`; past
    /// the subscription's `max_attempts` it is dead-lettered instead.
    pub async fn nack(mut self, retry_after: Duration, error: impl Into<String>) -> Result<()> {
        let settler = self.take_settler()?;
        settler.settled(&self.token);
        settler.retry(&self, retry_after, error.into()).await
    }

    /// Sends the message to the dead-letter topic now, with `reason`, and acks it.
    pub async fn dead_letter(mut self, reason: impl Into<String>) -> Result<()> {
        let settler = self.take_settler()?;
        settler.settled(&self.token);
        settler.dead_letter(&self, reason.into()).await
    }
}

impl Drop for Delivery {
    fn drop(&mut self) {
        let Some(settler) = self.settler.take() else {
            return;
        };
        if settler.closed.load(std::sync::atomic::Ordering::Acquire) {
            // Closing gave it back already.
            return;
        }
        let token = self.token.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                // The slot is freed once the broker has the record back, so
                // the prefetch bound holds at the broker too.
                runtime.spawn(async move {
                    if let Err(error) = settler.subscription.nack(token.clone(), Duration::ZERO).await {
                        tracing::debug!(%error, "releasing a dropped delivery failed; it is redelivered when the consumer leaves");
                    }
                    settler.settled(&token);
                });
            }
            Err(_) => settler.settled(&token),
        }
    }
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("message", &self.message)
            .field("group", &self.group)
            .field("partition", &self.partition)
            .field("offset", &self.offset)
            .field("attempt", &self.attempt)
            .finish()
    }
}
