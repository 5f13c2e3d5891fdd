//! Individual sends coalesced into driver batches: fewer driver calls,
//! each send with its own receipt or error, per-key order kept for sends
//! started before they are awaited. Checked on the memory driver, counted
//! at the driver.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use futures::StreamExt;
use mq_core::driver::{
    Capabilities, Driver, DriverSubscription, DriverTransaction, PartitionLag, SubscribeSpec,
    TopicSpec,
};
use mq_core::memory::MemoryDriver;
use mq_core::{async_trait, Client, Coalescing, Error, Message, Receipt, Result, StartFrom};

/// The memory driver, counting publish calls.
struct Counted {
    inner: MemoryDriver,
    calls: Arc<AtomicUsize>,
}

#[async_trait]
impl Driver for Counted {
    fn backend(&self) -> &'static str {
        "counted"
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    async fn publish(&self, batch: Vec<Message>) -> Result<Vec<Receipt>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.inner.publish(batch).await
    }
    async fn begin(&self) -> Result<Box<dyn DriverTransaction>> {
        self.inner.begin().await
    }
    async fn subscribe(&self, spec: SubscribeSpec) -> Result<Box<dyn DriverSubscription>> {
        self.inner.subscribe(spec).await
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

fn counted(coalescing: Coalescing) -> (Client, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let client = Client::new(Counted {
        inner: MemoryDriver::new(),
        calls: calls.clone(),
    })
    .with_coalescing(coalescing);
    (client, calls)
}

#[tokio::test]
async fn concurrent_sends_share_driver_calls_and_keep_their_own_receipts() {
    let (client, calls) = counted(Coalescing::default());
    let producer = client.producer();
    let sends = (0..200).map(|i| {
        let producer = producer.clone();
        async move {
            let topic = if i == 7 {
                String::new()
            } else {
                "clicks".to_owned()
            };
            producer.send(Message::new(topic, i.to_string())).await
        }
    });
    let results = join_all(sends).await;
    // The one bad send failed alone, by name; the others all landed.
    assert!(
        matches!(&results[7], Err(Error::Invalid { field: "topic", .. })),
        "{:?}",
        results[7]
    );
    let receipts: Vec<&Receipt> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(receipts.len(), 199);
    let mut ids: Vec<_> = receipts.iter().map(|r| r.id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 199);
    let calls = calls.load(Ordering::SeqCst);
    assert!(calls <= 20, "199 sends took {calls} driver calls");
}

#[tokio::test]
async fn sends_started_together_keep_their_key_order() {
    let (client, _) = counted(Coalescing::default().with_max_messages(7));
    let producer = client.producer();
    let sends =
        (0..100).map(|i| producer.send(Message::new("ledger", i.to_string()).with_key("acct-1")));
    for result in join_all(sends).await {
        result.unwrap();
    }
    let mut stream = client
        .consumer("ledger", "audit")
        .start_from(StartFrom::Earliest)
        .subscribe()
        .await
        .unwrap();
    for expected in 0..100 {
        let delivery = tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await
            .expect("delivery")
            .unwrap()
            .unwrap();
        assert_eq!(
            delivery.message().payload_str().unwrap(),
            expected.to_string()
        );
        delivery.ack().await.unwrap();
    }
}

#[tokio::test]
async fn coalescing_off_sends_each_alone() {
    let (client, calls) = counted(Coalescing::off());
    let producer = client.producer();
    let sends = (0..50).map(|i| producer.send(Message::new("clicks", i.to_string())));
    for result in join_all(sends).await {
        result.unwrap();
    }
    assert_eq!(calls.load(Ordering::SeqCst), 50);
}
