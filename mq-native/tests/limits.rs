//! Extreme settings and durations: a bad one is refused with an error
//! naming it, a huge duration saturates; nothing panics and no engine
//! thread dies.

mod support;

use std::time::{Duration, SystemTime};

use mq_core::driver::{Driver, DriverSubscription, RawDelivery};
use mq_core::{Error, Message, MessageId, TopicSpec};
use mq_native::engine::Engine;
use mq_native::Options;
use support::{fresh_dir, open, sub};

/// About 9.5e18 seconds: past what an `Instant` can add (i64 seconds).
const HUGE: &str = "300000000000years";

fn msg(topic: &str, body: &str) -> Message {
    Message::new(topic, body.to_owned()).with_id(MessageId::new())
}

async fn fetch(s: &dyn DriverSubscription, max: usize) -> Vec<RawDelivery> {
    tokio::time::timeout(Duration::from_secs(10), s.fetch(max))
        .await
        .expect("fetch in time")
        .expect("fetch")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_checkpoint_interval_keeps_the_housekeeper_alive() {
    let dir = fresh_dir("huge-checkpoint");
    let driver = open(&dir, &format!("checkpoint_interval={HUGE}"))
        .await
        .expect("a huge interval saturates");
    driver.ensure_topic("d", &TopicSpec::new(1)).await.unwrap();
    let due = SystemTime::now() + Duration::from_millis(200);
    driver
        .publish(vec![msg("d", "later").with_deliver_at(due)])
        .await
        .unwrap();
    // Delays are promoted by the housekeeping thread: it must be running.
    let s = sub(&driver, "d", "g").await;
    let got = fetch(&*s, 10).await;
    assert_eq!(got[0].message.payload_str().unwrap(), "later");
    drop(s);
    driver.close().await.unwrap();
    // Checkpointed at close all the same.
    let driver = open(&dir, "").await.unwrap();
    assert_eq!(driver.lag("d", "g").await.unwrap()[0].lag, 1);
    driver.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_fsync_interval_keeps_the_flusher_alive() {
    let dir = fresh_dir("huge-fsync");
    let driver = open(&dir, &format!("fsync=interval:{HUGE}")).await.unwrap();
    for i in 0..3 {
        tokio::time::timeout(
            Duration::from_secs(10),
            driver.publish(vec![msg("f", &i.to_string())]),
        )
        .await
        .expect("acked in time: the flusher runs")
        .unwrap();
    }
    driver.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_dedup_window_remembers_keys() {
    let dir = fresh_dir("huge-dedup");
    // u64::MAX milliseconds: the window overflowed when added to a time.
    let driver = open(&dir, "dedup_window=18446744073709551615")
        .await
        .unwrap();
    let first = driver
        .publish(vec![msg("k", "one").with_idempotency_key("key")])
        .await
        .unwrap();
    let again = driver
        .publish(vec![msg("k", "two").with_idempotency_key("key")])
        .await
        .unwrap();
    assert!(!first[0].duplicate && again[0].duplicate);
    assert_eq!(again[0].id, first[0].id);
    driver.close().await.unwrap();
    let driver = open(&dir, "dedup_window=18446744073709551615")
        .await
        .unwrap();
    let after = driver
        .publish(vec![msg("k", "three").with_idempotency_key("key")])
        .await
        .unwrap();
    assert!(after[0].duplicate, "remembered across a restart");
    driver.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_topic_retention_keeps_everything() {
    let dir = fresh_dir("huge-retention");
    // The engine keeps forever, so any topic retention is allowed.
    let driver = open(&dir, "retention=0").await.unwrap();
    driver
        .publish((0..10).map(|i| msg("r", &i.to_string())).collect())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    // In whole milliseconds this is 2^64 + 384: truncated to 64 bits it
    // was a 384 ms retention, which expired the messages above.
    let huge = Duration::from_secs(18_446_744_073_709_552);
    driver
        .ensure_topic("r", &TopicSpec::new(1).with_retention(huge))
        .await
        .unwrap();
    let lag: u64 = driver
        .lag("r", "g")
        .await
        .unwrap()
        .iter()
        .map(|p| p.lag)
        .sum();
    assert_eq!(lag, 10);
    driver.close().await.unwrap();
    let driver = open(&dir, "retention=0").await.unwrap();
    let s = sub(&driver, "r", "g").await;
    assert_eq!(fetch(&*s, 100).await.len(), 10, "kept across a restart");
    drop(s);
    driver.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nack_for_duration_max_saturates() {
    let dir = fresh_dir("nack-max");
    let driver = open(&dir, "").await.unwrap();
    driver.publish(vec![msg("n", "x")]).await.unwrap();
    let s = sub(&driver, "n", "g").await;
    let got = fetch(&*s, 10).await;
    s.nack(got[0].token.clone(), Duration::MAX)
        .await
        .expect("no panic, no error");
    // Back in the group, due in a century: not delivered now, still owed.
    let again = tokio::time::timeout(Duration::from_millis(300), s.fetch(10)).await;
    assert!(again.is_err(), "redelivered early: {again:?}");
    assert_eq!(
        driver
            .lag("n", "g")
            .await
            .unwrap()
            .iter()
            .map(|p| p.lag)
            .sum::<u64>(),
        1
    );
    drop(s);
    driver.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sizes_out_of_range_are_named() {
    let dir = fresh_dir("sizes");
    for (query, name) in [
        ("partitions=0", "partitions=0"),
        ("partitions=4294967295", "partitions=4294967295"),
        ("segment_bytes=0", "segment_bytes=0"),
        ("max_message_bytes=0", "max_message_bytes=0"),
        (
            "max_message_bytes=18446744073709551615",
            "max_message_bytes=",
        ),
        ("checkpoint_interval=0", "checkpoint_interval=0"),
        ("fsync=interval:0", "interval"),
    ] {
        let err = open(&dir, query).await.expect_err(query);
        assert!(
            matches!(&err, Error::Config(m) if m.contains(name)),
            "{query}: {err:?}"
        );
    }
    // Settings built by hand are checked as well.
    let mut options = Options::new(&dir);
    options.partitions = 0;
    let err = Engine::open(options).expect_err("no partitions");
    assert!(
        matches!(&err, Error::Config(m) if m.contains("partitions=0")),
        "{err:?}"
    );

    let driver = open(&dir, "").await.unwrap();
    for partitions in [0, 1_000_000] {
        let err = driver
            .ensure_topic("p", &TopicSpec::new(partitions))
            .await
            .expect_err("out of range");
        assert!(
            matches!(&err, Error::Invalid { field, value, .. }
                if *field == "partitions" && *value == partitions.to_string()),
            "{err:?}"
        );
    }
    driver.close().await.unwrap();
}
