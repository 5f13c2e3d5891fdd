//! [`SqlDedupStore`]: the core's `DedupStore` on an SQL table, for the
//! `DedupLayer` middleware.

use std::time::Duration;

use async_trait::async_trait;
use mq_core::idempotency::{Claim, DedupStore};
use mq_core::Result;
use sqlx::Pool;

use super::InboxDatabase;
use crate::record::{ms_after, now_ms};

/// A durable [`DedupStore`] in the `mq_inbox` table of a SQLite or
/// PostgreSQL database: what a group handled survives restarts, for the
/// window the `DedupLayer` gives (`with_ttl`). Expired rows are deleted by
/// [`cleanup`](Self::cleanup).
///
/// To commit the dedup record with the handler's own writes, use an
/// [`Inbox`](super::Inbox) instead.
///
/// ```no_run
/// # async fn demo(pool: sqlx::SqlitePool) -> mq_core::Result<()> {
/// use std::sync::Arc;
/// use mq_core::idempotency::DedupLayer;
/// let store = mq_outbox::SqlDedupStore::new(pool);
/// store.migrate().await?;
/// let dedup = DedupLayer::new(Arc::new(store)).with_ttl(std::time::Duration::from_secs(3600));
/// # let _ = dedup; Ok(()) }
/// ```
#[derive(Debug)]
pub struct SqlDedupStore<DB: InboxDatabase> {
    pool: Pool<DB>,
}

impl<DB: InboxDatabase> SqlDedupStore<DB> {
    /// A store on `pool`; run [`migrate`](Self::migrate) once first.
    pub fn new(pool: Pool<DB>) -> Self {
        SqlDedupStore { pool }
    }

    /// Creates the tables if they are missing.
    pub async fn migrate(&self) -> Result<()> {
        DB::migrate(&self.pool).await
    }

    /// Deletes rows whose window or lease ended; how many.
    pub async fn cleanup(&self) -> Result<u64> {
        DB::cleanup(&self.pool, now_ms()).await
    }
}

#[async_trait]
impl<DB: InboxDatabase> DedupStore for SqlDedupStore<DB> {
    async fn claim(&self, scope: &str, key: &str, lease: Duration) -> Result<Claim> {
        DB::claim(&self.pool, scope, key, ms_after(lease), now_ms()).await
    }

    async fn complete(&self, scope: &str, key: &str, ttl: Duration) -> Result<()> {
        DB::complete(&self.pool, scope, key, ms_after(ttl)).await
    }

    async fn release(&self, scope: &str, key: &str) -> Result<()> {
        DB::release(&self.pool, scope, key).await
    }
}
