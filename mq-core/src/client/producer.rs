//! [`Producer`]: sending messages, alone, in batches or in transactions.

use crate::client::publish::{key_to_header, Origin};
use crate::client::{Client, Transaction};
use crate::driver::Support;
use crate::error::{Error, Result};
use crate::message::{Message, Receipt};

/// Sends messages. Cheap to clone; get one from [`Client::producer`].
///
/// A send returns after the broker has durably accepted the message.
#[derive(Clone, Debug)]
pub struct Producer {
    pub(crate) client: Client,
}

impl Producer {
    /// Sends one message and returns its receipt.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> mq_core::Result<()> {
    /// # let client = mq_core::Client::new(mq_core::memory::MemoryDriver::new());
    /// use mq_core::Message;
    /// let producer = client.producer();
    /// let first = producer.send(Message::new("orders", "a").with_idempotency_key("o-1")).await?;
    /// let again = producer.send(Message::new("orders", "a").with_idempotency_key("o-1")).await?;
    /// assert!(again.duplicate);
    /// assert_eq!(first.id, again.id);
    /// # Ok(()) }
    /// ```
    ///
    /// Sends from many tasks (or many sends started before they are
    /// awaited) are coalesced into driver batches; see
    /// [`Coalescing`](crate::Coalescing). Each still resolves only when its
    /// message is durable.
    pub async fn send(&self, message: Message) -> Result<Receipt> {
        self.client.publisher().publish_one(message).await
    }

    /// Sends many messages in one round trip where the backend allows; one
    /// receipt per message, in order. Not atomic: see [`begin`](Self::begin).
    pub async fn send_batch(&self, messages: Vec<Message>) -> Result<Vec<Receipt>> {
        let expected = messages.len();
        let receipts = self
            .client
            .publisher()
            .publish(messages, Origin::User)
            .await?;
        if receipts.len() != expected {
            return Err(Error::Rejected(format!(
                "the backend returned {} receipts for {expected} messages",
                receipts.len()
            )));
        }
        Ok(receipts)
    }

    /// Republishes messages read from elsewhere (another topic, another
    /// backend: bridges, migrations) as they are: ids, keys and the SDK's
    /// own headers (trace context, dead-letter details) kept. Topics are
    /// checked as for [`send`](Self::send); an idempotency key the backend
    /// cannot dedup by moves to its header, where consumer-side dedup
    /// still finds it.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> mq_core::Result<()> {
    /// # let client = mq_core::Client::new(mq_core::memory::MemoryDriver::new());
    /// use mq_core::Message;
    /// let read = Message::new("orders", "a").with_header("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
    /// assert!(client.producer().send(read.clone()).await.is_err());
    /// client.producer().relay(vec![read]).await?;
    /// # Ok(()) }
    /// ```
    pub async fn relay(&self, messages: Vec<Message>) -> Result<Vec<Receipt>> {
        let keeps_keys = self.client.capabilities().idempotent_publish == Support::Native;
        let messages = messages
            .into_iter()
            .map(|m| if keeps_keys { m } else { key_to_header(m) })
            .collect();
        self.client
            .publisher()
            .publish(messages, Origin::Relay)
            .await
    }

    /// Starts a transaction: its sends become visible together at
    /// [`commit`](Transaction::commit), or never.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> mq_core::Result<()> {
    /// # let client = mq_core::Client::new(mq_core::memory::MemoryDriver::new());
    /// use mq_core::Message;
    /// let mut tx = client.producer().begin().await?;
    /// tx.send(Message::new("orders", "created")).await?;
    /// tx.send(Message::new("invoices", "issued")).await?;
    /// tx.commit().await?;
    /// # Ok(()) }
    /// ```
    pub async fn begin(&self) -> Result<Transaction> {
        let inner = &self.client.inner;
        if inner.capabilities.transactions != Support::Native {
            return Err(Error::unsupported("transactions", inner.driver.backend()));
        }
        let tx = inner.driver.begin().await?;
        Ok(Transaction::new(self.client.clone(), tx))
    }
}
