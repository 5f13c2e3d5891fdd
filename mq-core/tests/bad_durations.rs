//! Durations from user input never panic: each is refused with
//! `Error::Invalid` naming it, or saturates. Checked on the memory driver,
//! with its native delay and with the core's delay emulation.

mod common;

use std::time::Duration;

use common::recv;
use mq_core::memory::{MemoryDriver, MemoryOptions};
use mq_core::{
    batch_handler_fn, handler_fn, BatchOptions, Client, Delivery, Error, HandlerError,
    HandlerResult, Message, RetryPolicy,
};
use tokio::sync::mpsc;

fn clients() -> [Client; 2] {
    [
        Client::new(MemoryDriver::new()),
        Client::new(MemoryDriver::with_options(MemoryOptions {
            native_delay: false,
            ..MemoryOptions::default()
        })),
    ]
}

#[tokio::test]
async fn an_endless_delay_is_refused_by_name() {
    for client in clients() {
        let producer = client.producer();
        let err = producer
            .send(Message::new("orders", "x").with_delay(Duration::MAX))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, Error::Invalid { field: "delay", .. }),
            "{err:?}"
        );
        let mut tx = producer.begin().await.unwrap();
        assert!(tx
            .send(Message::new("orders", "x").with_delay(Duration::MAX))
            .await
            .is_err());
        tx.abort().await.unwrap();
        // The producer is still fine.
        producer.send(Message::new("orders", "y")).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_retry_pause_waits_instead_of_killing_the_worker() {
    for (ordered, client) in [true, false].into_iter().zip(clients()) {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let consumer = client
            .consumer("jobs", "workers")
            .concurrency(1)
            .ordered(ordered)
            .retry(RetryPolicy::new(3))
            .run(handler_fn(move |d: Delivery| {
                let tx = tx.clone();
                async move {
                    let payload = d.message().payload_str()?.to_owned();
                    tx.send((payload.clone(), d.attempt()))?;
                    if payload == "stuck" {
                        return Err(HandlerError::retry_after("later", Duration::MAX));
                    }
                    HandlerResult::Ok(())
                }
            }))
            .await
            .unwrap();
        let producer = client.producer();
        producer.send(Message::new("jobs", "stuck")).await.unwrap();
        producer.send(Message::new("jobs", "next")).await.unwrap();
        // Both are handled (in either order: they sit on different
        // partitions), so the worker survived "stuck"'s endless pause.
        let mut seen = [recv(&mut rx).await, recv(&mut rx).await];
        seen.sort();
        assert_eq!(seen, [("next".into(), 1), ("stuck".into(), 1)]);
        assert!(!consumer.is_finished());
        consumer.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_may_wait_forever_for_more() {
    let client = Client::new(MemoryDriver::new());
    let (tx, mut rx) = mpsc::unbounded_channel();
    let consumer = client
        .consumer("clicks", "warehouse")
        .concurrency(1)
        .run_batch(
            batch_handler_fn(move |batch: Vec<Delivery>| {
                let tx = tx.clone();
                async move {
                    tx.send(batch.len())?;
                    HandlerResult::Ok(())
                }
            }),
            BatchOptions::new(3).with_max_wait(Duration::MAX),
        )
        .await
        .unwrap();
    let batch = (0..3)
        .map(|i| Message::new("clicks", i.to_string()))
        .collect();
    client.producer().send_batch(batch).await.unwrap();
    assert_eq!(recv(&mut rx).await, 3);
    consumer.shutdown().await.unwrap();
    let refused = client
        .consumer("clicks", "warehouse")
        .run_batch(
            batch_handler_fn(|_: Vec<Delivery>| async { HandlerResult::Ok(()) }),
            BatchOptions::new(0),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            refused,
            Error::Invalid {
                field: "max_messages",
                ..
            }
        ),
        "{refused:?}"
    );
}
