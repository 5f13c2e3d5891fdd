//! The consume rows: the driver's own fetch + ack, and the client runtime's
//! handler and batch handler over the same messages.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use mq_core::driver::{Driver, SubscribeSpec};
use mq_core::{
    batch_handler_fn, handler_fn, BatchOptions, Client, Delivery, HandlerResult, TopicSpec,
};
use mq_native::NativeDriver;

use crate::produce::produce_keyed;
use crate::{cpu_secs, Row, BATCH, CONCURRENCY, CONSUME_KEYS, PREFETCH};

/// Reads `total` messages with a fresh group straight from the driver.
pub(crate) async fn consume_raw(driver: &NativeDriver, topic: &str, total: u64) -> f64 {
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
pub(crate) struct Tally {
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
pub(crate) async fn consume_handler(client: &Client, topic: &str, total: u64) -> f64 {
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
pub(crate) async fn consume_batch(client: &Client, topic: &str, total: u64) -> f64 {
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
pub(crate) async fn consume_rows(
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
