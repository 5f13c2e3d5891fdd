//! Middleware: a [`Layer`] wraps a handler in behaviour (dedup, timeouts,
//! metrics, your own), the way tower layers wrap services.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::error::Error;
use crate::message::Delivery;
use crate::runtime::{Handler, HandlerError, HandlerResult};

/// Wraps a handler in another handler.
///
/// Layers added to a consumer with [`ConsumerBuilder::layer`](crate::ConsumerBuilder::layer)
/// apply in the order added: the first added is the outermost.
///
/// ```
/// use std::sync::Arc;
/// use mq_core::{async_trait, Delivery, Handler, HandlerResult, Layer};
///
/// struct LogLayer;
/// struct Logged(Arc<dyn Handler>);
///
/// #[async_trait]
/// impl Handler for Logged {
///     async fn handle(&self, d: &Delivery) -> HandlerResult {
///         let result = self.0.handle(d).await;
///         println!("{} attempt {} -> {}", d.topic(), d.attempt(), result.is_ok());
///         result
///     }
/// }
///
/// impl Layer for LogLayer {
///     fn layer(&self, inner: Arc<dyn Handler>) -> Arc<dyn Handler> {
///         Arc::new(Logged(inner))
///     }
/// }
/// ```
pub trait Layer: Send + Sync + 'static {
    /// Returns `inner` wrapped.
    fn layer(&self, inner: Arc<dyn Handler>) -> Arc<dyn Handler>;
}

/// A [`Layer`] from a closure that wraps the inner handler, as tower's
/// `layer_fn`: with [`handler_fn`](crate::handler_fn) a middleware is a few
/// lines.
///
/// ```
/// use std::sync::Arc;
/// use std::time::Instant;
/// use mq_core::{handler_fn, layer_fn, Delivery, Handler};
/// let timing = layer_fn(|inner: Arc<dyn Handler>| {
///     handler_fn(move |d: Delivery| {
///         let inner = inner.clone();
///         async move {
///             let started = Instant::now();
///             let result = inner.handle(&d).await;
///             println!("{} took {:?}", d.topic(), started.elapsed());
///             result
///         }
///     })
/// });
/// # let _ = timing;
/// ```
pub fn layer_fn<F, H>(wrap: F) -> LayerFn<F>
where
    F: Fn(Arc<dyn Handler>) -> H + Send + Sync + 'static,
    H: Handler,
{
    LayerFn(wrap)
}

/// See [`layer_fn`].
#[derive(Clone)]
pub struct LayerFn<F>(F);

impl<F, H> Layer for LayerFn<F>
where
    F: Fn(Arc<dyn Handler>) -> H + Send + Sync + 'static,
    H: Handler,
{
    fn layer(&self, inner: Arc<dyn Handler>) -> Arc<dyn Handler> {
        Arc::new((self.0)(inner))
    }
}

/// Fails an attempt that runs longer than a limit (as a retryable
/// [`Error::Timeout`]), so a stuck handler cannot hold a key forever.
#[derive(Clone, Copy, Debug)]
pub struct TimeoutLayer {
    limit: Duration,
}

impl TimeoutLayer {
    /// Attempts longer than `limit` fail.
    pub fn new(limit: Duration) -> Self {
        TimeoutLayer { limit }
    }
}

struct Timeout {
    inner: Arc<dyn Handler>,
    limit: Duration,
}

#[async_trait]
impl Handler for Timeout {
    async fn handle(&self, delivery: &Delivery) -> HandlerResult {
        match tokio::time::timeout(self.limit, self.inner.handle(delivery)).await {
            Ok(result) => result,
            Err(_) => Err(HandlerError::retry(Error::Timeout(self.limit))),
        }
    }
}

impl Layer for TimeoutLayer {
    fn layer(&self, inner: Arc<dyn Handler>) -> Arc<dyn Handler> {
        Arc::new(Timeout {
            inner,
            limit: self.limit,
        })
    }
}

/// Applies `layers` around `handler`, the first layer outermost.
pub(crate) fn stack(handler: Arc<dyn Handler>, layers: &[Arc<dyn Layer>]) -> Arc<dyn Handler> {
    layers
        .iter()
        .rev()
        .fold(handler, |inner, layer| layer.layer(inner))
}
