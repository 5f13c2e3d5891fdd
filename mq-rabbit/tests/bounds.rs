//! What a member holds stays within its bounds at the broker, and lag
//! never reads below the backlog, both checked against what the broker
//! itself reports (`rabbitmqctl list_queues`).

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use mq_core::{handler_fn, Delivery, HandlerResult, Message, StartFrom, TopicSpec};
use tokio::sync::Semaphore;

/// Messages delivered and unacknowledged, summed over the queues of
/// `group` on `topic` (its shard queues and its retry topic's), as the
/// broker counts them. The broker refreshes these figures of quorum
/// queues every few seconds.
async fn unacked_at_broker(topic: &str, group: &str) -> u64 {
    let listed = common::rabbitmqctl(&[
        "list_queues",
        "-q",
        "--no-table-headers",
        "name",
        "messages_unacknowledged",
    ])
    .await
    .expect("list_queues");
    listed
        .lines()
        .filter_map(|line| line.split_once('\t'))
        .filter(|(name, _)| name.contains(topic) && name.contains(&format!("/{group}/")))
        .map(|(_, count)| count.trim().parse::<u64>().expect("a count"))
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefetch_bound_holds_at_the_broker() {
    let Some(client) = common::client("").await else {
        return;
    };
    let topic = common::unique("prefetch");
    let group = "held";
    let admin = client.admin();
    admin
        .ensure_topic(&topic, TopicSpec::new(4))
        .await
        .expect("ensure_topic");
    admin
        .ensure_group(&topic, group, StartFrom::Earliest)
        .await
        .expect("ensure_group");
    // 100 per shard: each could fill a prefetch of 40 on its own.
    let batch = (0..400)
        .map(|i| Message::new(topic.as_str(), format!("{i}")).with_key(format!("k{}", i % 97)))
        .collect();
    client
        .producer()
        .send_batch(batch)
        .await
        .expect("send_batch");

    let prefetch = 40;
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
    // More workers than the bound, so the runtime takes all it may.
    let consumer = client
        .consumer(&topic, group)
        .prefetch(prefetch)
        .concurrency(2 * prefetch)
        .run(handler)
        .await
        .expect("run");
    // Until the runtime holds all the driver lets it have (the bound is
    // split over the member's queues, the empty retry queue's share too).
    let mut last = 0;
    let steady = mq_testkit::wait_until(Duration::from_secs(20), || {
        let now = started.load(Ordering::SeqCst);
        let steady = now > 0 && now == last;
        last = now;
        async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            steady
        }
    })
    .await;
    assert!(steady, "the handlers never settled at a count");
    // The most the broker reports unacked over a while longer than its
    // statistics interval (5 s).
    let mut unacked = 0;
    let watch = tokio::time::Instant::now();
    while watch.elapsed() < Duration::from_secs(8) {
        unacked = unacked.max(unacked_at_broker(&topic, group).await);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    gate.add_permits(Semaphore::MAX_PERMITS / 2);
    consumer.shutdown().await.expect("shutdown");
    client.close().await.expect("close");
    assert!(
        unacked <= prefetch as u64,
        "the broker had handed the member {unacked} unacked messages with prefetch {prefetch}"
    );
    assert!(unacked > 0, "nothing unacked: the test proves nothing");
}

/// Large messages, so that deliveries the broker has sent take a while to
/// arrive, and a member holding them that leaves, so that they take a
/// while to go back: lag must count them all the time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lag_never_reads_below_the_backlog() {
    let Some(client) = common::client("").await else {
        return;
    };
    let topic = common::unique("lag");
    let group = "behind";
    let admin = client.admin();
    admin
        .ensure_topic(&topic, TopicSpec::new(1))
        .await
        .expect("ensure_topic");
    admin
        .ensure_group(&topic, group, StartFrom::Earliest)
        .await
        .expect("ensure_group");
    let total = 60u64;
    let payload = vec![7u8; 1024 * 1024];
    let batch = (0..total)
        .map(|_| Message::new(topic.as_str(), payload.clone()))
        .collect();
    client
        .producer()
        .send_batch(batch)
        .await
        .expect("send_batch");

    // Nothing is ever acked below, so the backlog stays `total`: sampled
    // from before the member joins until after it has left.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let sampler = {
        let (client, topic) = (client.clone(), topic.clone());
        tokio::spawn(async move {
            let mut samples = Vec::new();
            while !*stopped.borrow() {
                samples.push(client.admin().total_lag(&topic, group).await.expect("lag"));
            }
            samples
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The bound is split between the shard queue and the retry queue.
    let mut stream = client
        .consumer(&topic, group)
        .prefetch(80)
        .subscribe()
        .await
        .expect("subscribe");
    let mut held = Vec::new();
    while held.len() < 40 {
        let next = tokio::time::timeout(Duration::from_secs(30), stream.next())
            .await
            .expect("a delivery")
            .expect("open")
            .expect("ok");
        held.push(next);
    }
    stream.close().await.expect("close");
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.send_replace(true);
    let samples = sampler.await.expect("sampler");
    drop(held);
    let given_back = mq_testkit::wait_until(Duration::from_secs(20), || {
        let topic = topic.clone();
        async move { unacked_at_broker(&topic, group).await == 0 }
    })
    .await;
    client.close().await.expect("close");
    let lowest = samples.iter().copied().min().unwrap_or(total);
    assert!(
        lowest >= total,
        "lag read {lowest} with {total} unacked (of {} samples, {} low)",
        samples.len(),
        samples.iter().filter(|s| **s < total).count()
    );
    assert!(given_back, "the closed member still held messages");
}
