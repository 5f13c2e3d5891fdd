//! Batch consumption: deliveries are spread over lanes by key (so a key stays
//! in one lane, in order) and each lane hands its handler up to N messages or
//! what arrived within T.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::driver::partition_for_key;
use crate::error::Result;
use crate::message::Delivery;
use crate::runtime::handler::catch_panic;
use crate::runtime::run::{drain, fetch_loop, fetch_while_workers_live, Shared};
use crate::runtime::{BatchHandler, HandlerError};

/// How [`run_batch`](crate::ConsumerBuilder::run_batch) cuts batches: at
/// most `max_messages`, or what arrived within `max_wait` of a batch's
/// first message, whichever comes first.
///
/// ```
/// use std::time::Duration;
/// use mq_core::BatchOptions;
/// let options = BatchOptions::new(500).with_max_wait(Duration::from_millis(20));
/// assert_eq!(options.max_messages(), 500);
/// assert_eq!(BatchOptions::default().max_wait(), Duration::from_millis(100));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchOptions {
    max_messages: usize,
    max_wait: Duration,
}

impl Default for BatchOptions {
    /// 100 messages or 100 ms.
    fn default() -> Self {
        BatchOptions::new(100)
    }
}

impl BatchOptions {
    /// Batches of up to `max_messages` (at least 1 when run), cut after 100 ms.
    pub fn new(max_messages: usize) -> Self {
        BatchOptions {
            max_messages,
            max_wait: Duration::from_millis(100),
        }
    }

    /// How long a batch waits for more after its first message; any
    /// duration, `Duration::MAX` included (a batch is then cut by size only).
    pub fn with_max_wait(mut self, max_wait: Duration) -> Self {
        self.max_wait = max_wait;
        self
    }

    /// How long a batch waits for more after its first message.
    pub fn max_wait(&self) -> Duration {
        self.max_wait
    }

    /// The most messages in one batch.
    pub fn max_messages(&self) -> usize {
        self.max_messages
    }
}

pub(crate) async fn run_batches(
    shared: Arc<Shared>,
    handler: Arc<dyn BatchHandler>,
    batch: BatchOptions,
) -> Result<()> {
    let lanes = shared.settings.concurrency.max(1);
    let mut senders = Vec::with_capacity(lanes);
    let mut workers = JoinSet::new();
    for _ in 0..lanes {
        let (tx, rx) = mpsc::unbounded_channel();
        senders.push(tx);
        workers.spawn(lane(shared.clone(), handler.clone(), rx, batch));
    }
    let mut next_keyless = 0usize;
    // A fetched batch goes to each lane in one send, not one per message.
    let mut split: Vec<Vec<Delivery>> = (0..lanes).map(|_| Vec::new()).collect();
    // Lanes drop buffered deliveries of revoked partitions as they reach them.
    let fetching = fetch_loop(
        shared.clone(),
        |batch| {
            let share = batch.len() / lanes + 1;
            for lane in split.iter_mut() {
                lane.reserve(share);
            }
            for d in batch {
                let lane = match d.message.key() {
                    Some(key) => partition_for_key(key, lanes as u32) as usize,
                    None => {
                        next_keyless = (next_keyless + 1) % lanes;
                        next_keyless
                    }
                };
                split[lane].push(d);
            }
            for (lane, deliveries) in split.iter_mut().enumerate() {
                if !deliveries.is_empty() {
                    let _ = senders[lane].send(std::mem::take(deliveries));
                }
            }
        },
        |_| {},
    );
    let fetched = fetch_while_workers_live(fetching, &mut workers).await;
    drop(senders);
    let drained = drain(&shared, workers).await;
    fetched.and(drained)
}

async fn lane(
    shared: Arc<Shared>,
    handler: Arc<dyn BatchHandler>,
    mut rx: mpsc::UnboundedReceiver<Vec<Delivery>>,
    settings: BatchOptions,
) {
    let mut stop = shared.stop.clone();
    let max = settings.max_messages().max(1);
    // Received, in order, and not yet in a batch.
    let mut queued: Vec<Delivery> = Vec::new();
    let (mut acks, mut others) = (Vec::new(), Vec::new());
    loop {
        if queued.is_empty() {
            queued = tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                next = rx.recv() => match next { Some(d) => d, None => return },
            };
        }
        let deadline = tokio::time::Instant::from_std(crate::driver::clock::deadline_after(
            settings.max_wait(),
        ));
        while queued.len() < max {
            match rx.try_recv() {
                Ok(more) => {
                    queued.extend(more);
                    continue;
                }
                Err(mpsc::error::TryRecvError::Disconnected) => break,
                Err(mpsc::error::TryRecvError::Empty) => {}
            }
            // Waiting is pointless while the prefetch bound holds fetching
            // back: nothing more comes until batches like this one settle.
            let holding_back = shared.holding_back.notified();
            tokio::pin!(holding_back);
            holding_back.as_mut().enable();
            if shared.is_held_back() {
                break;
            }
            tokio::select! {
                next = rx.recv() => match next { Some(more) => queued.extend(more), None => break },
                _ = tokio::time::sleep_until(deadline) => break,
                _ = holding_back => break,
            }
        }
        let rest = if queued.len() > max {
            queued.split_off(max)
        } else {
            Vec::new()
        };
        let mut batch = std::mem::replace(&mut queued, rest);
        if shared.settler.revoked.any() {
            let (revoked, kept): (Vec<Delivery>, Vec<Delivery>) = batch
                .into_iter()
                .partition(|d| shared.settler.revoked.contains(&d.token));
            shared.dropped(&revoked);
            batch = kept;
        }
        if batch.is_empty() {
            continue;
        }
        let Some(succeeded) = handle_batch(&shared, handler.as_ref(), &batch).await else {
            return;
        };
        let settled = if succeeded { &mut acks } else { &mut others };
        settled.extend(batch.iter().map(|d| d.token.clone()));
        shared.settle(&mut acks, &mut others).await;
    }
}

/// Handles one batch to completion: `Some(true)` when it is to be acked,
/// `Some(false)` when its messages were settled otherwise (retried later,
/// dead-lettered), `None` when stopping before either.
async fn handle_batch(
    shared: &Shared,
    handler: &dyn BatchHandler,
    batch: &[Delivery],
) -> Option<bool> {
    let settler = &shared.settler;
    let mut attempt = batch.iter().map(Delivery::attempt).max().unwrap_or(1);
    let mut retried: Option<Vec<Delivery>> = None;
    loop {
        let current = retried.as_deref().unwrap_or(batch);
        let outcome = catch_panic(handler.handle_batch(current)).await;
        let mut settle_errors = Vec::new();
        match outcome {
            Ok(()) => return Some(true),
            Err(HandlerError::Reject { reason }) => {
                for d in current {
                    if let Err(e) = settler.dead_letter(d, reason.clone()).await {
                        settle_errors.push(e);
                    }
                }
            }
            Err(HandlerError::Retry { error, after }) => {
                let pause = settler.pause(after, attempt);
                if shared.settings.ordered && !settler.policy.exhausted(attempt) {
                    if shared.pause_or_stop(pause).await {
                        return None;
                    }
                    attempt += 1;
                    retried = Some(current.iter().map(|d| d.with_attempt(attempt)).collect());
                    continue;
                }
                for d in current {
                    let result = if settler.policy.exhausted(attempt) {
                        settler.dead_letter(d, error.to_string()).await
                    } else {
                        settler.retry(d, pause, error.to_string()).await
                    };
                    if let Err(e) = result {
                        settle_errors.push(e);
                    }
                }
            }
        }
        for error in settle_errors {
            tracing::warn!(%error, "settling a batch message failed; it will be redelivered");
        }
        return Some(false);
    }
}
