//! The stream API's own guarantees.

use std::collections::BTreeSet;
use std::time::Duration;

use futures::StreamExt;
use mq_core::Message;

use super::SOON;
use crate::{Context, Skip};

/// A delivery dropped without being settled gives its prefetch slot back
/// and comes back: with prefetch 3, dropping every first delivery of 10
/// messages still reaches all 10 (before, the stream stalled after 3).
pub async fn dropped_delivery_is_released(ctx: &Context) -> Result<(), Skip> {
    let topic = ctx.topic("dropped");
    let group = ctx.group("dropped");
    ctx.join(&topic, &group).await;
    let n = 10;
    let batch = (0..n)
        .map(|i| Message::new(topic.as_str(), i.to_string()))
        .collect();
    ctx.client
        .producer()
        .send_batch(batch)
        .await
        .expect("send_batch");
    let mut stream = ctx
        .client
        .consumer(&topic, &group)
        .prefetch(3)
        .subscribe()
        .await
        .expect("subscribe");
    let (mut dropped, mut acked) = (BTreeSet::new(), BTreeSet::new());
    let deadline = tokio::time::Instant::now() + SOON * 2;
    while acked.len() < n {
        let next = tokio::time::timeout_at(deadline, stream.next()).await;
        let delivery = next
            .unwrap_or_else(|_| panic!("stalled: acked {acked:?}, dropped {dropped:?}"))
            .expect("stream open")
            .expect("delivery");
        let body = delivery.message().payload_str().expect("utf-8").to_owned();
        if dropped.insert(body.clone()) {
            drop(delivery);
        } else {
            delivery.ack().await.expect("ack");
            acked.insert(body);
        }
    }
    let expected: BTreeSet<String> = (0..n).map(|i| i.to_string()).collect();
    assert_eq!(acked, expected);
    assert_eq!(dropped, expected);
    // Nothing more: each was redelivered once, then acked.
    let extra = tokio::time::timeout(Duration::from_millis(500), stream.next()).await;
    assert!(extra.is_err(), "an acked message came back: {extra:?}");
    stream.close().await.expect("close");
    Ok(())
}
