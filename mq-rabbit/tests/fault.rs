//! Resilience: the broker drops every connection (`rabbitmqctl
//! close_all_connections`) twice while messages stream; every message whose
//! send was confirmed is still delivered to the consumer group.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mq_core::{handler_fn, Delivery, HandlerResult, Message, MessageId, TopicSpec};
use parking_lot::Mutex;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirmed_messages_survive_dropped_connections() {
    let Some(client) = common::client("publish_timeout=20s&max_backoff=500ms").await else {
        return;
    };
    let topic = common::unique("fault");
    let group = "survivors";
    client
        .admin()
        .ensure_topic(&topic, TopicSpec::new(4))
        .await
        .expect("ensure_topic");
    let received: Arc<Mutex<HashSet<MessageId>>> = Arc::default();
    let consumer = {
        let received = received.clone();
        client
            .consumer(&topic, group)
            .concurrency(8)
            .run(handler_fn(move |d: Delivery| {
                let received = received.clone();
                async move {
                    received.lock().insert(d.message().id().expect("id"));
                    HandlerResult::Ok(())
                }
            }))
            .await
            .expect("run")
    };

    // Publish in batches while the connections are closed twice.
    let confirmed: Arc<Mutex<Vec<MessageId>>> = Arc::default();
    let producer = {
        let (client, topic, confirmed) = (client.clone(), topic.clone(), confirmed.clone());
        tokio::spawn(async move {
            let mut failures = 0;
            for batch in 0..150 {
                let messages = (0..20)
                    .map(|i| {
                        Message::new(topic.as_str(), format!("{batch}-{i}"))
                            .with_key(format!("k{}", i % 7))
                    })
                    .collect();
                match client.producer().send_batch(messages).await {
                    Ok(receipts) => confirmed.lock().extend(receipts.iter().map(|r| r.id)),
                    Err(error) => {
                        // Not confirmed: the message may or may not arrive.
                        eprintln!("batch {batch} not confirmed: {error}");
                        failures += 1;
                    }
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            failures
        })
    };
    for round in 0..2 {
        let before = confirmed.lock().len();
        let start = Instant::now();
        while confirmed.lock().len() < before + 600 && start.elapsed() < Duration::from_secs(20) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let output = common::rabbitmqctl(&["close_all_connections", "mq fault test"])
            .await
            .expect("rabbitmqctl close_all_connections");
        eprintln!(
            "round {round}: closed all connections after {} confirmed: {}",
            confirmed.lock().len(),
            output.trim()
        );
    }
    let failures = tokio::time::timeout(Duration::from_secs(40), producer)
        .await
        .expect("the producer finished")
        .expect("producer task");
    let confirmed: Vec<MessageId> = confirmed.lock().clone();
    assert!(
        confirmed.len() >= 2_000,
        "only {} confirmed ({failures} batches failed)",
        confirmed.len()
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let missing = loop {
        let received = received.lock().clone();
        let missing: Vec<&MessageId> = confirmed
            .iter()
            .filter(|id| !received.contains(id))
            .collect();
        if missing.is_empty() || Instant::now() > deadline {
            break missing.len();
        }
        drop(received);
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    eprintln!(
        "{} confirmed, {} distinct received, {missing} missing, {failures} batches unconfirmed",
        confirmed.len(),
        received.lock().len()
    );
    assert_eq!(missing, 0, "confirmed messages were lost");
    consumer.shutdown().await.expect("shutdown");
    client.close().await.expect("close");
}
