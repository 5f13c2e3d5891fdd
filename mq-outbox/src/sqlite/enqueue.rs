//! Enqueueing inside the application's transaction.

use mq_core::{Message, MessageId, Result};
use sqlx::{Sqlite, Transaction};

use super::SqliteOutbox;
use crate::error::db;
use crate::record::{now_ms, Stored};

const INSERT: &str = "INSERT INTO mq_outbox (shard, topic, msg_key, payload, headers, message_id, \
     idempotency_key, deliver_at_ms, traceparent, tracestate, enqueued_at_ms) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)";

impl SqliteOutbox {
    /// Adds `message` to the outbox inside `tx`: it is published if and
    /// only if `tx` commits. Returns the message id (assigned now when the
    /// message has none), which the relay keeps. A relative delay counts
    /// from now; bad topic or header names fail here, not at the relay.
    ///
    /// ```no_run
    /// # async fn demo(outbox: mq_outbox::sqlite::SqliteOutbox, pool: sqlx::SqlitePool) -> mq_core::Result<()> {
    /// let mut tx = pool.begin().await.unwrap();
    /// outbox.enqueue(&mut tx, mq_core::Message::new("orders", "created").with_key("order-1")).await?;
    /// tx.commit().await.unwrap();
    /// # Ok(()) }
    /// ```
    pub async fn enqueue(
        &self,
        tx: &mut Transaction<'_, Sqlite>,
        message: Message,
    ) -> Result<MessageId> {
        let row = Stored::from_message(message)?;
        let id = MessageId::parse(&row.message_id)?;
        sqlx::query(INSERT)
            .bind(row.shard)
            .bind(row.topic)
            .bind(row.key)
            .bind(row.payload)
            .bind(row.headers)
            .bind(row.message_id)
            .bind(row.idempotency_key)
            .bind(row.deliver_at_ms)
            .bind(row.traceparent)
            .bind(row.tracestate)
            .bind(now_ms())
            .execute(&mut **tx)
            .await
            .map_err(db("enqueueing a message"))?;
        Ok(id)
    }
}
