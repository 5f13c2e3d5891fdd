use std::collections::HashMap;
use std::sync::Arc;

use mq_core::idempotency::{DedupLayer, MemoryDedupStore};
use mq_core::{handler_fn, Delivery, HandlerResult, Message, MessageId, Support};
use parking_lot::Mutex;

use super::basics::count_by_id;
use super::SOON;
use crate::{wait_quiescent, wait_until, Context, Recorder, Skip, QUIET};

/// A send repeating an idempotency key returns the first receipt marked
/// duplicate, and the message is delivered once.
pub async fn idempotent_publish(ctx: &Context) -> Result<(), Skip> {
    if ctx.capabilities().idempotent_publish == Support::Unsupported {
        return Err(Skip("idempotent publish is unsupported".into()));
    }
    let topic = ctx.topic("idem");
    ctx.join(&topic, &ctx.group("idem")).await;
    let producer = ctx.client.producer();
    let first = producer
        .send(Message::new(topic.as_str(), "pay 42").with_idempotency_key("payment-42"))
        .await
        .expect("send");
    assert!(!first.duplicate);
    let again = producer
        .send(Message::new(topic.as_str(), "pay 42").with_idempotency_key("payment-42"))
        .await
        .expect("send again");
    assert!(again.duplicate, "second send not flagged");
    assert_eq!(again.id, first.id);
    assert_eq!(again.partition, first.partition);
    assert_eq!(again.offset, first.offset);
    let other = producer
        .send(Message::new(topic.as_str(), "pay 43").with_idempotency_key("payment-43"))
        .await
        .expect("send other");
    assert!(!other.duplicate);
    let recorder = Recorder::new();
    let consumer = ctx
        .client
        .consumer(&topic, ctx.group("idem"))
        .run(recorder.handler())
        .await
        .expect("run");
    assert!(recorder.wait_for(2, SOON).await);
    assert!(
        wait_quiescent(&ctx.client, &topic, &ctx.group("idem"), QUIET, SOON, || {
            recorder.len()
        })
        .await,
        "never went quiet"
    );
    consumer.shutdown().await.expect("shutdown");
    let counts = count_by_id(&recorder.seen());
    assert_eq!(counts.len(), 2);
    assert!(counts.values().all(|c| *c == 1), "{counts:?}");
    let keys: Vec<String> = recorder
        .seen()
        .iter()
        .filter_map(|s| s.delivery.message().idempotency_key().map(str::to_owned))
        .collect();
    assert_eq!(keys.len(), 2, "consumers see the idempotency key");
    Ok(())
}

/// Injected duplicates (the same message id published three times) cause
/// exactly one handler effect with the dedup layer.
pub async fn dedup_gives_one_effect(ctx: &Context) -> Result<(), Skip> {
    let topic = ctx.topic("dedup");
    let ids: Vec<MessageId> = (0..5).map(|_| MessageId::new()).collect();
    let effects: Arc<Mutex<HashMap<MessageId, u32>>> = Arc::default();
    let handler = {
        let effects = effects.clone();
        handler_fn(move |d: Delivery| {
            let effects = effects.clone();
            async move {
                *effects
                    .lock()
                    .entry(d.message().id().expect("id"))
                    .or_default() += 1;
                HandlerResult::Ok(())
            }
        })
    };
    let store = Arc::new(MemoryDedupStore::new());
    let consumer = ctx
        .client
        .consumer(&topic, ctx.group("dedup"))
        .concurrency(8)
        .layer(DedupLayer::new(store.clone()))
        .run(handler)
        .await
        .expect("run");
    let seen_all = Recorder::new();
    let raw = ctx
        .client
        .consumer(&topic, ctx.group("raw"))
        .run(seen_all.handler())
        .await
        .expect("run raw");
    let producer = ctx.client.producer();
    for round in 0..3 {
        for (i, id) in ids.iter().enumerate() {
            // Keys differ per copy so copies may run concurrently.
            let m = Message::new(topic.as_str(), format!("effect {i}"))
                .with_id(*id)
                .with_key(format!("{round}-{i}"));
            producer.send(m).await.expect("send");
        }
    }
    assert!(
        seen_all.wait_for(15, SOON).await,
        "all 15 copies are delivered"
    );
    assert!(wait_until(SOON, || async { effects.lock().len() == ids.len() }).await);
    assert!(
        wait_quiescent(&ctx.client, &topic, &ctx.group("raw"), QUIET, SOON, || {
            seen_all.len()
        })
        .await,
        "never went quiet"
    );
    assert!(
        wait_quiescent(
            &ctx.client,
            &topic,
            &ctx.group("dedup"),
            QUIET,
            SOON,
            || effects.lock().values().sum::<u32>() as usize
        )
        .await,
        "never went quiet"
    );
    consumer.shutdown().await.expect("shutdown");
    raw.shutdown().await.expect("shutdown");
    let effects = effects.lock();
    for id in &ids {
        assert_eq!(
            effects.get(id),
            Some(&1),
            "message {id} had {:?} effects",
            effects.get(id)
        );
    }
    Ok(())
}
