//! Publish-to-handler latency and delayed-message lateness.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mq_core::driver::{Driver, StartFrom, SubscribeSpec};
use mq_core::{handler_fn, Client, Delivery, HandlerResult, Message, MessageId, TopicSpec};
use mq_native::NativeDriver;

use crate::PAYLOAD;

/// Publishes at `rate` msgs/s for `secs` and measures send-to-handler latency.
pub(crate) async fn latency(
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
pub(crate) async fn delay_lateness(
    driver: &NativeDriver,
    topic: &str,
    count: u64,
) -> [Duration; 3] {
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

/// The floor under any `fsync=always` latency: `count` appends of 8 KiB
/// (about one 50-message batch as the engine writes it), each followed by
/// an fdatasync, into a file of `dir`; p50, p99 and p99.9.
pub(crate) fn fsync_latency(dir: &Path, count: usize) -> [Duration; 3] {
    let path = dir.join("fsync-probe");
    let mut file = std::fs::File::create(&path).expect("probe file");
    let block = vec![b'f'; 8192];
    let mut took: Vec<Duration> = (0..count)
        .map(|_| {
            let start = Instant::now();
            file.write_all(&block).expect("append");
            file.sync_data().expect("fdatasync");
            start.elapsed()
        })
        .collect();
    drop(file);
    let _ = std::fs::remove_file(&path);
    took.sort_unstable();
    let pct = |p: f64| took[((took.len() as f64 * p) as usize).min(took.len() - 1)];
    [pct(0.5), pct(0.99), pct(0.999)]
}
