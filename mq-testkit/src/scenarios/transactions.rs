use std::time::Duration;

use mq_core::{Message, Support};

use super::SOON;
use crate::{wait_quiescent, Context, Recorder, Skip, QUIET};

/// Committed messages become visible together; aborted ones never.
pub async fn transaction_commit_and_abort(ctx: &Context) -> Result<(), Skip> {
    if ctx.capabilities().transactions == Support::Unsupported {
        return Err(Skip("transactions are unsupported".into()));
    }
    let (orders, invoices) = (ctx.topic("tx-orders"), ctx.topic("tx-invoices"));
    let (ro, ri) = (Recorder::new(), Recorder::new());
    let co = ctx
        .client
        .consumer(&orders, ctx.group("tx"))
        .run(ro.handler())
        .await
        .expect("run");
    let ci = ctx
        .client
        .consumer(&invoices, ctx.group("tx"))
        .run(ri.handler())
        .await
        .expect("run");
    let producer = ctx.client.producer();

    let mut tx = producer.begin().await.expect("begin");
    tx.send(Message::new(orders.as_str(), "o1").with_key("c1"))
        .await
        .expect("send");
    tx.send_batch(vec![
        Message::new(orders.as_str(), "o2").with_key("c2"),
        Message::new(invoices.as_str(), "i1"),
    ])
    .await
    .expect("send_batch");
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(ro.len() + ri.len(), 0, "uncommitted messages are visible");
    tx.commit().await.expect("commit");
    assert!(
        ro.wait_for(2, SOON).await && ri.wait_for(1, SOON).await,
        "committed messages missing"
    );

    let mut aborted = producer.begin().await.expect("begin");
    aborted
        .send(Message::new(orders.as_str(), "never"))
        .await
        .expect("send");
    aborted
        .send(Message::new(invoices.as_str(), "never"))
        .await
        .expect("send");
    aborted.abort().await.expect("abort");
    let mut dropped = producer.begin().await.expect("begin");
    dropped
        .send(Message::new(orders.as_str(), "never"))
        .await
        .expect("send");
    drop(dropped);
    producer
        .send(Message::new(orders.as_str(), "after"))
        .await
        .expect("send");
    producer
        .send(Message::new(invoices.as_str(), "after"))
        .await
        .expect("send");
    assert!(ro.wait_for(3, SOON).await && ri.wait_for(2, SOON).await);
    assert!(
        wait_quiescent(&ctx.client, &orders, &ctx.group("tx"), QUIET, SOON, || ro
            .len()
            + ri.len())
        .await,
        "never went quiet"
    );
    assert!(
        wait_quiescent(
            &ctx.client,
            &invoices,
            &ctx.group("tx"),
            QUIET,
            SOON,
            || ro.len() + ri.len()
        )
        .await,
        "never went quiet"
    );
    co.shutdown().await.expect("shutdown");
    ci.shutdown().await.expect("shutdown");
    let bodies = |r: &Recorder| {
        let mut v: Vec<String> = r
            .seen()
            .iter()
            .map(|s| s.delivery.message().payload_str().unwrap().to_owned())
            .collect();
        v.sort();
        v
    };
    assert_eq!(bodies(&ro), ["after", "o1", "o2"]);
    assert_eq!(bodies(&ri), ["after", "i1"]);
    Ok(())
}
