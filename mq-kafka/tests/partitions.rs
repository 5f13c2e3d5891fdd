//! Growing a topic's partitions (`Admin::grow_partitions`, the backlog
//! remedy): the broker gets them, and another client's sends use them once
//! its partition count is older than `metadata_max_age`.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use mq_core::{Error, Message, TopicSpec};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_grow_and_other_clients_use_them() {
    let Some(admin_client) = support::client().await else {
        return;
    };
    let topic = support::unique("grow");
    let admin = admin_client.admin();
    admin
        .ensure_topic(&topic, TopicSpec::new(2))
        .await
        .expect("create");
    let sender = support::client_with("metadata_max_age=1s").await;
    let send_all = |client: &mq_core::Client| {
        let client = client.clone();
        let topic = topic.clone();
        async move {
            let mut used = BTreeSet::new();
            for i in 0..64 {
                let receipt = client
                    .producer()
                    .send(Message::new(topic.as_str(), "x").with_key(format!("k{i}")))
                    .await
                    .expect("send");
                used.insert(receipt.partition);
            }
            used
        }
    };
    assert_eq!(send_all(&sender).await, BTreeSet::from([0, 1]));

    let shrink = admin.grow_partitions(&topic, 1).await;
    assert!(
        matches!(
            shrink,
            Err(Error::Invalid {
                field: "partitions",
                ..
            })
        ),
        "{shrink:?}"
    );
    admin.grow_partitions(&topic, 4).await.expect("grow");
    let listed = admin.topics().await.expect("topics");
    assert!(
        listed.iter().any(|t| t.name == topic && t.partitions == 4),
        "{listed:?}"
    );
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    assert_eq!(send_all(&sender).await, BTreeSet::from([0, 1, 2, 3]));

    let _ = admin.delete_topic(&topic).await;
    sender.close().await.expect("close");
    admin_client.close().await.expect("close");
}
