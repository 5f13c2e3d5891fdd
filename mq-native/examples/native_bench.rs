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

mod support;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mq_core::driver::{Driver, StartFrom, SubscribeSpec};
use mq_core::{
    batch_handler_fn, handler_fn, BatchOptions, Client, Config, Delivery, HandlerResult, Message,
    MessageId, TopicSpec,
};
use mq_native::NativeDriver;
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

/// `producers` tasks each send `total / producers` messages in batches of
/// `batch`, over `PRODUCE_KEYS` keys.
async fn produce(client: &Client, topic: &str, total: u64, producers: u64, batch: u64) -> f64 {
    produce_keyed(client, topic, total, producers, batch, PRODUCE_KEYS).await
}

async fn produce_keyed(
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
fn redis_xadd(total: u64) -> Result<f64, String> {
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
async fn rss_while_producing(total: u64) -> (f64, Vec<f64>) {
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

/// Reads `total` messages with a fresh group straight from the driver.
async fn consume_raw(driver: &NativeDriver, topic: &str, total: u64) -> f64 {
    let sub = driver
        .subscribe(SubscribeSpec::new(vec![topic.to_owned()], "bench-raw").with_prefetch(PREFETCH))
        .await
        .expect("subscribe");
    let start = Instant::now();
    let mut got = 0u64;
    while got < total {
        let batch = sub.fetch(PREFETCH).await.expect("fetch");
        got += batch.len() as u64;
        sub.ack(batch.into_iter().map(|d| d.token).collect())
            .await
            .expect("ack");
    }
    let rate = got as f64 / start.elapsed().as_secs_f64();
    sub.close().await.expect("close");
    rate
}

/// Counts handled messages and says when `total` were.
struct Tally {
    count: AtomicU64,
    total: u64,
    done: tokio::sync::Notify,
}

impl Tally {
    fn new(total: u64) -> Arc<Self> {
        Arc::new(Tally {
            count: AtomicU64::new(0),
            total,
            done: tokio::sync::Notify::new(),
        })
    }

    fn add(&self, n: u64) {
        if self.count.fetch_add(n, Ordering::Relaxed) + n == self.total {
            self.done.notify_one();
        }
    }
}

/// Reads `total` messages with a fresh group through the client runtime,
/// a no-op handler per message; timed from joining to a finished shutdown,
/// so the last acks are in.
async fn consume_handler(client: &Client, topic: &str, total: u64) -> f64 {
    let tally = Tally::new(total);
    let handler = {
        let tally = tally.clone();
        handler_fn(move |_d: Delivery| {
            let tally = tally.clone();
            async move {
                tally.add(1);
                HandlerResult::Ok(())
            }
        })
    };
    let start = Instant::now();
    let consumer = client
        .consumer(topic, "bench-handler")
        .concurrency(CONCURRENCY)
        .prefetch(PREFETCH)
        .run(handler)
        .await
        .expect("run");
    tally.done.notified().await;
    consumer.shutdown().await.expect("shutdown");
    total as f64 / start.elapsed().as_secs_f64()
}

/// As `consume_handler`, with a no-op batch handler.
async fn consume_batch(client: &Client, topic: &str, total: u64) -> f64 {
    let tally = Tally::new(total);
    let handler = {
        let tally = tally.clone();
        batch_handler_fn(move |batch: Vec<Delivery>| {
            let tally = tally.clone();
            async move {
                tally.add(batch.len() as u64);
                HandlerResult::Ok(())
            }
        })
    };
    let start = Instant::now();
    let consumer = client
        .consumer(topic, "bench-batch")
        .concurrency(CONCURRENCY)
        .prefetch(PREFETCH)
        .run_batch(handler, BatchOptions::new(BATCH))
        .await
        .expect("run");
    tally.done.notified().await;
    consumer.shutdown().await.expect("shutdown");
    total as f64 / start.elapsed().as_secs_f64()
}

/// The consume rows named in `which` (`raw`, `handler`, `batch`), each a
/// fresh group reading the same `total` messages over `CONSUME_KEYS` keys;
/// the runtime rows say what share of the driver's rate of this run they
/// reached.
async fn consume_rows(
    client: &Client,
    driver: &NativeDriver,
    total: u64,
    which: &[&str],
) -> Vec<Row> {
    let topic = "bench-consume";
    client
        .admin()
        .ensure_topic(topic, TopicSpec::new(8))
        .await
        .expect("topic");
    produce_keyed(client, topic, total, 4, 1000, CONSUME_KEYS).await;
    let mut rows = Vec::new();
    let mut driver_rate = None;
    let share = |rate: f64, driver_rate: Option<f64>, target: &str| match driver_rate {
        Some(d) => format!(
            "{:.2} of the driver row of this run (target {target})",
            rate / d
        ),
        None => "driver row not run".into(),
    };
    let setup = format!("{total} msgs, {CONSUME_KEYS} keys, 8 partitions, prefetch {PREFETCH}");
    for row in which {
        let cpu = cpu_secs();
        let rate = match *row {
            "raw" => consume_raw(driver, topic, total).await,
            "handler" => consume_handler(client, topic, total).await,
            "batch" => consume_batch(client, topic, total).await,
            _ => continue,
        };
        let per_cpu = total as f64 / (cpu_secs() - cpu);
        eprintln!("consume {row}: {rate:.0} ({per_cpu:.0} per CPU s)");
        let (what, note) = match *row {
            "raw" => {
                driver_rate = Some(rate);
                (
                    format!("consume from page cache, driver fetch({PREFETCH}) + ack"),
                    "one member".to_owned(),
                )
            }
            "handler" => (
                format!(
                    "consume from page cache, client handler, concurrency {CONCURRENCY}"
                ),
                share(rate, driver_rate, "0.70"),
            ),
            _ => (
                format!(
                    "consume from page cache, client batch handler (up to {BATCH}), concurrency {CONCURRENCY}"
                ),
                share(rate, driver_rate, "0.90"),
            ),
        };
        rows.push(Row {
            what,
            value: format!("{rate:.0} msgs/s"),
            note: format!("{note}; {setup}; {per_cpu:.0} msgs per CPU second"),
        });
    }
    rows
}

/// Publishes at `rate` msgs/s for `secs` and measures send-to-handler latency.
async fn latency(
    client: &Client,
    topic: &str,
    rate: u64,
    secs: u64,
) -> (Duration, Duration, Duration) {
    client
        .admin()
        .ensure_topic(topic, TopicSpec::new(4))
        .await
        .expect("topic");
    let epoch = Instant::now();
    let samples = Arc::new(parking_lot::Mutex::new(Vec::with_capacity(
        (rate * secs) as usize,
    )));
    let handler = {
        let samples = samples.clone();
        handler_fn(move |d: Delivery| {
            let samples = samples.clone();
            async move {
                let sent: u64 = d.message().payload_str()?.trim_end_matches('x').parse()?;
                let now = epoch.elapsed().as_nanos() as u64;
                samples.lock().push(now.saturating_sub(sent));
                HandlerResult::Ok(())
            }
        })
    };
    let consumer = client
        .consumer(topic, "bench-latency")
        .start_from(StartFrom::Latest)
        .concurrency(64)
        .run(handler)
        .await
        .expect("run");
    tokio::time::sleep(Duration::from_millis(200)).await;
    // 1 ms ticks, rate/1000 messages per tick, sent as one batch per tick.
    let per_tick = (rate / 1000).max(1);
    let producer = client.producer();
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let total = rate * secs;
    let mut sent = 0;
    while sent < total {
        tick.tick().await;
        let now = epoch.elapsed().as_nanos() as u64;
        let mut body = now.to_string();
        while body.len() < PAYLOAD {
            body.push('x');
        }
        let batch: Vec<Message> = (0..per_tick)
            .map(|i| Message::new(topic, body.clone()).with_key(format!("k{}", (sent + i) % 64)))
            .collect();
        // Sends run concurrently, as independent producers would.
        let producer = producer.clone();
        tokio::spawn(async move { producer.send_batch(batch).await.expect("send") });
        sent += per_tick;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while (samples.lock().len() as u64) < total && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    consumer.shutdown().await.expect("shutdown");
    let mut v = samples.lock().clone();
    v.sort_unstable();
    let pct = |p: f64| {
        Duration::from_nanos(
            v.get(((v.len() as f64 * p) as usize).min(v.len().saturating_sub(1)))
                .copied()
                .unwrap_or(0),
        )
    };
    (pct(0.50), pct(0.99), pct(0.999))
}

/// Publishes `count` delayed messages due over the next 0.2–1.2 s (one
/// send) and measures how late the driver hands each out after its due time.
async fn delay_lateness(driver: &NativeDriver, topic: &str, count: u64) -> [Duration; 3] {
    driver
        .ensure_topic(topic, &TopicSpec::new(4))
        .await
        .expect("topic");
    let sub = driver
        .subscribe(SubscribeSpec::new(vec![topic.to_owned()], "bench-delay").with_prefetch(256))
        .await
        .expect("subscribe");
    let start = SystemTime::now();
    let batch = (0..count)
        .map(|i| {
            let due = start + Duration::from_millis(200 + i * 1000 / count);
            let due_us = due.duration_since(UNIX_EPOCH).expect("clock").as_micros();
            Message::new(topic, due_us.to_string())
                .with_id(MessageId::new())
                .with_key(format!("k{i}"))
                .with_deliver_at(due)
        })
        .collect();
    driver.publish(batch).await.expect("publish");
    let mut late = Vec::new();
    while (late.len() as u64) < count {
        let got = sub.fetch(256).await.expect("fetch");
        let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock");
        for d in &got {
            let due: u64 = d.message.payload_str().expect("utf8").parse().expect("due");
            let at = now.as_micros() as u64;
            assert!(at >= due, "delayed message delivered early");
            late.push(Duration::from_micros(at - due));
        }
        sub.ack(got.into_iter().map(|d| d.token).collect())
            .await
            .expect("ack");
    }
    sub.close().await.expect("close");
    late.sort_unstable();
    let pct = |p: f64| late[((late.len() as f64 * p) as usize).min(late.len() - 1)];
    [pct(0.5), pct(0.99), late[late.len() - 1]]
}

fn recovery_child(dir: &str, gib: u64) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let driver = open(Path::new(dir), "fsync=never").await;
        driver
            .ensure_topic("big", &TopicSpec::new(8))
            .await
            .expect("topic");
        let payload = bytes::Bytes::from(vec![b'y'; 1000]);
        let target = gib * 1024 * 1024 * 1024;
        let mut written = 0u64;
        while written < target {
            let batch: Vec<Message> = (0..1000)
                .map(|i| {
                    Message::new("big", payload.clone())
                        .with_key(format!("k{i}"))
                        .with_id(MessageId::new())
                })
                .collect();
            driver.publish(batch).await.expect("publish");
            written += 1000 * 1100;
        }
        println!("WRITTEN");
        tokio::time::sleep(Duration::from_secs(3600)).await;
    });
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--recovery-child") {
        recovery_child(&args[2], args[3].parse().expect("gib"));
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
    let (p50, p99, p999) = latency(&client, "lat-always", 50_000, 3).await;
    rows.push(Row {
        what: "publish-to-handler latency at 50,000 msgs/s, fsync=always".into(),
        value: format!("p50 {p50:?}, p99 {p99:?}"),
        note: format!("p99.9 {p999:?}; 3 s, batches of 50 per ms"),
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

    // Reopen after kill -9 with a large log.
    let gib = env_u64("MQ_BENCH_RECOVERY_GIB", 1);
    if gib > 0 {
        let dir = scratch("recovery");
        std::fs::create_dir_all(&dir).expect("dir");
        let exe = std::env::current_exe().expect("exe");
        let mut child = std::process::Command::new(exe)
            .args([
                "--recovery-child",
                &dir.display().to_string(),
                &gib.to_string(),
            ])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("spawn");
        let mut line = String::new();
        use std::io::BufRead;
        std::io::BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("read");
        child.kill().expect("kill -9");
        child.wait().expect("wait");
        let start = Instant::now();
        let driver = open(&dir, "").await;
        let took = start.elapsed();
        let log_bytes: u64 = std::fs::read_dir(dir.join("log"))
            .expect("log")
            .map(|e| e.expect("entry").metadata().expect("meta").len())
            .sum();
        driver.close().await.expect("close");
        rows.push(Row {
            what: format!(
                "reopen after kill -9, {:.2} GiB of log",
                log_bytes as f64 / (1u64 << 30) as f64
            ),
            value: format!("{took:?}"),
            note: "writer killed right after its last append; rescans past the last checkpoint"
                .into(),
        });
        // Worst case: no checkpoint at all, every byte rescanned and re-indexed.
        let _ = std::fs::remove_file(dir.join("checkpoint.json"));
        let start = Instant::now();
        let driver = open(&dir, "").await;
        let took = start.elapsed();
        driver.close().await.expect("close");
        rows.push(Row {
            what: format!(
                "reopen with no checkpoint (full rescan), {:.2} GiB of log",
                log_bytes as f64 / (1u64 << 30) as f64
            ),
            value: format!("{took:?}"),
            note: "checkpoint.json deleted: CRC check and re-index of the whole log".into(),
        });
        let _ = std::fs::remove_dir_all(&dir);
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
