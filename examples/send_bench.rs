//! Individual sends against batches on one backend, in one run: 64 tasks
//! each sending one message at a time (awaiting each) with coalescing on
//! and off, against 64 tasks each calling `send_batch(100)`. 100-byte
//! messages with 1,000 keys.
//!
//! ```text
//! cargo run --release -p mq-examples --example send_bench -- [url] [messages]
//! cargo run --release -p mq-examples --features redis,rabbit --example send_bench -- redis://127.0.0.1:6379/0
//! ```

use std::time::Instant;

use mq::{Client, Coalescing, Message};

const TASKS: u64 = 64;

fn payload() -> Vec<u8> {
    vec![b'x'; 100]
}

/// Messages per second with `TASKS` tasks sending `total` messages, each
/// task `per_call` at a time.
async fn run(client: &Client, topic: &str, total: u64, per_call: u64) -> mq::Result<f64> {
    let per_task = total / TASKS;
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..TASKS {
        let producer = client.producer();
        let topic = topic.to_owned();
        tasks.spawn(async move {
            let mut sent = 0;
            while sent < per_task {
                let n = per_call.min(per_task - sent);
                let batch = (sent..sent + n).map(|i| {
                    Message::new(topic.as_str(), payload())
                        .with_key(format!("k{}", (task * per_task + i) % 1_000))
                });
                if n == 1 {
                    producer
                        .send(batch.into_iter().next().expect("one"))
                        .await?;
                } else {
                    producer.send_batch(batch.collect()).await?;
                }
                sent += n;
            }
            mq::Result::Ok(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("task")?;
    }
    Ok((per_task * TASKS) as f64 / started.elapsed().as_secs_f64())
}

#[tokio::main]
async fn main() -> mq::Result<()> {
    let dir = std::env::temp_dir().join(format!("mq-send-bench-{}", std::process::id()));
    let default_url = format!("native://{}?fsync=always", dir.display());
    let url = std::env::args().nth(1).unwrap_or(default_url);
    let total: u64 = std::env::args()
        .nth(2)
        .and_then(|a| a.parse().ok())
        .unwrap_or(200_000);
    let lanes: usize = std::env::var("MQ_BENCH_LANES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(16);
    let client = mq::connect(&url)
        .await?
        .with_coalescing(Coalescing::default().with_lanes(lanes));
    let topic = format!("send-bench-{}", std::process::id());
    client
        .admin()
        .ensure_topic(&topic, mq::TopicSpec::new(8))
        .await?;

    let batched = run(&client, &topic, total, 100).await?;
    let coalesced = run(&client, &topic, total, 1).await?;
    let alone = run(
        &client.clone().with_coalescing(Coalescing::off()),
        &topic,
        total / 10,
        1,
    )
    .await?;

    println!(
        "backend: {}  messages per row: {total} (coalescing off: {})",
        client.backend(),
        total / 10
    );
    println!("| 64 tasks, 100-byte messages | msgs/s | / send_batch(100) |");
    println!("|---|---:|---:|");
    println!("| send_batch(100) | {batched:.0} | 1.00 |");
    println!(
        "| send(1), coalesced (default) | {coalesced:.0} | {:.2} |",
        coalesced / batched
    );
    println!(
        "| send(1), `Coalescing::off()` | {alone:.0} | {:.2} |",
        alone / batched
    );
    let _ = client.admin().delete_topic(&topic).await;
    client.close().await?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
