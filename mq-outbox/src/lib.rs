//! # mq-outbox
//!
//! "Write my row and publish" atomically, and exactly-once effects, on
//! SQLite (feature `sqlite`, a file next to the application) and
//! PostgreSQL (feature `postgres`), through sqlx. Re-exported by the `mq`
//! facade as `mq::outbox` (features `outbox-sqlite`, `outbox-postgres`).
//!
//! - **Outbox**: the application enqueues messages in its own sqlx
//!   transaction ([`SqliteOutbox::enqueue`](sqlite::SqliteOutbox::enqueue),
//!   [`PgOutbox::enqueue`](postgres::PgOutbox::enqueue)); a message exists
//!   if and only if the transaction commits.
//! - **Relay**: publishes enqueued messages to any [`mq_core::Client`], in
//!   enqueue order per key, at least once, then deletes them (or keeps
//!   them marked sent for a retention). It never skips a row that commits
//!   late, wakes on `NOTIFY` on PostgreSQL, lets several instances run
//!   (each key handled by one at a time), and honours delays, idempotency
//!   keys and the enqueuing request's trace context (feature `otel`).
//! - **Inbox**: an [`Inbox`] runs a handler inside a database transaction
//!   that also records the delivery, so a redelivered message has exactly
//!   one effect; [`SqlDedupStore`] (and `RedisDedupStore`, feature `redis`)
//!   are durable `DedupStore`s for the core's `DedupLayer`.
//!
//! Tables ship with the crate and are created on demand by `migrate`
//! (versions in `mq_outbox_schema`, apart from sqlx's own migrations).
//!
//! ```no_run
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> mq_core::Result<()> {
//! use mq_core::{memory::MemoryDriver, Client, Message};
//! use mq_outbox::sqlite::{self, SqliteOutbox};
//!
//! let pool = sqlite::open("app.db").await?;
//! let outbox = SqliteOutbox::new(pool.clone());
//! outbox.migrate().await?;
//!
//! let mut tx = pool.begin().await.unwrap();
//! // ... the application's own writes in `tx` ...
//! outbox.enqueue(&mut tx, Message::new("orders", "order 42 created").with_key("order-42")).await?;
//! tx.commit().await.unwrap();
//!
//! let client = Client::new(MemoryDriver::new());
//! let relay = outbox.relay(&client).spawn();
//! # relay.shutdown().await
//! # }
//! ```

#![warn(missing_docs)]

// Without a database feature only the Redis dedup store remains.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod error;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub mod inbox;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod record;
#[cfg(feature = "redis")]
mod redis;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod relay;
#[cfg(feature = "sqlite")]
pub mod sqlite;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod trace;

#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub use inbox::{tx_handler_fn, Inbox, InboxDatabase, InboxHandler, SqlDedupStore, TxHandler};
#[cfg(feature = "redis")]
pub use redis::RedisDedupStore;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub use relay::{Relay, RelayHandle, Step};
