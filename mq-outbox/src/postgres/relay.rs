//! The relay's side on PostgreSQL: shard locks, the settled-row rule, NOTIFY.
//!
//! # Why no row is skipped, and why rows wait for `xmin`
//!
//! The relay keeps no cursor. It reads *pending* rows (`sent_at_ms IS
//! NULL`, through a partial index that holds only them) and a row stops
//! being pending only when the relay has published it. A row whose
//! transaction commits after rows with later ids (a `BIGSERIAL` id is
//! taken at insert, the row becomes visible at commit) is simply pending
//! when it appears, and goes out then: nothing is ever skipped, and the
//! scan costs the backlog, not the history (sent rows are deleted, or kept
//! outside the partial index).
//!
//! Order is the harder half. Rows of one key go out in id order, but a
//! row with a *lower* id may still be uncommitted, invisible, when a later
//! one is read. So each row carries the id of its transaction
//! (`xid xid8 DEFAULT pg_current_xact_id()`), and the fetch computes
//! `xid < pg_snapshot_xmin(pg_current_snapshot())`: every transaction below
//! the snapshot's xmin has ended, committed or rolled back, so such a row
//! is *settled*: no transaction that took its xid earlier can still add a
//! row. A row that is visible but not settled waits, and with it every
//! later row of its key (see `relay::order`), until the transactions that
//! began before it end. This keeps per-key id order whenever the
//! transaction that took the lower id also began writing first (the usual
//! case, and always when one transaction's insert follows the other's
//! commit: its id is then higher too, and the earlier row is already
//! visible). Between transactions that run concurrently, neither seeing
//! the other's writes, nothing more is promised: a lower id from a
//! transaction that took its xid later may still go out after a higher one.
//!
//! The price: a write transaction left open anywhere in the cluster holds
//! xmin back, and rows committed after it began wait for it to end.
//! Read-only transactions hold no xid and do not count.
//!
//! # Several relays
//!
//! A key maps to one of 64 shards. A relay's step runs in one transaction
//! that first takes `pg_try_advisory_xact_lock` on every shard it can,
//! skipping shards another relay holds (SKIP LOCKED for advisory locks),
//! then reads, publishes and deletes rows of those shards only, and
//! commits, which releases the locks. A relay that dies mid-step loses its
//! connection, PostgreSQL rolls back and frees its shards, and the rows go
//! out again from another relay: at least once, duplicates only across a
//! crash, per-key order kept. Advisory locks give no xid to the relay, so
//! relays do not hold back each other's xmin while they publish.

use std::time::Duration;

use async_trait::async_trait;
use mq_core::Result;
use sqlx::postgres::{PgListener, PgRow};
use sqlx::{PgPool, Postgres, Row, Transaction};
use tokio::sync::Mutex;

use super::LOCK_SPACE;
use crate::error::db;
use crate::record::{now_ms, Pending, Stored, SHARDS};
use crate::relay::store::{Batch, Claimed, Outcome, RelayStore};

const CHANNEL: &str = "mq_outbox";

const LOCK_SHARDS: &str =
    "SELECT s FROM generate_series(0, $2 - 1) AS s WHERE pg_try_advisory_xact_lock($1, s)";

const FETCH: &str = "SELECT id, xid < pg_snapshot_xmin(pg_current_snapshot()) AS settled, shard, topic, \
     msg_key, payload, headers, message_id, idempotency_key, deliver_at_ms, traceparent, tracestate \
     FROM mq_outbox WHERE sent_at_ms IS NULL AND shard = ANY($1) ORDER BY id LIMIT $2";

pub(crate) struct PgRelayStore {
    pool: PgPool,
    /// Connected at the first claim, before the first read, so a commit
    /// between a read and the wait still wakes the relay. `None` while
    /// unavailable: the relay polls.
    listener: Mutex<Option<PgListener>>,
}

impl PgRelayStore {
    pub(crate) fn new(pool: PgPool) -> Self {
        PgRelayStore {
            pool,
            listener: Mutex::new(None),
        }
    }

    async fn ensure_listening(&self) {
        let mut listener = self.listener.lock().await;
        if listener.is_some() {
            return;
        }
        let connected = async {
            let mut l = PgListener::connect_with(&self.pool).await?;
            l.listen(CHANNEL).await?;
            Ok::<_, sqlx::Error>(l)
        };
        match connected.await {
            Ok(l) => *listener = Some(l),
            Err(error) => tracing::warn!(%error, "outbox relay: LISTEN failed; polling"),
        }
    }
}

fn pending(row: &PgRow) -> std::result::Result<Pending, sqlx::Error> {
    Ok(Pending {
        id: row.try_get("id")?,
        settled: row.try_get("settled")?,
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
impl RelayStore for PgRelayStore {
    async fn claim(&self, limit: usize) -> Result<Option<Batch>> {
        self.ensure_listening().await;
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(db("starting a relay step"))?;
        let shards: Vec<i32> = sqlx::query_scalar(LOCK_SHARDS)
            .bind(LOCK_SPACE)
            .bind(SHARDS)
            .fetch_all(&mut *tx)
            .await
            .map_err(db("locking outbox shards"))?;
        if shards.is_empty() {
            return Ok(None);
        }
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = sqlx::query(FETCH)
            .bind(&shards)
            .bind(limit)
            .fetch_all(&mut *tx)
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
            claim: Box::new(PgClaim { tx }),
        }))
    }

    async fn wait(&self, timeout: Duration) {
        let mut guard = self.listener.lock().await;
        let Some(listener) = guard.as_mut() else {
            drop(guard);
            tokio::time::sleep(timeout).await;
            return;
        };
        match tokio::time::timeout(timeout, listener.recv()).await {
            Ok(Ok(_)) => {
                // One read serves every notification that came meanwhile.
                while listener.next_buffered().is_some() {}
            }
            Ok(Err(error)) => {
                tracing::warn!(%error, "outbox relay: LISTEN connection lost; polling until it is back");
                *guard = None;
            }
            Err(_) => {}
        }
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

/// A step's transaction: holds the shard locks until it ends.
struct PgClaim {
    tx: Transaction<'static, Postgres>,
}

#[async_trait]
impl Claimed for PgClaim {
    async fn finish(self: Box<Self>, outcome: &Outcome) -> Result<()> {
        let mut tx = self.tx;
        let now = now_ms();
        if !outcome.sent.is_empty() {
            let query = if outcome.keep_sent {
                sqlx::query("UPDATE mq_outbox SET sent_at_ms = $2 WHERE id = ANY($1)")
                    .bind(&outcome.sent)
                    .bind(now)
            } else {
                sqlx::query("DELETE FROM mq_outbox WHERE id = ANY($1)").bind(&outcome.sent)
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
