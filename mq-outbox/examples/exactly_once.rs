//! A consumer that credits an account exactly once, under redeliveries.
//!
//! Each payment is delivered three times (copies with one message id, as a
//! broker redelivery or a bridge would make), and the first time each
//! payment is handled its ack is "lost" after the database commit, as if
//! the process died there. The inbox records each payment in the same
//! SQLite transaction as the credit, so the balance counts each once.
//!
//! ```text
//! cargo run -p mq-outbox --example exactly_once
//! ```

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use mq_core::memory::MemoryDriver;
use mq_core::{
    async_trait, Client, Delivery, Handler, HandlerError, HandlerResult, Message, MessageId,
    RetryPolicy,
};
use mq_outbox::sqlite::{self, SqliteInbox};
use mq_outbox::tx_handler_fn;

/// Fails each message once after the inner handler committed: a lost ack.
struct LoseFirstAck<H> {
    inner: H,
    lost: Mutex<HashSet<MessageId>>,
}

#[async_trait]
impl<H: Handler> Handler for LoseFirstAck<H> {
    async fn handle(&self, delivery: &Delivery) -> HandlerResult {
        self.inner.handle(delivery).await?;
        if self
            .lost
            .lock()
            .map_err(|_| "poisoned")?
            .insert(delivery.message().id().unwrap_or_default())
        {
            return Err(HandlerError::from("crashed before the ack"));
        }
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let pool = sqlite::open(dir.path().join("bank.db")).await?;
    sqlx::query("CREATE TABLE account (id INTEGER PRIMARY KEY, cents INTEGER NOT NULL)")
        .execute(&pool)
        .await?;
    sqlx::query("INSERT INTO account VALUES (1, 0)")
        .execute(&pool)
        .await?;
    let inbox = SqliteInbox::new(pool.clone()).window(Duration::from_secs(24 * 3600));
    inbox.migrate().await?;

    let client = Client::new(MemoryDriver::new());
    let payments = [500_i64, 1250, 99, 10_000];
    for cents in payments {
        let id = MessageId::new();
        for _ in 0..3 {
            client
                .producer()
                .send(
                    Message::new("payments", cents.to_string())
                        .with_id(id)
                        .with_key("account-1"),
                )
                .await?;
        }
    }

    let credit = inbox.handler(tx_handler_fn(|delivery, tx| {
        Box::pin(async move {
            let cents: i64 = delivery.message().payload_str()?.parse()?;
            sqlx::query("UPDATE account SET cents = cents + $1 WHERE id = 1")
                .bind(cents)
                .execute(&mut **tx)
                .await?;
            Ok(())
        })
    }));
    let consumer = client
        .consumer("payments", "ledger")
        .retry(
            RetryPolicy::new(5).with_backoff(Duration::from_millis(5), Duration::from_millis(50)),
        )
        .run(LoseFirstAck {
            inner: credit,
            lost: Mutex::new(HashSet::new()),
        })
        .await?;
    while client.admin().total_lag("payments", "ledger").await? > 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    consumer.shutdown().await?;

    let cents: i64 = sqlx::query_scalar("SELECT cents FROM account")
        .fetch_one(&pool)
        .await?;
    let expected: i64 = payments.iter().sum();
    println!(
        "12 deliveries and 4 lost acks later, the balance is {cents} cents (expected {expected})"
    );
    assert_eq!(cents, expected);
    Ok(())
}
