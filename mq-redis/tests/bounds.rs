//! A member never has more records pending in Redis than its prefetch
//! bound, checked with `XPENDING` against a real Redis
//! (`MQ_TEST_REDIS_URL`, default `redis://127.0.0.1:6379/0`), under a key
//! prefix of its own.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use mq_core::driver::StartFrom;
use mq_core::{handler_fn, Client, Config, Delivery, HandlerResult, Message, TopicSpec};
use mq_redis::RedisDriver;
use tokio::sync::Semaphore;

fn base_url() -> String {
    std::env::var("MQ_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".to_owned())
}

/// A client under a key prefix unique to this run, and the prefix.
async fn client() -> Option<(Client, String)> {
    let prefix = format!("mqtest-{}", uuid::Uuid::now_v7().simple());
    let config = Config::from_url(&format!("{}?prefix={prefix}", base_url())).expect("url");
    match RedisDriver::connect(&config).await {
        Ok(driver) => Some((Client::new(driver), prefix)),
        Err(e) if mq_testkit::require_brokers() => {
            panic!("MQ_REQUIRE_BROKERS=1 but redis is unreachable: {e}")
        }
        Err(e) => {
            eprintln!("SKIPPED: no redis ({e})");
            None
        }
    }
}

/// Records of `group` pending (delivered, unacked) over the streams of
/// the topics given with their partition counts.
async fn pending(prefix: &str, topics: &[(&str, u32)], group: &str) -> u64 {
    let client = redis::Client::open(base_url()).expect("redis url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis connection");
    let mut total = 0;
    for (topic, partitions) in topics {
        for p in 0..*partitions {
            let stream = format!("{prefix}:{{{topic}}}:s:{p}");
            let summary: redis::Value = redis::cmd("XPENDING")
                .arg(&stream)
                .arg(group)
                .query_async(&mut conn)
                .await
                .expect("XPENDING");
            if let redis::Value::Array(parts) = summary {
                if let Some(redis::Value::Int(count)) = parts.first() {
                    total += *count as u64;
                }
            }
        }
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_never_exceeds_prefetch() {
    let Some((client, prefix)) = client().await else {
        return;
    };
    let (topic, group) = ("bounds", "held");
    let admin = client.admin();
    admin
        .ensure_topic(topic, TopicSpec::new(4))
        .await
        .expect("ensure_topic");
    admin
        .ensure_group(topic, group, StartFrom::Earliest)
        .await
        .expect("ensure_group");
    let batch = (0..200)
        .map(|i| Message::new(topic, format!("{i}")).with_key(format!("k{}", i % 97)))
        .collect();
    client
        .producer()
        .send_batch(batch)
        .await
        .expect("send_batch");

    // Not a multiple of the five streams read (four partitions and the
    // retry topic): reads of the remainder must not round up.
    let prefetch = 7;
    let gate = Arc::new(Semaphore::new(0));
    let started = Arc::new(AtomicUsize::new(0));
    let handler = {
        let (gate, started) = (gate.clone(), started.clone());
        handler_fn(move |_d: Delivery| {
            let (gate, started) = (gate.clone(), started.clone());
            async move {
                started.fetch_add(1, Ordering::SeqCst);
                let _pass = gate.acquire().await;
                HandlerResult::Ok(())
            }
        })
    };
    let consumer = client
        .consumer(topic, group)
        .prefetch(prefetch)
        .concurrency(4 * prefetch)
        .run(handler)
        .await
        .expect("run");
    assert!(
        mq_testkit::wait_until(Duration::from_secs(20), || async {
            started.load(Ordering::SeqCst) >= prefetch
        })
        .await,
        "only {} handlers started",
        started.load(Ordering::SeqCst)
    );
    // The reads the runtime asked for have come back by now.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let retry = client
        .capabilities()
        .names
        .internal("retry", &[group, topic]);
    let held = pending(&prefix, &[(topic, 4), (&retry, 1)], group).await;
    gate.add_permits(Semaphore::MAX_PERMITS / 2);
    consumer.shutdown().await.expect("shutdown");
    for topic in [topic, retry.as_str()] {
        client
            .driver()
            .delete_topic(topic)
            .await
            .expect("delete_topic");
    }
    assert!(
        held <= prefetch as u64,
        "{held} records pending in Redis with prefetch {prefetch}"
    );
    assert!(held >= prefetch as u64, "the bound was never used: {held}");
}
