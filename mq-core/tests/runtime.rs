//! Runtime behaviour that belongs to the core rather than to any backend,
//! checked on the memory driver.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::recv;
use mq_core::{
    handler_fn, memory::MemoryDriver, Client, Delivery, HandlerError, HandlerResult, Message,
    RetryPolicy,
};
use parking_lot::Mutex;
use tokio::sync::mpsc;

fn quick(attempts: u32) -> RetryPolicy {
    RetryPolicy::new(attempts).with_backoff(Duration::from_millis(10), Duration::from_millis(50))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_handler_costs_one_attempt_not_the_consumer() {
    let client = Client::new(MemoryDriver::new());
    let (tx, mut rx) = mpsc::unbounded_channel();
    let consumer = client
        .consumer("jobs", "workers")
        .concurrency(1)
        .retry(quick(3))
        .run(handler_fn(move |d: Delivery| {
            let tx = tx.clone();
            async move {
                if d.message().payload_str()? == "explode" && d.attempt() == 1 {
                    panic!("boom");
                }
                tx.send((d.message().payload_str()?.to_owned(), d.attempt()))?;
                HandlerResult::Ok(())
            }
        }))
        .await
        .unwrap();
    let producer = client.producer();
    producer
        .send(Message::new("jobs", "explode").with_key("k"))
        .await
        .unwrap();
    producer
        .send(Message::new("jobs", "after").with_key("k"))
        .await
        .unwrap();
    assert_eq!(recv(&mut rx).await, ("explode".to_owned(), 2));
    assert_eq!(recv(&mut rx).await, ("after".to_owned(), 1));
    consumer.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn longest_names_still_retry_and_dead_letter() {
    // Emulated redelivery: retries go through __mq.retry.<group>.<topic>,
    // 312 characters here, and the dead letter to a 204-character topic.
    let config = "memory://?delay=emulated".parse().unwrap();
    let client = Client::new(MemoryDriver::from_config(&config).unwrap());
    let topic = "t".repeat(200);
    let group = "g".repeat(100);
    let attempts = Arc::new(Mutex::new(Vec::new()));
    let consumer = {
        let attempts = attempts.clone();
        client
            .consumer(&topic, &group)
            .ordered(false)
            .retry(quick(2))
            .run(handler_fn(move |d: Delivery| {
                let attempts = attempts.clone();
                async move {
                    attempts.lock().push(d.attempt());
                    HandlerResult::Err(HandlerError::retry("always"))
                }
            }))
            .await
            .unwrap()
    };
    client
        .producer()
        .send(Message::new(topic.as_str(), "x"))
        .await
        .unwrap();
    let dlq = format!("{topic}.dlq");
    let dead_lettered = async {
        loop {
            let parked: u64 = client
                .driver()
                .lag(&dlq, "nobody")
                .await
                .unwrap()
                .iter()
                .map(|p| p.lag)
                .sum();
            let pending = client.admin().total_lag(&topic, &group).await.unwrap();
            if parked == 1 && pending == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), dead_lettered)
        .await
        .expect("never dead-lettered");
    consumer.shutdown().await.unwrap();
    assert_eq!(*attempts.lock(), vec![1, 2]);
}

/// The memory broker, refusing publishes to one topic as a broker refuses
/// a destination that was deleted, and delaying natively only by fixed
/// levels when it has some (as RocketMQ 4.x).
struct Refusing {
    inner: MemoryDriver,
    refused: &'static str,
    levels: Option<Vec<Duration>>,
}

#[mq_core::async_trait]
impl mq_core::driver::Driver for Refusing {
    fn backend(&self) -> &'static str {
        "memory"
    }
    fn capabilities(&self) -> mq_core::Capabilities {
        let mut caps = mq_core::driver::Driver::capabilities(&self.inner);
        if let Some(levels) = &self.levels {
            caps.delay_model = mq_core::driver::DelayModel::Levels(levels.clone());
        }
        caps
    }
    async fn publish(&self, batch: Vec<Message>) -> mq_core::Result<Vec<mq_core::Receipt>> {
        if batch.iter().any(|m| m.topic() == self.refused) {
            return Err(mq_core::Error::Rejected(format!(
                "{} does not exist",
                self.refused
            )));
        }
        self.inner.publish(batch).await
    }
    async fn begin(&self) -> mq_core::Result<Box<dyn mq_core::driver::DriverTransaction>> {
        self.inner.begin().await
    }
    async fn subscribe(
        &self,
        spec: mq_core::driver::SubscribeSpec,
    ) -> mq_core::Result<Box<dyn mq_core::driver::DriverSubscription>> {
        self.inner.subscribe(spec).await
    }
    async fn ensure_group(
        &self,
        topic: &str,
        group: &str,
        start: mq_core::StartFrom,
    ) -> mq_core::Result<()> {
        self.inner.ensure_group(topic, group, start).await
    }
    async fn ensure_topic(&self, topic: &str, spec: &mq_core::TopicSpec) -> mq_core::Result<()> {
        self.inner.ensure_topic(topic, spec).await
    }
    async fn delete_topic(&self, topic: &str) -> mq_core::Result<()> {
        self.inner.delete_topic(topic).await
    }
    async fn lag(
        &self,
        topic: &str,
        group: &str,
    ) -> mq_core::Result<Vec<mq_core::driver::PartitionLag>> {
        self.inner.lag(topic, group).await
    }
    async fn close(&self) -> mq_core::Result<()> {
        self.inner.close().await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_delayed_message_does_not_hold_up_the_others() {
    let config = "memory://?delay=emulated".parse().unwrap();
    let driver = Refusing {
        inner: MemoryDriver::from_config(&config).unwrap(),
        refused: "gone",
        levels: None,
    };
    let client = Client::new(driver);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let consumer = client
        .consumer("reminders", "app")
        .run(handler_fn(move |d: Delivery| {
            let tx = tx.clone();
            async move {
                tx.send(d.message().payload_str()?.to_owned())?;
                HandlerResult::Ok(())
            }
        }))
        .await
        .unwrap();
    let producer = client.producer();
    let delay = Duration::from_millis(300);
    producer
        .send(Message::new("gone", "lost destination").with_delay(delay))
        .await
        .unwrap();
    producer
        .send(Message::new("reminders", "still delivered").with_delay(delay))
        .await
        .unwrap();
    assert_eq!(recv(&mut rx).await, "still delivered");
    consumer.shutdown().await.unwrap();
    let set_aside: u64 = client
        .driver()
        .lag("__mq.delay.dlq", mq_core::client::DEAD_LETTER_GROUP)
        .await
        .unwrap()
        .iter()
        .map(|p| p.lag)
        .sum();
    assert_eq!(
        set_aside, 1,
        "the refused message is kept in the delay dead-letter topic"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delay_no_broker_level_fits_goes_through_the_emulation() {
    let client = Client::new(Refusing {
        inner: MemoryDriver::new(),
        refused: "none",
        levels: Some(vec![Duration::from_secs(1)]),
    });
    let producer = client.producer();
    let native = producer
        .send(Message::new("reminders", "on a level").with_delay(Duration::from_secs(1)))
        .await
        .unwrap();
    let emulated = producer
        .send(Message::new("reminders", "between levels").with_delay(Duration::from_millis(300)))
        .await
        .unwrap();
    assert_eq!(
        (&*native.topic, &*emulated.topic),
        ("reminders", "reminders")
    );
    // Only the one no level delivers on time waits in a delay level topic.
    let parked: u64 = client
        .driver()
        .lag("__mq.delay.200", "__mq.delay")
        .await
        .unwrap()
        .iter()
        .map(|p| p.lag)
        .sum();
    assert_eq!(parked, 1);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let consumer = client
        .consumer("reminders", "app")
        .run(handler_fn(move |d: Delivery| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(d.message().payload_str()?.to_owned());
                HandlerResult::Ok(())
            }
        }))
        .await
        .unwrap();
    let mut got = vec![recv(&mut rx).await, recv(&mut rx).await];
    got.sort();
    assert_eq!(got, ["between levels", "on a level"]);
    consumer.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_that_fails_again_stays_in_its_topic() {
    let client = Client::new(MemoryDriver::new());
    let (tx, mut rx) = mpsc::unbounded_channel();
    let calls = Arc::new(std::sync::atomic::AtomicU32::new(0));
    // Two attempts per round; the redrive handler fails four calls in all,
    // so the letter outlives its attempts twice before it succeeds.
    let consumer = client
        .consumer("orders.dlq", "redrive")
        .retry(quick(2))
        .run(handler_fn(move |_d: Delivery| {
            let (tx, calls) = (tx.clone(), calls.clone());
            async move {
                let call = calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                tx.send(call)?;
                if call <= 4 {
                    return Err(HandlerError::retry("still broken"));
                }
                HandlerResult::Ok(())
            }
        }))
        .await
        .unwrap();
    client
        .producer()
        .send(Message::new("orders.dlq", "letter"))
        .await
        .unwrap();
    let mut attempts = Vec::new();
    while attempts.last() != Some(&5) {
        attempts.push(recv(&mut rx).await);
    }
    assert_eq!(attempts, [1, 2, 3, 4, 5]);
    consumer.shutdown().await.unwrap();
    // Nothing went to a dead-letter topic of the dead-letter topic.
    let mut nested = client
        .consumer("orders.dlq.dlq", "check")
        .start_from(mq_core::StartFrom::Earliest)
        .subscribe()
        .await
        .unwrap();
    let nothing = tokio::time::timeout(
        Duration::from_millis(300),
        futures::StreamExt::next(&mut nested),
    )
    .await;
    assert!(nothing.is_err(), "orders.dlq.dlq got {nothing:?}");
}
