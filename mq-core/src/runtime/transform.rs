//! Consume-transform-produce: a handler that answers each message with
//! messages to publish, and the runtime that publishes them and acks the
//! input together.
//!
//! Where the backend commits consumed offsets inside a producer
//! transaction (`transactional_offsets`, Kafka's exactly-once), each input
//! is handled as one transaction begun on the subscription: its outputs
//! and its ack commit together or not at all, so after a crash the input
//! is handled again and its earlier outputs were never visible. A
//! partition's records are handled one at a time, in offset order, so
//! each commit moves the group's position exactly past its input.
//!
//! Elsewhere it is at-least-once: outputs are published, then the input
//! is acked. A crash in between publishes the outputs again, with the same
//! ids (derived from the input's id, the group and the output's place), so
//! a downstream [`DedupLayer`](crate::idempotency::DedupLayer) keyed by id
//! gives one effect.

use std::future::Future;
use std::sync::Arc;

use async_trait::async_trait;
use uuid::Uuid;

use crate::client::publish::Origin;
use crate::error::Error;
use crate::message::{Delivery, Message, MessageId};
use crate::runtime::{Handler, HandlerError, HandlerResult, Settler};

/// Answers a delivery with the messages to publish for it; see
/// [`ConsumerBuilder::run_transform`](crate::ConsumerBuilder::run_transform).
#[async_trait]
pub trait Transform: Send + Sync + 'static {
    /// The messages `delivery` turns into (none is fine: the input is
    /// still acked). An error retries or dead-letters as a handler's does.
    async fn transform(&self, delivery: &Delivery) -> Result<Vec<Message>, HandlerError>;
}

/// A [`Transform`] from an async closure taking the delivery by value.
///
/// ```
/// use mq_core::{transform_fn, Delivery, HandlerError, Message};
/// let enrich = transform_fn(|d: Delivery| async move {
///     let order = d.message().payload_str()?.to_uppercase();
///     Ok::<_, HandlerError>(vec![Message::new("orders.enriched", order)])
/// });
/// # let _ = enrich;
/// ```
pub fn transform_fn<F, Fut>(f: F) -> TransformFn<F>
where
    F: Fn(Delivery) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Vec<Message>, HandlerError>> + Send + 'static,
{
    TransformFn(f)
}

/// See [`transform_fn`].
#[derive(Clone)]
pub struct TransformFn<F>(F);

#[async_trait]
impl<F, Fut> Transform for TransformFn<F>
where
    F: Fn(Delivery) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Vec<Message>, HandlerError>> + Send + 'static,
{
    async fn transform(&self, delivery: &Delivery) -> Result<Vec<Message>, HandlerError> {
        (self.0)(delivery.detached()).await
    }
}

/// The handler the runtime runs for a transform: it publishes the outputs
/// (and, when `transactional`, acks the input in the same transaction).
pub(crate) struct Transformer {
    pub(crate) transform: Arc<dyn Transform>,
    pub(crate) settler: Arc<Settler>,
    /// Whether the input's ack commits with the outputs; the runtime then
    /// sends no ack of its own for a handled input.
    pub(crate) transactional: bool,
}

#[async_trait]
impl Handler for Transformer {
    async fn handle(&self, delivery: &Delivery) -> HandlerResult {
        let outputs = self.transform.transform(delivery).await?;
        let publisher = self.settler.client.publisher();
        if !self.transactional {
            let outputs = with_derived_ids(delivery, outputs);
            publisher
                .publish(outputs, Origin::User)
                .await
                .map_err(settle_error)?;
            return Ok(());
        }
        let mut tx = self
            .settler
            .subscription
            .begin()
            .await
            .map_err(settle_error)?;
        let committed = async {
            publisher.publish_in(tx.as_mut(), outputs).await?;
            tx.ack(vec![delivery.token.clone()]).await?;
            tx.commit().await
        };
        committed.await.map_err(settle_error)
    }
}

/// Outputs keep an id their producer set; the others get one derived from
/// the input, so a republish after a crash repeats the same ids.
fn with_derived_ids(input: &Delivery, outputs: Vec<Message>) -> Vec<Message> {
    let Some(input_id) = input.message().id() else {
        return outputs;
    };
    outputs
        .into_iter()
        .enumerate()
        .map(|(place, output)| {
            if output.id().is_some() {
                return output;
            }
            let name = format!("{}/{place}", input.group());
            let id = Uuid::new_v5(input_id.as_uuid(), name.as_bytes());
            output.with_id(MessageId::from_uuid(id))
        })
        .collect()
}

/// A failure to publish or commit: poison (dead-lettered) when an output
/// is invalid, so no attempt can succeed; else another attempt.
fn settle_error(error: Error) -> HandlerError {
    match error {
        Error::Invalid { .. } | Error::TooLarge { .. } => {
            HandlerError::reject(format!("its outputs cannot be published: {error}"))
        }
        other => HandlerError::retry(other),
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;
    use crate::driver::{AckToken, RawDelivery};
    use crate::runtime::delivery_from_raw;

    fn delivery(group: &str, id: MessageId) -> Delivery {
        let raw = RawDelivery::new(
            Message::new("orders", "x").with_id(id),
            AckToken::new("orders", 0, 7),
            SystemTime::now(),
        );
        delivery_from_raw(raw, &Arc::from(group), None)
    }

    #[test]
    fn derived_ids_repeat_for_the_same_input_and_differ_otherwise() {
        let input = MessageId::new();
        let outputs = || vec![Message::new("a", "1"), Message::new("b", "2")];
        let ids = |d: &Delivery| -> Vec<_> {
            with_derived_ids(d, outputs())
                .iter()
                .map(|m| m.id().unwrap())
                .collect()
        };
        let first = ids(&delivery("enrich", input));
        assert_eq!(first, ids(&delivery("enrich", input)));
        assert_ne!(first[0], first[1]);
        assert_ne!(first, ids(&delivery("audit", input)));
        assert_ne!(first, ids(&delivery("enrich", MessageId::new())));
        let chosen = MessageId::new();
        let kept = with_derived_ids(
            &delivery("enrich", input),
            vec![Message::new("a", "1").with_id(chosen)],
        );
        assert_eq!(kept[0].id(), Some(chosen));
    }
}
