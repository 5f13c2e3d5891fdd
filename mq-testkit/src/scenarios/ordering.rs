use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use mq_core::{handler_fn, Delivery, HandlerResult, Message, TopicSpec};
use parking_lot::Mutex;

use super::SOON;
use crate::{wait_quiescent, wait_until, Context, Skip, QUIET};

#[derive(Default)]
struct KeyLog {
    order: HashMap<String, Vec<u32>>,
    active: HashMap<String, bool>,
    overlaps: usize,
}

/// With concurrency 16, 100 keys x 100 messages: each key's messages are
/// handled one at a time, in publish order, exactly once; keys run in parallel.
pub async fn per_key_order_under_concurrency(ctx: &Context) -> Result<(), Skip> {
    const KEYS: u32 = 100;
    const PER_KEY: u32 = 100;
    let topic = ctx.topic("order");
    ctx.client
        .admin()
        .ensure_topic(&topic, TopicSpec::new(8))
        .await
        .expect("ensure_topic");
    let log = Arc::new(Mutex::new(KeyLog::default()));
    let running = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let handled = Arc::new(AtomicUsize::new(0));
    let handler = {
        let (log, running, peak, handled) =
            (log.clone(), running.clone(), peak.clone(), handled.clone());
        handler_fn(move |d: Delivery| {
            let (log, running, peak, handled) =
                (log.clone(), running.clone(), peak.clone(), handled.clone());
            async move {
                let key = d.key().expect("keyed").to_owned();
                let seq: u32 = d.message().payload_str()?.parse()?;
                {
                    let mut log = log.lock();
                    if log.active.insert(key.clone(), true) == Some(true) {
                        log.overlaps += 1;
                    }
                }
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                tokio::task::yield_now().await;
                if seq.is_multiple_of(7) {
                    tokio::time::sleep(std::time::Duration::from_micros(200)).await;
                }
                running.fetch_sub(1, Ordering::SeqCst);
                {
                    let mut log = log.lock();
                    log.active.insert(key.clone(), false);
                    log.order.entry(key).or_default().push(seq);
                }
                handled.fetch_add(1, Ordering::SeqCst);
                HandlerResult::Ok(())
            }
        })
    };
    let consumer = ctx
        .client
        .consumer(&topic, ctx.group("order"))
        .concurrency(16)
        .run(handler)
        .await
        .expect("run");
    let producer = ctx.client.producer();
    for seq in 0..PER_KEY {
        let batch = (0..KEYS)
            .map(|k| Message::new(topic.as_str(), seq.to_string()).with_key(format!("key-{k}")))
            .collect();
        producer.send_batch(batch).await.expect("send_batch");
    }
    let total = (KEYS * PER_KEY) as usize;
    assert!(
        wait_until(SOON * 3, || async {
            handled.load(Ordering::SeqCst) >= total
        })
        .await,
        "handled {} of {total}",
        handled.load(Ordering::SeqCst)
    );
    let quiet = wait_quiescent(
        &ctx.client,
        &topic,
        &ctx.group("order"),
        QUIET,
        SOON,
        || handled.load(Ordering::SeqCst),
    )
    .await;
    assert!(quiet, "never went quiet");
    consumer.shutdown().await.expect("shutdown");
    let log = log.lock();
    assert_eq!(log.overlaps, 0, "a key was handled concurrently");
    assert_eq!(log.order.len(), KEYS as usize);
    let expected: Vec<u32> = (0..PER_KEY).collect();
    for (key, order) in &log.order {
        assert_eq!(order, &expected, "key {key} out of order or duplicated");
    }
    assert!(
        peak.load(Ordering::SeqCst) > 1,
        "different keys never ran in parallel"
    );
    Ok(())
}
