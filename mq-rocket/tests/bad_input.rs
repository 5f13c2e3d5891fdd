//! Bad input against the real broker: an unreachable name server, an
//! oversized body, names RocketMQ cannot hold, unknown options
//! (`MQ_TEST_ROCKETMQ_URL`).

mod support;

use std::time::{Duration, Instant};

use mq_core::{Config, Error, Message};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_name_server_is_a_timely_connection_error() {
    // A port nothing listens on (bound, then released).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    let url = format!("rocketmq://127.0.0.1:{port}?connect_timeout=2s");
    let started = Instant::now();
    let err = mq_rocket::RocketDriver::connect(&Config::from_url(&url).unwrap())
        .await
        .expect_err("nothing listens there");
    let took = started.elapsed();
    assert!(matches!(err, Error::Connection { .. }), "{err:?}");
    assert!(
        err.to_string().contains(&format!("127.0.0.1:{port}")),
        "{err}"
    );
    assert!(took < Duration::from_secs(8), "took {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_and_close_promptly() {
    let started = Instant::now();
    let Some(client) = support::client().await else {
        return;
    };
    let connected = started.elapsed();
    client.close().await.expect("close");
    let closed = started.elapsed() - connected;
    eprintln!("connect {connected:?}, close {closed:?}");
    assert!(
        connected < Duration::from_secs(5),
        "connect took {connected:?}"
    );
    assert!(closed < Duration::from_secs(5), "close took {closed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_over_four_mib_is_too_large() {
    let Some(client) = support::client().await else {
        return;
    };
    assert_eq!(client.capabilities().max_message_bytes, 4 * 1024 * 1024);
    let topic = support::unique("big");
    let err = client
        .producer()
        .send(Message::new(topic.as_str(), vec![7u8; 4 * 1024 * 1024 + 1]))
        .await
        .expect_err("over the limit");
    assert!(
        matches!(err, Error::TooLarge { limit, .. } if limit == 4 * 1024 * 1024),
        "{err:?}"
    );
    // Just under the limit is taken (payload plus mq's few properties).
    let receipt = client
        .producer()
        .send(Message::new(
            topic.as_str(),
            vec![7u8; 4 * 1024 * 1024 - 4096],
        ))
        .await
        .expect("just under the limit");
    assert_eq!(receipt.topic.as_ref(), topic.as_str());
    let _ = client.driver().delete_topic(&topic).await;
    client.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_rocketmq_cannot_hold_are_refused_by_name() {
    let Some(client) = support::client().await else {
        return;
    };
    let long = "t".repeat(128);
    let err = client
        .producer()
        .send(Message::new(long.as_str(), "x"))
        .await
        .expect_err("too long for RocketMQ");
    assert!(
        matches!(err, Error::Invalid { field: "topic", ref value, .. } if value.starts_with("ttt")),
        "{err:?}"
    );
    // A dotted mq name is stored under RocketMQ's rules and read back as given.
    let dotted = format!("{}.created", support::unique("orders"));
    let receipt = client
        .producer()
        .send(Message::new(dotted.as_str(), "x"))
        .await
        .expect("dotted topic");
    assert_eq!(receipt.topic.as_ref(), dotted.as_str());
    let topics = client.admin().topics().await.expect("list");
    assert!(
        topics.iter().any(|t| t.name == dotted),
        "{dotted} not listed"
    );
    let _ = client.driver().delete_topic(&dotted).await;
    client.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_options_are_config_errors_naming_them() {
    for (url, needle) in [
        ("rocketmq://127.0.0.1:9876?bogus=1", "bogus"),
        (
            "rocketmq://127.0.0.1:9876?max_message_bytes=99999999",
            "max_message_bytes",
        ),
        ("rocketmq://127.0.0.1", "port"),
    ] {
        let err = mq_rocket::RocketDriver::connect(&Config::from_url(url).unwrap())
            .await
            .expect_err(url);
        assert!(matches!(err, Error::Config(_)), "{url}: {err:?}");
        assert!(err.to_string().contains(needle), "{url}: {err}");
    }
}
