//! Groups on the native engine: rebalances as the SPI reports them, groups
//! created ahead of any member, acks naming a topic since recreated, and
//! fetches dropped mid-read.

mod support;

use std::time::Duration;

use mq_core::driver::{Driver, DriverSubscription, RawDelivery, Rebalance, StartFrom};
use mq_core::{Message, MessageId, TopicSpec};
use mq_native::NativeDriver;
use support::{fresh_dir, open, sub};

async fn publish(driver: &NativeDriver, topic: &str, n: u32) {
    driver
        .publish(
            (0..n)
                .map(|i| Message::new(topic, i.to_string()).with_id(MessageId::new()))
                .collect(),
        )
        .await
        .expect("publish");
}

async fn fetch(s: &dyn DriverSubscription, max: usize) -> Vec<RawDelivery> {
    tokio::time::timeout(Duration::from_secs(10), s.fetch(max))
        .await
        .expect("fetch in time")
        .expect("fetch")
}

async fn rebalance(s: &dyn DriverSubscription) -> Rebalance {
    tokio::time::timeout(Duration::from_secs(10), s.rebalance())
        .await
        .expect("a rebalance in time")
        .expect("a rebalance")
}

fn partitions(of: &[RawDelivery]) -> Vec<u32> {
    let mut p: Vec<u32> = of.iter().map(|d| d.partition).collect();
    p.sort_unstable();
    p.dedup();
    p
}

async fn total_lag(driver: &NativeDriver, topic: &str, group: &str) -> u64 {
    let lag = driver.lag(topic, group).await.expect("lag");
    lag.iter().map(|p| p.lag).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_partition_moves_only_once_its_member_lets_go() {
    let dir = fresh_dir("rebalance");
    let driver = open(&dir, "").await.unwrap();
    driver.ensure_topic("t", &TopicSpec::new(4)).await.unwrap();
    publish(&driver, "t", 8).await;

    let first = sub(&driver, "t", "g").await;
    let Rebalance::Assigned(all) = rebalance(&*first).await else {
        panic!("expected an assignment");
    };
    assert_eq!(
        all.iter().map(|tp| tp.partition).collect::<Vec<_>>(),
        [0, 1, 2, 3]
    );
    let held = fetch(&*first, 100).await;
    assert_eq!((held.len(), partitions(&held)), (8, vec![0, 1, 2, 3]));

    let second = sub(&driver, "t", "g").await;
    let Rebalance::Assigned(gained) = rebalance(&*second).await else {
        panic!("expected an assignment");
    };
    assert_eq!(
        gained.iter().map(|tp| tp.partition).collect::<Vec<_>>(),
        [1, 3]
    );
    let Rebalance::Revoked(revocation) = rebalance(&*first).await else {
        panic!("expected a revocation");
    };
    let revoked: Vec<u32> = revocation
        .partitions()
        .iter()
        .map(|tp| tp.partition)
        .collect();
    assert_eq!(revoked, [1, 3]);
    assert!(
        tokio::time::timeout(Duration::from_millis(300), second.fetch(100))
            .await
            .is_err(),
        "nothing moves while the first member still holds the records"
    );

    // The first member settles what it keeps, then lets go of the rest.
    let kept: Vec<_> = held.iter().filter(|d| d.partition % 2 == 0).collect();
    first
        .ack(kept.iter().map(|d| d.token.clone()).collect())
        .await
        .unwrap();
    revocation.complete();
    // The hand-over gives partitions back one at a time, while a fetch
    // may already be taking: it can take them in two fetches.
    let mut moved = fetch(&*second, 100).await;
    while moved.len() < 4 {
        moved.extend(fetch(&*second, 100).await);
    }
    assert_eq!((moved.len(), partitions(&moved)), (4, vec![1, 3]));
    assert!(moved.iter().all(|d| d.delivery_count == 2), "redeliveries");
    assert_eq!(total_lag(&driver, "t", "g").await, 4);
    second
        .ack(moved.iter().map(|d| d.token.clone()).collect())
        .await
        .unwrap();
    assert_eq!(total_lag(&driver, "t", "g").await, 0);

    // When the second member leaves, its partitions come back at once.
    second.close().await.unwrap();
    let Rebalance::Assigned(back) = rebalance(&*first).await else {
        panic!("expected an assignment");
    };
    assert_eq!(
        back.iter().map(|tp| tp.partition).collect::<Vec<_>>(),
        [1, 3]
    );
    drop((first, second));
    driver.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_created_ahead_keeps_its_place_across_a_restart() {
    let dir = fresh_dir("ensure-group");
    // Even without auto-create: creating the group is asking for its topic.
    let driver = open(&dir, "auto_create=false").await.unwrap();
    driver
        .ensure_group("t", "g", StartFrom::Latest)
        .await
        .expect("ensure_group creates the topic");
    publish(&driver, "t", 3).await;
    driver
        .ensure_group("t", "g", StartFrom::Latest)
        .await
        .expect("ensure_group again");
    assert_eq!(
        total_lag(&driver, "t", "g").await,
        3,
        "an existing group stays"
    );
    driver.close().await.unwrap();

    let driver = open(&dir, "auto_create=false").await.unwrap();
    assert_eq!(total_lag(&driver, "t", "g").await, 3);
    let s = sub(&driver, "t", "g").await;
    let mut got = Vec::new();
    while got.len() < 3 {
        got.extend(fetch(&*s, 100).await);
    }
    assert_eq!(got.len(), 3);
    drop(s);
    driver.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ack_for_a_topic_since_recreated_is_ignored() {
    let dir = fresh_dir("recreated");
    let driver = open(&dir, "").await.unwrap();
    driver.ensure_topic("t", &TopicSpec::new(1)).await.unwrap();
    publish(&driver, "t", 1).await;
    let old = sub(&driver, "t", "g").await;
    let stale = fetch(&*old, 10).await;
    driver.delete_topic("t").await.unwrap();
    driver.ensure_topic("t", &TopicSpec::new(1)).await.unwrap();
    publish(&driver, "t", 1).await;
    let new = sub(&driver, "t", "g").await;
    let fresh = fetch(&*new, 10).await;
    assert_eq!(
        fresh[0].offset, stale[0].offset,
        "the same offset, another record"
    );
    old.ack(stale.iter().map(|d| d.token.clone()).collect())
        .await
        .unwrap();
    assert_eq!(total_lag(&driver, "t", "g").await, 1);
    new.ack(fresh.iter().map(|d| d.token.clone()).collect())
        .await
        .unwrap();
    assert_eq!(total_lag(&driver, "t", "g").await, 0);
    drop((old, new));
    driver.close().await.unwrap();
}

/// On a current-thread runtime a fetch reads the log on a blocking thread:
/// dropped while that read runs, what it took goes back to the group,
/// uncounted, for the next fetch.
#[tokio::test(flavor = "current_thread")]
async fn a_fetch_dropped_mid_read_loses_nothing() {
    let dir = fresh_dir("dropped-fetch");
    let driver = open(&dir, "").await.unwrap();
    driver.ensure_topic("t", &TopicSpec::new(2)).await.unwrap();
    publish(&driver, "t", 10).await;
    let s = sub(&driver, "t", "g").await;
    let mut got = Vec::new();
    for _ in 0..5 {
        // Polled once (its read starts), then dropped, unless the read
        // was done by then.
        tokio::select! {
            biased;
            done = s.fetch(1) => got.extend(done.unwrap()),
            _ = std::future::ready(()) => {}
        }
    }
    while got.len() < 10 {
        got.extend(fetch(&*s, 100).await);
    }
    let mut offsets: Vec<_> = got.iter().map(|d| (d.partition, d.offset)).collect();
    offsets.sort_unstable();
    offsets.dedup();
    assert_eq!(offsets.len(), 10, "each once");
    assert!(
        got.iter().all(|d| d.delivery_count == 1),
        "dropped takes do not count"
    );
    drop(s);
    driver.close().await.unwrap();
}
