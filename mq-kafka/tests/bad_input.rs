//! Bad input gets a clear, timely error naming it; foreign records are
//! read, never a panic.

mod support;

use std::time::{Duration, Instant};

use futures::StreamExt;
use mq_core::{Config, Error, Message};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::ClientConfig;

#[tokio::test]
async fn unreachable_bootstrap_is_a_timely_connection_error_naming_it() {
    let config = Config::from_url("kafka://127.0.0.1:1,127.0.0.1:2?connect_timeout=2s").unwrap();
    let started = Instant::now();
    let err = mq_kafka::KafkaDriver::connect(&config).await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    assert!(matches!(err, Error::Connection { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("127.0.0.1:1,127.0.0.1:2"), "{text}");
}

#[tokio::test]
async fn unknown_options_and_secrets() {
    for url in [
        "kafka://127.0.0.1:9092?partitons=3",
        "kafka://127.0.0.1:9092?kafka.group.id=mine",
        "kafka://127.0.0.1:9092?assignment=sticky",
    ] {
        let err = mq_kafka::KafkaDriver::connect(&Config::from_url(url).unwrap())
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Config(_)), "{url}: {err:?}");
    }
    let err = mq_kafka::KafkaDriver::connect(
        &Config::from_url(
            "kafka://127.0.0.1:9092?kafka.sasl.password=hunter2&kafka.bogus.property=1",
        )
        .unwrap(),
    )
    .await
    .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("bogus.property") && !text.contains("hunter2"),
        "{text}"
    );
}

#[tokio::test]
async fn over_long_and_bad_names_are_refused() {
    let Some(client) = support::client().await else {
        return;
    };
    let producer = client.producer();
    for topic in ["x".repeat(250), "bad topic".to_owned(), "a/b".to_owned()] {
        let err = producer
            .send(Message::new(topic.as_str(), "x"))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Invalid { .. }), "{topic}: {err:?}");
    }
    // Internal names built from long user names stay within Kafka's rules.
    let names = &client.capabilities().names;
    let retry = names.internal("retry", &[&"g".repeat(100), &"t".repeat(200)]);
    assert!(retry.len() <= 249 && names.accepts(&retry), "{retry}");
    client.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_records_with_non_utf8_key_and_headers_are_read() {
    let Some(client) = support::client().await else {
        return;
    };
    let topic = support::unique("foreign");
    client
        .admin()
        .ensure_topic(&topic, mq_core::TopicSpec::new(1))
        .await
        .unwrap();
    let raw: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", support::bootstrap())
        .create()
        .unwrap();
    let headers = OwnedHeaders::new()
        .insert(Header {
            key: "plain",
            value: Some(&b"ok"[..]),
        })
        .insert(Header {
            key: "binary",
            value: Some(&[0xffu8, 0xfe][..]),
        })
        .insert::<[u8]>(Header {
            key: "null",
            value: None,
        });
    raw.send(
        BaseRecord::<[u8], [u8]>::to(&topic)
            .key(&[0x66, 0xff][..])
            .payload(&[1u8, 2, 3][..])
            .headers(headers),
    )
    .map_err(|(e, _)| e)
    .unwrap();
    raw.flush(Duration::from_secs(10)).unwrap();

    let mut sub = client
        .consumer(&topic, support::unique("foreign"))
        .subscribe()
        .await
        .unwrap();
    let d = tokio::time::timeout(Duration::from_secs(20), sub.next())
        .await
        .expect("the foreign record arrives")
        .unwrap()
        .unwrap();
    let m = d.message();
    assert_eq!(m.key(), Some("f\u{fffd}"));
    assert_eq!(&m.payload()[..], &[1, 2, 3]);
    assert_eq!(m.headers().get("plain"), Some("ok"));
    assert_eq!(m.headers().get("binary"), Some("\u{fffd}\u{fffd}"));
    assert_eq!(m.headers().get("null"), Some(""));
    assert!(m.id().is_some(), "a stable id is derived");
    d.ack().await.unwrap();
    sub.close().await.unwrap();
    let _ = client.admin().delete_topic(&topic).await;
    client.close().await.unwrap();
}
