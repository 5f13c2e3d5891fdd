//! An acked message is never delivered again, whatever else of its batch
//! is given back or left unsettled, on the real broker
//! (`MQ_TEST_ROCKETMQ_URL`): in this process only the message given back
//! comes again, and when its member closes or its queue moves to another
//! member, the next owner gets the messages left unacked and none of those
//! acked around them. Each client is a driver of its own, as another
//! process would be.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use futures::StreamExt;
use mq_core::{Client, Delivery, Message, StartFrom, Subscription, TopicSpec};

/// A topic of `queues` queues holding `payloads` (keyed as `key` says), and
/// a group created before them.
async fn backlog(
    client: &Client,
    queues: u32,
    payloads: &[String],
    key: impl Fn(&str) -> String,
) -> (String, String) {
    let topic = support::unique("again");
    let group = support::unique("again");
    let admin = client.admin();
    admin
        .ensure_topic(&topic, TopicSpec::new(queues))
        .await
        .expect("ensure_topic");
    admin
        .ensure_group(&topic, &group, StartFrom::Earliest)
        .await
        .expect("ensure_group");
    let batch = payloads
        .iter()
        .map(|p| Message::new(topic.as_str(), p.clone()).with_key(key(p)))
        .collect();
    client
        .producer()
        .send_batch(batch)
        .await
        .expect("send_batch");
    (topic, group)
}

async fn stream(client: &Client, topic: &str, group: &str) -> Subscription {
    client
        .consumer(topic, group)
        .prefetch(64)
        .subscribe()
        .await
        .expect("subscribe")
}

fn payload(d: &Delivery) -> String {
    d.message().payload_str().expect("utf-8").to_owned()
}

/// The next `n` deliveries of `stream`, failing after 30 s.
async fn take(stream: &mut Subscription, n: usize) -> Vec<Delivery> {
    let mut out = Vec::new();
    while out.len() < n {
        let next = tokio::time::timeout(Duration::from_secs(30), stream.next())
            .await
            .unwrap_or_else(|_| panic!("only {} of {n} delivered", out.len()));
        out.push(next.expect("stream open").expect("delivery"));
    }
    out
}

/// What `stream` delivers, acked: waits up to `first` for the first
/// delivery, then until nothing came for `quiet` (at most 90 s in all).
async fn drain(stream: &mut Subscription, first: Duration, quiet: Duration) -> Vec<String> {
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    while tokio::time::Instant::now() < deadline {
        let wait = if seen.is_empty() { first } else { quiet };
        match tokio::time::timeout(wait, stream.next()).await {
            Ok(Some(delivery)) => {
                let delivery = delivery.expect("delivery");
                seen.push(payload(&delivery));
                delivery.ack().await.expect("ack");
            }
            Ok(None) | Err(_) => break,
        }
    }
    seen
}

fn numbered(n: usize) -> Vec<String> {
    (0..n).map(|i| i.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_given_back_message_comes_again() {
    let Some(client) = support::client().await else {
        return;
    };
    let sent = numbered(20);
    let (topic, group) = backlog(&client, 1, &sent, |p| {
        format!("k{}", p.parse::<u32>().unwrap_or(0) % 3)
    })
    .await;
    let mut stream = stream(&client, &topic, &group).await;
    let mut deliveries: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    let mut acked = BTreeSet::new();
    while acked.len() < sent.len() {
        let delivery = take(&mut stream, 1).await.remove(0);
        let body = payload(&delivery);
        let attempts = deliveries.entry(body.clone()).or_default();
        attempts.push(delivery.attempt());
        if body == "5" && attempts.len() == 1 {
            // Given back unsettled: the runtime releases it to the driver.
            drop(delivery);
        } else {
            delivery.ack().await.expect("ack");
            acked.insert(body);
        }
    }
    let quiet = Duration::from_secs(2);
    let extra = drain(&mut stream, quiet, quiet).await;
    stream.close().await.expect("close");
    let _ = client.admin().delete_topic(&topic).await;
    client.close().await.expect("close client");
    assert!(extra.is_empty(), "acked messages came again: {extra:?}");
    for body in &sent {
        let expected: &[u32] = if body == "5" { &[1, 2] } else { &[1] };
        assert_eq!(
            deliveries.get(body).map(Vec::as_slice),
            Some(expected),
            "deliveries of {body} (attempts) in {deliveries:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acked_messages_stay_acked_when_their_member_closes() {
    let Some(first) = support::client().await else {
        return;
    };
    let second = support::client().await.expect("second client");
    let sent = numbered(10);
    let (topic, group) = backlog(&first, 1, &sent, |p| format!("k{p}")).await;
    let mut stream = stream(&first, &topic, &group).await;
    // "3" and "7" stay unsettled: the offset can move past 0-2 only, and
    // what was acked after "3" must be remembered for the next owner.
    let mut held = Vec::new();
    for delivery in take(&mut stream, sent.len()).await {
        if ["3", "7"].contains(&payload(&delivery).as_str()) {
            held.push(delivery);
        } else {
            delivery.ack().await.expect("ack");
        }
    }
    stream.close().await.expect("first closes");
    drop(held);
    first.close().await.expect("close first client");

    let mut next = self::stream(&second, &topic, &group).await;
    let seen = drain(&mut next, Duration::from_secs(20), Duration::from_secs(3)).await;
    next.close().await.expect("close");
    let _ = second.admin().delete_topic(&topic).await;
    second.close().await.expect("close second client");
    assert_eq!(seen, ["3", "7"], "the next member got {seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acked_messages_stay_acked_when_their_queue_moves() {
    let Some(first) = support::client().await else {
        return;
    };
    let second = support::client().await.expect("second client");
    // Ten messages on each of two queues, each its own key.
    let key_on = |queue: u32, i: usize| {
        (0..)
            .map(|k| format!("q{queue}-{i}-{k}"))
            .find(|key| mq_rocket::partition_for_key(key, 2) == queue)
            .expect("a key for the queue")
    };
    let sent: Vec<String> = (0..2)
        .flat_map(|q| (0..10).map(move |i| key_on(q, i)))
        .collect();
    let (topic, group) = backlog(&first, 2, &sent, |p| p.to_owned()).await;
    let mut stream = stream(&first, &topic, &group).await;
    let held_payloads: BTreeSet<String> = [key_on(0, 2), key_on(1, 2)].into();
    let mut held = Vec::new();
    for delivery in take(&mut stream, sent.len()).await {
        if held_payloads.contains(&payload(&delivery)) {
            held.push(delivery);
        } else {
            delivery.ack().await.expect("ack");
        }
    }
    // The second member takes one queue over; the first is left holding
    // one message of it, which goes over once the revocation gives up
    // waiting for it.
    let mut next = self::stream(&second, &topic, &group).await;
    let seen = drain(&mut next, Duration::from_secs(60), Duration::from_secs(3)).await;
    next.close().await.expect("close second");
    stream.close().await.expect("close first");
    drop(held);
    let _ = first.admin().delete_topic(&topic).await;
    first.close().await.expect("close first client");
    second.close().await.expect("close second client");
    assert_eq!(seen.len(), 1, "the second member got {seen:?}");
    assert!(
        held_payloads.contains(&seen[0]),
        "the second member got {seen:?}, not one of the unacked {held_payloads:?}"
    );
}
