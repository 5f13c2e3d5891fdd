//! [`Admin`]: topics and lag.

use crate::client::Client;
use crate::driver::{
    BrowseSpec, BrowsedMessage, PartitionLag, ResetTo, StartFrom, Support, TopicInfo, TopicSpec,
};
use crate::runtime::retry_topic;

/// Most messages one [`Admin::browse`] returns.
pub const MAX_BROWSE: usize = 10_000;
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

    /// Deletes `topic` and its messages, with the retry topics mq made for
    /// its groups where the backend can list them. Its dead-letter topic
    /// stays: dead letters are kept until someone deals with them.
    pub async fn delete_topic(&self, topic: &str) -> Result<()> {
        validate_topic(topic)?;
        let inner = &self.client.inner;
        if inner.capabilities.admin.list_groups == Support::Native {
            for group in inner.driver.list_groups(topic).await? {
                let retries = retry_topic(&inner.capabilities.names, &group, topic);
                inner.driver.delete_topic(&retries).await?;
            }
        }
        inner.driver.delete_topic(topic).await
    }

    /// Every topic with its partition count, mq's internal ones included
    /// ([`TopicInfo::is_internal`] tells them apart), by name.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> mq_core::Result<()> {
    /// # let client = mq_core::Client::new(mq_core::memory::MemoryDriver::new());
    /// client.admin().ensure_topic("orders", mq_core::TopicSpec::new(3)).await?;
    /// let topics = client.admin().topics().await?;
    /// assert!(topics.iter().any(|t| t.name == "orders" && t.partitions == 3));
    /// # Ok(()) }
    /// ```
    pub async fn topics(&self) -> Result<Vec<TopicInfo>> {
        let mut topics = self.client.inner.driver.list_topics().await?;
        topics.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(topics)
    }

    /// The consumer groups of `topic`, by name.
    pub async fn groups(&self, topic: &str) -> Result<Vec<String>> {
        validate_topic(topic)?;
        let mut groups = self.client.inner.driver.list_groups(topic).await?;
        groups.sort();
        Ok(groups)
    }

    /// Reads up to `spec.max` messages (at most [`MAX_BROWSE`]) of one
    /// partition without consuming them.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> mq_core::Result<()> {
    /// # let client = mq_core::Client::new(mq_core::memory::MemoryDriver::new());
    /// use mq_core::driver::{BrowseFrom, BrowseSpec};
    /// use mq_core::{Message, TopicSpec};
    /// client.admin().ensure_topic("orders", TopicSpec::new(1)).await?;
    /// for i in 0..5 {
    ///     client.producer().send(Message::new("orders", i.to_string())).await?;
    /// }
    /// let last = client.admin().browse("orders", BrowseSpec::new(0, BrowseFrom::Last(2), 10)).await?;
    /// let bodies: Vec<_> = last.iter().map(|m| m.message.payload_str().unwrap().to_owned()).collect();
    /// assert_eq!(bodies, ["3", "4"]);
    /// # Ok(()) }
    /// ```
    pub async fn browse(&self, topic: &str, spec: BrowseSpec) -> Result<Vec<BrowsedMessage>> {
        validate_topic(topic)?;
        if spec.max == 0 || spec.max > MAX_BROWSE {
            return Err(crate::Error::invalid(
                "browse max",
                spec.max.to_string(),
                format!("between 1 and {MAX_BROWSE} messages per call"),
            ));
        }
        self.client.inner.driver.browse(topic, &spec).await
    }

    /// Moves `group` on `topic` to `to` on every partition. Refused while
    /// the group has running consumers.
    pub async fn reset_group(&self, topic: &str, group: &str, to: ResetTo) -> Result<()> {
        validate_topic(topic)?;
        validate_group(group)?;
        self.client.inner.driver.reset_group(topic, group, to).await
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
