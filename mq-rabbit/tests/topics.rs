//! Topics and groups as a RabbitMQ user meets them: a topic without groups
//! accepts messages and drops them (a group sees only what is published
//! after it exists, whatever its start), and clients creating one topic
//! at once agree on it.

mod common;

use std::time::Duration;

use futures::StreamExt;
use mq_core::{Message, StartFrom, TopicSpec};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_without_groups_accepts_and_drops() {
    let Some(client) = common::client("").await else {
        return;
    };
    let topic = common::unique("nogroup");
    let producer = client.producer();
    client
        .admin()
        .ensure_topic(&topic, TopicSpec::new(2))
        .await
        .expect("ensure_topic");
    producer
        .send(Message::new(topic.as_str(), "before").with_key("k"))
        .await
        .expect("a send after ensure_topic, with no group yet");
    let mut tx = producer.begin().await.expect("begin");
    tx.send(Message::new(topic.as_str(), "before, in a transaction"))
        .await
        .expect("a send in a transaction");
    tx.commit().await.expect("commit with no group yet");
    let never_created = common::unique("never-created");
    producer
        .send(Message::new(never_created.as_str(), "to nobody"))
        .await
        .expect("a send to a topic nobody created");

    // Earliest on RabbitMQ: from the group's creation.
    client
        .admin()
        .ensure_group(&topic, "late", StartFrom::Earliest)
        .await
        .expect("ensure_group");
    producer
        .send(Message::new(topic.as_str(), "after").with_key("k"))
        .await
        .expect("send");
    let mut stream = client
        .consumer(&topic, "late")
        .start_from(StartFrom::Earliest)
        .subscribe()
        .await
        .expect("subscribe");
    let first = tokio::time::timeout(Duration::from_secs(20), stream.next())
        .await
        .expect("a delivery")
        .expect("open")
        .expect("ok");
    assert_eq!(first.message().payload_str().ok(), Some("after"));
    first.ack().await.expect("ack");
    let more = tokio::time::timeout(Duration::from_millis(500), stream.next()).await;
    assert!(
        more.is_err(),
        "a message published before the group arrived"
    );
    stream.close().await.expect("close");
    let _ = client.driver().delete_topic(&never_created).await;
    client.close().await.expect("close");
}

/// Two clients creating the same new topic at the same moment agree on
/// its shard count, and members of one group starting together all join.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_creating_one_topic_at_once_agree() {
    let (Some(a), Some(b)) = (common::client("").await, common::client("").await) else {
        return;
    };
    let (admin_a, admin_b) = (a.admin(), b.admin());
    for round in 0..5 {
        let topic = common::unique(&format!("race{round}"));
        let (left, right) = tokio::join!(
            admin_a.ensure_topic(&topic, TopicSpec::new(4)),
            admin_b.ensure_topic(&topic, TopicSpec::new(8)),
        );
        left.expect("first ensure_topic");
        right.expect("second ensure_topic");
        let (left, right) = tokio::join!(
            admin_a.ensure_group(&topic, "g", StartFrom::Earliest),
            admin_b.ensure_group(&topic, "g", StartFrom::Earliest),
        );
        left.expect("first ensure_group");
        right.expect("second ensure_group");
        let (left, right) = tokio::join!(admin_a.lag(&topic, "g"), admin_b.lag(&topic, "g"));
        let (left, right) = (left.expect("lag"), right.expect("lag"));
        assert!(matches!(left.len(), 4 | 8), "{} shards", left.len());
        assert_eq!(
            left.len(),
            right.len(),
            "the clients disagree on the shards"
        );
    }
    let topic = common::unique("race-members");
    let members = (0..6).map(|i| {
        let client = if i % 2 == 0 { a.clone() } else { b.clone() };
        let topic = topic.clone();
        async move { client.consumer(&topic, "g").subscribe().await }
    });
    let joined = futures::future::join_all(members).await;
    for (i, member) in joined.into_iter().enumerate() {
        member
            .unwrap_or_else(|e| panic!("member {i} failed to join: {e}"))
            .close()
            .await
            .expect("close");
    }
    a.close().await.expect("close");
    b.close().await.expect("close");
}
