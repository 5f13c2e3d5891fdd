//! The admin operations on RabbitMQ: only a reset to the end (a purge);
//! the rest is refused as unsupported, never approximated.

mod common;

use mq_core::driver::{BrowseFrom, BrowseSpec, ResetTo};
use mq_core::{Error, Message, StartFrom, TopicSpec};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_reset_to_the_end_is_supported() {
    let Some(client) = common::client("").await else {
        return;
    };
    let admin = client.admin();
    let topic = common::unique("admin");
    admin
        .ensure_topic(&topic, TopicSpec::new(2))
        .await
        .expect("ensure_topic");
    admin
        .ensure_group(&topic, "g", StartFrom::Earliest)
        .await
        .expect("ensure_group");
    let producer = client.producer();
    let send = |body: &'static str| producer.send(Message::new(topic.as_str(), body));
    for body in ["a", "b", "c"] {
        send(body).await.expect("send");
    }

    for to in [
        ResetTo::Earliest,
        ResetTo::Time(std::time::SystemTime::now()),
    ] {
        let refused = admin.reset_group(&topic, "g", to).await;
        assert!(
            matches!(refused, Err(Error::Unsupported { .. })),
            "{to:?}: {refused:?}"
        );
    }
    assert_eq!(admin.total_lag(&topic, "g").await.expect("lag"), 3);
    let browse = admin
        .browse(&topic, BrowseSpec::new(0, BrowseFrom::Last(1), 1))
        .await;
    assert!(
        matches!(browse, Err(Error::Unsupported { .. })),
        "{browse:?}"
    );
    let listed = admin.topics().await;
    assert!(
        matches!(listed, Err(Error::Unsupported { .. })),
        "{listed:?}"
    );

    admin
        .reset_group(&topic, "g", ResetTo::Latest)
        .await
        .expect("reset to latest");
    assert_eq!(admin.total_lag(&topic, "g").await.expect("lag"), 0);
    // A group reset before it exists is created at the end: it keeps
    // what is published next.
    admin
        .reset_group(&topic, "fresh", ResetTo::Latest)
        .await
        .expect("reset a new group");
    send("d").await.expect("send");
    assert_eq!(admin.total_lag(&topic, "fresh").await.expect("lag"), 1);
    assert_eq!(admin.total_lag(&topic, "g").await.expect("lag"), 1);

    let missing = admin
        .reset_group(&common::unique("missing"), "g", ResetTo::Latest)
        .await;
    assert!(matches!(missing, Err(Error::Invalid { .. })), "{missing:?}");
    client.close().await.expect("close");
}
