//! [`Admin`]: topics and lag.

use crate::client::Client;
use crate::driver::{
    BrowseSpec, BrowsedMessage, PartitionLag, ResetTo, StartFrom, Support, TopicInfo, TopicSpec,
    TransactionInfo,
};
use crate::runtime::retry_topic;

/// Most messages one [`Admin::browse`] returns.
pub const MAX_BROWSE: usize = 10_000;

/// Longest transactional id [`Admin::abort_transaction`] takes, in bytes.
pub const MAX_TRANSACTION_ID: usize = 1024;
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
    /// its groups where the backend can list them. Messages delayed to it
    /// that are still waiting go with it (they are dropped when due, where
    /// the backend can tell the topic is gone). Its dead-letter topic
    /// stays: dead letters are kept until someone deals with them.
    pub async fn delete_topic(&self, topic: &str) -> Result<()> {
        validate_topic(topic)?;
        let inner = &self.client.inner;
        let delay = inner.publisher.delay_emulator();
        if inner.capabilities.admin.list_groups == Support::Native {
            for group in inner.driver.list_groups(topic).await? {
                let retries = retry_topic(&inner.capabilities.names, &group, topic);
                inner.driver.delete_topic(&retries).await?;
                if let Some(delay) = delay {
                    delay.forget(&retries);
                }
            }
        }
        inner.driver.delete_topic(topic).await?;
        if let Some(delay) = delay {
            delay.forget(topic);
        }
        Ok(())
    }

    /// Grows `topic` to `partitions` partitions, the classic remedy for a
    /// backlog: more partitions, more members working at once.
    ///
    /// Keys move: a key whose partition changes has its new messages on
    /// the new partition while its old ones may still wait on the old, so
    /// per-key order holds again only once the old partitions have drained
    /// (pause the producers of ordered keys until the lag of the old
    /// partitions is zero if that matters). Fewer partitions than now is
    /// refused with [`Error::Invalid`](crate::Error::Invalid); a backend
    /// that cannot add partitions answers
    /// [`Error::Unsupported`](crate::Error::Unsupported).
    pub async fn grow_partitions(&self, topic: &str, partitions: u32) -> Result<()> {
        validate_topic(topic)?;
        let inner = &self.client.inner;
        if inner.capabilities.partition_growth != Support::Native {
            return Err(crate::Error::unsupported(
                "adding partitions",
                inner.driver.backend(),
            ));
        }
        let current = inner
            .driver
            .list_topics()
            .await?
            .into_iter()
            .find(|t| t.name == topic)
            .map(|t| t.partitions)
            .ok_or_else(|| crate::Error::invalid("topic", topic, "no such topic"))?;
        if partitions <= current {
            return Err(crate::Error::invalid(
                "partitions",
                partitions.to_string(),
                format!("{topic} has {current}; partitions can only be added"),
            ));
        }
        inner.driver.grow_partitions(topic, partitions).await
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

    /// The producer transactions the broker knows of, by id: open ones
    /// with their partitions and start time, so a hung one (its producer
    /// died mid-transaction, and consumers of committed messages wait
    /// behind it) can be found and [aborted](Self::abort_transaction).
    /// [`Error::Unsupported`](crate::Error::Unsupported) where the backend
    /// cannot list them (`Capabilities::admin.transactions`).
    pub async fn transactions(&self) -> Result<Vec<TransactionInfo>> {
        let inner = &self.client.inner;
        if inner.capabilities.admin.transactions != Support::Native {
            return Err(crate::Error::unsupported(
                "listing transactions",
                inner.driver.backend(),
            ));
        }
        let mut transactions = inner.driver.list_transactions().await?;
        transactions.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(transactions)
    }

    /// Aborts the open transaction of transactional id `id`, releasing the
    /// consumers of committed messages that wait behind it; its messages
    /// are never delivered to them.
    ///
    /// This fences the id: a producer still alive under it fails its next
    /// transactional call (as `kafka-transactions.sh abort` does), so abort
    /// only transactions whose producer is gone or stuck. An id that is
    /// empty, longer than [`MAX_TRANSACTION_ID`] bytes or holds control
    /// characters is [`Error::Invalid`](crate::Error::Invalid), and so is
    /// one the broker has no open transaction under.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let client = mq_core::Client::new(mq_core::memory::MemoryDriver::new());
    /// let err = client.admin().abort_transaction("").await.unwrap_err();
    /// assert!(matches!(err, mq_core::Error::Invalid { field: "transactional id", .. }));
    /// # }
    /// ```
    pub async fn abort_transaction(&self, id: &str) -> Result<()> {
        validate_transaction_id(id)?;
        let inner = &self.client.inner;
        if inner.capabilities.admin.transactions != Support::Native {
            return Err(crate::Error::unsupported(
                "aborting transactions",
                inner.driver.backend(),
            ));
        }
        inner.driver.abort_transaction(id).await
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

/// Refuses a transactional id no broker would hold: empty, over
/// [`MAX_TRANSACTION_ID`] bytes, or with control characters (which no
/// producer sets on purpose and which garble what operators see).
fn validate_transaction_id(id: &str) -> Result<()> {
    let reason = if id.is_empty() {
        "a transactional id cannot be empty".to_owned()
    } else if id.len() > MAX_TRANSACTION_ID {
        format!(
            "{} bytes: a transactional id has at most {MAX_TRANSACTION_ID}",
            id.len()
        )
    } else if id.chars().any(char::is_control) {
        "a transactional id has no control characters".to_owned()
    } else {
        return Ok(());
    };
    Err(crate::Error::invalid("transactional id", id, reason))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::MemoryDriver;
    use crate::Error;

    #[tokio::test]
    async fn transaction_ids_are_validated_and_memory_has_none() {
        let admin = Client::new(MemoryDriver::new()).admin();
        let long = "t".repeat(MAX_TRANSACTION_ID + 1);
        for bad in ["", long.as_str(), "a\nb"] {
            let err = admin.abort_transaction(bad).await.unwrap_err();
            assert!(
                matches!(
                    err,
                    Error::Invalid {
                        field: "transactional id",
                        ..
                    }
                ),
                "{bad:?}: {err:?}"
            );
        }
        let longest = "t".repeat(MAX_TRANSACTION_ID);
        let err = admin.abort_transaction(&longest).await.unwrap_err();
        assert!(
            matches!(
                err,
                Error::Unsupported {
                    feature: "aborting transactions",
                    backend: "memory"
                }
            ),
            "{err:?}"
        );
        let err = admin.transactions().await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "listing transactions is not supported by the memory backend"
        );
    }
}
