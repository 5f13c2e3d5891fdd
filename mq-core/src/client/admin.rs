//! [`Admin`]: topics and lag.

use crate::client::Client;
use crate::driver::{PartitionLag, StartFrom, Support, TopicSpec};
use crate::error::Result;
use crate::message::{validate_group, validate_topic};

/// Topic management and consumer lag. Get one from [`Client::admin`].
#[derive(Clone, Debug)]
pub struct Admin {
    pub(crate) client: Client,
}

impl Admin {
    /// Creates `topic` with `spec` if it does not exist yet. A retention in
    /// `spec` on a backend that cannot drop a topic's old messages is
    /// refused with [`Error::Unsupported`](crate::Error::Unsupported).
    pub async fn ensure_topic(&self, topic: &str, spec: TopicSpec) -> Result<()> {
        validate_topic(topic)?;
        if spec.partitions == 0 {
            return Err(crate::Error::invalid(
                "partitions",
                "0",
                "a topic needs at least one partition",
            ));
        }
        let driver = &self.client.inner.driver;
        if spec.retention.is_some()
            && self.client.inner.capabilities.topic_retention == Support::Unsupported
        {
            return Err(crate::Error::unsupported(
                "topic retention",
                driver.backend(),
            ));
        }
        driver.ensure_topic(topic, &spec).await
    }

    /// Creates consumer group `group` on `topic` (and the topic, if
    /// missing) without joining it, positioned at `start`; an existing
    /// group stays where it is. From then on the group retains every
    /// message published to the topic, on every backend, so a consumer
    /// started later misses nothing. What `start` reaches of messages
    /// published before the group existed depends on
    /// [`Capabilities::retains_before_group`](crate::Capabilities::retains_before_group).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> mq_core::Result<()> {
    /// # let client = mq_core::Client::new(mq_core::memory::MemoryDriver::new());
    /// use mq_core::StartFrom;
    /// client.admin().ensure_group("orders", "billing", StartFrom::Latest).await?;
    /// client.producer().send(mq_core::Message::new("orders", "x")).await?;
    /// assert_eq!(client.admin().total_lag("orders", "billing").await?, 1);
    /// # Ok(()) }
    /// ```
    pub async fn ensure_group(&self, topic: &str, group: &str, start: StartFrom) -> Result<()> {
        validate_topic(topic)?;
        validate_group(group)?;
        self.client
            .inner
            .driver
            .ensure_group(topic, group, start)
            .await
    }

    /// Deletes `topic` and its messages.
    pub async fn delete_topic(&self, topic: &str) -> Result<()> {
        validate_topic(topic)?;
        self.client.inner.driver.delete_topic(topic).await
    }

    /// Backlog of `group` on `topic`, per partition: messages not yet acked.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> mq_core::Result<()> {
    /// # let client = mq_core::Client::new(mq_core::memory::MemoryDriver::new());
    /// client.producer().send(mq_core::Message::new("orders", "x")).await?;
    /// let lag: u64 = client.admin().lag("orders", "billing").await?.iter().map(|p| p.lag).sum();
    /// assert_eq!(lag, 1);
    /// # Ok(()) }
    /// ```
    pub async fn lag(&self, topic: &str, group: &str) -> Result<Vec<PartitionLag>> {
        validate_topic(topic)?;
        validate_group(group)?;
        self.client.inner.driver.lag(topic, group).await
    }

    /// Total backlog of `group` on `topic`.
    pub async fn total_lag(&self, topic: &str, group: &str) -> Result<u64> {
        Ok(self.lag(topic, group).await?.iter().map(|p| p.lag).sum())
    }
}
