//! Individual sends coalesced into driver batches: fewer driver calls,
//! each send with its own receipt or error, per-key order kept for sends
//! started before they are awaited. Checked on the memory driver, counted
//! at the driver.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::Instrumented;
use futures::future::join_all;
use futures::StreamExt;
use mq_core::{Client, Coalescing, Error, Message, Receipt, StartFrom};

fn counted(coalescing: Coalescing) -> (Client, Arc<AtomicUsize>) {
    let driver = Instrumented::default();
    let calls = driver.publishes.clone();
    (Client::new(driver).with_coalescing(coalescing), calls)
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
