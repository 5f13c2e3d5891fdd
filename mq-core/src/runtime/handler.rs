//! What a consumer runs for each message: [`Handler`], [`BatchHandler`] and
//! how they fail ([`HandlerError`]).

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::error::BoxError;
use crate::message::Delivery;

/// Why a handler did not finish a message, and what should happen to it.
///
/// Any error converts into [`HandlerError::Retry`] with `?`, so a handler
/// reads like ordinary code; [`HandlerError::reject`] sends the message
/// straight to the dead-letter topic.
pub enum HandlerError {
    /// Try again later (after the policy's backoff, or `after` when set),
    /// until `max_attempts`; then dead-letter.
    Retry {
        /// What went wrong.
        error: BoxError,
        /// Overrides the policy's backoff for this retry.
        after: Option<Duration>,
    },
    /// Never retry: dead-letter now with this reason.
    Reject {
        /// Why, recorded in the dead letter's headers.
        reason: String,
    },
}

impl HandlerError {
    /// A retryable failure.
    pub fn retry(error: impl Into<BoxError>) -> Self {
        HandlerError::Retry {
            error: error.into(),
            after: None,
        }
    }

    /// A retryable failure to retry after `after` rather than the policy's backoff.
    pub fn retry_after(error: impl Into<BoxError>, after: Duration) -> Self {
        HandlerError::Retry {
            error: error.into(),
            after: Some(after),
        }
    }

    /// A poison message: dead-letter it now.
    pub fn reject(reason: impl Into<String>) -> Self {
        HandlerError::Reject {
            reason: reason.into(),
        }
    }
}

impl<E: Into<BoxError>> From<E> for HandlerError {
    fn from(error: E) -> Self {
        HandlerError::retry(error)
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandlerError::Retry { error, .. } => write!(f, "{error}"),
            HandlerError::Reject { reason } => write!(f, "rejected: {reason}"),
        }
    }
}

impl fmt::Debug for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandlerError::Retry { error, after } => f
                .debug_struct("Retry")
                .field("error", &error.to_string())
                .field("after", after)
                .finish(),
            HandlerError::Reject { reason } => {
                f.debug_struct("Reject").field("reason", reason).finish()
            }
        }
    }
}

/// The result of handling.
pub type HandlerResult = Result<(), HandlerError>;

/// Turns a panic inside `work` into a retryable failure, so a panicking
/// handler costs one attempt instead of a worker (and its key) for good.
pub(crate) async fn catch_panic(
    work: impl std::future::Future<Output = HandlerResult>,
) -> HandlerResult {
    use futures::FutureExt;
    match std::panic::AssertUnwindSafe(work).catch_unwind().await {
        Ok(result) => result,
        Err(panic) => {
            let text = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a non-string panic".to_owned());
            Err(HandlerError::retry(format!("handler panicked: {text}")))
        }
    }
}

/// Handles one message at a time. Returning `Ok` acks it.
///
/// Implement it for middleware and stateful handlers; for closures use
/// [`handler_fn`].
#[async_trait]
pub trait Handler: Send + Sync + 'static {
    /// Handles one delivery.
    async fn handle(&self, delivery: &Delivery) -> HandlerResult;
}

#[async_trait]
impl<H: Handler + ?Sized> Handler for Arc<H> {
    async fn handle(&self, delivery: &Delivery) -> HandlerResult {
        (**self).handle(delivery).await
    }
}

/// A [`Handler`] from an async closure taking the delivery by value.
///
/// ```
/// use mq_core::{handler_fn, Delivery, HandlerError};
/// let handler = handler_fn(|d: Delivery| async move {
///     let text = d.message().payload_str()?;
///     if text.is_empty() {
///         return Err(HandlerError::reject("empty order"));
///     }
///     Ok(())
/// });
/// # let _ = handler;
/// ```
pub fn handler_fn<F, Fut>(f: F) -> HandlerFn<F>
where
    F: Fn(Delivery) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = HandlerResult> + Send + 'static,
{
    HandlerFn(f)
}

/// See [`handler_fn`].
#[derive(Clone)]
pub struct HandlerFn<F>(F);

#[async_trait]
impl<F, Fut> Handler for HandlerFn<F>
where
    F: Fn(Delivery) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = HandlerResult> + Send + 'static,
{
    async fn handle(&self, delivery: &Delivery) -> HandlerResult {
        (self.0)(delivery.detached()).await
    }
}

/// A [`Handler`] from an async closure that gets shared state with each
/// delivery, as axum's `State`: `state` is cloned per message (wrap what
/// is costly to clone in an `Arc`), so no `let x = x.clone()` dance.
///
/// ```
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use mq_core::{handler_fn_with_state, Delivery, HandlerResult};
/// #[derive(Clone)]
/// struct App { billed: Arc<AtomicU64> }
/// let app = App { billed: Arc::default() };
/// let handler = handler_fn_with_state(app, |app: App, d: Delivery| async move {
///     app.billed.fetch_add(d.payload().len() as u64, Ordering::Relaxed);
///     HandlerResult::Ok(())
/// });
/// # let _ = handler;
/// ```
pub fn handler_fn_with_state<S, F, Fut>(state: S, f: F) -> StateHandlerFn<S, F>
where
    S: Clone + Send + Sync + 'static,
    F: Fn(S, Delivery) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = HandlerResult> + Send + 'static,
{
    StateHandlerFn { state, f }
}

/// See [`handler_fn_with_state`].
#[derive(Clone)]
pub struct StateHandlerFn<S, F> {
    state: S,
    f: F,
}

#[async_trait]
impl<S, F, Fut> Handler for StateHandlerFn<S, F>
where
    S: Clone + Send + Sync + 'static,
    F: Fn(S, Delivery) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = HandlerResult> + Send + 'static,
{
    async fn handle(&self, delivery: &Delivery) -> HandlerResult {
        (self.f)(self.state.clone(), delivery.detached()).await
    }
}

/// Handles a batch of messages at once: all succeed or all are retried.
#[async_trait]
pub trait BatchHandler: Send + Sync + 'static {
    /// Handles `batch`, which holds up to the configured size, in publish order per key.
    async fn handle_batch(&self, batch: &[Delivery]) -> HandlerResult;
}

#[async_trait]
impl<H: BatchHandler + ?Sized> BatchHandler for Arc<H> {
    async fn handle_batch(&self, batch: &[Delivery]) -> HandlerResult {
        (**self).handle_batch(batch).await
    }
}

/// A [`BatchHandler`] from an async closure taking the batch by value.
pub fn batch_handler_fn<F, Fut>(f: F) -> BatchHandlerFn<F>
where
    F: Fn(Vec<Delivery>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = HandlerResult> + Send + 'static,
{
    BatchHandlerFn(f)
}

/// See [`batch_handler_fn`].
#[derive(Clone)]
pub struct BatchHandlerFn<F>(F);

#[async_trait]
impl<F, Fut> BatchHandler for BatchHandlerFn<F>
where
    F: Fn(Vec<Delivery>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = HandlerResult> + Send + 'static,
{
    async fn handle_batch(&self, batch: &[Delivery]) -> HandlerResult {
        (self.0)(batch.iter().map(Delivery::detached).collect()).await
    }
}
