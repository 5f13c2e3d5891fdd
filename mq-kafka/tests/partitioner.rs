//! mq's key → partition mapping is the one the broker stores, and the one
//! a plain Kafka client with the Java client's partitioner (librdkafka
//! `murmur2_random`) picks.

mod support;

use std::time::Duration;

use mq_core::{Message, TopicSpec};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::ClientConfig;
use rdkafka::Message as _;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mq_mapping_equals_what_the_broker_stores() {
    let Some(client) = support::client().await else {
        return;
    };
    let topic = support::unique("partitioner");
    let partitions = 12;
    client
        .admin()
        .ensure_topic(&topic, TopicSpec::new(partitions))
        .await
        .unwrap();
    let keys: Vec<String> = (0..200).map(|i| format!("customer-{i}")).collect();
    let receipts = client
        .producer()
        .send_batch(
            keys.iter()
                .map(|k| Message::new(topic.as_str(), "x").with_key(k.as_str()))
                .collect(),
        )
        .await
        .unwrap();

    // What a Java-compatible client stores for the same keys.
    let raw: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", support::bootstrap())
        .set("partitioner", "murmur2_random")
        .create()
        .unwrap();
    let consumer: rdkafka::consumer::BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", support::bootstrap())
        .set("group.id", support::unique("partitioner"))
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    for key in &keys {
        raw.send(BaseRecord::<str, str>::to(&topic).key(key).payload("raw"))
            .map_err(|(e, _)| e)
            .unwrap();
    }
    raw.flush(Duration::from_secs(10)).unwrap();
    rdkafka::consumer::Consumer::subscribe(&consumer, &[topic.as_str()]).unwrap();
    let mut stored = std::collections::HashMap::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while stored.len() < 2 * keys.len() && std::time::Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            let key = String::from_utf8(m.key().unwrap().to_vec()).unwrap();
            let raw = m.payload() == Some(b"raw");
            stored.insert((key, raw), m.partition() as u32);
        }
    }
    assert_eq!(
        stored.len(),
        2 * keys.len(),
        "not every record was read back"
    );
    for (key, receipt) in keys.iter().zip(&receipts) {
        let mapped = mq_core::driver::partition_for_key(key, partitions);
        assert_eq!(mq_kafka::partition_for_key(key, partitions), mapped);
        assert_eq!(receipt.partition, mapped, "{key}: receipt");
        assert_eq!(stored[&(key.clone(), false)], mapped, "{key}: stored by mq");
        assert_eq!(
            stored[&(key.clone(), true)],
            mapped,
            "{key}: stored by a plain client"
        );
    }
    let _ = client.admin().delete_topic(&topic).await;
    client.close().await.unwrap();
}
