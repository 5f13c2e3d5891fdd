//! The relay's side on SQLite: a lease, and why every row is settled.
//!
//! SQLite runs one write transaction at a time, and a transaction that
//! inserts a row holds the write lock from that insert until its commit.
//! No other transaction can take an id in between, so ids grow in commit
//! order: when a relay reads a row, every row with a lower id has
//! committed (or rolled back) already. Reading pending rows in id order
//! therefore never skips one and never reorders a key: every row is
//! settled as soon as it is visible.
//!
//! Relays share a file through a lease row (`mq_outbox_lease`): the relay
//! holding it publishes, the others wait for it to run out. A step renews
//! the lease before reading and checks it is still held when recording
//! what it sent, in the same transaction.

use std::time::Duration;

use async_trait::async_trait;
use mq_core::{Error, Result};
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, SqlitePool};

use crate::error::db;
use crate::record::{ms_after, now_ms, Pending, Stored};
use crate::relay::store::{Batch, Claimed, Outcome, RelayStore};

const TAKE_LEASE: &str =
    "INSERT INTO mq_outbox_lease (name, owner, until_ms) VALUES ('relay', $1, $2) \
     ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, until_ms = excluded.until_ms \
     WHERE mq_outbox_lease.owner = excluded.owner OR mq_outbox_lease.until_ms <= $3";

const FETCH: &str = "SELECT id, shard, topic, msg_key, payload, headers, message_id, idempotency_key, \
     deliver_at_ms, traceparent, tracestate FROM mq_outbox WHERE sent_at_ms IS NULL ORDER BY id LIMIT $1";

pub(crate) struct SqliteRelayStore {
    pool: SqlitePool,
    owner: String,
    lease: Duration,
}

impl SqliteRelayStore {
    pub(crate) fn new(pool: SqlitePool, lease: Duration) -> Self {
        SqliteRelayStore {
            pool,
            owner: uuid::Uuid::now_v7().to_string(),
            lease,
        }
    }
}

fn pending(row: &SqliteRow) -> std::result::Result<Pending, sqlx::Error> {
    Ok(Pending {
        id: row.try_get("id")?,
        settled: true,
        stored: Stored {
            shard: row.try_get("shard")?,
            topic: row.try_get("topic")?,
            key: row.try_get("msg_key")?,
            payload: row.try_get("payload")?,
            headers: row.try_get("headers")?,
            message_id: row.try_get("message_id")?,
            idempotency_key: row.try_get("idempotency_key")?,
            deliver_at_ms: row.try_get("deliver_at_ms")?,
            traceparent: row.try_get("traceparent")?,
            tracestate: row.try_get("tracestate")?,
        },
    })
}

#[async_trait]
impl RelayStore for SqliteRelayStore {
    async fn claim(&self, limit: usize) -> Result<Option<Batch>> {
        let taken = sqlx::query(TAKE_LEASE)
            .bind(&self.owner)
            .bind(ms_after(self.lease))
            .bind(now_ms())
            .execute(&self.pool)
            .await
            .map_err(db("taking the relay lease"))?;
        if taken.rows_affected() == 0 {
            return Ok(None);
        }
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = sqlx::query(FETCH)
            .bind(limit)
            .fetch_all(&self.pool)
            .await
            .map_err(db("reading pending outbox rows"))?;
        let rows = rows
            .iter()
            .map(pending)
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(db("decoding outbox rows"))?;
        Ok(Some(Batch {
            full: rows.len() as i64 == limit,
            rows,
            claim: Box::new(SqliteClaim {
                pool: self.pool.clone(),
                owner: self.owner.clone(),
                lease: self.lease,
            }),
        }))
    }

    async fn wait(&self, timeout: Duration) {
        tokio::time::sleep(timeout).await;
    }

    async fn cleanup(&self, before_ms: i64, limit: i64) -> Result<u64> {
        let done = sqlx::query(
            "DELETE FROM mq_outbox WHERE id IN (SELECT id FROM mq_outbox \
             WHERE sent_at_ms <= $1 AND error IS NULL LIMIT $2)",
        )
        .bind(before_ms)
        .bind(limit)
        .execute(&self.pool)
        .await
        .map_err(db("deleting sent outbox rows"))?;
        Ok(done.rows_affected())
    }
}

/// A step's hold: the lease, checked again when the outcome is recorded.
struct SqliteClaim {
    pool: SqlitePool,
    owner: String,
    lease: Duration,
}

#[async_trait]
impl Claimed for SqliteClaim {
    async fn finish(self: Box<Self>, outcome: &Outcome) -> Result<()> {
        if outcome.sent.is_empty() && outcome.failed.is_empty() {
            return Ok(());
        }
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(db("starting to record a relay step"))?;
        let held = sqlx::query(
            "UPDATE mq_outbox_lease SET until_ms = $2 WHERE name = 'relay' AND owner = $1",
        )
        .bind(&self.owner)
        .bind(ms_after(self.lease))
        .execute(&mut *tx)
        .await
        .map_err(db("renewing the relay lease"))?;
        if held.rows_affected() == 0 {
            // Another relay took over: it republishes these rows (at least once).
            return Err(Error::Rejected(
                "the outbox relay lost its lease mid-step (a step outlasted the lease); its batch goes out again".into(),
            ));
        }
        let now = now_ms();
        if !outcome.sent.is_empty() {
            let ids = serde_json::to_string(&outcome.sent).map_err(Error::json)?;
            let query = if outcome.keep_sent {
                sqlx::query("UPDATE mq_outbox SET sent_at_ms = $2 WHERE id IN (SELECT value FROM json_each($1))")
                    .bind(ids)
                    .bind(now)
            } else {
                sqlx::query("DELETE FROM mq_outbox WHERE id IN (SELECT value FROM json_each($1))")
                    .bind(ids)
            };
            query
                .execute(&mut *tx)
                .await
                .map_err(db("recording sent outbox rows"))?;
        }
        for (id, error) in &outcome.failed {
            sqlx::query("UPDATE mq_outbox SET sent_at_ms = $2, error = $3 WHERE id = $1")
                .bind(id)
                .bind(now)
                .bind(error)
                .execute(&mut *tx)
                .await
                .map_err(db("recording a failed outbox row"))?;
        }
        tx.commit().await.map_err(db("committing a relay step"))
    }
}
