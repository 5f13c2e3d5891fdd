//! Throughput of the RabbitMQ driver next to raw lapin, on one broker in one run.
//!
//! ```text
//! cargo run --release -p mq-rabbit --example rabbit_bench
//! ```
//!
//! Publishes `MQ_BENCH_MESSAGES` (default 50,000) messages of 100 bytes,
//! keyed, in pipelined batches of `MQ_BENCH_BATCH` (default 1,000) with
//! publisher confirms: once with raw lapin (persistent and not mandatory,
//! as the driver publishes, to the same exchange and routing keys the
//! driver uses), once with the SDK's `send_batch`, alternating for
//! `MQ_BENCH_ROUNDS` rounds (default 2). Then
//! an SDK consumer group drains everything (handler + ack) and the
//! consume rate is measured. Uses `MQ_TEST_AMQP_URL` or the local broker;
//! deletes what it declared.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::ShortString;
use lapin::{BasicProperties, Confirmation, Connection, ConnectionProperties};
use mq_core::driver::partition_for_key;
use mq_core::{handler_fn, Client, Config, Delivery, HandlerResult, Message, TopicSpec};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The driver's routing key for `key`: the low 8 bits of the shared key hash
/// as words, lowest first (see the crate docs).
fn routing_key(key: &str) -> ShortString {
    let bits = partition_for_key(key, 256);
    let words: Vec<&str> = (0..8)
        .map(|i| if bits >> i & 1 == 1 { "1" } else { "0" })
        .collect();
    ShortString::from(words.join("."))
}

async fn raw_publish(
    url: &str,
    exchange: &str,
    total: usize,
    batch: usize,
) -> Result<Duration, Box<dyn std::error::Error>> {
    let connection = Connection::connect(url, ConnectionProperties::default()).await?;
    let channel = connection.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let payload = [b'x'; 100];
    let keys: Vec<ShortString> = (0..100).map(|k| routing_key(&format!("k{k}"))).collect();
    let exchange = ShortString::from(exchange);
    let started = Instant::now();
    let mut sent = 0;
    while sent < total {
        let n = batch.min(total - sent);
        let mut confirms = Vec::with_capacity(n);
        for i in sent..sent + n {
            confirms.push(
                channel
                    .basic_publish(
                        exchange.clone(),
                        keys[i % keys.len()].clone(),
                        BasicPublishOptions::default(),
                        &payload,
                        BasicProperties::default().with_delivery_mode(2),
                    )
                    .await?,
            );
        }
        for confirm in confirms {
            match confirm.await? {
                Confirmation::Ack(None) => {}
                other => return Err(format!("unexpected confirm {other:?}").into()),
            }
        }
        sent += n;
    }
    let elapsed = started.elapsed();
    connection.close(200, "done".into()).await?;
    Ok(elapsed)
}

async fn sdk_publish(
    client: &Client,
    topic: &str,
    total: usize,
    batch: usize,
) -> mq_core::Result<Duration> {
    let producer = client.producer();
    let payload = bytes::Bytes::from(vec![b'x'; 100]);
    let started = Instant::now();
    let mut sent = 0;
    while sent < total {
        let n = batch.min(total - sent);
        let messages = (sent..sent + n)
            .map(|i| Message::new(topic, payload.clone()).with_key(format!("k{}", i % 100)))
            .collect();
        producer.send_batch(messages).await?;
        sent += n;
    }
    Ok(started.elapsed())
}

fn rate(count: usize, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64()
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let total = env("MQ_BENCH_MESSAGES", 50_000);
    let batch = env("MQ_BENCH_BATCH", 1_000).max(1);
    let rounds = env("MQ_BENCH_ROUNDS", 2).max(1);
    let url = std::env::var("MQ_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned());
    let config = Config::from_url(&url)?.with_option("delete_on_close", "true");
    let client = Client::new(mq_rabbit::RabbitDriver::connect(&config).await?);
    let id = uuid::Uuid::now_v7().simple().to_string();
    let topic = format!("bench-{}", &id[id.len() - 8..]);
    let group = "bench";
    client
        .admin()
        .ensure_topic(&topic, TopicSpec::new(4))
        .await?;
    // Create the group (its shard queues) before publishing.
    client
        .consumer(&topic, group)
        .subscribe()
        .await?
        .close()
        .await?;

    println!(
        "rabbit_bench: {total} messages of 100 bytes per run, batches of {batch}, {rounds} rounds"
    );
    println!();
    println!("| round | raw lapin publish+confirm msgs/s | SDK send_batch msgs/s | SDK / raw |");
    println!("|---|---|---|---|");
    let (mut raw_total, mut sdk_total) = (Duration::ZERO, Duration::ZERO);
    for round in 1..=rounds {
        let raw = raw_publish(&url, &format!("mq/{topic}"), total, batch).await?;
        let sdk = sdk_publish(&client, &topic, total, batch).await?;
        raw_total += raw;
        sdk_total += sdk;
        println!(
            "| {round} | {:.0} | {:.0} | {:.0}% |",
            rate(total, raw),
            rate(total, sdk),
            100.0 * raw.as_secs_f64() / sdk.as_secs_f64()
        );
    }
    let published = total * rounds;
    println!(
        "| all | {:.0} | {:.0} | {:.0}% |",
        rate(published, raw_total),
        rate(published, sdk_total),
        100.0 * raw_total.as_secs_f64() / sdk_total.as_secs_f64()
    );

    // Drain the backlog (raw and SDK messages) with the SDK consumer.
    let backlog = 2 * published;
    let handled = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let consumer = {
        let handled = handled.clone();
        client
            .consumer(&topic, group)
            .concurrency(16)
            .prefetch(2_000)
            .run(handler_fn(move |_d: Delivery| {
                let handled = handled.clone();
                async move {
                    handled.fetch_add(1, Ordering::Relaxed);
                    HandlerResult::Ok(())
                }
            }))
            .await?
    };
    let deadline = Instant::now() + Duration::from_secs(300);
    while handled.load(Ordering::Relaxed) < backlog && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let consumed = handled.load(Ordering::Relaxed);
    let elapsed = started.elapsed();
    consumer.shutdown().await?;
    println!();
    println!("| consume + ack (SDK, 1 member, 4 shards, concurrency 16) | msgs/s |");
    println!("|---|---|");
    println!(
        "| {consumed} of {backlog} messages in {elapsed:.2?} | {:.0} |",
        rate(consumed, elapsed)
    );
    client.close().await?;
    Ok(())
}
