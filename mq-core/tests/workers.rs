//! The consumer runtime's workers: a key waiting to retry holds only its
//! own key, and a worker that dies stops the consumer with an error
//! instead of leaving a message silently unacked. Checked on the memory
//! driver.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{recv, Instrumented};
use mq_core::memory::MemoryDriver;
use mq_core::{
    handler_fn, Client, Delivery, Error, HandlerError, HandlerResult, Message, RetryPolicy,
};
use tokio::sync::mpsc;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_waiting_to_retry_in_place_hold_no_worker() {
    let client = Client::new(MemoryDriver::new());
    let (tx, mut rx) = mpsc::unbounded_channel();
    // One worker, and two poison keys that ask for an hour's pause: before
    // the fix the worker slept through it and `healthy` waited with it.
    let consumer = client
        .consumer("orders", "billing")
        .concurrency(1)
        .retry(RetryPolicy::new(5))
        .run(handler_fn(move |d: Delivery| {
            let tx = tx.clone();
            async move {
                let key = d.key().unwrap_or_default().to_owned();
                tx.send((key.clone(), d.message().payload_str()?.to_owned()))?;
                if key.starts_with("poison") {
                    return Err(HandlerError::retry_after(
                        "downstream is down",
                        Duration::from_secs(3600),
                    ));
                }
                HandlerResult::Ok(())
            }
        }))
        .await
        .unwrap();
    let producer = client.producer();
    for (key, payload) in [
        ("poison-a", "a1"),
        ("poison-b", "b1"),
        ("poison-a", "a2"),
        ("healthy", "h1"),
        ("healthy", "h2"),
    ] {
        producer
            .send(Message::new("orders", payload).with_key(key))
            .await
            .unwrap();
    }
    let mut seen = Vec::new();
    for _ in 0..4 {
        seen.push(recv(&mut rx).await);
    }
    let payloads: Vec<&str> = seen.iter().map(|(_, p)| p.as_str()).collect();
    assert!(
        payloads.contains(&"h1") && payloads.contains(&"h2"),
        "{seen:?}"
    );
    // a2 waits behind a1's retry: the key's order holds.
    assert!(!payloads.contains(&"a2"), "{seen:?}");
    consumer.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_worker_stops_the_consumer_and_its_message_comes_back() {
    let driver = Instrumented::default();
    driver.panic_next_ack.store(true, Ordering::SeqCst);
    let client = Client::new(driver);
    client
        .producer()
        .send(Message::new("jobs", "only"))
        .await
        .unwrap();
    let handler = |tx: mpsc::UnboundedSender<String>| {
        handler_fn(move |d: Delivery| {
            let tx = tx.clone();
            async move {
                tx.send(d.message().payload_str()?.to_owned())?;
                HandlerResult::Ok(())
            }
        })
    };
    let (tx, mut rx) = mpsc::unbounded_channel();
    let consumer = client
        .consumer("jobs", "workers")
        .run(handler(tx))
        .await
        .unwrap();
    assert_eq!(recv(&mut rx).await, "only");
    let stopped = tokio::time::timeout(Duration::from_secs(10), consumer.join())
        .await
        .expect("the consumer kept running with a dead worker");
    match stopped {
        Err(Error::Backend { message, .. }) => {
            assert!(message.contains("driver bug in ack"), "{message}")
        }
        other => panic!("expected the worker's death, got {other:?}"),
    }
    // The message it held was never acked: the group gets it again.
    let (tx, mut rx) = mpsc::unbounded_channel();
    let again = client
        .consumer("jobs", "workers")
        .run(handler(tx))
        .await
        .unwrap();
    assert_eq!(recv(&mut rx).await, "only");
    again.shutdown().await.unwrap();
}
