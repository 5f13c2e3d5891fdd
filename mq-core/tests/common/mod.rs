//! What the runtime tests share: waiting for what a handler reports, and
//! the memory driver instrumented at the driver boundary.
#![allow(dead_code)] // each test file uses its own part

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use mq_core::driver::{
    AckToken, Capabilities, Driver, DriverSubscription, DriverTransaction, PartitionLag,
    RawDelivery, Rebalance, SubscribeSpec, TopicSpec,
};
use mq_core::memory::MemoryDriver;
use mq_core::{async_trait, Message, Receipt, Result, StartFrom};
use tokio::sync::mpsc;

/// The next report of a handler, failing the test after 10 s.
pub async fn recv<T>(rx: &mut mpsc::UnboundedReceiver<T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("timed out")
        .expect("channel closed")
}

/// The memory driver, counting publish calls, and with an ack that panics
/// once when armed (a driver bug the handler's panic guard cannot catch).
#[derive(Default)]
pub struct Instrumented {
    pub inner: MemoryDriver,
    pub publishes: Arc<AtomicUsize>,
    pub panic_next_ack: Arc<AtomicBool>,
}

struct InstrumentedSubscription {
    inner: Box<dyn DriverSubscription>,
    panic_next_ack: Arc<AtomicBool>,
}

#[async_trait]
impl Driver for Instrumented {
    fn backend(&self) -> &'static str {
        "instrumented"
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    async fn publish(&self, batch: Vec<Message>) -> Result<Vec<Receipt>> {
        self.publishes.fetch_add(1, Ordering::SeqCst);
        self.inner.publish(batch).await
    }
    async fn begin(&self) -> Result<Box<dyn DriverTransaction>> {
        self.inner.begin().await
    }
    async fn subscribe(&self, spec: SubscribeSpec) -> Result<Box<dyn DriverSubscription>> {
        Ok(Box::new(InstrumentedSubscription {
            inner: self.inner.subscribe(spec).await?,
            panic_next_ack: self.panic_next_ack.clone(),
        }))
    }
    async fn ensure_group(&self, topic: &str, group: &str, start: StartFrom) -> Result<()> {
        self.inner.ensure_group(topic, group, start).await
    }
    async fn ensure_topic(&self, topic: &str, spec: &TopicSpec) -> Result<()> {
        self.inner.ensure_topic(topic, spec).await
    }
    async fn delete_topic(&self, topic: &str) -> Result<()> {
        self.inner.delete_topic(topic).await
    }
    async fn lag(&self, topic: &str, group: &str) -> Result<Vec<PartitionLag>> {
        self.inner.lag(topic, group).await
    }
    async fn close(&self) -> Result<()> {
        self.inner.close().await
    }
}

#[async_trait]
impl DriverSubscription for InstrumentedSubscription {
    async fn fetch(&self, max: usize) -> Result<Vec<RawDelivery>> {
        self.inner.fetch(max).await
    }
    async fn ack(&self, tokens: Vec<AckToken>) -> Result<()> {
        if self.panic_next_ack.swap(false, Ordering::AcqRel) {
            panic!("driver bug in ack");
        }
        self.inner.ack(tokens).await
    }
    async fn nack(&self, token: AckToken, after: Duration) -> Result<()> {
        self.inner.nack(token, after).await
    }
    async fn rebalance(&self) -> Option<Rebalance> {
        self.inner.rebalance().await
    }
    async fn close(&self) -> Result<()> {
        self.inner.close().await
    }
}
