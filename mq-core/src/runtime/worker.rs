//! Handling one message: call the handler stack, then ack, retry (in place
//! for ordered subscriptions, later for unordered ones) or dead-letter.

use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use tokio::task::JoinSet;

use crate::error::Result;
use crate::message::Delivery;
use crate::runtime::handler::catch_panic;
use crate::runtime::key_queue::KeyQueue;
use crate::runtime::run::{drain, fetch_loop, fetch_while_workers_live, Shared};
use crate::runtime::{Handler, HandlerError, HandlerResult};
#[cfg(feature = "otel")]
use crate::telemetry::WorkerTelemetry;

/// Runs `handler` on `concurrency` workers fed by a key-ordered queue.
pub(crate) async fn run_handler(shared: Arc<Shared>, handler: Arc<dyn Handler>) -> Result<()> {
    let queue = Arc::new(KeyQueue::<Delivery>::new());
    let mut workers = JoinSet::new();
    for _ in 0..shared.settings.concurrency.max(1) {
        let (shared, queue, handler) = (shared.clone(), queue.clone(), handler.clone());
        workers.spawn(async move {
            let mut caller = Caller::new(&shared, handler);
            let mut finished_key = None;
            loop {
                let next = take_next(&queue, finished_key.take(), || caller.waited());
                let Some((key, mut delivery)) = next.await else {
                    break;
                };
                if shared.settler.revoked.contains(&delivery.token) {
                    shared.dropped(std::slice::from_ref(&delivery));
                    finished_key = key;
                    continue;
                }
                match handle_one(&shared, &mut caller, &delivery).await {
                    Handled::Settled => {
                        shared.finished([&delivery.token]).await;
                        finished_key = key;
                    }
                    Handled::RetryInPlace { pause } => {
                        // The key stays busy, so its later messages cannot
                        // overtake; the worker moves on to other keys.
                        delivery.attempt = delivery.attempt.saturating_add(1);
                        queue.defer(key, delivery, pause);
                    }
                }
            }
        });
    }
    let fetched = {
        let (queue, buffered, dropper) = (queue.clone(), queue.clone(), shared.clone());
        let by_partition = shared.settings.by_partition;
        let fetching = fetch_loop(
            shared.clone(),
            move |batch| {
                queue.push_all(batch.into_iter().map(|d| {
                    let key = if by_partition {
                        Some(Arc::from(format!(
                            "{}\0{}",
                            d.token.topic, d.token.partition
                        )))
                    } else {
                        d.message.key_arc().cloned()
                    };
                    (key, d)
                }))
            },
            move |revoked| {
                let gone = buffered.remove_where(|d| revoked.iter().any(|tp| d.token.is_in(tp)));
                dropper.dropped(&gone);
            },
        );
        fetch_while_workers_live(fetching, &mut workers).await
    };
    queue.close();
    let drained = drain(&shared, workers).await;
    fetched.and(drained)
}

/// The next item of `queue` (after releasing `finished`); calls `on_wait`
/// first when there is none yet and the worker has to wait.
async fn take_next(
    queue: &KeyQueue<Delivery>,
    finished: Option<Arc<str>>,
    on_wait: impl FnOnce(),
) -> Option<(Option<Arc<str>>, Delivery)> {
    let next = queue.next(finished);
    tokio::pin!(next);
    match futures::poll!(next.as_mut()) {
        Poll::Ready(item) => item,
        Poll::Pending => {
            on_wait();
            next.await
        }
    }
}

/// One worker's way of calling the handler stack: traced and measured
/// when telemetry is on.
struct Caller {
    handler: Arc<dyn Handler>,
    #[cfg(feature = "otel")]
    telemetry: Option<WorkerTelemetry>,
}

impl Caller {
    #[cfg_attr(not(feature = "otel"), allow(unused_variables))]
    fn new(shared: &Shared, handler: Arc<dyn Handler>) -> Self {
        Caller {
            handler,
            #[cfg(feature = "otel")]
            telemetry: shared.telemetry.as_ref().map(|t| t.for_worker()),
        }
    }

    /// The worker waited (for work, or before an in-place retry).
    fn waited(&mut self) {
        #[cfg(feature = "otel")]
        if let Some(telemetry) = &mut self.telemetry {
            telemetry.waited();
        }
    }

    async fn call(&mut self, delivery: &Delivery) -> HandlerResult {
        let work = catch_panic(self.handler.handle(delivery));
        #[cfg(feature = "otel")]
        if let Some(telemetry) = &mut self.telemetry {
            return telemetry.call(delivery, work).await;
        }
        work.await
    }

    /// The message of the last call is settled, or about to be retried in place.
    fn settled(&mut self) {
        #[cfg(feature = "otel")]
        if let Some(telemetry) = &mut self.telemetry {
            telemetry.settled();
        }
    }
}

/// What became of one attempt at a delivery.
enum Handled {
    /// Acked, dead-lettered, retried later or released: done here.
    Settled,
    /// Ordered and failed: to be attempted again here after `pause`.
    RetryInPlace { pause: Duration },
}

/// Makes one attempt at `delivery` and settles it, unless it is to be
/// retried in place.
async fn handle_one(shared: &Shared, caller: &mut Caller, delivery: &Delivery) -> Handled {
    let settler = &shared.settler;
    let attempt = delivery.attempt;
    let outcome = match caller.call(delivery).await {
        Ok(()) if shared.settings.acked_by_handler => Ok(()),
        Ok(()) => settler.ack_buffered(delivery).await,
        Err(HandlerError::Reject { reason }) => settler.dead_letter(delivery, reason).await,
        Err(HandlerError::Retry { error, after }) => {
            let pause = settler.pause(after, attempt);
            if settler.policy.exhausted(attempt) {
                settler.dead_letter(delivery, error.to_string()).await
            } else if shared.settings.ordered {
                tracing::debug!(topic = delivery.topic(), attempt, %error, ?pause, "retrying in place");
                caller.settled();
                return Handled::RetryInPlace { pause };
            } else {
                settler.retry(delivery, pause, error.to_string()).await
            }
        }
    };
    if let Err(error) = outcome {
        tracing::warn!(topic = delivery.topic(), %error, "settling a message failed; it will be redelivered");
        if let Err(error) = settler.release(delivery).await {
            tracing::warn!(%error, "releasing a message failed; it will be redelivered when the consumer leaves");
        }
    }
    caller.settled();
    Handled::Settled
}
