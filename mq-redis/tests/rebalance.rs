//! The rebalance protocol at the driver level, against a real Redis
//! (`MQ_TEST_REDIS_URL`, default `redis://127.0.0.1:6379/0`), with a key
//! prefix of its own: a second member joining revokes a partition from
//! the first, whose read in flight then returns nothing of it; the first
//! keeps the partition until the revocation completes, and then gives it
//! back with what it still holds unacked, which the second reclaims; a
//! late ack of a record given back is ignored.

use std::sync::Arc;
use std::time::Duration;

use mq_core::driver::{
    partition_for_key, Driver, DriverSubscription, RawDelivery, Rebalance, StartFrom,
    SubscribeSpec, TopicPartition,
};
use mq_core::{Client, Config, Message, TopicSpec};
use mq_redis::RedisDriver;

const WAIT: Duration = Duration::from_secs(10);

async fn driver() -> Option<RedisDriver> {
    let base = std::env::var("MQ_TEST_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379/0".to_owned());
    let prefix = format!("mqtest-{}", uuid::Uuid::now_v7().simple());
    let config = Config::from_url(&format!("{base}?prefix={prefix}")).expect("url");
    match RedisDriver::connect(&config).await {
        Ok(driver) => Some(driver),
        Err(e) if mq_testkit::require_brokers() => {
            panic!("MQ_REQUIRE_BROKERS=1 but redis is unreachable: {e}")
        }
        Err(e) => {
            eprintln!("SKIPPED: no redis ({e})");
            None
        }
    }
}

/// A key whose messages go to `partition` of 2.
fn key_for(partition: u32) -> String {
    (0..)
        .map(|i| format!("k{i}"))
        .find(|k| partition_for_key(k, 2) == partition)
        .expect("a key")
}

async fn next_rebalance(sub: &dyn DriverSubscription) -> Rebalance {
    tokio::time::timeout(WAIT, sub.rebalance())
        .await
        .expect("a rebalance in time")
        .expect("a rebalance")
}

async fn fetch_at_least(sub: &dyn DriverSubscription, n: usize) -> Vec<RawDelivery> {
    let mut got = Vec::new();
    while got.len() < n {
        let batch = tokio::time::timeout(WAIT, sub.fetch(100))
            .await
            .unwrap_or_else(|_| panic!("only {} of {n} fetched", got.len()))
            .expect("fetch");
        got.extend(batch);
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_partitions_are_handed_on_with_what_is_pending() {
    let Some(driver) = driver().await else {
        return;
    };
    let client = Client::new(driver.clone());
    let (topic, group) = ("rebalance", "members");
    let tp = |p| TopicPartition::new(topic, p);
    driver
        .ensure_topic(topic, &TopicSpec::new(2))
        .await
        .expect("ensure_topic");
    driver
        .ensure_group(topic, group, StartFrom::Earliest)
        .await
        .expect("ensure_group");
    let send = |partition: u32, text: &'static str| {
        let (client, key) = (client.clone(), key_for(partition));
        async move {
            client
                .producer()
                .send(Message::new(topic, text).with_key(key))
                .await
                .expect("send");
        }
    };
    for _ in 0..3 {
        send(0, "old").await;
        send(1, "old").await;
    }

    let spec = || SubscribeSpec::new(vec![topic.to_owned()], group);
    let a: Arc<dyn DriverSubscription> = driver.subscribe(spec()).await.expect("a").into();
    let Rebalance::Assigned(mut assigned) = next_rebalance(&*a).await else {
        panic!("expected an assignment");
    };
    assigned.sort();
    assert_eq!(assigned, [tp(0), tp(1)]);
    let held = fetch_at_least(&*a, 6).await;
    let (held0, held1): (Vec<_>, Vec<_>) = held.into_iter().partition(|d| d.partition == 0);
    assert_eq!((held0.len(), held1.len()), (3, 3));

    // A read in flight when the second member joins.
    let reading = tokio::spawn({
        let a = a.clone();
        async move { a.fetch(100).await }
    });
    let b = driver.subscribe(spec()).await.expect("b");
    let Rebalance::Revoked(revocation) = next_rebalance(&*a).await else {
        panic!("expected a revocation");
    };
    assert_eq!(revocation.partitions(), [tp(1)]);
    send(1, "new").await;
    send(0, "new").await;
    let got = tokio::time::timeout(WAIT, reading)
        .await
        .expect("the read in flight returns")
        .expect("read task")
        .expect("fetch");
    assert!(
        got.iter().all(|d| d.partition == 0),
        "a revoked partition was read: {got:?}"
    );

    // Until the revocation completes the partition stays with the first
    // member: the second gets nothing of it, and acks still count.
    a.ack(vec![held1[0].token.clone()]).await.expect("ack");
    let early = tokio::time::timeout(Duration::from_millis(500), b.rebalance()).await;
    assert!(early.is_err(), "assigned before the revocation completed");
    revocation.complete();

    let Rebalance::Assigned(assigned) = next_rebalance(&*b).await else {
        panic!("expected an assignment");
    };
    assert_eq!(assigned, [tp(1)]);
    // A late ack of a record given back is ignored: the second member gets it.
    a.ack(vec![held1[1].token.clone()])
        .await
        .expect("a late ack is Ok");
    let reclaimed = fetch_at_least(&*b, 3).await;
    let ids = |ds: &[RawDelivery]| -> Vec<_> { ds.iter().map(|d| d.message.id()).collect() };
    assert!(reclaimed.iter().all(|d| d.partition == 1), "{reclaimed:?}");
    assert_eq!(
        ids(&reclaimed[..2]),
        ids(&held1[1..]),
        "the unacked, in order"
    );
    assert!(reclaimed[..2].iter().all(|d| d.delivery_count == 2));
    assert_eq!(reclaimed[2].message.payload_str().ok(), Some("new"));

    a.close().await.expect("close a");
    b.close().await.expect("close b");
    driver.delete_topic(topic).await.expect("delete_topic");
}
