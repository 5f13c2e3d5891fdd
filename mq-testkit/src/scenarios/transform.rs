//! Consume-transform-produce through `run_transform`.

use std::collections::HashMap;
use std::sync::Arc;

use mq_core::{handler_fn, transform_fn, Delivery, HandlerError, HandlerResult, Message, Support};
use parking_lot::Mutex;

use super::{quick_retry, SOON};
use crate::{wait_quiescent, wait_until, Context, Skip, QUIET};

/// Every input is answered by its outputs, once, in key order; the inputs
/// are all acked; an input whose output cannot be published is poison and
/// goes to the dead-letter topic without any output. Where the backend
/// commits offsets in transactions this is Kafka-style exactly-once;
/// elsewhere outputs carry ids derived from their input.
pub async fn transform_publishes_outputs_and_acks_inputs(ctx: &Context) -> Result<(), Skip> {
    let input = ctx.topic("tx-in");
    let output = ctx.topic("tx-out");
    let (group, readers) = (ctx.group("tx-enrich"), ctx.group("tx-readers"));
    ctx.join(&input, &group).await;
    ctx.join(&output, &readers).await;
    let dlq = ctx.capabilities().names.dead_letter_topic(&input);
    let dlq_readers = ctx.group("tx-dlq");
    ctx.join(&dlq, &dlq_readers).await;

    let n = 30u32;
    let mut batch: Vec<Message> = (0..n)
        .map(|i| Message::new(&input, format!("{}", i / 5)).with_key(format!("k{}", i % 5)))
        .collect();
    batch.push(Message::new(&input, "poison").with_key("bad"));
    ctx.client
        .producer()
        .send_batch(batch)
        .await
        .expect("send_batch");

    let transformer = {
        let output = output.clone();
        ctx.client
            .consumer(&input, &group)
            .concurrency(4)
            .retry(quick_retry(3))
            .run_transform(transform_fn(move |d: Delivery| {
                let output = output.clone();
                async move {
                    let body = d.message().payload_str()?.to_owned();
                    // An output topic nobody may publish to: the input is poison.
                    let topic = if body == "poison" {
                        "__mq.forbidden".to_owned()
                    } else {
                        output
                    };
                    let key = d.key().unwrap_or_default().to_owned();
                    Ok::<_, HandlerError>(vec![
                        Message::new(topic, format!("{body}!")).with_key(key)
                    ])
                }
            }))
            .await
            .expect("run_transform")
    };
    let seen: Arc<Mutex<HashMap<String, Vec<String>>>> = Arc::default();
    let ids = Arc::new(Mutex::new(Vec::new()));
    let reader = {
        let (seen, ids) = (seen.clone(), ids.clone());
        ctx.client
            .consumer(&output, &readers)
            .concurrency(1)
            .run(handler_fn(move |d: Delivery| {
                let (seen, ids) = (seen.clone(), ids.clone());
                async move {
                    ids.lock().push(d.message().id());
                    seen.lock()
                        .entry(d.key().unwrap_or_default().to_owned())
                        .or_default()
                        .push(d.message().payload_str()?.to_owned());
                    HandlerResult::Ok(())
                }
            }))
            .await
            .expect("run reader")
    };
    let dead = Arc::new(Mutex::new(Vec::new()));
    let dead_reader = {
        let dead = dead.clone();
        ctx.client
            .consumer(&dlq, &dlq_readers)
            .run(handler_fn(move |d: Delivery| {
                let dead = dead.clone();
                async move {
                    dead.lock().push(d.message().payload_str()?.to_owned());
                    HandlerResult::Ok(())
                }
            }))
            .await
            .expect("run dlq reader")
    };
    let total = || seen.lock().values().map(Vec::len).sum::<usize>();
    assert!(
        wait_until(SOON, || async {
            total() >= n as usize && !dead.lock().is_empty()
        })
        .await,
        "{} of {n} outputs, dead letters {:?}",
        total(),
        dead.lock()
    );
    assert!(
        wait_quiescent(&ctx.client, &input, &group, QUIET, SOON, &total).await,
        "the inputs were never all acked"
    );
    transformer.shutdown().await.expect("shutdown transformer");
    reader.shutdown().await.expect("shutdown reader");
    dead_reader.shutdown().await.expect("shutdown dlq reader");

    assert_eq!(total(), n as usize, "outputs: {:?}", seen.lock());
    let expected: Vec<String> = (0..n / 5).map(|i| format!("{i}!")).collect();
    for (key, bodies) in seen.lock().iter() {
        assert_eq!(bodies, &expected, "key {key}");
    }
    assert_eq!(*dead.lock(), ["poison"]);
    let mut ids = ids.lock().clone();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), n as usize, "outputs share ids");
    if ctx.capabilities().transactional_offsets != Support::Native {
        eprintln!("transform ran at-least-once: transactional offsets are not native here");
    }
    Ok(())
}
