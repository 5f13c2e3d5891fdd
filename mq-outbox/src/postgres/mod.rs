//! The outbox, relay and inbox on PostgreSQL (feature `postgres`).
//!
//! ```no_run
//! # async fn demo(client: mq_core::Client) -> mq_core::Result<()> {
//! use mq_outbox::postgres::PgOutbox;
//! let pool = sqlx::PgPool::connect("postgres://root@127.0.0.1/app").await.unwrap();
//! let outbox = PgOutbox::new(pool.clone());
//! outbox.migrate().await?;
//!
//! let mut tx = pool.begin().await.unwrap();
//! sqlx::query("INSERT INTO orders (id) VALUES (42)").execute(&mut *tx).await.unwrap();
//! outbox.enqueue(&mut tx, mq_core::Message::new("orders", "created 42").with_key("order-42")).await?;
//! tx.commit().await.unwrap();
//!
//! let relay = outbox.relay(&client).spawn();
//! # relay.shutdown().await }
//! ```

mod enqueue;
mod relay;

use std::sync::Arc;
use std::time::Duration;

use mq_core::{Client, Result};
use sqlx::{PgPool, Postgres};

use crate::error::db;
use crate::inbox::{sql::impl_inbox_database, Inbox, SqlDedupStore};
use crate::Relay;
use sqlx::{Executor, Row};

/// The crate's tables, in order; `migrate` applies the ones a database lacks.
/// For applications that run migrations with their own tool.
pub const MIGRATIONS: &[&str] = &[include_str!("schema.sql")];

/// A lock id (two int4s) no application is likely to use: "mq_o", "utbx".
pub(crate) const LOCK_SPACE: i32 = 0x6d71_5f6f;
const MIGRATION_LOCK: i32 = -1;

/// An [`Inbox`] on PostgreSQL.
pub type PgInbox = Inbox<Postgres>;
/// A durable `DedupStore` on PostgreSQL.
pub type PgDedupStore = SqlDedupStore<Postgres>;

impl_inbox_database!(sqlx::Postgres, crate::postgres::migrate);

/// Creates the crate's tables (outbox and inbox) where missing. Safe to run
/// from several processes at once: they take turns under an advisory lock.
/// Versions are kept in `mq_outbox_schema`, not in sqlx's own migrations
/// table, so the application's sqlx migrations are left alone.
pub async fn migrate(pool: &PgPool) -> Result<()> {
    let mut tx = pool.begin().await.map_err(db("starting the migration"))?;
    sqlx::query("SELECT pg_advisory_xact_lock($1, $2)")
        .bind(LOCK_SPACE)
        .bind(MIGRATION_LOCK)
        .execute(&mut *tx)
        .await
        .map_err(db("locking the migration"))?;
    (&mut *tx)
        .execute("CREATE TABLE IF NOT EXISTS mq_outbox_schema (version INTEGER PRIMARY KEY)")
        .await
        .map_err(db("creating mq_outbox_schema"))?;
    let applied: Option<i32> = sqlx::query("SELECT max(version) FROM mq_outbox_schema")
        .fetch_one(&mut *tx)
        .await
        .and_then(|row| row.try_get(0))
        .map_err(db("reading the schema version"))?;
    let mut version = applied.unwrap_or(0).max(0);
    while let Some(sql) = MIGRATIONS.get(version as usize).copied() {
        version += 1;
        (&mut *tx)
            .execute(sql)
            .await
            .map_err(db("applying an outbox migration"))?;
        sqlx::query("INSERT INTO mq_outbox_schema (version) VALUES ($1)")
            .bind(version)
            .execute(&mut *tx)
            .await
            .map_err(db("recording the schema version"))?;
    }
    tx.commit().await.map_err(db("committing the migration"))
}

/// The outbox in a PostgreSQL database: enqueue inside your transactions,
/// relay to any backend.
#[derive(Clone, Debug)]
pub struct PgOutbox {
    pool: PgPool,
}

impl PgOutbox {
    /// The outbox of `pool`'s database; run [`migrate`](Self::migrate) once first.
    pub fn new(pool: PgPool) -> Self {
        PgOutbox { pool }
    }

    /// Creates the tables if missing; see [`migrate`].
    pub async fn migrate(&self) -> Result<()> {
        migrate(&self.pool).await
    }

    /// A relay publishing this outbox to `client`. It wakes on `NOTIFY`
    /// after each enqueuing commit and polls every second besides.
    pub fn relay(&self, client: &Client) -> Relay {
        Relay::new(
            Arc::new(relay::PgRelayStore::new(self.pool.clone())),
            client,
            Duration::from_secs(1),
        )
    }

    /// Rows not yet published (failed rows excluded).
    pub async fn pending(&self) -> Result<i64> {
        sqlx::query_scalar("SELECT count(*) FROM mq_outbox WHERE sent_at_ms IS NULL")
            .fetch_one(&self.pool)
            .await
            .map_err(db("counting pending rows"))
    }
}
