use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use mq_core::message::reserved;
use mq_core::{handler_fn, Delivery, HandlerError, HandlerResult, Message, TopicSpec};
use parking_lot::Mutex;

use super::{quick_retry, SOON};
use crate::{wait_quiescent, wait_until, Context, Recorder, Skip, QUIET};

/// A handler error leads to another attempt, numbered 2.
pub async fn redelivery_after_handler_error(ctx: &Context) -> Result<(), Skip> {
    for ordered in [true, false] {
        let topic = ctx.topic(if ordered {
            "redeliver-o"
        } else {
            "redeliver-u"
        });
        let attempts = Arc::new(Mutex::new(Vec::new()));
        let handler = {
            let attempts = attempts.clone();
            handler_fn(move |d: Delivery| {
                let attempts = attempts.clone();
                async move {
                    attempts.lock().push(d.attempt());
                    if d.attempt() == 1 {
                        return Err(HandlerError::retry("first attempt fails"));
                    }
                    Ok(())
                }
            })
        };
        let consumer = ctx
            .client
            .consumer(&topic, ctx.group("redeliver"))
            .ordered(ordered)
            .retry(quick_retry(5))
            .run(handler)
            .await
            .expect("run");
        ctx.client
            .producer()
            .send(Message::new(topic.as_str(), "x"))
            .await
            .expect("send");
        assert!(
            wait_until(SOON, || async { attempts.lock().len() >= 2 }).await,
            "no redelivery (ordered={ordered})"
        );
        let group = ctx.group("redeliver");
        assert!(
            wait_quiescent(&ctx.client, &topic, &group, QUIET, SOON, || attempts
                .lock()
                .len())
            .await,
            "never went quiet"
        );
        consumer.shutdown().await.expect("shutdown");
        assert_eq!(*attempts.lock(), vec![1, 2], "ordered={ordered}");
    }
    Ok(())
}

/// A message received but never settled goes to another member once its
/// consumer leaves, as a later attempt.
pub async fn redelivery_after_consumer_dropped(ctx: &Context) -> Result<(), Skip> {
    let topic = ctx.topic("dropped");
    let group = ctx.group("dropped");
    ctx.client
        .admin()
        .ensure_topic(&topic, TopicSpec::new(1))
        .await
        .expect("ensure_topic");
    ctx.join(&topic, &group).await;
    let sent = ctx
        .client
        .producer()
        .send(Message::new(topic.as_str(), "unacked"))
        .await
        .expect("send");
    let mut first = ctx
        .client
        .consumer(&topic, &group)
        .subscribe()
        .await
        .expect("subscribe");
    let delivery = tokio::time::timeout(SOON, first.next())
        .await
        .expect("first delivery")
        .expect("stream")
        .expect("ok");
    assert_eq!(delivery.message().id(), Some(sent.id));
    assert_eq!(delivery.attempt(), 1);
    drop(delivery);
    first.close().await.expect("close");
    let mut second = ctx
        .client
        .consumer(&topic, &group)
        .subscribe()
        .await
        .expect("subscribe");
    let again = tokio::time::timeout(SOON, second.next())
        .await
        .expect("redelivery")
        .expect("stream")
        .expect("ok");
    assert_eq!(again.message().id(), Some(sent.id));
    assert!(again.attempt() >= 2, "attempt {}", again.attempt());
    again.ack().await.expect("ack");
    second.close().await.expect("close");
    Ok(())
}

fn check_dead_letter(d: &Delivery, topic: &str, group: &str, attempts: u32, error: &str) {
    let h = d.message().headers();
    assert_eq!(h.get(reserved::DLQ_TOPIC), Some(topic));
    assert_eq!(h.get(reserved::DLQ_GROUP), Some(group));
    assert_eq!(
        h.get(reserved::DLQ_ATTEMPTS),
        Some(attempts.to_string().as_str())
    );
    assert!(
        h.get(reserved::DLQ_ERROR)
            .is_some_and(|e| e.contains(error)),
        "{h:?}"
    );
    assert!(
        h.get(reserved::DLQ_TIME).is_some_and(|t| t.ends_with('Z')),
        "{h:?}"
    );
    assert_eq!(h.get("custom"), Some("kept"));
    assert_eq!(d.key(), Some("k"));
}

/// A handler that counts its calls and fails each with `error()`.
fn always_failing(calls: Arc<AtomicU32>, error: fn() -> HandlerError) -> impl mq_core::Handler {
    handler_fn(move |_d: Delivery| {
        let calls = calls.clone();
        async move {
            calls.fetch_add(1, Ordering::SeqCst);
            HandlerResult::Err(error())
        }
    })
}

/// After `max_attempts` failures the message lands in `<topic>.dlq` with
/// headers naming topic, group, attempts, last error and time.
pub async fn dead_letter_after_max_attempts(ctx: &Context) -> Result<(), Skip> {
    for ordered in [true, false] {
        let topic = ctx.topic(if ordered { "dlq-o" } else { "dlq-u" });
        let group = ctx.group("dlq");
        let calls = Arc::new(AtomicU32::new(0));
        let handler = always_failing(calls.clone(), || HandlerError::retry("database is down"));
        let consumer = ctx
            .client
            .consumer(&topic, &group)
            .ordered(ordered)
            .retry(quick_retry(3))
            .run(handler)
            .await
            .expect("run");
        let dead = Recorder::new();
        let dlq = ctx
            .client
            .consumer(format!("{topic}.dlq"), ctx.group("dlq-reader"))
            .run(dead.handler())
            .await
            .expect("run dlq");
        let sent = ctx
            .client
            .producer()
            .send(
                Message::new(topic.as_str(), "poison")
                    .with_key("k")
                    .with_header("custom", "kept"),
            )
            .await
            .expect("send");
        assert!(
            dead.wait_for(1, SOON).await,
            "nothing dead-lettered (ordered={ordered})"
        );
        assert!(
            wait_quiescent(
                &ctx.client,
                &topic,
                &group,
                QUIET,
                SOON,
                || calls.load(Ordering::SeqCst) as usize
            )
            .await,
            "never went quiet"
        );
        consumer.shutdown().await.expect("shutdown");
        dlq.shutdown().await.expect("shutdown");
        assert_eq!(calls.load(Ordering::SeqCst), 3, "ordered={ordered}");
        let seen = dead.seen();
        assert_eq!(seen.len(), 1);
        let d = &seen[0].delivery;
        assert_eq!(
            d.message().id(),
            Some(sent.id),
            "the id survives dead-lettering"
        );
        check_dead_letter(d, &topic, &group, 3, "database is down");
    }
    Ok(())
}

/// An explicit reject dead-letters at once, without retries.
pub async fn reject_goes_to_dead_letter(ctx: &Context) -> Result<(), Skip> {
    let topic = ctx.topic("reject");
    let group = ctx.group("reject");
    let calls = Arc::new(AtomicU32::new(0));
    let handler = always_failing(calls.clone(), || HandlerError::reject("malformed order"));
    let consumer = ctx
        .client
        .consumer(&topic, &group)
        .retry(quick_retry(5))
        .run(handler)
        .await
        .expect("run");
    let dead = Recorder::new();
    let dlq = ctx
        .client
        .consumer(format!("{topic}.dlq"), ctx.group("reader"))
        .run(dead.handler())
        .await
        .expect("run dlq");
    ctx.client
        .producer()
        .send(
            Message::new(topic.as_str(), "bad")
                .with_key("k")
                .with_header("custom", "kept"),
        )
        .await
        .expect("send");
    assert!(dead.wait_for(1, SOON).await, "nothing dead-lettered");
    assert!(
        wait_quiescent(
            &ctx.client,
            &topic,
            &group,
            QUIET,
            SOON,
            || calls.load(Ordering::SeqCst) as usize
        )
        .await,
        "never went quiet"
    );
    consumer.shutdown().await.expect("shutdown");
    dlq.shutdown().await.expect("shutdown");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    check_dead_letter(
        &dead.seen()[0].delivery,
        &topic,
        &group,
        1,
        "malformed order",
    );
    Ok(())
}

/// Ordered: a failing message is retried in place; later messages of its
/// key wait for it.
pub async fn ordered_retry_keeps_key_order(ctx: &Context) -> Result<(), Skip> {
    let topic = ctx.topic("ordered-retry");
    let order = Arc::new(Mutex::new(Vec::new()));
    let handler = {
        let order = order.clone();
        handler_fn(move |d: Delivery| {
            let order = order.clone();
            async move {
                let body = d.message().payload_str()?.to_owned();
                if body == "m1" && d.attempt() < 3 {
                    return Err(HandlerError::retry("not yet"));
                }
                order.lock().push(body);
                Ok(())
            }
        })
    };
    let consumer = ctx
        .client
        .consumer(&topic, ctx.group("o"))
        .ordered(true)
        .concurrency(4)
        .retry(quick_retry(5))
        .run(handler)
        .await
        .expect("run");
    let batch = ["m1", "m2", "m3"]
        .iter()
        .map(|b| Message::new(topic.as_str(), *b).with_key("k"))
        .collect();
    ctx.client.producer().send_batch(batch).await.expect("send");
    assert!(wait_until(SOON, || async { order.lock().len() >= 3 }).await);
    consumer.shutdown().await.expect("shutdown");
    assert_eq!(*order.lock(), vec!["m1", "m2", "m3"]);
    Ok(())
}

/// Unordered: a failing message is redelivered later without holding back
/// later messages, of its key or others.
pub async fn unordered_retry_does_not_block(ctx: &Context) -> Result<(), Skip> {
    let topic = ctx.topic("unordered-retry");
    let order = Arc::new(Mutex::new(Vec::new()));
    let handler = {
        let order = order.clone();
        handler_fn(move |d: Delivery| {
            let order = order.clone();
            async move {
                let body = d.message().payload_str()?.to_owned();
                if body == "slow" && d.attempt() == 1 {
                    return Err(HandlerError::retry_after(
                        "later",
                        Duration::from_millis(800),
                    ));
                }
                order.lock().push((body, d.attempt()));
                Ok(())
            }
        })
    };
    let consumer = ctx
        .client
        .consumer(&topic, ctx.group("u"))
        .ordered(false)
        .concurrency(4)
        .retry(quick_retry(5))
        .run(handler)
        .await
        .expect("run");
    let batch = vec![
        Message::new(topic.as_str(), "slow").with_key("k"),
        Message::new(topic.as_str(), "same-key").with_key("k"),
        Message::new(topic.as_str(), "other-key").with_key("other"),
    ];
    ctx.client.producer().send_batch(batch).await.expect("send");
    assert!(
        wait_until(SOON, || async { order.lock().len() >= 3 }).await,
        "{:?}",
        order.lock()
    );
    consumer.shutdown().await.expect("shutdown");
    let order = order.lock().clone();
    let pos = |b: &str| {
        order
            .iter()
            .position(|(x, _)| x == b)
            .unwrap_or_else(|| panic!("{b} missing: {order:?}"))
    };
    assert!(pos("same-key") < pos("slow"), "{order:?}");
    assert!(pos("other-key") < pos("slow"), "{order:?}");
    assert_eq!(order[pos("slow")].1, 2, "the retry is attempt 2");
    Ok(())
}
