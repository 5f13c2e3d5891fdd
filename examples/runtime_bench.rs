//! Throughput of the consumer runtime on the memory driver: N keyed 100-byte
//! messages published in batches while a consumer with concurrency 16
//! handles and acks them. The broker is in memory, so what is measured is
//! mq's own overhead: validation, ids, the per-key ordering executor,
//! settling and ack batching.
//!
//! ```text
//! cargo run --release --example runtime_bench -- [messages] [keys] [concurrency]
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mq::{handler_fn, Delivery, HandlerResult, Message, TopicSpec};

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

#[tokio::main]
async fn main() -> mq::Result<()> {
    let messages = arg(1, 1_000_000);
    let keys = arg(2, 1_000);
    let concurrency = arg(3, 16) as usize;
    let batch = 1_000u64;

    let client = mq::connect("memory://?partitions=8").await?;
    client
        .admin()
        .ensure_topic("bench", TopicSpec::new(8))
        .await?;
    let handled = Arc::new(AtomicU64::new(0));
    let consumer = {
        let handled = handled.clone();
        client
            .consumer("bench", "bench")
            .concurrency(concurrency)
            .prefetch(4_096)
            .run(handler_fn(move |_d: Delivery| {
                let handled = handled.clone();
                async move {
                    handled.fetch_add(1, Ordering::Relaxed);
                    HandlerResult::Ok(())
                }
            }))
            .await?
    };

    let payload = mq::Bytes::from(vec![b'x'; 100]);
    let key_names: Vec<Arc<str>> = (0..keys).map(|k| Arc::from(format!("key-{k}"))).collect();
    let start = Instant::now();
    let producer = client.producer();
    let mut sent = 0u64;
    while sent < messages {
        let n = batch.min(messages - sent);
        let messages: Vec<Message> = (sent..sent + n)
            .map(|i| {
                Message::new("bench", payload.clone())
                    .with_key(key_names[(i % keys) as usize].clone())
            })
            .collect();
        producer.send_batch(messages).await?;
        sent += n;
    }
    let published = start.elapsed();
    while handled.load(Ordering::Relaxed) < messages {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let handled_at = start.elapsed();
    while client.admin().total_lag("bench", "bench").await? > 0 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let acked_at = start.elapsed();
    consumer.shutdown().await?;

    let rate = |d: Duration| messages as f64 / d.as_secs_f64();
    println!("| messages | keys | concurrency | publish msgs/s | publish+handle+ack msgs/s | total s | peak RSS MiB |");
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    println!(
        "| {messages} | {keys} | {concurrency} | {:.0} | {:.0} | {:.2} | {:.0} |",
        rate(published),
        rate(acked_at),
        acked_at.as_secs_f64(),
        peak_rss_mib()
    );
    let _ = handled_at;
    client.close().await
}
