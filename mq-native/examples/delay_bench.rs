//! Millions of pending delays in bounded memory: the timing wheel holds
//! only what falls due within its span (about 41 s); later delays wait in
//! the durable delay index. Publishes N delayed 100-byte messages due over
//! the next hours, samples RSS as they pile up, reopens the directory and
//! checks that a few delays due soon amid them still fire on time.
//!
//! ```text
//! cargo run --release -p mq-native --example delay_bench -- [pending]
//! ```
//!
//! `pending` defaults to 2,000,000. `MQ_BENCH_DIR` sets where data goes.

mod support;

use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mq_core::driver::{Driver, SubscribeSpec};
use mq_core::{Config, Message, MessageId, TopicSpec};
use mq_native::NativeDriver;
use support::{rss_mib, scratch};

const BATCH: u64 = 1_000;
const SOON: u64 = 1_000;

async fn open(dir: &Path) -> NativeDriver {
    let url = format!("native://{}?fsync=never", dir.display());
    NativeDriver::open(&Config::from_url(&url).expect("url"))
        .await
        .expect("open")
}

fn micros(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).expect("clock").as_micros() as u64
}

#[tokio::main]
async fn main() {
    let pending: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(2_000_000);
    let dir = scratch("delay");

    let driver = open(&dir).await;
    driver
        .ensure_topic("later", &TopicSpec::new(4))
        .await
        .expect("topic");
    let payload = bytes::Bytes::from(vec![b'x'; 100]);
    let now = SystemTime::now();
    let started = Instant::now();
    let mut samples = vec![(0u64, rss_mib())];
    let mut sent = 0;
    while sent < pending {
        let batch = (sent..sent + BATCH.min(pending - sent))
            .map(|i| {
                // Due between 10 minutes and about 3 hours from now.
                let due = now + Duration::from_secs(600 + (i * 7919) % 10_000);
                Message::new("later", payload.clone())
                    .with_id(MessageId::new())
                    .with_deliver_at(due)
            })
            .collect::<Vec<_>>();
        sent += batch.len() as u64;
        driver.publish(batch).await.expect("publish");
        if sent % (pending / 10).max(BATCH) == 0 || sent == pending {
            samples.push((sent, rss_mib()));
        }
    }
    let publish_rate = pending as f64 / started.elapsed().as_secs_f64();
    driver.close().await.expect("close");
    drop(driver);

    let reopening = Instant::now();
    let driver = open(&dir).await;
    let reopen = reopening.elapsed();
    let rss_reopened = rss_mib();

    // A few delays due within a second, amid the millions, fire on time.
    driver
        .ensure_topic("soon", &TopicSpec::new(1))
        .await
        .expect("topic");
    let sub = driver
        .subscribe(SubscribeSpec::new(vec!["soon".into()], "bench").with_prefetch(1024))
        .await
        .expect("subscribe");
    let first_due = SystemTime::now() + Duration::from_millis(300);
    let soon = (0..SOON)
        .map(|i| {
            let due = first_due + Duration::from_micros(i * 1000);
            Message::new("soon", micros(due).to_string())
                .with_id(MessageId::new())
                .with_deliver_at(due)
        })
        .collect();
    driver.publish(soon).await.expect("publish");
    let mut late = Vec::new();
    while (late.len() as u64) < SOON {
        let got = tokio::time::timeout(Duration::from_secs(30), sub.fetch(1024))
            .await
            .expect("delays fire")
            .expect("fetch");
        let at = micros(SystemTime::now());
        for d in &got {
            let due: u64 = d.message.payload_str().expect("utf8").parse().expect("due");
            assert!(at >= due, "a delayed message was delivered early");
            late.push(at - due);
        }
        sub.ack(got.into_iter().map(|d| d.token).collect())
            .await
            .expect("ack");
    }
    late.sort_unstable();
    sub.close().await.expect("close");
    driver.close().await.expect("close");
    let _ = std::fs::remove_dir_all(&dir);

    println!();
    println!("| pending delays | RSS MiB |");
    println!("|---:|---:|");
    for (n, rss) in &samples {
        println!("| {n} | {rss:.0} |");
    }
    println!();
    println!("| measurement | result |");
    println!("|---|---|");
    println!(
        "| publish {pending} delayed messages (batches of {BATCH}) | {publish_rate:.0} msgs/s |"
    );
    println!(
        "| reopen with {pending} pending delays | {reopen:?}, RSS {rss_reopened:.0} MiB after |"
    );
    println!(
        "| {SOON} delays due within 1.3 s amid them: lateness p50 / p99 / max | {:.2} / {:.2} / {:.2} ms |",
        late[late.len() / 2] as f64 / 1000.0,
        late[late.len() * 99 / 100] as f64 / 1000.0,
        late[late.len() - 1] as f64 / 1000.0
    );
}
