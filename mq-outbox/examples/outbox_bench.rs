//! Outbox relay benchmark: PostgreSQL → native log.
//!
//! ```text
//! cargo run --release -p mq-outbox --example outbox_bench
//! ```
//!
//! Measures, on a scratch database of the server at `MQ_TEST_POSTGRES_URL`
//! (default `postgres://root@127.0.0.1:5432/postgres`):
//! - relay throughput: a prefilled backlog drained by one relay into a
//!   native log (fsync per batch);
//! - commit → consumer latency at a steady enqueue rate, the relay woken
//!   by NOTIFY;
//! - both again with `MQ_OUTBOX_BENCH_HISTORY` (default 1,000,000) sent
//!   rows in the table, deleting sent rows (the default) and keeping them
//!   (`keep_sent`).
//!
//! Knobs: `MQ_OUTBOX_BENCH_BACKLOG` (200,000), `MQ_OUTBOX_BENCH_RATE`
//! (5,000 msgs/s), `MQ_OUTBOX_BENCH_SECONDS` (10), `MQ_OUTBOX_BENCH_BATCH` (2,000).

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use mq_core::{Client, Config, Message, MessageId, StartFrom};
use mq_outbox::postgres::PgOutbox;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Executor, PgPool};

type Error = Box<dyn std::error::Error + Send + Sync>;

fn knob(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Row {
    scenario: String,
    value: String,
    target: &'static str,
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let url = std::env::var("MQ_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://root@127.0.0.1:5432/postgres".into());
    let backlog = knob("MQ_OUTBOX_BENCH_BACKLOG", 200_000) as usize;
    let rate = knob("MQ_OUTBOX_BENCH_RATE", 5_000);
    let seconds = knob("MQ_OUTBOX_BENCH_SECONDS", 10);
    let batch = knob("MQ_OUTBOX_BENCH_BATCH", 2_000) as usize;
    let history = knob("MQ_OUTBOX_BENCH_HISTORY", 1_000_000);

    let admin_options = PgConnectOptions::from_str(&url)?;
    let admin = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(admin_options.clone())
        .await?;
    let name = format!("mq_outbox_bench_{}", uuid::Uuid::now_v7().simple());
    admin
        .execute(format!("CREATE DATABASE {name}").as_str())
        .await?;
    let options = admin_options.database(&name);
    let pool = PgPoolOptions::new()
        .max_connections(40)
        .connect_with(options.clone())
        .await?;
    let outbox = PgOutbox::new(pool.clone());
    outbox.migrate().await?;
    let dir = tempfile::tempdir()?;
    // The backend relayed to: a native log by default, or the Redis of
    // `MQ_OUTBOX_BENCH_REDIS` (a redis:// URL).
    let client = match std::env::var("MQ_OUTBOX_BENCH_REDIS") {
        Ok(url) => Client::new(mq_redis::RedisDriver::connect(&Config::from_url(&url)?).await?),
        Err(_) => {
            let config = Config::from_url(&format!("native://{}", dir.path().display()))?;
            Client::new(mq_native::NativeDriver::open(&config).await?)
        }
    };
    println!(
        "database {} (dropped at the end), relaying to {}",
        options.to_url_lossy(),
        client.backend()
    );

    let mut rows = Vec::new();
    let run = async {
        let t = throughput(&pool, &outbox, &client, "bench", backlog, batch, false).await?;
        rows.push(Row {
            scenario: format!("relay throughput, {backlog} backlog, batch {batch}"),
            value: format!("{t:.0} msgs/s"),
            target: "50,000 msgs/s",
        });
        let (p50, p99, max) = latency(
            &pool, &outbox, &client, "latency", rate, seconds, batch, false,
        )
        .await?;
        rows.push(Row {
            scenario: format!("commit → consumer at {rate} msgs/s (NOTIFY)"),
            value: format!("p50 {p50:.1} ms, p99 {p99:.1} ms, max {max:.1} ms"),
            target: "p99 < 50 ms",
        });

        let started = Instant::now();
        fill_history(&pool, history).await?;
        println!(
            "history of {history} sent rows written in {:.1?}",
            started.elapsed()
        );
        let t = throughput(&pool, &outbox, &client, "bench-h", backlog, batch, false).await?;
        rows.push(Row {
            scenario: format!("relay throughput, {history} sent rows in the table"),
            value: format!("{t:.0} msgs/s"),
            target: "no slowdown",
        });
        let t = throughput(&pool, &outbox, &client, "bench-k", backlog, batch, true).await?;
        rows.push(Row {
            scenario: format!(
                "relay throughput, {history} in the table, keep_sent (UPDATE, not DELETE)"
            ),
            value: format!("{t:.0} msgs/s"),
            target: "-",
        });
        let (p50, p99, max) = latency(
            &pool,
            &outbox,
            &client,
            "latency-h",
            rate,
            seconds,
            batch,
            true,
        )
        .await?;
        rows.push(Row {
            scenario: format!(
                "commit → consumer at {rate} msgs/s, {history}+ in the table, keep_sent"
            ),
            value: format!("p50 {p50:.1} ms, p99 {p99:.1} ms, max {max:.1} ms"),
            target: "p99 < 50 ms",
        });
        Ok::<_, Error>(())
    };
    let result = run.await;
    client.close().await?;
    pool.close().await;
    admin
        .execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
        .await?;
    result?;

    println!("\n| scenario | result | target |\n|---|---|---|");
    for row in rows {
        println!("| {} | {} | {} |", row.scenario, row.value, row.target);
    }
    Ok(())
}

/// Writes `history` rows marked sent just now, as a relay keeping sent
/// rows (within their retention) leaves them.
async fn fill_history(pool: &PgPool, history: u64) -> Result<(), Error> {
    let chunk = 1_000_000;
    let mut done = 0;
    while done < history {
        let n = chunk.min(history - done);
        sqlx::query(
            "INSERT INTO mq_outbox (shard, topic, msg_key, payload, message_id, enqueued_at_ms, sent_at_ms) \
             SELECT g % 64, 'history', 'k' || (g % 1000), '\\x00'::bytea, gen_random_uuid()::text, 0, \
                    (extract(epoch from now()) * 1000)::bigint \
             FROM generate_series(1, $1) AS g",
        )
        .bind(n as i64)
        .execute(pool)
        .await?;
        done += n;
    }
    pool.execute("VACUUM ANALYZE mq_outbox").await?;
    Ok(())
}

/// Drains a prefilled backlog of `backlog` messages; msgs/s.
async fn throughput(
    pool: &PgPool,
    outbox: &PgOutbox,
    client: &Client,
    topic: &str,
    backlog: usize,
    batch: usize,
    keep: bool,
) -> Result<f64, Error> {
    for chunk in (0..backlog).collect::<Vec<_>>().chunks(10_000) {
        let mut tx = pool.begin().await?;
        let messages = chunk
            .iter()
            .map(|n| Message::new(topic, vec![b'x'; 100]).with_key(format!("k{}", n % 1000)));
        outbox.enqueue_all(&mut tx, messages).await?;
        tx.commit().await?;
    }
    pool.execute("ANALYZE mq_outbox").await?;
    let mut relay = outbox.relay(client).batch_size(batch);
    if keep {
        relay = relay.keep_sent(Duration::from_secs(24 * 3600));
    }
    let started = Instant::now();
    let published = relay.drain().await?;
    let elapsed = started.elapsed();
    assert_eq!(published, backlog);
    let rate = published as f64 / elapsed.as_secs_f64();
    println!("{topic}: {published} relayed in {elapsed:.2?}: {rate:.0} msgs/s");
    Ok(rate)
}

/// Enqueues at `rate` msgs/s for `seconds` (transactions of 5 messages
/// from 16 writers) with a relay running; commit → consumer p50, p99, max in ms.
#[allow(clippy::too_many_arguments)]
async fn latency(
    pool: &PgPool,
    outbox: &PgOutbox,
    client: &Client,
    topic: &str,
    rate: u64,
    seconds: u64,
    batch: usize,
    keep: bool,
) -> Result<(f64, f64, f64), Error> {
    const PER_TX: u64 = 5;
    const WRITERS: u64 = 16;
    let committed: Arc<Mutex<HashMap<MessageId, Instant>>> = Arc::default();
    let mut stream = client
        .consumer(topic, "bench")
        .start_from(StartFrom::Earliest)
        .prefetch(5000)
        .subscribe()
        .await?;
    let total = (rate * seconds) as usize;
    let reader = tokio::spawn(async move {
        let mut seen: Vec<(MessageId, Instant)> = Vec::with_capacity(total);
        while seen.len() < total {
            match tokio::time::timeout(Duration::from_secs(30), stream.next()).await {
                Ok(Some(Ok(delivery))) => {
                    seen.push((delivery.message().id().unwrap_or_default(), Instant::now()));
                    let _ = delivery.ack().await;
                }
                _ => break,
            }
        }
        let _ = stream.close().await;
        seen
    });
    let mut relay = outbox.relay(client).batch_size(batch);
    if keep {
        relay = relay.keep_sent(Duration::from_secs(24 * 3600));
    }
    let relay = relay.spawn();
    let tx_interval = Duration::from_secs_f64((PER_TX * WRITERS) as f64 / rate as f64);
    let txs_per_writer = total as u64 / PER_TX / WRITERS;
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (pool, outbox, committed, topic) = (
                pool.clone(),
                outbox.clone(),
                committed.clone(),
                topic.to_owned(),
            );
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(tx_interval);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                for t in 0..txs_per_writer {
                    tick.tick().await;
                    let mut tx = pool.begin().await?;
                    let messages = (0..PER_TX).map(|m| {
                        Message::new(topic.as_str(), vec![b'x'; 100])
                            .with_key(format!("w{w}-{}", (t + m) % 50))
                    });
                    let ids = outbox.enqueue_all(&mut tx, messages).await?;
                    tx.commit().await?;
                    let now = Instant::now();
                    let mut committed = committed.lock().unwrap();
                    for id in ids {
                        committed.insert(id, now);
                    }
                }
                Ok::<_, Error>(())
            })
        })
        .collect();
    for writer in writers {
        writer.await??;
    }
    let seen = reader.await?;
    // Joined once every writer is done: a message may reach the consumer
    // before its writer's `commit` returned (latency 0 then).
    let mut latencies: Vec<f64> = {
        let committed = committed.lock().unwrap();
        seen.iter()
            .filter_map(|(id, at)| {
                committed
                    .get(id)
                    .map(|c| at.saturating_duration_since(*c).as_secs_f64() * 1000.0)
            })
            .collect()
    };
    latencies.sort_by(f64::total_cmp);
    relay.shutdown().await?;
    if latencies.len() < total * 9 / 10 {
        let pending = outbox.pending().await?;
        return Err(format!(
            "only {} of {total} messages measured ({} seen, {pending} rows pending)",
            latencies.len(),
            seen.len()
        )
        .into());
    }
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
    let (p50, p99, max) = (at(0.5), at(0.99), at(1.0));
    println!(
        "{topic}: {} messages, p50 {p50:.1} ms, p99 {p99:.1} ms, max {max:.1} ms",
        latencies.len()
    );
    Ok((p50, p99, max))
}
