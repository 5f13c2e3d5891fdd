//! Typed payloads: a handler that gets the payload decoded from JSON, and
//! treats a payload that does not decode as poison.

use std::future::Future;
use std::marker::PhantomData;

use async_trait::async_trait;
use serde::de::DeserializeOwned;

use crate::message::Delivery;
use crate::runtime::{Handler, HandlerError, HandlerResult};

/// A [`Handler`] that decodes each payload as JSON into `T` first. A
/// payload that does not decode is poison: retrying cannot fix it, so it
/// is dead-lettered at once ([`HandlerError::reject`]) with serde's
/// message, line and column as the reason, and `f` never sees it.
///
/// ```
/// use mq_core::{json_handler_fn, Delivery, HandlerResult};
/// #[derive(serde::Deserialize)]
/// struct Order { id: u64, cents: u64 }
/// let handler = json_handler_fn(|order: Order, d: Delivery| async move {
///     println!("order {} for {} cents from {}", order.id, order.cents, d.topic());
///     HandlerResult::Ok(())
/// });
/// # let _ = handler;
/// ```
pub fn json_handler_fn<T, F, Fut>(f: F) -> JsonHandlerFn<T, F>
where
    T: DeserializeOwned + Send + 'static,
    F: Fn(T, Delivery) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = HandlerResult> + Send + 'static,
{
    JsonHandlerFn {
        f,
        payload: PhantomData,
    }
}

/// See [`json_handler_fn`].
pub struct JsonHandlerFn<T, F> {
    f: F,
    payload: PhantomData<fn() -> T>,
}

#[async_trait]
impl<T, F, Fut> Handler for JsonHandlerFn<T, F>
where
    T: DeserializeOwned + Send + 'static,
    F: Fn(T, Delivery) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = HandlerResult> + Send + 'static,
{
    async fn handle(&self, delivery: &Delivery) -> HandlerResult {
        match delivery.json::<T>() {
            Ok(value) => (self.f)(value, delivery.detached()).await,
            Err(error) => Err(HandlerError::reject(format!(
                "undecodable payload (poison): {error}"
            ))),
        }
    }
}
