//! Throughput of the consumer runtime on the memory driver: N keyed 100-byte
//! messages are published, then read by three fresh groups: straight from
//! the driver (fetch + ack, the floor), through a handler per message and
//! through a batch handler. The broker is in memory, so the gap between the
//! driver row and the others is mq's own overhead: the per-key ordering
//! executor, settling and ack batching.
//!
//! ```text
//! cargo run --release --example runtime_bench -- [messages] [keys] [concurrency]
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use mq::driver::{Driver, SubscribeSpec};
use mq::memory::MemoryDriver;
use mq::{
    batch_handler_fn, handler_fn, BatchOptions, Client, ConsumerBuilder, Delivery, HandlerResult,
    Message, TopicSpec,
};

/// Both the driver row's fetch size and the runtime rows' prefetch.
const PREFETCH: usize = 4096;
/// Messages per batch of the batch handler row.
const BATCH: usize = 256;

fn arg(n: usize, default: u64) -> u64 {
    std::env::args()
        .nth(n)
        .and_then(|a| a.parse().ok())
        .unwrap_or(default)
}

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Reads `total` messages with a fresh group straight from the driver.
async fn driver_fetch_ack(driver: &MemoryDriver, total: u64) -> mq::Result<f64> {
    let sub = driver
        .subscribe(SubscribeSpec::new(vec!["bench".into()], "bench-driver").with_prefetch(PREFETCH))
        .await?;
    let start = Instant::now();
    let mut got = 0u64;
    while got < total {
        let batch = sub.fetch(PREFETCH).await?;
        got += batch.len() as u64;
        sub.ack(batch.into_iter().map(|d| d.token).collect())
            .await?;
    }
    let rate = got as f64 / start.elapsed().as_secs_f64();
    sub.close().await?;
    Ok(rate)
}

/// Counts handled messages and says when `total` were.
struct Tally {
    count: AtomicU64,
    total: u64,
    done: tokio::sync::Notify,
}

impl Tally {
    fn add(&self, n: u64) {
        if self.count.fetch_add(n, Ordering::Relaxed) + n == self.total {
            self.done.notify_one();
        }
    }
}

/// Runs a fresh group through `start` until `total` messages were handled
/// and it shut down, so the last acks are in.
async fn through_runtime<F, Fut>(
    client: &Client,
    group: &str,
    total: u64,
    start: F,
) -> mq::Result<f64>
where
    F: FnOnce(ConsumerBuilder, Arc<Tally>) -> Fut,
    Fut: std::future::Future<Output = mq::Result<mq::ConsumerHandle>>,
{
    let tally = Arc::new(Tally {
        count: AtomicU64::new(0),
        total,
        done: tokio::sync::Notify::new(),
    });
    let began = Instant::now();
    let builder = client.consumer("bench", group).prefetch(PREFETCH);
    let consumer = start(builder, tally.clone()).await?;
    tally.done.notified().await;
    consumer.shutdown().await?;
    Ok(total as f64 / began.elapsed().as_secs_f64())
}

#[tokio::main]
async fn main() -> mq::Result<()> {
    let messages = arg(1, 1_000_000);
    let keys = arg(2, 1_000);
    let concurrency = arg(3, 64) as usize;

    let driver = MemoryDriver::new();
    let client = Client::new(driver.clone());
    client
        .admin()
        .ensure_topic("bench", TopicSpec::new(8))
        .await?;
    for group in ["bench-driver", "bench-handler", "bench-batch"] {
        client
            .admin()
            .ensure_group("bench", group, mq::StartFrom::Earliest)
            .await?;
    }

    let payload = mq::Bytes::from(vec![b'x'; 100]);
    let key_names: Vec<Arc<str>> = (0..keys).map(|k| Arc::from(format!("key-{k}"))).collect();
    let producer = client.producer();
    let start = Instant::now();
    let mut sent = 0u64;
    while sent < messages {
        let n = 1_000.min(messages - sent);
        let batch: Vec<Message> = (sent..sent + n)
            .map(|i| {
                Message::new("bench", payload.clone())
                    .with_key(key_names[(i % keys) as usize].clone())
            })
            .collect();
        producer.send_batch(batch).await?;
        sent += n;
    }
    let published = messages as f64 / start.elapsed().as_secs_f64();

    let raw = driver_fetch_ack(&driver, messages).await?;
    let handler = through_runtime(&client, "bench-handler", messages, |builder, tally| {
        builder
            .concurrency(concurrency)
            .run(handler_fn(move |_d: Delivery| {
                let tally = tally.clone();
                async move {
                    tally.add(1);
                    HandlerResult::Ok(())
                }
            }))
    })
    .await?;
    let batch = through_runtime(&client, "bench-batch", messages, |builder, tally| {
        builder.concurrency(concurrency).run_batch(
            batch_handler_fn(move |batch: Vec<Delivery>| {
                let tally = tally.clone();
                async move {
                    tally.add(batch.len() as u64);
                    HandlerResult::Ok(())
                }
            }),
            BatchOptions::new(BATCH),
        )
    })
    .await?;

    println!(
        "{messages} messages of 100 bytes over {keys} keys, 8 partitions, prefetch {PREFETCH}"
    );
    println!();
    println!("| measurement | msgs/s | of the driver row |");
    println!("|---|---:|---:|");
    println!("| publish, send_batch(1000) | {published:.0} | |");
    println!("| driver fetch({PREFETCH}) + ack | {raw:.0} | 1.00 |");
    println!(
        "| handler, concurrency {concurrency} | {handler:.0} | {:.2} (target 0.70) |",
        handler / raw
    );
    println!(
        "| batch handler (up to {BATCH}), concurrency {concurrency} | {batch:.0} | {:.2} (target 0.90) |",
        batch / raw
    );
    println!();
    println!(
        "peak RSS {:.0} MiB (the memory broker keeps every message)",
        peak_rss_mib()
    );
    client.close().await
}
