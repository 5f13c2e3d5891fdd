//! A consumer holding buffered records closes in bounded time (librdkafka
//! can hang destroying a consumer that never finished closing).

mod support;

use std::time::{Duration, Instant};

use futures::StreamExt;
use mq_core::{Message, TopicSpec};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_with_buffered_records_is_bounded() {
    let Some(client) = support::client().await else {
        return;
    };
    let topic = support::unique("shutdown");
    client
        .admin()
        .ensure_topic(&topic, TopicSpec::new(4))
        .await
        .unwrap();
    let batch: Vec<Message> = (0..5_000)
        .map(|i| Message::new(topic.as_str(), vec![0u8; 256]).with_key(format!("k{i}")))
        .collect();
    client.producer().send_batch(batch).await.unwrap();
    let mut sub = client
        .consumer(&topic, support::unique("shutdown"))
        .prefetch(1_000)
        .subscribe()
        .await
        .unwrap();
    let first = tokio::time::timeout(Duration::from_secs(20), sub.next())
        .await
        .expect("a record")
        .unwrap()
        .unwrap();
    drop(first);
    let started = Instant::now();
    sub.close().await.unwrap();
    client.close().await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "closing took {:?}",
        started.elapsed()
    );
    let admin = support::client().await.unwrap();
    let _ = admin.admin().delete_topic(&topic).await;
    admin.close().await.unwrap();
}
