//! [`Inbox`] and the handlers it runs inside a database transaction.

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::future::BoxFuture;
use mq_core::{Delivery, Handler, HandlerResult, Result};
use sqlx::{Pool, Transaction};

use mq_core::idempotency::dedup_key;

use super::InboxDatabase;
use crate::error::db;
use crate::record::{ms_after, now_ms};

/// A handler whose effects are writes in `tx`: they commit together with
/// the inbox record of the delivery, or not at all.
///
/// ```no_run
/// use mq_core::{async_trait, Delivery, HandlerResult};
/// use mq_outbox::TxHandler;
/// struct Credit;
/// #[async_trait]
/// impl TxHandler<sqlx::Sqlite> for Credit {
///     async fn handle(&self, delivery: &Delivery, tx: &mut sqlx::Transaction<'static, sqlx::Sqlite>) -> HandlerResult {
///         let cents: i64 = delivery.json()?;
///         sqlx::query("UPDATE account SET cents = cents + $1").bind(cents).execute(&mut **tx).await?;
///         Ok(())
///     }
/// }
/// ```
#[async_trait]
pub trait TxHandler<DB: InboxDatabase>: Send + Sync + 'static {
    /// Handles `delivery` with its writes in `tx`. An error rolls them back
    /// and the delivery is retried.
    async fn handle(&self, delivery: &Delivery, tx: &mut Transaction<'static, DB>)
        -> HandlerResult;
}

/// A [`TxHandler`] from a closure returning a boxed future (the borrow of
/// the delivery and the transaction lasts as long as the future).
///
/// ```no_run
/// # async fn demo(pool: sqlx::SqlitePool) {
/// use mq_outbox::{tx_handler_fn, Inbox};
/// let inbox = Inbox::new(pool);
/// let handler = inbox.handler(tx_handler_fn(|delivery, tx| Box::pin(async move {
///     sqlx::query("INSERT INTO seen (payload) VALUES ($1)")
///         .bind(delivery.payload().to_vec())
///         .execute(&mut **tx)
///         .await?;
///     Ok(())
/// })));
/// # let _ = handler; }
/// ```
pub fn tx_handler_fn<DB, F>(f: F) -> impl TxHandler<DB>
where
    DB: InboxDatabase,
    F: for<'a> Fn(&'a Delivery, &'a mut Transaction<'static, DB>) -> BoxFuture<'a, HandlerResult>
        + Send
        + Sync
        + 'static,
{
    FnTxHandler(f, PhantomData)
}

struct FnTxHandler<F, DB>(F, PhantomData<fn() -> DB>);

#[async_trait]
impl<DB, F> TxHandler<DB> for FnTxHandler<F, DB>
where
    DB: InboxDatabase,
    F: for<'a> Fn(&'a Delivery, &'a mut Transaction<'static, DB>) -> BoxFuture<'a, HandlerResult>
        + Send
        + Sync
        + 'static,
{
    async fn handle(
        &self,
        delivery: &Delivery,
        tx: &mut Transaction<'static, DB>,
    ) -> HandlerResult {
        (self.0)(delivery, tx).await
    }
}

/// Exactly-once effects for SQL handlers; see the [module docs](crate::inbox).
///
/// ```no_run
/// # async fn demo(client: mq_core::Client, pool: sqlx::SqlitePool, handler: impl mq_outbox::TxHandler<sqlx::Sqlite>) -> mq_core::Result<()> {
/// let inbox = mq_outbox::Inbox::new(pool).window(std::time::Duration::from_secs(24 * 3600));
/// inbox.migrate().await?;
/// let consumer = client.consumer("payments", "ledger").run(inbox.handler(handler)).await?;
/// # let _ = consumer; Ok(()) }
/// ```
#[derive(Debug)]
pub struct Inbox<DB: InboxDatabase> {
    pool: Pool<DB>,
    window: Duration,
}

impl<DB: InboxDatabase> Clone for Inbox<DB> {
    fn clone(&self) -> Self {
        Inbox {
            pool: self.pool.clone(),
            window: self.window,
        }
    }
}

impl<DB: InboxDatabase> Inbox<DB> {
    /// An inbox in `pool`'s database, remembering deliveries for 7 days.
    pub fn new(pool: Pool<DB>) -> Self {
        Inbox {
            pool,
            window: Duration::from_secs(7 * 24 * 3600),
        }
    }

    /// How long a handled delivery is remembered: make it longer than any
    /// redelivery can come late (broker retention, retries, replays).
    pub fn window(mut self, window: Duration) -> Self {
        self.window = window;
        self
    }

    /// Creates the crate's tables if they are missing.
    pub async fn migrate(&self) -> Result<()> {
        DB::migrate(&self.pool).await
    }

    /// Deletes records older than their window; how many. Call it now and
    /// then (an hourly task is plenty).
    pub async fn cleanup(&self) -> Result<u64> {
        DB::cleanup(&self.pool, now_ms()).await
    }

    /// The consumer handler running `handler` exactly once per delivery.
    pub fn handler(&self, handler: impl TxHandler<DB>) -> InboxHandler<DB> {
        InboxHandler {
            inbox: self.clone(),
            handler: Arc::new(handler),
        }
    }
}

/// The [`Handler`] made by [`Inbox::handler`].
pub struct InboxHandler<DB: InboxDatabase> {
    inbox: Inbox<DB>,
    handler: Arc<dyn TxHandler<DB>>,
}

#[async_trait]
impl<DB: InboxDatabase> Handler for InboxHandler<DB> {
    async fn handle(&self, delivery: &Delivery) -> HandlerResult {
        let inbox = &self.inbox;
        let mut tx = inbox
            .pool
            .begin()
            .await
            .map_err(db("opening the inbox transaction"))?;
        let key = dedup_key(delivery);
        let first = DB::record(
            &mut tx,
            delivery.group(),
            &key,
            ms_after(inbox.window),
            now_ms(),
        )
        .await?;
        if !first {
            tracing::debug!(
                topic = delivery.topic(),
                key,
                "inbox: already handled, skipping"
            );
            tx.rollback()
                .await
                .map_err(db("ending the inbox transaction"))?;
            return Ok(());
        }
        // On error the transaction drops, rolling back record and writes.
        self.handler.handle(delivery, &mut tx).await?;
        tx.commit()
            .await
            .map_err(db("committing the handler's writes"))?;
        Ok(())
    }
}
