//! Handling one message: call the handler stack, then ack, retry (in place
//! for ordered subscriptions, later for unordered ones) or dead-letter.

use std::collections::VecDeque;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use tokio::task::JoinSet;

use crate::driver::AckToken;
use crate::error::Result;
use crate::message::Delivery;
use crate::runtime::handler::catch_panic;
use crate::runtime::key_queue::KeyQueue;
use crate::runtime::run::{drain, fetch_loop, fetch_while_workers_live, Shared};
use crate::runtime::{Handler, HandlerError, HandlerResult};
#[cfg(feature = "otel")]
use crate::telemetry::WorkerTelemetry;

/// Most items a worker takes from the queue at once.
const CHUNK: usize = 16;

/// Runs `handler` on `concurrency` workers fed by a key-ordered queue.
pub(crate) async fn run_handler(shared: Arc<Shared>, handler: Arc<dyn Handler>) -> Result<()> {
    let queue = Arc::new(KeyQueue::<Delivery>::new());
    let mut workers = JoinSet::new();
    for _ in 0..shared.settings.concurrency.max(1) {
        let caller = Caller::new(&shared, handler.clone());
        workers.spawn(work(shared.clone(), queue.clone(), caller));
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

/// One worker: takes chunks of the queue and handles their items in turn.
/// What it finished is settled together (one lock for many messages)
/// before it waits, for a handler or for work, so keys, acks and prefetch
/// slots trail only the handlers that completed without waiting.
async fn work(shared: Arc<Shared>, queue: Arc<KeyQueue<Delivery>>, mut caller: Caller) {
    let workers = shared.settings.concurrency.max(1);
    let mut chunk = VecDeque::with_capacity(CHUNK);
    let mut done = Done::default();
    loop {
        let Some((key, mut delivery)) = chunk.pop_front() else {
            done.settle(&shared, &queue).await;
            let next = queue.next_chunk(&mut done.keys, &mut chunk, workers, CHUNK);
            tokio::pin!(next);
            let more = match futures::poll!(next.as_mut()) {
                Poll::Ready(more) => more,
                Poll::Pending => {
                    caller.waited();
                    next.await
                }
            };
            if more {
                continue;
            }
            break;
        };
        if *shared.stop.borrow() {
            // Stopping: the rest of the chunk goes back unhandled.
            let rest: Vec<Delivery> = std::iter::once(delivery)
                .chain(chunk.drain(..).map(|(_, d)| d))
                .collect();
            shared.dropped(&rest);
            break;
        }
        if shared.settler.revoked.contains(&delivery.token) {
            done.others.push(delivery.token.clone());
            done.keys.extend(key);
            continue;
        }
        let attempt = {
            let attempt = handle_one(&shared, &mut caller, &delivery);
            tokio::pin!(attempt);
            match futures::poll!(attempt.as_mut()) {
                Poll::Ready(attempt) => attempt,
                Poll::Pending => {
                    done.settle(&shared, &queue).await;
                    attempt.await
                }
            }
        };
        match attempt {
            Attempt::Succeeded => {
                done.acks.push(delivery.token.clone());
                done.keys.extend(key);
            }
            Attempt::Settled => {
                done.others.push(delivery.token.clone());
                done.keys.extend(key);
            }
            Attempt::RetryInPlace { pause } => {
                // The key stays busy, so its later messages cannot
                // overtake; the worker moves on to other keys.
                delivery.attempt = delivery.attempt.saturating_add(1);
                queue.defer(key, delivery, pause);
            }
        }
    }
    done.settle(&shared, &queue).await;
}

/// What a worker finished and has not settled yet.
#[derive(Default)]
struct Done {
    /// Deliveries whose handler succeeded: to be acked.
    acks: Vec<AckToken>,
    /// Deliveries settled otherwise (dead-lettered, retried later,
    /// released, revoked): their slots only.
    others: Vec<AckToken>,
    /// Their keys, to be released in the queue.
    keys: Vec<Arc<str>>,
}

impl Done {
    async fn settle(&mut self, shared: &Shared, queue: &KeyQueue<Delivery>) {
        // Acks are queued before the keys are released: a key's next
        // message may only be acked after this one.
        shared.settle(&mut self.acks, &mut self.others).await;
        queue.release_all(&mut self.keys);
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
        // Through the `dyn Handler` itself: `Arc<dyn Handler>` is a
        // `Handler` too, whose call would box a second future per message.
        let work = catch_panic(self.handler.as_ref().handle(delivery));
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
enum Attempt {
    /// The handler succeeded: to be acked.
    Succeeded,
    /// Acked by the handler, dead-lettered, retried later or released:
    /// done here.
    Settled,
    /// Ordered and failed: to be attempted again here after `pause`.
    RetryInPlace { pause: Duration },
}

/// Makes one attempt at `delivery` and settles it, unless it is to be
/// retried in place.
async fn handle_one(shared: &Shared, caller: &mut Caller, delivery: &Delivery) -> Attempt {
    let settler = &shared.settler;
    let attempt = delivery.attempt;
    let outcome = match caller.call(delivery).await {
        Ok(()) if shared.settings.acked_by_handler => Ok(()),
        Ok(()) => {
            caller.settled();
            return Attempt::Succeeded;
        }
        Err(HandlerError::Reject { reason }) => settler.dead_letter(delivery, reason).await,
        Err(HandlerError::Retry { error, after }) => {
            let pause = settler.pause(after, attempt);
            if settler.policy.exhausted(attempt) {
                settler.dead_letter(delivery, error.to_string()).await
            } else if shared.settings.ordered {
                tracing::debug!(topic = delivery.topic(), attempt, %error, ?pause, "retrying in place");
                caller.settled();
                return Attempt::RetryInPlace { pause };
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
    Attempt::Settled
}
