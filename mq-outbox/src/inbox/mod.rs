//! The inbox: exactly-once effects for consumers whose effects are writes
//! to a SQL database, and durable dedup stores.
//!
//! An [`Inbox`] wraps a [`TxHandler`]: for each delivery it opens a
//! transaction, records `(group, idempotency key or message id)` in it,
//! runs the handler with the open transaction and commits both together.
//! A redelivery (after a crash between commit and ack, a rebalance, a
//! retry) finds the record and is acked without running the handler; a
//! failed handler rolls back both, and the retry runs again. The record
//! lasts for the window (default 7 days); [`Inbox::cleanup`] deletes older
//! ones. Redeliveries later than the window run again.
//!
//! An `Inbox` and a [`SqlDedupStore`] share the `mq_inbox` table and its
//! keys; use one or the other for a given consumer group, not both.

mod handler;
pub(crate) mod sql;
mod store;

use async_trait::async_trait;
use mq_core::idempotency::Claim;
use mq_core::Result;
use sqlx::{Pool, Transaction};

pub use handler::{tx_handler_fn, Inbox, InboxHandler, TxHandler};
pub use store::SqlDedupStore;

pub(crate) mod sealed {
    /// Only this crate's databases carry the inbox SQL.
    pub trait Sealed {}
}

/// A database the inbox and [`SqlDedupStore`] run on: `sqlx::Sqlite` and
/// `sqlx::Postgres`, as the crate's features select.
#[async_trait]
pub trait InboxDatabase: sqlx::Database + sealed::Sealed {
    /// Creates the crate's tables if they are missing.
    async fn migrate(pool: &Pool<Self>) -> Result<()>;

    /// Records `key` handled in `tx` unless a live record has it; whether it recorded.
    async fn record(
        tx: &mut Transaction<'static, Self>,
        scope: &str,
        key: &str,
        until_ms: i64,
        now_ms: i64,
    ) -> Result<bool>;

    /// See [`DedupStore::claim`](mq_core::idempotency::DedupStore::claim).
    async fn claim(
        pool: &Pool<Self>,
        scope: &str,
        key: &str,
        until_ms: i64,
        now_ms: i64,
    ) -> Result<Claim>;

    /// See [`DedupStore::complete`](mq_core::idempotency::DedupStore::complete).
    async fn complete(pool: &Pool<Self>, scope: &str, key: &str, until_ms: i64) -> Result<()>;

    /// See [`DedupStore::release`](mq_core::idempotency::DedupStore::release).
    async fn release(pool: &Pool<Self>, scope: &str, key: &str) -> Result<()>;

    /// Deletes records that ended before `now_ms`; how many.
    async fn cleanup(pool: &Pool<Self>, now_ms: i64) -> Result<u64>;
}
