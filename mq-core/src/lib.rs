//! # mq-core
//!
//! The contract of mq: the message model, the driver SPI backends implement,
//! the user-facing [`Client`] (producers, transactions, consumers, admin),
//! the consumer runtime (handlers, middleware, retries, dead letters,
//! per-key ordering, batching, backpressure, graceful shutdown), delay
//! emulation, idempotency, configuration, errors, and the in-memory driver.
//!
//! Applications normally depend on the `mq` facade, which re-exports this
//! crate and picks a driver by URL.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> mq_core::Result<()> {
//! use mq_core::{handler_fn, memory::MemoryDriver, Client, Delivery, Message};
//!
//! let client = Client::new(MemoryDriver::new());
//! client.producer().send(Message::new("orders", "order 42").with_key("customer-7")).await?;
//!
//! let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
//! let consumer = client
//!     .consumer("orders", "billing")
//!     .run(handler_fn(move |d: Delivery| {
//!         let done_tx = done_tx.clone();
//!         async move {
//!             done_tx.send(d.message().payload_str()?.to_owned())?;
//!             Ok(())
//!         }
//!     }))
//!     .await?;
//! assert_eq!(done_rx.recv().await.as_deref(), Some("order 42"));
//! consumer.shutdown().await?;
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

pub mod client;
pub mod config;
mod delay;
pub mod driver;
pub mod error;
pub mod idempotency;
pub mod memory;
pub mod message;
pub mod runtime;
#[cfg(feature = "otel")]
pub mod telemetry;

pub use async_trait::async_trait;
pub use bytes::Bytes;
pub use client::{
    checker_fn, Admin, Client, Coalescing, ConsumerBuilder, DeadLetterView, HalfMessage,
    HalfProducer, HalfProducerBuilder, Producer, RedriveOptions, RedriveReport, Subscription,
    Transaction, TransactionChecker,
};
pub use config::Config;
pub use driver::{Capabilities, HalfOutcome, StartFrom, Support, TopicSpec};
pub use error::{Error, Result};
pub use message::{DeadLetterInfo, Delivery, Headers, IntoName, Message, MessageId, Receipt};
pub use runtime::{
    batch_handler_fn, handler_fn, handler_fn_with_state, json_handler_fn, layer_fn, transform_fn,
    BatchHandler, BatchOptions, ConsumerHandle, DeadLetter, Handler, HandlerError, HandlerResult,
    Layer, RetryPolicy, TimeoutLayer, Transform,
};
