//! Throughput of the Redis driver next to `redis-benchmark` on the same
//! server, measured in the same run.
//!
//! ```text
//! cargo run --release -p mq-redis --example redis_bench
//! ```
//!
//! Env: `MQ_BENCH_REDIS_URL` (default `redis://127.0.0.1:6379/0`),
//! `MQ_BENCH_MESSAGES` (default 200000). Keys go under a prefix unique to
//! the run and are deleted at the end.

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mq_core::{handler_fn, Client, Config, Delivery, HandlerResult, Message, TopicSpec};

const PAYLOAD: usize = 100;
const BATCH: usize = 1000;
const PRODUCERS: usize = 4;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let base =
        std::env::var("MQ_BENCH_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into());
    let n: usize = std::env::var("MQ_BENCH_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let run = uuid::Uuid::now_v7().simple().to_string();
    let prefix = format!("mqbench-{}", &run[run.len() - 8..]);
    let sep = if base.contains('?') { '&' } else { '?' };
    let config = Config::from_url(&format!("{base}{sep}prefix={prefix}"))?;
    let client = Client::new(mq_redis::RedisDriver::connect(&config).await?);
    let topic = "bench";
    client
        .admin()
        .ensure_topic(topic, TopicSpec::new(4))
        .await?;

    // 1. SDK send_batch, 100-byte messages.
    let per_producer = n / PRODUCERS;
    let started = Instant::now();
    let mut tasks: Vec<tokio::task::JoinHandle<mq_core::Result<usize>>> = Vec::new();
    for _ in 0..PRODUCERS {
        let producer = client.producer();
        tasks.push(tokio::spawn(async move {
            let mut sent = 0;
            while sent < per_producer {
                let size = BATCH.min(per_producer - sent);
                let batch = (0..size)
                    .map(|_| Message::new(topic, vec![b'x'; PAYLOAD]))
                    .collect();
                producer.send_batch(batch).await?;
                sent += size;
            }
            Ok(sent)
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await??;
    }
    let send_rate = total as f64 / started.elapsed().as_secs_f64();

    // 2. redis-benchmark, pipelined XADD of a 100-byte value, same server.
    let url = url::Url::parse(&base)?;
    let host = url.host_str().unwrap_or("127.0.0.1").to_owned();
    let port = url.port().unwrap_or(6379).to_string();
    let key = format!("{prefix}:redis-benchmark");
    let value = "x".repeat(PAYLOAD);
    let mut cmd = Command::new("redis-benchmark");
    cmd.args([
        "-h",
        &host,
        "-p",
        &port,
        "-P",
        "64",
        "-n",
        &n.to_string(),
        "--csv",
    ]);
    if let Some(password) = url.password() {
        cmd.args(["-a", password]);
    }
    cmd.args(["XADD", &key, "*", "f", &value]);
    let benchmark = match cmd.output() {
        Ok(out) if out.status.success() => parse_rps(&String::from_utf8_lossy(&out.stdout)),
        Ok(out) => {
            eprintln!(
                "redis-benchmark failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            None
        }
        Err(e) => {
            eprintln!("redis-benchmark cannot run: {e}");
            None
        }
    };

    // 3. Consume + ack everything sent in step 1.
    let handled = Arc::new(AtomicUsize::new(0));
    let handler = {
        let handled = handled.clone();
        handler_fn(move |_d: Delivery| {
            let handled = handled.clone();
            async move {
                handled.fetch_add(1, Ordering::Relaxed);
                HandlerResult::Ok(())
            }
        })
    };
    let started = Instant::now();
    let consumer = client
        .consumer(topic, "bench")
        .ordered(false)
        .concurrency(16)
        .prefetch(2048)
        .run(handler)
        .await?;
    let deadline = Instant::now() + Duration::from_secs(120);
    while handled.load(Ordering::Relaxed) < total && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let consumed = handled.load(Ordering::Relaxed);
    let consume_rate = consumed as f64 / started.elapsed().as_secs_f64();
    consumer.shutdown().await?;
    let lag: u64 = client
        .admin()
        .lag(topic, "bench")
        .await?
        .iter()
        .map(|p| p.lag)
        .sum();

    // The consumer also created its retry topic, and the core its dead-letter
    // topic; the driver deletes internal (`__mq`) topics, the admin API does not.
    for t in [
        topic.to_owned(),
        format!("__mq.retry.bench.{topic}"),
        format!("{topic}.dlq"),
    ] {
        client.driver().delete_topic(&t).await?;
    }
    let _ = redis::Client::open(base.as_str())
        .and_then(|c| c.get_connection())
        .and_then(|mut c| redis::cmd("UNLINK").arg(&key).exec(&mut c));

    println!();
    println!("| measure ({n} messages of {PAYLOAD} bytes) | msgs/s |");
    println!("|---|---:|");
    println!("| SDK send_batch ({PRODUCERS} producers x batches of {BATCH}) | {send_rate:.0} |");
    match benchmark {
        Some(rps) => {
            println!("| redis-benchmark -P 64 XADD | {rps:.0} |");
            println!(
                "| SDK / redis-benchmark | {:.0}% |",
                100.0 * send_rate / rps
            );
        }
        None => println!("| redis-benchmark -P 64 XADD | n/a |"),
    }
    println!("| SDK consume + ack ({consumed} handled, lag after: {lag}) | {consume_rate:.0} |");
    Ok(())
}

/// Requests per second from `redis-benchmark --csv` (second column of the data row).
fn parse_rps(csv: &str) -> Option<f64> {
    csv.lines()
        .filter(|l| !l.starts_with("\"test\""))
        .find_map(|l| l.split(',').nth(1)?.trim_matches('"').parse().ok())
}
