//! A tour of mq in one program: publish and consume in a group, a delayed
//! message, a transaction, an idempotent duplicate and a dead letter.
//!
//! ```text
//! cargo run --example quickstart                   # the native engine in a temporary directory
//! MQ_URL=redis://127.0.0.1:6379 cargo run --example quickstart --features mq/redis
//! ```

use std::time::{Duration, Instant};

use mq::message::reserved;
use mq::{handler_fn, Delivery, HandlerError, Message, RetryPolicy};
use tokio::sync::mpsc;

#[tokio::main]
async fn main() -> mq::Result<()> {
    // The default backend is the embedded native engine: durable, on local
    // disk, no server. This tour keeps its data in a fresh temporary directory.
    let scratch = std::env::temp_dir().join(format!("mq-quickstart-{}", std::process::id()));
    let url = std::env::var("MQ_URL").unwrap_or_else(|_| format!("native://{}", scratch.display()));
    let client = mq::connect(url.as_str()).await?;
    println!("connected to the {} backend ({url})", client.backend());
    let producer = client.producer();
    let started = Instant::now();

    // Everything the "billing" group handles is reported on this channel.
    let (seen_tx, mut seen) = mpsc::unbounded_channel::<String>();
    let billing = client
        .consumer("orders", "billing")
        .concurrency(4)
        .retry(
            RetryPolicy::new(3).with_backoff(Duration::from_millis(50), Duration::from_millis(200)),
        )
        .run(handler_fn(move |d: Delivery| {
            let seen_tx = seen_tx.clone();
            async move {
                let text = d.message().payload_str()?.to_owned();
                if text.starts_with("poison") {
                    return Err(HandlerError::reject("cannot parse the order"));
                }
                seen_tx.send(format!(
                    "billing got {text:?} (key {:?}, partition {}, attempt {})",
                    d.key().unwrap_or("-"),
                    d.partition(),
                    d.attempt()
                ))?;
                Ok(())
            }
        }))
        .await?;

    println!("\n1. publish three orders with ordering keys");
    for (customer, order) in [("alice", 1), ("bob", 2), ("alice", 3)] {
        let receipt = producer
            .send(Message::new("orders", format!("order {order}")).with_key(customer))
            .await?;
        println!(
            "   sent order {order} as {} to partition {}",
            receipt.id, receipt.partition
        );
    }
    for _ in 0..3 {
        println!("   {}", next(&mut seen).await);
    }

    println!("\n2. a delayed message: cancel order 1 in 1 s unless paid");
    producer
        .send(Message::new("orders", "cancel order 1 if unpaid").with_delay(Duration::from_secs(1)))
        .await?;
    let sent_at = started.elapsed();
    println!("   {}", next(&mut seen).await);
    println!("   arrived {:?} after sending", started.elapsed() - sent_at);

    println!("\n3. a transaction: both or neither");
    let mut tx = producer.begin().await?;
    tx.send(Message::new(
        "orders",
        "order 4 (in a committed transaction)",
    ))
    .await?;
    tx.send(Message::new(
        "orders",
        "order 5 (in a committed transaction)",
    ))
    .await?;
    tx.commit().await?;
    let mut aborted = producer.begin().await?;
    aborted
        .send(Message::new("orders", "order 6 (aborted: never delivered)"))
        .await?;
    aborted.abort().await?;
    for _ in 0..2 {
        println!("   {}", next(&mut seen).await);
    }

    println!("\n4. an idempotent duplicate");
    let first = producer
        .send(Message::new("orders", "order 7").with_idempotency_key("checkout-7"))
        .await?;
    let again = producer
        .send(Message::new("orders", "order 7").with_idempotency_key("checkout-7"))
        .await?;
    println!(
        "   first send: id {} duplicate={}",
        first.id, first.duplicate
    );
    println!(
        "   second send: id {} duplicate={}",
        again.id, again.duplicate
    );
    println!("   {}", next(&mut seen).await);

    println!("\n5. a poison message goes to the dead-letter topic");
    let (dead_tx, mut dead) = mpsc::unbounded_channel::<String>();
    let dlq_reader = client
        .consumer("orders.dlq", "ops")
        .run(handler_fn(move |d: Delivery| {
            let dead_tx = dead_tx.clone();
            async move {
                let h = d.message().headers();
                dead_tx.send(format!(
                    "dead letter {:?}: from {} / group {}, {} attempt(s), error {:?}",
                    d.message().payload_str()?,
                    h.get(reserved::DLQ_TOPIC).unwrap_or("?"),
                    h.get(reserved::DLQ_GROUP).unwrap_or("?"),
                    h.get(reserved::DLQ_ATTEMPTS).unwrap_or("?"),
                    h.get(reserved::DLQ_ERROR).unwrap_or("?"),
                ))?;
                Ok(())
            }
        }))
        .await?;
    producer
        .send(Message::new("orders", "poison {not json"))
        .await?;
    println!("   {}", next(&mut dead).await);

    billing.shutdown().await?;
    dlq_reader.shutdown().await?;
    let lag = client.admin().total_lag("orders", "billing").await?;
    println!("\nbilling's lag on orders after shutdown: {lag}");
    client.close().await?;
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(())
}

async fn next(rx: &mut mpsc::UnboundedReceiver<String>) -> String {
    match tokio::time::timeout(Duration::from_secs(10), rx.recv()).await {
        Ok(Some(line)) => line,
        _ => "(nothing arrived within 10 s)".to_owned(),
    }
}
