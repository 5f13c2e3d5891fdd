//! Throughput and latency of the native engine.
//!
//! ```text
//! cargo run --release -p mq-native --example native_bench
//! ```
//!
//! Env: `MQ_BENCH_MESSAGES` (messages per produce run, default 2,000,000),
//! `MQ_BENCH_DIR` (where data goes, default the system temp dir),
//! `MQ_BENCH_RECOVERY_GIB` (log size for the kill -9 reopen row, default 1;
//! 0 skips it), `MQ_BENCH_QUICK` (stop after the never-mode throughput rows),
//! `MQ_BENCH_CONSUME` (only the consume rows named, comma-separated from
//! `raw`, `handler`, `batch`; `none` fills the topic and reads nothing, the
//! baseline a profile of one row is taken against),
//! `MQ_BENCH_RSS_MESSAGES` (opt in: produce that many messages with
//! `fsync=never` and sample RSS at each tenth, to show memory does not grow
//! with the log), `MQ_BENCH_REDIS` (`host:port` of the Redis that
//! `redis-benchmark` runs its XADD peer row against, default
//! 127.0.0.1:6379).
//! Prints a table; every number is measured by this run.

#[path = "../support/mod.rs"]
mod support;

mod consume;
mod latency;
mod produce;
mod recovery;

use std::path::Path;
use std::time::Instant;

use mq_core::driver::Driver;
use mq_core::{Client, Config, Message, MessageId, TopicSpec};
use mq_native::NativeDriver;

use consume::consume_rows;
use latency::{delay_lateness, fsync_latency, latency};
use produce::{produce, redis_xadd, rss_while_producing};
use support::{rss_mib, scratch};

const PAYLOAD: usize = 100;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn open(dir: &Path, options: &str) -> NativeDriver {
    let url = format!("native://{}?{options}", dir.display());
    NativeDriver::open(&Config::from_url(&url).expect("url"))
        .await
        .expect("open")
}

/// CPU time (user + system) this process has used, in seconds: on a shared
/// machine, messages per CPU second is steadier than messages per second.
fn cpu_secs() -> f64 {
    // SAFETY: getrusage only writes the struct it is given.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

struct Row {
    what: String,
    value: String,
    note: String,
}

/// The producers' key space: built once, as a service with a bounded key
/// space would hold it.
const PRODUCE_KEYS: u64 = 64;
/// The consume rows' key space: many more keys than handlers, so the
/// per-key executor has real work.
const CONSUME_KEYS: u64 = 1_000;
/// Handlers (or batch lanes) of the runtime rows.
const CONCURRENCY: usize = 64;
/// Both the driver rows' fetch size and the runtime rows' prefetch.
const PREFETCH: usize = 4096;
/// Messages per batch of the batch handler row.
const BATCH: usize = 256;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--recovery-child") {
        recovery::recovery_child(&args[2], args[3].parse().expect("gib"));
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let rows = rt.block_on(run());
    println!();
    println!("| measurement | result | notes |");
    println!("|---|---|---|");
    for r in rows {
        println!("| {} | {} | {} |", r.what, r.value, r.note);
    }
}

async fn run() -> Vec<Row> {
    let n = env_u64("MQ_BENCH_MESSAGES", 2_000_000);
    if let Ok(which) = std::env::var("MQ_BENCH_CONSUME") {
        let dir = scratch("consume");
        let driver = open(&dir, "fsync=never").await;
        let client = Client::new(driver.clone());
        let which: Vec<&str> = which.split(',').map(str::trim).collect();
        let rows = consume_rows(&client, &driver, n, &which).await;
        client.close().await.expect("close");
        drop(client);
        drop(driver);
        let _ = std::fs::remove_dir_all(&dir);
        return rows;
    }
    let mut rows = Vec::new();
    let fmt = |rate: f64| format!("{:.0} msgs/s", rate);

    // Produce, fsync=never.
    let dir = scratch("never");
    let driver = open(&dir, "fsync=never").await;
    let client = Client::new(driver.clone());
    client
        .admin()
        .ensure_topic("bench", TopicSpec::new(8))
        .await
        .expect("topic");
    let rss_before = rss_mib();
    let cpu = cpu_secs();
    let rate = produce(&client, "bench", n, 4, 1000).await;
    let per_cpu = n as f64 / (cpu_secs() - cpu);
    let rss_after = rss_mib();
    eprintln!("produce never: {rate:.0} ({per_cpu:.0} per CPU s)");
    rows.push(Row {
        what: format!("produce {PAYLOAD} B, fsync=never, 4 producers x send_batch(1000)"),
        value: fmt(rate),
        note: format!(
            "{n} msgs, {per_cpu:.0} msgs per CPU second; RSS {rss_before:.0} -> {rss_after:.0} MiB"
        ),
    });
    let cpu = cpu_secs();
    let rate = produce(&client, "bench-64", n, 64, 100).await;
    let per_cpu = n as f64 / (cpu_secs() - cpu);
    eprintln!("produce never 64: {rate:.0} ({per_cpu:.0} per CPU s)");
    rows.push(Row {
        what: format!("produce {PAYLOAD} B, fsync=never, 64 producers x send_batch(100)"),
        value: fmt(rate),
        note: format!("{n} msgs, {per_cpu:.0} msgs per CPU second"),
    });
    let driver_rate = {
        let payload = bytes::Bytes::from(vec![b'x'; PAYLOAD]);
        client
            .admin()
            .ensure_topic("bench-driver", TopicSpec::new(8))
            .await
            .expect("topic");
        let start = Instant::now();
        let mut sent = 0;
        while sent < n {
            let batch: Vec<Message> = (0..1000)
                .map(|i| {
                    Message::new("bench-driver", payload.clone())
                        .with_key(format!("k{}", i % 64))
                        .with_id(MessageId::new())
                })
                .collect();
            driver.publish(batch).await.expect("publish");
            sent += 1000;
        }
        sent as f64 / start.elapsed().as_secs_f64()
    };
    eprintln!("produce driver never: {driver_rate:.0}");
    rows.push(Row {
        what: format!("produce {PAYLOAD} B, fsync=never, driver SPI publish(1000), 1 task"),
        value: fmt(driver_rate),
        note: "engine without the client's validation layer".into(),
    });

    // Consume from the page cache.
    rows.extend(consume_rows(&client, &driver, n, &["raw", "handler", "batch"]).await);
    if std::env::var("MQ_BENCH_QUICK").is_ok() {
        client.close().await.expect("close");
        let _ = std::fs::remove_dir_all(&dir);
        return rows;
    }
    let (p50, p99, p999) = latency(&client, "lat-never", 50_000, 3).await;
    rows.push(Row {
        what: "publish-to-handler latency at 50,000 msgs/s, fsync=never".into(),
        value: format!("p50 {p50:?}, p99 {p99:?}"),
        note: format!("p99.9 {p999:?}; 3 s, batches of 50 per ms"),
    });
    client.close().await.expect("close");
    drop(client);
    drop(driver);
    let _ = std::fs::remove_dir_all(&dir);

    // Produce, fsync=always, 64 producers.
    let dir = scratch("always");
    let driver = open(&dir, "fsync=always").await;
    let client = Client::new(driver.clone());
    client
        .admin()
        .ensure_topic("bench", TopicSpec::new(8))
        .await
        .expect("topic");
    let rate = produce(&client, "bench", n, 64, 100).await;
    eprintln!("produce always batch: {rate:.0}");
    rows.push(Row {
        what: format!("produce {PAYLOAD} B, fsync=always, 64 producers x send_batch(100)"),
        value: fmt(rate),
        note: "group commit: one fsync per flush of all waiting sends".into(),
    });
    let always = produce(&client, "bench", n, 64, 1000).await;
    eprintln!("produce always batch 1000: {always:.0}");
    rows.push(Row {
        what: format!("produce {PAYLOAD} B, fsync=always, 64 producers x send_batch(1000)"),
        value: fmt(always),
        note: format!("{n} msgs; acked after fsync"),
    });
    match redis_xadd(n) {
        Ok(redis) => {
            eprintln!("redis-benchmark xadd: {redis:.0}");
            rows.push(Row {
                what: format!("peer: redis-benchmark -P 64 XADD, {PAYLOAD} B values, one stream"),
                value: format!("{redis:.0} requests/s"),
                note: format!(
                    "{n} XADDs, same run; native fsync=always 64 x send_batch(1000) / redis = {:.2}x (target 3x)",
                    always / redis
                ),
            });
        }
        Err(why) => rows.push(Row {
            what: "peer: redis-benchmark -P 64 XADD".into(),
            value: "not measured".into(),
            note: why,
        }),
    }
    let single = (n / 10).max(64_000);
    let rate = produce(&client, "bench", single, 64, 1).await;
    eprintln!("produce always single: {rate:.0}");
    rows.push(Row {
        what: format!("produce {PAYLOAD} B, fsync=always, 64 producers x send(1)"),
        value: fmt(rate),
        note: format!("{single} msgs"),
    });
    let [sync50, sync99, sync999] = fsync_latency(&dir, 2_000);
    rows.push(Row {
        what: "peer: this disk's fsync, 8 KiB append + fdatasync, one file".into(),
        value: format!("p50 {sync50:?}, p99 {sync99:?}"),
        note: format!("p99.9 {sync999:?}; 2,000 in the engine's directory, same run"),
    });
    let (p50, p99, p999) = latency(&client, "lat-always", 50_000, 3).await;
    rows.push(Row {
        what: "publish-to-handler latency at 50,000 msgs/s, fsync=always".into(),
        value: format!("p50 {p50:?}, p99 {p99:?}"),
        note: format!(
            "p99.9 {p999:?}; 3 s, batches of 50 per ms; p99 / fsync p99 = {:.2} (target 2)",
            p99.as_secs_f64() / sync99.as_secs_f64().max(1e-9)
        ),
    });
    let [p50, p99, max] = delay_lateness(&driver, "delay-always", 500).await;
    rows.push(Row {
        what: "delayed message lateness after due, fsync=always, driver fetch".into(),
        value: format!("p50 {p50:?}, p99 {p99:?}"),
        note: format!("max {max:?}; 500 delays due over 1 s; declared precision 10 ms"),
    });
    client.close().await.expect("close");
    drop(client);
    drop(driver);
    let _ = std::fs::remove_dir_all(&dir);

    let gib = env_u64("MQ_BENCH_RECOVERY_GIB", 1);
    if gib > 0 {
        rows.extend(recovery::recovery_rows(gib).await);
    }
    let rss_messages = env_u64("MQ_BENCH_RSS_MESSAGES", 0);
    if rss_messages > 0 {
        let (before, samples) = rss_while_producing(rss_messages).await;
        let min = samples.iter().copied().fold(f64::INFINITY, f64::min);
        let max = samples.iter().copied().fold(0.0, f64::max);
        let list: Vec<String> = samples.iter().map(|s| format!("{s:.0}")).collect();
        rows.push(Row {
            what: format!(
                "RSS while producing {rss_messages} msgs, fsync=never, 4 producers x send_batch(1000)"
            ),
            value: format!("min {min:.0} MiB, max {max:.0} MiB"),
            note: format!(
                "{before:.0} MiB before; after each tenth: {} MiB",
                list.join(", ")
            ),
        });
    }
    rows
}
