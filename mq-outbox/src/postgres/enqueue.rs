//! Enqueueing inside the application's transaction.

use mq_core::{Message, MessageId, Result};
use sqlx::{Postgres, Transaction};

use super::PgOutbox;
use crate::error::db;
use crate::record::{now_ms, Stored};

const INSERT: &str = "INSERT INTO mq_outbox (shard, topic, msg_key, payload, headers, message_id, \
     idempotency_key, deliver_at_ms, traceparent, tracestate, enqueued_at_ms) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)";

/// One statement for a whole batch; `ORDER BY ord` keeps ids in the batch's order.
const INSERT_ALL: &str =
    "INSERT INTO mq_outbox (shard, topic, msg_key, payload, headers, message_id, \
     idempotency_key, deliver_at_ms, traceparent, tracestate, enqueued_at_ms) \
     SELECT shard, topic, msg_key, payload, headers, message_id, idempotency_key, deliver_at_ms, \
            traceparent, tracestate, $11 \
     FROM UNNEST($1::int4[], $2::text[], $3::text[], $4::bytea[], $5::text[], $6::text[], \
                 $7::text[], $8::int8[], $9::text[], $10::text[]) \
          WITH ORDINALITY AS u(shard, topic, msg_key, payload, headers, message_id, \
                               idempotency_key, deliver_at_ms, traceparent, tracestate, ord) \
     ORDER BY ord";

impl PgOutbox {
    /// Adds `message` to the outbox inside `tx`: it is published if and
    /// only if `tx` commits. Returns the message id (assigned now when the
    /// message has none), which the relay keeps, so consumers can dedup
    /// the duplicates a relay crash may cause.
    ///
    /// A relative delay counts from now; bad topic or header names fail
    /// here, not at the relay.
    ///
    /// ```no_run
    /// # async fn demo(outbox: mq_outbox::postgres::PgOutbox, pool: sqlx::PgPool) -> mq_core::Result<()> {
    /// let mut tx = pool.begin().await.unwrap();
    /// outbox.enqueue(&mut tx, mq_core::Message::new("orders", "created").with_key("order-1")).await?;
    /// tx.commit().await.unwrap();
    /// # Ok(()) }
    /// ```
    pub async fn enqueue(
        &self,
        tx: &mut Transaction<'_, Postgres>,
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

    /// Adds `messages` in one statement, in order; see [`enqueue`](Self::enqueue).
    pub async fn enqueue_all(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        messages: impl IntoIterator<Item = Message>,
    ) -> Result<Vec<MessageId>> {
        let rows = messages
            .into_iter()
            .map(Stored::from_message)
            .collect::<Result<Vec<_>>>()?;
        let ids = rows
            .iter()
            .map(|row| MessageId::parse(&row.message_id))
            .collect::<Result<Vec<_>>>()?;
        if rows.is_empty() {
            return Ok(ids);
        }
        let mut columns = Columns::default();
        for row in rows {
            columns.push(row);
        }
        sqlx::query(INSERT_ALL)
            .bind(columns.shard)
            .bind(columns.topic)
            .bind(columns.key)
            .bind(columns.payload)
            .bind(columns.headers)
            .bind(columns.message_id)
            .bind(columns.idempotency_key)
            .bind(columns.deliver_at_ms)
            .bind(columns.traceparent)
            .bind(columns.tracestate)
            .bind(now_ms())
            .execute(&mut **tx)
            .await
            .map_err(db("enqueueing messages"))?;
        Ok(ids)
    }
}

/// Rows turned into one array per column, for `UNNEST`.
#[derive(Default)]
struct Columns {
    shard: Vec<i32>,
    topic: Vec<String>,
    key: Vec<Option<String>>,
    payload: Vec<Vec<u8>>,
    headers: Vec<Option<String>>,
    message_id: Vec<String>,
    idempotency_key: Vec<Option<String>>,
    deliver_at_ms: Vec<Option<i64>>,
    traceparent: Vec<Option<String>>,
    tracestate: Vec<Option<String>>,
}

impl Columns {
    fn push(&mut self, row: Stored) {
        self.shard.push(row.shard);
        self.topic.push(row.topic);
        self.key.push(row.key);
        self.payload.push(row.payload);
        self.headers.push(row.headers);
        self.message_id.push(row.message_id);
        self.idempotency_key.push(row.idempotency_key);
        self.deliver_at_ms.push(row.deliver_at_ms);
        self.traceparent.push(row.traceparent);
        self.tracestate.push(row.tracestate);
    }
}
