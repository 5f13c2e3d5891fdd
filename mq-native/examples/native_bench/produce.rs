//! The produce rows' workloads and the Redis peer row.

use std::sync::Arc;
use std::time::Instant;

use mq_core::{Client, Message, TopicSpec};

use crate::support::{rss_mib, scratch};
use crate::{open, PAYLOAD, PRODUCE_KEYS};

/// `producers` tasks each send `total / producers` messages in batches of
/// `batch`, over `PRODUCE_KEYS` keys.
pub(crate) async fn produce(
    client: &Client,
    topic: &str,
    total: u64,
    producers: u64,
    batch: u64,
) -> f64 {
    produce_keyed(client, topic, total, producers, batch, PRODUCE_KEYS).await
}

pub(crate) async fn produce_keyed(
    client: &Client,
    topic: &str,
    total: u64,
    producers: u64,
    batch: u64,
    key_space: u64,
) -> f64 {
    let payload = bytes::Bytes::from(vec![b'x'; PAYLOAD]);
    let keys: Arc<[Arc<str>]> = (0..key_space).map(|k| Arc::from(format!("k{k}"))).collect();
    let topic: Arc<str> = Arc::from(topic);
    let per = total / producers;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for p in 0..producers {
        let producer = client.producer();
        let (topic, payload, keys) = (topic.clone(), payload.clone(), keys.clone());
        tasks.push(tokio::spawn(async move {
            let mut sent = 0;
            while sent < per {
                let n = batch.min(per - sent);
                let msgs: Vec<Message> = (0..n)
                    .map(|i| {
                        Message::new(topic.clone(), payload.clone())
                            .with_key(keys[((p * 7 + i) % key_space) as usize].clone())
                    })
                    .collect();
                if n == 1 {
                    producer
                        .send(msgs.into_iter().next().expect("one"))
                        .await
                        .expect("send");
                } else {
                    producer.send_batch(msgs).await.expect("send_batch");
                }
                sent += n;
            }
        }));
    }
    for t in tasks {
        t.await.expect("producer");
    }
    (per * producers) as f64 / start.elapsed().as_secs_f64()
}

/// `redis-benchmark` pipelining XADDs of `PAYLOAD`-byte values into one
/// fresh stream, the peer for native `fsync=always` produce: its
/// requests per second, or why there is none. The stream is deleted after.
pub(crate) fn redis_xadd(total: u64) -> Result<f64, String> {
    let addr = std::env::var("MQ_BENCH_REDIS").unwrap_or_else(|_| "127.0.0.1:6379".into());
    let (host, port) = addr
        .rsplit_once(':')
        .ok_or_else(|| format!("MQ_BENCH_REDIS={addr} is not host:port"))?;
    let key = format!("mq-native-bench-{}", std::process::id());
    let value = "x".repeat(PAYLOAD);
    let output = std::process::Command::new("redis-benchmark")
        .args([
            "-h",
            host,
            "-p",
            port,
            "-P",
            "64",
            "-n",
            &total.to_string(),
            "-q",
        ])
        .args(["XADD", &key, "*", "f", &value])
        .output()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => "redis-benchmark is not installed".to_owned(),
            _ => format!("running redis-benchmark failed: {e}"),
        })?;
    let _ = std::process::Command::new("redis-cli")
        .args(["-h", host, "-p", port, "DEL", &key])
        .output();
    let text = String::from_utf8_lossy(&output.stdout);
    // Progress lines end in \r; the result is "<command>: <n> requests per second, ...".
    text.split(['\r', '\n'])
        .filter_map(|line| line.split_once(" requests per second"))
        .filter_map(|(head, _)| head.rsplit(' ').next()?.parse::<f64>().ok())
        .next_back()
        .ok_or_else(|| {
            let err = String::from_utf8_lossy(&output.stderr);
            let said = [text.trim(), err.trim()].join(" ");
            format!(
                "no result from redis-benchmark against {addr}: {}",
                said.trim()
            )
        })
}

/// Produces `total` messages with `fsync=never` in ten equal parts and
/// samples RSS after each: `(before, samples)` in MiB.
pub(crate) async fn rss_while_producing(total: u64) -> (f64, Vec<f64>) {
    let dir = scratch("rss");
    let driver = open(&dir, "fsync=never").await;
    let client = Client::new(driver);
    client
        .admin()
        .ensure_topic("rss", TopicSpec::new(8))
        .await
        .expect("topic");
    let before = rss_mib();
    let mut samples = Vec::with_capacity(10);
    for _ in 0..10 {
        produce(&client, "rss", total / 10, 4, 1000).await;
        samples.push(rss_mib());
    }
    client.close().await.expect("close");
    drop(client);
    let _ = std::fs::remove_dir_all(&dir);
    (before, samples)
}
