//! The three phases run against one URL.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use mq::{handler_fn, Client, Delivery, HandlerResult, Message, TopicSpec};
use parking_lot::Mutex;

use super::{rss, BenchArgs, BenchResult, Format};

const GROUP: &str = "mq-bench";

fn progress(args: &BenchArgs, len: u64, label: &str) -> ProgressBar {
    if args.format == Format::Json {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    if let Ok(style) =
        ProgressStyle::with_template("{prefix:>28} [{bar:30}] {pos}/{len} {per_sec} {eta}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix(label.to_owned());
    bar
}

fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Creates the topic and the group up front, so queue brokers retain what
/// is produced before the consumer starts.
async fn prepare(client: &Client, topic: &str, partitions: u32) -> mq::Result<()> {
    client
        .admin()
        .ensure_topic(topic, TopicSpec::new(partitions))
        .await?;
    client
        .consumer(topic, GROUP)
        .subscribe()
        .await?
        .close()
        .await
}

pub(super) async fn bench_url(url: &str, args: &BenchArgs) -> mq::Result<BenchResult> {
    let config = mq::Config::from_url(url)?;
    let shown = config.to_string();
    rss::reset_peak();
    let client = mq::connect(config).await?;
    let run = uuid::Uuid::now_v7().simple().to_string();
    let topic = format!("mq-bench-{}", &run[run.len() - 12..]);
    prepare(&client, &topic, args.partitions).await?;

    let produced = produce(&client, &topic, args, &shown).await?;
    let consumed = consume(&client, &topic, args, &shown).await?;
    let latency = if args.latency_seconds > 0 {
        let latency_topic = format!("{topic}-latency");
        prepare(&client, &latency_topic, args.partitions).await?;
        let histogram = latency_phase(&client, &latency_topic, args, &shown).await?;
        let _ = client.admin().delete_topic(&latency_topic).await;
        Some(histogram)
    } else {
        None
    };
    let _ = client.admin().delete_topic(&topic).await;
    client.close().await?;

    let messages = args.messages as f64;
    let quantile = |q: f64| {
        latency
            .as_ref()
            .filter(|h| !h.is_empty())
            .map(|h| h.value_at_quantile(q))
    };
    Ok(BenchResult {
        url: shown,
        produce_msgs_per_s: messages / produced.as_secs_f64(),
        produce_mb_per_s: messages * args.size as f64 / produced.as_secs_f64() / 1e6,
        consume_msgs_per_s: messages / consumed.as_secs_f64(),
        p50_us: quantile(0.50),
        p99_us: quantile(0.99),
        p999_us: quantile(0.999),
        peak_rss_bytes: rss::peak_bytes(),
    })
}

fn message(topic: &str, payload: mq::Bytes, i: u64, keys: &[Arc<str>]) -> Message {
    let m = Message::new(topic, payload);
    if keys.is_empty() {
        m
    } else {
        m.with_key(keys[(i % keys.len() as u64) as usize].clone())
    }
}

async fn produce(
    client: &Client,
    topic: &str,
    args: &BenchArgs,
    url: &str,
) -> mq::Result<Duration> {
    let bar = progress(args, args.messages, &format!("{url} produce"));
    let keys: Arc<Vec<Arc<str>>> = Arc::new(
        (0..args.keys)
            .map(|k| Arc::from(format!("key-{k}")))
            .collect(),
    );
    let payload = mq::Bytes::from(vec![b'x'; args.size]);
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..args.producers {
        let (producer, topic, keys, payload, next, bar) = (
            client.producer(),
            topic.to_owned(),
            keys.clone(),
            payload.clone(),
            next.clone(),
            bar.clone(),
        );
        let (total, batch) = (args.messages, args.batch as u64);
        tasks.spawn(async move {
            loop {
                let from = next.fetch_add(batch, Ordering::Relaxed);
                if from >= total {
                    return Ok::<(), mq::Error>(());
                }
                let to = (from + batch).min(total);
                let messages = (from..to)
                    .map(|i| message(&topic, payload.clone(), i, &keys))
                    .collect();
                producer.send_batch(messages).await?;
                bar.inc(to - from);
            }
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.map_err(|e| mq::Error::Rejected(format!("producer task failed: {e}")))??;
    }
    let elapsed = start.elapsed();
    bar.finish_and_clear();
    Ok(elapsed)
}

async fn consume(
    client: &Client,
    topic: &str,
    args: &BenchArgs,
    url: &str,
) -> mq::Result<Duration> {
    let bar = progress(args, args.messages, &format!("{url} consume"));
    let handled = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let consumer = {
        let (handled, bar) = (handled.clone(), bar.clone());
        client
            .consumer(topic, GROUP)
            .concurrency(args.concurrency)
            .prefetch((args.concurrency * 256).max(1024))
            .run(handler_fn(move |_d: Delivery| {
                handled.fetch_add(1, Ordering::Relaxed);
                bar.inc(1);
                async { HandlerResult::Ok(()) }
            }))
            .await?
    };
    while handled.load(Ordering::Relaxed) < args.messages {
        if consumer.is_finished() {
            return Err(mq::Error::Rejected("the consumer stopped early".into()));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let elapsed = start.elapsed();
    consumer.shutdown().await?;
    bar.finish_and_clear();
    Ok(elapsed)
}

/// Publishes at `rate` for `latency_seconds`, stamping the send time into
/// each payload; the handler records the publish-to-handler time.
async fn latency_phase(
    client: &Client,
    topic: &str,
    args: &BenchArgs,
    url: &str,
) -> mq::Result<Histogram<u64>> {
    let total = args.rate * args.latency_seconds;
    let bar = progress(args, total, &format!("{url} latency"));
    let histogram = Arc::new(Mutex::new(
        Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)
            .map_err(|e| mq::Error::Rejected(e.to_string()))?,
    ));
    let handled = Arc::new(AtomicU64::new(0));
    let consumer = {
        let (histogram, handled, bar) = (histogram.clone(), handled.clone(), bar.clone());
        client
            .consumer(topic, GROUP)
            .concurrency(args.concurrency)
            .run(handler_fn(move |d: Delivery| {
                let sent = d
                    .payload()
                    .get(..8)
                    .map_or(0, |b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])));
                let micros = now_nanos().saturating_sub(sent) / 1_000;
                let _ = histogram.lock().record(micros.max(1));
                handled.fetch_add(1, Ordering::Relaxed);
                bar.inc(1);
                async { HandlerResult::Ok(()) }
            }))
            .await?
    };
    let producer = client.producer();
    let keys: Vec<Arc<str>> = (0..args.keys)
        .map(|k| Arc::from(format!("key-{k}")))
        .collect();
    // Send in 1 ms ticks so the rate is smooth, not bursts of a second's worth.
    let per_tick = (args.rate / 1_000).max(1);
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut sent = 0u64;
    while sent < total {
        tick.tick().await;
        let n = per_tick.min(total - sent);
        let messages = (sent..sent + n)
            .map(|i| {
                let mut payload = vec![b'x'; args.size];
                payload[..8].copy_from_slice(&now_nanos().to_le_bytes());
                message(topic, payload.into(), i, &keys)
            })
            .collect();
        producer.send_batch(messages).await?;
        sent += n;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while handled.load(Ordering::Relaxed) < total && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    consumer.shutdown().await?;
    bar.finish_and_clear();
    let histogram = histogram.lock().clone();
    Ok(histogram)
}
