//! Bounds seen from the broker's side: what a member holds never exceeds
//! its prefetch, even counting what the driver read ahead, and lag never
//! reads below the backlog, also while deliveries stream in or go back.

use std::time::Duration;

use futures::StreamExt;
use mq_core::{Client, Delivery, Message, Subscription, TopicSpec};

use super::SOON;
use crate::{wait_quiescent, wait_until, Context, Recorder, Skip, QUIET};

const PARTITIONS: u32 = 4;

/// A topic of [`PARTITIONS`] partitions with `group` on it, holding `n`
/// keyed messages spread over all partitions.
async fn backlog(ctx: &Context, name: &str, group: &str, n: usize) -> String {
    let topic = ctx.topic(name);
    ctx.client
        .admin()
        .ensure_topic(&topic, TopicSpec::new(PARTITIONS))
        .await
        .expect("ensure_topic");
    ctx.join(&topic, group).await;
    let batch = (0..n)
        .map(|i| Message::new(topic.as_str(), format!("{i}")).with_key(format!("k{}", i % 97)))
        .collect();
    ctx.client
        .producer()
        .send_batch(batch)
        .await
        .expect("send_batch");
    topic
}

/// Takes deliveries from `stream` until none comes for a while, without
/// settling them. The first may take as long as joining the group does
/// (a rebalance on Kafka and RocketMQ: seconds under load).
async fn take_all(stream: &mut Subscription, most: usize) -> Vec<Delivery> {
    let mut held = Vec::new();
    while held.len() < most {
        let wait = if held.is_empty() {
            SOON
        } else {
            Duration::from_millis(500)
        };
        match tokio::time::timeout(wait, stream.next()).await {
            Ok(next) => held.push(next.expect("open").expect("ok")),
            Err(_) => break,
        }
    }
    held
}

async fn total_lag(client: &Client, topic: &str, group: &str) -> u64 {
    client
        .admin()
        .total_lag(topic, group)
        .await
        .expect("total_lag")
}

/// A member's prefetch bounds what the broker hands it, not only what the
/// runtime takes from the driver: everything a member held when it left
/// comes back redelivered (attempt 2) to the next one, and that is never
/// more than its prefetch.
pub async fn prefetch_bound_at_the_broker(ctx: &Context) -> Result<(), Skip> {
    let group = ctx.group("broker-bound");
    let n = 200;
    let topic = backlog(ctx, "broker-bound", &group, n).await;
    let prefetch = 10;
    let mut first = ctx
        .client
        .consumer(&topic, &group)
        .prefetch(prefetch)
        .subscribe()
        .await
        .expect("subscribe");
    let held = take_all(&mut first, n).await;
    assert!(
        (1..=prefetch).contains(&held.len()),
        "{} unsettled deliveries with prefetch {prefetch}",
        held.len()
    );
    // Time for a driver or broker to push more than it should.
    tokio::time::sleep(QUIET).await;
    first.close().await.expect("close");
    drop(held);

    let recorder = Recorder::new();
    let next = ctx
        .client
        .consumer(&topic, &group)
        .run(recorder.handler())
        .await
        .expect("run");
    assert!(
        recorder.wait_for(n, SOON).await,
        "{} of {n} after the first member left",
        recorder.len()
    );
    assert!(
        wait_quiescent(&ctx.client, &topic, &group, QUIET, SOON, || recorder.len()).await,
        "never went quiet"
    );
    next.shutdown().await.expect("shutdown");
    let redelivered = recorder
        .seen()
        .iter()
        .filter(|s| s.delivery.attempt() > 1)
        .count();
    assert!(
        redelivered <= prefetch,
        "the first member had been handed {redelivered} messages with prefetch {prefetch}"
    );
    Ok(())
}

/// Lag counts every message not acked: it never reads below the backlog
/// while a member takes deliveries (nothing acked), nor right after it
/// leaves while they go back to the group. Large messages, so deliveries
/// a broker has sent take a while to arrive.
pub async fn lag_never_below_backlog(ctx: &Context) -> Result<(), Skip> {
    let group = ctx.group("backlog");
    let topic = ctx.topic("backlog");
    ctx.client
        .admin()
        .ensure_topic(&topic, TopicSpec::new(PARTITIONS))
        .await
        .expect("ensure_topic");
    ctx.join(&topic, &group).await;
    let total = 64u64;
    let payload = vec![7u8; 256 * 1024];
    for chunk in 0..4 {
        let batch = (0..total / 4)
            .map(|i| {
                Message::new(topic.as_str(), payload.clone()).with_key(format!("k{chunk}-{i}"))
            })
            .collect();
        ctx.client
            .producer()
            .send_batch(batch)
            .await
            .expect("send_batch");
    }
    assert!(
        wait_until(SOON, || async {
            total_lag(&ctx.client, &topic, &group).await == total
        })
        .await,
        "lag never reached {total}: {}",
        total_lag(&ctx.client, &topic, &group).await
    );

    // Sampled from before the member joins until after it has left.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let sampler = {
        let (client, topic, group) = (ctx.client.clone(), topic.clone(), group.clone());
        tokio::spawn(async move {
            let mut lowest = u64::MAX;
            while !*stopped.borrow() {
                lowest = lowest.min(total_lag(&client, &topic, &group).await);
            }
            lowest
        })
    };
    let mut stream = ctx
        .client
        .consumer(&topic, &group)
        .prefetch(40)
        .subscribe()
        .await
        .expect("subscribe");
    let held = take_all(&mut stream, 30).await;
    assert!(!held.is_empty(), "nothing delivered");
    stream.close().await.expect("close");
    tokio::time::sleep(QUIET).await;
    stop.send_replace(true);
    let lowest = sampler.await.expect("sampler");
    drop(held);
    assert!(
        lowest >= total,
        "lag read {lowest} while {total} were unacked"
    );
    Ok(())
}
