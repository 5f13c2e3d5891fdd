//! SDK against the raw rocketmq-client-rust on the same workload, in the
//! same run: `cargo run --release -p mq-rocket --example rocket_bench
//! [-- URL MESSAGES BYTES]` (defaults `rocketmq://127.0.0.1:9876`, 100000, 100).
//!
//! - publish: `Producer::send_batch` (batches of 1000, keyed over 1024 keys)
//!   against a raw `DefaultMQProducer` sending the same batches split per
//!   queue by the same key hash, one `send_batch_to_queue` per queue,
//!   concurrently;
//! - consume: a consumer with a handler acking each message against a raw
//!   push consumer with the same orderly listener settings (batches of 32,
//!   `Success` at once), each reading a topic holding the messages from
//!   the start, timed from the first message on (the group join and queue
//!   locks are the broker's, the same for both; printed apart).

#![recursion_limit = "512"]

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mq_core::{handler_fn, Client, Config, Delivery, HandlerResult, Message, TopicSpec};
use rocketmq_client_rust::{
    ClientRuntime, ClientRuntimeConfig, ConsumeOrderlyContext, ConsumeOrderlyStatus,
    DefaultMQProducer, DefaultMQPushConsumer, MQPushConsumer, MessageQuery, ProducerQueryRequest,
    ProducerQueryResponse, TelemetryHandle,
};
use rocketmq_model::common::consumer::consume_from_where::ConsumeFromWhere;
use rocketmq_model::common::message::message_ext::MessageExt;
use rocketmq_model::common::message::message_single::Message as RocketMessage;
use rocketmq_runtime::{RuntimeConfig, RuntimeOwner};

const QUEUES: u32 = 4;

#[tokio::main]
async fn main() -> mq_core::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let url = args
        .get(1)
        .cloned()
        .unwrap_or_else(|| "rocketmq://127.0.0.1:9876".into());
    let n: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let bytes: usize = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(100);
    let config = Config::from_url(&url)?;
    let namesrv = config.hosts().join(";");
    let client = Client::new(mq_rocket::RocketDriver::connect(&config).await?);
    let run = uuid::Uuid::now_v7().simple().to_string();
    let (sdk_topic, raw_topic) = (format!("bench-sdk-{run}"), format!("bench-raw-{run}"));
    for t in [&sdk_topic, &raw_topic] {
        client
            .admin()
            .ensure_topic(t, TopicSpec::new(QUEUES))
            .await?;
    }
    let payload = vec![b'x'; bytes];
    let mut raw = Raw::start(&namesrv).await;

    // Warm-up: routes, connections and the runtimes' threads, for both.
    sdk_publish(&client, &sdk_topic, 2000, &payload).await?;
    raw.publish(&raw_topic, 2000, &payload).await;
    let sdk_send = sdk_publish(&client, &sdk_topic, n, &payload).await?;
    let raw_send = raw.publish(&raw_topic, n, &payload).await;
    let (sdk_join, sdk_recv) = sdk_consume(&client, &sdk_topic, n + 2000).await?;
    let (raw_join, raw_recv) = raw.consume(&raw_topic, n + 2000).await;

    println!("\nrocketmq bench: {n} messages of {bytes} bytes, {QUEUES} queues, {url}\n");
    println!("| workload | SDK msg/s | raw client msg/s | SDK / raw |");
    println!("|---|---:|---:|---:|");
    for (name, count, sdk, raw) in [
        (
            "publish (send_batch vs send_batch_to_queue)",
            n,
            sdk_send,
            raw_send,
        ),
        (
            "consume + ack (consumer vs orderly push consumer)",
            n + 2000,
            sdk_recv,
            raw_recv,
        ),
    ] {
        let (s, r) = (
            count as f64 / sdk.as_secs_f64(),
            count as f64 / raw.as_secs_f64(),
        );
        println!("| {name} | {s:.0} | {r:.0} | {:.0}% |", 100.0 * s / r);
    }
    println!("\nfirst message after subscribing: SDK {sdk_join:?}, raw {raw_join:?}");
    for t in [&sdk_topic, &raw_topic] {
        let _ = client.admin().delete_topic(t).await;
    }
    raw.shutdown().await;
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

/// Time to the first message, then time from it to the last.
async fn sdk_consume(
    client: &Client,
    topic: &str,
    n: usize,
) -> mq_core::Result<(Duration, Duration)> {
    let group = format!("bench-sdk-{}", uuid::Uuid::now_v7().simple());
    let count = Arc::new(AtomicUsize::new(0));
    let first = Arc::new(parking_lot::Mutex::new(None::<Instant>));
    let (c, f) = (count.clone(), first.clone());
    let subscribed = Instant::now();
    let consumer = client
        .consumer(topic, &group)
        .concurrency(64)
        .prefetch(1024)
        .run(handler_fn(move |_d: Delivery| {
            let (c, f) = (c.clone(), f.clone());
            async move {
                f.lock().get_or_insert_with(Instant::now);
                c.fetch_add(1, Ordering::Relaxed);
                HandlerResult::Ok(())
            }
        }))
        .await?;
    while count.load(Ordering::Relaxed) < n {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let done = Instant::now();
    consumer.shutdown().await?;
    let first = first.lock().unwrap_or(done);
    Ok((first - subscribed, done - first))
}

/// The raw client: its own runtime, producer and consumers.
struct Raw {
    owner: RuntimeOwner,
    runtime: Arc<ClientRuntime>,
    producer: DefaultMQProducer,
    namesrv: String,
}

impl Raw {
    async fn start(namesrv: &str) -> Raw {
        let mut config = RuntimeConfig::for_parallelism("raw-bench", 2);
        config.max_blocking_threads = 128;
        config.blocking_lane_policies.metadata_io.max_concurrency = 64;
        config.blocking_lane_policies.metadata_io.max_queue_depth = 4096;
        let owner = RuntimeOwner::plan(config)
            .expect("profile")
            .build()
            .expect("runtime");
        let runtime = ClientRuntime::try_new(
            owner.root_context().component("client"),
            ClientRuntimeConfig::default(),
            TelemetryHandle::default(),
        )
        .expect("client runtime");
        let mut producer = DefaultMQProducer::builder(runtime.clone())
            .producer_group(format!("raw-bench-{}", uuid::Uuid::now_v7().simple()))
            .name_server_addr(namesrv.to_owned())
            .build();
        producer.start().await.expect("raw producer");
        Raw {
            owner,
            runtime,
            producer,
            namesrv: namesrv.to_owned(),
        }
    }

    async fn publish(&mut self, topic: &str, n: usize, payload: &[u8]) -> Duration {
        let request = ProducerQueryRequest::FetchPublishQueues {
            topic: topic.to_owned(),
        };
        let Ok(ProducerQueryResponse::Queues(mut queues)) = self.producer.query(request).await
        else {
            panic!("no route for {topic}");
        };
        // The driver's partition order: broker name, then queue id.
        queues.sort_by(|a, b| {
            (a.broker_name().as_str(), a.queue_id()).cmp(&(b.broker_name().as_str(), b.queue_id()))
        });
        let started = Instant::now();
        for start in (0..n).step_by(1000) {
            let mut parts: HashMap<u32, Vec<RocketMessage>> = HashMap::new();
            for i in start..(start + 1000).min(n) {
                let q =
                    mq_rocket::partition_for_key(&format!("key-{}", i % 1024), queues.len() as u32);
                let m = RocketMessage::builder()
                    .topic(topic)
                    .body(payload.to_vec())
                    .build_unchecked();
                parts.entry(q).or_default().push(m);
            }
            let sends = parts.into_iter().map(|(q, msgs)| {
                self.producer.send_batch_to_queue_with_timeout(
                    msgs,
                    queues[q as usize].clone(),
                    10_000,
                )
            });
            for r in futures::future::join_all(sends).await {
                r.expect("raw batch send");
            }
        }
        started.elapsed()
    }

    async fn consume(&self, topic: &str, n: usize) -> (Duration, Duration) {
        let count = Arc::new(AtomicUsize::new(0));
        let first = Arc::new(parking_lot::Mutex::new(None::<Instant>));
        let (c, f) = (count.clone(), first.clone());
        let subscribed = Instant::now();
        let mut consumer = DefaultMQPushConsumer::builder(self.runtime.clone())
            .consumer_group(format!("raw-bench-{}", uuid::Uuid::now_v7().simple()))
            .name_server_addr(self.namesrv.clone())
            .consume_from_where(ConsumeFromWhere::ConsumeFromFirstOffset)
            .consume_message_batch_max_size(32)
            .consume_thread_min(64)
            .consume_thread_max(64)
            .build();
        consumer.subscribe(topic, "*").await.expect("raw subscribe");
        consumer.register_message_listener_orderly(
            move |msgs: &[&MessageExt], _ctx: &mut ConsumeOrderlyContext| {
                f.lock().get_or_insert_with(Instant::now);
                c.fetch_add(msgs.len(), Ordering::Relaxed);
                Ok(ConsumeOrderlyStatus::Success)
            },
        );
        consumer.start().await.expect("raw consumer");
        while count.load(Ordering::Relaxed) < n {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let done = Instant::now();
        consumer.shutdown().await;
        let first = first.lock().unwrap_or(done);
        (first - subscribed, done - first)
    }

    async fn shutdown(mut self) {
        self.producer.shutdown().await;
        let _ = self.runtime.shutdown().await;
        let _ = self.owner.shutdown_background();
    }
}
