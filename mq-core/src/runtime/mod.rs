//! The consumer runtime: handlers and middleware, retries with backoff,
//! dead letters, the per-key ordering executor, batching, backpressure and
//! graceful shutdown.
//!
//! Flow of one message: the fetch loop takes deliveries from the driver while
//! fewer than `prefetch` are unsettled; the key queue hands them to
//! `concurrency` workers so one key is handled by one worker at a time, in
//! order; a worker runs the [`Layer`] stack around the [`Handler`] and then
//! settles: ack on success; on failure retry in place (ordered) or schedule a
//! redelivery (unordered) until [`RetryPolicy::max_attempts`]; then, or on
//! [`HandlerError::Reject`], publish to the dead-letter topic and ack.

mod batch;
mod handler;
mod json;
mod key_queue;
mod layer;
mod rebalance;
mod receive;
mod retry;
mod run;
mod settle;
mod transform;
mod worker;

pub(crate) use batch::run_batches;
pub use batch::BatchOptions;
pub use handler::{
    batch_handler_fn, handler_fn, handler_fn_with_state, BatchHandler, BatchHandlerFn, Handler,
    HandlerError, HandlerFn, HandlerResult, StateHandlerFn,
};
pub use json::{json_handler_fn, JsonHandlerFn};
pub(crate) use layer::stack;
pub use layer::{layer_fn, Layer, LayerFn, TimeoutLayer};
pub(crate) use rebalance::serve_rebalance;
pub(crate) use receive::delivery_from_raw;
pub(crate) use retry::retry_topic;
pub use retry::RetryPolicy;
pub use run::ConsumerHandle;
pub(crate) use run::{RunSettings, Shared};
pub use settle::DeadLetter;
pub(crate) use settle::Settler;
pub(crate) use settle::{from_millis, millis, rfc3339};
pub(crate) use transform::Transformer;
pub use transform::{transform_fn, Transform, TransformFn};
pub(crate) use worker::run_handler;
