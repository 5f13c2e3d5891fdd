//! The broker goes down and comes back mid-stream: nothing acked is lost
//! and the consumer resumes by itself.
//!
//! The broker is stopped and started with noida-db's own commands (a
//! clean `down` snapshots it, `up` restores it): set
//! `MQ_TEST_KAFKA_NOIDA` to the `noida-db` binary and
//! `MQ_TEST_KAFKA_NOIDA_DATA` to its data directory (`.ci/run` does).

mod support;

use std::collections::HashSet;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use mq_core::{handler_fn, Delivery, HandlerResult, Message, MessageId, TopicSpec};
use parking_lot::Mutex;

fn noida(action: &str) -> bool {
    let (Ok(bin), Ok(data)) = (
        std::env::var("MQ_TEST_KAFKA_NOIDA"),
        std::env::var("MQ_TEST_KAFKA_NOIDA_DATA"),
    ) else {
        return false;
    };
    let mut cmd = Command::new(bin);
    cmd.arg(action).arg("--data-dir").arg(data);
    if action == "up" {
        cmd.args(["--only", "kafka", "--kafka-port", "9092"]);
    }
    cmd.output().map(|o| o.status.success()).unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_down_and_up_mid_stream_loses_nothing_acked() {
    if std::env::var("MQ_TEST_KAFKA_NOIDA").is_err() {
        return support::skip(
            "MQ_TEST_KAFKA_NOIDA is not set: the fault test needs to stop the broker",
        );
    }
    let Some(client) = support::client().await else {
        return;
    };
    let topic = support::unique("fault");
    let group = support::unique("fault");
    client
        .admin()
        .ensure_topic(&topic, TopicSpec::new(4))
        .await
        .unwrap();
    client
        .admin()
        .ensure_group(&topic, &group, mq_core::StartFrom::Earliest)
        .await
        .unwrap();
    let seen: Arc<Mutex<HashSet<MessageId>>> = Arc::default();
    let handler_seen = seen.clone();
    let consumer = client
        .consumer(&topic, &group)
        .run(handler_fn(move |d: Delivery| {
            let seen = handler_seen.clone();
            async move {
                seen.lock().extend(d.message().id());
                HandlerResult::Ok(())
            }
        }))
        .await
        .unwrap();

    let producer = client.producer();
    let mut acked = Vec::new();
    for round in 0..60u32 {
        if round == 20 {
            assert!(noida("down"), "noida-db down failed");
        }
        if round == 25 {
            assert!(noida("up"), "noida-db up failed");
        }
        let batch: Vec<Message> = (0..10)
            .map(|i| Message::new(topic.as_str(), format!("{round}-{i}")).with_key(format!("k{i}")))
            .collect();
        // A send during the outage may fail: only acked sends must arrive.
        if let Ok(Ok(receipts)) =
            tokio::time::timeout(Duration::from_secs(5), producer.send_batch(batch)).await
        {
            acked.extend(receipts.into_iter().map(|r| r.id));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(acked.len() >= 300, "only {} sends acked", acked.len());
    let arrived = mq_testkit::wait_until(Duration::from_secs(60), || async {
        let seen = seen.lock();
        acked.iter().all(|id| seen.contains(id))
    })
    .await;
    let missing = acked.iter().filter(|id| !seen.lock().contains(id)).count();
    assert!(
        arrived,
        "{missing} of {} acked messages never arrived",
        acked.len()
    );
    consumer.shutdown().await.unwrap();
    let _ = client.admin().delete_topic(&topic).await;
    client.close().await.unwrap();
}
