//! A topic's own retention: records past it are no longer served nor
//! counted as lag, the setting survives a restart, and a retention the
//! engine cannot honour is refused by name.

mod support;

use std::time::Duration;

use mq_core::driver::{Driver, DriverSubscription, RawDelivery};
use mq_core::{Error, Message, MessageId, TopicSpec};
use mq_native::NativeDriver;
use support::{fresh_dir, open, sub};

async fn publish(driver: &NativeDriver, topic: &str, bodies: std::ops::Range<u32>) {
    driver
        .publish(
            bodies
                .map(|i| Message::new(topic, i.to_string()).with_id(MessageId::new()))
                .collect(),
        )
        .await
        .expect("publish");
}

/// Everything the subscription can fetch within a short wait, as bodies.
async fn drain(s: &dyn DriverSubscription) -> Vec<u32> {
    let mut bodies = Vec::new();
    while let Ok(batch) = tokio::time::timeout(Duration::from_millis(300), s.fetch(1000)).await {
        let batch: Vec<RawDelivery> = batch.expect("fetch");
        bodies.extend(
            batch
                .iter()
                .map(|d| d.message.payload_str().unwrap().parse::<u32>().unwrap()),
        );
    }
    bodies.sort_unstable();
    bodies
}

async fn total_lag(driver: &NativeDriver, topic: &str, group: &str) -> u64 {
    let lag = driver.lag(topic, group).await.expect("lag");
    lag.iter().map(|p| p.lag).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_past_a_topics_retention_are_expired() {
    let dir = fresh_dir("topic-retention");
    let driver = open(&dir, "fsync=never").await.unwrap();
    let short = TopicSpec::new(2).with_retention(Duration::from_millis(300));
    driver.ensure_topic("short", &short).await.unwrap();
    driver
        .ensure_topic("long", &TopicSpec::new(2))
        .await
        .unwrap();
    // A group that joined before, and reads nothing until after expiry.
    let early = sub(&driver, "short", "early").await;
    publish(&driver, "short", 0..50).await;
    publish(&driver, "long", 0..50).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    publish(&driver, "short", 50..60).await;
    assert_eq!(total_lag(&driver, "short", "new").await, 60);

    driver.engine().enforce_retention().unwrap();

    assert_eq!(total_lag(&driver, "short", "new").await, 10);
    assert_eq!(total_lag(&driver, "short", "early").await, 10);
    assert_eq!(drain(&*early).await, (50..60).collect::<Vec<_>>());
    let late = sub(&driver, "short", "late").await;
    assert_eq!(drain(&*late).await, (50..60).collect::<Vec<_>>());
    // A topic without its own retention keeps everything.
    let long = sub(&driver, "long", "g").await;
    assert_eq!(drain(&*long).await, (0..50).collect::<Vec<_>>());
    drop((early, late, long));
    driver.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topics_retention_survives_restart() {
    let dir = fresh_dir("topic-retention-restart");
    let driver = open(&dir, "").await.unwrap();
    let spec = TopicSpec::new(1).with_retention(Duration::from_millis(300));
    driver.ensure_topic("t", &spec).await.unwrap();
    publish(&driver, "t", 0..5).await;
    driver.close().await.unwrap();
    drop(driver);

    tokio::time::sleep(Duration::from_millis(400)).await;
    let driver = open(&dir, "").await.unwrap();
    publish(&driver, "t", 5..7).await;
    driver.engine().enforce_retention().unwrap();
    let s = sub(&driver, "t", "g").await;
    assert_eq!(drain(&*s).await, vec![5, 6]);
    drop(s);
    driver.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retention_the_engine_cannot_honour_is_refused() {
    let dir = fresh_dir("topic-retention-bad");
    let driver = open(&dir, "retention=1h").await.unwrap();
    for (bad, why) in [
        (
            Duration::from_secs(7200),
            "longer than the engine's retention",
        ),
        (Duration::ZERO, "must be positive"),
    ] {
        let spec = TopicSpec::new(1).with_retention(bad);
        let err = driver.ensure_topic("t", &spec).await.expect_err("refused");
        let text = err.to_string();
        assert!(matches!(err, Error::Invalid { .. }), "{err:?}");
        assert!(text.contains("retention") && text.contains(why), "{text}");
    }
    // Nothing was created by the refused calls.
    assert!(driver.engine().topics.read().get("t").is_none());
    driver.close().await.unwrap();
}
