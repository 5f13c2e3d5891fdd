//! Shards change hands between members without overlap: a member that
//! loses a shard reports the revocation, stops returning the shard's
//! records and gives back what it holds only once its runtime has let go,
//! so the next owner continues each key exactly where the last one stopped.
//! Also checks the broker behaviour that relies on.

mod common;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use mq_core::driver::{
    partition_for_key, DriverSubscription, RawDelivery, Rebalance, SubscribeSpec, TopicPartition,
};
use mq_core::{Client, Message, StartFrom, TopicSpec};
use parking_lot::Mutex;
use tokio::sync::watch;

/// Who handled what, in handling order: (member, key, sequence number).
type Log = Arc<Mutex<Vec<(&'static str, String, u32)>>>;

/// What one member saw of its rebalances.
#[derive(Debug, Default)]
struct Seen {
    assigned: usize,
    revoked: usize,
    /// Records fetched from a shard after its revocation was reported.
    after_revoke: usize,
}

/// A minimal runtime over a driver subscription: handles one delivery at
/// a time and acks it before the next, so nothing is in flight when it
/// serves a revocation; drops what it buffered of revoked shards.
async fn run_member(
    name: &'static str,
    subscription: Box<dyn DriverSubscription>,
    log: Log,
    mut stop: watch::Receiver<bool>,
) -> Seen {
    let mut seen = Seen::default();
    let mut buffered: VecDeque<RawDelivery> = VecDeque::new();
    let mut revoked: HashSet<TopicPartition> = HashSet::new();
    loop {
        tokio::select! {
            biased;
            _ = stopped(&mut stop) => break,
            event = subscription.rebalance() => match event {
                Some(Rebalance::Assigned(partitions)) => {
                    seen.assigned += 1;
                    for tp in &partitions {
                        revoked.remove(tp);
                    }
                }
                Some(Rebalance::Revoked(revocation)) => {
                    seen.revoked += 1;
                    let gone = revocation.partitions().to_vec();
                    buffered.retain(|d| !gone.iter().any(|tp| d.token.is_in(tp)));
                    revoked.extend(gone);
                    revocation.complete();
                }
                Some(_) => {}
                None => break,
            },
            fetched = subscription.fetch(8), if buffered.is_empty() => {
                for delivery in fetched.expect("fetch") {
                    if revoked.iter().any(|tp| delivery.token.is_in(tp)) {
                        seen.after_revoke += 1;
                    } else {
                        buffered.push_back(delivery);
                    }
                }
            }
            _ = std::future::ready(()), if !buffered.is_empty() => {
                let delivery = buffered.pop_front().expect("a buffered delivery");
                tokio::time::sleep(Duration::from_millis(3)).await;
                let key = delivery.message.key().expect("key").to_owned();
                let seq = delivery.message.payload_str().expect("payload").parse().expect("seq");
                log.lock().push((name, key, seq));
                subscription.ack(vec![delivery.token]).await.expect("ack");
            }
        }
    }
    subscription.close().await.expect("close");
    seen
}

/// Resolves once told to stop; holds no watch guard across awaits.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

fn start_member(
    name: &'static str,
    client: &Client,
    topic: &str,
    group: &str,
    log: &Log,
) -> (watch::Sender<bool>, tokio::task::JoinHandle<Seen>) {
    let (stop, stop_rx) = watch::channel(false);
    let driver = client.driver().clone();
    let spec = SubscribeSpec::new(vec![topic.to_owned()], group).with_prefetch(16);
    let log = log.clone();
    let task = tokio::spawn(async move {
        let subscription = driver.subscribe(spec).await.expect("subscribe");
        run_member(name, subscription, log, stop_rx).await
    });
    (stop, task)
}

/// Two keys per shard of a two-shard topic.
fn keys() -> Vec<String> {
    let mut by_shard: HashMap<u32, Vec<String>> = HashMap::new();
    for i in 0.. {
        let key = format!("key-{i}");
        let shard = by_shard.entry(partition_for_key(&key, 2)).or_default();
        if shard.len() < 2 {
            shard.push(key);
        }
        if by_shard.values().all(|k| k.len() == 2) && by_shard.len() == 2 {
            break;
        }
    }
    by_shard.into_values().flatten().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_hand_shards_over_without_overlap() {
    // Two clients: the members live on connections of their own, as in two processes.
    let Some(first) = common::client("member_heartbeat=200ms").await else {
        return;
    };
    let second = common::client("member_heartbeat=200ms")
        .await
        .expect("a second client");
    let topic = common::unique("handover");
    let group = "owners";
    first
        .admin()
        .ensure_topic(&topic, TopicSpec::new(2))
        .await
        .expect("ensure_topic");
    first
        .admin()
        .ensure_group(&topic, group, StartFrom::Earliest)
        .await
        .expect("ensure_group");
    let keys = keys();
    let per_key = 150u32;
    let log = Log::default();

    let (stop_a, a) = start_member("a", &first, &topic, group, &log);
    let publishing = {
        let (producer, topic, keys) = (first.producer(), topic.clone(), keys.clone());
        tokio::spawn(async move {
            for seq in 0..per_key {
                let batch = keys
                    .iter()
                    .map(|k| Message::new(topic.as_str(), seq.to_string()).with_key(k.as_str()))
                    .collect();
                producer.send_batch(batch).await.expect("send_batch");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    // b joins mid-stream and takes a shard from a; then a leaves and b
    // takes the other one.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let (stop_b, b) = start_member("b", &second, &topic, group, &log);
    tokio::time::sleep(Duration::from_millis(800)).await;
    stop_a.send_replace(true);
    let seen_a = a.await.expect("member a");
    publishing.await.expect("publishing");

    let total = keys.len() * per_key as usize;
    let deadline = Instant::now() + Duration::from_secs(30);
    while log.lock().len() < total && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Anything handled twice would show up now.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop_b.send_replace(true);
    let seen_b = b.await.expect("member b");

    let log = log.lock().clone();
    let mut per_key_log: HashMap<&str, Vec<(&str, u32)>> = HashMap::new();
    for (member, key, seq) in &log {
        per_key_log.entry(key).or_default().push((member, *seq));
    }
    for key in &keys {
        let handled = per_key_log.get(key.as_str()).cloned().unwrap_or_default();
        let seqs: Vec<u32> = handled.iter().map(|(_, s)| *s).collect();
        assert_eq!(
            seqs,
            (0..per_key).collect::<Vec<_>>(),
            "{key}: every message once, in order"
        );
        let owners: Vec<&str> = handled.iter().map(|(m, _)| *m).collect();
        let changes = owners.windows(2).filter(|w| w[0] != w[1]).count();
        assert!(changes <= 1, "{key} went back and forth: {owners:?}");
        assert_eq!(owners.last(), Some(&"b"), "b owns every shard at the end");
    }
    assert!(log.iter().any(|(m, _, _)| *m == "a"), "a handled nothing");
    assert!(seen_a.revoked >= 1, "a gave no shard up: {seen_a:?}");
    assert_eq!(
        seen_a.after_revoke, 0,
        "a fetched revoked records: {seen_a:?}"
    );
    assert_eq!(
        seen_b.after_revoke, 0,
        "b fetched revoked records: {seen_b:?}"
    );
    assert!(seen_b.assigned >= 1, "b was never assigned: {seen_b:?}");

    first.close().await.expect("close");
    second.close().await.expect("close");
}

/// What the hand-over relies on: closing the channel of the active single
/// consumer of a quorum queue returns the messages it held unacked, in
/// order and ahead of later ones, before the next consumer gets any.
#[tokio::test]
async fn closing_the_active_consumers_channel_hands_on_in_order() {
    let Some(client) = common::client("").await else {
        return;
    };
    client.close().await.expect("close");
    let connection = Connection::connect(&common::url(), ConnectionProperties::default())
        .await
        .expect("connect");
    let setup = connection.create_channel().await.expect("channel");
    let queue = common::unique("mq-test-sac");
    let mut arguments = FieldTable::default();
    arguments.insert(
        "x-queue-type".into(),
        AMQPValue::LongString(LongString::from("quorum")),
    );
    arguments.insert("x-single-active-consumer".into(), AMQPValue::Boolean(true));
    setup
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            arguments,
        )
        .await
        .expect("declare");
    setup
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirms");
    let n = 30u32;
    for i in 0..n {
        setup
            .basic_publish(
                "".into(),
                queue.as_str().into(),
                BasicPublishOptions::default(),
                i.to_string().as_bytes(),
                BasicProperties::default().with_delivery_mode(2),
            )
            .await
            .expect("publish")
            .await
            .expect("confirm");
    }
    let consume = |tag: &'static str| {
        let (connection, queue) = (&connection, queue.clone());
        async move {
            let channel = connection.create_channel().await.expect("channel");
            channel
                .basic_qos(5, BasicQosOptions::default())
                .await
                .expect("qos");
            let consumer = channel
                .basic_consume(
                    queue.as_str().into(),
                    tag.into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await
                .expect("consume");
            (channel, consumer)
        }
    };
    let (first_channel, mut first) = consume("first").await;
    let (second_channel, mut second) = consume("second").await;
    // The first takes five, acks three of them out of order, and goes.
    let mut held = Vec::new();
    while held.len() < 5 {
        let delivery = first.next().await.expect("a delivery").expect("delivery");
        held.push(delivery);
    }
    for index in [0, 1, 3] {
        first_channel
            .basic_ack(held[index].delivery_tag, BasicAckOptions::default())
            .await
            .expect("ack");
    }
    first_channel
        .close(200, "bye".into())
        .await
        .expect("close the first channel");
    let mut got = Vec::new();
    while got.len() < (n - 3) as usize {
        let delivery = tokio::time::timeout(Duration::from_secs(10), second.next())
            .await
            .expect("the second consumer is activated")
            .expect("a delivery")
            .expect("delivery");
        got.push(
            String::from_utf8_lossy(&delivery.data)
                .parse::<u32>()
                .expect("number"),
        );
        second_channel
            .basic_ack(delivery.delivery_tag, BasicAckOptions::default())
            .await
            .expect("ack");
    }
    let expected: Vec<u32> = (0..n).filter(|i| ![0, 1, 3].contains(i)).collect();
    assert_eq!(got, expected);
    setup
        .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
        .await
        .expect("delete");
    let _ = connection.close(200, "bye".into()).await;
}
