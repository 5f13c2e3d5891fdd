//! Runtime behaviour that belongs to the core rather than to any backend,
//! checked on the memory driver.

use std::sync::Arc;
use std::time::Duration;

use mq_core::{
    handler_fn, memory::MemoryDriver, Client, Delivery, HandlerError, HandlerResult, Message,
    RetryPolicy,
};
use parking_lot::Mutex;
use tokio::sync::mpsc;

fn quick(attempts: u32) -> RetryPolicy {
    RetryPolicy::new(attempts).with_backoff(Duration::from_millis(10), Duration::from_millis(50))
}

async fn recv<T>(rx: &mut mpsc::UnboundedReceiver<T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("timed out")
        .expect("channel closed")
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
