//! An order row and its "order created" message, atomically.
//!
//! The order and the message are written in one SQLite transaction; the
//! relay publishes the message to the default backend (the native log)
//! only because that transaction committed. A second order whose
//! transaction rolls back leaves neither a row nor a message.
//!
//! ```text
//! cargo run -p mq-outbox --example outbox
//! ```

use std::time::Duration;

use mq_core::{handler_fn, Client, Config, Delivery, Message};
use mq_outbox::sqlite::{self, SqliteOutbox};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let pool = sqlite::open(dir.path().join("shop.db")).await?;
    let outbox = SqliteOutbox::new(pool.clone());
    outbox.migrate().await?;
    sqlx::query("CREATE TABLE orders (id INTEGER PRIMARY KEY, customer TEXT NOT NULL)")
        .execute(&pool)
        .await?;

    // Order 42: the row and the message commit together.
    let mut tx = pool.begin().await?;
    sqlx::query("INSERT INTO orders (id, customer) VALUES (42, 'ada')")
        .execute(&mut *tx)
        .await?;
    let id = outbox
        .enqueue(
            &mut tx,
            Message::json(
                "orders",
                &serde_json::json!({"event": "order created", "order": 42}),
            )?
            .with_key("order-42"),
        )
        .await?;
    tx.commit().await?;
    println!("order 42 committed with message {id}");

    // Order 43: rolled back, so its message never exists.
    let mut tx = pool.begin().await?;
    sqlx::query("INSERT INTO orders (id, customer) VALUES (43, 'bob')")
        .execute(&mut *tx)
        .await?;
    outbox
        .enqueue(
            &mut tx,
            Message::new("orders", "order 43 created").with_key("order-43"),
        )
        .await?;
    tx.rollback().await?;
    println!("order 43 rolled back");

    // The default backend: the embedded native log.
    let config = Config::from_url(&format!("native://{}", dir.path().join("log").display()))?;
    let client = Client::new(mq_native::NativeDriver::open(&config).await?);
    let relay = outbox.relay(&client).spawn();

    let (tx_seen, mut seen) = tokio::sync::mpsc::unbounded_channel();
    let consumer = client
        .consumer("orders", "shipping")
        .run(handler_fn(move |d: Delivery| {
            let tx_seen = tx_seen.clone();
            async move {
                tx_seen.send(d.message().payload_str()?.to_owned())?;
                Ok(())
            }
        }))
        .await?;
    let first = tokio::time::timeout(Duration::from_secs(10), seen.recv()).await?;
    println!("shipping received: {}", first.unwrap_or_default());
    let nothing_else = tokio::time::timeout(Duration::from_millis(500), seen.recv()).await;
    assert!(
        nothing_else.is_err(),
        "the rolled-back order's message must not exist"
    );
    println!("and nothing for order 43");

    consumer.shutdown().await?;
    relay.shutdown().await?;
    client.close().await?;
    Ok(())
}
