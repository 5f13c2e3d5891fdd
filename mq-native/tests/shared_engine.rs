//! Who may open a data directory: drivers of one process share its
//! engine, which closes with the last of them; a second engine (as another
//! process would open) is refused by the directory lock, naming the holder.

mod support;

use std::time::Duration;

use mq_core::driver::{Driver, DriverSubscription};
use mq_core::{Error, Message, MessageId, TopicSpec};
use mq_native::engine::Engine;
use mq_native::Options;
use support::{fresh_dir, open, sub};

fn msg(topic: &str, body: &str) -> Message {
    Message::new(topic, body.to_owned()).with_id(MessageId::new())
}

async fn bodies(s: &dyn DriverSubscription, n: usize) -> Vec<String> {
    let mut got = Vec::new();
    while got.len() < n {
        let batch = tokio::time::timeout(Duration::from_secs(10), s.fetch(100))
            .await
            .expect("fetch in time")
            .expect("fetch");
        let tokens = batch.iter().map(|d| d.token.clone()).collect();
        got.extend(
            batch
                .iter()
                .map(|d| d.message.payload_str().unwrap().to_owned()),
        );
        s.ack(tokens).await.unwrap();
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_one_sharer_leaves_the_others_working() {
    let dir = fresh_dir("share");
    let first = open(&dir, "").await.expect("first");
    let second = open(&dir, "").await.expect("second shares the engine");
    assert!(std::sync::Arc::ptr_eq(first.engine(), second.engine()));
    first.ensure_topic("t", &TopicSpec::new(1)).await.unwrap();
    first.publish(vec![msg("t", "before")]).await.unwrap();

    first.close().await.unwrap();
    let err = first.publish(vec![msg("t", "x")]).await.unwrap_err();
    assert!(matches!(err, Error::Closed(_)), "{err:?}");
    // The other sharer still sends and reads.
    second.publish(vec![msg("t", "after")]).await.unwrap();
    let s = sub(&second, "t", "g").await;
    assert_eq!(bodies(&*s, 2).await, ["before", "after"]);
    drop(s);

    // A sharer dropped without close gives its share up too.
    let third = open(&dir, "").await.unwrap();
    drop(third);
    second.publish(vec![msg("t", "still")]).await.unwrap();

    second.close().await.unwrap();
    // The last close shut the engine down and released the directory.
    assert!(second.engine().is_closed());
    let engine = Engine::open(Options::new(&dir)).expect("free after the last close");
    engine.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sharer_with_other_settings_is_refused_by_name() {
    let dir = fresh_dir("share-opts");
    let first = open(&dir, "fsync=always").await.unwrap();
    let err = open(&dir, "fsync=never&partitions=2")
        .await
        .expect_err("other settings");
    assert!(
        matches!(&err, Error::Config(m) if m.contains("fsync") && m.contains("partitions")),
        "{err:?}"
    );
    // The refusal took no share: one close closes the engine.
    first.close().await.unwrap();
    assert!(first.engine().is_closed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_engine_is_told_who_holds_the_directory() {
    let dir = fresh_dir("lock");
    let driver = open(&dir, "").await.unwrap();
    // What another process opening the directory runs into.
    let err = Engine::open(Options::new(&dir)).expect_err("locked");
    let text = err.to_string();
    assert!(matches!(err, Error::Connection { .. }), "{err:?}");
    assert!(
        text.contains(&dir.display().to_string())
            && text.contains(&format!("pid {}", std::process::id())),
        "{text}"
    );
    driver.close().await.unwrap();
    open(&dir, "")
        .await
        .expect("free after close")
        .close()
        .await
        .unwrap();
}
