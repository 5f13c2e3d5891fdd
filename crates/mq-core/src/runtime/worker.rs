//! Handling one message: call the handler stack, then ack, retry (in place
//! for ordered subscriptions, later for unordered ones) or dead-letter.

use std::sync::Arc;

use tokio::task::JoinSet;

use crate::error::Result;
use crate::message::Delivery;
use crate::runtime::handler::catch_panic;
use crate::runtime::key_queue::KeyQueue;
use crate::runtime::run::{drain, fetch_loop, Shared};
use crate::runtime::{Handler, HandlerError};

/// Runs `handler` on `concurrency` workers fed by a key-ordered queue.
pub(crate) async fn run_handler(shared: Arc<Shared>, handler: Arc<dyn Handler>) -> Result<()> {
    let queue = Arc::new(KeyQueue::<Delivery>::new());
    let mut workers = JoinSet::new();
    for _ in 0..shared.settings.concurrency.max(1) {
        let (shared, queue, handler) = (shared.clone(), queue.clone(), handler.clone());
        workers.spawn(async move {
            let mut finished_key = None;
            while let Some((key, delivery)) = queue.next(finished_key.take()).await {
                let settled = handle_one(&shared, handler.as_ref(), &delivery).await;
                if !settled {
                    // Stopping mid-retry: leave it unacked for redelivery, and
                    // keep later messages of the key from overtaking it.
                    break;
                }
                shared.finished(1).await;
                finished_key = key;
            }
        });
    }
    let fetched = {
        let queue = queue.clone();
        fetch_loop(shared.clone(), move |batch| {
            queue.push_all(batch.into_iter().map(|d| (d.message.key_arc().cloned(), d)))
        })
        .await
    };
    queue.close();
    drain(&shared, workers).await;
    fetched
}

/// Handles `delivery` to completion. Returns false when the consumer is
/// stopping before the message could be settled.
async fn handle_one(shared: &Shared, handler: &dyn Handler, delivery: &Delivery) -> bool {
    let settler = &shared.settler;
    let mut attempt = delivery.attempt;
    loop {
        let view;
        let current = if attempt == delivery.attempt {
            delivery
        } else {
            view = delivery.with_attempt(attempt);
            &view
        };
        #[cfg(feature = "otel")]
        let handled = match &shared.telemetry {
            Some(telemetry) => {
                telemetry
                    .instrument(current, catch_panic(handler.handle(current)))
                    .await
            }
            None => catch_panic(handler.handle(current)).await,
        };
        #[cfg(not(feature = "otel"))]
        let handled = catch_panic(handler.handle(current)).await;
        let outcome = match handled {
            Ok(()) => settler.ack_buffered(current).await,
            Err(HandlerError::Reject { reason }) => settler.dead_letter(current, reason).await,
            Err(HandlerError::Retry { error, after }) => {
                let pause = after.unwrap_or_else(|| settler.policy.backoff(attempt));
                if settler.policy.exhausted(attempt) {
                    settler.dead_letter(current, error.to_string()).await
                } else if shared.settings.ordered {
                    tracing::debug!(topic = current.topic(), attempt, %error, ?pause, "retrying in place");
                    if shared.pause_or_stop(pause).await {
                        return false;
                    }
                    attempt += 1;
                    continue;
                } else {
                    settler.retry(current, pause, error.to_string()).await
                }
            }
        };
        if let Err(error) = outcome {
            tracing::warn!(topic = current.topic(), %error, "settling a message failed; it will be redelivered");
            if let Err(error) = settler.release(current).await {
                tracing::warn!(%error, "releasing a message failed; it will be redelivered when the consumer leaves");
            }
        }
        return true;
    }
}
