//! The skeleton driver of the "writing a driver" guide
//! (`mq_core::driver::guide`): every SPI method, on top of the memory
//! broker standing in for a real one, passing the whole conformance suite.
//! Copy it, replace each `self.broker` call with your broker's client, and
//! keep the suite green.

use std::time::Duration;

use mq_core::driver::{
    AckToken, Capabilities, Driver, DriverSubscription, DriverTransaction, PartitionLag,
    RawDelivery, Rebalance, SubscribeSpec, Support, TopicSpec,
};
use mq_core::memory::MemoryDriver;
use mq_core::{async_trait, Client, Message, Receipt, Result, StartFrom};

/// The driver: a handle on the broker's client.
struct SkeletonDriver {
    broker: MemoryDriver,
}

#[async_trait]
impl Driver for SkeletonDriver {
    fn backend(&self) -> &'static str {
        "skeleton"
    }

    /// Declare only what the broker does itself; the core emulates delay
    /// and retry-after where they are `Unsupported`.
    fn capabilities(&self) -> Capabilities {
        let mut caps = Capabilities::minimal();
        caps.transactions = Support::Native;
        caps.idempotent_publish = Support::Native;
        caps.retains_before_group = true;
        caps.max_message_bytes = 4 * 1024 * 1024;
        caps
    }

    /// Return only once the broker has the batch durably.
    async fn publish(&self, batch: Vec<Message>) -> Result<Vec<Receipt>> {
        self.broker.publish(batch).await
    }

    async fn begin(&self) -> Result<Box<dyn DriverTransaction>> {
        self.broker.begin().await
    }

    async fn subscribe(&self, spec: SubscribeSpec) -> Result<Box<dyn DriverSubscription>> {
        Ok(Box::new(SkeletonSubscription {
            inner: self.broker.subscribe(spec).await?,
        }))
    }

    /// Create the group without joining it: joining and leaving would be a
    /// rebalance on a partitioned broker.
    async fn ensure_group(&self, topic: &str, group: &str, start: StartFrom) -> Result<()> {
        self.broker.ensure_group(topic, group, start).await
    }

    async fn ensure_topic(&self, topic: &str, spec: &TopicSpec) -> Result<()> {
        self.broker.ensure_topic(topic, spec).await
    }

    async fn delete_topic(&self, topic: &str) -> Result<()> {
        self.broker.delete_topic(topic).await
    }

    /// Lets emulated delays for a deleted topic go with it.
    async fn topic_exists(&self, topic: &str) -> Result<Option<bool>> {
        self.broker.topic_exists(topic).await
    }

    /// Unread plus in flight, per partition: the same meaning everywhere.
    async fn lag(&self, topic: &str, group: &str) -> Result<Vec<PartitionLag>> {
        self.broker.lag(topic, group).await
    }

    async fn close(&self) -> Result<()> {
        self.broker.close().await
    }
}

/// One member of a group.
struct SkeletonSubscription {
    inner: Box<dyn DriverSubscription>,
}

#[async_trait]
impl DriverSubscription for SkeletonSubscription {
    /// Cancel safe: a dropped fetch loses nothing. Build each record with
    /// `RawDelivery::new(message, AckToken::new(topic, partition, offset), first_seen)`.
    async fn fetch(&self, max: usize) -> Result<Vec<RawDelivery>> {
        self.inner.fetch(max).await
    }

    /// Ignore tokens of a connection or a partition that is gone.
    async fn ack(&self, tokens: Vec<AckToken>) -> Result<()> {
        self.inner.ack(tokens).await
    }

    async fn nack(&self, token: AckToken, after: Duration) -> Result<()> {
        self.inner.nack(token, after).await
    }

    /// Report assignment changes (a `RebalanceQueue` does the bookkeeping);
    /// hand revoked partitions on only once their revocation completes.
    async fn rebalance(&self) -> Option<Rebalance> {
        self.inner.rebalance().await
    }

    async fn close(&self) -> Result<()> {
        self.inner.close().await
    }
}

mq_testkit::conformance_suite!(|| async {
    Some(Client::new(SkeletonDriver {
        broker: MemoryDriver::new(),
    }))
});
