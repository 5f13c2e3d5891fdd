//! Ordered consumption across two members of one group and the rebalances
//! between them, on the real broker (`MQ_TEST_ROCKETMQ_URL`): every key is
//! handled in publish order (a redelivery may repeat the last message,
//! never go back further), never by two handlers at once, and nothing is
//! lost while a second member joins and the first leaves.

mod support;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use mq_core::{handler_fn, Client, ConsumerHandle, Delivery, HandlerResult, Message, TopicSpec};
use parking_lot::Mutex;

#[derive(Default)]
struct Log {
    order: HashMap<String, Vec<u32>>,
    busy: HashSet<String>,
    overlaps: usize,
    by_member: [usize; 2],
}

async fn member(
    client: &Client,
    topic: &str,
    group: &str,
    log: &Arc<Mutex<Log>>,
    id: usize,
) -> ConsumerHandle {
    let log = log.clone();
    client
        .consumer(topic, group)
        .ordered(true)
        .concurrency(8)
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
                    log.by_member[id] += 1;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
                log.lock().busy.remove(&key);
                HandlerResult::Ok(())
            }
        }))
        .await
        .expect("member starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_members_keep_per_key_order_through_rebalances() {
    let Some(first_client) = support::client().await else {
        return;
    };
    let second_client = support::client().await.expect("second client");
    let topic = support::unique("ordered");
    let group = support::unique("ordered");
    let admin = first_client.admin();
    admin.ensure_topic(&topic, TopicSpec::new(4)).await.unwrap();
    admin
        .ensure_group(&topic, &group, mq_core::StartFrom::Earliest)
        .await
        .unwrap();
    let log = Arc::new(Mutex::new(Log::default()));
    let (keys, per_key) = (16u32, 60u32);
    let first = member(&first_client, &topic, &group, &log, 0).await;
    let producer = first_client.producer();
    let mut second = None;
    for seq in 0..per_key {
        let batch = (0..keys)
            .map(|k| Message::new(topic.as_str(), seq.to_string()).with_key(format!("key-{k}")))
            .collect();
        producer.send_batch(batch).await.expect("send_batch");
        if seq == 15 {
            second = Some(member(&second_client, &topic, &group, &log, 1).await);
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    // The second member has taken its share by now; the first leaves.
    let took_share = mq_testkit::wait_until(Duration::from_secs(30), || async {
        log.lock().by_member[1] > 0
    })
    .await;
    assert!(took_share, "the second member was never given a queue");
    first.shutdown().await.expect("first leaves");
    let total = (keys * per_key) as usize;
    let all = mq_testkit::wait_until(Duration::from_secs(60), || async {
        let log = log.lock();
        log.order.len() == keys as usize
            && log
                .order
                .values()
                .all(|seqs| seqs.last() == Some(&(per_key - 1)))
    })
    .await;
    second
        .expect("second member")
        .shutdown()
        .await
        .expect("second leaves");
    let _ = first_client.admin().delete_topic(&topic).await;
    first_client.close().await.unwrap();
    second_client.close().await.unwrap();
    let log = log.lock();
    assert!(all, "not every key reached its last message");
    assert_eq!(log.overlaps, 0, "a key was handled by two handlers at once");
    let handled: usize = log.order.values().map(Vec::len).sum();
    assert!(handled >= total, "{handled} of {total} handled");
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
        assert_eq!(next, per_key, "{key}: {seqs:?}");
    }
}
