//! Typed payloads: JSON handlers, poison payloads dead-lettered at once,
//! and the typed view of a dead letter. Checked on the memory driver.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use mq_core::memory::MemoryDriver;
use mq_core::{json_handler_fn, Client, Delivery, Error, HandlerResult, Message, RetryPolicy};
use parking_lot::Mutex;

#[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
struct Order {
    id: u64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_payloads_are_dead_lettered_without_retries() {
    let client = Client::new(MemoryDriver::new());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let consumer = {
        let seen = seen.clone();
        client
            .consumer("orders", "billing")
            .retry(RetryPolicy::new(5))
            .run(json_handler_fn(move |order: Order, d: Delivery| {
                let seen = seen.clone();
                async move {
                    seen.lock().push((order.id, d.attempt()));
                    HandlerResult::Ok(())
                }
            }))
            .await
            .unwrap()
    };
    let producer = client.producer();
    producer
        .send(Message::new("orders", "{\"id\": \"seven\"}"))
        .await
        .unwrap();
    producer
        .send(Message::json("orders", &Order { id: 8 }).unwrap())
        .await
        .unwrap();
    let mut dead = client
        .consumer("orders.dlq", "ops")
        .subscribe()
        .await
        .unwrap();
    let letter = tokio::time::timeout(Duration::from_secs(10), dead.next())
        .await
        .expect("a dead letter")
        .unwrap()
        .unwrap();
    let info = letter
        .message()
        .dead_letter_info()
        .expect("dead-letter headers");
    assert_eq!((info.topic.as_str(), info.attempts), ("orders", Some(1)));
    assert!(
        info.error.contains("poison") && info.error.contains("line 1"),
        "{}",
        info.error
    );
    letter.ack().await.unwrap();
    assert!(
        eventually(|| seen.lock().len() == 1).await,
        "the good order was not handled"
    );
    assert_eq!(seen.lock()[0], (8, 1));
    consumer.shutdown().await.unwrap();
    dead.close().await.unwrap();
}

async fn eventually(check: impl Fn() -> bool) -> bool {
    for _ in 0..200 {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[test]
fn decoding_errors_keep_line_and_column() {
    let bad = Message::new("orders", "{\n\"id\": 1,\n oops");
    match bad.payload_json::<Order>() {
        Err(Error::Codec { line, column, .. }) => {
            assert_eq!(line, Some(3));
            assert!(column.is_some());
        }
        other => panic!("{other:?}"),
    }
}
