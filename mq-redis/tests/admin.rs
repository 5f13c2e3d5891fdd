//! The Redis side of the admin operations, against a real Redis
//! (`MQ_TEST_REDIS_URL`, default `redis://127.0.0.1:6379/0`) under a key
//! prefix of its own, so listing sees exactly this test's topics: what
//! browsing positions mean without offsets, and a reset that drops what
//! the group had pending.

use std::time::{Duration, SystemTime};

use mq_core::driver::{BrowseFrom, BrowseSpec, BrowsedMessage, ResetTo};
use mq_core::{Client, Config, Error, Message, StartFrom, TopicSpec};
use mq_redis::RedisDriver;

async fn client() -> Option<Client> {
    let base =
        std::env::var("MQ_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into());
    let prefix = format!("mqtest-{}", uuid::Uuid::now_v7().simple());
    let config = Config::from_url(&format!("{base}?prefix={prefix}")).expect("url");
    match RedisDriver::connect(&config).await {
        Ok(driver) => Some(Client::new(driver)),
        Err(e) if mq_testkit::require_brokers() => {
            panic!("MQ_REQUIRE_BROKERS=1 but redis is unreachable: {e}")
        }
        Err(e) => {
            eprintln!("SKIPPED: no redis ({e})");
            None
        }
    }
}

fn bodies(browsed: &[BrowsedMessage]) -> Vec<String> {
    browsed
        .iter()
        .map(|m| m.message.payload_str().expect("utf8").to_owned())
        .collect()
}

async fn send(client: &Client, topic: &str, bodies: &[&str]) {
    let batch = bodies
        .iter()
        .map(|b| Message::new(topic, b.to_string()))
        .collect();
    client.producer().send_batch(batch).await.expect("send");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_and_browses_without_offsets() {
    let Some(client) = client().await else { return };
    let admin = client.admin();
    admin.ensure_topic("a", TopicSpec::new(1)).await.unwrap();
    admin.ensure_topic("b", TopicSpec::new(3)).await.unwrap();
    // A string key that the settings pattern matches: not a topic.
    client
        .producer()
        .send(Message::new("a", "0").with_idempotency_key("x}:meta"))
        .await
        .unwrap();
    let topics: Vec<(String, u32)> = admin
        .topics()
        .await
        .unwrap()
        .into_iter()
        .map(|t| (t.name, t.partitions))
        .collect();
    assert_eq!(topics, [("a".to_owned(), 1), ("b".to_owned(), 3)]);

    send(&client, "a", &["1", "2"]).await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    let later = SystemTime::now();
    send(&client, "a", &["3", "4"]).await;
    let browse = |from, max| admin.browse("a", BrowseSpec::new(0, from, max));
    let all = browse(BrowseFrom::Offset(0), 10).await.unwrap();
    assert_eq!(bodies(&all), ["0", "1", "2", "3", "4"]);
    assert!(all.iter().all(|m| m.offset.is_none() && m.partition == 0));
    assert_eq!(
        bodies(&browse(BrowseFrom::Time(later), 10).await.unwrap()),
        ["3", "4"]
    );
    assert_eq!(
        bodies(&browse(BrowseFrom::Last(2), 10).await.unwrap()),
        ["3", "4"]
    );
    // The oldest `max` of the last `n`, as on every backend.
    assert_eq!(
        bodies(&browse(BrowseFrom::Last(4), 2).await.unwrap()),
        ["1", "2"]
    );
    assert_eq!(browse(BrowseFrom::Last(100), 10).await.unwrap().len(), 5);
    let offset = browse(BrowseFrom::Offset(3), 10).await.unwrap_err();
    assert!(matches!(offset, Error::Unsupported { .. }), "{offset:?}");
    let partition = admin
        .browse("a", BrowseSpec::new(1, BrowseFrom::Last(1), 1))
        .await
        .unwrap_err();
    assert!(matches!(partition, Error::Invalid { .. }), "{partition:?}");
    assert!(admin
        .browse("missing", BrowseSpec::new(0, BrowseFrom::Last(1), 1))
        .await
        .unwrap()
        .is_empty());

    admin
        .ensure_group("b", "g1", StartFrom::Latest)
        .await
        .unwrap();
    assert_eq!(admin.groups("b").await.unwrap(), ["g1"]);
    assert!(admin.groups("missing").await.unwrap().is_empty());
    for topic in ["a", "b"] {
        admin.delete_topic(topic).await.unwrap();
    }
    assert!(admin.topics().await.unwrap().is_empty());
    client.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_to_a_time_drops_what_was_pending() {
    let Some(client) = client().await else { return };
    let admin = client.admin();
    admin.ensure_topic("r", TopicSpec::new(1)).await.unwrap();
    admin
        .ensure_group("r", "g", StartFrom::Earliest)
        .await
        .unwrap();
    send(&client, "r", &["0", "1", "2"]).await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    let later = SystemTime::now();
    send(&client, "r", &["3", "4"]).await;

    // Two records delivered and never acked: pending in Redis.
    let mut stream = client.consumer("r", "g").subscribe().await.unwrap();
    for _ in 0..2 {
        stream.next_delivery().await.expect("a delivery").unwrap();
    }
    let busy = admin.reset_group("r", "g", ResetTo::Earliest).await;
    assert!(matches!(busy, Err(Error::Invalid { .. })), "{busy:?}");
    stream.close().await.unwrap();
    assert_eq!(admin.total_lag("r", "g").await.unwrap(), 5);

    admin
        .reset_group("r", "g", ResetTo::Time(later))
        .await
        .unwrap();
    // Were the two pending records still pending, they would count too.
    assert_eq!(admin.total_lag("r", "g").await.unwrap(), 2);
    let mut stream = client.consumer("r", "g").subscribe().await.unwrap();
    let mut seen = Vec::new();
    for _ in 0..2 {
        let delivery = stream.next_delivery().await.expect("a delivery").unwrap();
        seen.push(delivery.message().payload_str().unwrap().to_owned());
        delivery.ack().await.unwrap();
    }
    stream.close().await.unwrap();
    assert_eq!(seen, ["3", "4"]);

    // Resetting a group that does not exist creates it there.
    admin
        .reset_group("r", "new", ResetTo::Latest)
        .await
        .unwrap();
    assert_eq!(admin.groups("r").await.unwrap(), ["g", "new"]);
    assert_eq!(admin.total_lag("r", "new").await.unwrap(), 0);
    let missing = admin.reset_group("missing", "g", ResetTo::Latest).await;
    assert!(matches!(missing, Err(Error::Invalid { .. })), "{missing:?}");
    admin.delete_topic("r").await.unwrap();
    client.close().await.unwrap();
}
