//! Group membership: members joining and leaving while keyed messages
//! flow (rebalances), and what a group created ahead of time or a new
//! group starting from the earliest message sees.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use mq_core::{handler_fn, ConsumerHandle, Delivery, HandlerResult, Message, StartFrom, TopicSpec};
use parking_lot::Mutex;

use super::SOON;
use crate::support::{wait_quiescent, QUIET};
use crate::{wait_until, Context, Recorder, Skip};

/// What the members of one group did, key by key.
#[derive(Default)]
struct KeyLog {
    /// Sequence numbers per key, in the order handlers started on them.
    order: HashMap<String, Vec<u32>>,
    /// Keys some handler is working on right now.
    busy: HashSet<String>,
    /// Times a key was started while another handler had it.
    overlaps: usize,
    handled: usize,
}

type SharedLog = Arc<Mutex<KeyLog>>;

async fn start_member(ctx: &Context, topic: &str, group: &str, log: &SharedLog) -> ConsumerHandle {
    let log = log.clone();
    ctx.client
        .consumer(topic, group)
        .concurrency(8)
        .prefetch(64)
        .shutdown_timeout(Duration::from_secs(10))
        .run(handler_fn(move |d: Delivery| {
            let log = log.clone();
            async move {
                let key = d.key().unwrap_or_default().to_owned();
                let seq: u32 = d.message().payload_str()?.parse().unwrap_or(u32::MAX);
                {
                    let mut log = log.lock();
                    if !log.busy.insert(key.clone()) {
                        log.overlaps += 1;
                    }
                    log.order.entry(key.clone()).or_default().push(seq);
                }
                // Long enough that revocations find handlers in flight.
                tokio::time::sleep(Duration::from_millis(2)).await;
                let mut log = log.lock();
                log.busy.remove(&key);
                log.handled += 1;
                HandlerResult::Ok(())
            }
        }))
        .await
        .unwrap_or_else(|e| panic!("starting a member of {group}: {e}"))
}

/// Publishes `per_key` messages for each of `keys` keys in rounds, so
/// every key's messages are spread over the whole run.
async fn publish_rounds(ctx: &Context, topic: &str, keys: usize, per_key: u32, pause: Duration) {
    let producer = ctx.client.producer();
    for seq in 0..per_key {
        let batch = (0..keys)
            .map(|k| Message::new(topic, seq.to_string()).with_key(format!("key-{k}")))
            .collect();
        producer.send_batch(batch).await.expect("send_batch");
        tokio::time::sleep(pause).await;
    }
}

/// Waits until `total` messages were handled and the group is quiet.
async fn wait_all_handled(ctx: &Context, topic: &str, group: &str, log: &SharedLog, total: usize) {
    assert!(
        wait_until(SOON, || async { log.lock().handled >= total }).await,
        "only {} of {total} handled",
        log.lock().handled
    );
    let quiet = wait_quiescent(&ctx.client, topic, group, QUIET, SOON, || {
        log.lock().handled
    })
    .await;
    assert!(quiet, "the group never went quiet");
}

/// Every key handled in order (a redelivery may repeat the last number,
/// never go back further), every message at least once, no key twice at once.
fn assert_per_key_order(log: &KeyLog, keys: usize, per_key: u32) {
    assert_eq!(log.overlaps, 0, "a key was handled by two handlers at once");
    assert_eq!(log.order.len(), keys, "some keys were never handled");
    for (key, seqs) in &log.order {
        let mut next = 0u32;
        for &seq in seqs {
            assert!(
                seq == next || seq + 1 == next,
                "{key} went from {} to {seq}: {seqs:?}",
                next.saturating_sub(1)
            );
            next = seq + 1;
        }
        assert_eq!(next, per_key, "{key} stopped at {next}: {seqs:?}");
    }
}

/// A member joins and another leaves mid-stream, then a third joins, while
/// keyed messages flow: per-key order holds and nothing is lost.
pub async fn members_join_and_leave_mid_stream(ctx: &Context) -> Result<(), Skip> {
    let topic = ctx.topic("churn");
    let group = ctx.group("churn");
    ctx.client
        .admin()
        .ensure_topic(&topic, TopicSpec::new(8))
        .await
        .expect("ensure_topic");
    ctx.join(&topic, &group).await;
    let log = SharedLog::default();
    let (keys, per_key) = (32, 40u32);
    let first = start_member(ctx, &topic, &group, &log).await;
    let publishing = publish_rounds(ctx, &topic, keys, per_key, Duration::from_millis(25));
    let churn = async {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let second = start_member(ctx, &topic, &group, &log).await;
        tokio::time::sleep(Duration::from_millis(250)).await;
        first.shutdown().await.expect("the first member's shutdown");
        tokio::time::sleep(Duration::from_millis(150)).await;
        let third = start_member(ctx, &topic, &group, &log).await;
        (second, third)
    };
    let ((), (second, third)) = tokio::join!(publishing, churn);
    wait_all_handled(ctx, &topic, &group, &log, keys * per_key as usize).await;
    second.shutdown().await.expect("shutdown");
    third.shutdown().await.expect("shutdown");
    assert_per_key_order(&log.lock(), keys, per_key);
    Ok(())
}

/// Several members start together, two stop together mid-stream and two
/// more start together: every call succeeds, per-key order holds, nothing
/// is lost.
pub async fn members_start_and_stop_concurrently(ctx: &Context) -> Result<(), Skip> {
    let topic = ctx.topic("crowd");
    let group = ctx.group("crowd");
    ctx.client
        .admin()
        .ensure_topic(&topic, TopicSpec::new(8))
        .await
        .expect("ensure_topic");
    let log = SharedLog::default();
    let mut members = join_all((0..4).map(|_| start_member(ctx, &topic, &group, &log))).await;
    let (keys, per_key) = (24, 30u32);
    let publishing = publish_rounds(ctx, &topic, keys, per_key, Duration::from_millis(20));
    let churn = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let leaving: Vec<ConsumerHandle> = members.drain(..2).collect();
        for result in join_all(leaving.into_iter().map(ConsumerHandle::shutdown)).await {
            result.expect("a concurrent shutdown");
        }
        members.extend(join_all((0..2).map(|_| start_member(ctx, &topic, &group, &log))).await);
    };
    tokio::join!(publishing, churn);
    wait_all_handled(ctx, &topic, &group, &log, keys * per_key as usize).await;
    for result in join_all(members.into_iter().map(ConsumerHandle::shutdown)).await {
        result.expect("a concurrent shutdown");
    }
    assert_per_key_order(&log.lock(), keys, per_key);
    Ok(())
}

/// A group created with `ensure_group` before anything is published keeps
/// every message for a consumer started later, even one asking for the
/// latest messages only (the group, not the consumer, decides where it is).
pub async fn group_created_before_publishing(ctx: &Context) -> Result<(), Skip> {
    let topic = ctx.topic("ahead");
    let group = ctx.group("ahead");
    let admin = ctx.client.admin();
    admin
        .ensure_group(&topic, &group, StartFrom::Latest)
        .await
        .expect("ensure_group");
    // A second call leaves the group where it is.
    admin
        .ensure_group(&topic, &group, StartFrom::Latest)
        .await
        .expect("ensure_group again");
    let n = 10;
    let batch = (0..n)
        .map(|i| Message::new(topic.as_str(), format!("{i}")))
        .collect();
    ctx.client
        .producer()
        .send_batch(batch)
        .await
        .expect("send_batch");
    assert_eq!(
        admin.total_lag(&topic, &group).await.expect("lag"),
        n as u64,
        "the group was created before publishing, so it holds every message"
    );
    let recorder = Recorder::new();
    let consumer = ctx
        .client
        .consumer(&topic, &group)
        .start_from(StartFrom::Latest)
        .run(recorder.handler())
        .await
        .expect("run");
    assert!(
        recorder.wait_for(n, SOON).await,
        "only {} of {n}",
        recorder.len()
    );
    let quiet = wait_quiescent(&ctx.client, &topic, &group, QUIET, SOON, || recorder.len()).await;
    assert!(quiet, "the group never went quiet");
    consumer.shutdown().await.expect("shutdown");
    assert_eq!(recorder.len(), n, "each message once");
    Ok(())
}

/// A new group starting from the earliest message sees what the backend's
/// capability table says: the messages published before it existed where
/// the broker retains them for groups to come, else only later ones.
pub async fn new_group_from_earliest(ctx: &Context) -> Result<(), Skip> {
    let topic = ctx.topic("late");
    let existing = ctx.group("existing");
    let late = ctx.group("late");
    ctx.join(&topic, &existing).await;
    let producer = ctx.client.producer();
    let before = 5;
    for i in 0..before {
        producer
            .send(Message::new(topic.as_str(), format!("before-{i}")))
            .await
            .expect("send");
    }
    let recorder = Recorder::new();
    let consumer = ctx
        .client
        .consumer(&topic, &late)
        .start_from(StartFrom::Earliest)
        .run(recorder.handler())
        .await
        .expect("run");
    let after = 3;
    for i in 0..after {
        producer
            .send(Message::new(topic.as_str(), format!("after-{i}")))
            .await
            .expect("send");
    }
    let retains = ctx.capabilities().retains_before_group;
    let expected = if retains { before + after } else { after };
    assert!(
        recorder.wait_for(expected, SOON).await,
        "only {} of {expected}",
        recorder.len()
    );
    let quiet = wait_quiescent(&ctx.client, &topic, &late, QUIET, SOON, || recorder.len()).await;
    assert!(quiet, "the group never went quiet");
    consumer.shutdown().await.expect("shutdown");
    let payloads: HashSet<String> = recorder
        .seen()
        .iter()
        .map(|s| {
            s.delivery
                .message()
                .payload_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    assert_eq!(recorder.len(), expected, "{payloads:?}");
    assert_eq!(
        payloads.iter().any(|p| p.starts_with("before-")),
        retains,
        "retains_before_group is {retains}, the group saw {payloads:?}"
    );
    Ok(())
}
