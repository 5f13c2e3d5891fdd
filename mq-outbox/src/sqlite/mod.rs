//! The outbox, relay and inbox on SQLite (feature `sqlite`): a file next to
//! the application, no server.
//!
//! ```no_run
//! # async fn demo(client: mq_core::Client) -> mq_core::Result<()> {
//! use mq_outbox::sqlite::{self, SqliteOutbox};
//! let pool = sqlite::open("app.db").await?;
//! let outbox = SqliteOutbox::new(pool.clone());
//! outbox.migrate().await?;
//!
//! let mut tx = pool.begin().await.unwrap();
//! outbox.enqueue(&mut tx, mq_core::Message::new("orders", "created 42").with_key("order-42")).await?;
//! tx.commit().await.unwrap();
//!
//! let relay = outbox.relay(&client).spawn();
//! # relay.shutdown().await }
//! ```

mod enqueue;
mod relay;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use mq_core::{Client, Error, Result};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Sqlite, SqlitePool};

use crate::error::db;
use crate::inbox::{sql::impl_inbox_database, Inbox, SqlDedupStore};
use crate::Relay;
use sqlx::Executor;

/// The crate's tables, in order; `migrate` applies the ones a database lacks.
pub const MIGRATIONS: &[&str] = &[include_str!("schema.sql")];

/// An [`Inbox`] on SQLite.
pub type SqliteInbox = Inbox<Sqlite>;
/// A durable `DedupStore` on SQLite.
pub type SqliteDedupStore = SqlDedupStore<Sqlite>;

impl_inbox_database!(sqlx::Sqlite, crate::sqlite::migrate);

/// Opens (creating if missing) the SQLite file at `path` the way the outbox
/// wants it: WAL (readers never block the writer), `synchronous=FULL`
/// (a commit survives power loss), a 10 s busy timeout (writers queue
/// instead of failing).
pub async fn open(path: impl AsRef<std::path::Path>) -> Result<SqlitePool> {
    let path = path.as_ref();
    let options = SqliteConnectOptions::from_str("sqlite://")
        .map_err(|e| Error::Config(format!("sqlite options: {e}")))?
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(Duration::from_secs(10));
    SqlitePoolOptions::new()
        .max_connections(8)
        .connect_with(options)
        .await
        .map_err(db("opening the SQLite database"))
}

/// Creates the crate's tables (outbox and inbox) where missing, in one
/// `BEGIN IMMEDIATE` transaction so concurrent callers take turns.
/// Versions are kept in `mq_outbox_schema`, apart from sqlx's own table.
pub async fn migrate(pool: &SqlitePool) -> Result<()> {
    let mut conn = pool.acquire().await.map_err(db("starting the migration"))?;
    (&mut *conn)
        .execute("BEGIN IMMEDIATE")
        .await
        .map_err(db("locking the database for the migration"))?;
    let applied = async {
        (&mut *conn)
            .execute("CREATE TABLE IF NOT EXISTS mq_outbox_schema (version INTEGER PRIMARY KEY)")
            .await?;
        let applied: Option<i64> = sqlx::query_scalar("SELECT max(version) FROM mq_outbox_schema")
            .fetch_one(&mut *conn)
            .await?;
        let mut version = applied.unwrap_or(0).max(0);
        while let Some(sql) = MIGRATIONS.get(version as usize).copied() {
            version += 1;
            (&mut *conn).execute(sql).await?;
            sqlx::query("INSERT INTO mq_outbox_schema (version) VALUES ($1)")
                .bind(version)
                .execute(&mut *conn)
                .await?;
        }
        (&mut *conn).execute("COMMIT").await?;
        Ok::<_, sqlx::Error>(())
    }
    .await;
    if applied.is_err() {
        let _ = (&mut *conn).execute("ROLLBACK").await;
    }
    applied.map_err(db("applying the outbox migrations"))
}

/// The outbox in a SQLite database.
#[derive(Clone, Debug)]
pub struct SqliteOutbox {
    pool: SqlitePool,
    lease: Duration,
}

impl SqliteOutbox {
    /// The outbox of `pool`'s database (see [`open`]); run
    /// [`migrate`](Self::migrate) once first.
    pub fn new(pool: SqlitePool) -> Self {
        SqliteOutbox {
            pool,
            lease: Duration::from_secs(30),
        }
    }

    /// How long a relay's lease lasts without renewal (default 30 s): after
    /// a relay dies, another takes over once it runs out. Relays renew it
    /// at every step, so keep it well above a step's duration.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease.max(Duration::from_millis(100));
        self
    }

    /// Creates the tables if missing; see [`migrate`].
    pub async fn migrate(&self) -> Result<()> {
        migrate(&self.pool).await
    }

    /// A relay publishing this outbox to `client`, polling every 20 ms.
    pub fn relay(&self, client: &Client) -> Relay {
        Relay::new(
            Arc::new(relay::SqliteRelayStore::new(self.pool.clone(), self.lease)),
            client,
            Duration::from_millis(20),
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
