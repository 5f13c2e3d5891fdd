//! Handling one message: call the handler stack, then ack, retry (in place
//! for ordered subscriptions, later for unordered ones) or dead-letter.

use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use tokio::task::JoinSet;

use crate::driver::AckToken;
use crate::error::Result;
use crate::message::Delivery;
use crate::runtime::handler::catch_panic;
use crate::runtime::key_queue::KeyQueue;
use crate::runtime::receive::Recycler;
use crate::runtime::run::{drain, fetch_loop, fetch_while_workers_live, Shared};
use crate::runtime::{Handler, HandlerError, HandlerResult};
#[cfg(feature = "otel")]
use crate::telemetry::WorkerTelemetry;

/// Acks a worker collects before settling them together.
const WORKER_ACKS: usize = 32;

/// Runs `handler` on `concurrency` workers fed by a key-ordered queue.
pub(crate) async fn run_handler(shared: Arc<Shared>, handler: Arc<dyn Handler>) -> Result<()> {
    let queue = Arc::new(KeyQueue::<Delivery>::new());
    let mut workers = JoinSet::new();
    for worker in 0..shared.settings.concurrency.max(1) {
        let caller = Caller::new(&shared, handler.clone());
        workers.spawn(work(shared.clone(), queue.clone(), caller, worker));
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
                dropper.dropped(gone.iter().map(|d| &d.token));
            },
        );
        fetch_while_workers_live(fetching, &mut workers).await
    };
    queue.close();
    let drained = drain(&shared, workers).await;
    fetched.and(drained)
}

/// Worker number `worker`: handles what `queue` hands it until it closes.
async fn work(
    shared: Arc<Shared>,
    queue: Arc<KeyQueue<Delivery>>,
    mut caller: Caller,
    worker: usize,
) {
    let mut handled = Handled::new();
    let mut finished = None;
    loop {
        let next = queue.next(worker, finished.take());
        tokio::pin!(next);
        let next = match futures::poll!(next.as_mut()) {
            Poll::Ready(next) => next,
            Poll::Pending => {
                handled.settle(&shared).await;
                caller.waited();
                next.await
            }
        };
        let Some((key, mut delivery)) = next else {
            break;
        };
        if shared.settler.revoked.contains(&delivery.token) {
            shared.dropped([&delivery.token]);
            finished = key;
            continue;
        }
        match handle_one(&shared, &mut caller, &mut handled, &mut delivery).await {
            Attempt::Settled => finished = key,
            Attempt::RetryInPlace { pause } => {
                // The key stays busy, so its later messages cannot
                // overtake; the worker moves on to other keys.
                delivery.attempt = delivery.attempt.saturating_add(1);
                queue.defer(key, delivery, pause);
            }
        }
    }
    handled.settle(&shared).await;
}

/// What a worker handled and has not settled yet: acks, settled together
/// (one lock for many messages while handlers finish without waiting),
/// and the emptied messages of those deliveries. Settled before the worker
/// waits (for a handler or for work) and before it stops, so the settled
/// state (held deliveries, an idle consumer's flush, prefetch slots)
/// trails only the messages handled since the worker last waited, at
/// most `WORKER_ACKS`.
struct Handled {
    acks: Vec<AckToken>,
    recycler: Recycler,
}

impl Handled {
    fn new() -> Self {
        Handled {
            acks: Vec::with_capacity(WORKER_ACKS),
            recycler: Recycler::new(),
        }
    }

    /// `delivery` succeeded: its ack is queued.
    async fn ack(&mut self, shared: &Shared, delivery: &mut Delivery) {
        self.acks.push(delivery.token.clone());
        self.recycler.recycle(delivery);
        if self.acks.len() >= WORKER_ACKS {
            self.settle(shared).await;
        }
    }

    async fn settle(&mut self, shared: &Shared) {
        if !self.acks.is_empty() {
            shared
                .settle(&mut self.acks, &mut self.recycler.shells, [])
                .await;
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
    /// Acked, dead-lettered, retried later or released, and its prefetch
    /// slot accounted for: done here.
    Settled,
    /// Ordered and failed: to be attempted again here after `pause`.
    RetryInPlace { pause: Duration },
}

/// Makes one attempt at `delivery` and settles it, unless it is to be
/// retried in place.
async fn handle_one(
    shared: &Shared,
    caller: &mut Caller,
    handled: &mut Handled,
    delivery: &mut Delivery,
) -> Attempt {
    let settler = &shared.settler;
    let attempt = delivery.attempt;
    let result = {
        let call = caller.call(delivery);
        tokio::pin!(call);
        match futures::poll!(call.as_mut()) {
            Poll::Ready(result) => result,
            Poll::Pending => {
                // The handler waits: what this worker handled before is
                // settled meanwhile rather than held up behind it.
                handled.settle(shared).await;
                call.await
            }
        }
    };
    let outcome = match result {
        Ok(()) if shared.settings.acked_by_handler => Ok(()),
        Ok(()) => {
            handled.ack(shared, delivery).await;
            caller.settled();
            return Attempt::Settled;
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
    shared.finished([&delivery.token]).await;
    Attempt::Settled
}
