//! A long run of mixed traffic against one backend, watching what leaks:
//! the process's resident memory and open file descriptors, and the
//! group's lag, sampled every `MQ_SOAK_SAMPLE_SECONDS` (default 60).
//!
//! Traffic, at `rate` messages a second: keyed sends, half one at a time
//! and half in batches; one in 20 delayed by 1-5 s; one in 10 with an
//! idempotency key where the backend has them; a consumer (concurrency 16) whose handler fails one
//! delivery in 100 on its first attempt, so retries run all along. At the
//! end the producer stops and the run waits for every message to be
//! handled and the lag to reach zero; it exits non-zero when that does not
//! happen within two minutes.
//!
//! ```text
//! cargo run --release -p mq-examples --example soak -- [url] [seconds] [rate]
//! cargo run --release -p mq-examples --features redis,rabbit,kafka,rocket --example soak -- redis://127.0.0.1:6379/0 1800 1000
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mq::{handler_fn, Client, Delivery, HandlerError, HandlerResult, Message, StartFrom};

const KEYS: u64 = 100;

/// One bit per sequence number: which messages were handled at least
/// once, without a set that grows (it would hide a leak of our own).
struct Seen {
    bits: Vec<AtomicU64>,
    duplicates: AtomicU64,
    distinct: AtomicU64,
}

impl Seen {
    fn new(capacity: u64) -> Self {
        Seen {
            bits: (0..capacity.div_ceil(64))
                .map(|_| AtomicU64::new(0))
                .collect(),
            duplicates: AtomicU64::new(0),
            distinct: AtomicU64::new(0),
        }
    }

    fn mark(&self, seq: u64) {
        let Some(word) = self.bits.get((seq / 64) as usize) else {
            return;
        };
        let bit = 1 << (seq % 64);
        if word.fetch_or(bit, Ordering::Relaxed) & bit == 0 {
            self.distinct.fetch_add(1, Ordering::Relaxed);
        } else {
            self.duplicates.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn resident_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(f64::NAN);
    kib / 1024.0
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

async fn total_lag(client: &Client, topic: &str, group: &str) -> mq::Result<u64> {
    Ok(client
        .admin()
        .lag(topic, group)
        .await?
        .iter()
        .map(|p| p.lag)
        .sum())
}

fn message(topic: &str, seq: u64, run: u32, keyed: bool) -> Message {
    let mut message =
        Message::new(topic, seq.to_be_bytes().to_vec()).with_key(format!("k{}", seq % KEYS));
    if seq % 20 == 7 {
        message = message.with_delay(Duration::from_secs(1 + seq % 5));
    }
    if keyed && seq % 10 == 3 {
        message = message.with_idempotency_key(format!("soak-{run}-{seq}"));
    }
    message
}

#[tokio::main]
async fn main() -> mq::Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = std::env::temp_dir().join(format!("mq-soak-{}", std::process::id()));
    let url = args
        .next()
        .unwrap_or_else(|| format!("native://{}?fsync=interval", dir.display()));
    let seconds: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(1_800);
    let rate: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(1_000);
    let sample = Duration::from_secs(
        std::env::var("MQ_SOAK_SAMPLE_SECONDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(60),
    );
    let run = std::process::id();
    let topic = format!("soak-{run}");
    let group = format!("soak-g-{run}");
    let client = mq::connect(&url).await?;
    client
        .admin()
        .ensure_topic(&topic, mq::TopicSpec::new(4))
        .await?;
    client
        .admin()
        .ensure_group(&topic, &group, StartFrom::Earliest)
        .await?;

    let seen = Arc::new(Seen::new(seconds * rate * 2 + 1_000));
    let consumer = {
        let seen = seen.clone();
        client
            .consumer(&topic, &group)
            .concurrency(16)
            .run(handler_fn(move |d: Delivery| {
                let seen = seen.clone();
                async move {
                    let seq = u64::from_be_bytes(
                        d.payload()[..8]
                            .try_into()
                            .map_err(|_| HandlerError::reject("not a soak message"))?,
                    );
                    if seq % 100 == 42 && d.attempt() == 1 {
                        return Err(HandlerError::retry_after(
                            "the first attempt of one in 100 fails",
                            Duration::from_millis(500),
                        ));
                    }
                    seen.mark(seq);
                    HandlerResult::Ok(())
                }
            }))
            .await?
    };

    let sent = Arc::new(AtomicU64::new(0));
    let failed_sends = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let producing = {
        let (client, topic, sent, failed_sends) = (
            client.clone(),
            topic.clone(),
            sent.clone(),
            failed_sends.clone(),
        );
        tokio::spawn(async move {
            let producer = client.producer();
            let keyed = client.capabilities().idempotent_publish.is_available();
            let tick = Duration::from_millis(100);
            let per_tick = (rate / 10).max(2);
            let mut ticker = tokio::time::interval(tick);
            let mut seq = 0u64;
            while Instant::now() < deadline {
                ticker.tick().await;
                let alone = per_tick / 2;
                let singles =
                    (seq..seq + alone).map(|s| producer.send(message(&topic, s, run, keyed)));
                let batch = (seq + alone..seq + per_tick)
                    .map(|s| message(&topic, s, run, keyed))
                    .collect();
                let (singles, batch) = tokio::join!(
                    futures::future::join_all(singles),
                    producer.send_batch(batch)
                );
                // A send that failed is not counted: only receipts are
                // promises, and only promises are checked at the end.
                for (i, result) in singles.into_iter().enumerate() {
                    match result {
                        Ok(_) => sent.fetch_add(1, Ordering::Relaxed),
                        Err(error) => {
                            eprintln!("send {}: {error}", seq + i as u64);
                            failed_sends.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                }
                match batch {
                    Ok(receipts) => sent.fetch_add(receipts.len() as u64, Ordering::Relaxed),
                    Err(error) => {
                        eprintln!("batch at {}: {error}", seq + alone);
                        failed_sends.fetch_add(per_tick - alone, Ordering::Relaxed)
                    }
                };
                seq += per_tick;
            }
        })
    };

    println!("{url}: {seconds} s at {rate} msgs/s");
    println!("| minute | sent | handled | duplicates | lag | RSS MiB | open fds |");
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    let print_row = |label: String, lag: String| {
        println!(
            "| {label} | {} | {} | {} | {lag} | {:.1} | {} |",
            sent.load(Ordering::Relaxed),
            seen.distinct.load(Ordering::Relaxed),
            seen.duplicates.load(Ordering::Relaxed),
            resident_mib(),
            open_fds()
        )
    };
    while !producing.is_finished() {
        tokio::time::sleep(sample.min(deadline.saturating_duration_since(Instant::now()))).await;
        let lag = match total_lag(&client, &topic, &group).await {
            Ok(lag) => lag.to_string(),
            Err(error) => format!("({error})"),
        };
        print_row(
            format!("{:.1}", started.elapsed().as_secs_f64() / 60.0),
            lag,
        );
        if Instant::now() >= deadline {
            break;
        }
    }
    producing.await.expect("producer task");

    let drained = Instant::now();
    let mut lag = u64::MAX;
    while drained.elapsed() < Duration::from_secs(120) {
        lag = total_lag(&client, &topic, &group).await.unwrap_or(u64::MAX);
        if lag == 0 && seen.distinct.load(Ordering::Relaxed) >= sent.load(Ordering::Relaxed) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    print_row(
        format!("drained in {:.1} s", drained.elapsed().as_secs_f64()),
        lag.to_string(),
    );
    consumer.shutdown().await?;
    let _ = client.admin().delete_topic(&topic).await;
    let _ = std::fs::remove_dir_all(&dir);
    let (sent, handled) = (
        sent.load(Ordering::Relaxed),
        seen.distinct.load(Ordering::Relaxed),
    );
    println!(
        "sends failed: {}; every receipt handled: {}",
        failed_sends.load(Ordering::Relaxed),
        handled >= sent
    );
    if handled < sent || lag != 0 {
        eprintln!("soak failed: {handled} of {sent} handled, lag {lag}");
        std::process::exit(1);
    }
    Ok(())
}
