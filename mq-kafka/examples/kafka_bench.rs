//! SDK against raw rdkafka on the same workload, in the same run:
//! `cargo run --release -p mq-kafka --example kafka_bench [-- URL MESSAGES BYTES]`
//! (defaults `kafka://127.0.0.1:9092`, 200000, 100).
//!
//! - publish: `Producer::send_batch` (batches of 1000, keyed) against a raw
//!   `BaseProducer` with the same settings (idempotent, acks=all,
//!   linger 5 ms), each waiting for every delivery report;
//! - consume: a consumer with a handler acking each message against a raw
//!   `StreamConsumer` reading as fast as it can, both from the earliest
//!   offset of the topic the SDK published (the same records, headers
//!   included), each in a group of its own, timed from the first message
//!   on (the group join is the broker's, the same for both; it is
//!   printed apart).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mq_core::{handler_fn, Client, Config, Delivery, HandlerResult, Message, TopicSpec};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::ClientConfig;

#[tokio::main]
async fn main() -> mq_core::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let url = args
        .get(1)
        .cloned()
        .unwrap_or_else(|| "kafka://127.0.0.1:9092".into());
    let n: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(200_000);
    let bytes: usize = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(100);
    let config = Config::from_url(&url)?;
    let bootstrap = config.hosts().join(",");
    let client = Client::new(mq_kafka::KafkaDriver::connect(&config).await?);
    let run = uuid::Uuid::now_v7().simple().to_string();
    let (sdk_topic, raw_topic) = (format!("bench-sdk-{run}"), format!("bench-raw-{run}"));
    for t in [&sdk_topic, &raw_topic] {
        client.admin().ensure_topic(t, TopicSpec::new(4)).await?;
    }
    let payload = vec![b'x'; bytes];

    let sdk_send = sdk_publish(&client, &sdk_topic, n, &payload).await?;
    let raw_send = raw_publish(&bootstrap, &raw_topic, n, &payload);
    let sdk_recv = sdk_consume(&client, &sdk_topic, n).await?;
    let raw_recv = raw_consume(&bootstrap, &sdk_topic, n).await;

    println!("\nkafka bench: {n} messages of {bytes} bytes, {url}\n");
    println!("| workload | SDK msg/s | raw rdkafka msg/s | SDK / raw |");
    println!("|---|---:|---:|---:|");
    for (name, sdk, raw) in [
        ("publish (send_batch vs BaseProducer)", sdk_send, raw_send),
        (
            "consume + ack (consumer vs StreamConsumer)",
            sdk_recv,
            raw_recv,
        ),
    ] {
        let (s, r) = (n as f64 / sdk.as_secs_f64(), n as f64 / raw.as_secs_f64());
        println!("| {name} | {s:.0} | {r:.0} | {:.0}% |", 100.0 * s / r);
    }
    for t in [&sdk_topic, &raw_topic] {
        let _ = client.admin().delete_topic(t).await;
    }
    client.close().await
}

async fn sdk_publish(
    client: &Client,
    topic: &str,
    n: usize,
    payload: &[u8],
) -> mq_core::Result<Duration> {
    let producer = client.producer();
    let started = Instant::now();
    for start in (0..n).step_by(1000) {
        let batch = (start..(start + 1000).min(n))
            .map(|i| Message::new(topic, payload.to_vec()).with_key(format!("key-{}", i % 1024)))
            .collect();
        producer.send_batch(batch).await?;
    }
    Ok(started.elapsed())
}

fn raw_publish(bootstrap: &str, topic: &str, n: usize, payload: &[u8]) -> Duration {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("partitioner", "murmur2_random")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .expect("raw producer");
    let started = Instant::now();
    for start in (0..n).step_by(1000) {
        for i in start..(start + 1000).min(n) {
            let key = format!("key-{}", i % 1024);
            let mut record = BaseRecord::<str, [u8]>::to(topic)
                .key(&key)
                .payload(payload);
            while let Err((_, back)) = producer.send(record) {
                record = back;
                producer.poll(Duration::from_millis(1));
            }
        }
        // Like send_batch: the batch's delivery reports before the next.
        while producer.in_flight_count() > 0 {
            producer.poll(Duration::from_millis(1));
        }
    }
    started.elapsed()
}

async fn sdk_consume(client: &Client, topic: &str, n: usize) -> mq_core::Result<Duration> {
    let count = Arc::new(AtomicUsize::new(0));
    let counter = count.clone();
    let joining = Instant::now();
    let consumer = client
        .consumer(topic, format!("{topic}-g"))
        .concurrency(64)
        .prefetch(4096)
        .run(handler_fn(move |_d: Delivery| {
            let counter = counter.clone();
            async move {
                counter.fetch_add(1, Ordering::Relaxed);
                HandlerResult::Ok(())
            }
        }))
        .await?;
    while count.load(Ordering::Relaxed) == 0 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let started = Instant::now();
    println!(
        "SDK consumer: first message {:?} after starting",
        joining.elapsed()
    );
    while count.load(Ordering::Relaxed) < n {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let elapsed = started.elapsed();
    consumer.shutdown().await?;
    Ok(elapsed)
}

async fn raw_consume(bootstrap: &str, topic: &str, n: usize) -> Duration {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("{topic}-raw-g"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "true")
        .create()
        .expect("raw consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    let joining = Instant::now();
    consumer.recv().await.expect("record");
    println!(
        "raw consumer: first message {:?} after starting",
        joining.elapsed()
    );
    let started = Instant::now();
    for _ in 1..n {
        consumer.recv().await.expect("record");
    }
    started.elapsed()
}
